//! The provider-neutral chat model contract.
//!
//! Providers (OpenAI, Anthropic, OpenAI-compatible servers) implement
//! [`ChatModel`]; nodes call a model through
//! [`NodeContext::chat`](crate::NodeContext::chat), which records the call in
//! the trace, prices it and enforces the run's budgets.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::pricing::TokenUsage;

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The human or calling application.
    User,
    /// The model.
    Assistant,
    /// The result of a tool call.
    Tool,
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its text (may be empty for an assistant message that only calls tools).
    #[serde(default)]
    pub content: String,
    /// Tool calls the assistant asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a [`Role::Tool`] message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }

    /// The result of tool call `call_id`.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(call_id.into()),
            ..Self::new(Role::Tool, content)
        }
    }
}

/// A tool call requested by the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id for the call, echoed back in the tool result.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments, as parsed JSON.
    pub arguments: serde_json::Value,
}

/// A tool the model may call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The tool's name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its arguments.
    pub parameters: serde_json::Value,
}

/// Whether and which tool the model must call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool calls.
    None,
    /// At least one tool call.
    Required,
    /// This tool must be called.
    Tool(String),
}

/// The shape of the reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum ResponseFormat {
    /// Free text.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema (structured output).
    JsonSchema {
        /// The schema's name.
        name: String,
        /// The JSON Schema.
        schema: serde_json::Value,
        /// Whether the provider must enforce it strictly.
        #[serde(default)]
        strict: bool,
    },
}

/// A provider-neutral chat request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model to call (the provider's name for it).
    pub model: String,
    /// The system prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec>,
    /// Tool choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// The most completion tokens to generate. Also the upper bound used for
    /// budget pre-checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Structured output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
}

impl ChatRequest {
    /// A request to `model` with no messages yet.
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            ..Self::default()
        }
    }

    /// Sets the system prompt.
    pub fn system(mut self, system: impl Into<String>) -> Self {
        self.system = Some(system.into());
        self
    }

    /// Appends a message.
    pub fn message(mut self, message: Message) -> Self {
        self.messages.push(message);
        self
    }

    /// Appends a user message.
    pub fn user(self, content: impl Into<String>) -> Self {
        self.message(Message::user(content))
    }

    /// Sets the completion token limit.
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// Sets the temperature.
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Adds a tool.
    pub fn tool(mut self, tool: ToolSpec) -> Self {
        self.tools.push(tool);
        self
    }

    /// A rough, deliberately generous estimate of the prompt's tokens: one
    /// token per three bytes of text (real tokenizers average about four for
    /// English), plus four tokens of framing per message. Providers override
    /// [`ChatModel::estimate_input_tokens`] with an exact tokenizer when they
    /// have one.
    pub fn approx_input_tokens(&self) -> u64 {
        let mut bytes = self.system.as_ref().map_or(0, String::len);
        let mut framing = 4usize;
        for m in &self.messages {
            bytes += m.content.len();
            for c in &m.tool_calls {
                bytes += c.name.len() + c.arguments.to_string().len();
            }
            framing += 4;
        }
        for t in &self.tools {
            bytes += t.name.len() + t.description.len() + t.parameters.to_string().len();
        }
        (bytes.div_ceil(3) + framing) as u64
    }
}

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

/// The class of a model call failure.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelErrorKind {
    /// HTTP 429 or equivalent; retry after the given delay when known.
    RateLimited {
        /// The provider's `Retry-After`, when given.
        retry_after: Option<Duration>,
    },
    /// 5xx or an "overloaded" answer.
    Overloaded,
    /// The call took too long.
    Timeout,
    /// The connection failed.
    Transport,
    /// The stream or body ended early or could not be parsed.
    MalformedResponse,
    /// The request was rejected as invalid.
    InvalidRequest,
    /// The credentials were rejected.
    Auth,
    /// The model or endpoint does not exist.
    NotFound,
    /// The prompt does not fit the model's context window.
    ContextLengthExceeded,
    /// The provider's content filter refused.
    ContentFiltered,
    /// The provider answered with a redirect (3xx). Redirects are refused,
    /// so credentials only ever go to the configured base URL; not
    /// retryable.
    Redirect {
        /// Where the redirect pointed, as an origin only
        /// (`scheme://host:port`: no path, query or user info), when the
        /// answer named one.
        origin: Option<String>,
    },
}

impl ModelErrorKind {
    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::Overloaded
                | Self::Timeout
                | Self::Transport
                | Self::MalformedResponse
        )
    }

    /// A short, stable name (`rate_limited`, `auth`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::Timeout => "timeout",
            Self::Transport => "transport",
            Self::MalformedResponse => "malformed_response",
            Self::InvalidRequest => "invalid_request",
            Self::Auth => "auth",
            Self::NotFound => "not_found",
            Self::ContextLengthExceeded => "context_length_exceeded",
            Self::ContentFiltered => "content_filtered",
            Self::Redirect { .. } => "redirect",
        }
    }
}

impl fmt::Display for ModelErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed model call. Never contains credentials.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{provider} model {model:?} failed ({kind}): {message}")]
#[non_exhaustive]
pub struct ModelError {
    /// What kind of failure.
    pub kind: ModelErrorKind,
    /// The provider's name.
    pub provider: String,
    /// The model.
    pub model: String,
    /// What happened, in the provider's words where safe.
    pub message: String,
    /// The underlying error (a transport failure), exposed as
    /// [`source()`](std::error::Error::source) and not repeated in
    /// `message`.
    #[source]
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl ModelError {
    /// A new error.
    pub fn new(
        kind: ModelErrorKind,
        provider: impl Into<String>,
        model: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            provider: provider.into(),
            model: model.into(),
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying error, exposed as
    /// [`source()`](std::error::Error::source). It must not contain
    /// credentials.
    ///
    /// ```
    /// use std::error::Error as _;
    /// use flowtrace_core::{ModelError, ModelErrorKind};
    /// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
    /// let e = ModelError::new(ModelErrorKind::Transport, "openai", "gpt-4o", "the request could not be sent")
    ///     .with_source(io);
    /// assert_eq!(e.to_string(), r#"openai model "gpt-4o" failed (transport): the request could not be sent"#);
    /// assert_eq!(e.source().map(|s| s.to_string()).as_deref(), Some("connection refused"));
    /// ```
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(std::sync::Arc::new(source));
        self
    }

    /// Whether retrying may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// The provider's requested delay before a retry, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.kind {
            ModelErrorKind::RateLimited { retry_after } => retry_after,
            _ => None,
        }
    }
}

/// One event of a streamed reply.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// The next piece of text, as it arrives.
    Delta(String),
    /// The end: the whole reply with its usage and finish reason.
    Done(ChatResponse),
}

/// A streamed reply: deltas, then exactly one [`StreamEvent::Done`], or an
/// error (a stream cut midway is an error, never a silent end).
pub type ChatStream<'a> = futures::stream::BoxStream<'a, Result<StreamEvent, ModelError>>;

/// Receives what a model call does besides answering — fallbacks, cache
/// hits, warnings — so wrappers (fallback chains, caches, breakers) can put
/// them in the run's trace. [`NodeContext`](crate::NodeContext) implements
/// it; [`NoopObserver`] drops everything.
pub trait CallObserver: Send + Sync {
    /// Records an event in the step's trace (`fallback`, `cache.hit`, `log`, …).
    fn event(&self, kind: crate::trace::EventKind);

    /// The price of a provider's model, to value a cache hit or a decision.
    fn price(&self, provider: &str, model: &str) -> Option<crate::pricing::ModelPrice> {
        let _ = (provider, model);
        None
    }

    /// What the run may still spend, for routers that skip candidates the
    /// budget cannot afford. Defaults to unlimited.
    fn remaining_budget(&self) -> RemainingBudget {
        RemainingBudget::default()
    }
}

/// What a run may still spend (`None` = no limit), as seen by a model call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemainingBudget {
    /// Tokens left under `max_tokens`.
    pub tokens: Option<u64>,
    /// Money left under `max_cost`.
    pub cost: Option<crate::pricing::Cost>,
}

/// A [`CallObserver`] that ignores everything (for calls outside a run).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopObserver;

impl CallObserver for NoopObserver {
    fn event(&self, _kind: crate::trace::EventKind) {}
}

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

/// A [`ChatModel`] written through its observed methods: implement
/// [`chat_observed`](ObservedModel::chat_observed) and
/// [`chat_stream_observed`](ObservedModel::chat_stream_observed) once, and
/// [`chat`](ChatModel::chat) / [`chat_stream`](ChatModel::chat_stream) call
/// them with a [`NoopObserver`] (a blanket impl provides [`ChatModel`]).
///
/// Use it for models that report side events (routers, fallback chains);
/// for a wrapper around one inner model, implement [`ModelWrapper`], which
/// forwards everything it does not change.
///
/// ```
/// use async_trait::async_trait;
/// use flowtrace_core::model::{CallObserver, ObservedModel};
/// use flowtrace_core::{ChatModel, ChatRequest, ChatResponse, ChatStream, EventKind, ModelError, TokenUsage};
/// use flowtrace_core::trace::LogLevel;
///
/// struct Echo;
///
/// #[async_trait]
/// impl ObservedModel for Echo {
///     fn provider(&self) -> &str { "echo" }
///     async fn chat_observed(&self, request: ChatRequest, observer: &dyn CallObserver) -> Result<ChatResponse, ModelError> {
///         observer.event(EventKind::Log { level: LogLevel::Info, message: "echoing".into() });
///         Ok(ChatResponse::text(request.model, "echo", TokenUsage::new(1, 1)))
///     }
///     fn chat_stream_observed<'a>(&'a self, request: ChatRequest, observer: &'a dyn CallObserver) -> ChatStream<'a> {
///         let _ = observer;
///         Box::pin(futures::stream::iter([Err(ModelError::new(
///             flowtrace_core::ModelErrorKind::InvalidRequest, "echo", request.model, "no streaming",
///         ))]))
///     }
/// }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// assert_eq!(Echo.chat(ChatRequest::new("m")).await.unwrap().text, "echo");
/// # });
/// ```
#[async_trait]
pub trait ObservedModel: Send + Sync {
    /// See [`ChatModel::provider`].
    fn provider(&self) -> &str;

    /// See [`ChatModel::chat_observed`].
    ///
    /// # Cancel safety
    /// Dropping the future abandons the call.
    async fn chat_observed(
        &self,
        request: ChatRequest,
        observer: &dyn CallObserver,
    ) -> Result<ChatResponse, ModelError>;

    /// See [`ChatModel::chat_stream_observed`].
    fn chat_stream_observed<'a>(
        &'a self,
        request: ChatRequest,
        observer: &'a dyn CallObserver,
    ) -> ChatStream<'a>;

    /// See [`ChatModel::estimate_input_tokens`]; defaults to
    /// [`ChatRequest::approx_input_tokens`].
    fn estimate_input_tokens(&self, request: &ChatRequest) -> u64 {
        request.approx_input_tokens()
    }
}

#[async_trait]
impl<T: ObservedModel> ChatModel for T {
    fn provider(&self) -> &str {
        ObservedModel::provider(self)
    }
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ModelError> {
        ObservedModel::chat_observed(self, request, &NoopObserver).await
    }
    fn chat_stream(&self, request: ChatRequest) -> ChatStream<'_> {
        ObservedModel::chat_stream_observed(self, request, &NoopObserver)
    }
    async fn chat_observed(
        &self,
        request: ChatRequest,
        observer: &dyn CallObserver,
    ) -> Result<ChatResponse, ModelError> {
        ObservedModel::chat_observed(self, request, observer).await
    }
    fn chat_stream_observed<'a>(
        &'a self,
        request: ChatRequest,
        observer: &'a dyn CallObserver,
    ) -> ChatStream<'a> {
        ObservedModel::chat_stream_observed(self, request, observer)
    }
    fn estimate_input_tokens(&self, request: &ChatRequest) -> u64 {
        ObservedModel::estimate_input_tokens(self, request)
    }
}

/// A model wrapping one inner [`ChatModel`] (a cache, a circuit breaker, a
/// fallback chain's first candidate): every method defaults to forwarding
/// to [`inner`](ModelWrapper::inner), so a wrapper implements only what it
/// changes. A blanket impl makes every wrapper an [`ObservedModel`] and so a
/// [`ChatModel`].
///
/// ```
/// use async_trait::async_trait;
/// use flowtrace_core::model::{CallObserver, ModelWrapper};
/// use flowtrace_core::testing::ScriptedModel;
/// use flowtrace_core::{ChatModel, ChatRequest, ChatResponse, ModelError, TokenUsage};
///
/// /// Upper-cases replies; streaming, the provider and estimates are forwarded.
/// struct Shout<M>(M);
///
/// #[async_trait]
/// impl<M: ChatModel> ModelWrapper for Shout<M> {
///     type Inner = M;
///     fn inner(&self) -> &M { &self.0 }
///     async fn chat_observed(&self, request: ChatRequest, observer: &dyn CallObserver) -> Result<ChatResponse, ModelError> {
///         let mut reply = self.0.chat_observed(request, observer).await?;
///         reply.text = reply.text.to_uppercase();
///         Ok(reply)
///     }
/// }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let model = Shout(ScriptedModel::new("openai").reply("hi", TokenUsage::new(1, 1)));
/// // With `ModelWrapper` in scope, name the trait of shared method names.
/// assert_eq!(ChatModel::provider(&model), "openai");
/// assert_eq!(model.chat(ChatRequest::new("m")).await.unwrap().text, "HI");
/// # });
/// ```
#[async_trait]
pub trait ModelWrapper: Send + Sync {
    /// The wrapped model.
    type Inner: ChatModel + ?Sized;

    /// The wrapped model, which calls are forwarded to by default.
    fn inner(&self) -> &Self::Inner;

    /// See [`ChatModel::provider`]; defaults to the inner model's.
    fn provider(&self) -> &str {
        self.inner().provider()
    }

    /// See [`ChatModel::chat_observed`]; defaults to the inner model's.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the call.
    async fn chat_observed(
        &self,
        request: ChatRequest,
        observer: &dyn CallObserver,
    ) -> Result<ChatResponse, ModelError> {
        self.inner().chat_observed(request, observer).await
    }

    /// See [`ChatModel::chat_stream_observed`]; defaults to the inner
    /// model's.
    fn chat_stream_observed<'a>(
        &'a self,
        request: ChatRequest,
        observer: &'a dyn CallObserver,
    ) -> ChatStream<'a> {
        self.inner().chat_stream_observed(request, observer)
    }

    /// See [`ChatModel::estimate_input_tokens`]; defaults to the inner
    /// model's.
    fn estimate_input_tokens(&self, request: &ChatRequest) -> u64 {
        self.inner().estimate_input_tokens(request)
    }
}

#[async_trait]
impl<W: ModelWrapper> ObservedModel for W {
    fn provider(&self) -> &str {
        ModelWrapper::provider(self)
    }
    async fn chat_observed(
        &self,
        request: ChatRequest,
        observer: &dyn CallObserver,
    ) -> Result<ChatResponse, ModelError> {
        ModelWrapper::chat_observed(self, request, observer).await
    }
    fn chat_stream_observed<'a>(
        &'a self,
        request: ChatRequest,
        observer: &'a dyn CallObserver,
    ) -> ChatStream<'a> {
        ModelWrapper::chat_stream_observed(self, request, observer)
    }
    fn estimate_input_tokens(&self, request: &ChatRequest) -> u64 {
        ModelWrapper::estimate_input_tokens(self, request)
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
