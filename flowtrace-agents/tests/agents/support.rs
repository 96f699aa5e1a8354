//! Shared helpers: counting tools, running code inside a node, reading
//! traces.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flowtrace_agents::tools::ToolRegistry;
use flowtrace_core::trace::MemorySink;
use flowtrace_core::{
    EventKind, GraphBuilder, JsonState, NodeContext, NodeError, NodeOutput, RunConfig, RunFailure,
    RunSummary, Tool, ToolError, ToolSafety, node_fn,
};
use serde_json::{Value, json};

/// What a [`TestTool`] answers.
pub enum Behaviour {
    /// Echoes its input under `"echo"` with the tool's name.
    Echo,
    /// Always this value.
    Fixed(Value),
    /// Always fails, permanently.
    Fail(&'static str),
}

/// A tool that counts its calls and remembers their inputs.
pub struct TestTool {
    name: &'static str,
    safety: ToolSafety,
    behaviour: Behaviour,
    calls: AtomicUsize,
    inputs: Mutex<Vec<Value>>,
}

impl TestTool {
    pub fn new(name: &'static str, safety: ToolSafety, behaviour: Behaviour) -> Arc<Self> {
        Arc::new(Self {
            name,
            safety,
            behaviour,
            calls: AtomicUsize::new(0),
            inputs: Mutex::new(Vec::new()),
        })
    }

    pub fn safe(name: &'static str, behaviour: Behaviour) -> Arc<Self> {
        Self::new(name, ToolSafety::Safe, behaviour)
    }

    pub fn dangerous(name: &'static str) -> Arc<Self> {
        Self::new(
            name,
            ToolSafety::Dangerous,
            Behaviour::Fixed(json!({"done": true})),
        )
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn inputs(&self) -> Vec<Value> {
        self.inputs.lock().unwrap().clone()
    }
}

#[async_trait]
impl Tool for TestTool {
    fn name(&self) -> &str {
        self.name
    }
    fn description(&self) -> &str {
        "a test tool"
    }
    fn parameters(&self) -> Value {
        json!({"type": "object"})
    }
    fn safety(&self) -> ToolSafety {
        self.safety
    }
    async fn call(&self, args: Value) -> Result<Value, ToolError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inputs.lock().unwrap().push(args.clone());
        match &self.behaviour {
            Behaviour::Echo => Ok(json!({"tool": self.name, "echo": args})),
            Behaviour::Fixed(v) => Ok(v.clone()),
            Behaviour::Fail(msg) => Err(ToolError::permanent(self.name, *msg)),
        }
    }
}

/// A registry of `tools`.
pub fn registry(tools: &[&Arc<TestTool>]) -> ToolRegistry {
    tools
        .iter()
        .fold(ToolRegistry::builder(), |b, t| {
            b.tool(Arc::clone(t) as Arc<dyn Tool>)
        })
        .build()
        .unwrap()
}

/// A run config recording into a fresh memory sink.
pub fn traced() -> (RunConfig, MemorySink) {
    let sink = MemorySink::new();
    (RunConfig::new().sink(sink.clone()), sink)
}

/// The events of `sink` of kind `name`.
pub fn events(sink: &MemorySink, name: &str) -> Vec<EventKind> {
    sink.events()
        .into_iter()
        .filter(|e| e.kind.name() == name)
        .map(|e| e.kind)
        .collect()
}

/// Runs `f` inside a one-node graph (so it has a real `NodeContext`), and
/// returns its value with the run's summary, or the run's failure.
pub async fn in_node<T, F, Fut>(config: RunConfig, f: F) -> Result<(T, RunSummary), RunFailure>
where
    T: Send + 'static,
    F: Fn(NodeContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, NodeError>> + Send + 'static,
{
    let slot: Arc<Mutex<Option<T>>> = Arc::new(Mutex::new(None));
    let out = slot.clone();
    let f = Arc::new(f);
    let node = node_fn(move |_state: Arc<JsonState>, ctx: NodeContext| {
        let f = f.clone();
        let out = out.clone();
        async move {
            let value = f(ctx).await?;
            *out.lock().unwrap() = Some(value);
            Ok(NodeOutput::none())
        }
    });
    let graph = GraphBuilder::<JsonState>::new("test")
        .add_node("work", node)
        .set_entry("work")
        .set_finish("work")
        .compile()
        .unwrap();
    let run = graph.invoke(JsonState::new(), config).await?;
    let value = slot.lock().unwrap().take().unwrap();
    Ok((value, run.summary))
}

/// The node error that failed `failure`'s run.
pub fn node_error(failure: &RunFailure) -> &NodeError {
    match &failure.error {
        flowtrace_core::Error::Node { error, .. } => error,
        other => panic!("not a node failure: {other}"),
    }
}
