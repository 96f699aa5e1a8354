//! A real rmcp server over Streamable HTTP on 127.0.0.1, with one read-only
//! and one destructive tool among others.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use flowtrace_agents::mcp::{MAX_MCP_LIST_PAGES, MAX_MCP_TOOLS, McpClient, McpError};
use flowtrace_agents::tools::{ToolGrants, ToolRegistry};
use flowtrace_core::{Tool, ToolErrorKind, ToolSafety};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool as RemoteTool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};

use crate::support::{responses, run_calls, tool_events};

#[derive(Clone, Copy, Debug)]
enum Listing {
    /// Five tools, two per page.
    Paged,
    /// One tool more than the limit.
    TooMany,
    /// A cursor on every page.
    Endless,
    /// `a.b` and `a_b`, the same name for a model.
    Clashing,
}

#[derive(Clone)]
struct TestServer {
    listing: Listing,
    /// The tools called, in order (`slow:cancelled` when a call was cancelled).
    calls: Arc<Mutex<Vec<String>>>,
}

fn schema(value: Value) -> Arc<serde_json::Map<String, Value>> {
    Arc::new(value.as_object().unwrap().clone())
}

fn paged_tools() -> Vec<RemoteTool> {
    let key = schema(json!({
        "type": "object",
        "properties": {"key": {"type": "string", "minLength": 1}},
        "required": ["key"],
        "additionalProperties": false
    }));
    let path = schema(json!({
        "type": "object",
        "properties": {"path": {"type": "string"}},
        "required": ["path"]
    }));
    let empty = schema(json!({"type": "object", "properties": {}}));
    vec![
        RemoteTool::new("lookup", "Looks a key up", key)
            .with_annotations(ToolAnnotations::new().read_only(true)),
        RemoteTool::new("delete_file", "Deletes a file", path)
            .with_annotations(ToolAnnotations::new().read_only(false).destructive(true)),
        RemoteTool::new("fail", "Always fails", empty.clone())
            .with_annotations(ToolAnnotations::new().read_only(true)),
        RemoteTool::new("slow", "Takes a minute", empty.clone())
            .with_annotations(ToolAnnotations::new().read_only(true)),
        RemoteTool::new("big", "Returns 10 kB of text in two blocks", empty),
    ]
}

impl ServerHandler for TestServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let page: usize = request
            .and_then(|r| r.cursor)
            .map_or(0, |c| c.parse().unwrap());
        let empty = || schema(json!({"type": "object"}));
        let (tools, more) = match self.listing {
            Listing::Paged => {
                let all = paged_tools();
                let end = (page * 2 + 2).min(all.len());
                (all[page * 2..end].to_vec(), end < all.len())
            }
            Listing::TooMany => {
                let start = page * 100;
                let end = (start + 100).min(MAX_MCP_TOOLS + 1);
                let tools = (start..end)
                    .map(|i| RemoteTool::new(format!("t{i}"), "a tool", empty()))
                    .collect();
                (tools, end < MAX_MCP_TOOLS + 1)
            }
            Listing::Endless => (
                vec![RemoteTool::new(format!("t{page}"), "a tool", empty())],
                true,
            ),
            Listing::Clashing => (
                vec![
                    RemoteTool::new("a.b", "a tool", empty()),
                    RemoteTool::new("a_b", "a tool", empty()),
                ],
                false,
            ),
        };
        let mut result = ListToolsResult::with_all_items(tools);
        result.next_cursor = more.then(|| (page + 1).to_string());
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        self.calls.lock().unwrap().push(name.clone());
        let args = request.arguments.unwrap_or_default();
        let result = match name.as_str() {
            "lookup" => CallToolResult::structured(json!({"key": args["key"], "value": 42})),
            "delete_file" => CallToolResult::success(vec![ContentBlock::text(format!(
                "deleted {}",
                args["path"].as_str().unwrap_or("?")
            ))]),
            "fail" => CallToolResult::error(vec![
                ContentBlock::text("disk on fire"),
                ContentBlock::text("try later"),
            ]),
            "slow" => {
                tokio::select! {
                    () = context.ct.cancelled() => {
                        self.calls.lock().unwrap().push("slow:cancelled".into());
                    }
                    () = tokio::time::sleep(Duration::from_secs(60)) => {}
                }
                CallToolResult::success(vec![ContentBlock::text("done")])
            }
            "big" => CallToolResult::success(vec![
                ContentBlock::text("x".repeat(5000)),
                ContentBlock::text("y".repeat(5000)),
            ]),
            _ => {
                return Err(ErrorData::invalid_params(
                    format!("unknown tool {name}"),
                    None,
                ));
            }
        };
        Ok(result.into())
    }
}

/// The `Authorization` headers (or `None`) of the requests a server got.
type Seen = Arc<Mutex<Vec<Option<String>>>>;

async fn record(State(seen): State<Seen>, request: Request, next: Next) -> Response {
    let auth = request
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap_or("<binary>").to_string());
    seen.lock().unwrap().push(auth);
    next.run(request).await
}

struct Served {
    base: String,
    calls: Arc<Mutex<Vec<String>>>,
    seen: Seen,
}

/// Serves the test server at `/mcp` (and a same-origin redirect to it at
/// `/old`, and a redirect to `elsewhere` at `/away`).
async fn serve(listing: Listing, elsewhere: Option<String>) -> Served {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let server = TestServer {
        listing,
        calls: calls.clone(),
    };
    let config = StreamableHttpServerConfig::default().with_sse_keep_alive(None);
    let service: StreamableHttpService<TestServer, LocalSessionManager> =
        StreamableHttpService::new(move || Ok(server.clone()), Default::default(), config);
    let away = elsewhere.unwrap_or_else(|| "http://127.0.0.1:9/mcp".into());
    let router = axum::Router::new()
        .nest_service("/mcp", service)
        .route(
            "/old",
            axum::routing::any(|| async { Redirect::temporary("/mcp").into_response() }),
        )
        .route(
            "/away",
            axum::routing::any(move || {
                let away = away.clone();
                async move { Redirect::temporary(&away).into_response() }
            }),
        )
        .layer(axum::middleware::from_fn_with_state(seen.clone(), record));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    Served {
        base: format!("http://{addr}"),
        calls,
        seen,
    }
}

#[tokio::test]
async fn http_tools_are_listed_across_pages_with_safety_from_annotations() {
    let served = serve(Listing::Paged, None).await;
    let client = McpClient::http(format!("{}/mcp?tenant=a", served.base))
        .connect()
        .await
        .unwrap();
    assert_eq!(client.label(), format!("{}/mcp", served.base));
    assert_eq!(client.pid(), None);
    let tools = client.list_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name()).collect();
    assert_eq!(names, ["lookup", "delete_file", "fail", "slow", "big"]);
    let safety: Vec<ToolSafety> = tools.iter().map(|t| t.safety()).collect();
    assert_eq!(
        safety,
        [
            ToolSafety::Safe,
            ToolSafety::Dangerous, // destructive
            ToolSafety::Safe,
            ToolSafety::Safe,
            ToolSafety::Dangerous, // no annotations
        ]
    );
    assert_eq!(tools[0].parameters()["required"], json!(["key"]));
    assert_eq!(tools[1].description(), "Deletes a file");
    client.shutdown().await.unwrap();
}

#[tokio::test]
async fn http_calls_obey_permissions_and_emit_events() {
    let served = serve(Listing::Paged, None).await;
    let client = McpClient::http(format!("{}/mcp", served.base))
        .prefix("files.")
        .connect()
        .await
        .unwrap();
    let registry = client
        .register(ToolRegistry::builder())
        .await
        .unwrap()
        .build()
        .unwrap();
    let offered: Vec<String> = registry
        .specs(&ToolGrants::safe_only())
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(offered, ["files_fail", "files_lookup", "files_slow"]);

    let calls = vec![
        ("files_lookup", json!({"key": "answer"})),
        ("files_lookup", json!({"key": ""})),
        ("files_delete_file", json!({"path": "/etc/passwd"})),
    ];
    let (results, sink) = run_calls(&registry, &ToolGrants::safe_only(), calls.clone()).await;
    assert_eq!(
        results[0].as_ref().unwrap(),
        &json!({"key": "answer", "value": 42})
    );
    assert_eq!(
        results[1].as_ref().unwrap_err().kind(),
        ToolErrorKind::InvalidInput
    );
    assert_eq!(
        results[2].as_ref().unwrap_err().kind(),
        ToolErrorKind::PermissionDenied
    );
    assert_eq!(
        tool_events(&sink),
        [
            ("tool.request", "files_lookup".to_string()),
            ("tool.response", "files_lookup".to_string()),
            ("tool.denied", "files_delete_file".to_string()),
        ]
    );
    // Only the valid, permitted call reached the server.
    assert_eq!(*served.calls.lock().unwrap(), ["lookup"]);

    let grants = ToolGrants::safe_only().grant("files_delete_file");
    let (results, sink) = run_calls(&registry, &grants, calls[2..].to_vec()).await;
    assert_eq!(results[0].as_ref().unwrap(), &json!("deleted /etc/passwd"));
    assert_eq!(
        responses(&sink),
        [(
            "files_delete_file".to_string(),
            Some(json!("deleted /etc/passwd")),
            None
        )]
    );
    assert_eq!(*served.calls.lock().unwrap(), ["lookup", "delete_file"]);
    client.shutdown().await.unwrap();
}

#[tokio::test]
async fn http_errors_timeouts_and_size_limits_are_tool_errors() {
    let served = serve(Listing::Paged, None).await;
    let client = McpClient::http(format!("{}/mcp", served.base))
        .call_timeout(Duration::from_millis(300))
        .max_result_bytes(8_000)
        .connect()
        .await
        .unwrap();
    let tools = client.list_tools().await.unwrap();
    let tool = |name: &str| tools.iter().find(|t| t.name() == name).unwrap().clone();

    let e = tool("fail").call(json!({})).await.unwrap_err();
    assert_eq!(e.kind(), ToolErrorKind::Failed);
    assert_eq!(e.tool, "fail");
    assert_eq!(e.message, "disk on fire\ntry later");

    let e = tool("slow").call(json!({})).await.unwrap_err();
    assert_eq!(e.kind(), ToolErrorKind::Timeout, "{e}");
    // The abandoned call is cancelled on the server.
    for _ in 0..100 {
        if served
            .calls
            .lock()
            .unwrap()
            .iter()
            .any(|c| c == "slow:cancelled")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        served
            .calls
            .lock()
            .unwrap()
            .iter()
            .any(|c| c == "slow:cancelled")
    );

    let e = tool("big").call(json!({})).await.unwrap_err();
    assert_eq!(e.kind(), ToolErrorKind::LimitExceeded, "{e}");
    assert!(e.message.contains("8000"), "{e}");

    // Within a larger limit, text blocks are joined.
    let roomy = McpClient::http(format!("{}/mcp", served.base))
        .connect()
        .await
        .unwrap();
    let big = roomy.list_tools().await.unwrap().pop().unwrap();
    let text = big.call(json!({})).await.unwrap();
    assert_eq!(text.as_str().unwrap().len(), 10_001);

    client.shutdown().await.unwrap();
    let e = tool("lookup").call(json!({"key": "k"})).await.unwrap_err();
    assert_eq!(e.kind(), ToolErrorKind::Unavailable, "{e}");
    roomy.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_bearer_token_reaches_the_servers_origin_only() {
    // Same origin, also through a same-origin redirect.
    let served = serve(Listing::Paged, None).await;
    for path in ["/mcp", "/old"] {
        let client = McpClient::http(format!("{}{path}", served.base))
            .bearer_token("s3cret")
            .connect()
            .await
            .unwrap();
        let tools = client.list_tools().await.unwrap();
        tools[0].call(json!({"key": "k"})).await.unwrap();
        client.shutdown().await.unwrap();
    }
    let seen = served.seen.lock().unwrap().clone();
    assert!(seen.len() >= 6, "{seen:?}");
    assert!(
        seen.iter().all(|a| a.as_deref() == Some("Bearer s3cret")),
        "{seen:?}"
    );

    // A redirect to another origin is not followed: the other server sees
    // nothing, and the handshake fails.
    let other = serve(Listing::Paged, None).await;
    let first = serve(Listing::Paged, Some(format!("{}/mcp", other.base))).await;
    let err = McpClient::http(format!("{}/away", first.base))
        .bearer_token("s3cret")
        .request_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, McpError::Handshake { .. }), "{err:?}");
    assert!(std::error::Error::source(&err).is_some());
    assert!(other.seen.lock().unwrap().is_empty());
    assert_eq!(
        *first.seen.lock().unwrap(),
        [Some("Bearer s3cret".to_string())]
    );
}

#[tokio::test]
async fn listings_over_the_limits_or_with_clashing_names_are_refused() {
    for (listing, check) in [
        (
            Listing::TooMany,
            Box::new(
                |e: &McpError| matches!(e, McpError::LimitExceeded { limit, .. } if *limit == MAX_MCP_TOOLS),
            ) as Box<dyn Fn(&McpError) -> bool>,
        ),
        (
            Listing::Endless,
            Box::new(
                |e: &McpError| matches!(e, McpError::LimitExceeded { limit, .. } if *limit == MAX_MCP_LIST_PAGES),
            ),
        ),
        (
            Listing::Clashing,
            Box::new(
                |e: &McpError| matches!(e, McpError::InvalidToolName { tool, .. } if tool == "a_b"),
            ),
        ),
    ] {
        let served = serve(listing, None).await;
        let client = McpClient::http(format!("{}/mcp", served.base))
            .connect()
            .await
            .unwrap();
        let err = client.list_tools().await.unwrap_err();
        assert!(check(&err), "{listing:?}: {err:?}");
        assert_eq!(err.server(), format!("{}/mcp", served.base));
        client.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn an_unreachable_server_fails_the_handshake() {
    // Bind then drop a listener: nothing listens on that port.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = McpClient::http(format!("http://{addr}/mcp"))
        .request_timeout(Duration::from_secs(20))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, McpError::Handshake { .. }), "{err:?}");
    assert!(std::error::Error::source(&err).is_some());
}
