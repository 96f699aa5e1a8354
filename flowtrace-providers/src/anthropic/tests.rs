//! Unit tests of the wire mapping.

#![allow(clippy::unwrap_used)]
use super::*;
use flowtrace_core::Message;

fn event(data: Value) -> Event {
    let event = data["type"].as_str().unwrap_or_default().to_string();
    Event {
        event,
        data: data.to_string(),
        id: String::new(),
        retry: None,
    }
}

fn body(request: &ChatRequest) -> (Value, Option<String>) {
    let (body, structured) = build_body(request, 4096, false);
    (serde_json::to_value(body).unwrap(), structured)
}

#[test]
fn tool_results_come_first_and_arguments_are_objects() {
    let call = ToolCall {
        id: "t1".into(),
        name: "add".into(),
        arguments: json!("{\"a\":1}"),
    };
    let request = ChatRequest::new("m")
        .message(Message::assistant("").with_tool_calls(vec![call]))
        .user("first")
        .message(Message::tool_result("t1", "r"));
    let (body, _) = body(&request);
    assert_eq!(body["messages"][0]["content"][0]["input"], json!({"a": 1}));
    assert_eq!(body["messages"][1]["content"][0]["type"], "tool_result");
    assert_eq!(body["messages"][1]["content"][1]["type"], "text");
    assert!(body.get("stream").is_none() && body.get("stop_sequences").is_none());
}

#[test]
fn stop_reasons_and_unknown_blocks() {
    for (reason, expected) in [
        ("end_turn", FinishReason::Stop),
        ("stop_sequence", FinishReason::Stop),
        ("max_tokens", FinishReason::Length),
        ("tool_use", FinishReason::ToolCalls),
        ("refusal", FinishReason::ContentFilter),
        ("pause_turn", FinishReason::Other("pause_turn".into())),
    ] {
        let wire: WireResponse = serde_json::from_value(json!({
            "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "ok"}],
            "stop_reason": reason,
            "usage": {"input_tokens": 1, "output_tokens": 1, "cache_read_input_tokens": null}
        }))
        .unwrap();
        let reply = wire.into_response("asked", None);
        assert_eq!(
            (reply.finish_reason, reply.text, reply.model),
            (expected, "ok".into(), "asked".into())
        );
    }
}

#[test]
fn stream_error_events_are_classified() {
    let mut acc = StreamAccumulator::new("m", None);
    let error = json!({"type": "overloaded_error", "message": "Overloaded"});
    let (kind, message) = acc
        .handle(&event(json!({"type": "error", "error": error})))
        .unwrap_err();
    assert_eq!(kind, ModelErrorKind::Overloaded);
    assert!(message.contains("Overloaded"));
    let (kind, _) = acc.handle(&event(json!("not an object"))).unwrap_err();
    assert_eq!(kind, ModelErrorKind::MalformedResponse);
}
