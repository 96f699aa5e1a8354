//! `OtelSink` against the SDK's in-memory exporter: real graphs run through
//! the executor, and the span tree, attributes, content capture, parent
//! context and export losses are read back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use flowtrace_core::testing::ScriptedModel;
use flowtrace_core::{
    ChatModel, ChatRequest, CompiledGraph, GraphBuilder, JsonState, MemoryCache, ModelErrorKind,
    NodeConfig, NodeContext, NodeError, NodeOutput, RetryPolicy, RunConfig, TokenUsage, Tool,
    ToolError, node_fn,
};
use flowtrace_otel::semconv as sc;
use flowtrace_otel::{CountingExporter, OtelSink, context_from_traceparent};
use flowtrace_providers::fallback::{Candidate, FallbackLayer};
use flowtrace_providers::layer::ModelStack;
use opentelemetry::trace::{SpanId, Status, TraceContextExt};
use opentelemetry::{Key, Value};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData, SpanExporter};
use serde_json::{Value as Json, json};

const PROMPT: &str = "secret prompt: the launch code is 0000";
const REPLY: &str = "confidential reply";

// ===== Helpers =====

/// Spans go to the returned exporter as they end. Keep the sink (which
/// holds the provider) alive while reading them: the in-memory exporter
/// forgets its spans when the provider shuts down.
fn memory_provider() -> (InMemorySpanExporter, SdkTracerProvider) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    (exporter, provider)
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == Key::from(key.to_string()))
        .map(|kv| &kv.value)
}

fn sattr(span: &SpanData, key: &str) -> String {
    match attr(span, key) {
        Some(v) => v.as_str().into_owned(),
        None => panic!("{} has no {key}: {:?}", span.name, span.attributes),
    }
}

fn i(span: &SpanData, key: &str) -> i64 {
    match attr(span, key) {
        Some(Value::I64(v)) => *v,
        other => panic!("{} {key}: {other:?}", span.name),
    }
}

fn event<'a>(span: &'a SpanData, name: &str) -> Option<&'a opentelemetry::trace::Event> {
    span.events.iter().find(|e| e.name == name)
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

/// The span of `node`'s last attempt.
fn step<'a>(spans: &'a [SpanData], node: &str) -> &'a SpanData {
    spans
        .iter()
        .filter(|s| {
            s.name == sc::SPAN_STEP
                && attr(s, sc::FLOWTRACE_NODE_ID).map(|v| v.as_str()) == Some(node.into())
        })
        .max_by_key(|s| s.start_time)
        .unwrap_or_else(|| panic!("no step span for {node}"))
}

fn top_run(spans: &[SpanData]) -> &SpanData {
    spans
        .iter()
        .find(|s| s.name == sc::SPAN_RUN && attr(s, sc::FLOWTRACE_PARENT_STEP_ID).is_none())
        .expect("a run span")
}

fn children<'a>(spans: &'a [SpanData], parent: &SpanData) -> Vec<&'a SpanData> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_context.span_id())
        .collect()
}

fn update(key: &str, v: Json) -> NodeOutput<serde_json::Map<String, Json>> {
    let mut m = serde_json::Map::new();
    m.insert(key.into(), v);
    NodeOutput::update(m)
}

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
    fn parameters(&self) -> Json {
        json!({"type": "object", "properties": {"city": {"type": "string"}}})
    }
    async fn call(&self, args: Json) -> Result<Json, ToolError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(json!({"city": args["city"], "temp_c": 21}))
    }
}

/// `plan` (a model call that falls back) → `ask` (fails once, then the same
/// call twice: the second from the cache) → `act` (a tool call, then a
/// router) → `done`.
fn agent_graph() -> CompiledGraph<JsonState> {
    let primary = Arc::new(ScriptedModel::new("openai").fail(ModelErrorKind::Overloaded));
    let secondary =
        Arc::new(ScriptedModel::new("anthropic").reply("plan made", TokenUsage::new(20, 5)));
    let stacked: Arc<dyn ChatModel> = Arc::new(
        ModelStack::new(primary as Arc<dyn ChatModel>).layer(
            FallbackLayer::new(Candidate::new(secondary).model("claude-sonnet-4"))
                .retry(RetryPolicy::new(1)),
        ),
    );
    let asker = Arc::new(ScriptedModel::new("openai").reply(REPLY, TokenUsage::new(1_000, 100)));
    let tool = Arc::new(Weather {
        calls: AtomicUsize::new(0),
    });
    GraphBuilder::<JsonState>::new("agent")
        .add_node(
            "plan",
            node_fn(move |_s, ctx: NodeContext| {
                let m = stacked.clone();
                async move {
                    let r = ctx
                        .chat(m.as_ref(), ChatRequest::new("gpt-4o").user("make a plan"))
                        .await?;
                    Ok(update("plan", json!(r.text)))
                }
            }),
        )
        .add_node_with(
            "ask",
            node_fn(move |_s, ctx: NodeContext| {
                let m = asker.clone();
                async move {
                    if ctx.attempt() == 1 {
                        return Err(NodeError::transient("flaky upstream"));
                    }
                    let req = ChatRequest::new("gpt-4o-mini").user(PROMPT);
                    ctx.chat(m.as_ref(), req.clone()).await?;
                    let again = ctx.chat(m.as_ref(), req).await?;
                    Ok(update("answer", json!(again.text)))
                }
            }),
            NodeConfig::new().retry(RetryPolicy::new(2).initial_delay(Duration::from_millis(1))),
        )
        .add_node(
            "act",
            node_fn(move |_s, ctx: NodeContext| {
                let tool = tool.clone();
                async move {
                    let out = ctx
                        .call_tool(tool.as_ref(), json!({"city": "Paris"}))
                        .await?;
                    Ok(update("weather", out))
                }
            }),
        )
        .add_node("done", node_fn(|_s, _ctx| async { Ok(NodeOutput::none()) }))
        .add_node(
            "never",
            node_fn(|_s, _ctx| async { Ok(NodeOutput::none()) }),
        )
        .set_entry("plan")
        .add_edge("plan", "ask")
        .add_edge("ask", "act")
        .add_conditional_edges(
            "act",
            |s: &JsonState| {
                if s.get("weather").is_some() {
                    "sunny"
                } else {
                    "other"
                }
                .to_string()
            },
            [("sunny", "done"), ("other", "never")],
        )
        .set_finish("done")
        .set_finish("never")
        .compile()
        .unwrap()
}

async fn run_agent(sink: OtelSink) -> Arc<OtelSink> {
    let sink = Arc::new(sink);
    let config = RunConfig::new()
        .shared_sink(sink.clone())
        .cache(Arc::new(MemoryCache::new(16)));
    agent_graph()
        .invoke(JsonState::new(), config)
        .await
        .unwrap();
    sink
}

// ===== The span tree =====

#[tokio::test]
async fn a_run_becomes_a_tree_of_run_step_and_call_spans() {
    let (exporter, provider) = memory_provider();
    let sink = run_agent(OtelSink::new(provider)).await;
    sink.force_flush().await.unwrap();
    let spans = exporter.get_finished_spans().unwrap();

    // One trace, one root.
    let run = top_run(&spans);
    assert_eq!(run.parent_span_id, SpanId::INVALID);
    assert!(
        spans
            .iter()
            .all(|s| s.span_context.trace_id() == run.span_context.trace_id())
    );
    assert_eq!(sattr(run, sc::FLOWTRACE_GRAPH), "agent");
    assert_eq!(sattr(run, sc::FLOWTRACE_RUN_STATUS), "succeeded");
    let run_id = sattr(run, sc::FLOWTRACE_RUN_ID);

    // Steps under the run, in order, with the step attributes.
    let mut steps: Vec<_> = children(&spans, run);
    steps.sort_by_key(|s| s.start_time);
    let nodes: Vec<String> = steps
        .iter()
        .map(|x| sattr(x, sc::FLOWTRACE_NODE_ID))
        .collect();
    // `ask` fails once: one span per attempt.
    assert_eq!(nodes, ["plan", "ask", "ask", "act", "done"]);
    for st in &steps {
        assert_eq!(st.name, sc::SPAN_STEP);
        assert_eq!(sattr(st, sc::FLOWTRACE_RUN_ID), run_id);
        if sattr(st, sc::FLOWTRACE_STEP_STATUS) != "retried" {
            // The step's totals are on its last attempt.
            assert!(attr(st, sc::FLOWTRACE_COST_USD).is_some());
            assert!(attr(st, sc::FLOWTRACE_CACHE_HIT).is_some());
        }
        assert!(st.start_time <= st.end_time);
        assert!(run.start_time <= st.start_time && st.end_time <= run.end_time);
    }

    // plan: one chat span under the step; the fallback is an event on it.
    let plan = step(&spans, "plan");
    let calls = children(&spans, plan);
    assert_eq!(calls.len(), 1);
    let chat = calls[0];
    assert_eq!(chat.span_kind, opentelemetry::trace::SpanKind::Client);
    assert_eq!(sattr(chat, sc::GEN_AI_OPERATION_NAME), "chat");
    assert_eq!(sattr(chat, sc::GEN_AI_REQUEST_MODEL), "gpt-4o");
    // The provider that answered (after the fallback), set once, and the
    // one first asked.
    let named: Vec<_> = chat
        .attributes
        .iter()
        .filter(|kv| kv.key.as_str() == sc::GEN_AI_PROVIDER_NAME)
        .collect();
    assert_eq!(named.len(), 1, "{named:?}");
    assert_eq!(sattr(chat, sc::GEN_AI_PROVIDER_NAME), "anthropic");
    assert_eq!(sattr(chat, sc::GEN_AI_SYSTEM), "anthropic");
    assert_eq!(sattr(chat, sc::FLOWTRACE_REQUESTED_PROVIDER), "openai");
    assert_eq!(sattr(chat, sc::GEN_AI_RESPONSE_MODEL), "claude-sonnet-4");
    assert_eq!(i(chat, sc::GEN_AI_USAGE_INPUT_TOKENS), 20);
    assert_eq!(i(chat, sc::GEN_AI_USAGE_OUTPUT_TOKENS), 5);
    match attr(chat, sc::GEN_AI_RESPONSE_FINISH_REASONS) {
        Some(Value::Array(opentelemetry::Array::String(r))) => assert_eq!(r[0].as_str(), "stop"),
        other => panic!("finish reasons: {other:?}"),
    }
    let fb = event(chat, sc::EVENT_FALLBACK).expect("a fallback event on the call");
    assert!(
        fb.attributes
            .iter()
            .any(|kv| kv.key.as_str() == sc::FLOWTRACE_FALLBACK_TO_PROVIDER
                && kv.value.as_str() == "anthropic")
    );

    // ask: its first attempt failed (a span with status error and the
    // retry as an event), the second made two calls, the second a cache hit.
    let first = steps
        .iter()
        .find(|x| sattr(x, sc::FLOWTRACE_NODE_ID) == "ask")
        .unwrap();
    assert_eq!(i(first, sc::FLOWTRACE_ATTEMPT), 1);
    assert!(
        matches!(first.status, Status::Error { .. }),
        "{:?}",
        first.status
    );
    let ask = step(&spans, "ask");
    assert_eq!(i(ask, sc::FLOWTRACE_ATTEMPT), 2);
    assert!(first.end_time <= ask.start_time);
    let retry = event(first, sc::EVENT_RETRY).expect("a retry event");
    assert!(
        retry
            .attributes
            .iter()
            .any(|kv| kv.key.as_str() == sc::FLOWTRACE_ATTEMPT && kv.value == Value::I64(1))
    );
    assert_eq!(attr(ask, sc::FLOWTRACE_CACHE_HIT), Some(&Value::Bool(true)));
    assert!(
        event(ask, sc::EVENT_CACHE_HIT).is_some(),
        "the core cache answers before any call"
    );
    let ask_calls = children(&spans, ask);
    assert_eq!(ask_calls.len(), 1, "the cached call makes no model call");
    let mini = ask_calls[0];
    assert_eq!(sattr(mini, sc::GEN_AI_REQUEST_MODEL), "gpt-4o-mini");
    assert_eq!(i(mini, sc::GEN_AI_USAGE_INPUT_TOKENS), 1_000);
    assert_eq!(i(mini, sc::GEN_AI_USAGE_OUTPUT_TOKENS), 100);
    // gpt-4o-mini: 1000 × $0.15/M + 100 × $0.60/M = $0.00021, exact then converted.
    assert_eq!(sattr(mini, sc::FLOWTRACE_COST), "0.00021");
    assert_eq!(
        attr(mini, sc::FLOWTRACE_COST_USD),
        Some(&Value::F64(0.00021))
    );
    assert_eq!(
        attr(ask, sc::FLOWTRACE_COST_USD),
        Some(&Value::F64(0.00021))
    );
    assert_eq!(
        attr(plan, sc::FLOWTRACE_CACHE_HIT),
        Some(&Value::Bool(false))
    );

    // act: a tool span, and the router's branch on the step.
    let act = step(&spans, "act");
    let tools = children(&spans, act);
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0].name, "execute_tool weather");
    assert_eq!(sattr(tools[0], sc::GEN_AI_OPERATION_NAME), "execute_tool");
    assert_eq!(sattr(tools[0], sc::GEN_AI_TOOL_NAME), "weather");
    assert_eq!(sattr(act, sc::FLOWTRACE_BRANCH), "sunny");
    // The skipped branch is an event on the run.
    assert!(event(run, sc::EVENT_STEP_SKIPPED).is_some());

    // Every span ended; the sink's state for the run is gone.
    let stats = sink.stats();
    assert_eq!(stats.spans_started, spans.len() as u64);
    assert_eq!(stats.spans_ended, spans.len() as u64);
    assert_eq!(stats.lost_spans(), 0);
}

#[tokio::test]
async fn span_times_are_the_events_timestamps() {
    let (exporter, provider) = memory_provider();
    let sink = Arc::new(OtelSink::new(provider));
    let graph = GraphBuilder::<JsonState>::new("slow")
        .add_node(
            "wait",
            node_fn(|_s, _ctx| async {
                tokio::time::sleep(Duration::from_millis(30)).await;
                Ok(NodeOutput::none())
            }),
        )
        .set_entry("wait")
        .set_finish("wait")
        .compile()
        .unwrap();
    let out = graph
        .invoke(JsonState::new(), RunConfig::new().shared_sink(sink.clone()))
        .await
        .unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let wait = step(&spans, "wait");
    let took = wait.end_time.duration_since(wait.start_time).unwrap();
    // Event timestamps have microsecond precision.
    let latency = out.summary.steps[0].latency;
    assert!(
        took.abs_diff(latency) < Duration::from_micros(2),
        "{took:?} vs {latency:?}"
    );
}

// ===== Failures =====

#[tokio::test]
async fn a_failed_step_and_run_have_error_status_and_the_error_recorded() {
    let (exporter, provider) = memory_provider();
    let sink = Arc::new(OtelSink::new(provider));
    let model = Arc::new(ScriptedModel::new("openai").fail(ModelErrorKind::Auth));
    let graph = GraphBuilder::<JsonState>::new("broken")
        .add_node(
            "call",
            node_fn(move |_s, ctx: NodeContext| {
                let m = model.clone();
                async move {
                    ctx.chat(m.as_ref(), ChatRequest::new("gpt-4o").user("hi"))
                        .await?;
                    Ok(NodeOutput::none())
                }
            }),
        )
        .set_entry("call")
        .set_finish("call")
        .compile()
        .unwrap();
    let result = graph
        .invoke(JsonState::new(), RunConfig::new().shared_sink(sink.clone()))
        .await;
    assert!(result.is_err());
    let spans = exporter.get_finished_spans().unwrap();

    let run = top_run(&spans);
    assert!(
        matches!(run.status, Status::Error { .. }),
        "{:?}",
        run.status
    );
    assert_eq!(sattr(run, sc::FLOWTRACE_RUN_STATUS), "failed");
    assert!(event(run, sc::EVENT_EXCEPTION).is_some());

    let call = step(&spans, "call");
    assert!(matches!(call.status, Status::Error { .. }));
    assert_eq!(sattr(call, sc::FLOWTRACE_STEP_STATUS), "failed");

    let chat = children(&spans, call);
    assert_eq!(chat.len(), 1);
    let Status::Error { description } = &chat[0].status else {
        panic!("the model call failed: {:?}", chat[0].status);
    };
    assert!(!description.is_empty());
    assert_eq!(sattr(chat[0], sc::ERROR_TYPE), "model.auth");
    let exc = event(chat[0], sc::EVENT_EXCEPTION).expect("an exception event");
    let keys: Vec<&str> = exc.attributes.iter().map(|kv| kv.key.as_str()).collect();
    assert!(keys.contains(&sc::EXCEPTION_MESSAGE) && keys.contains(&sc::EXCEPTION_TYPE));
    assert_eq!(sink.stats().spans_ended, spans.len() as u64);
}

// ===== Content =====

fn all_text(spans: &[SpanData]) -> String {
    let mut out = String::new();
    for sp in spans {
        for kv in &sp.attributes {
            out.push_str(&kv.value.as_str());
            out.push('\n');
        }
        for e in sp.events.iter() {
            for kv in &e.attributes {
                out.push_str(&kv.value.as_str());
                out.push('\n');
            }
        }
    }
    out
}

#[tokio::test]
async fn no_prompt_or_completion_content_by_default() {
    let (exporter, provider) = memory_provider();
    let sink = run_agent(OtelSink::new(provider)).await;
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(sink.stats().spans_ended, spans.len() as u64);
    assert!(spans.len() >= 8);
    let text = all_text(&spans);
    assert!(!text.contains("launch code"), "prompt leaked");
    assert!(!text.contains(REPLY), "completion leaked");
    assert!(!text.contains("Paris"), "tool arguments leaked");
    for sp in &spans {
        for key in [
            sc::GEN_AI_INPUT_MESSAGES,
            sc::GEN_AI_OUTPUT_MESSAGES,
            sc::GEN_AI_TOOL_CALL_ARGUMENTS,
            sc::GEN_AI_TOOL_CALL_RESULT,
        ] {
            assert!(attr(sp, key).is_none(), "{key} on {}", sp.name);
        }
    }
}

#[tokio::test]
async fn content_is_captured_when_switched_on_and_cut_at_the_limit() {
    let (exporter, provider) = memory_provider();
    let sink = run_agent(OtelSink::builder(provider).capture_content(true).build()).await;
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(sink.stats().spans_ended, spans.len() as u64);
    let mini = children(&spans, step(&spans, "ask"))[0];
    let input: Json = serde_json::from_str(&sattr(mini, sc::GEN_AI_INPUT_MESSAGES)).unwrap();
    assert_eq!(input, json!([{"role": "user", "content": PROMPT}]));
    let output: Json = serde_json::from_str(&sattr(mini, sc::GEN_AI_OUTPUT_MESSAGES)).unwrap();
    assert_eq!(output[0]["content"], REPLY);
    let tool = children(&spans, step(&spans, "act"))[0];
    assert!(sattr(tool, sc::GEN_AI_TOOL_CALL_ARGUMENTS).contains("Paris"));
    assert!(sattr(tool, sc::GEN_AI_TOOL_CALL_RESULT).contains("temp_c"));

    // A small limit cuts it and says so.
    let (exporter, provider) = memory_provider();
    let sink = run_agent(
        OtelSink::builder(provider)
            .capture_content(true)
            .content_limit(10)
            .build(),
    )
    .await;
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(sink.stats().spans_ended, spans.len() as u64);
    let mini = children(&spans, step(&spans, "ask"))[0];
    assert_eq!(sattr(mini, sc::GEN_AI_INPUT_MESSAGES).len(), 10);
    assert_eq!(
        attr(mini, sc::FLOWTRACE_CONTENT_TRUNCATED),
        Some(&Value::Bool(true))
    );
}

// ===== Context propagation =====

#[tokio::test]
async fn the_run_joins_the_hosts_trace() {
    let (exporter, provider) = memory_provider();
    let host = context_from_traceparent(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        Some("vendor=1"),
    )
    .unwrap();
    let host_span = host.span().span_context().clone();
    let sink = run_agent(OtelSink::builder(provider).parent(host).build()).await;
    let spans = exporter.get_finished_spans().unwrap();
    assert_eq!(sink.stats().spans_ended, spans.len() as u64);
    let run = top_run(&spans);
    assert_eq!(run.span_context.trace_id(), host_span.trace_id());
    assert_eq!(run.parent_span_id, host_span.span_id());
    assert!(run.parent_span_is_remote);
    assert!(
        spans
            .iter()
            .all(|s| s.span_context.trace_id() == host_span.trace_id())
    );
    // Children of the run have local parents.
    assert!(
        spans
            .iter()
            .filter(|s| s.span_context != run.span_context)
            .all(|s| !s.parent_span_is_remote)
    );
}

// ===== Subgraphs =====

#[tokio::test]
async fn a_subgraph_run_nests_under_its_parent_step() {
    let (exporter, provider) = memory_provider();
    let sink = Arc::new(OtelSink::new(provider));
    let child = GraphBuilder::<JsonState>::new("inner")
        .add_node("a", node_fn(|_s, _ctx| async { Ok(NodeOutput::none()) }))
        .add_node("b", node_fn(|_s, _ctx| async { Ok(NodeOutput::none()) }))
        .set_entry("a")
        .add_edge("a", "b")
        .set_finish("b")
        .compile()
        .unwrap();
    let parent = GraphBuilder::<JsonState>::new("outer")
        .add_node(
            "sub",
            child.as_node(
                |_p: &JsonState| JsonState::new(),
                |_c: JsonState| serde_json::Map::new(),
            ),
        )
        .set_entry("sub")
        .set_finish("sub")
        .compile()
        .unwrap();
    parent
        .invoke(JsonState::new(), RunConfig::new().shared_sink(sink.clone()))
        .await
        .unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let sub = step(&spans, "sub");
    let inner_runs = children(&spans, sub);
    assert_eq!(inner_runs.len(), 1);
    let inner = inner_runs[0];
    assert_eq!(inner.name, sc::SPAN_RUN);
    assert_eq!(sattr(inner, sc::FLOWTRACE_GRAPH), "inner");
    let inner_steps: Vec<String> = children(&spans, inner)
        .iter()
        .map(|x| sattr(x, sc::FLOWTRACE_NODE_ID))
        .collect();
    assert_eq!(inner_steps.len(), 2);
    assert!(inner_steps.contains(&"a".to_string()) && inner_steps.contains(&"b".to_string()));
    assert_eq!(named(&spans, sc::SPAN_STEP).len(), 3);
    assert_eq!(sink.stats().spans_ended, spans.len() as u64);
}

// ===== Limits =====

#[tokio::test]
async fn spans_over_the_per_run_limit_are_refused_and_counted() {
    let (exporter, provider) = memory_provider();
    let sink = run_agent(
        OtelSink::builder(provider)
            .max_open_spans_per_run(1)
            .build(),
    )
    .await;
    let spans = exporter.get_finished_spans().unwrap();
    // Steps (and attempts) run one at a time and fit; their calls do not.
    assert_eq!(named(&spans, sc::SPAN_STEP).len(), 5);
    assert!(
        spans
            .iter()
            .all(|s| s.name == sc::SPAN_STEP || s.name == sc::SPAN_RUN)
    );
    let stats = sink.stats();
    assert!(stats.spans_refused >= 3, "{stats:?}");
    assert_eq!(stats.lost_spans(), stats.spans_refused);
}

// ===== Export failures =====

/// An exporter whose collector is always down.
#[derive(Debug)]
struct Down;

impl SpanExporter for Down {
    async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
        Err(OTelSdkError::InternalFailure("connection refused".into()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_collector_down_the_run_succeeds_and_the_loss_is_counted() {
    let exporter = CountingExporter::new(Down);
    let stats = exporter.stats();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    let sink = Arc::new(
        OtelSink::builder(provider)
            .export_stats(stats.clone())
            .build(),
    );
    let config = RunConfig::new()
        .shared_sink(sink.clone())
        .cache(Arc::new(MemoryCache::new(16)));
    let out = agent_graph().invoke(JsonState::new(), config).await;
    assert!(out.is_ok(), "the run succeeds: {:?}", out.err());
    // The run's own flush started the export in the background; wait for it.
    let _ = sink.force_flush().await;
    let s = sink.stats();
    assert!(s.spans_ended > 0);
    assert_eq!(s.export_failed_spans, s.spans_ended, "{s:?}");
    assert_eq!(s.export_exported_spans, 0);
    assert_eq!(s.lost_spans(), s.spans_ended);
    assert!(stats.failed_batches() >= 1);
}

// ===== Interrupts and redaction =====

fn approval_graph() -> CompiledGraph<JsonState> {
    GraphBuilder::<JsonState>::new("approval")
        .add_node(
            "approve",
            node_fn(|_s, ctx: NodeContext| async move {
                let answer = ctx.interrupt(json!({"question": "wire $1M to account 42?"}))?;
                Ok(update("answer", answer))
            }),
        )
        .set_entry("approve")
        .set_finish("approve")
        .compile()
        .unwrap()
}

#[tokio::test]
async fn an_interrupt_is_a_span_event_and_its_payload_is_content() {
    for capture in [false, true] {
        let (exporter, provider) = memory_provider();
        let sink = Arc::new(
            OtelSink::builder(provider)
                .capture_content(capture)
                .redact(|text: &str| text.replace("42", "[account]"))
                .build(),
        );
        let config = RunConfig::new()
            .shared_sink(sink.clone())
            .checkpointer(Arc::new(
                flowtrace_core::checkpoint::MemoryCheckpointer::new(),
            ))
            .thread("t1");
        let out = approval_graph()
            .invoke(JsonState::new(), config)
            .await
            .unwrap();
        assert_eq!(out.summary.status, flowtrace_core::RunStatus::Interrupted);
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(sink.stats().spans_ended, spans.len() as u64);
        let run = top_run(&spans);
        assert_eq!(sattr(run, sc::FLOWTRACE_RUN_STATUS), "interrupted");
        assert_eq!(run.status, Status::Unset, "an interrupt is not an error");
        let interrupt = event(run, sc::EVENT_INTERRUPT).expect("an interrupt event");
        let payload = interrupt
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == sc::FLOWTRACE_PAYLOAD)
            .map(|kv| kv.value.as_str().into_owned());
        if capture {
            let payload = payload.expect("the payload, captured");
            assert!(
                payload.contains("wire $1M") && payload.contains("[account]"),
                "{payload}"
            );
            assert!(!payload.contains("42"), "redacted: {payload}");
        } else {
            assert_eq!(payload, None);
            assert!(!all_text(&spans).contains("wire"));
        }
    }
}

// ===== Bounded state =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_over_the_open_runs_limit_evicts_the_oldest() {
    let (exporter, provider) = memory_provider();
    let sink = Arc::new(OtelSink::builder(provider).max_open_runs(1).build());
    let entered = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let waiting = {
        let (entered, release) = (entered.clone(), release.clone());
        GraphBuilder::<JsonState>::new("waiting")
            .add_node(
                "wait",
                node_fn(move |_s, _ctx| {
                    let (entered, release) = (entered.clone(), release.clone());
                    async move {
                        entered.notify_one();
                        release.notified().await;
                        Ok(NodeOutput::none())
                    }
                }),
            )
            .set_entry("wait")
            .set_finish("wait")
            .compile()
            .unwrap()
    };
    let first = tokio::spawn({
        let sink = sink.clone();
        async move {
            waiting
                .invoke(JsonState::new(), RunConfig::new().shared_sink(sink))
                .await
        }
    });
    entered.notified().await;
    // A second run while the first is open: the first is evicted.
    let quick = GraphBuilder::<JsonState>::new("quick")
        .add_node("q", node_fn(|_s, _ctx| async { Ok(NodeOutput::none()) }))
        .set_entry("q")
        .set_finish("q")
        .compile()
        .unwrap();
    quick
        .invoke(JsonState::new(), RunConfig::new().shared_sink(sink.clone()))
        .await
        .unwrap();
    release.notify_one();
    first.await.unwrap().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let stats = sink.stats();
    assert_eq!(stats.runs_evicted, 1);
    assert_eq!(
        stats.spans_started, stats.spans_ended,
        "nothing left open: {stats:?}"
    );
    let runs = named(&spans, sc::SPAN_RUN);
    assert_eq!(runs.len(), 2);
    let evicted = runs
        .iter()
        .find(|r| sattr(r, sc::FLOWTRACE_GRAPH) == "waiting")
        .unwrap();
    assert!(matches!(evicted.status, Status::Error { .. }));
    let kept = runs
        .iter()
        .find(|r| sattr(r, sc::FLOWTRACE_GRAPH) == "quick")
        .unwrap();
    assert_eq!(sattr(kept, sc::FLOWTRACE_RUN_STATUS), "succeeded");
}

// ===== OTLP over HTTP =====

/// Accepts OTLP/HTTP posts on loopback and answers 200 with an empty
/// (valid, default) protobuf response; counts the posts to `/v1/traces`.
async fn otlp_receiver() -> (u16, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let posts = Arc::new(AtomicUsize::new(0));
    let counted = posts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 8192];
                    let Ok(n) = conn.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    if head.starts_with("post /v1/traces")
                        && head.contains("content-type: application/x-protobuf")
                    {
                        counted.fetch_add(1, Ordering::SeqCst);
                    }
                    buf.drain(..end + 4 + len);
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if conn.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, posts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_http_receiver_through_the_batch_processor() {
    use flowtrace_otel::opentelemetry_otlp::{self, WithExportConfig};
    let (port, posts) = otlp_receiver().await;
    let otlp = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("http://127.0.0.1:{port}/v1/traces"))
        .with_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let exporter = CountingExporter::new(otlp).with_own_runtime().unwrap();
    let stats = exporter.stats();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    let sink = run_agent(OtelSink::builder(provider).export_stats(stats).build()).await;
    sink.force_flush().await.unwrap();
    let s = sink.stats();
    assert!(s.spans_ended >= 8, "{s:?}");
    assert_eq!(s.export_exported_spans, s.spans_ended, "{s:?}");
    assert_eq!(s.export_failed_spans, 0);
    assert_eq!(s.not_exported_spans(), 0);
    assert!(posts.load(Ordering::SeqCst) >= 1);
}

/// The OTLP receiver to read spans back from (`scripts/peers.sh start`
/// runs Arize Phoenix and prints it), or `None` after a loud SKIPPED line.
fn real_receiver() -> Option<String> {
    match std::env::var("FLOWTRACE_OTLP_URL") {
        Ok(url) if !url.is_empty() => Some(url.trim_end_matches('/').to_owned()),
        _ => {
            if std::env::var("FLOWTRACE_REQUIRE_PEERS").as_deref() == Ok("1") {
                panic!("FLOWTRACE_OTLP_URL is not set and FLOWTRACE_REQUIRE_PEERS=1");
            }
            eprintln!(
                "*** SKIPPED spans_reach_a_real_otlp_receiver: set FLOWTRACE_OTLP_URL (scripts/peers.sh start runs Arize Phoenix) ***"
            );
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_real_otlp_receiver_over_http_and_read_back() {
    use flowtrace_otel::opentelemetry_otlp::{self, WithExportConfig};
    let Some(url) = real_receiver() else {
        return;
    };
    let otlp = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{url}/v1/traces"))
        .with_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    export_and_read_back(&url, otlp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_real_otlp_receiver_over_grpc_and_read_back() {
    use flowtrace_otel::opentelemetry_otlp::{self, WithExportConfig};
    let Some(url) = real_receiver() else {
        return;
    };
    let grpc =
        std::env::var("FLOWTRACE_OTLP_GRPC_URL").unwrap_or_else(|_| "http://127.0.0.1:4317".into());
    let otlp = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(grpc)
        .with_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    export_and_read_back(&url, otlp).await;
}

/// Runs the agent graph exporting through `otlp`, then reads its spans
/// back from the receiver at `url`.
async fn export_and_read_back<E>(url: &str, otlp: E)
where
    E: SpanExporter + 'static,
{
    use opentelemetry_sdk::Resource;
    // A project of its own, so the spans read back are this test's.
    let project = format!(
        "flowtrace-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let exporter = CountingExporter::new(otlp).with_own_runtime().unwrap();
    let stats = exporter.stats();
    let provider = SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name("flowtrace-otel-test")
                .with_attribute(opentelemetry::KeyValue::new(
                    "openinference.project.name",
                    project.clone(),
                ))
                .build(),
        )
        .with_batch_exporter(exporter)
        .build();
    let sink = run_agent(OtelSink::builder(provider).export_stats(stats).build()).await;
    sink.force_flush().await.unwrap();
    let s = sink.stats();
    assert_eq!(s.not_exported_spans(), 0, "{s:?}");

    // Read them back through the receiver's own API.
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let res = client
            .get(format!("{url}/v1/projects/{project}/spans?limit=100"))
            .send()
            .await
            .unwrap();
        let status = res.status();
        let body: Json = res.json().await.unwrap_or(Json::Null);
        let found = body["data"].as_array().cloned().unwrap_or_default();
        if status.is_success() && found.len() as u64 >= s.spans_ended {
            break found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the receiver holds {} of {} spans: {status} {body}",
            found.len(),
            s.spans_ended
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let names: Vec<&str> = spans.iter().filter_map(|sp| sp["name"].as_str()).collect();
    assert!(names.iter().any(|n| n.starts_with("chat ")), "{names:?}");
    assert!(
        names.iter().any(|n| n.starts_with("execute_tool")),
        "{names:?}"
    );
    let chat = spans
        .iter()
        .find(|sp| sp["name"].as_str().is_some_and(|n| n.starts_with("chat ")))
        .unwrap();
    let attrs = &chat["attributes"];
    let text = attrs.to_string();
    for key in [
        sc::GEN_AI_OPERATION_NAME,
        sc::GEN_AI_REQUEST_MODEL,
        sc::GEN_AI_USAGE_INPUT_TOKENS,
    ] {
        assert!(text.contains(key), "{key} missing from {attrs}");
    }
    // One trace: every span shares the run's trace id.
    let traces: std::collections::BTreeSet<String> = spans
        .iter()
        .filter_map(|sp| sp["context"]["trace_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(traces.len(), 1, "{traces:?}");
}
