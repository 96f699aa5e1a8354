//! What a model answers: the [`ChatResponse`] and why it stopped.

use serde::{Deserialize, Serialize};

use super::{Message, ToolCall};
use crate::pricing::TokenUsage;

/// Why the model stopped.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A natural end or a stop sequence.
    Stop,
    /// The token limit.
    Length,
    /// The model called tools.
    ToolCalls,
    /// The provider's content filter.
    ContentFilter,
    /// Anything else, as the provider named it.
    Other(String),
}

/// A provider-neutral chat response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChatResponse {
    /// The reply's text.
    pub text: String,
    /// Tool calls the model asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// Tokens, as the provider reported them.
    pub usage: TokenUsage,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// The model that answered (may be a dated snapshot of the requested one).
    pub model: String,
    /// The provider that answered, when it differs from the called model's
    /// (set by fallback chains); used for pricing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Whether the reply came from a cache (it then costs nothing).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
}

impl ChatResponse {
    /// A text reply that stopped naturally.
    pub fn text(model: impl Into<String>, text: impl Into<String>, usage: TokenUsage) -> Self {
        Self {
            text: text.into(),
            tool_calls: Vec::new(),
            usage,
            finish_reason: FinishReason::Stop,
            model: model.into(),
            provider: None,
            cached: false,
        }
    }

    /// The reply with `calls` as its tool calls.
    ///
    /// ```
    /// use flowtrace_core::{ChatResponse, FinishReason, TokenUsage};
    /// use flowtrace_core::model::ToolCall;
    ///
    /// let call = ToolCall { id: "c1".into(), name: "search".into(), arguments: serde_json::json!({}) };
    /// let reply = ChatResponse::text("m", "", TokenUsage::new(3, 1))
    ///     .with_tool_calls(vec![call])
    ///     .with_finish_reason(FinishReason::ToolCalls);
    /// assert_eq!(reply.tool_calls.len(), 1);
    /// ```
    #[must_use]
    pub fn with_tool_calls(mut self, calls: Vec<ToolCall>) -> Self {
        self.tool_calls = calls;
        self
    }

    /// The reply with `reason` as why the model stopped.
    #[must_use]
    pub fn with_finish_reason(mut self, reason: FinishReason) -> Self {
        self.finish_reason = reason;
        self
    }

    /// The reply as an assistant message (with its tool calls).
    pub fn to_message(&self) -> Message {
        Message::assistant(self.text.clone()).with_tool_calls(self.tool_calls.clone())
    }
}
