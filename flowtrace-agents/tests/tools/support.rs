//! Running registry calls inside a node, a scriptable tool and event
//! helpers.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flowtrace_core::trace::MemorySink;
use flowtrace_core::{
    EventKind, GraphBuilder, JsonState, NodeContext, NodeOutput, RunConfig, Tool, ToolError,
    ToolSafety, node_fn,
};
use futures::future::BoxFuture;
use serde_json::{Value, json};

/// Runs `f` with the context of the only node of a one-node graph whose run
/// records its events in the returned sink.
pub async fn in_node<T, F, Fut>(f: F) -> (T, MemorySink)
where
    F: FnOnce(NodeContext) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let job = Arc::new(Mutex::new(Some(f)));
    let out = Arc::new(Mutex::new(None));
    let node = {
        let out = out.clone();
        node_fn(move |_s: Arc<JsonState>, ctx: NodeContext| {
            let job = job.lock().unwrap().take();
            let out = out.clone();
            async move {
                let f = job.expect("the node runs once");
                let value = f(ctx).await;
                *out.lock().unwrap() = Some(value);
                Ok(NodeOutput::none())
            }
        })
    };
    let graph = GraphBuilder::<JsonState>::new("tools")
        .add_node("call", node)
        .set_entry("call")
        .set_finish("call")
        .compile()
        .unwrap();
    let sink = MemorySink::new();
    graph
        .invoke(JsonState::default(), RunConfig::new().sink(sink.clone()))
        .await
        .unwrap();
    let value = out.lock().unwrap().take().expect("the node ran");
    (value, sink)
}

type Behaviour = dyn Fn(u32, Value) -> BoxFuture<'static, Result<Value, ToolError>> + Send + Sync;

/// A tool whose answer to its n-th call (1-based) is scripted, and which
/// records every input it gets.
pub struct Probe {
    name: String,
    safety: ToolSafety,
    schema: Value,
    calls: AtomicU32,
    seen: Mutex<Vec<Value>>,
    behaviour: Box<Behaviour>,
}

impl Probe {
    /// A tool taking any object, answering with `behaviour(call, input)`.
    pub fn new<F, Fut>(name: &str, safety: ToolSafety, behaviour: F) -> Arc<Self>
    where
        F: Fn(u32, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, ToolError>> + Send + 'static,
    {
        Self::with_schema(name, safety, json!({"type": "object"}), behaviour)
    }

    /// The same, with an input schema.
    pub fn with_schema<F, Fut>(
        name: &str,
        safety: ToolSafety,
        schema: Value,
        behaviour: F,
    ) -> Arc<Self>
    where
        F: Fn(u32, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, ToolError>> + Send + 'static,
    {
        Arc::new(Self {
            name: name.to_string(),
            safety,
            schema,
            calls: AtomicU32::new(0),
            seen: Mutex::new(Vec::new()),
            behaviour: Box::new(move |n, v| Box::pin(behaviour(n, v))),
        })
    }

    /// A safe tool echoing its input.
    pub fn echo(name: &str) -> Arc<Self> {
        Self::new(name, ToolSafety::Safe, |_, v| async move { Ok(v) })
    }

    /// How many times it was called.
    pub fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    /// The inputs it got, in order.
    pub fn seen(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait]
impl Tool for Probe {
    fn name(&self) -> &str {
        &self.name
    }
    fn description(&self) -> &str {
        "a scripted test tool"
    }
    fn parameters(&self) -> Value {
        self.schema.clone()
    }
    fn safety(&self) -> ToolSafety {
        self.safety
    }
    async fn call(&self, args: Value) -> Result<Value, ToolError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.seen.lock().unwrap().push(args.clone());
        (self.behaviour)(n, args).await
    }
}

/// The tool-related events (`tool.*` and `retry`) of a run, in order.
pub fn tool_events(sink: &MemorySink) -> Vec<EventKind> {
    sink.events()
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| {
            matches!(
                k,
                EventKind::ToolRequest { .. }
                    | EventKind::ToolResponse { .. }
                    | EventKind::ToolDenied { .. }
                    | EventKind::Retry { .. }
            )
        })
        .collect()
}

/// The names of the tool-related events of a run, in order.
pub fn tool_event_names(sink: &MemorySink) -> Vec<&'static str> {
    tool_events(sink).iter().map(EventKind::name).collect()
}
