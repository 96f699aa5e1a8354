//! PlanExecuteAgent: plans, execution, reflection, re-planning and the
//! episodic store.

use std::sync::Arc;

use flowtrace_agents::agents::{AgentError, PlanError, PlanExecuteAgent, run_agent};
use flowtrace_agents::memory::{Episode, EpisodeOutcome, EpisodicStore, InMemoryEpisodicStore};
use flowtrace_core::testing::ScriptedModel;
use flowtrace_core::{Message, TokenUsage};
use serde_json::json;

use crate::support::{Behaviour, TestTool, events, registry, traced};

fn u() -> TokenUsage {
    TokenUsage::new(20, 10)
}

#[tokio::test]
async fn a_plan_is_executed_and_reflected_on() {
    let flights = TestTool::safe("search_flights", Behaviour::Fixed(json!([{"id": "AF1"}])));
    let hotels = TestTool::safe("search_hotels", Behaviour::Fail("hotel API down"));
    let store = Arc::new(InMemoryEpisodicStore::new());
    let model = Arc::new(
        ScriptedModel::new("openai")
            .reply(
                r#"{"steps": [
                    {"tool": "search_flights", "input": {"to": "Paris"}, "critical": true},
                    {"tool": "search_hotels", "input": {"city": "Paris"}, "critical": false}
                ]}"#,
                u(),
            )
            .reply(r#"{"success": true, "answer": "Fly AF1 for 90 EUR."}"#, u()),
    );
    let agent = PlanExecuteAgent::new(
        "planner",
        model.clone(),
        "gpt-4o-mini",
        registry(&[&flights, &hotels]),
    )
    .episodes(store.clone());
    let (config, sink) = traced();
    let run = run_agent(
        Arc::new(agent),
        vec![Message::user("Trip to Paris")],
        config,
    )
    .await
    .unwrap();
    assert_eq!(run.output.text, "Fly AF1 for 90 EUR.");
    assert_eq!(run.output.turns, 2);
    assert_eq!(flights.inputs(), vec![json!({"to": "Paris"})]);
    // A failed non-critical step does not stop the plan.
    assert_eq!(hotels.calls(), 1);
    assert_eq!(run.usage, TokenUsage::new(40, 20));

    let requests = model.requests();
    let planner = &requests[0].messages[0].content;
    assert!(planner.starts_with("Goal: Trip to Paris"), "{planner}");
    assert!(planner.contains("search_flights") && planner.contains("search_hotels"));
    assert!(!planner.contains("Similar goals"), "the store was empty");
    let reflect = &requests[1].messages[0].content;
    assert!(
        reflect.contains(r#""output":"[{\"id\":\"AF1\"}]""#),
        "{reflect}"
    );
    assert!(reflect.contains("hotel API down"), "{reflect}");
    assert_eq!(events(&sink, "tool.request").len(), 2);

    let recorded = store.exact("trip to paris", 5).await.unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        recorded[0].outcome,
        EpisodeOutcome::Succeeded {
            answer: "Fly AF1 for 90 EUR.".into()
        }
    );
    assert_eq!(recorded[0].plan["steps"][0]["tool"], "search_flights");
}

#[tokio::test]
async fn a_failed_critical_step_re_plans_with_the_failure_in_context() {
    let primary = TestTool::safe("primary_api", Behaviour::Fail("503 from upstream"));
    let backup = TestTool::safe("backup_api", Behaviour::Fixed(json!({"rate": 1.08})));
    let never = TestTool::safe("after_failure", Behaviour::Echo);
    let store = Arc::new(InMemoryEpisodicStore::new());
    let model = Arc::new(
        ScriptedModel::new("openai")
            .reply(
                r#"{"steps": [{"tool": "primary_api", "input": {}}, {"tool": "after_failure"}]}"#,
                u(),
            )
            .reply(
                r#"{"steps": [{"tool": "backup_api", "input": {"pair": "EURUSD"}}]}"#,
                u(),
            )
            .reply(r#"{"success": true, "answer": "1.08"}"#, u()),
    );
    let agent = PlanExecuteAgent::new(
        "fx",
        model.clone(),
        "gpt-4o-mini",
        registry(&[&primary, &backup, &never]),
    )
    .episodes(store.clone());
    let run = run_agent(
        Arc::new(agent),
        vec![Message::user("EUR to USD rate")],
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(run.output.text, "1.08");
    assert_eq!(run.output.turns, 3, "plan, re-plan, reflect");
    assert_eq!(primary.calls(), 1);
    assert_eq!(never.calls(), 0, "a failed critical step stops the plan");
    assert_eq!(backup.calls(), 1);

    let replan = &model.requests()[1].messages[0].content;
    assert!(replan.contains("The previous plan failed."), "{replan}");
    assert!(replan.contains("primary_api"), "{replan}");
    assert!(replan.contains("503 from upstream"), "{replan}");

    // Both executed plans are remembered, newest first.
    let episodes = store.exact("EUR to USD rate", 10).await.unwrap();
    assert_eq!(episodes.len(), 2);
    assert!(episodes[0].outcome.is_success());
    assert!(
        matches!(&episodes[1].outcome, EpisodeOutcome::Failed { reason } if reason.contains("critical step 1 (primary_api) failed"))
    );
}

#[tokio::test]
async fn a_negative_reflection_re_plans_until_the_limit() {
    let search = TestTool::safe("search", Behaviour::Fixed(json!([])));
    let model = Arc::new(
        ScriptedModel::new("openai")
            .reply(
                r#"{"steps": [{"tool": "search", "input": {"q": "a"}}]}"#,
                u(),
            )
            .reply(r#"{"success": false, "reason": "no results"}"#, u())
            .reply(
                r#"{"steps": [{"tool": "search", "input": {"q": "b"}}]}"#,
                u(),
            )
            .reply(r#"{"success": false, "reason": "still nothing"}"#, u()),
    );
    let agent = PlanExecuteAgent::new("p", model.clone(), "gpt-4o-mini", registry(&[&search]))
        .max_replans(1);
    let err = run_agent(
        Arc::new(agent),
        vec![Message::user("find it")],
        Default::default(),
    )
    .await
    .unwrap_err();
    match err.agent_error() {
        Some(AgentError::PlanFailed {
            attempts, reason, ..
        }) => {
            assert_eq!(*attempts, 2);
            assert_eq!(reason, "the goal was not reached: still nothing");
        }
        other => panic!("expected PlanFailed, got {other:?}"),
    }
    assert_eq!(model.calls(), 4);
    assert!(
        model.requests()[2].messages[0]
            .content
            .contains("no results")
    );
}

#[tokio::test]
async fn unusable_plans_are_rejected_and_a_denied_tool_never_runs() {
    let safe = TestTool::safe("read", Behaviour::Echo);
    let wipe = TestTool::dangerous("wipe_disk");
    let model = Arc::new(
        ScriptedModel::new("openai")
            .reply("I think we should read first", u())
            .reply(r#"{"steps": [{"tool": "wipe_disk", "input": {}}]}"#, u()),
    );
    let agent = PlanExecuteAgent::new("p", model.clone(), "gpt-4o-mini", registry(&[&safe, &wipe]))
        .max_replans(1);
    let err = run_agent(
        Arc::new(agent),
        vec![Message::user("clean up")],
        Default::default(),
    )
    .await
    .unwrap_err();
    match err.agent_error() {
        Some(AgentError::InvalidPlan {
            attempts, source, ..
        }) => {
            assert_eq!(*attempts, 2);
            assert_eq!(
                source,
                &PlanError::UnknownTool {
                    step: 1,
                    tool: "wipe_disk".into()
                }
            );
        }
        other => panic!("expected InvalidPlan, got {other:?}"),
    }
    assert_eq!(wipe.calls(), 0);
    // The dangerous tool was never offered, and the first rejection was explained.
    let requests = model.requests();
    assert!(!requests[0].messages[0].content.contains("wipe_disk"));
    assert!(
        requests[1].messages[0]
            .content
            .contains("the plan was rejected")
    );
}

#[tokio::test]
async fn too_many_steps_are_rejected() {
    let t = TestTool::safe("t", Behaviour::Echo);
    let steps: Vec<_> = (0..4)
        .map(|i| json!({"tool": "t", "input": {"i": i}}))
        .collect();
    let model =
        Arc::new(ScriptedModel::new("openai").reply(json!({ "steps": steps }).to_string(), u()));
    let agent = PlanExecuteAgent::new("p", model, "gpt-4o-mini", registry(&[&t]))
        .max_steps(3)
        .max_replans(0);
    let err = run_agent(
        Arc::new(agent),
        vec![Message::user("x")],
        Default::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(
        err.agent_error(),
        Some(AgentError::InvalidPlan {
            source: PlanError::TooManySteps { steps: 4, limit: 3 },
            ..
        })
    ));
    assert_eq!(t.calls(), 0);
}

#[tokio::test]
async fn similar_past_episodes_are_shown_to_the_planner() {
    let store = Arc::new(InMemoryEpisodicStore::new());
    store
        .record(Episode::new(
            "Book a table for two in Lyon",
            json!({"steps": [{"tool": "book", "input": {"city": "Lyon"}}]}),
            EpisodeOutcome::Failed {
                reason: "restaurant API needs a date".into(),
            },
        ))
        .await
        .unwrap();
    store
        .record(Episode::new(
            "Weather in Oslo",
            json!({"steps": []}),
            EpisodeOutcome::Succeeded {
                answer: "cold".into(),
            },
        ))
        .await
        .unwrap();
    let book = TestTool::safe("book", Behaviour::Fixed(json!({"ok": true})));
    let model = Arc::new(
        ScriptedModel::new("openai")
            .reply(
                r#"[{"tool": "book", "input": {"city": "Lyon", "date": "2026-12-24"}}]"#,
                u(),
            )
            .reply(r#"{"success": true, "answer": "Booked."}"#, u()),
    );
    let agent = PlanExecuteAgent::new("p", model.clone(), "gpt-4o-mini", registry(&[&book]))
        .episodes(store.clone());
    let run = run_agent(
        Arc::new(agent),
        vec![Message::user("Book a table in Lyon on Christmas Eve")],
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(run.output.text, "Booked.");
    let planner = &model.requests()[0].messages[0].content;
    assert!(planner.contains("Similar goals tried before"), "{planner}");
    assert!(planner.contains("restaurant API needs a date"), "{planner}");
    assert!(
        !planner.contains("Oslo"),
        "unrelated goals stay out: {planner}"
    );
    assert_eq!(store.len(), 3);
}
