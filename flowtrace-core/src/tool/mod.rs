//! Tools: named, schema-described functions that nodes and agents call.
//!
//! Call a tool through [`NodeContext::call_tool`](crate::NodeContext::call_tool)
//! so the call appears in the trace as `tool.request` / `tool.response`.

use async_trait::async_trait;

use crate::model::ToolSpec;

/// A failed tool call.
#[derive(Clone, Debug, thiserror::Error)]
#[error("tool {tool:?} failed: {message}")]
#[non_exhaustive]
pub struct ToolError {
    /// The tool's name.
    pub tool: String,
    /// What went wrong.
    pub message: String,
    /// Whether calling again may succeed.
    pub retryable: bool,
}

impl ToolError {
    /// A failure that will recur on retry (bad arguments, missing file).
    pub fn permanent(tool: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            tool: tool.into(),
            message: message.into(),
            retryable: false,
        }
    }

    /// A failure that may pass on retry (a flaky network).
    pub fn transient(tool: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            retryable: true,
            ..Self::permanent(tool, message)
        }
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
