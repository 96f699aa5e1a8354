//! The handover and finish sinks in real graph runs.

use std::sync::Arc;

use flowtrace_agents::handover::{
    self, HandoverNode, HandoverPolicy, HandoverReason, HandoverRecord, keys,
};
use flowtrace_core::testing::ScriptedModel;
use flowtrace_core::trace::MemorySink;
use flowtrace_core::{
    ChatRequest, CompiledGraph, EventKind, GraphBuilder, JsonState, NodeContext, NodeOutput,
    RunConfig, TokenUsage, TraceEvent, node_fn,
};
use serde_json::{Map, Value, json};

fn policy() -> Arc<HandoverPolicy> {
    Arc::new(
        HandoverPolicy::builder()
            .confidence_below("0.6".parse().unwrap())
            .user_phrases(["human", "real person", "talk to someone"])
            .max_consecutive_errors(3)
            .build()
            .unwrap(),
    )
}

fn input(v: Value) -> JsonState {
    let mut s = JsonState::new().with_append_key(keys::MESSAGES);
    if let Value::Object(m) = v {
        s.values = m;
    }
    s
}

fn handover_events(sink: &MemorySink) -> Vec<TraceEvent> {
    sink.events()
        .into_iter()
        .filter(|e| matches!(e.kind, EventKind::Handover { .. }))
        .collect()
}

fn record(state: &JsonState) -> HandoverRecord {
    serde_json::from_value(state.get(keys::HANDOVER).cloned().unwrap()).unwrap()
}

fn steps_of(sink: &MemorySink, node: &str) -> usize {
    sink.events()
        .iter()
        .filter(|e| {
            matches!(e.kind, EventKind::StepStarted { .. })
                && e.node.as_ref().is_some_and(|n| n.as_str() == node)
        })
        .count()
}

/// `agent` (the given node) -> router -> `handover` | `finish` | `agent`.
fn graph<N>(agent: N) -> CompiledGraph<JsonState>
where
    N: flowtrace_core::Node<JsonState>,
{
    let p = policy();
    let b = GraphBuilder::<JsonState>::new("support")
        .add_node("agent", agent)
        .set_entry("agent");
    let b = handover::add_router(b, "agent", p.clone(), "agent");
    handover::add_sinks(
        b,
        HandoverNode::new(p)
            .context_messages(2)
            .context_fields(["customer"])
            .required_skills(["support"]),
    )
    .compile()
    .unwrap()
}

/// An agent that answers the last user message with an echo, unless told
/// to keep going.
fn echo_agent() -> impl flowtrace_core::Node<JsonState> {
    node_fn(|s: Arc<JsonState>, _ctx: NodeContext| async move {
        let said = s
            .get(keys::USER_MESSAGE)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut u = Map::new();
        u.insert(
            keys::MESSAGES.into(),
            json!([{"role": "assistant", "content": format!("you said: {said}")}]),
        );
        u.insert(keys::ANSWER.into(), json!(format!("you said: {said}")));
        Ok(NodeOutput::update(u))
    })
}

#[tokio::test]
async fn user_phrase_ends_the_run_with_the_record_and_the_event() {
    let g = graph(echo_agent());
    let sink = MemorySink::new();
    let out = g
        .invoke(
            input(json!({
                "customer": "C-42",
                "user_message": "This is useless, let me TALK TO SOMEONE.",
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": "This is useless, let me TALK TO SOMEONE."}
                ]
            })),
            RunConfig::new().sink(sink.clone()),
        )
        .await
        .unwrap();
    let s = &out.state;
    assert_eq!(s.get(keys::STATUS), Some(&json!("handover")));
    assert_eq!(s.get(keys::FINAL_ANSWER), None, "finish must not run");
    let rec = record(s);
    assert_eq!(rec.reason, HandoverReason::UserRequest);
    assert!(
        rec.context.trigger.contains("TALK TO SOMEONE"),
        "{}",
        rec.context.trigger
    );
    assert_eq!(rec.required_skills, ["support"]);
    assert_eq!(rec.context.fields["customer"], "C-42");
    // The last two messages: the user's and the agent's echo.
    assert_eq!(rec.context.last_messages.len(), 2);
    assert_eq!(rec.context.last_messages[1]["role"], "assistant");

    let events = handover_events(&sink);
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].node.as_ref().unwrap().as_str(),
        handover::HANDOVER_NODE
    );
    match &events[0].kind {
        EventKind::Handover {
            reason,
            required_skills,
            context,
        } => {
            assert_eq!(reason, "user_request");
            assert_eq!(required_skills, &["support"]);
            assert_eq!(context, &serde_json::to_value(&rec.context).unwrap());
        }
        other => panic!("unexpected {other:?}"),
    }
    // The run ended after the handover node.
    let kinds = sink.kinds();
    assert_eq!(kinds.last(), Some(&"run.finished"));
    assert_eq!(steps_of(&sink, "agent"), 1);
    assert_eq!(steps_of(&sink, handover::FINISH_NODE), 0);
}

#[tokio::test]
async fn an_answer_without_a_trigger_finishes() {
    let g = graph(echo_agent());
    let sink = MemorySink::new();
    let out = g
        .invoke(
            input(json!({"user_message": "what are your opening hours?", "confidence": "0.9"})),
            RunConfig::new().sink(sink.clone()),
        )
        .await
        .unwrap();
    assert_eq!(out.state.get(keys::STATUS), Some(&json!("finished")));
    assert_eq!(
        out.state.get(keys::FINAL_ANSWER),
        Some(&json!("you said: what are your opening hours?"))
    );
    assert!(out.state.get(keys::HANDOVER).is_none());
    assert!(handover_events(&sink).is_empty());
}

#[tokio::test]
async fn consecutive_errors_hand_over_on_the_third() {
    // Each turn the agent's tool fails; it counts the failures and retries
    // (the router sends it back) until the policy's limit of 3.
    let agent = node_fn(|s: Arc<JsonState>, _ctx: NodeContext| async move {
        let n = s
            .get(keys::CONSECUTIVE_ERRORS)
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let mut u = Map::new();
        u.insert(keys::CONSECUTIVE_ERRORS.into(), json!(n + 1));
        u.insert(
            keys::MESSAGES.into(),
            json!([{"role": "tool", "content": format!("lookup failed (attempt {})", n + 1)}]),
        );
        Ok(NodeOutput::update(u))
    });
    let g = graph(agent);
    let sink = MemorySink::new();
    let out = g
        .invoke(
            input(json!({"user_message": "where is my parcel?"})),
            RunConfig::new().sink(sink.clone()),
        )
        .await
        .unwrap();
    assert_eq!(steps_of(&sink, "agent"), 3);
    let rec = record(&out.state);
    assert_eq!(rec.reason, HandoverReason::ConsecutiveErrors);
    assert_eq!(rec.context.trigger, "3 consecutive errors (limit 3)");
    assert_eq!(
        rec.context.last_messages[1]["content"],
        "lookup failed (attempt 3)"
    );
    let events = handover_events(&sink);
    assert_eq!(events.len(), 1);
    assert!(
        matches!(&events[0].kind, EventKind::Handover { reason, .. } if reason == "consecutive_errors")
    );
}

/// An agent that asks the model and follows its JSON verdict:
/// `{"answer": ...}` or `{"handover": {...}}`, with a confidence.
fn model_agent(model: Arc<ScriptedModel>) -> impl flowtrace_core::Node<JsonState> {
    node_fn(move |s: Arc<JsonState>, ctx: NodeContext| {
        let model = model.clone();
        async move {
            let question = s
                .get(keys::USER_MESSAGE)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let reply = ctx
                .chat(
                    model.as_ref(),
                    ChatRequest::new("gpt-4o-mini").user(question),
                )
                .await?;
            let verdict: Value = serde_json::from_str(&reply.text)?;
            let mut u = Map::new();
            u.insert(keys::CONFIDENCE.into(), verdict["confidence"].clone());
            if let Some(h) = verdict.get("handover") {
                u.insert(keys::AGENT_HANDOVER.into(), h.clone());
            } else {
                u.insert(keys::ANSWER.into(), verdict["answer"].clone());
            }
            Ok(NodeOutput::update(u))
        }
    })
}

#[tokio::test]
async fn the_agent_decides_to_hand_over() {
    let model = Arc::new(ScriptedModel::new("openai").reply(
        r#"{"confidence": 0.95, "handover": {"reason": "refund above my limit", "summary": "customer wants 900 EUR refunded", "required_skills": ["refunds", "billing"]}}"#,
        TokenUsage::new(20, 30),
    ));
    let g = graph(model_agent(model.clone()));
    let sink = MemorySink::new();
    let out = g
        .invoke(
            input(json!({"user_message": "refund my 900 EUR order"})),
            RunConfig::new().sink(sink.clone()),
        )
        .await
        .unwrap();
    assert_eq!(model.calls(), 1);
    let rec = record(&out.state);
    assert_eq!(rec.reason, HandoverReason::AgentDecision);
    assert_eq!(rec.context.trigger, "refund above my limit");
    assert_eq!(rec.required_skills, ["support", "refunds", "billing"]);
    assert_eq!(
        rec.context.summary.as_deref(),
        Some("customer wants 900 EUR refunded")
    );
    let events = handover_events(&sink);
    assert_eq!(events.len(), 1);
    match &events[0].kind {
        EventKind::Handover {
            reason,
            required_skills,
            context,
        } => {
            assert_eq!(reason, "agent_decision");
            assert_eq!(required_skills, &["support", "refunds", "billing"]);
            assert_eq!(context["summary"], "customer wants 900 EUR refunded");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_low_confidence_answer_goes_to_a_human_instead() {
    let model = Arc::new(ScriptedModel::new("openai").reply(
        r#"{"confidence": 0.42, "answer": "maybe 3 days?"}"#,
        TokenUsage::new(20, 10),
    ));
    let g = graph(model_agent(model));
    let sink = MemorySink::new();
    let out = g
        .invoke(
            input(json!({"user_message": "when does my visa expire?"})),
            RunConfig::new().sink(sink.clone()),
        )
        .await
        .unwrap();
    let rec = record(&out.state);
    assert_eq!(rec.reason, HandoverReason::LowConfidence);
    assert_eq!(rec.context.trigger, "confidence 0.420 below 0.600");
    assert_eq!(out.state.get(keys::STATUS), Some(&json!("handover")));
    assert_eq!(handover_events(&sink).len(), 1);
}
