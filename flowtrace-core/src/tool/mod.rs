//! Tools: named, schema-described functions that nodes and agents call.
//!
//! Call a tool through [`NodeContext::call_tool`](crate::NodeContext::call_tool)
//! so the call appears in the trace as `tool.request` / `tool.response`.

use std::sync::Arc;

use async_trait::async_trait;

use crate::model::ToolSpec;

/// What kind of failure a [`ToolError`] is, for callers that branch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ToolErrorKind {
    /// The arguments are wrong (missing, mistyped, malformed). Permanent.
    InvalidInput,
    /// What the call names does not exist (a file, a record). Permanent.
    NotFound,
    /// The tool refuses the call (outside its sandbox, not allowed). Permanent.
    PermissionDenied,
    /// The call ran out of time. Retryable.
    Timeout,
    /// The input or output exceeds one of the tool's limits (size, depth,
    /// count). Permanent.
    LimitExceeded,
    /// Something the tool depends on is temporarily unavailable (a flaky
    /// network, a busy server). Retryable.
    Unavailable,
    /// Any other failure. Permanent.
    Failed,
}

impl ToolErrorKind {
    /// Whether calling again may succeed: [`Timeout`](Self::Timeout) and
    /// [`Unavailable`](Self::Unavailable).
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Timeout | Self::Unavailable)
    }

    /// A short, stable name (`invalid_input`, `not_found`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidInput => "invalid_input",
            Self::NotFound => "not_found",
            Self::PermissionDenied => "permission_denied",
            Self::Timeout => "timeout",
            Self::LimitExceeded => "limit_exceeded",
            Self::Unavailable => "unavailable",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for ToolErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed tool call: which tool, what [`kind`](ToolErrorKind) of failure,
/// a message for people and, when there is one, the underlying error as
/// [`source()`](std::error::Error::source) (not repeated in the message).
///
/// ```
/// use std::error::Error as _;
/// use flowtrace_core::tool::{ToolError, ToolErrorKind};
/// let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
/// let e = ToolError::new("read_file", ToolErrorKind::NotFound, "cannot open notes.txt").with_source(io);
/// assert!(!e.is_retryable());
/// assert_eq!(e.to_string(), r#"tool "read_file" failed: cannot open notes.txt"#);
/// assert_eq!(e.source().map(|s| s.to_string()).as_deref(), Some("no such file"));
/// ```
#[derive(Clone, Debug, thiserror::Error)]
#[error("tool {tool:?} failed: {message}")]
#[non_exhaustive]
pub struct ToolError {
    /// The tool's name.
    pub tool: String,
    /// What kind of failure.
    pub kind: ToolErrorKind,
    /// What went wrong.
    pub message: String,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl ToolError {
    /// A failure of `kind`.
    pub fn new(tool: impl Into<String>, kind: ToolErrorKind, message: impl Into<String>) -> Self {
        Self {
            tool: tool.into(),
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// A failure that will recur on retry, of kind
    /// [`Failed`](ToolErrorKind::Failed); prefer [`new`](Self::new) with a
    /// precise kind.
    pub fn permanent(tool: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(tool, ToolErrorKind::Failed, message)
    }

    /// A failure that may pass on retry, of kind
    /// [`Unavailable`](ToolErrorKind::Unavailable).
    pub fn transient(tool: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(tool, ToolErrorKind::Unavailable, message)
    }

    /// Attaches the underlying error, exposed as
    /// [`source()`](std::error::Error::source).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// What kind of failure.
    pub fn kind(&self) -> ToolErrorKind {
        self.kind
    }

    /// Whether calling again may succeed (from the kind).
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

/// Whether calling a tool can change anything outside the call.
///
/// Agents may call [`Safe`](Self::Safe) tools by default and
/// [`Dangerous`](Self::Dangerous) ones only when granted by name.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ToolSafety {
    /// Read-only: no side effects (a lookup, a computation).
    Safe,
    /// Has side effects (writes, sends, spends, deletes). The default for a
    /// tool that does not say otherwise.
    #[default]
    Dangerous,
}

impl ToolSafety {
    /// `safe` or `dangerous`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Safe => "safe",
            Self::Dangerous => "dangerous",
        }
    }
}

impl std::fmt::Display for ToolSafety {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tool.
///
/// ```
/// use async_trait::async_trait;
/// use flowtrace_core::{Tool, ToolError};
/// use serde_json::{json, Value};
///
/// struct Add;
///
/// #[async_trait]
/// impl Tool for Add {
///     fn name(&self) -> &str { "add" }
///     fn description(&self) -> &str { "Adds two integers" }
///     fn parameters(&self) -> Value {
///         json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]})
///     }
///     async fn call(&self, args: Value) -> Result<Value, ToolError> {
///         let a = args["a"].as_i64().ok_or_else(|| ToolError::permanent("add", "a must be an integer"))?;
///         let b = args["b"].as_i64().ok_or_else(|| ToolError::permanent("add", "b must be an integer"))?;
///         Ok(json!(a + b))
///     }
/// }
/// ```
#[async_trait]
pub trait Tool: Send + Sync {
    /// The name the model uses to call it.
    fn name(&self) -> &str;

    /// What it does, for the model.
    fn description(&self) -> &str;

    /// JSON Schema of its arguments.
    fn parameters(&self) -> serde_json::Value;

    /// Whether it has side effects. Defaults to
    /// [`Dangerous`](ToolSafety::Dangerous): a tool is trusted as read-only
    /// only when it says so.
    fn safety(&self) -> ToolSafety {
        ToolSafety::Dangerous
    }

    /// Runs the tool.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the call midway; side effects already
    /// made stay made.
    async fn call(&self, args: serde_json::Value) -> Result<serde_json::Value, ToolError>;

    /// The tool's description for a [`ChatRequest`](crate::ChatRequest).
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name().to_string(),
            description: self.description().to_string(),
            parameters: self.parameters(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn kinds_decide_retries_and_the_source_is_printed_once() {
        assert!(ToolError::transient("t", "busy").is_retryable());
        assert!(!ToolError::permanent("t", "bad").is_retryable());
        assert_eq!(
            ToolError::permanent("t", "bad").kind(),
            ToolErrorKind::Failed
        );
        assert!(ToolError::new("t", ToolErrorKind::Timeout, "slow").is_retryable());
        for kind in [
            ToolErrorKind::InvalidInput,
            ToolErrorKind::NotFound,
            ToolErrorKind::PermissionDenied,
            ToolErrorKind::LimitExceeded,
            ToolErrorKind::Failed,
        ] {
            let e = ToolError::new("t", kind, "x");
            assert!(!e.is_retryable(), "{kind}");
            // `?` in a node keeps the kind's classification.
            let node: crate::error::NodeError = e.into();
            assert!(!node.is_retryable(), "{kind}");
        }
        let node: crate::error::NodeError =
            ToolError::new("t", ToolErrorKind::Timeout, "slow").into();
        assert!(node.is_retryable());
        let cause = std::io::Error::other("disk on fire");
        let e = ToolError::new("t", ToolErrorKind::Unavailable, "cannot read").with_source(cause);
        assert_eq!(e.to_string(), "tool \"t\" failed: cannot read");
        assert_eq!(
            e.source().map(ToString::to_string).as_deref(),
            Some("disk on fire")
        );
        assert_eq!(
            ToolErrorKind::PermissionDenied.to_string(),
            "permission_denied"
        );
    }
}
