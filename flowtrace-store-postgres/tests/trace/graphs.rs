//! Graphs whose nodes call a scripted, priced model.

use std::sync::Arc;

use flowtrace_core::NodeError;
use flowtrace_core::testing::ScriptedModel;
use flowtrace_core::trace::{LogLevel, TraceEvent};
use flowtrace_core::{
    ChatRequest, CompiledGraph, GraphBuilder, NodeContext, NodeOutput, State, TokenUsage, node_fn,
    reducer,
};
use serde::{Deserialize, Serialize};

/// A list of strings, appended in merge order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Items {
    pub items: Vec<String>,
}

impl State for Items {
    type Update = Vec<String>;
    fn apply(&mut self, u: Vec<String>) {
        reducer::append(&mut self.items, u);
    }
}

/// A model priced by the built-in table (`openai` / `gpt-4o-mini`) that
/// always answers, with usage.
pub fn model() -> Arc<ScriptedModel> {
    Arc::new(ScriptedModel::new("openai").then_always("ok", TokenUsage::new(1234, 567)))
}

/// A node that logs and makes one model call: five events.
fn calling(model: Arc<ScriptedModel>, name: String) -> impl flowtrace_core::Node<Items> {
    node_fn(move |_s: Arc<Items>, ctx: NodeContext| {
        let model = model.clone();
        let name = name.clone();
        async move {
            ctx.log(LogLevel::Info, format!("{name} asks"));
            let r = ctx
                .chat(
                    model.as_ref(),
                    ChatRequest::new("gpt-4o-mini").user(format!("hello from {name}")),
                )
                .await?;
            Ok(NodeOutput::update(vec![format!("{name}:{}", r.text)]))
        }
    })
}

/// `n0 -> n1 -> … -> n{n-1}`, each node calling the model.
pub fn chain(n: usize, model: Arc<ScriptedModel>) -> CompiledGraph<Items> {
    let mut g = GraphBuilder::<Items>::new("chain");
    for i in 0..n {
        g = g.add_node(format!("n{i}"), calling(model.clone(), format!("n{i}")));
        if i > 0 {
            g = g.add_edge(format!("n{}", i - 1), format!("n{i}"));
        }
    }
    g.set_entry("n0")
        .set_finish(format!("n{}", n - 1))
        .compile()
        .unwrap()
}

/// `a -> sub (a 2-node chain as a subgraph) -> b`.
pub fn with_subgraph(model: Arc<ScriptedModel>) -> CompiledGraph<Items> {
    let child = chain(2, model.clone());
    GraphBuilder::<Items>::new("parent")
        .add_node("a", calling(model.clone(), "a".into()))
        .add_node(
            "sub",
            child.as_node(|_p: &Items| Items::default(), |c: Items| c.items),
        )
        .add_node("b", calling(model, "b".into()))
        .set_entry("a")
        .add_edge("a", "sub")
        .add_edge("sub", "b")
        .set_finish("b")
        .compile()
        .unwrap()
}

/// `a` (a model call) then `bad`, which fails.
pub fn failing(model: Arc<ScriptedModel>) -> CompiledGraph<Items> {
    GraphBuilder::<Items>::new("failing")
        .add_node("a", calling(model, "a".into()))
        .add_node(
            "bad",
            node_fn(|_s: Arc<Items>, _ctx: NodeContext| async move {
                Err::<NodeOutput<Vec<String>>, _>(NodeError::permanent("bad input"))
            }),
        )
        .set_entry("a")
        .add_edge("a", "bad")
        .set_finish("bad")
        .compile()
        .unwrap()
}

/// A `log` event of run `run_id`.
pub fn log_event(run_id: &str, message: &str) -> TraceEvent {
    serde_json::from_value(serde_json::json!({
        "ts": "2026-12-01T10:00:00.000001Z",
        "run_id": run_id,
        "kind": "log",
        "level": "info",
        "message": message,
    }))
    .unwrap()
}
