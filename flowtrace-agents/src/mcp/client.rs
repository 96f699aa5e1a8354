//! Connecting to an MCP server and listing its tools.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rmcp::ServiceExt as _;
use rmcp::model::{ClientCapabilities, ClientConfig, Implementation, PaginatedRequestParams};
use rmcp::service::{ClientInitializeError, Peer, RoleClient, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use serde_json::Value;
use tokio::sync::Mutex;

use super::tool::{McpTool, exceeds, model_tool_name, safety_from_annotations};
use super::{
    DEFAULT_MCP_CALL_TIMEOUT, DEFAULT_MCP_REQUEST_TIMEOUT, MAX_MCP_DESCRIPTION_BYTES,
    MAX_MCP_LIST_PAGES, MAX_MCP_MESSAGE_BYTES, MAX_MCP_RESULT_BYTES, MAX_MCP_SCHEMA_BYTES,
    MAX_MCP_TOOL_NAME_LEN, MAX_MCP_TOOLS, McpError,
};
use crate::tools::ToolRegistryBuilder;
use flowtrace_core::ToolSafety;

/// How long [`McpClient::shutdown`] waits for the connection to close (a
/// stdio server gets its stdin closed, then `SIGTERM`, then `SIGKILL`).
pub const MCP_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

type Service = RunningService<RoleClient, ClientConfig>;

/// The live connection, shared by the client and its tools.
pub(crate) struct Connection {
    pub(crate) label: String,
    pub(crate) peer: Peer<RoleClient>,
    service: Mutex<Option<Service>>,
    pid: Option<u32>,
}

enum Transport {
    Stdio(tokio::process::Command),
    Http { url: String },
}

/// Configures and opens a connection to an MCP server; made by
/// [`McpClient::stdio`] or [`McpClient::http`].
#[must_use]
pub struct McpClientBuilder {
    transport: Transport,
    label: String,
    bearer_token: Option<String>,
    prefix: String,
    request_timeout: Duration,
    call_timeout: Duration,
    max_result_bytes: usize,
    trust_annotations: bool,
}

impl fmt::Debug for McpClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Neither the command (its environment may hold secrets) nor the
        // token is shown.
        let transport = match self.transport {
            Transport::Stdio(_) => "stdio",
            Transport::Http { .. } => "streamable-http",
        };
        f.debug_struct("McpClientBuilder")
            .field("server", &self.label)
            .field("transport", &transport)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("prefix", &self.prefix)
            .field("request_timeout", &self.request_timeout)
            .field("call_timeout", &self.call_timeout)
            .field("max_result_bytes", &self.max_result_bytes)
            .field("trust_annotations", &self.trust_annotations)
            .finish()
    }
}

impl McpClientBuilder {
    fn new(transport: Transport, label: String) -> Self {
        Self {
            transport,
            label,
            bearer_token: None,
            prefix: String::new(),
            request_timeout: DEFAULT_MCP_REQUEST_TIMEOUT,
            call_timeout: DEFAULT_MCP_CALL_TIMEOUT,
            max_result_bytes: MAX_MCP_RESULT_BYTES,
            trust_annotations: true,
        }
    }

    /// Names the server in errors and tool descriptions (default: the
    /// program's file name for stdio, the URL without its query for HTTP).
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Streamable HTTP only: sends `Authorization: Bearer <token>` with
    /// every request. The token goes to the server's origin only: redirects
    /// are followed only to the same origin (scheme, host and port), and a
    /// redirect elsewhere fails the request without following it.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// Prefixes every tool name, e.g. `time.` gives `time_get_current_time`
    /// (see [`model_tool_name`](super::model_tool_name) for how names are
    /// made valid for model APIs). Default: no prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long the `initialize` handshake and each `tools/list` page may
    /// take (default [`DEFAULT_MCP_REQUEST_TIMEOUT`]).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long each tool call may take (default [`DEFAULT_MCP_CALL_TIMEOUT`]).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The largest tool result accepted, in bytes of JSON; at most (and by
    /// default) [`MAX_MCP_RESULT_BYTES`].
    pub fn max_result_bytes(mut self, bytes: usize) -> Self {
        self.max_result_bytes = bytes.min(MAX_MCP_RESULT_BYTES);
        self
    }

    /// Whether the server's annotations decide tool safety (default true,
    /// see [`safety_from_annotations`](super::safety_from_annotations)).
    /// With `false`, every tool of the server is
    /// [`Dangerous`](ToolSafety::Dangerous) and must be granted by name: use
    /// it for servers you do not trust.
    pub fn trust_annotations(mut self, trust: bool) -> Self {
        self.trust_annotations = trust;
        self
    }

    /// Starts the server (stdio) or reaches it (HTTP) and performs the
    /// `initialize` handshake.
    ///
    /// # Errors
    /// [`McpError::Spawn`], [`McpError::InvalidConfig`],
    /// [`McpError::Handshake`] or [`McpError::Timeout`].
    ///
    /// # Cancel safety
    /// Dropping the future drops the connection; a started child process
    /// is killed.
    pub async fn connect(self) -> Result<McpClient, McpError> {
        let McpClientBuilder {
            transport,
            label,
            bearer_token,
            prefix,
            request_timeout,
            call_timeout,
            max_result_bytes,
            trust_annotations,
        } = self;
        let info = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("flowtrace", env!("CARGO_PKG_VERSION")),
        );
        let (service, pid) = match transport {
            Transport::Stdio(mut command) => {
                if bearer_token.is_some() {
                    return Err(McpError::InvalidConfig {
                        server: label,
                        reason: "a bearer token applies to Streamable HTTP servers only"
                            .to_string(),
                    });
                }
                command.kill_on_drop(true);
                let (child, _stderr) =
                    TokioChildProcess::builder(command)
                        .spawn()
                        .map_err(|source| McpError::Spawn {
                            server: label.clone(),
                            source,
                        })?;
                let pid = child.id();
                let service = handshake(&label, request_timeout, info.serve(child)).await?;
                (service, pid)
            }
            Transport::Http { url } => {
                check_url(&label, &url)?;
                let mut config = StreamableHttpClientTransportConfig::with_uri(url)
                    .max_json_response_size(MAX_MCP_MESSAGE_BYTES)
                    .max_sse_event_size(MAX_MCP_MESSAGE_BYTES);
                if let Some(token) = bearer_token {
                    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                        return Err(McpError::InvalidConfig {
                            server: label,
                            reason: "the bearer token must be non-empty visible ASCII".to_string(),
                        });
                    }
                    config = config.auth_header(token);
                }
                let transport = StreamableHttpClientTransport::from_config(config);
                let service = handshake(&label, request_timeout, info.serve(transport)).await?;
                (service, None)
            }
        };
        let peer = service.peer().clone();
        Ok(McpClient {
            connection: Arc::new(Connection {
                label,
                peer,
                service: Mutex::new(Some(service)),
                pid,
            }),
            prefix,
            request_timeout,
            call_timeout,
            max_result_bytes,
            trust_annotations,
        })
    }
}

async fn handshake(
    label: &str,
    timeout: Duration,
    serve: impl std::future::Future<Output = Result<Service, ClientInitializeError>>,
) -> Result<Service, McpError> {
    match tokio::time::timeout(timeout, serve).await {
        Ok(Ok(service)) => Ok(service),
        Ok(Err(source)) => Err(McpError::Handshake {
            server: label.to_string(),
            source: Box::new(source),
        }),
        Err(_) => Err(McpError::Timeout {
            server: label.to_string(),
            what: "the initialize handshake",
            timeout,
        }),
    }
}

fn check_url(label: &str, url: &str) -> Result<(), McpError> {
    let invalid = |reason: &str| McpError::InvalidConfig {
        server: label.to_string(),
        reason: reason.to_string(),
    };
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"))
        .ok_or_else(|| invalid("the URL must start with http:// or https://"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(invalid("the URL has no host"));
    }
    Ok(())
}

/// The URL as a label: no query, fragment or user information.
fn url_label(url: &str) -> String {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..end];
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

/// A connection to one Model Context Protocol server, over stdio (a child
/// process) or Streamable HTTP, through the official Rust SDK `rmcp`.
///
/// [`list_tools`](Self::list_tools) turns the server's tools into
/// [`McpTool`]s for a [`ToolRegistry`](crate::tools::ToolRegistry), which
/// validates their input against the server's schemas, applies permissions
/// and emits events as for any tool.
///
/// The connection stays open while the client or any of its tools exists,
/// and closes when the last of them is dropped (a child process is killed
/// then at the latest), or on [`shutdown`](Self::shutdown).
///
/// ```no_run
/// use flowtrace_agents::mcp::McpClient;
/// use flowtrace_agents::tools::ToolRegistry;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let time = McpClient::stdio(tokio::process::Command::new("mcp-server-time"))
///     .prefix("time.")
///     .connect()
///     .await?;
/// let registry = time.register(ToolRegistry::builder()).await?.build()?;
/// assert!(registry.names().contains(&"time_get_current_time"));
///
/// let remote = McpClient::http("https://mcp.example.com/mcp")
///     .bearer_token("secret")
///     .connect()
///     .await?;
/// for tool in remote.list_tools().await? {
///     println!("{} ({:?})", tool.remote_name(), tool.annotations());
/// }
/// time.shutdown().await?;
/// # Ok(())
/// # }
/// ```
pub struct McpClient {
    connection: Arc<Connection>,
    prefix: String,
    request_timeout: Duration,
    call_timeout: Duration,
    max_result_bytes: usize,
    trust_annotations: bool,
}

impl fmt::Debug for McpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpClient")
            .field("server", &self.connection.label)
            .field("pid", &self.connection.pid)
            .field("prefix", &self.prefix)
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

impl McpClient {
    /// A server run as a child process speaking MCP on its stdin/stdout
    /// (its stderr is inherited).
    pub fn stdio(command: tokio::process::Command) -> McpClientBuilder {
        let program = command
            .as_std()
            .get_program()
            .to_string_lossy()
            .into_owned();
        let label = std::path::Path::new(&program)
            .file_name()
            .map_or(program.clone(), |n| n.to_string_lossy().into_owned());
        McpClientBuilder::new(Transport::Stdio(command), label)
    }

    /// A server reached over Streamable HTTP at `url`.
    pub fn http(url: impl Into<String>) -> McpClientBuilder {
        let url = url.into();
        let label = url_label(&url);
        McpClientBuilder::new(Transport::Http { url }, label)
    }

    /// The server's label.
    pub fn label(&self) -> &str {
        &self.connection.label
    }

    /// The name and version the server gave in the handshake, if any.
    pub fn server_info(&self) -> Option<(String, String)> {
        let info = self.connection.peer.peer_info()?;
        let server = info.server_info.as_ref()?;
        Some((server.name.clone(), server.version.clone()))
    }

    /// The process id of a stdio server.
    pub fn pid(&self) -> Option<u32> {
        self.connection.pid
    }

    /// Lists the server's tools, following pagination cursors, as
    /// [`McpTool`]s.
    ///
    /// # Errors
    /// [`McpError::List`], [`McpError::Timeout`] (a page took longer than
    /// the request timeout), [`McpError::LimitExceeded`] (more than
    /// [`MAX_MCP_TOOLS`] tools or [`MAX_MCP_LIST_PAGES`] pages, a schema
    /// over [`MAX_MCP_SCHEMA_BYTES`], a description over
    /// [`MAX_MCP_DESCRIPTION_BYTES`]) or [`McpError::InvalidToolName`].
    pub async fn list_tools(&self) -> Result<Vec<Arc<McpTool>>, McpError> {
        let label = &self.connection.label;
        let limit = |what: String, limit: usize| McpError::LimitExceeded {
            server: label.clone(),
            what,
            limit,
        };
        let mut listed = Vec::new();
        let mut cursor = None;
        for page in 0.. {
            if page == MAX_MCP_LIST_PAGES {
                return Err(limit(
                    "the number of tools/list pages".into(),
                    MAX_MCP_LIST_PAGES,
                ));
            }
            let params = cursor.map(|c| PaginatedRequestParams::default().with_cursor(Some(c)));
            let result = tokio::time::timeout(
                self.request_timeout,
                self.connection.peer.list_tools(params),
            )
            .await
            .map_err(|_| McpError::Timeout {
                server: label.clone(),
                what: "tools/list",
                timeout: self.request_timeout,
            })?
            .map_err(|source| McpError::List {
                server: label.clone(),
                source: Box::new(source),
            })?;
            if listed.len() + result.tools.len() > MAX_MCP_TOOLS {
                return Err(limit("the number of tools".into(), MAX_MCP_TOOLS));
            }
            listed.extend(result.tools);
            match result.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let mut names = HashSet::with_capacity(listed.len());
        let mut tools = Vec::with_capacity(listed.len());
        for tool in listed {
            let remote_name = tool.name.to_string();
            let invalid = |reason: String| McpError::InvalidToolName {
                server: label.clone(),
                tool: remote_name.clone(),
                reason,
            };
            let name = model_tool_name(&self.prefix, &remote_name).ok_or_else(|| {
                invalid(format!(
                    "the name is empty, or longer than {MAX_MCP_TOOL_NAME_LEN} characters once prefixed"
                ))
            })?;
            if !names.insert(name.clone()) {
                return Err(invalid(format!(
                    "another tool of the server is also named {name:?} once made valid for models"
                )));
            }
            let parameters = Value::Object((*tool.input_schema).clone());
            if exceeds(&parameters, MAX_MCP_SCHEMA_BYTES) {
                return Err(limit(
                    format!("the input schema of tool {remote_name:?}"),
                    MAX_MCP_SCHEMA_BYTES,
                ));
            }
            let description = tool.description.as_deref().unwrap_or_default().to_string();
            if description.len() > MAX_MCP_DESCRIPTION_BYTES {
                return Err(limit(
                    format!("the description of tool {remote_name:?}"),
                    MAX_MCP_DESCRIPTION_BYTES,
                ));
            }
            let safety = if self.trust_annotations {
                safety_from_annotations(tool.annotations.as_ref())
            } else {
                ToolSafety::Dangerous
            };
            tools.push(Arc::new(McpTool {
                name,
                remote_name,
                description,
                parameters,
                annotations: tool.annotations,
                safety,
                call_timeout: self.call_timeout,
                max_result_bytes: self.max_result_bytes,
                connection: Arc::clone(&self.connection),
            }));
        }
        Ok(tools)
    }

    /// Lists the server's tools and adds them to `builder`.
    ///
    /// # Errors
    /// As [`list_tools`](Self::list_tools).
    pub async fn register(
        &self,
        mut builder: ToolRegistryBuilder,
    ) -> Result<ToolRegistryBuilder, McpError> {
        for tool in self.list_tools().await? {
            builder = builder.tool(tool);
        }
        Ok(builder)
    }

    /// Closes the connection and waits (up to [`MCP_SHUTDOWN_TIMEOUT`]) for
    /// it to close: a stdio server has its stdin closed, then gets `SIGTERM`,
    /// then is killed. The client's tools fail with
    /// [`Unavailable`](flowtrace_core::ToolErrorKind::Unavailable) afterwards.
    /// Closing twice is harmless.
    ///
    /// # Errors
    /// [`McpError::Timeout`] when the connection did not close in time (a
    /// child process is still killed when the client and its tools are
    /// dropped), [`McpError::Shutdown`] when its task failed.
    pub async fn shutdown(&self) -> Result<(), McpError> {
        let service = self.connection.service.lock().await.take();
        let Some(mut service) = service else {
            return Ok(());
        };
        match service.close_with_timeout(MCP_SHUTDOWN_TIMEOUT).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(McpError::Timeout {
                server: self.connection.label.clone(),
                what: "shutdown",
                timeout: MCP_SHUTDOWN_TIMEOUT,
            }),
            Err(source) => Err(McpError::Shutdown {
                server: self.connection.label.clone(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_hide_credentials_and_queries() {
        assert_eq!(
            url_label("https://user:pw@example.com:8443/mcp?key=secret#x"),
            "https://example.com:8443/mcp"
        );
        assert_eq!(
            url_label("http://127.0.0.1:9/mcp"),
            "http://127.0.0.1:9/mcp"
        );
        let label = McpClient::stdio(tokio::process::Command::new("/opt/bin/mcp-server-time"));
        assert_eq!(label.label, "mcp-server-time");
    }

    #[test]
    fn urls_need_a_scheme_and_a_host() {
        assert!(check_url("s", "http://127.0.0.1:1/mcp").is_ok());
        assert!(check_url("s", "HTTPS://example.com").is_ok());
        for bad in [
            "ftp://example.com",
            "example.com/mcp",
            "http://",
            "https:///mcp",
        ] {
            assert!(
                matches!(check_url("s", bad), Err(McpError::InvalidConfig { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_builder_clamps_the_result_limit_and_hides_the_token() {
        let b = McpClient::http("http://127.0.0.1:1/mcp")
            .bearer_token("hunter2")
            .max_result_bytes(usize::MAX);
        assert_eq!(b.max_result_bytes, MAX_MCP_RESULT_BYTES);
        let shown = format!("{b:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[tokio::test]
    async fn bad_configurations_fail_before_connecting() {
        let err = McpClient::http("example.com/mcp").connect().await;
        assert!(matches!(err, Err(McpError::InvalidConfig { .. })));
        let err = McpClient::http("http://127.0.0.1:1/mcp")
            .bearer_token("two words")
            .connect()
            .await;
        assert!(matches!(err, Err(McpError::InvalidConfig { .. })));
        let err = McpClient::stdio(tokio::process::Command::new("true"))
            .bearer_token("t")
            .connect()
            .await;
        assert!(matches!(err, Err(McpError::InvalidConfig { .. })));
        let err = McpClient::stdio(tokio::process::Command::new(
            "/nonexistent/flowtrace-no-such-mcp-server",
        ))
        .connect()
        .await;
        match err {
            Err(e @ McpError::Spawn { .. }) => {
                assert_eq!(e.server(), "flowtrace-no-such-mcp-server");
                assert!(std::error::Error::source(&e).is_some());
            }
            other => panic!("expected a spawn error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_process_that_is_not_an_mcp_server_fails_the_handshake() {
        // `true` exits at once: the handshake sees the connection close.
        let err = McpClient::stdio(tokio::process::Command::new("true"))
            .connect()
            .await;
        match err {
            Err(e @ McpError::Handshake { .. }) => {
                assert!(std::error::Error::source(&e).is_some());
            }
            other => panic!("expected a handshake error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_silent_server_times_out_the_handshake() {
        let mut command = tokio::process::Command::new("sleep");
        command.arg("30");
        let err = McpClient::stdio(command)
            .request_timeout(Duration::from_millis(200))
            .connect()
            .await;
        assert!(
            matches!(
                err,
                Err(McpError::Timeout {
                    what: "the initialize handshake",
                    ..
                })
            ),
            "{err:?}"
        );
    }
}
