//! Fallback chains: try one provider's model, then the next.
//!
//! A [`FallbackChain`] is an ordered list of [`Candidate`]s — a model client,
//! optionally with its own model name, [`CircuitBreaker`], retry count and
//! attempt timeout — so a call can go (openai, gpt-4o) → (anthropic,
//! claude-sonnet-4). For each candidate in turn:
//!
//! 1. if its breaker is open, the chain moves on at once (`circuit_open`);
//! 2. otherwise it is called; a retryable failure (rate limit, overload,
//!    transport, malformed response) is retried on the chain's
//!    [`RetryPolicy`] — core's policy, the one the executor uses for node
//!    retries, with its [`delays`](RetryPolicy::delays) schedule (default:
//!    2 attempts per candidate, 500 ms, capped at 10 s), raised to the
//!    provider's `Retry-After` when that is longer — each retry reported as
//!    a `retry` event (failed attempt, delay, error) through the
//!    [`CallObserver`];
//! 3. a retryable failure that outlasts the retries, a `Retry-After` longer
//!    than the policy's [`max_delay`](RetryPolicy::get_max_delay), or a
//!    timeout (the provider's, or the
//!    candidate's attempt timeout — never retried, a slow provider is not
//!    asked twice) moves on to the next candidate, emitting a `fallback`
//!    event through the [`CallObserver`] naming both sides and the reason
//!    (the failure's kind, e.g. `rate_limited`, `timeout`, `circuit_open`).
//!
//! Invalid-request, auth, not-found, context-length, content-filter and
//! redirect errors never fall back: they are returned as they are (a
//! provider that redirects is misconfigured, and is not asked again; the
//! request never follows the redirect). When every candidate fails, the last
//! failure is returned.
//!
//! The reply's [`provider`](ChatResponse::provider) is set to the answering
//! candidate's provider (unless a nested wrapper already set it), so the run
//! prices the call as that provider, and an empty
//! [`model`](ChatResponse::model) is set to the model it was asked for.
//!
//! Streams fall back only before their first piece of output: once a
//! [`StreamEvent::Delta`] has been yielded, a later error is returned as is.
//!
//! A chain is a [`ModelWrapper`] around its first candidate (whose provider
//! and token estimates it reports), and [`FallbackLayer`] builds one over
//! the model of a [`ModelStack`](crate::layer::ModelStack).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flowtrace_core::model::ModelWrapper;
use flowtrace_core::trace::LogLevel;
use flowtrace_core::{
    CallObserver, ChatModel, ChatRequest, ChatResponse, ChatStream, EventKind, ModelError,
    ModelErrorKind, RetryPolicy, StreamEvent,
};
use futures::StreamExt;

use crate::breaker::{BreakerConfig, BreakerPermit, CircuitBreaker};
use crate::layer::Layer;

/// The chain's default retries: 2 attempts per candidate, 500 ms before the
/// retry, a `Retry-After` over 10 s moves on.
fn default_retry() -> RetryPolicy {
    RetryPolicy::new(2).max_delay(Duration::from_secs(10))
}

/// One entry of a [`FallbackChain`].
#[derive(Clone)]
pub struct Candidate {
    model: Arc<dyn ChatModel>,
    model_name: Option<String>,
    breaker: Option<Arc<CircuitBreaker>>,
    retries: Option<u32>,
    timeout: Option<Duration>,
}

impl fmt::Debug for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Candidate")
            .field("provider", &self.model.provider())
            .field("model_name", &self.model_name)
            .field("breaker", &self.breaker.as_ref().map(|b| b.state()))
            .field("retries", &self.retries)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Candidate {
    /// A candidate calling `model` with the request's own model name.
    pub fn new(model: Arc<dyn ChatModel>) -> Self {
        Self {
            model,
            model_name: None,
            breaker: None,
            retries: None,
            timeout: None,
        }
    }

    /// Calls this candidate with model `name` instead of the request's.
    #[must_use]
    pub fn model(mut self, name: impl Into<String>) -> Self {
        self.model_name = Some(name.into());
        self
    }

    /// Guards this candidate with `breaker` (which may be shared).
    #[must_use]
    pub fn breaker(mut self, breaker: Arc<CircuitBreaker>) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Guards this candidate with a new breaker named after its provider and
    /// model override (`*` without one). Set the model override first.
    #[must_use]
    pub fn with_breaker(self, config: BreakerConfig) -> Self {
        let model = self.model_name.clone().unwrap_or_else(|| "*".to_string());
        let breaker = Arc::new(CircuitBreaker::new(self.model.provider(), model, config));
        self.breaker(breaker)
    }

    /// Retries this candidate `retries` times (instead of the chain's
    /// [`RetryPolicy::get_max_attempts`] − 1), on the chain's delays, before
    /// moving on.
    #[must_use]
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// Gives each attempt on this candidate at most `timeout` (to the whole
    /// reply, or to a stream's first output) before moving on.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The candidate's provider.
    pub fn provider(&self) -> &str {
        self.model.provider()
    }

    /// The model name override, if any.
    pub fn model_name(&self) -> Option<&str> {
        self.model_name.as_deref()
    }

    /// The candidate's breaker, if any.
    pub fn circuit_breaker(&self) -> Option<&Arc<CircuitBreaker>> {
        self.breaker.as_ref()
    }

    fn model_for(&self, request: &ChatRequest) -> String {
        self.model_name
            .clone()
            .unwrap_or_else(|| request.model.clone())
    }
}

/// A [`ChatModel`] trying several candidates in order. See the
/// [module docs](self).
///
/// ```
/// use std::sync::Arc;
/// use flowtrace_core::{ChatModel, ChatRequest, ModelErrorKind, TokenUsage};
/// use flowtrace_core::testing::ScriptedModel;
/// use flowtrace_providers::fallback::{Candidate, FallbackChain};
/// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
/// let openai = Arc::new(ScriptedModel::new("openai").fail(ModelErrorKind::Overloaded).fail(ModelErrorKind::Overloaded));
/// let anthropic = Arc::new(ScriptedModel::new("anthropic").reply("hi", TokenUsage::new(5, 1)));
/// let chain = FallbackChain::new(Candidate::new(openai).model("gpt-4o"))
///     .or(Candidate::new(anthropic).model("claude-sonnet-4"));
/// let reply = chain.chat(ChatRequest::new("gpt-4o").user("hello")).await.unwrap();
/// assert_eq!(reply.provider.as_deref(), Some("anthropic"));
/// assert_eq!(reply.model, "claude-sonnet-4");
/// # });
/// ```
#[derive(Clone)]
pub struct FallbackChain {
    /// The first candidate's model: the provider and estimates reported.
    primary: Arc<dyn ChatModel>,
    candidates: Vec<Candidate>,
    retry: RetryPolicy,
    attempt_timeout: Option<Duration>,
}

impl fmt::Debug for FallbackChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackChain")
            .field("candidates", &self.candidates)
            .field("retry", &self.retry)
            .field("attempt_timeout", &self.attempt_timeout)
            .finish()
    }
}

/// Why a candidate was given up on.
enum GaveUp {
    /// A failure that must not fall back.
    Fatal(ModelError),
    /// Move on to the next candidate.
    Next { error: ModelError, reason: String },
}

/// A candidate's answer, with the breaker permit still to settle.
struct Answer<T> {
    value: T,
    provider: String,
    model: String,
    permit: Option<BreakerPermit>,
}

impl FallbackChain {
    /// A chain starting with `first`.
    pub fn new(first: Candidate) -> Self {
        Self {
            primary: Arc::clone(&first.model),
            candidates: vec![first],
            retry: default_retry(),
            attempt_timeout: None,
        }
    }

    /// Appends `next`, tried when every earlier candidate failed.
    #[must_use]
    pub fn or(mut self, next: Candidate) -> Self {
        self.candidates.push(next);
        self
    }

    /// Sets how each candidate is retried before the chain moves on: its
    /// attempts, delays and the longest `Retry-After` worth waiting for
    /// ([`RetryPolicy::get_max_delay`]).
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Sets the retries per candidate after its first attempt, keeping the
    /// policy's delays.
    #[must_use]
    pub fn retries(mut self, retries: u32) -> Self {
        self.retry = self.retry.max_attempts(retries.saturating_add(1));
        self
    }

    /// How candidates are retried.
    pub fn get_retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Gives each attempt at most `timeout`, for candidates without their
    /// own [`Candidate::timeout`].
    #[must_use]
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// The candidates, in order.
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    /// Tries the candidates in order with `call`, falling back as described
    /// in the module docs.
    async fn run<'a, T, F, Fut>(
        &'a self,
        request: ChatRequest,
        observer: &'a dyn CallObserver,
        mut call: F,
    ) -> Result<Answer<T>, ModelError>
    where
        F: FnMut(&'a dyn ChatModel, ChatRequest) -> Fut + Send,
        Fut: Future<Output = Result<T, ModelError>> + Send + 'a,
        T: Send,
    {
        let mut last = None;
        for (index, candidate) in self.candidates.iter().enumerate() {
            let provider = candidate.provider().to_string();
            let model = candidate.model_for(&request);
            let mut attempt_request = request.clone();
            attempt_request.model = model.clone();
            let outcome = self
                .try_candidate(
                    candidate,
                    &provider,
                    &model,
                    attempt_request,
                    observer,
                    &mut call,
                )
                .await;
            let reason = match outcome {
                Ok((value, permit)) => {
                    return Ok(Answer {
                        value,
                        provider,
                        model,
                        permit,
                    });
                }
                Err(GaveUp::Fatal(error)) => return Err(error),
                Err(GaveUp::Next { error, reason }) => {
                    last = Some(error);
                    reason
                }
            };
            if let Some(next) = self.candidates.get(index + 1) {
                let to_provider = next.provider().to_string();
                let to_model = next.model_for(&request);
                tracing::info!(
                    from = %format_args!("{provider}/{model}"),
                    to = %format_args!("{to_provider}/{to_model}"),
                    reason = %reason,
                    "model fallback"
                );
                observer.event(EventKind::Fallback {
                    from_provider: provider,
                    from_model: model,
                    to_provider,
                    to_model,
                    reason,
                });
            }
        }
        Err(last.unwrap_or_else(|| {
            ModelError::new(
                ModelErrorKind::InvalidRequest,
                "fallback",
                request.model.clone(),
                "the fallback chain has no candidates",
            )
        }))
    }

    /// Calls one candidate, with its breaker, timeout and retries.
    async fn try_candidate<'a, T, F, Fut>(
        &'a self,
        candidate: &'a Candidate,
        provider: &str,
        model: &str,
        request: ChatRequest,
        observer: &'a dyn CallObserver,
        call: &mut F,
    ) -> Result<(T, Option<BreakerPermit>), GaveUp>
    where
        F: FnMut(&'a dyn ChatModel, ChatRequest) -> Fut + Send,
        Fut: Future<Output = Result<T, ModelError>> + Send + 'a,
        T: Send,
    {
        let policy = match candidate.retries {
            Some(retries) => self.retry.clone().max_attempts(retries.saturating_add(1)),
            None => self.retry.clone(),
        };
        let mut delays = policy.delays();
        let timeout = candidate.timeout.or(self.attempt_timeout);
        let mut retry = 0u32;
        loop {
            let permit = match &candidate.breaker {
                None => None,
                Some(breaker) => match breaker.try_acquire() {
                    Ok(permit) => Some(permit),
                    Err(open) => {
                        observer.event(EventKind::Log {
                            level: LogLevel::Warn,
                            message: format!("circuit open for {provider}/{model}"),
                        });
                        let mut error = open.into_model_error();
                        error.model = model.to_string();
                        return Err(GaveUp::Next {
                            error,
                            reason: "circuit_open".to_string(),
                        });
                    }
                },
            };
            let attempt = call(candidate.model.as_ref(), request.clone());
            let result = match timeout {
                None => attempt.await,
                Some(limit) => match tokio::time::timeout(limit, attempt).await {
                    Ok(result) => result,
                    Err(_) => Err(ModelError::new(
                        ModelErrorKind::Timeout,
                        provider,
                        model,
                        format!("no answer within {} ms", limit.as_millis()),
                    )),
                },
            };
            let error = match result {
                Ok(value) => return Ok((value, permit)),
                Err(error) => error,
            };
            if let Some(permit) = permit {
                permit.failure(&error.kind);
            }
            if !error.is_retryable() {
                return Err(GaveUp::Fatal(error));
            }
            let reason = error.kind.as_str().to_string();
            if error.kind == ModelErrorKind::Timeout {
                return Err(GaveUp::Next { error, reason });
            }
            let Some(delay) = delays.next().and_then(|scheduled| {
                policy.delay_with_retry_after(scheduled, error.retry_after())
            }) else {
                return Err(GaveUp::Next { error, reason });
            };
            observer.event(EventKind::Retry {
                failed_attempt: retry + 1,
                delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                // The error names its provider and model.
                error: error.to_string(),
            });
            tokio::time::sleep(delay).await;
            retry += 1;
        }
    }
}

/// Sets who answered on a reply.
fn stamp(response: &mut ChatResponse, provider: &str, model: &str) {
    if response.provider.is_none() {
        response.provider = Some(provider.to_string());
    }
    if response.model.is_empty() {
        response.model = model.to_string();
    }
}

/// Waits for a stream's first output (skipping empty deltas); returns it
/// with the rest of the stream.
async fn first_output<'a>(
    mut stream: ChatStream<'a>,
    provider: String,
    model: String,
) -> Result<(StreamEvent, ChatStream<'a>), ModelError> {
    loop {
        match stream.next().await {
            Some(Ok(StreamEvent::Delta(text))) if text.is_empty() => {}
            Some(Ok(event)) => return Ok((event, stream)),
            Some(Err(error)) => return Err(error),
            None => {
                return Err(ModelError::new(
                    ModelErrorKind::MalformedResponse,
                    provider,
                    model,
                    "the stream ended before any output",
                ));
            }
        }
    }
}

#[async_trait]
impl ModelWrapper for FallbackChain {
    /// The first candidate's model.
    type Inner = dyn ChatModel;

    fn inner(&self) -> &(dyn ChatModel + 'static) {
        self.primary.as_ref()
    }

    /// # Cancel safety
    /// Dropping the future abandons the current attempt (its breaker counts
    /// it as neither success nor failure) and tries no further candidate.
    async fn chat_observed(
        &self,
        request: ChatRequest,
        observer: &dyn CallObserver,
    ) -> Result<ChatResponse, ModelError> {
        let answer = self
            .run(request, observer, |model, request| {
                model.chat_observed(request, observer)
            })
            .await?;
        if let Some(permit) = answer.permit {
            permit.success();
        }
        let mut response = answer.value;
        stamp(&mut response, &answer.provider, &answer.model);
        Ok(response)
    }

    fn chat_stream_observed<'a>(
        &'a self,
        request: ChatRequest,
        observer: &'a dyn CallObserver,
    ) -> ChatStream<'a> {
        let opened = async move {
            self.run(request, observer, move |model, request| {
                let provider = model.provider().to_string();
                let name = request.model.clone();
                first_output(
                    model.chat_stream_observed(request, observer),
                    provider,
                    name,
                )
            })
            .await
        };
        Box::pin(
            futures::stream::once(opened).flat_map(|opened| -> ChatStream<'a> {
                let Answer {
                    value: (first, rest),
                    provider,
                    model,
                    mut permit,
                } = match opened {
                    Ok(answer) => answer,
                    Err(error) => return Box::pin(futures::stream::iter([Err(error)])),
                };
                let events = futures::stream::iter([Ok(first)]).chain(rest);
                Box::pin(events.map(move |item| match item {
                    Ok(StreamEvent::Done(mut response)) => {
                        if let Some(p) = permit.take() {
                            p.success();
                        }
                        stamp(&mut response, &provider, &model);
                        Ok(StreamEvent::Done(response))
                    }
                    Err(error) => {
                        if let Some(p) = permit.take() {
                            p.failure(&error.kind);
                        }
                        Err(error)
                    }
                    other => other,
                }))
            }),
        )
    }
}

/// A [`Layer`] making the wrapped model the first candidate of a
/// [`FallbackChain`] (with the request's own model name), followed by the
/// layer's candidates.
///
/// ```
/// use std::sync::Arc;
/// use flowtrace_core::{ChatModel, ChatRequest, ModelErrorKind, RetryPolicy, TokenUsage};
/// use flowtrace_core::testing::ScriptedModel;
/// use flowtrace_providers::fallback::{Candidate, FallbackLayer};
/// use flowtrace_providers::layer::ModelStack;
/// # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
/// let backup = Arc::new(ScriptedModel::new("anthropic").reply("hi", TokenUsage::new(5, 1)));
/// let model = ModelStack::new(ScriptedModel::new("openai").fail(ModelErrorKind::Overloaded))
///     .layer(FallbackLayer::new(Candidate::new(backup).model("claude-sonnet-4")).retry(RetryPolicy::never()));
/// let reply = model.chat(ChatRequest::new("gpt-4o").user("hello")).await.unwrap();
/// assert_eq!(reply.provider.as_deref(), Some("anthropic"));
/// # });
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct FallbackLayer {
    next: Vec<Candidate>,
    retry: RetryPolicy,
    attempt_timeout: Option<Duration>,
}

impl FallbackLayer {
    /// Falls back to `next` when the wrapped model fails.
    pub fn new(next: Candidate) -> Self {
        Self {
            next: vec![next],
            retry: default_retry(),
            attempt_timeout: None,
        }
    }

    /// Appends `next`, tried when every earlier candidate failed.
    pub fn or(mut self, next: Candidate) -> Self {
        self.next.push(next);
        self
    }

    /// See [`FallbackChain::retry`].
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// See [`FallbackChain::attempt_timeout`].
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }
}

impl<M: ChatModel + 'static> Layer<M> for FallbackLayer {
    type Service = FallbackChain;

    fn layer(&self, inner: M) -> FallbackChain {
        let chain = self
            .next
            .iter()
            .cloned()
            .fold(
                FallbackChain::new(Candidate::new(Arc::new(inner))),
                FallbackChain::or,
            )
            .retry(self.retry.clone());
        match self.attempt_timeout {
            Some(limit) => chain.attempt_timeout(limit),
            None => chain,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn stamp_keeps_a_nested_provider_and_a_reported_model() {
        let mut r = ChatResponse::text("", "x", Default::default());
        stamp(&mut r, "anthropic", "claude-sonnet-4");
        assert_eq!(r.provider.as_deref(), Some("anthropic"));
        assert_eq!(r.model, "claude-sonnet-4");
        let mut r = ChatResponse::text("claude-sonnet-4-20250514", "x", Default::default());
        r.provider = Some("bedrock".into());
        stamp(&mut r, "anthropic", "claude-sonnet-4");
        assert_eq!(r.provider.as_deref(), Some("bedrock"));
        assert_eq!(r.model, "claude-sonnet-4-20250514");
    }
}
