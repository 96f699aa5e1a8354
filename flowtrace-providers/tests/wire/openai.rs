//! Wire-level tests of the OpenAI Chat Completions client against a mock
//! server answering with bodies shaped like OpenAI's documented responses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::time::Duration;

use flowtrace_core::model::{ResponseFormat, ToolChoice, ToolSpec};
use flowtrace_core::trace::MemorySink;
use flowtrace_core::{
    ChatModel, ChatRequest, ChatResponse, FinishReason, JsonState, Message, ModelError,
    ModelErrorKind, NodeContext, NodeOutput, RunConfig, StreamEvent, TokenUsage, node_fn,
};
use flowtrace_providers::ApiKey;
use flowtrace_providers::openai::OpenAi;
use futures::StreamExt;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "sk-test-SECRET-42";

fn client(server: &MockServer) -> OpenAi {
    OpenAi::new(ApiKey::new(SECRET)).base_url(format!("{}/v1", server.uri()))
}

async fn serve(server: &MockServer, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(response)
        .mount(server)
        .await;
}

fn sse(chunks: &[Value], done: bool) -> String {
    let mut body: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    if done {
        body.push_str("data: [DONE]\n\n");
    }
    body
}

fn sse_response(body: String) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(body, "text/event-stream")
}

fn chunk(delta: Value, finish_reason: Option<&str>) -> Value {
    json!({
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        "usage": null
    })
}

fn usage_chunk() -> Value {
    json!({
        "id": "chatcmpl-123",
        "object": "chat.completion.chunk",
        "created": 1694268190,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_44709d6fcb",
        "choices": [],
        "usage": {
            "prompt_tokens": 20,
            "completion_tokens": 3,
            "total_tokens": 23,
            "prompt_tokens_details": {"cached_tokens": 8, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        }
    })
}

async fn collect(model: &OpenAi, request: ChatRequest) -> Vec<Result<StreamEvent, ModelError>> {
    model.chat_stream(request).collect().await
}

fn error_body(message: &str, kind: &str, code: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

async fn failing_call(response: ResponseTemplate) -> ModelError {
    let server = MockServer::start().await;
    serve(&server, response).await;
    client(&server)
        .chat(ChatRequest::new("gpt-4o-mini").user("hi"))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn text_reply_maps_every_field_and_sends_the_documented_request() {
    let server = MockServer::start().await;
    serve(
        &server,
        ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
            "object": "chat.completion",
            "created": 1741570283,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "{\"city\":\"Paris\"}",
                            "refusal": null, "annotations": []},
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": {
                "prompt_tokens": 1117,
                "completion_tokens": 46,
                "total_tokens": 1163,
                "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                    "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
            },
            "service_tier": "default",
            "system_fingerprint": "fp_fc9f1d7035"
        })),
    )
    .await;
    let mut request = ChatRequest::new("gpt-4o-mini")
        .system("Answer in JSON")
        .user("Where is the Louvre?")
        .max_tokens(100)
        .temperature(0.5)
        .tool(ToolSpec {
            name: "lookup".into(),
            description: "Looks a place up".into(),
            parameters: json!({"type": "object", "properties": {"q": {"type": "string"}}}),
        });
    request.tool_choice = Some(ToolChoice::Auto);
    request.response_format = Some(ResponseFormat::JsonSchema {
        name: "place".into(),
        schema: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        strict: true,
    });
    let openai = client(&server)
        .header("OpenAI-Organization", "org-1")
        .unwrap();
    let reply = openai.chat(request).await.unwrap();
    assert_eq!(
        reply,
        ChatResponse::text(
            "gpt-4o-mini-2024-07-18",
            "{\"city\":\"Paris\"}",
            TokenUsage {
                input_tokens: 1117,
                output_tokens: 46,
                cached_input_tokens: 1024,
                cache_write_tokens: 0,
            },
        )
    );

    let received = server.received_requests().await.unwrap();
    assert_eq!(received.len(), 1);
    let sent = &received[0];
    assert_eq!(
        sent.headers.get("authorization").unwrap().to_str().unwrap(),
        format!("Bearer {SECRET}")
    );
    assert_eq!(
        sent.headers
            .get("openai-organization")
            .unwrap()
            .to_str()
            .unwrap(),
        "org-1"
    );
    let body: Value = sent.body_json().unwrap();
    assert_eq!(
        body,
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Answer in JSON"},
                {"role": "user", "content": "Where is the Louvre?"}
            ],
            "tools": [{"type": "function", "function": {
                "name": "lookup",
                "description": "Looks a place up",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}
            }}],
            "tool_choice": "auto",
            "temperature": 0.5,
            "max_tokens": 100,
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "place",
                "schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                "strict": true
            }}
        })
    );
}

#[tokio::test]
async fn tool_call_reply_and_tool_results_round_trip() {
    let server = MockServer::start().await;
    serve(
        &server,
        ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-abc123",
            "object": "chat.completion",
            "created": 1699896916,
            "model": "gpt-4o-mini",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [
                        {"id": "call_abc123", "type": "function", "function": {
                            "name": "get_current_weather",
                            "arguments": "{\n\"location\": \"Boston, MA\"\n}"}},
                        {"id": "call_def456", "type": "function", "function": {
                            "name": "broken", "arguments": "{\"unterminated"}}
                    ]
                },
                "logprobs": null,
                "finish_reason": "tool_calls"
            }],
            "usage": {"prompt_tokens": 82, "completion_tokens": 17, "total_tokens": 99}
        })),
    )
    .await;
    let openai = client(&server);
    let reply = openai
        .chat(ChatRequest::new("gpt-4o-mini").user("Weather in Boston?"))
        .await
        .unwrap();
    assert_eq!(reply.text, "");
    assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
    assert_eq!(reply.usage, TokenUsage::new(82, 17));
    assert_eq!(reply.tool_calls.len(), 2);
    assert_eq!(reply.tool_calls[0].id, "call_abc123");
    assert_eq!(reply.tool_calls[0].name, "get_current_weather");
    assert_eq!(
        reply.tool_calls[0].arguments,
        json!({"location": "Boston, MA"})
    );
    // Invalid JSON arguments are kept verbatim as a string.
    assert_eq!(reply.tool_calls[1].arguments, json!("{\"unterminated"));

    // Send the calls back with a result: the documented assistant/tool shape.
    let follow_up = ChatRequest::new("gpt-4o-mini")
        .user("Weather in Boston?")
        .message(reply.to_message())
        .message(Message::tool_result("call_abc123", "22 C"));
    openai.chat(follow_up).await.unwrap();
    let received = server.received_requests().await.unwrap();
    let body: Value = received[1].body_json().unwrap();
    assert_eq!(
        body["messages"][1],
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_abc123", "type": "function", "function": {
                "name": "get_current_weather", "arguments": "{\"location\":\"Boston, MA\"}"}},
            {"id": "call_def456", "type": "function", "function": {
                "name": "broken", "arguments": "{\"unterminated"}}
        ]})
    );
    assert_eq!(
        body["messages"][2],
        json!({"role": "tool", "content": "22 C", "tool_call_id": "call_abc123"})
    );
}

#[tokio::test]
async fn streamed_reply_yields_deltas_in_order_then_the_whole_reply() {
    let server = MockServer::start().await;
    let body = sse(
        &[
            chunk(
                json!({"role": "assistant", "content": "", "refusal": null}),
                None,
            ),
            chunk(json!({"content": "Hello"}), None),
            chunk(json!({"content": ", wor"}), None),
            chunk(json!({"content": "ld!"}), None),
            chunk(json!({}), Some("stop")),
            usage_chunk(),
        ],
        true,
    );
    serve(&server, sse_response(body)).await;
    let events = collect(&client(&server), ChatRequest::new("gpt-4o-mini").user("hi")).await;
    let events: Vec<StreamEvent> = events.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        events,
        vec![
            StreamEvent::Delta("Hello".into()),
            StreamEvent::Delta(", wor".into()),
            StreamEvent::Delta("ld!".into()),
            StreamEvent::Done(ChatResponse::text(
                "gpt-4o-mini-2024-07-18",
                "Hello, world!",
                TokenUsage {
                    cached_input_tokens: 8,
                    ..TokenUsage::new(20, 3)
                },
            )),
        ]
    );
    let received = server.received_requests().await.unwrap();
    let sent: Value = received[0].body_json().unwrap();
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
    assert_eq!(
        received[0].headers.get("accept").unwrap().to_str().unwrap(),
        "text/event-stream"
    );
}

#[tokio::test]
async fn streamed_tool_calls_are_accumulated_by_index() {
    let server = MockServer::start().await;
    let call = |index: u64, id: Option<&str>, name: Option<&str>, args: &str| {
        let mut c = json!({"index": index, "function": {"arguments": args}});
        if let Some(id) = id {
            c["id"] = json!(id);
            c["type"] = json!("function");
        }
        if let Some(name) = name {
            c["function"]["name"] = json!(name);
        }
        chunk(json!({"tool_calls": [c]}), None)
    };
    let body = sse(
        &[
            chunk(json!({"role": "assistant", "content": null}), None),
            call(0, Some("call_a"), Some("weather"), ""),
            call(0, None, None, "{\"city\""),
            call(1, Some("call_b"), Some("time"), ""),
            call(0, None, None, ": \"Paris\"}"),
            call(1, None, None, "{}"),
            chunk(json!({}), Some("tool_calls")),
            usage_chunk(),
        ],
        true,
    );
    serve(&server, sse_response(body)).await;
    let events = collect(&client(&server), ChatRequest::new("gpt-4o-mini").user("hi")).await;
    assert_eq!(events.len(), 1, "no text deltas for tool calls: {events:?}");
    let Ok(StreamEvent::Done(reply)) = &events[0] else {
        panic!("expected Done, got {events:?}");
    };
    assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
    assert_eq!(reply.usage.input_tokens, 20);
    let calls: Vec<(&str, &str, &Value)> = reply
        .tool_calls
        .iter()
        .map(|c| (c.id.as_str(), c.name.as_str(), &c.arguments))
        .collect();
    assert_eq!(
        calls,
        [
            ("call_a", "weather", &json!({"city": "Paris"})),
            ("call_b", "time", &json!({}))
        ]
    );
}

#[tokio::test]
async fn rate_limit_honours_retry_after() {
    let e = failing_call(
        ResponseTemplate::new(429)
            .insert_header("Retry-After", "2")
            .set_body_json(error_body(
                "Rate limit reached for gpt-4o-mini",
                "requests",
                "rate_limit_exceeded",
            )),
    )
    .await;
    assert_eq!(
        e.kind,
        ModelErrorKind::RateLimited {
            retry_after: Some(Duration::from_secs(2))
        }
    );
    assert!(e.is_retryable());
    assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
    assert_eq!(e.provider, "openai");
    assert_eq!(e.model, "gpt-4o-mini");
    assert!(e.message.contains("Rate limit reached"), "{}", e.message);
}

#[tokio::test]
async fn server_errors_are_overloaded_and_retryable() {
    let e = failing_call(ResponseTemplate::new(500).set_body_json(error_body(
        "The server had an error while processing your request.",
        "server_error",
        "internal_error",
    )))
    .await;
    assert_eq!(e.kind, ModelErrorKind::Overloaded);
    assert!(e.is_retryable());
}

#[tokio::test]
async fn bad_key_is_auth_and_final() {
    let e = failing_call(ResponseTemplate::new(401).set_body_json(error_body(
        "Incorrect API key provided.",
        "invalid_request_error",
        "invalid_api_key",
    )))
    .await;
    assert_eq!(e.kind, ModelErrorKind::Auth);
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn context_overflow_is_classified() {
    let e = failing_call(ResponseTemplate::new(400).set_body_json(error_body(
        "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.",
        "invalid_request_error",
        "context_length_exceeded",
    )))
    .await;
    assert_eq!(e.kind, ModelErrorKind::ContextLengthExceeded);
    assert!(!e.is_retryable());
    assert!(
        e.message
            .starts_with("HTTP 400: This model's maximum context length")
    );
}

#[tokio::test]
async fn malformed_bodies_are_malformed_responses() {
    let e = failing_call(ResponseTemplate::new(200).set_body_raw(
        "{\"id\": \"chatcmpl-1\", \"choices\": [",
        "application/json",
    ))
    .await;
    assert_eq!(e.kind, ModelErrorKind::MalformedResponse);
    assert!(e.is_retryable());
    let e =
        failing_call(ResponseTemplate::new(200).set_body_raw("<html>proxy</html>", "text/html"))
            .await;
    assert_eq!(e.kind, ModelErrorKind::MalformedResponse);
    let e = failing_call(
        ResponseTemplate::new(200).set_body_json(json!({"object": "list", "data": []})),
    )
    .await;
    assert_eq!(e.kind, ModelErrorKind::MalformedResponse);
}

#[tokio::test]
async fn a_stream_cut_midway_is_an_error() {
    for body in [
        // Whole chunks, but no [DONE].
        sse(
            &[
                chunk(json!({"content": "Hel"}), None),
                chunk(json!({"content": "lo"}), None),
            ],
            false,
        ),
        // Cut inside an event.
        format!(
            "data: {}\n\ndata: {{\"id\":\"chatcmpl-123\",\"choi",
            chunk(json!({"content": "Hel"}), None)
        ),
    ] {
        let server = MockServer::start().await;
        serve(&server, sse_response(body)).await;
        let events = collect(&client(&server), ChatRequest::new("gpt-4o-mini").user("hi")).await;
        assert_eq!(
            events[0].as_ref().unwrap(),
            &StreamEvent::Delta("Hel".into())
        );
        let e = events.last().unwrap().as_ref().unwrap_err();
        assert_eq!(e.kind, ModelErrorKind::MalformedResponse);
        assert_eq!(e.message, "stream ended before [DONE]");
        assert!(!events.iter().any(|e| matches!(e, Ok(StreamEvent::Done(_)))));
    }
}

#[tokio::test]
async fn an_error_inside_the_stream_is_classified() {
    let server = MockServer::start().await;
    let body = format!(
        "data: {}\n\ndata: {}\n\n",
        chunk(json!({"content": "Hi"}), None),
        error_body("The server is overloaded", "server_error", "")
    );
    serve(&server, sse_response(body)).await;
    let events = collect(&client(&server), ChatRequest::new("gpt-4o-mini").user("hi")).await;
    assert_eq!(events.len(), 2);
    let e = events[1].as_ref().unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::Overloaded);
    assert!(e.message.contains("The server is overloaded"));
}

#[tokio::test]
async fn stream_http_errors_are_classified() {
    let server = MockServer::start().await;
    serve(
        &server,
        ResponseTemplate::new(429).insert_header("retry-after-ms", "1500"),
    )
    .await;
    let events = collect(&client(&server), ChatRequest::new("gpt-4o-mini").user("hi")).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].as_ref().unwrap_err().kind,
        ModelErrorKind::RateLimited {
            retry_after: Some(Duration::from_millis(1500))
        }
    );
}

#[tokio::test]
async fn slow_servers_time_out() {
    let server = MockServer::start().await;
    serve(
        &server,
        sse_response(sse(&[usage_chunk()], true)).set_delay(Duration::from_secs(5)),
    )
    .await;
    let openai = client(&server).timeout(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let e = openai
        .chat(ChatRequest::new("gpt-4o-mini").user("hi"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::Timeout);
    assert!(e.is_retryable());
    let events = collect(&openai, ChatRequest::new("gpt-4o-mini").user("hi")).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].as_ref().unwrap_err().kind,
        ModelErrorKind::Timeout
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// A server that sends the headers and one chunk, then goes silent.
fn stalling_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((mut socket, _)) = listener.accept() else {
            return;
        };
        let mut buf = [0u8; 8192];
        let _ = socket.read(&mut buf);
        let event = format!("data: {}\n\n", chunk(json!({"content": "Hel"}), None));
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        let _ = write!(socket, "{head}{:x}\r\n{event}\r\n", event.len());
        let _ = socket.flush();
        std::thread::sleep(Duration::from_secs(10));
    });
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn a_stream_that_stalls_midway_times_out() {
    let openai = OpenAi::new(ApiKey::new(SECRET))
        .base_url(stalling_server())
        .timeout(Duration::from_millis(400));
    let started = std::time::Instant::now();
    let events = collect(&openai, ChatRequest::new("gpt-4o-mini").user("hi")).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        events[0].as_ref().unwrap(),
        &StreamEvent::Delta("Hel".into())
    );
    assert_eq!(
        events[1].as_ref().unwrap_err().kind,
        ModelErrorKind::Timeout
    );
}

#[tokio::test]
async fn openai_compatible_servers_without_usage_or_finish_reason_work() {
    let server = MockServer::start().await;
    // llama-server / Ollama style: no id, no usage, finish_reason null,
    // extra fields.
    serve(
        &server,
        ResponseTemplate::new(200).set_body_json(json!({
            "object": "chat.completion",
            "created": 1,
            "model": "llama3.2",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi!",
                         "reasoning_content": null}, "finish_reason": null}],
            "timings": {"predicted_ms": 12.5}
        })),
    )
    .await;
    let local = OpenAi::new(ApiKey::new(""))
        .base_url(format!("{}/v1/", server.uri()))
        .provider_name("local");
    assert_eq!(local.provider(), "local");
    let reply = local
        .chat(ChatRequest::new("llama3.2").user("hi"))
        .await
        .unwrap();
    assert_eq!(reply.text, "Hi!");
    assert_eq!(reply.usage, TokenUsage::default());
    assert_eq!(reply.finish_reason, FinishReason::Stop);
    let received = server.received_requests().await.unwrap();
    assert!(
        received[0].headers.get("authorization").is_none(),
        "an empty key is not sent"
    );

    // A compatible stream: no ids, usage only in a last chunk with
    // `choices: null`.
    let server = MockServer::start().await;
    let body = format!(
        "data: {}\n\ndata: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
        json!({"choices": [{"delta": {"content": "Hi"}, "finish_reason": null}]}),
        json!({"choices": [{"delta": {"content": "!"}, "finish_reason": "stop"}], "model": "qwen"}),
        json!({"choices": null, "usage": {"prompt_tokens": 5, "completion_tokens": 2}})
    );
    serve(&server, sse_response(body)).await;
    let local = local.base_url(format!("{}/v1", server.uri()));
    let events = collect(&local, ChatRequest::new("qwen2.5").user("hi")).await;
    let Some(Ok(StreamEvent::Done(reply))) = events.last() else {
        panic!("{events:?}");
    };
    assert_eq!((reply.text.as_str(), reply.model.as_str()), ("Hi!", "qwen"));
    assert_eq!(reply.usage, TokenUsage::new(5, 2));
}

#[tokio::test]
async fn a_server_ignoring_stream_true_still_streams() {
    let server = MockServer::start().await;
    serve(
        &server,
        ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"},
                         "finish_reason": "length"}]
        })),
    )
    .await;
    let events = collect(&client(&server), ChatRequest::new("m").user("hi")).await;
    assert_eq!(
        events[0].as_ref().unwrap(),
        &StreamEvent::Delta("whole".into())
    );
    let Ok(StreamEvent::Done(reply)) = &events[1] else {
        panic!("{events:?}");
    };
    assert_eq!(
        (reply.finish_reason.clone(), reply.model.as_str()),
        (FinishReason::Length, "m")
    );
}

#[tokio::test]
async fn with_api_key_uses_the_consumers_key() {
    let server = MockServer::start().await;
    serve(
        &server,
        ResponseTemplate::new(401).set_body_json(error_body("no", "x", "y")),
    )
    .await;
    let shared = client(&server).timeout(Duration::from_secs(7));
    let theirs = shared.with_api_key(ApiKey::new("sk-consumer-key"));
    let _ = theirs.chat(ChatRequest::new("m").user("hi")).await;
    let received = server.received_requests().await.unwrap();
    assert_eq!(
        received[0]
            .headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap(),
        "Bearer sk-consumer-key"
    );
}

fn echoing_401() -> ResponseTemplate {
    ResponseTemplate::new(401).set_body_json(error_body(
        &format!(
            "Incorrect API key provided: {SECRET}. You can find your API key at https://platform.openai.com/account/api-keys."
        ),
        "invalid_request_error",
        "invalid_api_key",
    ))
}

#[tokio::test]
async fn the_key_never_leaks_into_errors_or_debug_output() {
    let server = MockServer::start().await;
    serve(&server, echoing_401()).await;
    let openai = client(&server);
    let debug = format!("{openai:?}");
    assert!(!debug.contains(SECRET), "{debug}");
    let e = openai
        .chat(ChatRequest::new("gpt-4o-mini").user("hi"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::Auth);
    for text in [e.to_string(), format!("{e:?}"), e.message.clone()] {
        assert!(!text.contains(SECRET), "{text}");
    }
    assert!(
        e.message.contains("Incorrect API key provided: [redacted]"),
        "{}",
        e.message
    );
    let events = collect(&openai, ChatRequest::new("gpt-4o-mini").user("hi")).await;
    let e = events[0].as_ref().unwrap_err();
    assert!(!format!("{e} {e:?}").contains(SECRET));
    // The key did go over the wire, where it belongs.
    let received = server.received_requests().await.unwrap();
    assert_eq!(
        received[0]
            .headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap(),
        format!("Bearer {SECRET}")
    );
}

fn ask_graph(openai: OpenAi) -> flowtrace_core::CompiledGraph<JsonState> {
    crate::support::ask_graph(
        "ask",
        node_fn(move |_state, ctx: NodeContext| {
            let openai = openai.clone();
            async move {
                ctx.chat(&openai, ChatRequest::new("gpt-4o-mini").user("hi"))
                    .await?;
                Ok(NodeOutput::none())
            }
        }),
    )
}

#[tokio::test]
async fn the_key_never_leaks_into_a_runs_trace_or_error() {
    let server = MockServer::start().await;
    serve(&server, echoing_401()).await;
    let sink = MemorySink::new();
    let failure = ask_graph(client(&server))
        .invoke(JsonState::new(), RunConfig::new().sink(sink.clone()))
        .await
        .unwrap_err();
    for text in [
        failure.error.report().to_string(),
        format!("{:?}", failure.error),
        format!("{:?}", failure.summary),
    ] {
        assert!(!text.contains(SECRET), "{text}");
    }
    assert!(
        failure.error.report().to_string().contains("[redacted]"),
        "{}",
        failure.error.report()
    );
    let events = sink.events();
    assert!(sink.kinds().contains(&"llm.request"));
    assert!(sink.kinds().contains(&"error"));
    for event in &events {
        let line = event.to_json_line();
        assert!(!line.contains(SECRET), "{line}");
    }
    assert!(
        events.iter().any(|e| e
            .to_json_line()
            .contains("Incorrect API key provided: [redacted]")),
        "the scrubbed provider message is in the trace"
    );

    // A successful run is priced from the reported usage.
    let server = MockServer::start().await;
    serve(
        &server,
        ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 3, "total_tokens": 1003}
        })),
    )
    .await;
    let sink = MemorySink::new();
    let out = ask_graph(client(&server))
        .invoke(JsonState::new(), RunConfig::new().sink(sink.clone()))
        .await
        .unwrap();
    assert_eq!(out.summary.usage, TokenUsage::new(1000, 3));
    assert_eq!(out.summary.cost, "0.0001518".parse().unwrap());
    for event in sink.events() {
        assert!(!event.to_json_line().contains(SECRET));
    }
}
