//! Tool-call replies in each vendor's exact wire format, served byte for
//! byte from `fixtures/` (pretty-printed JSON bodies; SSE streams with
//! `event:` lines, pings, parallel calls and arguments split mid-token),
//! through the real HTTP clients; then the follow-up request carrying the
//! tool results, as each vendor documents it.

use flowtrace_core::model::ToolCall;
use flowtrace_core::{
    ChatModel, ChatRequest, ChatResponse, FinishReason, Message, StreamEvent, TokenUsage,
};
use flowtrace_providers::ApiKey;
use futures::StreamExt;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A fixture's bytes, read at compile time.
macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("fixtures/", $name))
    };
}

async fn serve(route: &str, body: &'static str, content_type: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(route.to_string()))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, content_type))
        .mount(&server)
        .await;
    server
}

/// The reply a stream ends with, and the text deltas before it.
async fn streamed(model: &impl ChatModel, request: ChatRequest) -> (Vec<String>, ChatResponse) {
    let events: Vec<StreamEvent> = model
        .chat_stream(request)
        .map(Result::unwrap)
        .collect()
        .await;
    let mut deltas = Vec::new();
    let mut done = None;
    for event in events {
        match event {
            StreamEvent::Delta(text) => deltas.push(text),
            StreamEvent::Done(reply) => done = Some(reply),
            other => panic!("unexpected event {other:?}"),
        }
    }
    (deltas, done.expect("the stream ends with Done"))
}

fn calls(reply: &ChatResponse) -> Vec<(&str, &str, &Value)> {
    reply
        .tool_calls
        .iter()
        .map(|c| (c.id.as_str(), c.name.as_str(), &c.arguments))
        .collect()
}

async fn last_body(server: &MockServer) -> Value {
    let received = server.received_requests().await.unwrap();
    received.last().unwrap().body_json().unwrap()
}

fn follow_up(model: &str, reply: &ChatResponse, results: &[(&str, &str)]) -> ChatRequest {
    let mut request = ChatRequest::new(model)
        .user("Weather and time in Paris?")
        .message(reply.to_message());
    for (id, content) in results {
        request = request.message(Message::tool_result(*id, *content));
    }
    request
}

// ===== OpenAI =====

#[cfg(feature = "openai")]
mod openai {
    use super::*;
    use flowtrace_providers::openai::OpenAi;

    fn client(server: &MockServer) -> OpenAi {
        OpenAi::new(ApiKey::new("sk-test-recorded")).base_url(format!("{}/v1", server.uri()))
    }

    #[tokio::test]
    async fn parallel_tool_calls_then_tool_messages() {
        let server = serve(
            "/v1/chat/completions",
            fixture!("openai_tool_calls.json"),
            "application/json",
        )
        .await;
        let model = client(&server);
        let reply = model
            .chat(ChatRequest::new("gpt-4o-mini").user("Weather and time in Paris?"))
            .await
            .unwrap();
        assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
        assert_eq!(reply.text, "");
        assert_eq!(reply.model, "gpt-4o-mini-2024-07-18");
        assert_eq!(
            reply.usage,
            TokenUsage {
                cached_input_tokens: 64,
                ..TokenUsage::new(112, 51)
            }
        );
        assert_eq!(
            calls(&reply),
            [
                (
                    "call_8nFJ0b9rXqMf2WkYpZt3uLcA",
                    "get_weather",
                    &json!({"city": "Paris", "unit": "celsius"})
                ),
                (
                    "call_Qe4vR7sT1yHn6KdLm0PwXoBj",
                    "get_time",
                    &json!({"timezone": "Europe/Paris"})
                ),
            ]
        );

        let request = follow_up(
            "gpt-4o-mini",
            &reply,
            &[
                ("call_8nFJ0b9rXqMf2WkYpZt3uLcA", "18 C, cloudy"),
                ("call_Qe4vR7sT1yHn6KdLm0PwXoBj", "14:05"),
            ],
        );
        model.chat(request).await.unwrap();
        let body = last_body(&server).await;
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": "Weather and time in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_8nFJ0b9rXqMf2WkYpZt3uLcA", "type": "function", "function": {
                        "name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"celsius\"}"}},
                    {"id": "call_Qe4vR7sT1yHn6KdLm0PwXoBj", "type": "function", "function": {
                        "name": "get_time", "arguments": "{\"timezone\":\"Europe/Paris\"}"}}
                ]},
                {"role": "tool", "content": "18 C, cloudy", "tool_call_id": "call_8nFJ0b9rXqMf2WkYpZt3uLcA"},
                {"role": "tool", "content": "14:05", "tool_call_id": "call_Qe4vR7sT1yHn6KdLm0PwXoBj"}
            ])
        );
    }

    #[tokio::test]
    async fn streamed_arguments_split_across_deltas_are_joined() {
        let server = serve(
            "/v1/chat/completions",
            fixture!("openai_tool_calls.sse"),
            "text/event-stream; charset=utf-8",
        )
        .await;
        let model = client(&server);
        let (deltas, reply) = streamed(
            &model,
            ChatRequest::new("gpt-4o-mini").user("Weather and time in Paris?"),
        )
        .await;
        assert!(deltas.is_empty(), "arguments are not text: {deltas:?}");
        assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
        assert_eq!(reply.usage, TokenUsage::new(112, 51));
        assert_eq!(
            calls(&reply),
            [
                (
                    "call_Xb2kP9mQ4rT7vW1yZ3aC5dEf",
                    "get_weather",
                    &json!({"city": "Paris", "unit": "celsius"})
                ),
                (
                    "call_Hn8sL0aF6gJ2kM4pR9tV1wXz",
                    "get_time",
                    &json!({"timezone": "Europe/Paris"})
                ),
            ]
        );

        // The follow-up, streamed too, carries the results as tool messages.
        let request = follow_up(
            "gpt-4o-mini",
            &reply,
            &[
                ("call_Xb2kP9mQ4rT7vW1yZ3aC5dEf", "18 C"),
                ("call_Hn8sL0aF6gJ2kM4pR9tV1wXz", "14:05"),
            ],
        );
        streamed(&model, request).await;
        let body = last_body(&server).await;
        assert_eq!(body["stream"], true);
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 4);
        assert_eq!(
            messages[1]["tool_calls"][0]["function"],
            json!({"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"unit\":\"celsius\"}"})
        );
        assert_eq!(
            messages[3],
            json!({"role": "tool", "content": "14:05", "tool_call_id": "call_Hn8sL0aF6gJ2kM4pR9tV1wXz"})
        );
    }
}

// ===== Anthropic =====

#[cfg(feature = "anthropic")]
mod anthropic {
    use super::*;
    use flowtrace_providers::anthropic::Anthropic;

    fn client(server: &MockServer) -> Anthropic {
        Anthropic::new(ApiKey::new("sk-ant-test-recorded")).base_url(server.uri())
    }

    /// The assistant turn and the tool results, as Anthropic documents them.
    fn expected_messages(text: &str, calls: &[ToolCall], results: &[(&str, &str)]) -> Value {
        let mut assistant = vec![json!({"type": "text", "text": text})];
        assistant.extend(calls.iter().map(
            |c| json!({"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}),
        ));
        let user: Vec<Value> = results
            .iter()
            .map(|(id, content)| json!({"type": "tool_result", "tool_use_id": id, "content": content}))
            .collect();
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Weather and time in Paris?"}]},
            {"role": "assistant", "content": assistant},
            {"role": "user", "content": user}
        ])
    }

    #[tokio::test]
    async fn text_and_parallel_tool_use_blocks_then_tool_results() {
        let server = serve(
            "/v1/messages",
            fixture!("anthropic_tool_use.json"),
            "application/json",
        )
        .await;
        let model = client(&server);
        let reply = model
            .chat(ChatRequest::new("claude-sonnet-4").user("Weather and time in Paris?"))
            .await
            .unwrap();
        assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
        assert_eq!(
            reply.text,
            "I'll look up the weather and the local time in Paris."
        );
        assert_eq!(reply.model, "claude-sonnet-4-20250514");
        // Input counts the uncached, cache-written and cache-read tokens.
        assert_eq!(
            reply.usage,
            TokenUsage {
                input_tokens: 425 + 1024,
                output_tokens: 112,
                cached_input_tokens: 1024,
                cache_write_tokens: 0,
            }
        );
        assert_eq!(
            calls(&reply),
            [
                (
                    "toolu_01A09q90qw90lq917835lq9",
                    "get_weather",
                    &json!({"city": "Paris", "unit": "celsius"})
                ),
                (
                    "toolu_01CkqRSn5yXkVN1tgp9nJ3Ma",
                    "get_time",
                    &json!({"timezone": "Europe/Paris"})
                ),
            ]
        );

        let results = [
            ("toolu_01A09q90qw90lq917835lq9", "18 C, cloudy"),
            ("toolu_01CkqRSn5yXkVN1tgp9nJ3Ma", "14:05"),
        ];
        model
            .chat(follow_up("claude-sonnet-4", &reply, &results))
            .await
            .unwrap();
        let body = last_body(&server).await;
        assert_eq!(
            body["messages"],
            expected_messages(&reply.text, &reply.tool_calls, &results)
        );
    }

    #[tokio::test]
    async fn streamed_input_json_deltas_are_joined_per_block() {
        let server = serve(
            "/v1/messages",
            fixture!("anthropic_tool_use.sse"),
            "text/event-stream; charset=utf-8",
        )
        .await;
        let model = client(&server);
        let (deltas, reply) = streamed(
            &model,
            ChatRequest::new("claude-sonnet-4").user("Weather and time in Paris?"),
        )
        .await;
        assert_eq!(deltas, ["Okay", ", let me check the weather", " in Paris."]);
        assert_eq!(reply.text, "Okay, let me check the weather in Paris.");
        assert_eq!(reply.finish_reason, FinishReason::ToolCalls);
        assert_eq!(reply.usage, TokenUsage::new(472, 89));
        assert_eq!(
            calls(&reply),
            [
                (
                    "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                    "get_weather",
                    &json!({"city": "Paris", "unit": "celsius"})
                ),
                (
                    "toolu_01VxQ4hc8tq5HkNAFMtxbK2J",
                    "get_time",
                    &json!({"timezone": "Europe/Paris"})
                ),
            ]
        );

        let results = [
            ("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "18 C"),
            ("toolu_01VxQ4hc8tq5HkNAFMtxbK2J", "14:05"),
        ];
        streamed(&model, follow_up("claude-sonnet-4", &reply, &results)).await;
        let body = last_body(&server).await;
        assert_eq!(body["stream"], true);
        assert_eq!(
            body["messages"],
            expected_messages(&reply.text, &reply.tool_calls, &results)
        );
    }
}
