//! Provider client overhead benchmarks: what FlowTrace's OpenAI and
//! Anthropic clients add to a model call, and how fast a response-cache hit
//! answers.
//!
//! A tiny keep-alive HTTP/1.1 server (a tokio `TcpListener`, in this file)
//! answers every request with a fixed body shaped like the provider's
//! documented replies: a ~60-word text reply with usage, or the same reply
//! streamed as 20 SSE text chunks plus the role/finish/usage events (24
//! `data:` lines for OpenAI, 26 events for Anthropic). The server runs on the
//! same current-thread tokio runtime as the client, for both contenders: a
//! call is then pure CPU work, with no cross-thread wake-ups. (With a server
//! on another thread — `wiremock` — every call paid 25–100 µs of wake-up
//! latency that swung with the machine's load and drowned the differences
//! measured here.) Each iteration is one request over a kept-alive loopback
//! connection; the server's work is in both contenders' figures.
//!
//! * `{openai,anthropic}/{chat,stream}/flowtrace` — `ChatModel::chat` (or
//!   `chat_stream`, drained) on the FlowTrace client: request mapping, JSON
//!   serialization, headers, the HTTP call, response parsing into a
//!   `ChatResponse` (usage, finish reason, tool calls), SSE decoding.
//! * `{openai,anthropic}/{chat,stream}/reqwest` — the floor: a bare `reqwest`
//!   POST of an equivalent request (a `json!` body built per call, same
//!   headers) to the same server, the reply parsed into a `serde_json::Value`
//!   (streams: the body read chunk by chunk, split into lines, every `data:`
//!   line parsed and its text appended).
//! * `openai/chat/graph` — the FlowTrace client called through `ctx.chat` in
//!   a one-node graph run (budget check, pricing, `llm.request` /
//!   `llm.response` events, no sink): the whole per-call path of a workflow,
//!   run start and finish included.
//! * `cache/hit/*` — `Cached::in_memory(OpenAi)` with a warm entry:
//!   `chat_observed` answering from the store (cache key hashing, `moka`
//!   lookup, reply clone, `cache.hit` event), with a no-op observer and with
//!   an observer pricing the saved cost from [`PriceTable::builtin`]. The
//!   request clone is done outside the timing.
//!
//! FlowTrace's own overhead per call = `flowtrace` − `reqwest`; target
//! < 50 µs. Cache-hit target < 5 µs.
//!
//! Results on the 2-core dev machine (AMD EPYC, 2 vCPUs; criterion 0.8,
//! release profile, `cargo bench --bench providers -- --warm-up-time 1
//! --measurement-time 3`), two consecutive runs (run 1 / run 2):
//!
//! | bench | flowtrace | bare reqwest | overhead per call |
//! |---|---|---|---|
//! | `openai/chat` | 32.4 / 34.4 µs | 28.0 / 26.8 µs | 4.4 / 7.6 µs |
//! | `openai/stream` | 84.4 / 86.3 µs | 62.8 / 62.3 µs | 21.5 / 24.0 µs (~0.9 µs per SSE event) |
//! | `anthropic/chat` | 26.4 / 27.1 µs | 25.6 / 26.0 µs | 0.8 / 1.0 µs |
//! | `anthropic/stream` | 60.4 / 62.3 µs | 45.8 / 46.0 µs | 14.6 / 16.3 µs (~0.6 µs per SSE event) |
//! | `openai/chat/graph` (one-node run) | 45.6 / 46.8 µs | 28.0 / 26.8 µs | 17.6 / 20.0 µs (of which the run: 13.2 / 12.4 µs) |
//!
//! | bench | per hit |
//! |---|---|
//! | `cache/hit/noop_observer` | 1.07 / 1.06 µs |
//! | `cache/hit/priced_observer` | 1.30 / 1.24 µs |
//!
//! * `tools/transform_json/{small,wide_1000}` — one `TransformJson::call`
//!   end to end (checks, evaluation, conversion back to JSON): a filter over
//!   20 people, and a projection building 1 000 objects.
//!
//! Same machine and flags, under load from other builds, two alternating
//! runs (run 1 / run 2); "before" is one OS thread with a 16 MiB stack
//! started per call, "after" the fixed evaluation pool:
//!
//! | bench | before | after |
//! |---|---|---|
//! | `tools/transform_json/small` | 313 / 221 µs | 36.2 / 30.5 µs |
//! | `tools/transform_json/wide_1000` | 1.91 / 1.77 ms | 1.49 / 1.39 ms |

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use flowtrace::model::NoopObserver;
use flowtrace::providers::ApiKey;
use flowtrace::providers::anthropic::Anthropic;
use flowtrace::providers::cache::Cached;
use flowtrace::providers::openai::OpenAi;
use flowtrace::providers::tools::TransformJson;
use flowtrace::{
    CallObserver, ChatModel, ChatRequest, CompiledGraph, EventKind, GraphBuilder, JsonState,
    ModelPrice, NodeContext, NodeOutput, PriceTable, Pricing, RunConfig, StreamEvent, Tool,
    node_fn,
};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEY: &str = "sk-bench-0123456789";
const SYSTEM: &str = "You are a concise assistant. Answer in one short paragraph.";
const PROMPT: &str =
    "Explain in a few sentences why per-step cost accounting matters for LLM agents.";
const REPLY: [&str; 20] = [
    "Agent workflows ",
    "call models many ",
    "times per run, ",
    "and each step ",
    "can retry, branch ",
    "or loop. Without ",
    "per-step accounting ",
    "you only see ",
    "a monthly bill, ",
    "not which node ",
    "burned the tokens. ",
    "Exact costs per ",
    "step let you ",
    "set budgets, stop ",
    "runaway loops early, ",
    "cache repeated prompts ",
    "and compare providers ",
    "on real traffic, ",
    "turning spend into ",
    "an engineering signal.",
];
const MAX_TOKENS: u32 = 256;

fn reply_text() -> String {
    REPLY.concat()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn request() -> ChatRequest {
    ChatRequest::new("gpt-4o-mini")
        .system(SYSTEM)
        .user(PROMPT)
        .max_tokens(MAX_TOKENS)
        .temperature(0.2)
}

fn anthropic_request() -> ChatRequest {
    let mut request = request();
    request.model = "claude-3-5-haiku".into();
    request
}

fn openai_body() -> Value {
    json!({
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": reply_text(), "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": 41,
            "completion_tokens": 62,
            "total_tokens": 103,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        },
        "service_tier": "default",
        "system_fingerprint": "fp_fc9f1d7035"
    })
}

fn openai_sse() -> String {
    let chunk = |delta: Value, finish: Option<&str>, usage: Value| {
        json!({
            "id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
            "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_44709d6fcb",
            "choices": if finish.is_some() || !delta.is_null() {
                json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}])
            } else {
                json!([])
            },
            "usage": usage
        })
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        None,
        Value::Null,
    )];
    events.extend(
        REPLY
            .iter()
            .map(|piece| chunk(json!({"content": piece}), None, Value::Null)),
    );
    events.push(chunk(json!({}), Some("stop"), Value::Null));
    events.push(chunk(
        Value::Null,
        None,
        json!({"prompt_tokens": 41, "completion_tokens": 62, "total_tokens": 103,
               "prompt_tokens_details": {"cached_tokens": 0}}),
    ));
    let mut body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
    body.push_str("data: [DONE]\n\n");
    body
}

fn anthropic_body() -> Value {
    json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": reply_text()}],
        "model": "claude-3-5-haiku-20241022",
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": 41, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0, "output_tokens": 62}
    })
}

fn anthropic_sse() -> String {
    let mut events = vec![
        json!({"type": "message_start", "message": {
            "id": "msg_014p7gG3wDgGV9EUtLvnow3U", "type": "message", "role": "assistant",
            "content": [], "model": "claude-3-5-haiku-20241022", "stop_reason": null,
            "stop_sequence": null, "usage": {"input_tokens": 41, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0,
               "content_block": {"type": "text", "text": ""}}),
        json!({"type": "ping"}),
    ];
    events.extend(REPLY.iter().map(|piece| {
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": piece}})
    }));
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(json!({"type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": {"output_tokens": 62}}));
    events.push(json!({"type": "message_stop"}));
    events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect()
}

/// A full HTTP/1.1 response with a fixed body.
fn http_response(content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const NOT_FOUND: &[u8] = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";

/// Starts the mock server on the current runtime and returns its root URL:
/// plain replies under `/plain`, streams under `/sse`. Keep-alive HTTP/1.1,
/// one task per connection; it reads each request (headers, then
/// `content-length` bytes of body) and writes the route's prebuilt response.
async fn server() -> String {
    let routes: Arc<[(&'static str, Vec<u8>)]> = Arc::from(vec![
        (
            "/plain/v1/chat/completions",
            http_response("application/json", &openai_body().to_string()),
        ),
        (
            "/sse/v1/chat/completions",
            http_response("text/event-stream", &openai_sse()),
        ),
        (
            "/plain/v1/messages",
            http_response("application/json", &anthropic_body().to_string()),
        ),
        (
            "/sse/v1/messages",
            http_response("text/event-stream", &anthropic_sse()),
        ),
    ]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let root = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            socket.set_nodelay(true).unwrap();
            tokio::spawn(connection(socket, routes.clone()));
        }
    });
    root
}

/// Serves one keep-alive connection until the client closes it.
async fn connection(mut socket: TcpStream, routes: Arc<[(&'static str, Vec<u8>)]>) {
    let mut pending: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let head_end = loop {
            if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&pending[..head_end]).into_owned();
        let path = head.split(' ').nth(1).unwrap_or("");
        let body_len = head
            .lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, value)| value.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while pending.len() < head_end + body_len {
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => pending.extend_from_slice(&chunk[..n]),
            }
        }
        pending.drain(..head_end + body_len);
        let response = routes
            .iter()
            .find(|(route, _)| *route == path)
            .map_or(NOT_FOUND, |(_, response)| response.as_slice());
        if socket.write_all(response).await.is_err() {
            return;
        }
    }
}

/// The floor: POST the request, parse the reply as JSON.
async fn bare_chat(http: &reqwest::Client, url: &str, anthropic: bool) -> Value {
    let mut body = json!({
        "model": if anthropic { "claude-3-5-haiku" } else { "gpt-4o-mini" },
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.2,
    });
    let builder = if anthropic {
        body["system"] = json!(SYSTEM);
        http.post(url)
            .header("x-api-key", KEY)
            .header("anthropic-version", "2023-06-01")
    } else {
        body["messages"] = json!([
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": PROMPT}
        ]);
        http.post(url).bearer_auth(KEY)
    };
    let response = builder.json(&body).send().await.unwrap();
    assert!(response.status().is_success());
    response.json::<Value>().await.unwrap()
}

/// The floor for streams: POST with `"stream": true`, read the body chunk by
/// chunk, parse every `data:` line and collect the text.
async fn bare_stream(http: &reqwest::Client, url: &str, anthropic: bool) -> String {
    let mut body = json!({
        "model": if anthropic { "claude-3-5-haiku" } else { "gpt-4o-mini" },
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.2,
        "stream": true,
    });
    let builder = if anthropic {
        body["system"] = json!(SYSTEM);
        http.post(url)
            .header("x-api-key", KEY)
            .header("anthropic-version", "2023-06-01")
    } else {
        body["messages"] = json!([
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": PROMPT}
        ]);
        body["stream_options"] = json!({"include_usage": true});
        http.post(url).bearer_auth(KEY)
    };
    let response = builder.json(&body).send().await.unwrap();
    assert!(response.status().is_success());
    let mut chunks = response.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    let mut text = String::new();
    while let Some(chunk) = chunks.next().await {
        pending.extend_from_slice(&chunk.unwrap());
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            let data = data.trim_ascii();
            if data.is_empty() || data == b"[DONE]" {
                continue;
            }
            let event: Value = serde_json::from_slice(data).unwrap();
            let piece = if anthropic {
                &event["delta"]["text"]
            } else {
                &event["choices"][0]["delta"]["content"]
            };
            if let Some(piece) = piece.as_str() {
                text.push_str(piece);
            }
        }
    }
    text
}

async fn drain(model: &dyn ChatModel, request: ChatRequest) -> String {
    let mut stream = model.chat_stream(request);
    let mut text = String::new();
    let mut done = false;
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            StreamEvent::Delta(piece) => text.push_str(&piece),
            StreamEvent::Done(response) => {
                assert_eq!(response.usage.output_tokens, 62);
                done = true;
                break;
            }
            _ => {}
        }
    }
    assert!(done, "the stream ended without its final message");
    text
}

fn bench_provider(c: &mut Criterion, anthropic: bool) {
    let rt = runtime();
    let uri = rt.block_on(server());
    let http = reqwest::Client::new();
    let (model, request, plain_url, sse_url): (Arc<dyn ChatModel>, ChatRequest, _, _) = if anthropic
    {
        (
            Arc::new(Anthropic::new(ApiKey::new(KEY)).base_url(format!("{uri}/plain"))),
            anthropic_request(),
            format!("{uri}/plain/v1/messages"),
            format!("{uri}/sse/v1/messages"),
        )
    } else {
        (
            Arc::new(OpenAi::new(ApiKey::new(KEY)).base_url(format!("{uri}/plain/v1"))),
            request(),
            format!("{uri}/plain/v1/chat/completions"),
            format!("{uri}/sse/v1/chat/completions"),
        )
    };
    let streaming: Arc<dyn ChatModel> = if anthropic {
        Arc::new(Anthropic::new(ApiKey::new(KEY)).base_url(format!("{uri}/sse")))
    } else {
        Arc::new(OpenAi::new(ApiKey::new(KEY)).base_url(format!("{uri}/sse/v1")))
    };

    // Sanity: both contenders see the same reply.
    rt.block_on(async {
        let reply = model.chat(request.clone()).await.unwrap();
        assert_eq!(reply.text, reply_text());
        assert_eq!(reply.usage.input_tokens, 41);
        assert_eq!(
            drain(streaming.as_ref(), request.clone()).await,
            reply_text()
        );
        assert_eq!(bare_stream(&http, &sse_url, anthropic).await, reply_text());
        black_box(bare_chat(&http, &plain_url, anthropic).await);
    });

    let name = if anthropic { "anthropic" } else { "openai" };
    let mut g = c.benchmark_group(format!("{name}/chat"));
    g.bench_function("flowtrace", |b| {
        b.to_async(&rt).iter_batched(
            || request.clone(),
            |request| async { model.chat(request).await.unwrap() },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("reqwest", |b| {
        b.to_async(&rt)
            .iter(|| async { bare_chat(&http, &plain_url, anthropic).await })
    });
    if !anthropic {
        let graph = chat_graph(model.clone(), request.clone());
        g.bench_function("graph", |b| {
            b.to_async(&rt).iter(|| async {
                let out = graph
                    .invoke(JsonState::new(), RunConfig::new())
                    .await
                    .unwrap();
                black_box(out.summary.cost)
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group(format!("{name}/stream"));
    g.bench_function("flowtrace", |b| {
        b.to_async(&rt).iter_batched(
            || request.clone(),
            |request| async { drain(streaming.as_ref(), request).await },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("reqwest", |b| {
        b.to_async(&rt)
            .iter(|| async { bare_stream(&http, &sse_url, anthropic).await })
    });
    g.finish();
}

/// One node calling the model through `ctx.chat`.
fn chat_graph(model: Arc<dyn ChatModel>, request: ChatRequest) -> CompiledGraph<JsonState> {
    GraphBuilder::<JsonState>::new("chat")
        .add_node(
            "chat",
            node_fn(move |_state, ctx: NodeContext| {
                let model = model.clone();
                let request = request.clone();
                async move {
                    ctx.chat(model.as_ref(), request).await?;
                    Ok(NodeOutput::none())
                }
            }),
        )
        .set_entry("chat")
        .set_finish("chat")
        .compile()
        .unwrap()
}

fn bench_openai(c: &mut Criterion) {
    bench_provider(c, false);
}

fn bench_anthropic(c: &mut Criterion) {
    bench_provider(c, true);
}

/// Prices cache hits like a run does, and drops the events.
#[derive(Debug)]
struct PricedObserver(PriceTable);

impl CallObserver for PricedObserver {
    fn event(&self, kind: EventKind) {
        black_box(kind);
    }
    fn price(&self, provider: &str, model: &str) -> Option<ModelPrice> {
        self.0.price(provider, model)
    }
}

fn bench_cache_hit(c: &mut Criterion) {
    let rt = runtime();
    let uri = rt.block_on(server());
    let model =
        Cached::in_memory(OpenAi::new(ApiKey::new(KEY)).base_url(format!("{uri}/plain/v1")));
    let request = request();
    rt.block_on(async {
        assert!(!model.chat(request.clone()).await.unwrap().cached);
        assert!(model.chat(request.clone()).await.unwrap().cached);
    });
    let priced = PricedObserver(PriceTable::builtin());
    assert!(priced.price("openai", "gpt-4o-mini").is_some());

    let mut g = c.benchmark_group("cache/hit");
    g.bench_function("noop_observer", |b| {
        b.to_async(&rt).iter_batched(
            || request.clone(),
            |request| async {
                let reply = model.chat_observed(request, &NoopObserver).await.unwrap();
                debug_assert!(reply.cached);
                reply
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("priced_observer", |b| {
        b.to_async(&rt).iter_batched(
            || request.clone(),
            |request| async {
                let reply = model.chat_observed(request, &priced).await.unwrap();
                debug_assert!(reply.cached);
                reply
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// `tools/transform_json/*`: one `TransformJson::call` end to end
/// (argument checks, depth checks, hand-off to the evaluation pool,
/// compile, cost bounds, evaluation, conversion back to JSON), on a small
/// document (`people[?age > \`30\`].name` over 20 people) and on a wider
/// one (`[*].{n: name, a: age}` over 1 000 people). The arguments are
/// cloned outside the timing.
fn bench_transform_json(c: &mut Criterion) {
    let rt = runtime();
    let tool = TransformJson::new();
    let people = |n: usize| -> Value {
        (0..n)
            .map(|i| json!({"name": format!("person-{i}"), "age": 18 + i % 50, "langs": ["en"]}))
            .collect()
    };
    let small = json!({"input": {"people": people(20)}, "expression": "people[?age > `30`].name"});
    let wide = json!({"input": people(1000), "expression": "[*].{n: name, a: age}"});
    rt.block_on(async {
        assert_eq!(
            tool.call(small.clone())
                .await
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            7
        );
        assert_eq!(
            tool.call(wide.clone())
                .await
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            1000
        );
    });
    let mut g = c.benchmark_group("tools/transform_json");
    for (name, args) in [("small", small), ("wide_1000", wide)] {
        g.bench_function(name, |b| {
            b.to_async(&rt).iter_batched(
                || args.clone(),
                |args| tool.call(args),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_openai,
    bench_anthropic,
    bench_cache_hit,
    bench_transform_json
);
criterion_main!(benches);
