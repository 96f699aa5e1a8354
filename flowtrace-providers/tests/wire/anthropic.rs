//! The Anthropic client against a local mock of the Messages API: request
//! mapping, replies, streaming, error classification, timeouts and keeping
//! the API key secret.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use flowtrace_core::model::{ResponseFormat, ToolCall, ToolChoice, ToolSpec};
use flowtrace_core::trace::MemorySink;
use flowtrace_core::{
    ChatModel, ChatRequest, FinishReason, JsonState, Message, ModelError, ModelErrorKind,
    NodeContext, NodeOutput, RunConfig, StreamEvent, TokenUsage, node_fn,
};
use flowtrace_providers::ApiKey;
use flowtrace_providers::anthropic::Anthropic;
use futures::StreamExt;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const KEY: &str = "sk-ant-test-key-123";
const SECRET: &str = "sk-ant-SECRET-42";

fn client(server: &MockServer) -> Anthropic {
    Anthropic::new(ApiKey::new(KEY)).base_url(server.uri())
}

/// Answers every `POST /v1/messages` carrying the expected headers.
async fn serve(server: &MockServer, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", KEY))
        .and(header("anthropic-version", "2023-06-01"))
        .and(header("content-type", "application/json"))
        .respond_with(response)
        .mount(server)
        .await;
}

async fn sent_body(server: &MockServer) -> Value {
    let requests = server.received_requests().await.unwrap();
    serde_json::from_slice(&requests.last().unwrap().body).unwrap()
}

/// A server-sent event stream from (event name, data) pairs.
fn sse(events: &[Value]) -> ResponseTemplate {
    let body: String = events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect();
    ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")
}

fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

fn message(content: Value, stop_reason: &str, usage: Value) -> Value {
    json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": "claude-sonnet-4-20250514",
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": usage
    })
}

fn message_start(usage: Value) -> Value {
    json!({"type": "message_start", "message": {
        "id": "msg_014p7gG3wDgGV9EUtLvnow3U", "type": "message", "role": "assistant",
        "content": [], "model": "claude-sonnet-4-20250514",
        "stop_reason": null, "stop_sequence": null, "usage": usage}})
}

fn block_start(index: u32, block: Value) -> Value {
    json!({"type": "content_block_start", "index": index, "content_block": block})
}

fn block_delta(index: u32, delta: Value) -> Value {
    json!({"type": "content_block_delta", "index": index, "delta": delta})
}

fn text_delta(index: u32, text: &str) -> Value {
    block_delta(index, json!({"type": "text_delta", "text": text}))
}

fn json_delta(index: u32, part: &str) -> Value {
    block_delta(
        index,
        json!({"type": "input_json_delta", "partial_json": part}),
    )
}

fn block_stop(index: u32) -> Value {
    json!({"type": "content_block_stop", "index": index})
}

fn message_delta(stop_reason: &str, output_tokens: u64) -> Value {
    json!({"type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": output_tokens}})
}

fn weather_tool() -> ToolSpec {
    ToolSpec {
        name: "get_weather".into(),
        description: "Current weather in a city".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    }
}

async fn collect(model: &Anthropic, request: ChatRequest) -> Vec<Result<StreamEvent, ModelError>> {
    model.chat_stream(request).collect().await
}

async fn failure(server: &MockServer, response: ResponseTemplate) -> ModelError {
    serve(server, response).await;
    client(server)
        .chat(ChatRequest::new("claude-sonnet-4").user("hi"))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn text_reply_with_cache_usage_and_the_request_sent() {
    let server = MockServer::start().await;
    let usage = json!({"input_tokens": 50, "cache_creation_input_tokens": 20,
        "cache_read_input_tokens": 100, "output_tokens": 12});
    let content = json!([{"type": "text", "text": "It is "}, {"type": "text", "text": "sunny."}]);
    serve(
        &server,
        ResponseTemplate::new(200).set_body_json(message(content, "end_turn", usage)),
    )
    .await;

    let call = |id: &str, city: &str| ToolCall {
        id: id.into(),
        name: "get_weather".into(),
        arguments: json!({"city": city}),
    };
    let mut request = ChatRequest::new("claude-sonnet-4")
        .system("You are terse.")
        .user("Weather in Paris and Rome?")
        .message(
            Message::assistant("Checking.")
                .with_tool_calls(vec![call("toolu_1", "Paris"), call("toolu_2", "Rome")]),
        )
        .message(Message::tool_result("toolu_1", "18C"))
        .message(Message::tool_result("toolu_2", "24C"))
        .user("Summarise.")
        .temperature(0.2)
        .tool(weather_tool());
    request.top_p = Some(0.9);
    request.stop = vec!["END".into()];
    request.tool_choice = Some(ToolChoice::Required);

    let reply = client(&server).chat(request).await.unwrap();
    assert_eq!(reply.text, "It is sunny.");
    assert_eq!(reply.finish_reason, FinishReason::Stop);
    assert_eq!(reply.model, "claude-sonnet-4-20250514");
    assert!(reply.tool_calls.is_empty());
    assert_eq!(
        reply.usage,
        TokenUsage {
            input_tokens: 170,
            output_tokens: 12,
            cached_input_tokens: 100,
            cache_write_tokens: 20,
        }
    );

    let body = sent_body(&server).await;
    assert_eq!(
        body,
        json!({
            "model": "claude-sonnet-4",
            "max_tokens": 4096,
            "system": "You are terse.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "24C"},
                    {"type": "text", "text": "Summarise."}
                ]}
            ],
            "tools": [{
                "name": "get_weather",
                "description": "Current weather in a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}
            }],
            "tool_choice": {"type": "any"},
            "temperature": 0.2,
            "top_p": 0.9,
            "stop_sequences": ["END"]
        })
    );
}

#[tokio::test]
async fn tool_use_reply_and_explicit_max_tokens() {
    let server = MockServer::start().await;
    let content = json!([
        {"type": "text", "text": "I'll check."},
        {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9",
         "name": "get_weather", "input": {"city": "San Francisco"}}
    ]);
    let usage = json!({"input_tokens": 400, "output_tokens": 60});
    serve(
        &server,
        ResponseTemplate::new(200).set_body_json(message(content, "tool_use", usage)),
    )
    .await;
    let mut request = ChatRequest::new("claude-sonnet-4")
        .user("Weather?")
        .max_tokens(300);
    request.tool_choice = Some(ToolChoice::Tool("get_weather".into()));
    let reply = client(&server)
        .chat(request.tool(weather_tool()))
        .await
        .unwrap();
    assert_eq!(reply.text, "I'll check.");
    assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
    assert_eq!(reply.usage, TokenUsage::new(400, 60));
    assert_eq!(
        reply.tool_calls,
        [ToolCall {
            id: "toolu_01A09q90qw90lq917835lq9".into(),
            name: "get_weather".into(),
            arguments: json!({"city": "San Francisco"}),
        }]
    );
    let body = sent_body(&server).await;
    assert_eq!(body["max_tokens"], 300);
    assert_eq!(
        body["tool_choice"],
        json!({"type": "tool", "name": "get_weather"})
    );
    assert!(body.get("system").is_none() && body.get("temperature").is_none());
}

#[tokio::test]
async fn streamed_reply_yields_deltas_in_order_then_done() {
    let server = MockServer::start().await;
    let start_usage = json!({"input_tokens": 25, "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 40, "output_tokens": 1});
    serve(
        &server,
        sse(&[
            message_start(start_usage),
            block_start(0, json!({"type": "text", "text": ""})),
            json!({"type": "ping"}),
            text_delta(0, "Hello"),
            text_delta(0, ", world"),
            text_delta(0, "!"),
            block_stop(0),
            message_delta("end_turn", 15),
            json!({"type": "message_stop"}),
        ]),
    )
    .await;
    let events = collect(
        &client(&server),
        ChatRequest::new("claude-sonnet-4").user("Hi"),
    )
    .await;
    let events: Vec<StreamEvent> = events.into_iter().map(Result::unwrap).collect();
    assert_eq!(events.len(), 4);
    let deltas: Vec<&StreamEvent> = events[..3].iter().collect();
    assert_eq!(
        deltas,
        [
            &StreamEvent::Delta("Hello".into()),
            &StreamEvent::Delta(", world".into()),
            &StreamEvent::Delta("!".into())
        ]
    );
    let StreamEvent::Done(reply) = &events[3] else {
        panic!("expected Done, got {:?}", events[3])
    };
    assert_eq!(reply.text, "Hello, world!");
    assert_eq!(reply.finish_reason, FinishReason::Stop);
    assert_eq!(reply.model, "claude-sonnet-4-20250514");
    assert_eq!(
        reply.usage,
        TokenUsage {
            input_tokens: 65,
            output_tokens: 15,
            cached_input_tokens: 40,
            cache_write_tokens: 0
        }
    );
    let body = sent_body(&server).await;
    assert_eq!(body["stream"], true);
    assert_eq!(body["max_tokens"], 4096);
}

#[tokio::test]
async fn streamed_tool_use_accumulates_input_json() {
    let server = MockServer::start().await;
    serve(
        &server,
        sse(&[
            message_start(json!({"input_tokens": 472, "output_tokens": 2})),
            block_start(0, json!({"type": "text", "text": ""})),
            text_delta(0, "Let me check."),
            block_stop(0),
            block_start(
                1,
                json!({"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                       "name": "get_weather", "input": {}}),
            ),
            json_delta(1, ""),
            json!({"type": "ping"}),
            json_delta(1, "{\"city\": \"San"),
            json_delta(1, " Francisco\", \"unit\""),
            json_delta(1, ": \"celsius\"}"),
            block_stop(1),
            message_delta("tool_use", 89),
            json!({"type": "message_stop"}),
        ]),
    )
    .await;
    let request = ChatRequest::new("claude-sonnet-4")
        .user("Weather?")
        .tool(weather_tool());
    let events: Vec<StreamEvent> = collect(&client(&server), request)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(events[0], StreamEvent::Delta("Let me check.".into()));
    assert_eq!(events.len(), 2, "input JSON is not text: {events:?}");
    let StreamEvent::Done(reply) = &events[1] else {
        panic!("expected Done")
    };
    assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
    assert_eq!(reply.text, "Let me check.");
    assert_eq!(reply.tool_calls.len(), 1);
    assert_eq!(reply.tool_calls[0].id, "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
    assert_eq!(
        reply.tool_calls[0].arguments,
        json!({"city": "San Francisco", "unit": "celsius"})
    );
    assert_eq!(reply.usage, TokenUsage::new(472, 89));
}

fn structured_request() -> ChatRequest {
    let mut request = ChatRequest::new("claude-sonnet-4").user("Name a city.");
    request.response_format = Some(ResponseFormat::JsonSchema {
        name: "city answer".into(),
        schema: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        strict: true,
    });
    request
}

#[tokio::test]
async fn structured_output_is_a_forced_tool_whose_input_is_the_text() {
    let server = MockServer::start().await;
    let content = json!([{"type": "tool_use", "id": "toolu_9", "name": "city_answer",
        "input": {"city": "Oslo"}}]);
    let usage = json!({"input_tokens": 30, "output_tokens": 9});
    serve(
        &server,
        ResponseTemplate::new(200).set_body_json(message(content, "tool_use", usage)),
    )
    .await;
    let reply = client(&server).chat(structured_request()).await.unwrap();
    assert_eq!(reply.text, r#"{"city":"Oslo"}"#);
    assert!(reply.tool_calls.is_empty());
    assert_eq!(reply.finish_reason, FinishReason::Stop);
    let body = sent_body(&server).await;
    assert_eq!(
        body["tool_choice"],
        json!({"type": "tool", "name": "city_answer"})
    );
    assert_eq!(body["tools"][0]["name"], "city_answer");
    assert_eq!(
        body["tools"][0]["input_schema"]["properties"]["city"]["type"],
        "string"
    );
}

#[tokio::test]
async fn streamed_structured_output_streams_the_json() {
    let server = MockServer::start().await;
    serve(
        &server,
        sse(&[
            message_start(json!({"input_tokens": 30, "output_tokens": 1})),
            block_start(
                0,
                json!({"type": "tool_use", "id": "t", "name": "city_answer", "input": {}}),
            ),
            json_delta(0, "{\"city\": "),
            json_delta(0, "\"Oslo\"}"),
            block_stop(0),
            message_delta("tool_use", 9),
            json!({"type": "message_stop"}),
        ]),
    )
    .await;
    let events: Vec<StreamEvent> = collect(&client(&server), structured_request())
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(events[0], StreamEvent::Delta("{\"city\": ".into()));
    assert_eq!(events[1], StreamEvent::Delta("\"Oslo\"}".into()));
    let StreamEvent::Done(reply) = &events[2] else {
        panic!("expected Done")
    };
    assert_eq!(reply.text, r#"{"city":"Oslo"}"#);
    assert_eq!(reply.finish_reason, FinishReason::Stop);
}

#[tokio::test]
async fn rate_limit_carries_retry_after() {
    let server = MockServer::start().await;
    let response = ResponseTemplate::new(429)
        .insert_header("retry-after", "2")
        .set_body_json(error_body(
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
        ));
    let e = failure(&server, response).await;
    assert_eq!(
        e.kind,
        ModelErrorKind::RateLimited {
            retry_after: Some(Duration::from_secs(2))
        }
    );
    assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
    assert_eq!(
        (e.provider.as_str(), e.model.as_str()),
        ("anthropic", "claude-sonnet-4")
    );
    assert!(e.message.contains("per-minute rate limit"), "{e}");
}

#[tokio::test]
async fn overloaded_529_is_retryable() {
    let server = MockServer::start().await;
    let e = failure(
        &server,
        ResponseTemplate::new(529).set_body_json(error_body("overloaded_error", "Overloaded")),
    )
    .await;
    assert_eq!(e.kind, ModelErrorKind::Overloaded);
    assert!(e.is_retryable());
}

#[tokio::test]
async fn bad_key_is_auth() {
    let server = MockServer::start().await;
    let e = failure(
        &server,
        ResponseTemplate::new(401)
            .set_body_json(error_body("authentication_error", "invalid x-api-key")),
    )
    .await;
    assert_eq!(e.kind, ModelErrorKind::Auth);
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn prompt_too_long_is_context_length() {
    let server = MockServer::start().await;
    let body = error_body(
        "invalid_request_error",
        "prompt is too long: 208310 tokens > 200000 maximum",
    );
    let e = failure(&server, ResponseTemplate::new(400).set_body_json(body)).await;
    assert_eq!(e.kind, ModelErrorKind::ContextLengthExceeded);
    assert!(e.message.contains("208310 tokens"));
}

#[tokio::test]
async fn malformed_bodies_are_malformed_responses() {
    let server = MockServer::start().await;
    let e = failure(
        &server,
        ResponseTemplate::new(200).set_body_raw("{\"content\": [", "application/json"),
    )
    .await;
    assert_eq!(e.kind, ModelErrorKind::MalformedResponse);

    let server = MockServer::start().await;
    let e = failure(
        &server,
        ResponseTemplate::new(200).set_body_json(json!({"type": "message"})),
    )
    .await;
    assert_eq!(e.kind, ModelErrorKind::MalformedResponse);
}

#[tokio::test]
async fn a_stream_cut_before_message_stop_is_an_error() {
    let server = MockServer::start().await;
    serve(
        &server,
        sse(&[
            message_start(json!({"input_tokens": 5, "output_tokens": 1})),
            block_start(0, json!({"type": "text", "text": ""})),
            text_delta(0, "Partial"),
        ]),
    )
    .await;
    let events = collect(
        &client(&server),
        ChatRequest::new("claude-sonnet-4").user("Hi"),
    )
    .await;
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0].as_ref().unwrap(),
        &StreamEvent::Delta("Partial".into())
    );
    let e = events[1].as_ref().unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::MalformedResponse);
    assert!(e.message.contains("message_stop"), "{e}");
}

#[tokio::test]
async fn an_error_event_midway_is_classified() {
    let server = MockServer::start().await;
    serve(
        &server,
        sse(&[
            message_start(json!({"input_tokens": 5, "output_tokens": 1})),
            json!({"type": "ping"}),
            error_body("overloaded_error", "Overloaded"),
        ]),
    )
    .await;
    let events = collect(
        &client(&server),
        ChatRequest::new("claude-sonnet-4").user("Hi"),
    )
    .await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].as_ref().unwrap_err().kind,
        ModelErrorKind::Overloaded
    );
}

#[tokio::test]
async fn streamed_http_errors_are_classified() {
    let server = MockServer::start().await;
    serve(
        &server,
        ResponseTemplate::new(529).set_body_json(error_body("overloaded_error", "Overloaded")),
    )
    .await;
    let events = collect(
        &client(&server),
        ChatRequest::new("claude-sonnet-4").user("Hi"),
    )
    .await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].as_ref().unwrap_err().kind,
        ModelErrorKind::Overloaded
    );
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let server = MockServer::start().await;
    let usage = json!({"input_tokens": 1, "output_tokens": 1});
    let slow = ResponseTemplate::new(200)
        .set_body_json(message(
            json!([{"type": "text", "text": "late"}]),
            "end_turn",
            usage,
        ))
        .set_delay(Duration::from_secs(10));
    serve(&server, slow).await;
    let model = client(&server).timeout(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let e = model
        .chat(ChatRequest::new("claude-sonnet-4").user("Hi"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::Timeout);
    let events = collect(&model, ChatRequest::new("claude-sonnet-4").user("Hi")).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].as_ref().unwrap_err().kind,
        ModelErrorKind::Timeout
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn with_api_key_sends_the_other_key() {
    let server = MockServer::start().await;
    let usage = json!({"input_tokens": 1, "output_tokens": 1});
    Mock::given(method("POST"))
        .and(header("x-api-key", "sk-ant-consumer-7"))
        .and(header("anthropic-version", "2024-01-01"))
        .respond_with(ResponseTemplate::new(200).set_body_json(message(
            json!([{"type": "text", "text": "yours"}]),
            "end_turn",
            usage,
        )))
        .mount(&server)
        .await;
    let shared = client(&server)
        .version("2024-01-01")
        .provider_name("claude-direct");
    let consumer = shared.with_api_key(ApiKey::new("sk-ant-consumer-7"));
    assert_eq!(consumer.provider(), "claude-direct");
    let reply = consumer
        .chat(ChatRequest::new("claude-sonnet-4").user("Hi"))
        .await
        .unwrap();
    assert_eq!(reply.text, "yours");
    // The shared client's key is not the one the mock accepts.
    let e = shared
        .chat(ChatRequest::new("claude-sonnet-4").user("Hi"))
        .await
        .unwrap_err();
    assert_eq!(
        e.kind,
        ModelErrorKind::NotFound,
        "wiremock answers unmatched requests with 404"
    );
}

fn secret_server_response() -> ResponseTemplate {
    let message = format!("invalid x-api-key: {SECRET}");
    ResponseTemplate::new(401)
        .set_body_json(error_body("authentication_error", &message))
        .insert_header("x-echo", SECRET)
}

async fn secret_server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("x-api-key", SECRET))
        .respond_with(secret_server_response())
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn the_key_never_appears_in_errors_or_debug() {
    let server = secret_server().await;
    let model = Anthropic::new(ApiKey::new(SECRET)).base_url(server.uri());
    assert!(!format!("{model:?}").contains(SECRET));
    let e = model
        .chat(ChatRequest::new("claude-sonnet-4").user("Hi"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::Auth);
    assert!(e.message.contains("invalid x-api-key"), "{e}");
    for text in [e.to_string(), format!("{e:?}")] {
        assert!(!text.contains(SECRET), "key leaked: {text}");
    }
    let events = collect(&model, ChatRequest::new("claude-sonnet-4").user("Hi")).await;
    let e = events[0].as_ref().unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::Auth);
    assert!(!e.to_string().contains(SECRET) && !format!("{e:?}").contains(SECRET));
}

#[tokio::test]
async fn the_key_never_appears_in_a_runs_trace_or_error() {
    let server = secret_server().await;
    let model = Arc::new(Anthropic::new(ApiKey::new(SECRET)).base_url(server.uri()));
    let m = model.clone();
    let graph = crate::support::ask_graph(
        "secret",
        node_fn(move |_s, ctx: NodeContext| {
            let m = m.clone();
            async move {
                let request = ChatRequest::new("claude-sonnet-4")
                    .system("Be brief.")
                    .user("Hi");
                ctx.chat(m.as_ref(), request).await?;
                Ok(NodeOutput::none())
            }
        }),
    );
    let sink = MemorySink::new();
    let failure = graph
        .invoke(JsonState::new(), RunConfig::new().sink(sink.clone()))
        .await
        .unwrap_err();
    let kinds = sink.kinds();
    assert!(
        kinds.contains(&"llm.request") && kinds.contains(&"run.finished"),
        "{kinds:?}"
    );
    let lines: Vec<String> = sink.events().iter().map(|e| e.to_json_line()).collect();
    assert!(
        lines.iter().any(|l| l.contains("invalid x-api-key")),
        "the error is traced: {lines:#?}"
    );
    for line in &lines {
        assert!(!line.contains(SECRET), "key leaked into the trace: {line}");
    }
    for text in [
        failure.error.report().to_string(),
        format!("{:?}", failure.error),
        format!("{failure:?}"),
    ] {
        assert!(
            !text.contains(SECRET),
            "key leaked into the run error: {text}"
        );
    }
}
