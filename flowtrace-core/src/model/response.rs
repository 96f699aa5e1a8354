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

    /// The reply as an assistant message (with its tool calls).
    pub fn to_message(&self) -> Message {
        Message {
            tool_calls: self.tool_calls.clone(),
            ..Message::assistant(self.text.clone())
        }
    }
}
