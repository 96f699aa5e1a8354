//! AgentRegistry: lookup, fallback, health windows.

use std::sync::Arc;
use std::time::Duration;

use flowtrace_agents::agents::{
    AgentError, AgentMeta, AgentRegistry, CostTier, HealthPolicy, ReasoningAgent,
};
use flowtrace_core::testing::ScriptedModel;
use flowtrace_core::{Agent, Budget, EventKind, Message, ModelErrorKind, TokenUsage};

use crate::support::{events, in_node, node_error, registry, traced};

fn agent(name: &str, model: Arc<ScriptedModel>) -> Arc<dyn Agent> {
    Arc::new(ReasoningAgent::new(
        name,
        model,
        "gpt-4o-mini",
        registry(&[]),
    ))
}

fn answering(text: &str, times: usize) -> Arc<ScriptedModel> {
    let mut m = ScriptedModel::new("openai");
    for _ in 0..times {
        m = m.reply(text, TokenUsage::new(10, 2));
    }
    Arc::new(m)
}

fn failing(times: usize) -> Arc<ScriptedModel> {
    let mut m = ScriptedModel::new("openai");
    for _ in 0..times {
        m = m.fail(ModelErrorKind::InvalidRequest);
    }
    Arc::new(m)
}

fn conversation() -> Vec<Message> {
    vec![Message::user("question")]
}

#[tokio::test]
async fn lookup_create_and_capabilities() {
    let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = made.clone();
    let registry = AgentRegistry::builder()
        .factory(
            AgentMeta::new("strong")
                .capability("answer")
                .cost_tier(CostTier::High)
                .model("gpt-4o"),
            move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                agent("strong", answering("x", 0))
            },
        )
        .agent(
            AgentMeta::new("cheap")
                .capability("answer")
                .capability("summarize")
                .cost_tier(CostTier::Low),
            agent("cheap", answering("x", 0)),
        )
        .agent(
            AgentMeta::new("mid").capability("answer"),
            agent("mid", answering("x", 0)),
        )
        .build()
        .unwrap();
    assert_eq!(
        made.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the shared instance"
    );
    let names: Vec<&str> = registry
        .with_capability("answer")
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["cheap", "mid", "strong"]);
    assert!(registry.with_capability("fly").is_empty());
    assert_eq!(registry.get("cheap").unwrap().name(), "cheap");
    let a = registry.create("strong").unwrap();
    let b = registry.create("strong").unwrap();
    assert!(!Arc::ptr_eq(&a, &b), "create makes a new instance");
    assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert!(matches!(
        registry.create("nobody"),
        Err(AgentError::UnknownAgent { .. })
    ));
    assert_eq!(registry.meta("strong").unwrap().models, ["gpt-4o"]);
    assert_eq!(registry.agents().count(), 3);

    let dup = AgentRegistry::builder()
        .agent(AgentMeta::new("a"), agent("a", answering("x", 0)))
        .agent(AgentMeta::new("a"), agent("a", answering("x", 0)))
        .build();
    assert!(matches!(dup, Err(AgentError::DuplicateAgent { name }) if name == "a"));
}

#[tokio::test]
async fn a_failing_agent_falls_back_to_the_next_healthy_one() {
    let cheap_model = failing(1);
    let strong_model = answering("42", 1);
    let registry = Arc::new(
        AgentRegistry::builder()
            .agent(
                AgentMeta::new("cheap")
                    .capability("answer")
                    .cost_tier(CostTier::Low),
                agent("cheap", cheap_model.clone()),
            )
            .agent(
                AgentMeta::new("strong")
                    .capability("answer")
                    .cost_tier(CostTier::High),
                agent("strong", strong_model.clone()),
            )
            .build()
            .unwrap(),
    );
    let (config, sink) = traced();
    let r = registry.clone();
    let (out, summary) = in_node(config, move |ctx| {
        let r = r.clone();
        async move { r.run_with_fallback("answer", conversation(), &ctx).await }
    })
    .await
    .unwrap();
    assert_eq!(out.agent, "strong");
    assert_eq!(out.output.text, "42");
    assert_eq!(out.fallbacks, 1);
    assert_eq!((cheap_model.calls(), strong_model.calls()), (1, 1));
    assert_eq!(summary.usage, TokenUsage::new(10, 2));

    let fallbacks = events(&sink, "agent.fallback");
    match &fallbacks[..] {
        [
            EventKind::AgentFallback {
                capability,
                from_agent,
                to_agent,
                reason,
            },
        ] => {
            assert_eq!(capability, "answer");
            assert_eq!(from_agent, "cheap");
            assert_eq!(to_agent, "strong");
            assert!(reason.contains("scripted failure"), "{reason}");
        }
        other => panic!("expected one agent.fallback event, got {other:?}"),
    }
    let cheap = registry.health("cheap").unwrap();
    assert_eq!((cheap.calls, cheap.errors), (1, 1));
    let strong = registry.health("strong").unwrap();
    assert_eq!((strong.calls, strong.errors), (1, 0));
}

#[tokio::test]
async fn when_every_agent_fails_the_error_names_them_and_keeps_the_last_cause() {
    let registry = Arc::new(
        AgentRegistry::builder()
            .agent(
                AgentMeta::new("a").capability("answer"),
                agent("a", failing(1)),
            )
            .agent(
                AgentMeta::new("b").capability("answer"),
                agent("b", failing(1)),
            )
            .agent(
                AgentMeta::new("c").capability("other"),
                agent("c", answering("x", 1)),
            )
            .build()
            .unwrap(),
    );
    let r = registry.clone();
    let failure = in_node(Default::default(), move |ctx| {
        let r = r.clone();
        async move { r.run_with_fallback("answer", conversation(), &ctx).await }
    })
    .await
    .unwrap_err();
    let err = node_error(&failure);
    match AgentError::find(err) {
        Some(AgentError::NoHealthyAgent {
            capability,
            tried,
            source,
        }) => {
            assert_eq!(capability, "answer");
            assert_eq!(tried, &["a", "b"]);
            assert!(
                source
                    .as_ref()
                    .unwrap()
                    .to_string()
                    .contains("scripted failure")
            );
        }
        other => panic!("expected NoHealthyAgent, got {other:?}"),
    }
    assert!(
        std::error::Error::source(err).is_some(),
        "the cause is kept"
    );

    let r = registry.clone();
    let failure = in_node(Default::default(), move |ctx| {
        let r = r.clone();
        async move { r.run_with_fallback("fly", conversation(), &ctx).await }
    })
    .await
    .unwrap_err();
    assert!(matches!(
        AgentError::find(node_error(&failure)),
        Some(AgentError::NoHealthyAgent { tried, source: None, .. }) if tried.is_empty()
    ));
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_agent_is_skipped_until_its_failures_age_out() {
    let policy = HealthPolicy::new()
        .min_calls(1)
        .max_error_percent(0)
        .window(5)
        .max_age(Duration::from_secs(60));
    let cheap_model = Arc::new(
        ScriptedModel::new("openai")
            .fail(ModelErrorKind::InvalidRequest)
            .reply("cheap answer", TokenUsage::new(5, 1)),
    );
    let strong_model = answering("strong answer", 3);
    let registry = Arc::new(
        AgentRegistry::builder()
            .policy(policy)
            .agent(
                AgentMeta::new("cheap")
                    .capability("answer")
                    .cost_tier(CostTier::Low),
                agent("cheap", cheap_model.clone()),
            )
            .agent(
                AgentMeta::new("strong")
                    .capability("answer")
                    .cost_tier(CostTier::High),
                agent("strong", strong_model.clone()),
            )
            .build()
            .unwrap(),
    );
    let run = |registry: Arc<AgentRegistry>| async move {
        let (config, sink) = traced();
        let (out, _) = in_node(config, move |ctx| {
            let r = registry.clone();
            async move { r.run_with_fallback("answer", conversation(), &ctx).await }
        })
        .await
        .unwrap();
        (out, events(&sink, "agent.fallback").len())
    };

    let (out, fallbacks) = run(registry.clone()).await;
    assert_eq!((out.agent.as_str(), fallbacks), ("strong", 1));
    assert!(!registry.health("cheap").unwrap().healthy);

    // Unhealthy: skipped without trying it (no fallback event, no call).
    let (out, fallbacks) = run(registry.clone()).await;
    assert_eq!(
        (out.agent.as_str(), out.fallbacks, fallbacks),
        ("strong", 0, 0)
    );
    assert_eq!(cheap_model.calls(), 1);

    // A minute later its failure no longer counts: it is tried, and answers.
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(registry.health("cheap").unwrap().healthy);
    let (out, _) = run(registry.clone()).await;
    assert_eq!(out.agent, "cheap");
    assert_eq!(out.output.text, "cheap answer");
    assert_eq!(strong_model.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_slow_agent_becomes_unhealthy_by_exact_mean_latency() {
    let policy = HealthPolicy::new()
        .min_calls(2)
        .max_mean_latency(Duration::from_millis(1500));
    let slow = Arc::new(
        ScriptedModel::new("openai")
            .reply("a", TokenUsage::new(1, 1))
            .reply("b", TokenUsage::new(1, 1))
            .with_latency(Duration::from_millis(1500)),
    );
    let registry = Arc::new(
        AgentRegistry::builder()
            .policy(policy)
            .agent(
                AgentMeta::new("slow").capability("answer"),
                agent("slow", slow.clone()),
            )
            .build()
            .unwrap(),
    );
    let r = registry.clone();
    in_node(Default::default(), move |ctx| {
        let r = r.clone();
        async move {
            r.run("slow", conversation(), &ctx).await?;
            r.run("slow", conversation(), &ctx).await
        }
    })
    .await
    .unwrap();
    let h = registry.health("slow").unwrap();
    assert_eq!(h.calls, 2);
    assert_eq!(h.total_latency, Duration::from_millis(3000));
    assert_eq!(h.mean_latency(), Some(Duration::from_millis(1500)));
    assert!(h.healthy, "exactly at the limit is healthy");
    // One more nanosecond of latency, recorded from outside, tips it over.
    registry.record(
        "slow",
        true,
        Duration::from_millis(1500) + Duration::from_nanos(3),
    );
    let h = registry.health("slow").unwrap();
    assert_eq!(h.calls, 3);
    assert!(!h.healthy);
}

#[tokio::test]
async fn a_run_level_failure_is_not_fallen_back_on() {
    let first = answering("x", 1);
    let second = answering("y", 1);
    let registry = Arc::new(
        AgentRegistry::builder()
            .agent(
                AgentMeta::new("a").capability("answer"),
                agent("a", first.clone()),
            )
            .agent(
                AgentMeta::new("b").capability("answer"),
                agent("b", second.clone()),
            )
            .build()
            .unwrap(),
    );
    let config = flowtrace_core::RunConfig::new().budget(Budget::default().max_tokens(3));
    let r = registry.clone();
    let failure = in_node(config, move |ctx| {
        let r = r.clone();
        async move { r.run_with_fallback("answer", conversation(), &ctx).await }
    })
    .await
    .unwrap_err();
    assert!(
        matches!(failure.error, flowtrace_core::Error::BudgetExceeded(_)),
        "{}",
        failure.report()
    );
    assert_eq!((first.calls(), second.calls()), (0, 0));
}
