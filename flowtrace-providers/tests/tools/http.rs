//! `http_request` against real HTTP servers on 127.0.0.1.

use std::time::{Duration, Instant};

use flowtrace_core::tool::ToolErrorKind;
use flowtrace_core::{Tool, ToolError, ToolSafety};
use flowtrace_providers::tools::{HttpRequest, HttpRequestConfigError};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{header, header_exists, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// `127.0.0.1:<port>` of a server, as an allowlist host pattern.
fn host_of(server: &MockServer) -> String {
    server.address().to_string()
}

async fn call_err(tool: &HttpRequest, args: Value) -> ToolError {
    match tool.call(args).await {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn an_empty_allowlist_reaches_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("hi"))
        .mount(&server)
        .await;
    let tool = HttpRequest::new();
    let err = call_err(&tool, json!({"url": format!("{}/x", server.uri())})).await;
    assert_eq!(err.kind(), ToolErrorKind::PermissionDenied);
    assert!(err.message.contains("\"127.0.0.1\""), "{}", err.message);
    assert!(!err.is_retryable());
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_allowed_host_answers_with_status_filtered_headers_and_json_or_text() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/items"))
        .and(header("accept", "application/json"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("set-cookie", "session=abc")
                .insert_header("x-internal", "1")
                .insert_header("etag", "\"v1\"")
                .set_body_raw(r#"{"items": [1, 2]}"#, "application/json; charset=utf-8"),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/echo"))
        .and(header("content-type", "application/json"))
        .respond_with(|req: &wiremock::Request| {
            ResponseTemplate::new(201).set_body_raw(req.body.clone(), "text/plain")
        })
        .mount(&server)
        .await;
    let tool = HttpRequest::new().allow(&host_of(&server)).unwrap();
    assert_eq!(tool.safety(), ToolSafety::Dangerous);
    let out = tool
        .call(json!({
            "url": format!("{}/items", server.uri()),
            "headers": {"accept": "application/json"}
        }))
        .await
        .unwrap();
    assert_eq!(out["status"], 200);
    assert_eq!(out["body"], json!({"items": [1, 2]}));
    assert_eq!(out["headers"]["etag"], "\"v1\"");
    assert_eq!(
        out["headers"]["content-type"],
        "application/json; charset=utf-8"
    );
    assert!(out["headers"].get("set-cookie").is_none());
    assert!(out["headers"].get("x-internal").is_none());

    let out = tool
        .call(json!({
            "method": "post",
            "url": format!("{}/echo", server.uri()),
            "body": {"a": 1}
        }))
        .await
        .unwrap();
    assert_eq!(out["status"], 201);
    assert_eq!(out["body"], json!(r#"{"a":1}"#));

    // Any status is a result, not an error.
    let out = tool
        .call(json!({"url": format!("{}/missing", server.uri())}))
        .await
        .unwrap();
    assert_eq!(out["status"], 404);
}

#[tokio::test]
async fn another_host_or_port_is_denied_without_connecting() {
    let allowed = MockServer::start().await;
    let other = MockServer::start().await;
    let tool = HttpRequest::new()
        .allow(&format!("http://{}", host_of(&allowed)))
        .unwrap();
    let err = call_err(&tool, json!({"url": format!("{}/", other.uri())})).await;
    assert_eq!(err.kind(), ToolErrorKind::PermissionDenied);
    assert!(
        err.message
            .contains(&format!(":{}", other.address().port())),
        "{}",
        err.message
    );
    // Same host and port over https is another origin.
    let https = format!("https://{}/", host_of(&allowed));
    let err = call_err(&tool, json!({ "url": https })).await;
    assert_eq!(err.kind(), ToolErrorKind::PermissionDenied);
    let err = call_err(&tool, json!({"url": "http://localhost/"})).await;
    assert_eq!(err.kind(), ToolErrorKind::PermissionDenied);
    assert!(err.message.contains("\"localhost\""));
    assert!(other.received_requests().await.unwrap().is_empty());
    assert!(allowed.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn redirects_are_followed_only_to_allowed_hosts() {
    let a = MockServer::start().await;
    let b = MockServer::start().await;
    Mock::given(path("/to-b"))
        .respond_with(
            ResponseTemplate::new(302).insert_header("location", format!("{}/landing", b.uri())),
        )
        .mount(&a)
        .await;
    Mock::given(path("/to-self"))
        .respond_with(ResponseTemplate::new(303).insert_header("location", "/landing"))
        .mount(&a)
        .await;
    Mock::given(method("GET"))
        .and(path("/landing"))
        .respond_with(ResponseTemplate::new(200).set_body_string("landed"))
        .mount(&a)
        .await;
    Mock::given(path("/landing"))
        .respond_with(ResponseTemplate::new(200).set_body_string("landed on b"))
        .mount(&b)
        .await;
    Mock::given(path("/loop"))
        .respond_with(ResponseTemplate::new(307).insert_header("location", "/loop"))
        .mount(&a)
        .await;

    let tool = HttpRequest::new().allow(&host_of(&a)).unwrap();
    let err = call_err(&tool, json!({"url": format!("{}/to-b", a.uri())})).await;
    assert_eq!(err.kind(), ToolErrorKind::PermissionDenied);
    assert!(err.message.contains("redirected"), "{}", err.message);
    assert!(
        err.message.contains(&b.address().port().to_string()),
        "{}",
        err.message
    );
    assert!(b.received_requests().await.unwrap().is_empty());

    // A 303 after a POST continues as a GET, on the allowed origin.
    let out = tool
        .call(json!({"method": "POST", "url": format!("{}/to-self", a.uri()), "body": "x"}))
        .await
        .unwrap();
    assert_eq!(out["status"], 200);
    assert_eq!(out["body"], "landed");
    assert_eq!(out["url"], format!("{}/landing", a.uri()));

    let err = call_err(&tool, json!({"url": format!("{}/loop", a.uri())})).await;
    assert_eq!(err.kind(), ToolErrorKind::LimitExceeded);
    assert_eq!(
        a.received_requests()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.url.path() == "/loop")
            .count(),
        HttpRequest::MAX_REDIRECTS + 1
    );

    // With b allowed too, the redirect is followed.
    let tool = tool.allow(&host_of(&b)).unwrap();
    let out = tool
        .call(json!({"url": format!("{}/to-b", a.uri())}))
        .await
        .unwrap();
    assert_eq!(out["body"], "landed on b");
}

#[tokio::test]
async fn credentials_go_only_to_their_origin_and_never_into_the_result() {
    const KEY: &str = "sk-test-4f2a9c";
    let a = MockServer::start().await;
    let b = MockServer::start().await;
    Mock::given(path("/echo"))
        .and(header("x-api-key", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            format!(r#"{{"you sent": "{KEY}", "{KEY}": true}}"#),
            "application/json",
        ))
        .mount(&a)
        .await;
    Mock::given(path("/to-b"))
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("location", format!("{}/plain?k={KEY}", b.uri())),
        )
        .mount(&a)
        .await;
    Mock::given(path("/plain"))
        .respond_with(ResponseTemplate::new(200).set_body_string("b here"))
        .mount(&b)
        .await;
    let tool = HttpRequest::new()
        .allow(&host_of(&a))
        .unwrap()
        .allow(&host_of(&b))
        .unwrap()
        .credential(&a.uri(), "x-api-key", KEY)
        .unwrap();
    assert!(!format!("{tool:?}").contains(KEY));

    let out = tool
        .call(json!({"url": format!("{}/echo", a.uri())}))
        .await
        .unwrap();
    assert_eq!(out["status"], 200, "{out}");
    assert!(!out.to_string().contains(KEY), "{out}");
    assert_eq!(out["body"]["you sent"], "[redacted]");
    assert_eq!(out["body"]["[redacted]"], true);

    // The redirect to b carries no credential of a's.
    let out = tool
        .call(json!({"url": format!("{}/to-b", a.uri())}))
        .await
        .unwrap();
    assert_eq!(out["body"], "b here");
    assert!(!out.to_string().contains(KEY), "{out}");
    let to_b = b.received_requests().await.unwrap();
    assert_eq!(to_b.len(), 1);
    assert!(to_b[0].headers.get("x-api-key").is_none());

    // Direct requests to b carry none either.
    Mock::given(header_exists("x-api-key"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&b)
        .await;
    let out = tool
        .call(json!({"url": format!("{}/plain", b.uri())}))
        .await
        .unwrap();
    assert_eq!(out["status"], 200);

    // The model cannot set (override) the credential header for a.
    let before = a.received_requests().await.unwrap().len();
    let err = call_err(
        &tool,
        json!({"url": format!("{}/echo", a.uri()), "headers": {"X-Api-Key": "mine"}}),
    )
    .await;
    assert_eq!(err.kind(), ToolErrorKind::PermissionDenied);
    assert!(err.message.contains("x-api-key"), "{}", err.message);
    assert_eq!(a.received_requests().await.unwrap().len(), before);
}

/// A server that answers every connection with a chunked body of
/// `chunks` × 16 KiB (no content-length), then closes.
async fn chunked_server(chunks: usize) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\
                            transfer-encoding: chunked\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("4000\r\n{}\r\n", "a".repeat(0x4000));
                for _ in 0..chunks {
                    if socket.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
                let _ = socket.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn the_response_size_limit_stops_reading() {
    // Declared too large: refused from the content-length.
    let server = MockServer::start().await;
    Mock::given(path("/big"))
        .respond_with(ResponseTemplate::new(200).set_body_string("x".repeat(5_000)))
        .mount(&server)
        .await;
    let tool = HttpRequest::new()
        .allow(&host_of(&server))
        .unwrap()
        .max_response_bytes(4_096);
    let err = call_err(&tool, json!({"url": format!("{}/big", server.uri())})).await;
    assert_eq!(err.kind(), ToolErrorKind::LimitExceeded);
    assert!(err.message.contains("4096"), "{}", err.message);
    // HEAD reads no body, whatever length the resource has.
    let out = tool
        .call(json!({"method": "HEAD", "url": format!("{}/big", server.uri())}))
        .await
        .unwrap();
    assert_eq!(out["status"], 200);
    assert_eq!(out["body"], "");

    // Streamed without a length: 640 MiB offered, reading stops past 64 KiB.
    let addr = chunked_server(40_960).await;
    let tool = HttpRequest::new()
        .allow(&addr.to_string())
        .unwrap()
        .max_response_bytes(64 * 1024);
    let started = Instant::now();
    let err = call_err(&tool, json!({"url": format!("http://{addr}/")})).await;
    assert_eq!(err.kind(), ToolErrorKind::LimitExceeded);
    assert!(err.message.contains("65536"), "{}", err.message);
    assert!(started.elapsed() < Duration::from_secs(10));

    // Within the limit it is read whole.
    let addr = chunked_server(2).await;
    let tool = HttpRequest::new().allow(&addr.to_string()).unwrap();
    let out = tool
        .call(json!({"url": format!("http://{addr}/")}))
        .await
        .unwrap();
    assert_eq!(out["body"].as_str().unwrap().len(), 2 * 0x4000);
}

#[tokio::test]
async fn a_slow_server_times_out_and_only_idempotent_methods_are_retryable() {
    let server = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("late")
                .set_delay(Duration::from_secs(10)),
        )
        .mount(&server)
        .await;
    let tool = HttpRequest::new()
        .allow(&host_of(&server))
        .unwrap()
        .timeout(Duration::from_millis(200));
    let started = Instant::now();
    let err = call_err(&tool, json!({"url": format!("{}/slow", server.uri())})).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err.kind(), ToolErrorKind::Timeout);
    assert!(err.is_retryable());
    assert!(err.message.contains("timed out"), "{}", err.message);
    let err = call_err(
        &tool,
        json!({"method": "POST", "url": format!("{}/slow", server.uri())}),
    )
    .await;
    assert_eq!(err.kind(), ToolErrorKind::Failed);
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_refused_connection_is_unavailable_and_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let tool = HttpRequest::new().allow(&addr.to_string()).unwrap();
    let err = call_err(&tool, json!({"url": format!("http://{addr}/")})).await;
    assert_eq!(err.kind(), ToolErrorKind::Unavailable);
    assert!(err.is_retryable());
    assert!(std::error::Error::source(&err).is_some());
}

#[tokio::test]
async fn read_only_allows_get_and_head_only() {
    let server = MockServer::start().await;
    Mock::given(method("HEAD"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let tool = HttpRequest::read_only().allow(&host_of(&server)).unwrap();
    assert_eq!(tool.safety(), ToolSafety::Safe);
    assert_eq!(
        tool.parameters()["properties"]["method"]["enum"],
        json!(["GET", "HEAD"])
    );
    let out = tool
        .call(json!({"method": "HEAD", "url": server.uri()}))
        .await
        .unwrap();
    assert_eq!(out["status"], 204);
    for m in ["POST", "DELETE", "put"] {
        let err = call_err(&tool, json!({"method": m, "url": server.uri()})).await;
        assert_eq!(err.kind(), ToolErrorKind::PermissionDenied, "{m}");
    }
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn bad_arguments_and_request_limits() {
    let server = MockServer::start().await;
    let tool = HttpRequest::new()
        .allow(&host_of(&server))
        .unwrap()
        .max_request_bytes(10);
    let url = server.uri();
    let cases = [
        (json!({}), ToolErrorKind::InvalidInput),
        (json!({"url": "not a url"}), ToolErrorKind::InvalidInput),
        (
            json!({"url": "ftp://127.0.0.1/"}),
            ToolErrorKind::InvalidInput,
        ),
        (
            json!({"url": format!("http://u:p@{}/", host_of(&server))}),
            ToolErrorKind::InvalidInput,
        ),
        (
            json!({"url": url, "method": "BREW"}),
            ToolErrorKind::InvalidInput,
        ),
        (json!({"url": url, "extra": 1}), ToolErrorKind::InvalidInput),
        (
            json!({"url": url, "headers": {"host": "evil"}}),
            ToolErrorKind::InvalidInput,
        ),
        (
            json!({"url": url, "headers": {"a": 1}}),
            ToolErrorKind::InvalidInput,
        ),
        (
            json!({"url": url, "body": "12345678901"}),
            ToolErrorKind::LimitExceeded,
        ),
        (
            json!({"url": format!("{url}/{}", "a".repeat(HttpRequest::MAX_URL_LEN))}),
            ToolErrorKind::LimitExceeded,
        ),
    ];
    for (args, kind) in cases {
        let err = call_err(&tool, args.clone()).await;
        assert_eq!(err.kind(), kind, "{args}: {}", err.message);
    }
    let headers: serde_json::Map<String, Value> = (0..=HttpRequest::MAX_HEADERS)
        .map(|i| (format!("x-h{i}"), json!("v")))
        .collect();
    let err = call_err(&tool, json!({"url": url, "headers": headers})).await;
    assert_eq!(err.kind(), ToolErrorKind::LimitExceeded);
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn binary_bodies_are_refused() {
    let server = MockServer::start().await;
    Mock::given(path("/img"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(vec![0xff, 0xd8, 0xff], "image/jpeg"))
        .mount(&server)
        .await;
    let tool = HttpRequest::new().allow(&host_of(&server)).unwrap();
    let err = call_err(&tool, json!({"url": format!("{}/img", server.uri())})).await;
    assert_eq!(err.kind(), ToolErrorKind::Failed);
    assert!(err.message.contains("binary"), "{}", err.message);
}

#[test]
fn bad_settings_are_typed_errors() {
    for pattern in [
        "",
        "*.com",
        "*.example.com:8080",
        "https://a.example/path",
        "ftp://a.example",
        "a.example/x",
        "https://user@a.example",
    ] {
        assert!(
            matches!(
                HttpRequest::new().allow(pattern),
                Err(HttpRequestConfigError::InvalidPattern { .. })
            ),
            "{pattern:?}"
        );
    }
    assert!(matches!(
        HttpRequest::new().credential("a.example", "x-api-key", "k"),
        Err(HttpRequestConfigError::InvalidOrigin { .. })
    ));
    let err = HttpRequest::new()
        .credential("https://a.example", "bad header", "k")
        .unwrap_err();
    assert!(matches!(err, HttpRequestConfigError::InvalidHeader { .. }));
    assert!(std::error::Error::source(&err).is_some());
    assert!(matches!(
        HttpRequest::new().credential("https://a.example", "x-k", "line\nbreak"),
        Err(HttpRequestConfigError::InvalidHeader { .. })
    ));
}
