//! The provider-neutral chat model contract.
//!
//! Providers (OpenAI, Anthropic, OpenAI-compatible servers) implement
//! [`ChatModel`]; nodes call a model through
//! [`NodeContext::chat`](crate::NodeContext::chat), which records the call in
//! the trace, prices it and enforces the run's budgets.

mod error;
mod messages;
mod request;
mod response;
mod stream;
mod wrapper;

pub use error::{ModelError, ModelErrorKind};
pub use messages::Messages;
pub use request::{ChatRequest, Message, ResponseFormat, Role, ToolCall, ToolChoice, ToolSpec};
pub use response::{ChatResponse, FinishReason};
pub use stream::{CallObserver, ChatStream, NoopObserver, RemainingBudget, StreamEvent};
pub use wrapper::{ModelWrapper, ObservedModel};

use async_trait::async_trait;
use futures::StreamExt;

/// A chat model behind some provider.
///
/// Implementations must be cheap to share (`Arc<dyn ChatModel>`) and must
/// never put credentials in errors. Only [`provider`](ChatModel::provider)
/// and [`chat`](ChatModel::chat) are required; streaming defaults to one
/// delta with the whole reply, and the `_observed` variants default to the
/// plain calls.
#[async_trait]
pub trait ChatModel: Send + Sync {
    /// The provider's name, as used in the price table (`openai`, `anthropic`).
    fn provider(&self) -> &str;

    /// Sends one request and waits for the whole reply.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the request; nothing is recorded.
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ModelError>;

    /// Sends one request and streams the reply as it is generated.
    ///
    /// # Cancel safety
    /// Dropping the stream abandons the request.
    fn chat_stream(&self, request: ChatRequest) -> ChatStream<'_> {
        Box::pin(
            futures::stream::once(async move { self.chat(request).await }).flat_map(|r| {
                let events: Vec<Result<StreamEvent, ModelError>> = match r {
                    Ok(resp) => vec![
                        Ok(StreamEvent::Delta(resp.text.clone())),
                        Ok(StreamEvent::Done(resp)),
                    ],
                    Err(e) => vec![Err(e)],
                };
                futures::stream::iter(events)
            }),
        )
    }

    /// [`chat`](ChatModel::chat), reporting side events (fallbacks, cache
    /// hits) to `observer`. Wrappers override it; plain clients need not.
    async fn chat_observed(
        &self,
        request: ChatRequest,
        observer: &dyn CallObserver,
    ) -> Result<ChatResponse, ModelError> {
        let _ = observer;
        self.chat(request).await
    }

    /// [`chat_stream`](ChatModel::chat_stream), reporting side events to
    /// `observer`.
    fn chat_stream_observed<'a>(
        &'a self,
        request: ChatRequest,
        observer: &'a dyn CallObserver,
    ) -> ChatStream<'a> {
        let _ = observer;
        self.chat_stream(request)
    }

    /// Estimates the prompt tokens of `request` before sending it, for budget
    /// pre-checks. Defaults to [`ChatRequest::approx_input_tokens`].
    fn estimate_input_tokens(&self, request: &ChatRequest) -> u64 {
        request.approx_input_tokens()
    }
}

#[async_trait]
impl<M: ChatModel + ?Sized> ChatModel for std::sync::Arc<M> {
    fn provider(&self) -> &str {
        (**self).provider()
    }
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ModelError> {
        (**self).chat(request).await
    }
    fn chat_stream(&self, request: ChatRequest) -> ChatStream<'_> {
        (**self).chat_stream(request)
    }
    async fn chat_observed(
        &self,
        request: ChatRequest,
        observer: &dyn CallObserver,
    ) -> Result<ChatResponse, ModelError> {
        (**self).chat_observed(request, observer).await
    }
    fn chat_stream_observed<'a>(
        &'a self,
        request: ChatRequest,
        observer: &'a dyn CallObserver,
    ) -> ChatStream<'a> {
        (**self).chat_stream_observed(request, observer)
    }
    fn estimate_input_tokens(&self, request: &ChatRequest) -> u64 {
        (**self).estimate_input_tokens(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classification() {
        assert!(ModelErrorKind::RateLimited { retry_after: None }.is_retryable());
        assert!(ModelErrorKind::Overloaded.is_retryable());
        assert!(!ModelErrorKind::Auth.is_retryable());
        assert!(!ModelErrorKind::ContextLengthExceeded.is_retryable());
        assert!(!ModelErrorKind::Redirect { origin: None }.is_retryable());
    }

    #[test]
    fn estimate_is_generous() {
        let r = ChatRequest::new("m")
            .system("Be concise")
            .user("x".repeat(300));
        assert!(r.approx_input_tokens() >= 300 / 4);
    }
}
