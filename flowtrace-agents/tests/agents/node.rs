//! Agents as graph nodes and on their own.

use std::sync::Arc;

use flowtrace_agents::agents::{AgentError, AgentNode, ReasoningAgent, run_agent};
use flowtrace_core::testing::ScriptedModel;
use flowtrace_core::{GraphBuilder, JsonState, Message, RunConfig, TokenUsage};
use serde_json::json;

use crate::support::{Behaviour, TestTool, registry};

#[tokio::test]
async fn an_agent_node_reads_a_conversation_and_writes_answer_and_messages() {
    let tool = TestTool::safe("lookup", Behaviour::Fixed(json!("42")));
    let model = Arc::new(
        ScriptedModel::new("openai")
            .tool_call(
                "c1",
                "lookup",
                json!({"k": "answer"}),
                TokenUsage::new(30, 5),
            )
            .reply("It is 42.", TokenUsage::new(40, 4)),
    );
    let agent = ReasoningAgent::new("react", model.clone(), "gpt-4o-mini", registry(&[&tool]));
    let graph = GraphBuilder::<JsonState>::new("qa")
        .add_node(
            "agent",
            AgentNode::new(Arc::new(agent))
                .input_field("chat")
                .output_field("reply")
                .messages_field("log"),
        )
        .set_entry("agent")
        .set_finish("agent")
        .compile()
        .unwrap();
    let mut input = JsonState::new().with_append_key("log");
    input.values.insert(
        "chat".into(),
        json!([{"role": "system", "content": "Answer with numbers."}, {"role": "user", "content": "What is the answer?"}]),
    );
    let out = graph.invoke(input, RunConfig::new()).await.unwrap();
    assert_eq!(out.state.get("reply"), Some(&json!("It is 42.")));
    let log = out.state.get("log").unwrap().as_array().unwrap();
    assert_eq!(log.len(), 3);
    assert_eq!(log[1]["role"], "tool");
    assert_eq!(model.requests()[0].messages.len(), 2);
    assert_eq!(out.summary.usage, TokenUsage::new(70, 9));
    assert!(out.summary.cost > flowtrace_core::Cost::ZERO);
}

#[tokio::test]
async fn a_bad_input_field_is_a_typed_error() {
    let model = Arc::new(ScriptedModel::new("openai"));
    let agent = ReasoningAgent::new("react", model.clone(), "gpt-4o-mini", registry(&[]));
    let graph = GraphBuilder::<JsonState>::new("qa")
        .add_node("agent", AgentNode::new(Arc::new(agent)))
        .set_entry("agent")
        .set_finish("agent")
        .compile()
        .unwrap();
    let mut input = JsonState::new();
    input
        .values
        .insert("messages".into(), json!({"not": "messages"}));
    let failure = graph.invoke(input, RunConfig::new()).await.unwrap_err();
    assert!(matches!(
        AgentError::find(crate::support::node_error(&failure)),
        Some(AgentError::InvalidInput { field, .. }) if field == "messages"
    ));
    assert_eq!(model.calls(), 0);
}

#[tokio::test]
async fn run_agent_reports_usage_and_exact_cost() {
    let model = Arc::new(ScriptedModel::new("openai").reply("ok", TokenUsage::new(1000, 100)));
    let agent = Arc::new(ReasoningAgent::new(
        "solo",
        model,
        "gpt-4o-mini",
        registry(&[]),
    ));
    let run = run_agent(agent, vec![Message::user("hi")], RunConfig::new())
        .await
        .unwrap();
    assert_eq!(run.output.text, "ok");
    assert_eq!(run.summary.steps.len(), 1);
    assert_eq!(run.summary.steps[0].node.as_str(), "solo");
    assert_eq!(run.summary.steps[0].cost, run.cost);
    // 1000 input and 100 output tokens of gpt-4o-mini at 0.15 and 0.60 USD
    // per million: exactly 0.00021 USD.
    assert_eq!(run.cost.to_decimal_string(), "0.00021");
}
