//! ReasoningAgent: tool calls through the registry, denied tools, loop
//! detection, limits, and the simulated provider.

use std::sync::Arc;

use flowtrace_agents::agents::{AgentError, MAX_TOOL_CALLS_PER_TURN, ReasoningAgent, run_agent};
use flowtrace_agents::tools::ToolGrants;
use flowtrace_core::model::Role;
use flowtrace_core::testing::ScriptedModel;
use flowtrace_core::{EventKind, Message, PriceTable, Pricing, TokenUsage};
use flowtrace_providers::simulated::{
    SimulatedConfig, SimulatedModel, SimulatedToolCall, SimulatedTurn,
};
use serde_json::json;

use crate::support::{Behaviour, TestTool, events, registry, traced};

#[tokio::test]
async fn runs_tool_calls_and_feeds_the_results_back() {
    let search = TestTool::safe("search", Behaviour::Fixed(json!({"hits": 3})));
    let model = Arc::new(
        ScriptedModel::new("openai")
            .tool_call(
                "c1",
                "search",
                json!({"q": "rust"}),
                TokenUsage::new(50, 10),
            )
            .reply("Found 3 hits.", TokenUsage::new(80, 5)),
    );
    let agent = ReasoningAgent::new("react", model.clone(), "gpt-4o-mini", registry(&[&search]))
        .system("Be brief.");
    let (config, sink) = traced();
    let run = run_agent(Arc::new(agent), vec![Message::user("search rust")], config)
        .await
        .unwrap();

    assert_eq!(run.output.text, "Found 3 hits.");
    assert_eq!(run.output.turns, 2);
    assert_eq!(search.inputs(), vec![json!({"q": "rust"})]);
    // The added messages: the call, its result, the answer.
    let roles: Vec<Role> = run.output.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::Assistant, Role::Tool, Role::Assistant]);
    assert_eq!(run.output.messages[1].content, r#"{"hits":3}"#);
    assert_eq!(run.output.messages[1].tool_call_id.as_deref(), Some("c1"));

    let requests = model.requests();
    assert_eq!(requests[0].system.as_deref(), Some("Be brief."));
    assert_eq!(requests[0].tools.len(), 1);
    assert_eq!(requests[0].tools[0].name, "search");
    assert_eq!(requests[1].messages.len(), 3);
    assert_eq!(requests[1].messages[2].role, Role::Tool);

    // Tokens and exact cost of both calls are the run's.
    assert_eq!(run.usage, TokenUsage::new(130, 15));
    let price = PriceTable::builtin()
        .price("openai", "gpt-4o-mini")
        .unwrap();
    let expected = price.cost(&TokenUsage::new(50, 10)).unwrap()
        + price.cost(&TokenUsage::new(80, 5)).unwrap();
    assert_eq!(run.cost, expected);
    assert_eq!(events(&sink, "tool.request").len(), 1);
    assert_eq!(events(&sink, "tool.response").len(), 1);
    assert_eq!(events(&sink, "llm.response").len(), 2);
}

#[tokio::test]
async fn a_denied_dangerous_tool_is_reported_to_the_model_and_never_executed() {
    let lookup = TestTool::safe("lookup", Behaviour::Echo);
    let delete = TestTool::dangerous("delete_account");
    let model = Arc::new(
        ScriptedModel::new("openai")
            .tool_call(
                "c1",
                "delete_account",
                json!({"user": 7}),
                TokenUsage::new(20, 5),
            )
            .reply("I may not delete accounts.", TokenUsage::new(30, 6)),
    );
    let agent = ReasoningAgent::new(
        "react",
        model.clone(),
        "gpt-4o-mini",
        registry(&[&lookup, &delete]),
    )
    .grants(ToolGrants::safe_only());
    let (config, sink) = traced();
    let run = run_agent(
        Arc::new(agent),
        vec![Message::user("delete user 7")],
        config,
    )
    .await
    .unwrap();

    assert_eq!(delete.calls(), 0, "a denied tool must never run");
    assert_eq!(run.output.text, "I may not delete accounts.");
    // Only granted tools are offered.
    let offered: Vec<String> = model.requests()[0]
        .tools
        .iter()
        .map(|t| t.name.clone())
        .collect();
    assert_eq!(offered, ["lookup"]);
    // The refusal reaches the model as the call's result.
    let result = &model.requests()[1].messages[2];
    assert_eq!(result.role, Role::Tool);
    assert_eq!(result.tool_call_id.as_deref(), Some("c1"));
    let body: serde_json::Value = serde_json::from_str(&result.content).unwrap();
    assert_eq!(body["error"]["kind"], "permission_denied");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("delete_account")
    );
    // And the trace shows it.
    let denied = events(&sink, "tool.denied");
    assert!(
        matches!(&denied[..], [EventKind::ToolDenied { tool, .. }] if tool == "delete_account"),
        "{denied:?}"
    );
    assert!(events(&sink, "tool.request").is_empty());
}

#[tokio::test]
async fn a_granted_dangerous_tool_runs() {
    let delete = TestTool::dangerous("delete_account");
    let model = Arc::new(
        ScriptedModel::new("openai")
            .tool_call(
                "c1",
                "delete_account",
                json!({"user": 7}),
                TokenUsage::new(20, 5),
            )
            .reply("Deleted.", TokenUsage::new(30, 6)),
    );
    let agent = ReasoningAgent::new("react", model.clone(), "gpt-4o-mini", registry(&[&delete]))
        .grants(ToolGrants::safe_only().grant("delete_account"));
    let run = run_agent(
        Arc::new(agent),
        vec![Message::user("delete user 7")],
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(delete.calls(), 1);
    assert_eq!(run.output.text, "Deleted.");
    assert_eq!(model.requests()[0].tools[0].name, "delete_account");
}

#[tokio::test]
async fn an_unknown_tool_is_reported_as_not_found() {
    let model = Arc::new(
        ScriptedModel::new("openai")
            .tool_call("c1", "teleport", json!({}), TokenUsage::new(20, 5))
            .reply("Cannot.", TokenUsage::new(30, 6)),
    );
    let agent = ReasoningAgent::new("react", model.clone(), "gpt-4o-mini", registry(&[]));
    let run = run_agent(
        Arc::new(agent),
        vec![Message::user("go")],
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(run.output.text, "Cannot.");
    let body: serde_json::Value =
        serde_json::from_str(&model.requests()[1].messages[2].content).unwrap();
    assert_eq!(body["error"]["kind"], "not_found");
}

#[tokio::test]
async fn the_same_call_repeated_stops_the_agent_with_an_agent_loop_event() {
    let search = TestTool::safe("search", Behaviour::Fixed(json!([])));
    let model = Arc::new(
        ScriptedModel::new("openai")
            .tool_call(
                "c1",
                "search",
                json!({"q": "x", "page": 1}),
                TokenUsage::new(10, 2),
            )
            .tool_call("c2", "search", json!({"q": "y"}), TokenUsage::new(10, 2))
            .tool_call(
                "c3",
                "search",
                json!({"page": 1, "q": "x"}),
                TokenUsage::new(10, 2),
            )
            .tool_call(
                "c4",
                "search",
                json!({"q": "x", "page": 1}),
                TokenUsage::new(10, 2),
            )
            .reply("never reached", TokenUsage::new(1, 1)),
    );
    let agent = ReasoningAgent::new("react", model.clone(), "gpt-4o-mini", registry(&[&search]));
    assert_eq!(agent.get_loop_threshold(), 3);
    let (config, sink) = traced();
    let err = run_agent(Arc::new(agent), vec![Message::user("search")], config)
        .await
        .unwrap_err();

    match err.agent_error() {
        Some(AgentError::Loop {
            agent,
            tool,
            arguments,
            repeats,
        }) => {
            assert_eq!(agent, "react");
            assert_eq!(tool, "search");
            assert_eq!(arguments, &json!({"q": "x", "page": 1}));
            assert_eq!(*repeats, 3);
        }
        other => panic!("expected a loop error, got {other:?}"),
    }
    // The third identical call (c4) is not executed.
    assert_eq!(search.calls(), 3);
    assert_eq!(model.calls(), 4);
    let loops = events(&sink, "agent.loop");
    assert!(
        matches!(&loops[..], [EventKind::AgentLoop { agent, tool, repeats: 3, arguments }]
            if agent == "react" && tool == "search" && arguments == &json!({"q": "x", "page": 1})),
        "{loops:?}"
    );
    // The failed run still accounts for the four model calls.
    let failure = err.failure().unwrap();
    assert_eq!(failure.summary.usage, TokenUsage::new(40, 8));
}

#[tokio::test]
async fn the_loop_threshold_is_configurable() {
    let search = TestTool::safe("search", Behaviour::Fixed(json!([])));
    let model = Arc::new(
        ScriptedModel::new("openai")
            .tool_call("c1", "search", json!({"q": "x"}), TokenUsage::new(10, 2))
            .tool_call("c2", "search", json!({"q": "x"}), TokenUsage::new(10, 2)),
    );
    let agent =
        ReasoningAgent::new("react", model, "gpt-4o-mini", registry(&[&search])).loop_threshold(2);
    let err = run_agent(
        Arc::new(agent),
        vec![Message::user("s")],
        Default::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(
        err.agent_error(),
        Some(AgentError::Loop { repeats: 2, .. })
    ));
    assert_eq!(search.calls(), 1);
}

#[tokio::test]
async fn the_iteration_limit_is_a_typed_error() {
    let search = TestTool::safe("search", Behaviour::Fixed(json!([])));
    let mut model = ScriptedModel::new("openai");
    for i in 0..5 {
        model = model.tool_call(
            format!("c{i}"),
            "search",
            json!({"q": i}),
            TokenUsage::new(10, 2),
        );
    }
    let model = Arc::new(model);
    let agent = ReasoningAgent::new("react", model.clone(), "gpt-4o-mini", registry(&[&search]))
        .max_iterations(3);
    let err = run_agent(
        Arc::new(agent),
        vec![Message::user("s")],
        Default::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err.agent_error(),
            Some(AgentError::MaxIterations { limit: 3, .. })
        ),
        "{err:?}"
    );
    assert_eq!(model.calls(), 3);
    assert_eq!(search.calls(), 3);
}

#[tokio::test]
async fn a_model_failure_is_not_wrapped() {
    let model = Arc::new(ScriptedModel::new("openai").fail(flowtrace_core::ModelErrorKind::Auth));
    let agent = ReasoningAgent::new("react", model, "gpt-4o-mini", registry(&[]));
    let err = run_agent(
        Arc::new(agent),
        vec![Message::user("s")],
        Default::default(),
    )
    .await
    .unwrap_err();
    assert!(err.agent_error().is_none());
    let node = crate::support::node_error(err.failure().unwrap());
    assert!(node.get_ref().unwrap().is::<flowtrace_core::ModelError>());
}

#[tokio::test]
async fn the_simulated_provider_drives_a_react_loop_offline() {
    let weather = TestTool::safe("get_weather", Behaviour::Fixed(json!({"sky": "clear"})));
    let clock = TestTool::safe("clock", Behaviour::Fixed(json!("12:00")));
    let model = Arc::new(SimulatedModel::new(
        SimulatedConfig::new()
            .usage(100, 20)
            .turn(
                SimulatedTurn::tool_call("get_weather", json!({"city": "Paris"}))
                    .with_tool_call(SimulatedToolCall::new("clock", json!({}))),
            )
            .turn(SimulatedTurn::text("Clear skies in Paris at noon.")),
    ));
    let agent = ReasoningAgent::new("react", model, "gpt-4o-mini", registry(&[&weather, &clock]));
    let run = run_agent(
        Arc::new(agent),
        vec![Message::user("Weather?")],
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(run.output.text, "Clear skies in Paris at noon.");
    assert_eq!((weather.calls(), clock.calls()), (1, 1));
    assert_eq!(
        run.output.messages[1].tool_call_id.as_deref(),
        Some("call_1_1")
    );
    assert_eq!(
        run.output.messages[2].tool_call_id.as_deref(),
        Some("call_1_2")
    );
    assert_eq!(run.output.messages[2].content, "12:00");
    assert_eq!(run.usage, TokenUsage::new(200, 40));
    let price = PriceTable::builtin()
        .price("simulated", "gpt-4o-mini")
        .unwrap();
    assert_eq!(run.cost, price.cost(&TokenUsage::new(200, 40)).unwrap());
    assert!(run.cost > flowtrace_core::Cost::ZERO);
}

#[tokio::test]
async fn too_many_tool_calls_in_one_turn_are_refused() {
    let search = TestTool::safe("search", Behaviour::Fixed(json!([])));
    let mut turn = SimulatedTurn::default();
    for i in 0..=MAX_TOOL_CALLS_PER_TURN {
        turn = turn.with_tool_call(SimulatedToolCall::new("search", json!({"q": i})));
    }
    let model = Arc::new(SimulatedModel::new(SimulatedConfig::new().turn(turn)));
    let agent = ReasoningAgent::new("react", model, "gpt-4o-mini", registry(&[&search]));
    let err = run_agent(
        Arc::new(agent),
        vec![Message::user("s")],
        Default::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(
        err.agent_error(),
        Some(AgentError::TooManyToolCalls { count, limit, .. })
            if *count == MAX_TOOL_CALLS_PER_TURN + 1 && *limit == MAX_TOOL_CALLS_PER_TURN
    ));
    assert_eq!(search.calls(), 0);
}
