//! Traces and money: event order and content, live streams, sinks, exact
//! cost totals, the response cache and the tool-calling agent.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flowtrace_core::testing::ScriptedModel;
use flowtrace_core::trace::{JsonLinesSink, LogLevel, MemorySink, SinkError};
use flowtrace_core::{
    Agent, Cache, CacheKey, ChatModel, ChatRequest, ChatResponse, CompiledGraph, Cost, Error,
    EventKind, GraphBuilder, Message, NodeContext, NodeOutput, Role, RunConfig, RunStatus,
    StepStatus, StreamItem, TokenUsage, Tool, ToolError, ToolLoopAgent, TraceEvent, TraceSink,
    node_fn,
};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::support::{Items, cost, run_with_sink};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A tool returning the weather of the city it is asked about.
struct Weather {
    calls: AtomicUsize,
}

#[async_trait]
impl Tool for Weather {
    fn name(&self) -> &str {
        "weather"
    }
    fn description(&self) -> &str {
        "Current weather of a city"
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    }
    async fn call(&self, args: Value) -> Result<Value, ToolError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let city = args["city"]
            .as_str()
            .ok_or_else(|| ToolError::permanent("weather", "city must be a string"))?;
        Ok(json!({"city": city, "temp_c": 21}))
    }
}

/// Adds two integers.
struct Add {
    seen: Mutex<Vec<Value>>,
}

#[async_trait]
impl Tool for Add {
    fn name(&self) -> &str {
        "add"
    }
    fn description(&self) -> &str {
        "Adds two integers"
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}})
    }
    async fn call(&self, args: Value) -> Result<Value, ToolError> {
        self.seen.lock().unwrap().push(args.clone());
        let a = args["a"]
            .as_i64()
            .ok_or_else(|| ToolError::permanent("add", "a"))?;
        let b = args["b"]
            .as_i64()
            .ok_or_else(|| ToolError::permanent("add", "b"))?;
        Ok(json!(a + b))
    }
}

/// `think` (one model call) -> `act` (one tool call).
fn two_step_graph(model: Arc<ScriptedModel>, tool: Arc<Weather>) -> CompiledGraph<Items> {
    GraphBuilder::<Items>::new("two-step")
        .add_node(
            "think",
            node_fn(move |_s: Arc<Items>, ctx: NodeContext| {
                let model = model.clone();
                async move {
                    let r = ctx
                        .chat(
                            model.as_ref(),
                            ChatRequest::new("gpt-4o-mini").user("weather in Paris?"),
                        )
                        .await?;
                    Ok(NodeOutput::update(vec![r.text]))
                }
            }),
        )
        .add_node(
            "act",
            node_fn(move |_s: Arc<Items>, ctx: NodeContext| {
                let tool = tool.clone();
                async move {
                    let out = ctx
                        .call_tool(tool.as_ref(), json!({"city": "Paris"}))
                        .await?;
                    Ok(NodeOutput::update(vec![out.to_string()]))
                }
            }),
        )
        .set_entry("think")
        .add_edge("think", "act")
        .set_finish("act")
        .compile()
        .unwrap()
}

fn two_step_fixture() -> (CompiledGraph<Items>, Arc<ScriptedModel>, Arc<Weather>) {
    let model = Arc::new(
        ScriptedModel::new("openai").reply("call the weather tool", TokenUsage::new(10, 5)),
    );
    let tool = Arc::new(Weather {
        calls: AtomicUsize::new(0),
    });
    (two_step_graph(model.clone(), tool.clone()), model, tool)
}

const TWO_STEP_KINDS: [&str; 10] = [
    "run.started",
    "step.started",
    "llm.request",
    "llm.response",
    "step.finished",
    "step.started",
    "tool.request",
    "tool.response",
    "step.finished",
    "run.finished",
];

fn chat_node(
    model: Arc<ScriptedModel>,
    requests: Vec<ChatRequest>,
) -> impl flowtrace_core::Node<Items> {
    node_fn(move |_s: Arc<Items>, ctx: NodeContext| {
        let model = model.clone();
        let requests = requests.clone();
        async move {
            let mut texts = Vec::new();
            for r in requests {
                texts.push(ctx.chat(model.as_ref(), r).await?.text);
            }
            Ok(NodeOutput::update(texts))
        }
    })
}

fn noop() -> impl flowtrace_core::Node<Items> {
    node_fn(|_s: Arc<Items>, _ctx| async { Ok(NodeOutput::none()) })
}

// ---------------------------------------------------------------------------
// 1. Event order and content
// ---------------------------------------------------------------------------

#[tokio::test]
async fn events_of_a_two_step_chain_are_ordered_and_complete() {
    let (graph, model, tool) = two_step_fixture();
    let sink = MemorySink::new();
    let out = graph
        .invoke(
            Items::default(),
            RunConfig::new().run_id("run-1").sink(sink.clone()),
        )
        .await
        .unwrap();
    assert_eq!(model.calls(), 1);
    assert_eq!(tool.calls.load(Ordering::SeqCst), 1);
    assert_eq!(out.summary.run_id.as_str(), "run-1");

    let events = sink.events();
    assert_eq!(sink.kinds(), TWO_STEP_KINDS);

    let think = out.summary.steps_of("think").next().unwrap().step_id;
    let act = out.summary.steps_of("act").next().unwrap().step_id;
    assert_ne!(think, act);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.run_id.as_str(),
            "run-1",
            "event {i} ({}) has the run id",
            e.kind.name()
        );
        assert_eq!(e.parent_step_id, None);
        let run_scoped = matches!(
            e.kind,
            EventKind::RunStarted { .. } | EventKind::RunFinished { .. }
        );
        if run_scoped {
            assert_eq!(
                (e.step_id, e.node.as_ref(), e.attempt),
                (None, None, 0),
                "{e:?}"
            );
        } else {
            let (expected_step, expected_node) = if i < 5 {
                (think, "think")
            } else {
                (act, "act")
            };
            assert_eq!(e.step_id, Some(expected_step), "{e:?}");
            assert_eq!(
                e.node.as_ref().map(|n| n.as_str()),
                Some(expected_node),
                "{e:?}"
            );
            assert_eq!(e.attempt, 1, "{e:?}");
        }
    }
    for w in events.windows(2) {
        assert!(
            w[0].ts <= w[1].ts,
            "timestamps go backwards: {:?} then {:?}",
            w[0],
            w[1]
        );
    }

    // Content of the interesting events.
    match &events[0].kind {
        EventKind::RunStarted { graph } => assert_eq!(graph, "two-step"),
        other => panic!("{other:?}"),
    }
    match &events[2].kind {
        EventKind::LlmRequest {
            provider,
            model,
            request,
            estimated_input_tokens,
            ..
        } => {
            assert_eq!(provider, "openai");
            assert_eq!(model, "gpt-4o-mini");
            assert_eq!(request.messages, [Message::user("weather in Paris?")]);
            assert_eq!(*estimated_input_tokens, request.approx_input_tokens());
        }
        other => panic!("{other:?}"),
    }
    // gpt-4o-mini: 10 × $0.15/M + 5 × $0.60/M = $0.0000045.
    let call_cost = cost("0.0000045");
    match &events[3].kind {
        EventKind::LlmResponse {
            text, usage, cost, ..
        } => {
            assert_eq!(text, "call the weather tool");
            assert_eq!(*usage, TokenUsage::new(10, 5));
            assert_eq!(*cost, call_cost);
        }
        other => panic!("{other:?}"),
    }
    match &events[4].kind {
        EventKind::StepFinished {
            status,
            attempts,
            usage,
            cost,
            error,
            ..
        } => {
            assert_eq!(*status, StepStatus::Succeeded);
            assert_eq!(*attempts, 1);
            assert_eq!(*usage, TokenUsage::new(10, 5));
            assert_eq!(*cost, call_cost);
            assert_eq!(*error, None);
        }
        other => panic!("{other:?}"),
    }
    match &events[6].kind {
        EventKind::ToolRequest { tool, arguments } => {
            assert_eq!(tool, "weather");
            assert_eq!(*arguments, json!({"city": "Paris"}));
        }
        other => panic!("{other:?}"),
    }
    match &events[7].kind {
        EventKind::ToolResponse {
            tool,
            output,
            error,
            ..
        } => {
            assert_eq!(tool, "weather");
            assert_eq!(*output, Some(json!({"city": "Paris", "temp_c": 21})));
            assert_eq!(*error, None);
        }
        other => panic!("{other:?}"),
    }
    match &events[9].kind {
        EventKind::RunFinished {
            status,
            usage,
            cost,
            node_executions,
            error,
            ..
        } => {
            assert_eq!(*status, RunStatus::Succeeded);
            assert_eq!(*usage, TokenUsage::new(10, 5));
            assert_eq!(*cost, call_cost);
            assert_eq!(*node_executions, 2);
            assert_eq!(*error, None);
        }
        other => panic!("{other:?}"),
    }

    // JSON lines parse back, with the dotted kind.
    for e in &events {
        let line = e.to_json_line();
        assert!(!line.contains('\n'), "one line: {line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["kind"], json!(e.kind.name()), "{line}");
        assert_eq!(v["run_id"], json!("run-1"), "{line}");
        let back: TraceEvent = serde_json::from_str(&line).unwrap();
        assert_eq!(&back, e, "round trip of {line}");
    }
}

// ---------------------------------------------------------------------------
// 2. Live stream
// ---------------------------------------------------------------------------

#[tokio::test]
async fn live_stream_sees_the_same_events_as_a_sink() {
    let (graph, _model, _tool) = two_step_fixture();
    let sink = MemorySink::new();
    let mut handle = graph.stream(Items::default(), RunConfig::new().sink(sink.clone()));
    let stream = handle.events();
    let items: Vec<StreamItem> = tokio::time::timeout(Duration::from_secs(10), stream.collect())
        .await
        .expect("the stream ends after run.finished");
    let out = handle.wait().await.unwrap();

    let streamed: Vec<TraceEvent> = items
        .iter()
        .map(|i| match i {
            StreamItem::Event(e) => (**e).clone(),
            StreamItem::Lagged { missed } => panic!("unexpected lag of {missed}"),
        })
        .collect();
    let kinds: Vec<&str> = streamed.iter().map(|e| e.kind.name()).collect();
    assert_eq!(kinds, TWO_STEP_KINDS);
    assert_eq!(streamed, sink.events());
    assert!(streamed.iter().all(|e| e.run_id == out.summary.run_id));
}

#[tokio::test]
async fn a_second_subscriber_stream_also_ends_with_the_run() {
    let (graph, _model, _tool) = two_step_fixture();
    let mut handle = graph.stream(Items::default(), RunConfig::new());
    let first = handle.events();
    let second = handle.events();
    let (a, b) = tokio::time::timeout(
        Duration::from_secs(10),
        futures::future::join(first.collect::<Vec<_>>(), second.collect::<Vec<_>>()),
    )
    .await
    .expect("both streams end");
    handle.wait().await.unwrap();
    assert_eq!(a.len(), TWO_STEP_KINDS.len());
    let last = b.last().and_then(|i| i.event()).map(|e| e.kind.name());
    assert_eq!(last, Some("run.finished"));
}

// ---------------------------------------------------------------------------
// 3. Lagging subscriber
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_lagging_subscriber_never_blocks_the_run() {
    let graph = GraphBuilder::<Items>::new("chatty")
        .add_node(
            "chatty",
            node_fn(|_s: Arc<Items>, ctx: NodeContext| async move {
                for i in 0..100 {
                    ctx.log(LogLevel::Info, format!("line {i}"));
                }
                Ok(NodeOutput::none())
            }),
        )
        .set_entry("chatty")
        .set_finish("chatty")
        .compile()
        .unwrap();
    let sink = MemorySink::new();
    let mut handle = graph.stream(
        Items::default(),
        RunConfig::new().event_capacity(4).sink(sink.clone()),
    );
    let mut stream = handle.events();
    // Nobody reads the stream until the run is over.
    let out = tokio::time::timeout(Duration::from_secs(10), handle.wait())
        .await
        .expect("a slow subscriber must not block the run")
        .unwrap();
    assert_eq!(out.summary.status, RunStatus::Succeeded);
    let total = sink.events().len();
    assert_eq!(
        total, 104,
        "run.started, step.started, 100 logs, step.finished, run.finished"
    );

    let items = drain(&mut stream).await;
    let (started, missed, received) = split_lagged(&items);
    assert_eq!(
        started,
        sink.events()[0],
        "the stream begins with run.started"
    );
    assert!(missed > 0);
    assert!(
        !received.is_empty() && received.len() <= 4,
        "received {}",
        received.len()
    );
    assert_eq!(1 + missed + received.len() as u64, total as u64);
    assert_eq!(received.last().map(|e| e.kind.name()), Some("run.finished"));
    // What was received is the tail of what the sink saw.
    let tail: Vec<TraceEvent> = sink.events().split_off(total - received.len());
    assert_eq!(received, tail);
}

/// Every item of `stream`, which must end.
async fn drain(stream: &mut flowtrace_core::EventStream) -> Vec<StreamItem> {
    let mut items = Vec::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the stream does not hang")
    {
        items.push(item);
    }
    items
}

/// Splits `[run.started, Lagged { missed }, rest..]`, checking that shape.
fn split_lagged(items: &[StreamItem]) -> (TraceEvent, u64, Vec<TraceEvent>) {
    let started = match items.first() {
        Some(StreamItem::Event(e)) if e.kind.name() == "run.started" => (**e).clone(),
        other => panic!("expected the stream to begin with run.started, got {other:?}"),
    };
    let missed = match items.get(1) {
        Some(StreamItem::Lagged { missed }) => *missed,
        other => panic!("expected a lag notice after run.started, got {other:?}"),
    };
    let rest: Vec<TraceEvent> = items
        .iter()
        .skip(2)
        .map(|i| match i {
            StreamItem::Event(e) => (**e).clone(),
            StreamItem::Lagged { missed } => panic!("a second lag notice ({missed})"),
        })
        .collect();
    assert!(
        rest.iter().all(|e| e.kind.name() != "run.started"),
        "run.started appears once"
    );
    (started, missed, rest)
}

/// A chain of `n` nodes that finish at once.
fn quick_chain(n: usize) -> CompiledGraph<Items> {
    let mut b = GraphBuilder::<Items>::new("quick");
    for i in 0..n {
        let name = format!("q{i}");
        b = b.add_node(
            name.as_str(),
            node_fn(|_s: Arc<Items>, _ctx: NodeContext| async move { Ok(NodeOutput::none()) }),
        );
        if i > 0 {
            b = b.add_edge(format!("q{}", i - 1).as_str(), name.as_str());
        }
    }
    b.set_entry("q0")
        .set_finish(format!("q{}", n - 1).as_str())
        .compile()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_slow_subscriber_still_begins_with_run_started() {
    let sink = MemorySink::new();
    let mut handle = quick_chain(50).stream(
        Items::default(),
        RunConfig::new().event_capacity(4).sink(sink.clone()),
    );
    let mut stream = handle.events();
    // The subscriber dawdles; the run goes on without it and finishes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.kinds().last(), Some(&"run.finished"));

    let items = drain(&mut stream).await;
    let (started, missed, received) = split_lagged(&items);
    let all = sink.events();
    assert_eq!(
        all.len(),
        2 + 50 * 2,
        "run and 50 steps, started and finished"
    );
    assert_eq!(started, all[0]);
    assert_eq!(received.len(), 4, "the channel kept the last four events");
    assert_eq!(missed, (all.len() - 1 - received.len()) as u64, "exact");
    assert_eq!(received[..], all[all.len() - 4..]);
    assert_eq!(received.last().map(|e| e.kind.name()), Some("run.finished"));
    assert_eq!(
        handle.wait().await.unwrap().summary.status,
        RunStatus::Succeeded
    );
}

#[tokio::test]
async fn a_subscriber_that_keeps_up_sees_run_started_once() {
    let sink = MemorySink::new();
    let mut handle = quick_chain(50).stream(Items::default(), RunConfig::new().sink(sink.clone()));
    let mut stream = handle.events();
    let items = drain(&mut stream).await;
    handle.wait().await.unwrap();
    let events: Vec<TraceEvent> = items
        .iter()
        .map(|i| match i {
            StreamItem::Event(e) => (**e).clone(),
            StreamItem::Lagged { missed } => panic!("unexpected lag of {missed}"),
        })
        .collect();
    let starts = events
        .iter()
        .filter(|e| e.kind.name() == "run.started")
        .count();
    assert_eq!(starts, 1);
    assert_eq!(events, sink.events());
}

#[tokio::test]
async fn a_late_subscriber_begins_with_run_started_then_reports_what_it_missed() {
    let began = Arc::new(tokio::sync::Notify::new());
    let go = Arc::new(tokio::sync::Notify::new());
    let (b, g) = (began.clone(), go.clone());
    let graph = GraphBuilder::<Items>::new("late")
        .add_node(
            "wait",
            node_fn(move |_s: Arc<Items>, ctx: NodeContext| {
                let (began, go) = (b.clone(), g.clone());
                async move {
                    ctx.log(LogLevel::Info, "before the subscriber");
                    began.notify_one();
                    go.notified().await;
                    ctx.log(LogLevel::Info, "after the subscriber");
                    Ok(NodeOutput::none())
                }
            }),
        )
        .set_entry("wait")
        .set_finish("wait")
        .compile()
        .unwrap();
    let sink = MemorySink::new();
    let mut handle = graph.stream(Items::default(), RunConfig::new().sink(sink.clone()));
    drop(handle.events());
    began.notified().await;
    let mut late = handle.events();
    go.notify_one();
    let items = drain(&mut late).await;
    let (started, missed, received) = split_lagged(&items);
    let all = sink.events();
    assert_eq!(started, all[0]);
    // step.started and the first log came before the subscription.
    assert_eq!(missed, 2);
    assert_eq!(received[..], all[3..]);
    assert_eq!(received.last().map(|e| e.kind.name()), Some("run.finished"));

    // Subscribing after the run ended still gives its first and last events.
    tokio::time::timeout(Duration::from_secs(10), async {
        while sink.kinds().last() != Some(&"run.finished") {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    let items = drain(&mut handle.events()).await;
    let (started, missed, received) = split_lagged(&items);
    assert_eq!(started, all[0]);
    assert_eq!(missed, (all.len() - 2) as u64);
    assert_eq!(received, [all[all.len() - 1].clone()]);
    handle.wait().await.unwrap();
}

// ---------------------------------------------------------------------------
// 4. Sinks are flushed before the run returns
// ---------------------------------------------------------------------------

#[derive(Default)]
struct FlushProbe {
    recorded: AtomicUsize,
    saw_finished: AtomicBool,
    flushes: AtomicUsize,
    recorded_at_flush: AtomicUsize,
    finished_at_flush: AtomicBool,
    fail: bool,
}

#[async_trait]
impl TraceSink for FlushProbe {
    fn name(&self) -> &str {
        "probe"
    }
    fn record(&self, event: &TraceEvent) {
        self.recorded.fetch_add(1, Ordering::SeqCst);
        if matches!(event.kind, EventKind::RunFinished { .. }) {
            self.saw_finished.store(true, Ordering::SeqCst);
        }
    }
    async fn flush(&self) -> Result<(), SinkError> {
        // Make flushing take a little real time, to catch a run that does
        // not wait for it.
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.flushes.fetch_add(1, Ordering::SeqCst);
        self.recorded_at_flush
            .store(self.recorded.load(Ordering::SeqCst), Ordering::SeqCst);
        self.finished_at_flush
            .store(self.saw_finished.load(Ordering::SeqCst), Ordering::SeqCst);
        if self.fail {
            Err(SinkError::new("probe", "disk full"))
        } else {
            Ok(())
        }
    }
}

#[tokio::test]
async fn sinks_are_flushed_after_run_finished_and_before_run_returns() {
    let (graph, _model, _tool) = two_step_fixture();
    let probe = Arc::new(FlushProbe::default());
    let out = graph
        .invoke(
            Items::default(),
            RunConfig::new().shared_sink(probe.clone()),
        )
        .await
        .unwrap();
    assert_eq!(out.summary.status, RunStatus::Succeeded);
    assert_eq!(
        probe.flushes.load(Ordering::SeqCst),
        1,
        "flushed exactly once, before returning"
    );
    assert!(
        probe.finished_at_flush.load(Ordering::SeqCst),
        "run.finished was recorded before the flush"
    );
    assert_eq!(
        probe.recorded_at_flush.load(Ordering::SeqCst),
        TWO_STEP_KINDS.len(),
        "every event was recorded before the flush"
    );
    assert_eq!(
        probe.recorded.load(Ordering::SeqCst),
        TWO_STEP_KINDS.len(),
        "nothing after the flush"
    );
}

#[tokio::test]
async fn a_failing_flush_fails_the_run() {
    let (graph, _model, _tool) = two_step_fixture();
    let probe = Arc::new(FlushProbe {
        fail: true,
        ..FlushProbe::default()
    });
    let memory = MemorySink::new();
    let f = graph
        .invoke(
            Items::default(),
            RunConfig::new()
                .shared_sink(probe.clone())
                .sink(memory.clone()),
        )
        .await
        .unwrap_err();
    match &f.error {
        Error::Sink(e) => {
            assert_eq!(e.sink, "probe");
            assert_eq!(e.message, "disk full");
        }
        other => panic!("expected Error::Sink, got {other:?}"),
    }
    assert_eq!(f.error.kind(), "sink");
    assert_eq!(f.summary.status, RunStatus::Failed);
    assert_eq!(probe.flushes.load(Ordering::SeqCst), 1);
    // The other sink still got every event.
    assert_eq!(memory.kinds(), TWO_STEP_KINDS);
}

// ---------------------------------------------------------------------------
// 5. Exact totals
// ---------------------------------------------------------------------------

#[tokio::test]
async fn totals_are_exact_sums_across_branches_and_subgraphs() {
    let model = |usages: &[(u64, u64)]| {
        let mut m = ScriptedModel::new("openai");
        for &(i, o) in usages {
            m = m.reply(format!("{i}/{o}"), TokenUsage::new(i, o));
        }
        Arc::new(m)
    };
    let ask = |n: usize| -> Vec<ChatRequest> {
        (0..n)
            .map(|k| ChatRequest::new("gpt-4o-mini").user(format!("question {k}")))
            .collect()
    };

    let sub = GraphBuilder::<Items>::new("sub")
        .add_node("s1", chat_node(model(&[(12_345, 678)]), ask(1)))
        .add_node("s2", chat_node(model(&[(5, 3)]), ask(1)))
        .set_entry("s1")
        .add_edge("s1", "s2")
        .set_finish("s2")
        .compile()
        .unwrap();

    let graph = GraphBuilder::<Items>::new("totals")
        .add_node("fan", noop())
        .add_node("a", chat_node(model(&[(1_000_003, 7)]), ask(1)))
        .add_node("b", chat_node(model(&[(333_333, 1_000_001)]), ask(1)))
        .add_node("c", chat_node(model(&[(1, 1), (17, 999_983)]), ask(2)))
        .add_node("join", chat_node(model(&[(0, 999_999)]), ask(1)))
        .add_node(
            "sub",
            sub.as_node(|_p: &Items| Items::default(), |c: Items| c.items),
        )
        .set_entry("fan")
        .add_edge("fan", "a")
        .add_edge("fan", "b")
        .add_edge("fan", "c")
        .add_edge("a", "join")
        .add_edge("b", "join")
        .add_edge("c", "join")
        .add_edge("join", "sub")
        .set_finish("sub")
        .compile()
        .unwrap();

    let sink = MemorySink::new();
    let out = graph
        .invoke(
            Items::default(),
            RunConfig::new().parallel(4).sink(sink.clone()),
        )
        .await
        .unwrap();
    let s = &out.summary;

    // Hand-computed: input 1,345,704 tokens × $0.15/M = $0.2018556,
    // output 3,000,672 tokens × $0.60/M = $1.8004032; total $2.0022588.
    let expected_usage = TokenUsage::new(1_345_704, 3_000_672);
    let expected_cost = cost("2.0022588");
    assert_eq!(expected_cost, Cost::from_picodollars(2_002_258_800_000));
    assert_eq!(s.usage, expected_usage);
    assert_eq!(s.cost, expected_cost);
    assert_eq!(s.cost.to_decimal_string(), "2.0022588");

    // The totals are the exact sums of the steps (subgraph steps included).
    assert_eq!(s.usage, s.steps.iter().map(|r| r.usage).sum::<TokenUsage>());
    assert_eq!(s.cost, s.steps.iter().map(|r| r.cost).sum::<Cost>());

    // Per step, too: 1,000,003 × 0.15 + 7 × 0.60 µ$ = $0.15000465, not rounded.
    let step = |n: &'static str| {
        s.steps_of(n)
            .next()
            .unwrap_or_else(|| panic!("no step {n}"))
    };
    assert_eq!(step("a").cost, cost("0.15000465"));
    assert_eq!(step("a").usage, TokenUsage::new(1_000_003, 7));
    assert_eq!(step("c").usage, TokenUsage::new(18, 999_984));
    assert_eq!(step("s1").usage, TokenUsage::new(12_345, 678));
    assert_eq!(step("fan").cost, Cost::ZERO);
    assert_eq!(
        step("sub").usage,
        TokenUsage::default(),
        "the subgraph node itself is not double counted"
    );
    let sub_step = step("sub").step_id;
    assert_eq!(step("s1").parent_step_id, Some(sub_step));
    assert_eq!(step("s2").parent_step_id, Some(sub_step));
    assert_eq!(s.node_executions, 8);
    assert_eq!(
        out.state.items.len(),
        7,
        "every model reply (7 calls) was merged"
    );

    // The top-level run.finished carries the same totals; the subgraph's own
    // run.finished carries the subgraph's.
    let finished: Vec<TraceEvent> = sink
        .events()
        .into_iter()
        .filter(|e| e.kind.name() == "run.finished")
        .collect();
    assert_eq!(finished.len(), 2);
    let (nested, top): (Vec<_>, Vec<_>) = finished
        .into_iter()
        .partition(|e| e.parent_step_id.is_some());
    match &top[0].kind {
        EventKind::RunFinished {
            usage,
            cost,
            node_executions,
            ..
        } => {
            assert_eq!(*usage, expected_usage);
            assert_eq!(*cost, expected_cost);
            assert_eq!(*node_executions, 8);
        }
        other => panic!("{other:?}"),
    }
    match &nested[0].kind {
        EventKind::RunFinished { usage, cost, .. } => {
            assert_eq!(*usage, TokenUsage::new(12_350, 681));
            assert_eq!(*cost, step("s1").cost + step("s2").cost);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(nested[0].parent_step_id, Some(sub_step));

    // And so do the step.finished and llm.response events.
    let response_costs: Cost = sink
        .events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::LlmResponse { cost, .. } => Some(*cost),
            _ => None,
        })
        .sum();
    assert_eq!(response_costs, expected_cost);
}

// ---------------------------------------------------------------------------
// 6. Cache
// ---------------------------------------------------------------------------

#[derive(Default)]
struct MemCache {
    map: Mutex<HashMap<CacheKey, ChatResponse>>,
    gets: AtomicUsize,
}

#[async_trait]
impl Cache for MemCache {
    async fn get(&self, key: &CacheKey) -> Option<ChatResponse> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.map.lock().unwrap().get(key).cloned()
    }
    async fn put(&self, key: CacheKey, response: ChatResponse) {
        self.map.lock().unwrap().insert(key, response);
    }
}

#[tokio::test]
async fn a_repeated_call_is_answered_from_the_cache() {
    // Only one scripted reply: a second real call would fail.
    let model =
        Arc::new(ScriptedModel::new("openai").reply("cached answer", TokenUsage::new(1000, 500)));
    let request = ChatRequest::new("gpt-4o-mini").user("same question");
    let graph = GraphBuilder::<Items>::new("cached")
        .add_node("first", chat_node(model.clone(), vec![request.clone()]))
        .add_node("second", chat_node(model.clone(), vec![request.clone()]))
        .set_entry("first")
        .add_edge("first", "second")
        .set_finish("second")
        .compile()
        .unwrap();
    let cache = Arc::new(MemCache::default());
    let sink = MemorySink::new();
    let out = graph
        .invoke(
            Items::default(),
            RunConfig::new().cache(cache.clone()).sink(sink.clone()),
        )
        .await
        .unwrap();

    assert_eq!(model.calls(), 1, "the model was called once");
    assert_eq!(out.state.items, ["cached answer", "cached answer"]);
    assert_eq!(cache.gets.load(Ordering::SeqCst), 2);

    // 1000 × $0.15/M + 500 × $0.60/M = $0.00045.
    let first_cost = cost("0.00045");
    let first = out.summary.steps_of("first").next().unwrap();
    let second = out.summary.steps_of("second").next().unwrap();
    assert_eq!(first.cost, first_cost);
    assert_eq!(first.cache_hits, 0);
    assert_eq!(second.cost, Cost::ZERO);
    assert_eq!(second.usage, TokenUsage::default());
    assert_eq!(second.cache_hits, 1);
    assert_eq!(out.summary.cost, first_cost);

    let kinds = sink.kinds();
    assert_eq!(
        kinds,
        [
            "run.started",
            "step.started",
            "llm.request",
            "llm.response",
            "step.finished",
            "step.started",
            "cache.hit",
            "step.finished",
            "run.finished",
        ]
    );
    let hit = sink
        .events()
        .into_iter()
        .find(|e| e.kind.name() == "cache.hit")
        .unwrap();
    assert_eq!(hit.node.as_ref().map(|n| n.as_str()), Some("second"));
    match hit.kind {
        EventKind::CacheHit {
            provider,
            model,
            saved_cost,
            saved_usage,
        } => {
            assert_eq!(provider, "openai");
            assert_eq!(model, "gpt-4o-mini");
            assert_eq!(saved_cost, first_cost);
            assert_eq!(saved_usage, TokenUsage::new(1000, 500));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_different_request_is_not_a_cache_hit() {
    let model = Arc::new(
        ScriptedModel::new("openai")
            .reply("one", TokenUsage::new(1, 1))
            .reply("two", TokenUsage::new(1, 1)),
    );
    let graph = GraphBuilder::<Items>::new("uncached")
        .add_node(
            "first",
            chat_node(
                model.clone(),
                vec![ChatRequest::new("gpt-4o-mini").user("question")],
            ),
        )
        .add_node(
            "second",
            chat_node(
                model.clone(),
                vec![
                    ChatRequest::new("gpt-4o-mini")
                        .user("question")
                        .temperature(0.5),
                ],
            ),
        )
        .set_entry("first")
        .add_edge("first", "second")
        .set_finish("second")
        .compile()
        .unwrap();
    let sink = MemorySink::new();
    let out = graph
        .invoke(
            Items::default(),
            RunConfig::new()
                .cache(Arc::new(MemCache::default()))
                .sink(sink.clone()),
        )
        .await
        .unwrap();
    assert_eq!(model.calls(), 2);
    assert_eq!(out.state.items, ["one", "two"]);
    assert!(!sink.kinds().contains(&"cache.hit"));
}

// ---------------------------------------------------------------------------
// 7. ToolLoopAgent
// ---------------------------------------------------------------------------

#[tokio::test]
async fn tool_loop_agent_runs_tools_through_the_context() {
    let model = Arc::new(
        ScriptedModel::new("openai")
            .tool_call(
                "call-1",
                "add",
                json!({"a": 2, "b": 3}),
                TokenUsage::new(50, 10),
            )
            .reply("2 + 3 = 5", TokenUsage::new(70, 8)),
    );
    let add = Arc::new(Add {
        seen: Mutex::new(Vec::new()),
    });
    let agent = Arc::new(
        ToolLoopAgent::new("calc", model.clone() as Arc<dyn ChatModel>, "gpt-4o-mini")
            .system("You add numbers.")
            .tool(add.clone()),
    );
    let outputs: Arc<Mutex<Vec<flowtrace_core::AgentOutput>>> = Arc::default();
    let graph = {
        let outputs = outputs.clone();
        GraphBuilder::<Items>::new("agent")
            .add_node(
                "agent",
                node_fn(move |_s: Arc<Items>, ctx: NodeContext| {
                    let agent = agent.clone();
                    let outputs = outputs.clone();
                    async move {
                        assert_eq!(agent.name(), "calc");
                        let out = agent
                            .run(vec![Message::user("what is 2 + 3?")], &ctx)
                            .await?;
                        let text = out.text.clone();
                        outputs.lock().unwrap().push(out);
                        Ok(NodeOutput::update(vec![text]))
                    }
                }),
            )
            .set_entry("agent")
            .set_finish("agent")
            .compile()
            .unwrap()
    };
    let (out, sink) = run_with_sink(&graph, Items::default()).await;

    assert_eq!(out.state.items, ["2 + 3 = 5"]);
    let agent_out = outputs.lock().unwrap().pop().unwrap();
    assert_eq!(agent_out.text, "2 + 3 = 5");
    assert_eq!(agent_out.turns, 2);
    let roles: Vec<Role> = agent_out.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::Assistant, Role::Tool, Role::Assistant]);
    assert_eq!(agent_out.messages[0].tool_calls[0].name, "add");
    assert_eq!(
        agent_out.messages[1].tool_call_id.as_deref(),
        Some("call-1")
    );
    assert_eq!(agent_out.messages[1].content, "5");

    assert_eq!(*add.seen.lock().unwrap(), [json!({"a": 2, "b": 3})]);
    assert_eq!(model.calls(), 2);
    let requests = model.requests();
    assert_eq!(requests[0].tools.len(), 1);
    assert_eq!(requests[0].tools[0].name, "add");
    assert_eq!(requests[0].system.as_deref(), Some("You add numbers."));
    let last = requests[1].messages.last().unwrap();
    assert_eq!(last.role, Role::Tool);
    assert_eq!(last.tool_call_id.as_deref(), Some("call-1"));
    assert_eq!(last.content, "5");

    assert_eq!(
        sink.kinds(),
        [
            "run.started",
            "step.started",
            "llm.request",
            "llm.response",
            "tool.request",
            "tool.response",
            "llm.request",
            "llm.response",
            "step.finished",
            "run.finished",
        ]
    );
    let tool_response = sink
        .events()
        .into_iter()
        .find(|e| e.kind.name() == "tool.response")
        .unwrap();
    assert!(
        matches!(&tool_response.kind, EventKind::ToolResponse { tool, output: Some(v), error: None, .. }
            if tool == "add" && *v == json!(5)),
        "{tool_response:?}"
    );
    assert_eq!(out.summary.usage, TokenUsage::new(120, 18));
}

// ---------------------------------------------------------------------------
// 8. JsonLinesSink
// ---------------------------------------------------------------------------

#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn json_lines_sink_writes_one_parseable_line_per_event() {
    let (graph, _model, _tool) = two_step_fixture();
    let buf = SharedBuf::default();
    let memory = MemorySink::new();
    graph
        .invoke(
            Items::default(),
            RunConfig::new()
                .sink(JsonLinesSink::new(buf.clone()))
                .sink(memory.clone()),
        )
        .await
        .unwrap();

    // The sink was flushed before run returned: every line is in the buffer.
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), memory.events().len());
    let parsed: Vec<TraceEvent> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed, memory.events());
    for (line, e) in lines.iter().zip(&parsed) {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["kind"], json!(e.kind.name()));
        assert_eq!(*line, e.to_json_line());
    }
    let kinds: Vec<&str> = parsed.iter().map(|e| e.kind.name()).collect();
    assert_eq!(kinds, TWO_STEP_KINDS);
}
