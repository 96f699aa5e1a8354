//! Tools from Model Context Protocol servers, through the official Rust SDK
//! [`rmcp`].
//!
//! An [`McpClient`] connects to a server over stdio (a child process) or
//! Streamable HTTP (optionally with a bearer token sent only to the server's
//! origin), performs the `initialize` handshake and lists the server's tools
//! (following pagination, within [`MAX_MCP_TOOLS`]). Each becomes an
//! [`McpTool`]: an ordinary [`Tool`](flowtrace_core::Tool) whose schema is the
//! server's `inputSchema` and whose [`ToolSafety`](flowtrace_core::ToolSafety)
//! comes from the server's annotations ([`safety_from_annotations`]).
//! Registered in a [`ToolRegistry`](crate::tools::ToolRegistry), MCP tools get
//! the same input validation, permissions and `tool.*` events as any other
//! tool; a call has a timeout and a bounded result size.
//!
//! Limits on what a server may send are named constants below.

mod client;
mod error;
mod tool;

use std::time::Duration;

pub use client::{MCP_SHUTDOWN_TIMEOUT, McpClient, McpClientBuilder};
pub use error::McpError;
pub use rmcp::model::ToolAnnotations;
pub use tool::{McpTool, model_tool_name, safety_from_annotations};

/// Most tools taken from one server (over all `tools/list` pages).
pub const MAX_MCP_TOOLS: usize = 512;

/// Most `tools/list` pages followed for one listing (a server whose cursors
/// never end is refused).
pub const MAX_MCP_LIST_PAGES: usize = 64;

/// Largest input schema of one tool, in bytes of JSON.
pub const MAX_MCP_SCHEMA_BYTES: usize = 64 * 1024;

/// Largest description of one tool, in bytes (descriptions go into every
/// model request that offers the tool).
pub const MAX_MCP_DESCRIPTION_BYTES: usize = 8 * 1024;

/// Longest tool name offered to a model, prefix included (the limit of the
/// common model APIs).
pub const MAX_MCP_TOOL_NAME_LEN: usize = 64;

/// Largest tool result accepted, in bytes of JSON (lower it per client with
/// [`McpClientBuilder::max_result_bytes`]).
pub const MAX_MCP_RESULT_BYTES: usize = 4 * 1024 * 1024;

/// Largest single message accepted from a server, in bytes: a stdio line
/// (rmcp's own bound, which this equals) or a Streamable HTTP JSON response
/// or SSE event (set on the transport). A larger message fails the request.
pub const MAX_MCP_MESSAGE_BYTES: usize = rmcp::transport::async_rw::DEFAULT_MAX_LINE_LENGTH;

/// Longest server error text kept in a [`ToolError`](flowtrace_core::ToolError)
/// message, in bytes; the rest is cut.
pub const MAX_MCP_ERROR_MESSAGE_BYTES: usize = 4 * 1024;

/// Default time the `initialize` handshake and each `tools/list` page may take.
pub const DEFAULT_MCP_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Default time one tool call may take.
pub const DEFAULT_MCP_CALL_TIMEOUT: Duration = Duration::from_secs(60);
