//! Why connecting to an MCP server or listing its tools failed.

use std::time::Duration;

use rmcp::service::{ClientInitializeError, ServiceError};

/// Why an MCP server could not be connected to or its tools listed.
///
/// Each variant names the server (its label: the program for stdio, the URL
/// without its query for Streamable HTTP) and, where there is one, carries
/// the underlying error as [`source()`](std::error::Error::source).
///
/// Failures of individual tool calls are [`ToolError`](flowtrace_core::ToolError)s
/// instead, so that they flow through the tool registry like any other tool's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum McpError {
    /// The server's child process could not be started.
    #[error("MCP server {server:?}: cannot start the process")]
    Spawn {
        /// The server.
        server: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The client is configured wrongly (an unusable URL or token, a token
    /// for a stdio server).
    #[error("MCP server {server:?}: invalid configuration: {reason}")]
    InvalidConfig {
        /// The server.
        server: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The `initialize` handshake failed (the server could not be reached,
    /// refused, answered something else, or closed the connection).
    #[error("MCP server {server:?}: the initialize handshake failed")]
    Handshake {
        /// The server.
        server: String,
        /// Why.
        #[source]
        source: Box<ClientInitializeError>,
    },
    /// A request did not complete in time.
    #[error("MCP server {server:?}: {what} did not complete within {timeout:?}")]
    Timeout {
        /// The server.
        server: String,
        /// What timed out (`the initialize handshake`, `tools/list`, `shutdown`).
        what: &'static str,
        /// The timeout.
        timeout: Duration,
    },
    /// Listing the server's tools failed.
    #[error("MCP server {server:?}: tools/list failed")]
    List {
        /// The server.
        server: String,
        /// Why.
        #[source]
        source: Box<ServiceError>,
    },
    /// The server exceeds one of the named limits
    /// ([`MAX_MCP_TOOLS`](super::MAX_MCP_TOOLS),
    /// [`MAX_MCP_LIST_PAGES`](super::MAX_MCP_LIST_PAGES),
    /// [`MAX_MCP_SCHEMA_BYTES`](super::MAX_MCP_SCHEMA_BYTES),
    /// [`MAX_MCP_DESCRIPTION_BYTES`](super::MAX_MCP_DESCRIPTION_BYTES)).
    #[error("MCP server {server:?}: {what} exceeds the limit of {limit}")]
    LimitExceeded {
        /// The server.
        server: String,
        /// What exceeds it (`tools`, `tools/list pages`, the schema of a named tool, …).
        what: String,
        /// The limit.
        limit: usize,
    },
    /// A tool's name cannot be offered to a model (empty, or too long once
    /// prefixed), or two of the server's tools map to the same name.
    #[error("MCP server {server:?}: tool {tool:?}: {reason}")]
    InvalidToolName {
        /// The server.
        server: String,
        /// The tool's name as the server gives it.
        tool: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The connection's task failed while closing.
    #[error("MCP server {server:?}: the connection failed while closing")]
    Shutdown {
        /// The server.
        server: String,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl McpError {
    /// The label of the server the error is about.
    pub fn server(&self) -> &str {
        match self {
            Self::Spawn { server, .. }
            | Self::InvalidConfig { server, .. }
            | Self::Shutdown { server, .. }
            | Self::Handshake { server, .. }
            | Self::Timeout { server, .. }
            | Self::List { server, .. }
            | Self::LimitExceeded { server, .. }
            | Self::InvalidToolName { server, .. } => server,
        }
    }
}
