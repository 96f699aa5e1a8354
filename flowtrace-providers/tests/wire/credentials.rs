//! No key leaves its origin: every provider client, against real loopback
//! HTTP servers, refuses redirects (no credential reaches another path,
//! port or host) and never lets a key reach an error, a trace event, a run
//! summary or a log line, whatever the server answers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowtrace_core::testing::ScriptedModel;
use flowtrace_core::trace::MemorySink;
use flowtrace_core::{
    ChatModel, ChatRequest, JsonState, ModelError, ModelErrorKind, NodeContext, NodeOutput,
    RunConfig, RunFailure, StreamEvent, TokenUsage, node_fn,
};
use flowtrace_providers::ApiKey;
use flowtrace_providers::anthropic::Anthropic;
use flowtrace_providers::breaker::{BreakerConfig, CircuitBreaker};
use flowtrace_providers::fallback::{Candidate, FallbackChain};
use flowtrace_providers::openai::OpenAi;
use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const OPENAI_KEY: &str = "sk-proj-Q7mZ2vX9pL4tR8wK3nB6yH1c";
const ANTHROPIC_KEY: &str = "sk-ant-api03-Jd5Fq0Ws7Ex2Ru9Ty4Ui";
const COMPAT_KEY: &str = "sk-local-Vn3Bm8Kj1Hg6Fd0Sa5Pq";
const GATEWAY_KEY: &str = "gw-7Yt4Re1Wq9Oi2Uy5Lk8Jh3";
const SECRETS: [&str; 4] = [OPENAI_KEY, ANTHROPIC_KEY, COMPAT_KEY, GATEWAY_KEY];
/// Request headers that carry a credential.
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "x-api-key", "api-key"];

// ------------------------------------------------------------ HTTP server --

/// One request a server received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    /// Whether the request carried a credential: a credential header, or a
    /// secret in any header.
    fn has_credential(&self) -> bool {
        self.headers.iter().any(|(name, value)| {
            CREDENTIAL_HEADERS.contains(&name.as_str()) || SECRETS.iter().any(|s| value.contains(s))
        })
    }

    /// Every header as `name: value` lines.
    fn dump(&self) -> String {
        self.headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

type Reply = Arc<dyn Fn(&Seen) -> Vec<u8> + Send + Sync>;

/// A minimal HTTP/1.1 server on loopback: records every request and answers
/// each with the raw bytes `reply` gives, then closes the connection.
#[derive(Clone)]
struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    async fn start(reply: impl Fn(&Seen) -> Vec<u8> + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let reply: Reply = Arc::new(reply);
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (log, reply) = (log.clone(), reply.clone());
                tokio::spawn(async move {
                    let _ = answer(socket, log, reply).await;
                });
            }
        });
        Self { addr, seen }
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`.
    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn answer(
    mut socket: TcpStream,
    log: Arc<Mutex<Vec<Seen>>>,
    reply: Reply,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let path = request_line.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let seen = Seen {
        method,
        path,
        headers,
    };
    log.lock().unwrap().push(seen.clone());
    let response = reply(&seen);
    socket.write_all(&response).await?;
    socket.flush().await?;
    socket.shutdown().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        429 => "Too Many Requests",
        _ => "Status",
    }
}

/// A whole HTTP response with a `content-length`.
fn response(status: u16, content_type: &str, extra: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n",
        reason(status),
        body.len()
    );
    for (name, value) in extra {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    head.push_str(body);
    head.into_bytes()
}

fn redirect(status: u16, location: &str) -> Vec<u8> {
    response(status, "text/plain", &[("location", location)], "")
}

// ---------------------------------------------------------------- clients --

/// The provider clients under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    /// OpenAI, key as `Authorization: Bearer`.
    OpenAi,
    /// Anthropic, key as `x-api-key`.
    Anthropic,
    /// An OpenAI-compatible gateway: its own provider name, a bearer key
    /// and a gateway key in an `api-key` header.
    Compatible,
    /// OpenAI over a reqwest client the user built (with redirects off).
    UserHttp,
}

const CLIENTS: [Client; 4] = [
    Client::OpenAi,
    Client::Anthropic,
    Client::Compatible,
    Client::UserHttp,
];

impl Client {
    fn build(self, origin: &str) -> Arc<dyn ChatModel> {
        self.build_both(origin).0
    }

    /// The client, and its `Debug` output.
    fn build_both(self, origin: &str) -> (Arc<dyn ChatModel>, String) {
        fn both<M: ChatModel + std::fmt::Debug + 'static>(m: M) -> (Arc<dyn ChatModel>, String) {
            let debug = format!("{m:?}");
            (Arc::new(m), debug)
        }
        let timeout = Duration::from_secs(5);
        let openai = |key: &str| {
            OpenAi::new(ApiKey::new(key))
                .base_url(format!("{origin}/v1"))
                .timeout(timeout)
        };
        match self {
            Client::OpenAi => both(openai(OPENAI_KEY)),
            Client::Anthropic => both(
                Anthropic::new(ApiKey::new(ANTHROPIC_KEY))
                    .base_url(origin)
                    .timeout(timeout),
            ),
            Client::Compatible => both(
                openai(COMPAT_KEY)
                    .provider_name("gateway")
                    .header("api-key", GATEWAY_KEY)
                    .unwrap(),
            ),
            Client::UserHttp => {
                let http = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .unwrap();
                both(openai(OPENAI_KEY).http_client(http))
            }
        }
    }

    /// The last credential the client sends (the gateway key for
    /// [`Client::Compatible`]).
    fn last_secret(self) -> &'static str {
        match self {
            Client::Anthropic => ANTHROPIC_KEY,
            Client::Compatible => GATEWAY_KEY,
            _ => OPENAI_KEY,
        }
    }

    /// The path the client posts to.
    fn path(self) -> &'static str {
        match self {
            Client::Anthropic => "/v1/messages",
            _ => "/v1/chat/completions",
        }
    }

    fn model(self) -> &'static str {
        match self {
            Client::Anthropic => "claude-sonnet-4",
            _ => "gpt-4o-mini",
        }
    }

    /// A successful reply, as the client would parse it.
    fn ok_body(self) -> String {
        match self {
            Client::Anthropic => json!({
                "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
                "content": [{"type": "text", "text": "captured"}], "stop_reason": "end_turn",
                "usage": {"input_tokens": 1, "output_tokens": 1}
            }),
            _ => json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "captured"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
            }),
        }
        .to_string()
    }

    /// An error body in the provider's shape, with `message`.
    fn error_body(self, message: &str, error_type: &str) -> String {
        match self {
            Client::Anthropic => {
                json!({"type": "error", "error": {"type": error_type, "message": message}})
            }
            _ => json!({"error": {"message": message, "type": error_type, "code": null}}),
        }
        .to_string()
    }

    /// A server-sent `error` event in the provider's shape.
    fn sse_error(self, message: &str) -> String {
        match self {
            Client::Anthropic => format!(
                "event: error\ndata: {}\n\n",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": message}})
            ),
            _ => format!(
                "data: {}\n\n",
                json!({"error": {"message": message, "type": "server_error"}})
            ),
        }
    }

    /// A whole, well-formed stream whose text deltas are `pieces`.
    fn sse_whole(self, pieces: &[&str]) -> String {
        match self {
            Client::Anthropic => {
                let mut body = self.sse_start(pieces.first().copied().unwrap_or(""));
                for piece in pieces.iter().skip(1) {
                    let delta = json!({"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": piece}});
                    let _ = write!(body, "event: content_block_delta\ndata: {delta}\n\n");
                }
                let stop = json!({"type": "content_block_stop", "index": 0});
                let end = json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                 "usage": {"output_tokens": 3}});
                let _ = write!(
                    body,
                    "event: content_block_stop\ndata: {stop}\n\nevent: message_delta\ndata: {end}\n\nevent: message_stop\ndata: {}\n\n",
                    json!({"type": "message_stop"})
                );
                body
            }
            _ => {
                let mut body: String = pieces.iter().map(|p| self.sse_start(p)).collect();
                let end = json!({"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
                                 "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
                let _ = write!(body, "data: {end}\n\ndata: [DONE]\n\n");
                body
            }
        }
    }

    /// The first event of a stream, carrying `text`.
    fn sse_start(self, text: &str) -> String {
        match self {
            Client::Anthropic => format!(
                "event: message_start\ndata: {}\n\nevent: content_block_start\ndata: {}\n\nevent: content_block_delta\ndata: {}\n\n",
                json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
                       "role": "assistant", "model": "claude-sonnet-4", "content": [],
                       "usage": {"input_tokens": 1, "output_tokens": 0}}}),
                json!({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "text", "text": ""}}),
                json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "text_delta", "text": text}}),
            ),
            _ => format!(
                "data: {}\n\n",
                json!({"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
                       "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
            ),
        }
    }
}

fn request(client: Client) -> ChatRequest {
    ChatRequest::new(client.model()).user("hi")
}

/// The first error of a call, plain or streamed.
async fn call(model: &dyn ChatModel, client: Client, stream: bool) -> Result<(), ModelError> {
    if !stream {
        return model.chat(request(client)).await.map(|_| ());
    }
    let mut events = model.chat_stream(request(client));
    while let Some(event) = events.next().await {
        match event {
            Ok(StreamEvent::Done(_)) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- checks --

/// Fails when `text` holds a secret, or any 12 characters of one (a key cut
/// by a truncation is still a leak).
fn assert_clean(what: &str, text: &str) {
    for secret in SECRETS {
        for window in secret.as_bytes().windows(12) {
            let window = std::str::from_utf8(window).unwrap();
            assert!(
                !text.contains(window),
                "{what}: part of a key ({window:?}) leaked into: {text}"
            );
        }
    }
}

/// Display, Debug and the whole source chain of an error.
fn error_texts(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut texts = vec![e.to_string(), format!("{e:?}")];
    let mut source = e.source();
    while let Some(s) = source {
        texts.push(s.to_string());
        texts.push(format!("{s:?}"));
        source = s.source();
    }
    texts
}

// ------------------------------------------------------------- redirects --

/// Where a redirect points.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// The same origin, another path (a relative `Location`).
    SamePath,
    /// The same origin, another path (an absolute `Location`).
    SameOrigin,
    /// The same host, another port.
    OtherPort,
    /// Another host name (`localhost` instead of `127.0.0.1`).
    OtherHost,
}

const TARGETS: [Target; 4] = [
    Target::SamePath,
    Target::SameOrigin,
    Target::OtherPort,
    Target::OtherHost,
];
const REDIRECTS: [u16; 5] = [301, 302, 303, 307, 308];

/// Runs `client` (plain and streamed) against a server answering every
/// redirect status towards every target, and checks that nothing with a
/// credential reached the target, that the error is a non-retryable redirect
/// error naming only the target's origin, and that the call was made once.
async fn redirects_are_refused(client: Client) {
    let mut leaks = Vec::new();
    for status in REDIRECTS {
        for target in TARGETS {
            for stream in [false, true] {
                let case = format!("{client:?} {status} {target:?} stream={stream}");
                let elsewhere = {
                    let ok = client.ok_body();
                    Server::start(move |_| response(200, "application/json", &[], &ok)).await
                };
                let origin_port = Arc::new(Mutex::new(0u16));
                let (location, want_origin) = match target {
                    Target::SamePath => ("/moved/v1/x?token=abc".to_string(), None),
                    Target::SameOrigin => (String::new(), None),
                    Target::OtherPort => (
                        format!("{}/moved?token=abc", elsewhere.origin()),
                        Some(elsewhere.origin()),
                    ),
                    Target::OtherHost => {
                        let at = format!("http://localhost:{}", elsewhere.port());
                        (format!("{at}/moved?token=abc"), Some(at))
                    }
                };
                let server = {
                    let (ok, path, port) = (client.ok_body(), client.path(), origin_port.clone());
                    let location = location.clone();
                    Server::start(move |seen| {
                        if seen.path != path {
                            return response(200, "application/json", &[], &ok);
                        }
                        let location = if location.is_empty() {
                            let port = *port.lock().unwrap();
                            format!("http://127.0.0.1:{port}/moved/v1/x?token=abc")
                        } else {
                            location.clone()
                        };
                        redirect(status, &location)
                    })
                    .await
                };
                *origin_port.lock().unwrap() = server.port();
                let want_origin = want_origin.unwrap_or_else(|| server.origin());

                let model = client.build(&server.origin());
                let result = call(model.as_ref(), client, stream).await;

                // Nothing with a credential reached the target: not another
                // path of the same server, not the other server.
                let stray: Vec<Seen> = server
                    .seen()
                    .into_iter()
                    .filter(|s| s.path != client.path())
                    .chain(elsewhere.seen())
                    .collect();
                let leaked: Vec<String> = stray
                    .iter()
                    .filter(|s| s.has_credential())
                    .map(|s| format!("{} {}", s.method, s.path))
                    .collect();
                if !leaked.is_empty() {
                    leaks.push(format!("{case}: credentials sent to {leaked:?}"));
                    continue;
                }
                assert!(
                    stray.is_empty(),
                    "{case}: the redirect was followed: {stray:?}"
                );
                assert_eq!(server.seen().len(), 1, "{case}: one request");
                assert!(
                    server.seen()[0].has_credential(),
                    "{case}: the key was sent"
                );

                // A typed, non-retryable redirect error naming the origin.
                let e = result.expect_err(&case);
                assert_eq!(
                    e.kind,
                    ModelErrorKind::Redirect {
                        origin: Some(want_origin.clone())
                    },
                    "{case}: {e}"
                );
                assert!(!e.is_retryable(), "{case}");
                for text in error_texts(&e) {
                    assert!(text.contains(&want_origin), "{case}: {text}");
                    assert!(!text.contains("/moved"), "{case}: a path in {text}");
                    assert!(!text.contains("token"), "{case}: a query in {text}");
                    assert_clean(&case, &text);
                }
            }
        }
    }
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
}

#[tokio::test]
async fn openai_refuses_redirects() {
    redirects_are_refused(Client::OpenAi).await;
}

#[tokio::test]
async fn anthropic_refuses_redirects() {
    redirects_are_refused(Client::Anthropic).await;
}

#[tokio::test]
async fn openai_compatible_servers_are_refused_redirects() {
    redirects_are_refused(Client::Compatible).await;
}

#[tokio::test]
async fn a_user_supplied_client_without_redirects_refuses_them() {
    redirects_are_refused(Client::UserHttp).await;
}

/// A user-supplied client that follows redirects cannot be stopped from
/// sending the request; the reply from the other origin is still refused.
#[tokio::test]
async fn a_reply_from_a_followed_redirect_is_refused() {
    for stream in [false, true] {
        let elsewhere =
            Server::start(|_| response(200, "application/json", &[], &Client::OpenAi.ok_body()))
                .await;
        let location = format!("http://localhost:{}/moved?token=abc", elsewhere.port());
        let server = Server::start(move |_| redirect(307, &location)).await;
        let model = OpenAi::new(ApiKey::new(OPENAI_KEY))
            .base_url(format!("{}/v1", server.origin()))
            .http_client(reqwest::Client::new());
        let e = call(&model, Client::OpenAi, stream).await.unwrap_err();
        let origin = format!("http://localhost:{}", elsewhere.port());
        assert_eq!(
            e.kind,
            ModelErrorKind::Redirect {
                origin: Some(origin.clone())
            },
            "{e}"
        );
        assert!(!e.is_retryable());
        assert!(e.to_string().contains(&origin), "{e}");
        assert!(!e.to_string().contains("token"), "{e}");
    }
}

/// A redirect with no usable `Location` is still refused, naming no origin.
#[tokio::test]
async fn a_redirect_without_a_location_is_refused() {
    for client in CLIENTS {
        for status in [300, 301, 302, 303, 304, 307, 308] {
            let server = Server::start(move |_| response(status, "text/plain", &[], "moved")).await;
            let model = client.build(&server.origin());
            for stream in [false, true] {
                let e = call(model.as_ref(), client, stream).await.unwrap_err();
                assert_eq!(
                    e.kind,
                    ModelErrorKind::Redirect { origin: None },
                    "{client:?} {status}: {e}"
                );
                assert!(!e.is_retryable());
            }
        }
    }
}

/// A fallback chain, a breaker and the node retry policy never call the
/// redirecting provider again, and the chain does not move on with the
/// request either: the redirect is returned as is.
#[tokio::test]
async fn redirects_are_neither_retried_nor_counted_by_breakers() {
    for client in [Client::OpenAi, Client::Anthropic, Client::Compatible] {
        let elsewhere =
            Server::start(move |_| response(200, "application/json", &[], &client.ok_body())).await;
        let location = format!("{}/moved", elsewhere.origin());
        let server = Server::start(move |_| redirect(307, &location)).await;
        let breaker = Arc::new(CircuitBreaker::new(
            client.model(),
            client.model(),
            BreakerConfig {
                failure_threshold: 1,
                ..BreakerConfig::default()
            },
        ));
        let secondary = Arc::new(
            ScriptedModel::new("secondary").reply("from the secondary", TokenUsage::new(1, 1)),
        );
        let chain = FallbackChain::new(
            Candidate::new(client.build(&server.origin()))
                .breaker(breaker.clone())
                .retries(3),
        )
        .or(Candidate::new(secondary.clone()));
        let e = chain.chat(request(client)).await.unwrap_err();
        assert_eq!(
            e.kind,
            ModelErrorKind::Redirect {
                origin: Some(elsewhere.origin())
            }
        );
        assert_eq!(server.seen().len(), 1, "{client:?}: not retried");
        assert!(elsewhere.seen().is_empty());
        assert_eq!(secondary.calls(), 0, "{client:?}: no fallback");
        assert_eq!(
            breaker.state(),
            flowtrace_providers::breaker::BreakerState::Closed
        );

        // Through a run with a retry policy: one attempt only.
        let model = client.build(&server.origin());
        let (failure, _) = run_in_graph(model, client, false).await;
        assert!(
            failure.error.report().to_string().contains("redirect"),
            "{failure}"
        );
        assert_eq!(
            server.seen().len(),
            2,
            "{client:?}: the node was not retried"
        );
        assert!(elsewhere.seen().is_empty());
    }
}

// ------------------------------------------------------------------ leaks --

/// Runs one call in a graph (with a retry policy, to show none applies).
async fn run_in_graph(
    model: Arc<dyn ChatModel>,
    client: Client,
    stream: bool,
) -> (RunFailure, MemorySink) {
    let graph = crate::support::ask_graph(
        "creds",
        node_fn(move |_s, ctx: NodeContext| {
            let model = model.clone();
            async move {
                if stream {
                    ctx.chat_stream(model.as_ref(), request(client)).await?;
                } else {
                    ctx.chat(model.as_ref(), request(client)).await?;
                }
                Ok(NodeOutput::none())
            }
        }),
    );
    let sink = MemorySink::new();
    let failure = graph
        .invoke(
            JsonState::new(),
            RunConfig::new()
                .sink(sink.clone())
                .retry(flowtrace_core::RetryPolicy::new(2).initial_delay(Duration::from_millis(1))),
        )
        .await
        .unwrap_err();
    (failure, sink)
}

/// The error classes the echoing server answers with.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    /// 429 with `Retry-After`.
    RateLimited,
    /// A 2xx body that is not JSON.
    MalformedJson,
    /// A 2xx JSON body holding an error object.
    ErrorIn200,
    /// An error message long enough to be cut, with a key across the cut.
    LongError,
    /// A body that is plain text, not JSON.
    PlainText(u16),
    /// A stream cut after its first event (connection closed).
    TruncatedSse,
    /// A chunked stream cut inside a chunk.
    TruncatedChunk,
    /// A stream that reports an error event.
    SseError,
    /// A redirect whose `Location` holds the key in its query and userinfo.
    RedirectWithKey,
}

const ANSWERS: [Answer; 22] = [
    Answer::Status(400),
    Answer::Status(401),
    Answer::Status(403),
    Answer::Status(404),
    Answer::Status(408),
    Answer::Status(409),
    Answer::Status(413),
    Answer::Status(422),
    Answer::RateLimited,
    Answer::Status(500),
    Answer::Status(502),
    Answer::Status(503),
    Answer::Status(504),
    Answer::MalformedJson,
    Answer::ErrorIn200,
    Answer::LongError,
    Answer::PlainText(401),
    Answer::PlainText(500),
    Answer::TruncatedSse,
    Answer::TruncatedChunk,
    Answer::SseError,
    Answer::RedirectWithKey,
];

/// What the echoing server answers: `answer`, with every request header
/// copied into the body.
fn echo(client: Client, answer: Answer, seen: &Seen) -> Vec<u8> {
    let dump = format!("echo of your request headers:\n{}", seen.dump());
    let json = "application/json";
    match answer {
        Answer::Status(status) => {
            let error_type = match status {
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                500..=599 => "api_error",
                _ => "invalid_request_error",
            };
            response(status, json, &[], &client.error_body(&dump, error_type))
        }
        Answer::RateLimited => response(
            429,
            json,
            &[("retry-after", "0")],
            &client.error_body(&dump, "rate_limit_error"),
        ),
        Answer::MalformedJson => response(200, json, &[], &format!("{{\"oops\": \"{dump}")),
        Answer::ErrorIn200 => response(200, json, &[], &client.error_body(&dump, "server_error")),
        Answer::LongError => {
            // A key across the 500-character cut of a message.
            let message = format!("{}{} {dump}", "x".repeat(486), client.last_secret());
            response(
                400,
                json,
                &[],
                &client.error_body(&message, "invalid_request_error"),
            )
        }
        Answer::PlainText(status) => response(status, "text/plain", &[], &dump),
        Answer::TruncatedSse => {
            let body = client.sse_start(&dump);
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
            format!("{head}{body}").into_bytes()
        }
        Answer::TruncatedChunk => {
            let body = client.sse_start(&dump);
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
            // Announces more than it sends.
            format!("{head}{:x}\r\n{body}", body.len() + 100).into_bytes()
        }
        Answer::SseError => {
            let body = format!("{}{}", client.sse_start("Hel"), client.sse_error(&dump));
            response(200, "text/event-stream", &[], &body)
        }
        Answer::RedirectWithKey => {
            let key = SECRETS.join("-");
            let location = format!("http://{key}:{key}@localhost:9/{key}?api_key={key}#{key}");
            response(
                307,
                json,
                &[("location", &location)],
                &client.error_body(&dump, "x"),
            )
        }
    }
}

/// Records every tracing event and span field, at every level.
struct Capture {
    lines: Arc<Mutex<Vec<String>>>,
    next_id: AtomicU64,
}

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut line = format!("span {}", span.metadata().name());
        span.record(&mut Fields(&mut line));
        self.lines.lock().unwrap().push(line);
        tracing::span::Id::from_u64(self.next_id.fetch_add(1, Ordering::Relaxed))
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut line = "record".to_string();
        values.record(&mut Fields(&mut line));
        self.lines.lock().unwrap().push(line);
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = format!("event {}", event.metadata().target());
        event.record(&mut Fields(&mut line));
        self.lines.lock().unwrap().push(line);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Runs `client` against the echoing server for every answer, plain and
/// streamed, directly and inside a run, and checks that no key reaches an
/// error, the run's failure and summary, a trace event or a log line.
async fn keys_never_leak(client: Client) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let capture = Capture {
        lines: lines.clone(),
        next_id: AtomicU64::new(1),
    };
    let _guard = tracing::dispatcher::set_default(&tracing::Dispatch::new(capture));
    let mut redacted = 0;
    for answer in ANSWERS {
        let server = Server::start(move |seen| echo(client, answer, seen)).await;
        let (model, debug) = client.build_both(&server.origin());
        assert_clean("the client's Debug", &debug);
        for stream in [false, true] {
            let case = format!("{client:?} {answer:?} stream={stream}");
            let e = call(model.as_ref(), client, stream).await.expect_err(&case);
            for text in error_texts(&e) {
                assert_clean(&case, &text);
            }
            if e.message.contains("[redacted]") {
                redacted += 1;
            }

            let (failure, sink) = run_in_graph(model.clone(), client, stream).await;
            let mut texts = error_texts(&failure);
            texts.extend(error_texts(&failure.error));
            texts.push(serde_json::to_string(&failure.summary).unwrap());
            texts.push(format!("{:?}", failure.summary));
            texts.push(serde_json::to_string(&failure.state).unwrap());
            for event in sink.events() {
                texts.push(event.to_json_line());
                texts.push(format!("{event:?}"));
            }
            assert!(sink.kinds().contains(&"llm.request"), "{case}");
            for text in texts {
                assert_clean(&format!("{case} (run)"), &text);
            }
        }
        // The server did get the credentials (that is where they belong).
        assert!(server.seen().iter().all(Seen::has_credential));
    }
    for line in lines.lock().unwrap().iter() {
        assert_clean("a log line", line);
    }
    assert!(!lines.lock().unwrap().is_empty(), "the capture saw the run");
    // Echoed keys were replaced, not dropped with their message.
    assert!(
        redacted >= 10,
        "{client:?}: {redacted} messages say [redacted]"
    );
}

#[tokio::test]
async fn openai_keys_never_leak() {
    keys_never_leak(Client::OpenAi).await;
}

#[tokio::test]
async fn anthropic_keys_never_leak() {
    keys_never_leak(Client::Anthropic).await;
}

#[tokio::test]
async fn openai_compatible_keys_and_gateway_headers_never_leak() {
    keys_never_leak(Client::Compatible).await;
}

#[tokio::test]
async fn keys_never_leak_through_a_user_supplied_client() {
    keys_never_leak(Client::UserHttp).await;
}

/// A key echoed in a stream, cut across events, never goes out in a delta:
/// the deltas add up to the redacted reply.
#[tokio::test]
async fn a_key_cut_across_stream_events_is_redacted() {
    for client in [Client::OpenAi, Client::Anthropic, Client::Compatible] {
        // The key is cut in three; the text ends with what starts a key.
        let text = format!("you sent {}, and sk-pr", client.last_secret());
        let cuts = [0, 3, 12, 15, 20, text.len() - 2, text.len()];
        let pieces: Vec<String> = cuts
            .windows(2)
            .map(|w| text[w[0]..w[1]].to_string())
            .collect();
        let body = client.sse_whole(&pieces.iter().map(String::as_str).collect::<Vec<_>>());
        let server = Server::start(move |_| response(200, "text/event-stream", &[], &body)).await;
        let model = client.build(&server.origin());
        let mut events = model.chat_stream(request(client));
        let (mut deltas, mut done) = (String::new(), None);
        while let Some(event) = events.next().await {
            match event.unwrap() {
                StreamEvent::Delta(d) => {
                    assert_clean("a delta", &d);
                    deltas.push_str(&d);
                }
                StreamEvent::Done(r) => done = Some(r),
                other => panic!("{other:?}"),
            }
        }
        let done = done.unwrap();
        assert_eq!(done.text, "you sent [redacted], and sk-pr", "{client:?}");
        assert_eq!(deltas, done.text, "{client:?}");
    }
}

/// The echo server really does echo: without redaction the keys would be in
/// the messages.
#[tokio::test]
async fn echoed_keys_are_redacted_in_place() {
    for client in [Client::OpenAi, Client::Anthropic, Client::Compatible] {
        let server = Server::start(move |seen| echo(client, Answer::Status(401), seen)).await;
        let model = client.build(&server.origin());
        let e = call(model.as_ref(), client, false).await.unwrap_err();
        assert_eq!(e.kind, ModelErrorKind::Auth);
        let header = match client {
            Client::Anthropic => "x-api-key: [redacted]",
            _ => "authorization: Bearer [redacted]",
        };
        assert!(e.message.contains(header), "{client:?}: {}", e.message);
        if client == Client::Compatible {
            assert!(e.message.contains("api-key: [redacted]"), "{}", e.message);
        }
        assert_eq!(server.seen()[0].method, "POST");
    }
}
