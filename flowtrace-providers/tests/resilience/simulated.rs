//! The offline `simulated` provider: replies, usage, scripted failures,
//! latency under Tokio's paused clock, streaming, and pricing and retries
//! through a FlowTrace run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use flowtrace_core::trace::MemorySink;
use flowtrace_core::{
    ChatModel, ChatRequest, Cost, GraphBuilder, JsonState, ModelErrorKind, NodeConfig, NodeContext,
    NodeOutput, PriceTable, Pricing, RetryPolicy, RunConfig, StepStatus, StreamEvent, TokenUsage,
    node_fn,
};
use flowtrace_providers::simulated::{
    ECHO_WORDS, SimulatedConfig, SimulatedFailure, SimulatedModel,
};
use flowtrace_providers::tokens::{Encoding, count_tokens, estimate_openai};
use futures::StreamExt;
use serde_json::json;
use tokio::time::Instant;

fn model(config: serde_json::Value) -> SimulatedModel {
    SimulatedModel::from_json(&config).unwrap()
}

fn request() -> ChatRequest {
    ChatRequest::new("gpt-4o-mini")
        .system("You are terse.")
        .user("What is the capital of France?")
}

#[tokio::test]
async fn replies_with_the_configured_text() {
    let m = model(json!({"response": "Paris is the capital."}));
    assert_eq!(m.provider(), "simulated");
    let r = m.chat(request()).await.unwrap();
    assert_eq!(r.text, "Paris is the capital.");
    assert_eq!(r.model, "gpt-4o-mini");
    assert_eq!(r.finish_reason, flowtrace_core::FinishReason::Stop);
    assert!(r.tool_calls.is_empty());
    assert!(!r.cached);
    // Deterministic: the same request gets the same reply.
    assert_eq!(m.chat(request()).await.unwrap(), r);
    assert_eq!(m.calls(), 2);
}

#[tokio::test]
async fn echoes_the_last_user_message_without_a_response() {
    let m = SimulatedModel::new(SimulatedConfig::new());
    let words: Vec<String> = (1..=20).map(|i| format!("w{i}")).collect();
    let req = ChatRequest::new("gpt-4o")
        .user("an earlier question")
        .message(flowtrace_core::Message::assistant("an answer"))
        .user(words.join(" "));
    let r = m.chat(req).await.unwrap();
    assert_eq!(
        r.text,
        format!("[simulated] {} …", words[..ECHO_WORDS].join(" "))
    );
    let short = m
        .chat(ChatRequest::new("gpt-4o").user("Hello there"))
        .await
        .unwrap();
    assert_eq!(short.text, "[simulated] Hello there");
}

#[tokio::test]
async fn usage_given_is_reported_verbatim() {
    let m = model(json!({"response": "ok", "usage": {"input": 1234, "output": 56}}));
    let r = m.chat(request()).await.unwrap();
    assert_eq!(r.usage, TokenUsage::new(1234, 56));
    assert_eq!(m.estimate_input_tokens(&request()), 1234);
}

#[tokio::test]
async fn usage_is_estimated_with_the_openai_tokenizer() {
    let text = "Paris is the capital of France, and its largest city.";
    let m = model(json!({ "response": text }));
    let r = m.chat(request()).await.unwrap();
    let input = estimate_openai(&request());
    let output = count_tokens(Encoding::for_model("gpt-4o-mini"), text);
    assert_eq!(r.usage, TokenUsage::new(input, output));
    assert!(input > 10 && output > 5, "{:?}", r.usage);
    assert_eq!(m.estimate_input_tokens(&request()), input);
}

#[tokio::test]
async fn fail_first_with_each_kind() {
    let cases = [
        (
            "rate_limit",
            ModelErrorKind::RateLimited { retry_after: None },
            true,
        ),
        ("server_error", ModelErrorKind::Overloaded, true),
        ("timeout", ModelErrorKind::Timeout, true),
        ("invalid_request", ModelErrorKind::InvalidRequest, false),
    ];
    for (name, kind, retryable) in cases {
        let m = model(json!({"response": "ok", "fail_first": 2, "fail_kind": name}));
        for _ in 0..2 {
            let e = m.chat(request()).await.unwrap_err();
            assert_eq!(e.kind, kind, "{name}");
            assert_eq!(e.is_retryable(), retryable, "{name}");
            assert_eq!(e.retry_after(), None);
            assert_eq!(e.provider, "simulated");
            assert_eq!(e.model, "gpt-4o-mini");
        }
        assert_eq!(m.chat(request()).await.unwrap().text, "ok", "{name}");
        assert_eq!(m.calls(), 3);
    }
    // The default kind is a retryable server error.
    let m = model(json!({"fail_first": 1}));
    assert_eq!(
        m.chat(request()).await.unwrap_err().kind,
        ModelErrorKind::Overloaded
    );
    // Each instance counts its own calls.
    let config = SimulatedConfig::new().fail_first(1, SimulatedFailure::Timeout);
    let (a, b) = (
        SimulatedModel::new(config.clone()),
        SimulatedModel::new(config),
    );
    assert!(a.chat(request()).await.is_err());
    assert!(b.chat(request()).await.is_err());
    assert!(a.chat(request()).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn latency_uses_tokios_clock() {
    let m = model(json!({"response": "ok", "latency_ms": 1500, "fail_first": 1}));
    let started = Instant::now();
    assert!(m.chat(request()).await.is_err());
    assert_eq!(started.elapsed(), Duration::from_millis(1500));
    let started = Instant::now();
    assert!(m.chat(request()).await.is_ok());
    assert_eq!(started.elapsed(), Duration::from_millis(1500));

    // Timing out around the model works as with a real one.
    let slow = model(json!({"latency_ms": 60_000}));
    let r = tokio::time::timeout(Duration::from_secs(1), slow.chat(request())).await;
    assert!(r.is_err());
}

#[tokio::test(start_paused = true)]
async fn streaming_yields_words_then_done() {
    let text = "Paris is  the capital.\nIt is large.";
    let m = model(json!({"response": text, "latency_ms": 700}));
    let started = Instant::now();
    let mut stream = m.chat_stream(request());
    let mut deltas = Vec::new();
    let mut at = Vec::new();
    let mut done = None;
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            StreamEvent::Delta(d) => {
                deltas.push(d);
                at.push(started.elapsed());
            }
            StreamEvent::Done(r) => {
                assert!(done.is_none(), "one Done");
                done = Some(r);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        deltas,
        [
            "Paris ",
            "is  ",
            "the ",
            "capital.\n",
            "It ",
            "is ",
            "large."
        ]
    );
    assert_eq!(deltas.concat(), text);
    // The latency is spread evenly: 100 ms per delta, 700 ms in all.
    let expected: Vec<Duration> = (1..=7).map(|i| Duration::from_millis(100 * i)).collect();
    assert_eq!(at, expected);
    assert_eq!(started.elapsed(), Duration::from_millis(700));
    let done = done.unwrap();
    assert_eq!(done.text, text);
    assert_eq!(done, m.chat(request()).await.unwrap());

    // A failing call streams just its error.
    let failing = model(json!({"fail_first": 1, "fail_kind": "rate_limit"}));
    let events: Vec<_> = failing.chat_stream(request()).collect().await;
    assert_eq!(events.len(), 1);
    assert!(matches!(
        &events[0],
        Err(e) if e.kind == ModelErrorKind::RateLimited { retry_after: None }
    ));
    // An empty reply still ends with Done.
    let empty = model(json!({"response": ""}));
    let events: Vec<_> = empty.chat_stream(request()).collect().await;
    assert!(matches!(&events[..], [Ok(StreamEvent::Done(r))] if r.text.is_empty()));
}

#[test]
fn simulated_models_are_priced_like_real_ones() {
    let table = PriceTable::builtin();
    for (real, name) in [
        ("openai", "gpt-4o-mini"),
        ("openai", "gpt-4o"),
        ("openai", "gpt-4.1-mini"),
        ("anthropic", "claude-3-5-haiku"),
        ("anthropic", "claude-sonnet-4"),
        ("anthropic", "claude-3-5-sonnet"),
    ] {
        let simulated = table.price("simulated", name).unwrap();
        assert_eq!(Some(simulated), table.price(real, name), "{name}");
    }
    // Dated names find their family, as for the real providers.
    assert!(table.price("simulated", "gpt-4o-mini-2024-07-18").is_some());
    assert!(table.price("simulated", "gpt-5").is_none());
}

#[tokio::test]
async fn a_run_prices_simulated_calls_exactly() {
    let m = Arc::new(model(
        json!({"response": "Paris.", "usage": {"input": 1000, "output": 500}}),
    ));
    let node_model = m.clone();
    let graph = crate::support::ask_graph(
        "simulated",
        node_fn(move |_s, ctx: NodeContext| {
            let m = node_model.clone();
            async move {
                let r = ctx.chat(m.as_ref(), request()).await?;
                let mut update = serde_json::Map::new();
                update.insert("answer".into(), json!(r.text));
                Ok(NodeOutput::update(update))
            }
        }),
    );
    let sink = MemorySink::new();
    let out = graph
        .invoke(JsonState::new(), RunConfig::new().sink(sink.clone()))
        .await
        .unwrap();
    assert_eq!(out.state.get("answer"), Some(&json!("Paris.")));
    // 1000 × $0.15/M + 500 × $0.60/M = $0.00045.
    assert_eq!(out.summary.cost, "0.00045".parse::<Cost>().unwrap());
    assert_eq!(out.summary.usage, TokenUsage::new(1000, 500));
    let step = out.summary.steps_of("ask").next().unwrap();
    assert_eq!(step.provider.as_deref(), Some("simulated"));
    assert_eq!(step.model.as_deref(), Some("gpt-4o-mini"));
    let kinds = sink.kinds();
    assert!(kinds.contains(&"llm.request") && kinds.contains(&"llm.response"));
}

#[tokio::test(start_paused = true)]
async fn a_retry_policy_recovers_from_a_rate_limit() {
    let m = Arc::new(model(json!({
        "response": "recovered",
        "latency_ms": 200,
        "fail_first": 1,
        "fail_kind": "rate_limit",
        "usage": {"input": 10, "output": 2}
    })));
    let node_model = m.clone();
    let graph = GraphBuilder::<JsonState>::new("retry")
        .add_node_with(
            "ask",
            node_fn(move |_s, ctx: NodeContext| {
                let m = node_model.clone();
                async move {
                    let r = ctx.chat(m.as_ref(), request()).await?;
                    let mut update = serde_json::Map::new();
                    update.insert("answer".into(), json!(r.text));
                    update.insert("attempt".into(), json!(ctx.attempt()));
                    Ok(NodeOutput::update(update))
                }
            }),
            NodeConfig::new().retry(
                RetryPolicy::new(3)
                    .initial_delay(Duration::from_millis(500))
                    .jitter(false),
            ),
        )
        .set_entry("ask")
        .set_finish("ask")
        .compile()
        .unwrap();
    let sink = MemorySink::new();
    let out = graph
        .invoke(JsonState::new(), RunConfig::new().sink(sink.clone()))
        .await
        .unwrap();
    assert_eq!(out.state.get("answer"), Some(&json!("recovered")));
    assert_eq!(m.calls(), 2);
    let step = out.summary.steps_of("ask").next().unwrap();
    assert_eq!(step.status, StepStatus::Succeeded);
    assert_eq!(step.attempts, 2);
    assert!(sink.kinds().contains(&"retry"), "{:?}", sink.kinds());
}
