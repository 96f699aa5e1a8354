//! Running tool calls inside a graph and reading their events.

use std::sync::Arc;

use flowtrace_agents::tools::{ToolGrants, ToolRegistry};
use flowtrace_core::trace::MemorySink;
use flowtrace_core::{
    EventKind, GraphBuilder, JsonState, NodeContext, NodeOutput, RunConfig, ToolError, node_fn,
};
use serde_json::{Map, Value, json};

/// Runs a one-node graph whose node calls `calls` (tool name, input) in
/// order through `registry` with `grants`; returns each call's result (as
/// JSON: the output, or `{"error": kind, "message": ...}`) and the events.
pub async fn run_calls(
    registry: &ToolRegistry,
    grants: &ToolGrants,
    calls: Vec<(&'static str, Value)>,
) -> (Vec<Result<Value, ToolError>>, MemorySink) {
    let results = Arc::new(std::sync::Mutex::new(Vec::new()));
    let registry = registry.clone();
    let grants = grants.clone();
    let collected = results.clone();
    let graph = GraphBuilder::<JsonState>::new("mcp-calls")
        .add_node(
            "act",
            node_fn(move |_s: Arc<JsonState>, ctx: NodeContext| {
                let registry = registry.clone();
                let grants = grants.clone();
                let calls = calls.clone();
                let collected = collected.clone();
                async move {
                    for (name, input) in calls {
                        let r = registry.call(&ctx, &grants, name, input).await;
                        collected.lock().unwrap().push(r);
                    }
                    let mut update = Map::new();
                    update.insert("done".into(), json!(true));
                    Ok(NodeOutput::update(update))
                }
            }),
        )
        .set_entry("act")
        .set_finish("act")
        .compile()
        .unwrap();
    let sink = MemorySink::new();
    let out = graph
        .invoke(JsonState::new(), RunConfig::new().sink(sink.clone()))
        .await
        .unwrap();
    assert_eq!(out.state.values["done"], json!(true));
    let results = std::mem::take(&mut *results.lock().unwrap());
    (results, sink)
}

/// The tool events of a run, in order, as (kind, tool).
pub fn tool_events(sink: &MemorySink) -> Vec<(&'static str, String)> {
    sink.events()
        .into_iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolRequest { tool, .. }
            | EventKind::ToolResponse { tool, .. }
            | EventKind::ToolDenied { tool, .. } => Some((e.kind.name(), tool.clone())),
            _ => None,
        })
        .collect()
}

/// The `tool.response` events of a run as (tool, output, error).
pub fn responses(sink: &MemorySink) -> Vec<(String, Option<Value>, Option<String>)> {
    sink.events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ToolResponse {
                tool,
                output,
                error,
                ..
            } => Some((tool, output, error)),
            _ => None,
        })
        .collect()
}

/// Whether process `pid` has gone (exited and been reaped), waiting up to
/// `secs` seconds for it.
pub async fn process_gone(pid: u32, secs: u64) -> bool {
    let path = format!("/proc/{pid}");
    for _ in 0..secs * 20 {
        if !std::path::Path::new(&path).exists() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}
