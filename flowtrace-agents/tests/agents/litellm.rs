//! A ReAct loop against a real OpenAI-protocol server: LiteLLM's proxy,
//! started by `scripts/peers.sh` with the mock models of
//! `scripts/litellm/config.yaml` (`mock-tool-call` always asks for
//! `get_weather {"city": "Paris"}`, `mock-answer` answers with text).
//!
//! Needs `FLOWTRACE_LITELLM_URL` (and `FLOWTRACE_LITELLM_KEY`, default
//! `sk-test-1234`); skipped loudly without it, failed instead when
//! `FLOWTRACE_REQUIRE_PEERS=1`.

use std::sync::Arc;
use std::time::Duration;

use flowtrace_agents::agents::{AgentError, ReasoningAgent, run_agent};
use flowtrace_agents::tools::ToolGrants;
use flowtrace_core::{ChatModel, EventKind, Message, ToolSafety};
use flowtrace_providers::ApiKey;
use flowtrace_providers::openai::OpenAi;
use serde_json::json;

use crate::support::{Behaviour, TestTool, events, registry, traced};

/// The proxy as an OpenAI-compatible client, or `None` (with a note on
/// stderr) when it is not configured.
fn proxy(test: &str) -> Option<Arc<dyn ChatModel>> {
    let url = match std::env::var("FLOWTRACE_LITELLM_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            assert!(
                std::env::var("FLOWTRACE_REQUIRE_PEERS").as_deref() != Ok("1"),
                "FLOWTRACE_REQUIRE_PEERS=1 but FLOWTRACE_LITELLM_URL is not set: start LiteLLM's proxy with scripts/peers.sh"
            );
            eprintln!(
                "SKIPPED {test}: FLOWTRACE_LITELLM_URL is not set (start LiteLLM's proxy with `bash scripts/peers.sh start`)"
            );
            return None;
        }
    };
    let key = std::env::var("FLOWTRACE_LITELLM_KEY").unwrap_or_else(|_| "sk-test-1234".into());
    let client = OpenAi::new(ApiKey::new(key))
        .base_url(format!("{}/v1", url.trim().trim_end_matches('/')))
        .provider_name("litellm")
        .timeout(Duration::from_secs(60));
    Some(Arc::new(client))
}

fn weather(safety: ToolSafety) -> Arc<TestTool> {
    TestTool::new(
        "get_weather",
        safety,
        Behaviour::Fixed(json!({"city": "Paris", "sky": "clear", "temp_c": 18})),
    )
}

#[tokio::test]
async fn a_real_tool_call_runs_then_the_repeated_call_trips_loop_detection() {
    let Some(model) = proxy("a_real_tool_call_runs_then_the_repeated_call_trips_loop_detection")
    else {
        return;
    };
    let tool = weather(ToolSafety::Safe);
    let agent = ReasoningAgent::new("weather", model, "mock-tool-call", registry(&[&tool]))
        .loop_threshold(2)
        .max_iterations(5);
    let (config, sink) = traced();
    let err = run_agent(
        Arc::new(agent),
        vec![Message::user("Weather in Paris?")],
        config,
    )
    .await
    .unwrap_err();

    // The first call, parsed from the proxy's wire format, really ran.
    assert_eq!(tool.inputs(), vec![json!({"city": "Paris"})]);
    match err.agent_error() {
        Some(AgentError::Loop {
            tool,
            arguments,
            repeats,
            ..
        }) => {
            assert_eq!(tool, "get_weather");
            assert_eq!(arguments, &json!({"city": "Paris"}));
            assert_eq!(*repeats, 2);
        }
        other => panic!(
            "expected a loop error, got {other:?}: {}",
            err.failure().unwrap().report()
        ),
    }
    // Two real round trips: the second carried the tool result back.
    assert_eq!(events(&sink, "llm.response").len(), 2);
    let requests = events(&sink, "tool.request");
    assert!(
        matches!(&requests[..], [EventKind::ToolRequest { tool, arguments }]
            if tool == "get_weather" && arguments == &json!({"city": "Paris"})),
        "{requests:?}"
    );
    assert_eq!(events(&sink, "tool.response").len(), 1);
    assert_eq!(events(&sink, "agent.loop").len(), 1);
}

#[tokio::test]
async fn a_denied_call_from_a_real_server_is_reported_and_never_executed() {
    let Some(model) = proxy("a_denied_call_from_a_real_server_is_reported_and_never_executed")
    else {
        return;
    };
    let tool = weather(ToolSafety::Dangerous);
    let agent = ReasoningAgent::new("weather", model, "mock-tool-call", registry(&[&tool]))
        .grants(ToolGrants::safe_only())
        .loop_threshold(2);
    let (config, sink) = traced();
    let err = run_agent(
        Arc::new(agent),
        vec![Message::user("Weather in Paris?")],
        config,
    )
    .await
    .unwrap_err();
    assert_eq!(tool.calls(), 0);
    assert!(
        matches!(err.agent_error(), Some(AgentError::Loop { .. })),
        "{err:?}"
    );
    // The refusal went back to the proxy as the call's result (accepted:
    // the second request succeeded).
    assert_eq!(events(&sink, "tool.denied").len(), 1);
    assert_eq!(events(&sink, "llm.response").len(), 2);
}

#[tokio::test]
async fn a_text_answer_from_a_real_server_ends_the_loop() {
    let Some(model) = proxy("a_text_answer_from_a_real_server_ends_the_loop") else {
        return;
    };
    let tool = weather(ToolSafety::Safe);
    let agent = ReasoningAgent::new("weather", model, "mock-answer", registry(&[&tool]));
    let run = run_agent(
        Arc::new(agent),
        vec![Message::user("What is the answer?")],
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(run.output.text, "The answer is 42.");
    assert_eq!(run.output.turns, 1);
    assert_eq!(tool.calls(), 0);
    assert!(run.usage.output_tokens > 0, "{:?}", run.usage);
}
