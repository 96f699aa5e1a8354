//! Circuit breakers: stop calling a provider's model that keeps failing.
//!
//! A [`CircuitBreaker`] guards one (provider, model) pair and moves between
//! three states:
//!
//! * **closed** — calls go through; every *retryable* failure (rate limit,
//!   overload, timeout, transport, malformed response) is remembered for
//!   [`BreakerConfig::window`]. Invalid requests, auth, not-found,
//!   context-length and content-filter errors say nothing about the
//!   provider's health and are not counted. Once
//!   [`BreakerConfig::failure_threshold`] failures fall within the window,
//!   the breaker **opens**. Successes do not erase earlier failures: the
//!   breaker counts failures in a sliding time window, not consecutive ones.
//! * **open** — calls fail fast, without reaching the provider, until
//!   [`BreakerConfig::cool_down`] has passed; then the breaker is
//!   **half-open**.
//! * **half-open** — exactly one trial call is let through (others still
//!   fail fast). Its success closes the breaker; a retryable failure opens it
//!   again for another cool-down. A trial that ends in a non-counted error
//!   or is abandoned (its future or stream dropped) frees the trial slot and
//!   leaves the breaker half-open.
//!
//! Time is read from [`tokio::time::Instant`], so tests can drive breakers
//! with Tokio's paused clock.
//!
//! [`Breakered`] applies breakers to a [`ChatModel`], one per model name;
//! [`BreakerLayer`] builds it as a layer of a
//! [`ModelStack`](crate::layer::ModelStack).
//! [`FallbackChain`](crate::fallback::FallbackChain) candidates can carry a
//! breaker too, so an open breaker skips straight to the next candidate.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use flowtrace_core::model::ModelWrapper;
use flowtrace_core::trace::LogLevel;
use flowtrace_core::{
    CallObserver, ChatModel, ChatRequest, ChatResponse, ChatStream, EventKind, ModelError,
    ModelErrorKind, StreamEvent,
};
use futures::StreamExt;
use tokio::time::Instant;

use crate::layer::Layer;

/// When a [`CircuitBreaker`] opens and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Retryable failures within [`window`](Self::window) that open the
    /// breaker (at least 1). Default 5.
    pub failure_threshold: u32,
    /// How long a failure is remembered. Default 60 s.
    pub window: Duration,
    /// How long the breaker stays open before a trial call. Default 30 s.
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            window: Duration::from_secs(60),
            cool_down: Duration::from_secs(30),
        }
    }
}

impl BreakerConfig {
    /// Sets the number of failures that opens the breaker.
    #[must_use]
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = failures;
        self
    }

    /// Sets how long failures are remembered.
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Sets how long the breaker stays open.
    #[must_use]
    pub fn cool_down(mut self, cool_down: Duration) -> Self {
        self.cool_down = cool_down;
        self
    }
}

/// The state of a [`CircuitBreaker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail fast until `until`.
    Open {
        /// When the breaker becomes half-open.
        until: Instant,
    },
    /// One trial call may go through.
    HalfOpen,
}

impl BreakerState {
    /// A short, stable name: `closed`, `open` or `half_open`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a [`CircuitBreaker`] has seen since it was created, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerCounters {
    /// Calls that succeeded.
    pub successes: u64,
    /// Retryable failures (the ones that count towards opening).
    pub failures: u64,
    /// Failures that do not count (invalid request, auth, …).
    pub ignored_failures: u64,
    /// Calls refused because the breaker was open (or its trial was taken).
    pub rejected: u64,
    /// How many times the breaker opened.
    pub opened: u64,
    /// Retryable failures currently inside the window.
    pub recent_failures: u32,
}

/// A call refused by an open [`CircuitBreaker`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("circuit open for {provider}/{model}{}", describe_until(*.until))]
#[non_exhaustive]
pub struct BreakerOpen {
    /// The guarded provider.
    pub provider: String,
    /// The guarded model.
    pub model: String,
    /// When the breaker becomes half-open; `None` when it already is and its
    /// single trial call is in flight.
    pub until: Option<Instant>,
}

fn describe_until(until: Option<Instant>) -> String {
    match until {
        Some(until) => {
            let left = until.saturating_duration_since(Instant::now());
            format!(" (failing fast for another {:.1} s)", left.as_secs_f64())
        }
        None => " (half-open, trial call in flight)".to_string(),
    }
}

impl BreakerOpen {
    /// The refusal as a retryable [`ModelErrorKind::Overloaded`] error whose
    /// message says the circuit is open.
    pub fn into_model_error(self) -> ModelError {
        let message = self.to_string();
        ModelError::new(
            ModelErrorKind::Overloaded,
            self.provider,
            self.model,
            message,
        )
    }
}

impl From<BreakerOpen> for ModelError {
    fn from(open: BreakerOpen) -> Self {
        open.into_model_error()
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    failures: VecDeque<Instant>,
    trial_in_flight: bool,
    counters: BreakerCounters,
}

/// A circuit breaker for one (provider, model) pair. See the
/// [module docs](self) for the state machine.
///
/// ```
/// use std::sync::Arc;
/// use flowtrace_providers::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
/// use flowtrace_core::ModelErrorKind;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let breaker = Arc::new(CircuitBreaker::new("openai", "gpt-4o", BreakerConfig::default().failure_threshold(1)));
/// let permit = breaker.try_acquire().unwrap();
/// permit.failure(&ModelErrorKind::Overloaded);
/// assert!(matches!(breaker.state(), BreakerState::Open { .. }));
/// assert!(breaker.try_acquire().is_err());
/// # });
/// ```
#[derive(Debug)]
pub struct CircuitBreaker {
    provider: String,
    model: String,
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    /// A closed breaker for `provider`'s `model`.
    pub fn new(
        provider: impl Into<String>,
        model: impl Into<String>,
        config: BreakerConfig,
    ) -> Self {
        Self {
            provider: provider.into(),
            model: model.into(),
            config,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: VecDeque::new(),
                trial_in_flight: false,
                counters: BreakerCounters::default(),
            }),
        }
    }

    /// The guarded provider.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The guarded model.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The configuration.
    pub fn config(&self) -> BreakerConfig {
        self.config
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves an open breaker whose cool-down is over to half-open.
    fn advance(inner: &mut Inner, now: Instant) {
        if let BreakerState::Open { until } = inner.state
            && now >= until
        {
            inner.state = BreakerState::HalfOpen;
            inner.trial_in_flight = false;
        }
    }

    fn prune(&self, inner: &mut Inner, now: Instant) {
        while let Some(&oldest) = inner.failures.front() {
            if now.saturating_duration_since(oldest) >= self.config.window {
                inner.failures.pop_front();
            } else {
                break;
            }
        }
    }

    /// The current state (an open breaker whose cool-down is over reads as
    /// half-open).
    pub fn state(&self) -> BreakerState {
        let mut inner = self.lock();
        Self::advance(&mut inner, Instant::now());
        inner.state
    }

    /// Counters since creation.
    pub fn counters(&self) -> BreakerCounters {
        let now = Instant::now();
        let mut inner = self.lock();
        self.prune(&mut inner, now);
        let mut counters = inner.counters;
        counters.recent_failures = u32::try_from(inner.failures.len()).unwrap_or(u32::MAX);
        counters
    }

    /// Asks to make one call. Closed: granted. Open: refused until the
    /// cool-down is over. Half-open: granted to one trial call at a time.
    /// Report the call's outcome through the returned permit.
    pub fn try_acquire(self: &Arc<Self>) -> Result<BreakerPermit, BreakerOpen> {
        let mut inner = self.lock();
        Self::advance(&mut inner, Instant::now());
        let refused = |inner: &mut Inner, until| {
            inner.counters.rejected += 1;
            BreakerOpen {
                provider: self.provider.clone(),
                model: self.model.clone(),
                until,
            }
        };
        match inner.state {
            BreakerState::Closed => Ok(self.permit(false)),
            BreakerState::Open { until } => Err(refused(&mut inner, Some(until))),
            BreakerState::HalfOpen if inner.trial_in_flight => Err(refused(&mut inner, None)),
            BreakerState::HalfOpen => {
                inner.trial_in_flight = true;
                Ok(self.permit(true))
            }
        }
    }

    fn permit(self: &Arc<Self>, trial: bool) -> BreakerPermit {
        BreakerPermit {
            breaker: Arc::clone(self),
            trial,
            settled: false,
        }
    }

    /// Forces the breaker closed and forgets past failures.
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.state = BreakerState::Closed;
        inner.failures.clear();
        inner.trial_in_flight = false;
    }

    fn on_success(&self, trial: bool) {
        let mut inner = self.lock();
        inner.counters.successes += 1;
        if trial && inner.state == BreakerState::HalfOpen {
            inner.state = BreakerState::Closed;
            inner.failures.clear();
            inner.trial_in_flight = false;
            tracing::info!(provider = %self.provider, model = %self.model, "circuit closed");
        }
    }

    fn on_failure(&self, kind: &ModelErrorKind, trial: bool) {
        let now = Instant::now();
        let mut inner = self.lock();
        if !kind.is_retryable() {
            inner.counters.ignored_failures += 1;
            Self::release(&mut inner, trial);
            return;
        }
        inner.counters.failures += 1;
        match inner.state {
            BreakerState::Closed => {
                inner.failures.push_back(now);
                self.prune(&mut inner, now);
                let threshold = self.config.failure_threshold.max(1) as usize;
                if inner.failures.len() >= threshold {
                    self.open(&mut inner, now);
                }
            }
            BreakerState::HalfOpen if trial => self.open(&mut inner, now),
            // Late outcomes of calls let through before the breaker opened.
            BreakerState::HalfOpen | BreakerState::Open { .. } => {}
        }
    }

    fn open(&self, inner: &mut Inner, now: Instant) {
        inner.state = BreakerState::Open {
            until: now + self.config.cool_down,
        };
        inner.failures.clear();
        inner.trial_in_flight = false;
        inner.counters.opened += 1;
        tracing::warn!(
            provider = %self.provider,
            model = %self.model,
            cool_down_ms = self.config.cool_down.as_millis() as u64,
            "circuit opened"
        );
    }

    fn release(inner: &mut Inner, trial: bool) {
        if trial && inner.state == BreakerState::HalfOpen {
            inner.trial_in_flight = false;
        }
    }
}

/// Permission for one call through a [`CircuitBreaker`]; report the outcome
/// with [`success`](Self::success) or [`failure`](Self::failure). Dropping
/// it unreported (an abandoned call) counts as neither and frees a
/// half-open breaker's trial slot.
#[derive(Debug)]
#[must_use = "report the call's outcome through the permit"]
pub struct BreakerPermit {
    breaker: Arc<CircuitBreaker>,
    trial: bool,
    settled: bool,
}

impl BreakerPermit {
    /// Whether this is a half-open breaker's trial call.
    pub fn is_trial(&self) -> bool {
        self.trial
    }

    /// The call succeeded.
    pub fn success(mut self) {
        self.settled = true;
        self.breaker.on_success(self.trial);
    }

    /// The call failed with `kind` (only retryable kinds count).
    pub fn failure(mut self, kind: &ModelErrorKind) {
        self.settled = true;
        self.breaker.on_failure(kind, self.trial);
    }

    /// Reports `result`.
    pub fn record<T>(self, result: &Result<T, ModelError>) {
        match result {
            Ok(_) => self.success(),
            Err(e) => self.failure(&e.kind),
        }
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if !self.settled {
            let mut inner = self.breaker.lock();
            CircuitBreaker::release(&mut inner, self.trial);
        }
    }
}

/// A [`ChatModel`] behind circuit breakers, one per requested model name
/// (created on first use with the wrapper's [`BreakerConfig`]).
///
/// While a model's breaker is open, calls fail fast with a retryable
/// [`ModelErrorKind::Overloaded`] error saying the circuit is open, and
/// `chat_observed` / `chat_stream_observed` report a `log` (warn) event
/// "circuit open for provider/model". A stream counts as a success once it
/// yields its final message and as a failure if it yields an error.
pub struct Breakered<M> {
    inner: M,
    config: BreakerConfig,
    breakers: Mutex<HashMap<String, Arc<CircuitBreaker>>>,
}

impl<M: ChatModel> fmt::Debug for Breakered<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breakered")
            .field("provider", &self.inner.provider())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<M: ChatModel> Breakered<M> {
    /// `inner` behind breakers with the default configuration.
    pub fn new(inner: M) -> Self {
        Self::with_config(inner, BreakerConfig::default())
    }

    /// `inner` behind breakers configured with `config` (the same as
    /// [`BreakerLayer::new`]`(config).layer(inner)`).
    pub fn with_config(inner: M, config: BreakerConfig) -> Self {
        BreakerLayer::new(config).layer(inner)
    }

    /// The wrapped model.
    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// The breaker guarding `model` (created closed if new).
    pub fn breaker(&self, model: &str) -> Arc<CircuitBreaker> {
        let mut map = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(model.to_string()).or_insert_with(|| {
            Arc::new(CircuitBreaker::new(
                self.inner.provider(),
                model,
                self.config,
            ))
        }))
    }

    /// Every breaker created so far, for metrics.
    pub fn breakers(&self) -> Vec<Arc<CircuitBreaker>> {
        let map = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        map.values().cloned().collect()
    }

    fn refuse(&self, open: BreakerOpen, observer: &dyn CallObserver) -> ModelError {
        observer.event(EventKind::Log {
            level: LogLevel::Warn,
            message: format!("circuit open for {}/{}", open.provider, open.model),
        });
        open.into_model_error()
    }
}

#[async_trait]
impl<M: ChatModel> ModelWrapper for Breakered<M> {
    type Inner = M;

    fn inner(&self) -> &M {
        &self.inner
    }

    /// # Cancel safety
    /// Dropping the future abandons the call; the breaker counts it as
    /// neither success nor failure.
    async fn chat_observed(
        &self,
        request: ChatRequest,
        observer: &dyn CallObserver,
    ) -> Result<ChatResponse, ModelError> {
        let permit = match self.breaker(&request.model).try_acquire() {
            Ok(permit) => permit,
            Err(open) => return Err(self.refuse(open, observer)),
        };
        let result = self.inner.chat_observed(request, observer).await;
        permit.record(&result);
        result
    }

    fn chat_stream_observed<'a>(
        &'a self,
        request: ChatRequest,
        observer: &'a dyn CallObserver,
    ) -> ChatStream<'a> {
        let mut permit = match self.breaker(&request.model).try_acquire() {
            Ok(permit) => Some(permit),
            Err(open) => {
                let error = self.refuse(open, observer);
                return Box::pin(futures::stream::once(async move { Err(error) }));
            }
        };
        Box::pin(
            self.inner
                .chat_stream_observed(request, observer)
                .map(move |item| {
                    match &item {
                        Ok(StreamEvent::Done(_)) => {
                            if let Some(p) = permit.take() {
                                p.success();
                            }
                        }
                        Err(e) => {
                            if let Some(p) = permit.take() {
                                p.failure(&e.kind);
                            }
                        }
                        Ok(_) => {}
                    }
                    item
                }),
        )
    }
}

/// A [`Layer`] putting a model behind [`Breakered`] circuit breakers, one per
/// requested model name, configured with its [`BreakerConfig`].
///
/// ```
/// use flowtrace_core::{ChatModel, ChatRequest, ModelErrorKind};
/// use flowtrace_core::testing::ScriptedModel;
/// use flowtrace_providers::breaker::{BreakerConfig, BreakerLayer};
/// use flowtrace_providers::layer::ModelStack;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let model = ModelStack::new(ScriptedModel::new("openai").fail(ModelErrorKind::Overloaded))
///     .layer(BreakerLayer::new(BreakerConfig::default().failure_threshold(1)));
/// assert!(model.chat(ChatRequest::new("gpt-4o")).await.is_err());
/// let refused = model.chat(ChatRequest::new("gpt-4o")).await.unwrap_err();
/// assert!(refused.message.contains("circuit open"));
/// # });
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct BreakerLayer {
    config: BreakerConfig,
}

impl BreakerLayer {
    /// Breakers configured with `config`.
    pub fn new(config: BreakerConfig) -> Self {
        Self { config }
    }

    /// The breakers' configuration.
    pub fn get_config(&self) -> BreakerConfig {
        self.config
    }
}

impl<M: ChatModel> Layer<M> for BreakerLayer {
    type Service = Breakered<M>;

    fn layer(&self, inner: M) -> Breakered<M> {
        Breakered {
            inner,
            config: self.config,
            breakers: Mutex::new(HashMap::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn breaker(threshold: u32) -> Arc<CircuitBreaker> {
        Arc::new(CircuitBreaker::new(
            "openai",
            "gpt-4o",
            BreakerConfig::default()
                .failure_threshold(threshold)
                .window(Duration::from_secs(10))
                .cool_down(Duration::from_secs(5)),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn non_retryable_failures_do_not_count() {
        let b = breaker(2);
        for _ in 0..5 {
            b.try_acquire().unwrap().failure(&ModelErrorKind::Auth);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.counters().ignored_failures, 5);
        assert_eq!(b.counters().recent_failures, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_allows_one_trial_and_dropped_trial_frees_it() {
        let b = breaker(1);
        b.try_acquire().unwrap().failure(&ModelErrorKind::Timeout);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let trial = b.try_acquire().unwrap();
        assert!(trial.is_trial());
        let refused = b.try_acquire().unwrap_err();
        assert_eq!(refused.until, None);
        drop(trial);
        let trial = b.try_acquire().unwrap();
        trial.failure(&ModelErrorKind::InvalidRequest);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.try_acquire().unwrap().success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.counters().opened, 1);
        assert_eq!(b.counters().rejected, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn open_error_is_retryable_overloaded_and_names_the_circuit() {
        let b = breaker(1);
        b.try_acquire()
            .unwrap()
            .failure(&ModelErrorKind::Overloaded);
        let e = b.try_acquire().unwrap_err().into_model_error();
        assert_eq!(e.kind, ModelErrorKind::Overloaded);
        assert!(e.is_retryable());
        assert!(
            e.message.contains("circuit open for openai/gpt-4o"),
            "{}",
            e.message
        );
    }

    #[tokio::test(start_paused = true)]
    async fn late_failures_while_open_are_ignored_for_state() {
        let b = breaker(1);
        let early = b.try_acquire().unwrap();
        b.try_acquire()
            .unwrap()
            .failure(&ModelErrorKind::Overloaded);
        let BreakerState::Open { until } = b.state() else {
            panic!("expected open");
        };
        early.failure(&ModelErrorKind::Overloaded);
        assert_eq!(b.state(), BreakerState::Open { until });
        b.reset();
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
