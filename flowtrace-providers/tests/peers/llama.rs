//! Integration tests against a real model server: llama.cpp's `llama-server`
//! with SmolLM2-135M-Instruct, which speaks both the OpenAI and the Anthropic
//! protocols (`scripts/peers.sh start` installs and starts it).
//!
//! Enabled when `FLOWTRACE_LLM_URL` is set (for example
//! `http://127.0.0.1:8080`); skipped with a loud message otherwise, unless
//! `FLOWTRACE_REQUIRE_PEERS=1`, which turns a missing server into a failure.
//!
//! Greedy decoding (temperature 0) makes the server deterministic, so a
//! FlowTrace call and a bare HTTP call with the same body must agree on the
//! text and on the usage the server reports.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use flowtrace_core::pricing::{ModelPrice, PerMillion};
use flowtrace_core::trace::MemorySink;
use flowtrace_core::{
    ChatModel, ChatRequest, ChatResponse, Cost, EventKind, JsonState, NodeContext, NodeOutput,
    PriceTable, RunConfig, RunSummary, TokenUsage, node_fn,
};
use flowtrace_providers::ApiKey;
use flowtrace_providers::anthropic::Anthropic;
use flowtrace_providers::openai::OpenAi;
use serde_json::{Value, json};

const PROMPT: &str = "Name three primary colors.";

/// One test talks to the server at a time, so no request changes another's
/// prompt-cache state.
static SERVER_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const MAX_TOKENS: u32 = 24;

/// The server's base URL, or `None` (after saying so) when the test must skip.
fn server() -> Option<String> {
    match std::env::var("FLOWTRACE_LLM_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().trim_end_matches('/').to_string()),
        _ => {
            if std::env::var("FLOWTRACE_REQUIRE_PEERS").as_deref() == Ok("1") {
                panic!(
                    "FLOWTRACE_REQUIRE_PEERS=1 but FLOWTRACE_LLM_URL is not set: start the server with scripts/peers.sh"
                );
            }
            eprintln!(
                "\n*** SKIPPED: FLOWTRACE_LLM_URL is not set; run `eval \"$(scripts/peers.sh start)\"` to test against a real llama-server ***\n"
            );
            None
        }
    }
}

fn model_name() -> String {
    std::env::var("FLOWTRACE_LLM_MODEL").unwrap_or_else(|_| "smollm2-135m".to_string())
}

fn request() -> ChatRequest {
    ChatRequest::new(model_name())
        .system("You are terse.")
        .user(PROMPT)
        .max_tokens(MAX_TOKENS)
        .temperature(0.0)
}

/// A price for the local model, so the computed cost can be checked exactly.
fn pricing(provider: &str) -> Arc<PriceTable> {
    Arc::new(PriceTable::builtin().with_price(
        provider,
        &model_name(),
        ModelPrice::new(
            PerMillion::from_microdollars(1_000_000),
            PerMillion::from_microdollars(3_000_000),
        ),
    ))
}

/// Runs one model call through a FlowTrace run and returns the reply, the
/// run's summary and its events.
async fn run_call(
    model: Arc<dyn ChatModel>,
    stream: bool,
) -> (ChatResponse, RunSummary, MemorySink) {
    let reply = Arc::new(std::sync::Mutex::new(None));
    let r = reply.clone();
    let provider = model.provider().to_string();
    let graph = crate::support::ask_graph(
        "peer",
        node_fn(move |_s, ctx: NodeContext| {
            let model = model.clone();
            let r = r.clone();
            async move {
                let response = if stream {
                    ctx.chat_stream(model.as_ref(), request()).await?
                } else {
                    ctx.chat(model.as_ref(), request()).await?
                };
                *r.lock().unwrap() = Some(response);
                Ok(NodeOutput::none())
            }
        }),
    );
    let sink = MemorySink::new();
    let out = graph
        .invoke(
            JsonState::new(),
            RunConfig::new()
                .sink(sink.clone())
                .pricing(pricing(&provider)),
        )
        .await
        .unwrap_or_else(|f| panic!("run failed: {}", f.error));
    let response = reply.lock().unwrap().take().unwrap();
    (response, out.summary, sink)
}

fn expected_cost(usage: &TokenUsage) -> Cost {
    // $1 per million input tokens, $3 per million output tokens.
    Cost::from_picodollars(
        u128::from(usage.input_tokens) * 1_000_000 + u128::from(usage.output_tokens) * 3_000_000,
    )
}

/// What the server answered to a bare HTTP call: text, prompt tokens (cached
/// ones included), completion tokens.
#[derive(Debug, PartialEq)]
struct Bare {
    text: String,
    input: u64,
    output: u64,
}

/// The data payloads of an SSE body.
fn sse_data(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .filter(|d| !d.is_empty() && *d != "[DONE]")
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

/// A bare OpenAI-protocol call with the same request.
async fn bare_openai(base: &str, stream: bool) -> Bare {
    let mut body = json!({
        "model": model_name(),
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": PROMPT}
        ],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    let text = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    if !stream {
        let v: Value = serde_json::from_str(&text).unwrap();
        return Bare {
            text: v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            input: v["usage"]["prompt_tokens"].as_u64().unwrap(),
            output: v["usage"]["completion_tokens"].as_u64().unwrap(),
        };
    }
    let mut bare = Bare {
        text: String::new(),
        input: 0,
        output: 0,
    };
    for v in sse_data(&text) {
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            bare.text.push_str(t);
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            bare.input = u["prompt_tokens"].as_u64().unwrap_or(bare.input);
            bare.output = u["completion_tokens"].as_u64().unwrap_or(bare.output);
        }
    }
    bare
}

/// A bare Anthropic-protocol call with the same request.
async fn bare_anthropic(base: &str, stream: bool) -> Bare {
    let mut body = json!({
        "model": model_name(),
        "system": "You are terse.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0
    });
    if stream {
        body["stream"] = json!(true);
    }
    let text = reqwest::Client::new()
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", "local")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Anthropic counts cache reads and writes apart from `input_tokens`.
    let input = |u: &Value| {
        [
            "input_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        ]
        .iter()
        .filter_map(|k| u[*k].as_u64())
        .sum::<u64>()
    };
    if !stream {
        let v: Value = serde_json::from_str(&text).unwrap();
        return Bare {
            text: v["content"]
                .as_array()
                .map(|blocks| blocks.iter().filter_map(|b| b["text"].as_str()).collect())
                .unwrap_or_default(),
            input: input(&v["usage"]),
            output: v["usage"]["output_tokens"].as_u64().unwrap(),
        };
    }
    let mut bare = Bare {
        text: String::new(),
        input: 0,
        output: 0,
    };
    for v in sse_data(&text) {
        match v["type"].as_str() {
            Some("message_start") => bare.input = input(&v["message"]["usage"]),
            Some("content_block_delta") => {
                if let Some(t) = v["delta"]["text"].as_str() {
                    bare.text.push_str(t);
                }
            }
            Some("message_delta") => {
                bare.output = v["usage"]["output_tokens"].as_u64().unwrap_or(bare.output)
            }
            _ => {}
        }
    }
    bare
}

fn deltas(sink: &MemorySink) -> Vec<String> {
    sink.events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::LlmDelta { text } => Some(text),
            _ => None,
        })
        .collect()
}

fn openai(base: &str) -> Arc<dyn ChatModel> {
    Arc::new(
        OpenAi::new(ApiKey::new("local-key"))
            .base_url(format!("{base}/v1"))
            .provider_name("llamacpp"),
    )
}

fn anthropic(base: &str) -> Arc<dyn ChatModel> {
    Arc::new(
        Anthropic::new(ApiKey::new("local-key"))
            .base_url(base)
            .provider_name("llamacpp"),
    )
}

/// Checks one FlowTrace call against a bare call with the same body, made
/// right before it: llama.cpp reuses its prompt cache between requests, and
/// greedy decoding is only repeatable with the same cache state, so each
/// comparison is preceded by a warm-up call.
async fn check_call<F, Fut>(model: Arc<dyn ChatModel>, stream: bool, bare: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Bare>,
{
    bare().await;
    let expected = bare().await;
    let (reply, summary, sink) = run_call(model, stream).await;
    assert!(!reply.text.trim().is_empty());
    assert_eq!(reply.text, expected.text, "stream={stream}");
    assert_eq!(
        reply.usage.input_tokens, expected.input,
        "stream={stream}: usage as the server reported it"
    );
    assert_eq!(
        reply.usage.output_tokens, expected.output,
        "stream={stream}"
    );
    assert_eq!(summary.usage, reply.usage);
    assert_eq!(
        summary.cost,
        expected_cost(&reply.usage),
        "cost computed exactly from the usage"
    );
    let kinds = sink.kinds();
    assert!(kinds.contains(&"llm.response"), "{kinds:?}");
    if stream {
        let pieces = deltas(&sink);
        assert!(
            pieces.len() > 1,
            "tokens arrive as several llm.delta events: {pieces:?}"
        );
        assert_eq!(pieces.concat(), reply.text);
        assert!(
            kinds.iter().position(|k| *k == "llm.delta")
                < kinds.iter().position(|k| *k == "llm.response"),
            "{kinds:?}"
        );
    }
}

#[tokio::test]
async fn openai_protocol_against_a_real_server() {
    let Some(base) = server() else { return };
    let _one_at_a_time = SERVER_LOCK.lock().await;
    for stream in [false, true] {
        check_call(openai(&base), stream, || bare_openai(&base, stream)).await;
    }
}

#[tokio::test]
async fn anthropic_protocol_against_a_real_server() {
    let Some(base) = server() else { return };
    let _one_at_a_time = SERVER_LOCK.lock().await;
    for stream in [false, true] {
        check_call(anthropic(&base), stream, || bare_anthropic(&base, stream)).await;
    }
}
