//! Writing models: [`ObservedModel`] for models with side events, and
//! [`ModelWrapper`] for wrappers around one inner model.

use async_trait::async_trait;

use super::{
    CallObserver, ChatModel, ChatRequest, ChatResponse, ChatStream, ModelError, NoopObserver,
};

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
