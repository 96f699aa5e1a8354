//! One MCP server tool as a FlowTrace [`Tool`].

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flowtrace_core::{Tool, ToolError, ToolErrorKind, ToolSafety};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ContentBlock, ErrorCode, ToolAnnotations,
};
use rmcp::service::ServiceError;
use serde_json::Value;

use super::client::Connection;
use super::{MAX_MCP_ERROR_MESSAGE_BYTES, MAX_MCP_TOOL_NAME_LEN};

/// The [`ToolSafety`] that a tool's MCP annotations claim.
///
/// A tool is [`Safe`](ToolSafety::Safe) only when it says it is read-only
/// (`readOnlyHint: true`) and does not also say it is destructive
/// (`destructiveHint: true`); anything else, including no annotations at
/// all, is [`Dangerous`](ToolSafety::Dangerous). The MCP specification
/// defaults `readOnlyHint` to false, so silence never makes a tool safe.
///
/// Annotations are hints from the server: trust them only for servers you
/// trust (see [`McpClientBuilder::trust_annotations`](super::McpClientBuilder::trust_annotations)).
///
/// ```
/// use flowtrace_agents::mcp::{safety_from_annotations, ToolAnnotations};
/// use flowtrace_core::ToolSafety;
///
/// let read_only = ToolAnnotations::new().read_only(true);
/// assert_eq!(safety_from_annotations(Some(&read_only)), ToolSafety::Safe);
///
/// let contradictory = ToolAnnotations::new().read_only(true).destructive(true);
/// assert_eq!(safety_from_annotations(Some(&contradictory)), ToolSafety::Dangerous);
///
/// let writes = ToolAnnotations::new().read_only(false).destructive(false);
/// assert_eq!(safety_from_annotations(Some(&writes)), ToolSafety::Dangerous);
///
/// assert_eq!(safety_from_annotations(Some(&ToolAnnotations::new())), ToolSafety::Dangerous);
/// assert_eq!(safety_from_annotations(None), ToolSafety::Dangerous);
/// ```
pub fn safety_from_annotations(annotations: Option<&ToolAnnotations>) -> ToolSafety {
    match annotations {
        Some(a) if a.read_only_hint == Some(true) && a.destructive_hint != Some(true) => {
            ToolSafety::Safe
        }
        _ => ToolSafety::Dangerous,
    }
}

/// The name a model sees for the server's tool `remote`: `prefix` followed
/// by `remote`, with every character outside `[A-Za-z0-9_-]` replaced by
/// `_`, so that it matches what model APIs accept (`^[a-zA-Z0-9_-]{1,64}$`).
/// A prefix `time.` thus gives `time_get_current_time`.
///
/// `None` when `remote` is empty or the result is longer than
/// [`MAX_MCP_TOOL_NAME_LEN`].
///
/// ```
/// use flowtrace_agents::mcp::model_tool_name;
///
/// assert_eq!(model_tool_name("time.", "get_current_time").as_deref(), Some("time_get_current_time"));
/// assert_eq!(model_tool_name("", "files/read file").as_deref(), Some("files_read_file"));
/// assert_eq!(model_tool_name("x.", ""), None);
/// assert_eq!(model_tool_name("", &"x".repeat(65)), None);
/// ```
pub fn model_tool_name(prefix: &str, remote: &str) -> Option<String> {
    if remote.is_empty() {
        return None;
    }
    let name: String = prefix
        .chars()
        .chain(remote.chars())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    (name.len() <= MAX_MCP_TOOL_NAME_LEN).then_some(name)
}

/// One tool of an MCP server, callable as a FlowTrace [`Tool`].
///
/// Made by [`McpClient::list_tools`](super::McpClient::list_tools). Its
/// [`parameters`](Tool::parameters) are the server's `inputSchema`, its
/// [`safety`](Tool::safety) comes from the server's annotations (see
/// [`safety_from_annotations`]), and [`call`](Tool::call) sends `tools/call`
/// to the server:
///
/// - the result is the call's `structuredContent` when there is one;
///   otherwise its text blocks joined by newlines as a JSON string when all
///   blocks are text; otherwise the blocks themselves as a JSON array (empty
///   content gives `null`);
/// - a result with `isError: true` is a [`ToolError`] of kind
///   [`Failed`](ToolErrorKind::Failed) carrying the server's text;
/// - a JSON-RPC error is [`InvalidInput`](ToolErrorKind::InvalidInput)
///   (invalid params), [`NotFound`](ToolErrorKind::NotFound) (method not
///   found) or [`Failed`](ToolErrorKind::Failed);
/// - a broken or closed connection is
///   [`Unavailable`](ToolErrorKind::Unavailable), with the transport error
///   as source;
/// - no answer within the call timeout is [`Timeout`](ToolErrorKind::Timeout)
///   (the request is cancelled on the server);
/// - a result larger than the result limit (at most
///   [`MAX_MCP_RESULT_BYTES`](super::MAX_MCP_RESULT_BYTES) of JSON) is
///   [`LimitExceeded`](ToolErrorKind::LimitExceeded).
///
/// The tool keeps the connection open while it exists.
pub struct McpTool {
    pub(crate) name: String,
    pub(crate) remote_name: String,
    pub(crate) description: String,
    pub(crate) parameters: Value,
    pub(crate) annotations: Option<ToolAnnotations>,
    pub(crate) safety: ToolSafety,
    pub(crate) call_timeout: Duration,
    pub(crate) max_result_bytes: usize,
    pub(crate) connection: Arc<Connection>,
}

impl fmt::Debug for McpTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McpTool")
            .field("name", &self.name)
            .field("remote_name", &self.remote_name)
            .field("server", &self.connection.label)
            .field("safety", &self.safety)
            .field("call_timeout", &self.call_timeout)
            .field("max_result_bytes", &self.max_result_bytes)
            .finish_non_exhaustive()
    }
}

impl McpTool {
    /// The tool's name on the server (the name [`Tool::name`] gives is
    /// prefixed and sanitized).
    pub fn remote_name(&self) -> &str {
        &self.remote_name
    }

    /// The label of the server the tool belongs to.
    pub fn server(&self) -> &str {
        &self.connection.label
    }

    /// The annotations the server gave the tool, if any.
    pub fn annotations(&self) -> Option<&ToolAnnotations> {
        self.annotations.as_ref()
    }

    fn error(&self, kind: ToolErrorKind, message: impl Into<String>) -> ToolError {
        ToolError::new(self.name.clone(), kind, message)
    }

    fn service_error(&self, error: ServiceError) -> ToolError {
        let server = &self.connection.label;
        match &error {
            ServiceError::McpError(data) => {
                let kind = match data.code {
                    ErrorCode::INVALID_PARAMS => ToolErrorKind::InvalidInput,
                    ErrorCode::METHOD_NOT_FOUND => ToolErrorKind::NotFound,
                    _ => ToolErrorKind::Failed,
                };
                let message = format!(
                    "MCP server {server:?} answered error {}: {}",
                    data.code.0,
                    bounded(&data.message)
                );
                self.error(kind, message).with_source(error)
            }
            ServiceError::Timeout { timeout } => {
                let message = format!("MCP server {server:?} did not answer within {timeout:?}");
                self.error(ToolErrorKind::Timeout, message)
                    .with_source(error)
            }
            ServiceError::UnexpectedResponse | ServiceError::InputRequiredRoundsExceeded { .. } => {
                let message = format!("MCP server {server:?} gave an unexpected answer");
                self.error(ToolErrorKind::Failed, message)
                    .with_source(error)
            }
            _ => {
                let message = format!("the connection to MCP server {server:?} failed");
                self.error(ToolErrorKind::Unavailable, message)
                    .with_source(error)
            }
        }
    }
}

/// The JSON value of a completed `tools/call` (see [`McpTool`]), or the
/// error it reports.
fn convert(
    tool: &str,
    server: &str,
    result: CallToolResult,
    max_bytes: usize,
) -> Result<Value, ToolError> {
    let error = |kind, message: String| ToolError::new(tool, kind, message);
    if result.is_error == Some(true) {
        let text = texts(&result.content).join("\n");
        let message = if text.is_empty() {
            format!("MCP server {server:?} reported an error without a message")
        } else {
            bounded(&text).to_string()
        };
        return Err(error(ToolErrorKind::Failed, message));
    }
    let value = match result.structured_content {
        Some(structured) => structured,
        None if result.content.is_empty() => Value::Null,
        None if result.content.iter().all(|b| b.as_text().is_some()) => {
            Value::String(texts(&result.content).join("\n"))
        }
        None => serde_json::to_value(&result.content).map_err(|e| {
            error(
                ToolErrorKind::Failed,
                format!("cannot represent the result of MCP server {server:?} as JSON"),
            )
            .with_source(e)
        })?,
    };
    if exceeds(&value, max_bytes) {
        return Err(error(
            ToolErrorKind::LimitExceeded,
            format!(
                "the result from MCP server {server:?} is larger than {max_bytes} bytes of JSON"
            ),
        ));
    }
    Ok(value)
}

#[async_trait]
impl Tool for McpTool {
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn parameters(&self) -> Value {
        self.parameters.clone()
    }

    fn safety(&self) -> ToolSafety {
        self.safety
    }

    async fn call(&self, args: Value) -> Result<Value, ToolError> {
        let mut params = CallToolRequestParams::new(self.remote_name.clone());
        match args {
            Value::Object(arguments) => params = params.with_arguments(arguments),
            Value::Null => {}
            other => {
                return Err(self.error(
                    ToolErrorKind::InvalidInput,
                    format!(
                        "MCP tool arguments must be a JSON object, not {}",
                        json_type(&other)
                    ),
                ));
            }
        }
        let peer = &self.connection.peer;
        let result = match tokio::time::timeout(self.call_timeout, peer.call_tool(params)).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => return Err(self.service_error(e)),
            Err(_) => {
                return Err(self.error(
                    ToolErrorKind::Timeout,
                    format!(
                        "MCP server {:?} did not answer within {:?}",
                        self.connection.label, self.call_timeout
                    ),
                ));
            }
        };
        convert(
            &self.name,
            &self.connection.label,
            result,
            self.max_result_bytes,
        )
    }
}

fn texts(content: &[ContentBlock]) -> Vec<&str> {
    content
        .iter()
        .filter_map(|b| b.as_text().map(|t| t.text.as_str()))
        .collect()
}

/// `text` cut to at most [`MAX_MCP_ERROR_MESSAGE_BYTES`], on a character boundary.
fn bounded(text: &str) -> &str {
    if text.len() <= MAX_MCP_ERROR_MESSAGE_BYTES {
        return text;
    }
    let mut end = MAX_MCP_ERROR_MESSAGE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether `value` serializes to more than `limit` bytes of JSON; stops
/// counting at the limit.
pub(crate) fn exceeds(value: &Value, limit: usize) -> bool {
    struct Budget {
        left: usize,
    }
    impl io::Write for Budget {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            match self.left.checked_sub(buf.len()) {
                Some(left) => {
                    self.left = left;
                    Ok(buf.len())
                }
                None => Err(io::Error::other("over budget")),
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(&mut Budget { left: limit }, value).is_err()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn results_become_json() {
        let ok = |r: CallToolResult| convert("t", "s", r, 1000);
        let structured = CallToolResult::structured(json!({"a": 1}));
        assert_eq!(ok(structured).unwrap(), json!({"a": 1}));
        assert_eq!(ok(CallToolResult::success(vec![])).unwrap(), Value::Null);
        let texts = CallToolResult::success(vec![ContentBlock::text("a"), ContentBlock::text("b")]);
        assert_eq!(ok(texts).unwrap(), json!("a\nb"));
        let mixed = CallToolResult::success(vec![
            ContentBlock::text("see"),
            ContentBlock::image("AAAA", "image/png"),
        ]);
        let mixed = ok(mixed).unwrap();
        assert_eq!(mixed[0], json!({"type": "text", "text": "see"}));
        assert_eq!(mixed[1]["type"], "image");
        assert_eq!(mixed[1]["mimeType"], "image/png");

        let e = ok(CallToolResult::error(vec![ContentBlock::text("boom")])).unwrap_err();
        assert_eq!(
            (e.kind(), e.message.as_str(), e.tool.as_str()),
            (ToolErrorKind::Failed, "boom", "t")
        );
        let e = ok(CallToolResult::error(vec![])).unwrap_err();
        assert!(e.message.contains("without a message"), "{e}");
        let long = "x".repeat(2 * MAX_MCP_ERROR_MESSAGE_BYTES);
        let e = ok(CallToolResult::error(vec![ContentBlock::text(long)])).unwrap_err();
        assert_eq!(e.message.len(), MAX_MCP_ERROR_MESSAGE_BYTES);

        let e = convert(
            "t",
            "s",
            CallToolResult::success(vec![ContentBlock::text("abcdef")]),
            7,
        )
        .unwrap_err();
        assert_eq!(e.kind(), ToolErrorKind::LimitExceeded);
        // "abcdef" with its quotes is exactly 8 bytes.
        assert!(
            convert(
                "t",
                "s",
                CallToolResult::success(vec![ContentBlock::text("abcdef")]),
                8
            )
            .is_ok()
        );
    }

    #[test]
    fn the_size_budget_is_exact() {
        let v = json!({"a": "bcd"});
        let len = serde_json::to_vec(&v).map(|b| b.len()).unwrap_or(0);
        assert_eq!(len, 11);
        assert!(!exceeds(&v, 11));
        assert!(exceeds(&v, 10));
        assert!(exceeds(&v, 0));
    }

    #[test]
    fn error_text_is_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_MCP_ERROR_MESSAGE_BYTES);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_MCP_ERROR_MESSAGE_BYTES);
        assert!(cut.len() >= MAX_MCP_ERROR_MESSAGE_BYTES - 1);
        assert_eq!(bounded("short"), "short");
    }

    proptest! {
        #[test]
        fn model_names_are_valid_or_refused(prefix in "\\PC{0,8}", remote in "\\PC{0,80}") {
            match model_tool_name(&prefix, &remote) {
                Some(name) => {
                    prop_assert!(!name.is_empty() && name.len() <= MAX_MCP_TOOL_NAME_LEN);
                    prop_assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
                    prop_assert_eq!(name.chars().count(), prefix.chars().count() + remote.chars().count());
                }
                None => prop_assert!(remote.is_empty() || prefix.chars().count() + remote.chars().count() > MAX_MCP_TOOL_NAME_LEN),
            }
        }
    }
}
