//! Built-in [`Tool`](flowtrace_core::Tool)s for JSON workflows.
//!
//! * [`ReadFile`] (`read_file`) — reads a UTF-8 text file confined to a root
//!   directory, optionally parsing it as CSV into rows;
//! * [`TransformJson`] (`transform_json`) — queries or reshapes JSON with a
//!   [JMESPath](https://jmespath.org/) expression;
//! * `HttpRequest` (`http_request`, with the `openai` or `anthropic`
//!   feature, whose HTTP client it shares) — an HTTP request to an
//!   allowlisted host, with per-origin credentials and size and time limits.
//!
//! `ReadFile` and `TransformJson` are read-only: their
//! [`safety`](flowtrace_core::Tool::safety) is
//! [`ToolSafety::Safe`](flowtrace_core::ToolSafety::Safe). `HttpRequest` is
//! `Dangerous`, except its `GET`/`HEAD`-only `HttpRequest::read_only` form.
//!
//! Each describes its arguments with a JSON Schema
//! ([`Tool::parameters`](flowtrace_core::Tool::parameters)) and fails with a
//! [`ToolError`](flowtrace_core::ToolError) whose
//! [`ToolErrorKind`](flowtrace_core::tool::ToolErrorKind) says why (invalid
//! input, not found, permission denied, limit exceeded, …), with the
//! underlying error as its `source()`; bad arguments are never retryable,
//! so a retry policy does not call them again in vain.

#[cfg(any(feature = "openai", feature = "anthropic"))]
mod http_request;
mod read_file;
mod transform_json;

#[cfg(any(feature = "openai", feature = "anthropic"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "openai", feature = "anthropic"))))]
pub use http_request::{HttpRequest, HttpRequestConfigError};
pub use read_file::ReadFile;
pub use transform_json::TransformJson;

/// The name of [`ReadFile`].
pub const READ_FILE: &str = "read_file";
/// The name of [`TransformJson`].
pub const TRANSFORM_JSON: &str = "transform_json";
/// The name of `HttpRequest`.
pub const HTTP_REQUEST: &str = "http_request";
