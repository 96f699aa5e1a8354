//! Unit tests of the wire mapping.

use super::*;

#[test]
fn request_options_not_covered_by_the_wire_tests() {
    let mut req = ChatRequest::new("m").user("x");
    req.tool_choice = Some(ToolChoice::Tool("weather".into()));
    req.stop = vec!["END".into()];
    req.top_p = Some(0.9);
    req.response_format = Some(ResponseFormat::JsonObject);
    let body = request_body(&req, false);
    let function = json!({"type": "function", "function": {"name": "weather"}});
    assert_eq!(body["tool_choice"], function);
    assert_eq!(
        (&body["top_p"], &body["stop"]),
        (&json!(0.9), &json!(["END"]))
    );
    assert_eq!(body["response_format"], json!({"type": "json_object"}));
    assert!(body.get("stream").is_none() && body.get("tools").is_none());
    req.response_format = Some(ResponseFormat::Text);
    assert!(request_body(&req, false).get("response_format").is_none());
}

#[test]
fn arguments_and_finish_reasons() {
    assert_eq!(parse_arguments(""), json!({}));
    assert_eq!(parse_arguments("{oops"), json!("{oops"));
    assert_eq!(arguments_string(&json!("{oops")), "{oops");
    assert_eq!(finish_reason(None, true), FinishReason::ToolCalls);
    assert_eq!(finish_reason(None, false), FinishReason::Stop);
    assert_eq!(
        finish_reason(Some("eos"), false),
        FinishReason::Other("eos".into())
    );
}

#[test]
fn error_objects_in_2xx_bodies_are_classified() {
    let status = |body: &str| match parse_completion(body, "m") {
        Err(Problem::Api { status, .. }) => status,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        status(r#"{"error":{"message":"x","type":"rate_limit_exceeded"}}"#),
        429
    );
    assert_eq!(status(r#"{"error":{"message":"x","code":400}}"#), 400);
    assert_eq!(
        status(r#"{"error":{"message":"x","type":"server_error"}}"#),
        500
    );
    for bad in [
        "[1]",
        r#"{"choices":[]}"#,
        r#"{"choices":[{"index":0,"message":7}]}"#,
    ] {
        assert!(
            matches!(parse_completion(bad, "m"), Err(Problem::Malformed(_))),
            "{bad}"
        );
    }
}

#[test]
fn streamed_calls_without_index_are_grouped_by_id() {
    let mut acc = Accumulator::default();
    for data in [
        r#"{"choices":[{"delta":{"tool_calls":[{"id":"a","function":{"name":"f","arguments":"{\"x\":"}}]}}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"1}"}}]}}]}"#,
        r#"{"choices":[{"delta":{"tool_calls":[{"id":"b","function":{"name":"g","arguments":{"y":2}}}]}}]}"#,
    ] {
        assert_eq!(acc.apply(data, false), Ok(None));
    }
    let reply = acc.finish("m");
    let calls: Vec<_> = reply
        .tool_calls
        .iter()
        .map(|c| (&*c.id, &*c.name, &c.arguments))
        .collect();
    assert_eq!(
        calls,
        [("a", "f", &json!({"x": 1})), ("b", "g", &json!({"y": 2}))]
    );
    assert_eq!(
        (reply.finish_reason, &*reply.model),
        (FinishReason::ToolCalls, "m")
    );
}

#[test]
fn base_urls_and_headers() {
    let key = ApiKey::new("sk-abcdef");
    assert_eq!(
        &*OpenAi::with_base(key.clone(), Some(" ".into())).base_url,
        DEFAULT_BASE_URL
    );
    let c = OpenAi::with_base(key.clone(), Some("http://localhost:8000/v1/".into()));
    assert_eq!(c.endpoint(), "http://localhost:8000/v1/chat/completions");
    let c = c.header("X-Gateway-Key", "gw-secret").unwrap();
    let debug = format!("{c:?}");
    assert!(
        debug.contains("x-gateway-key") && !debug.contains("gw-secret"),
        "{debug}"
    );
    assert!(!debug.contains("sk-abcdef"));
    assert!(c.clone().header("bad name", "v").is_err());
    assert!(c.header("x", "bad\nvalue").is_err());
}
