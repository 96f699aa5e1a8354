//! Exact-match response caching as a [`ChatModel`] wrapper.
//!
//! [`Cached`] (built directly or by a [`CacheLayer`] in a
//! [`ModelStack`](crate::layer::ModelStack)) looks every request up in a
//! [`Cache`] — core's one cache trait — under
//! [`CacheKey::for_request`]`(provider, &request)` — provider, model, system
//! prompt, messages, tools and sampling parameters, so a hit never answers a
//! different question. A hit skips the provider: the stored reply comes back
//! with [`cached`](ChatResponse::cached) set (the run then charges nothing)
//! and a `cache.hit` event reports the cost and tokens it saved, priced
//! through [`CallObserver::price`].
//!
//! Any [`Cache`] works, core's [`MemoryCache`](flowtrace_core::MemoryCache)
//! included. With [`MemoryResponseCache`] (built on `moka`: bounded, with a
//! TTL), concurrent identical
//! misses are coalesced: one caller calls the provider and the others wait
//! for its reply, which they receive as hits. Failures are never cached (and
//! the callers waiting on a failed call receive the same error).
//!
//! Streams are cached too: a hit is replayed as one
//! [`StreamEvent::Delta`] with the whole text and the final
//! [`StreamEvent::Done`]; a streamed miss is stored once its final message
//! arrives (a stream cut midway stores nothing). Streamed misses are not
//! coalesced.
//!
//! ## Non-deterministic requests
//!
//! By default every request is cached, sampled ones included: wrapping a
//! model in a cache is an explicit choice, replaying a sample is usually what
//! is wanted (tests, demos, repeated pipelines), and most requests leave the
//! temperature unset (the provider's default is not zero), so caching only
//! greedy requests would make the cache useless by default.
//! [`Cached::deterministic_only`] restricts caching to requests with
//! `temperature` set to zero, when repeated calls must draw fresh samples.
//! [`Cached::enabled`]`(false)` bypasses the cache entirely.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flowtrace_core::model::ModelWrapper;
use flowtrace_core::trace::LogLevel;
use flowtrace_core::{
    CacheKey, CallObserver, ChatModel, ChatRequest, ChatResponse, ChatStream, Cost, EventKind,
    ModelError, StreamEvent,
};
use futures::StreamExt;
use futures::future::BoxFuture;

pub use flowtrace_core::cache::{Cache, Lookup};

use crate::layer::Layer;

/// An in-memory [`Cache`] on `moka`: at most `max_entries` replies
/// (least recently used evicted first), each kept for at most its TTL.
/// Concurrent identical misses make one upstream call.
///
/// The TTL runs on the system clock (moka's), not on Tokio's.
#[derive(Clone)]
pub struct MemoryResponseCache {
    entries: moka::future::Cache<CacheKey, ChatResponse>,
    ttl: Option<Duration>,
    max_entries: u64,
}

impl fmt::Debug for MemoryResponseCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryResponseCache")
            .field("entries", &self.entries.entry_count())
            .field("max_entries", &self.max_entries)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl Default for MemoryResponseCache {
    /// 10 000 entries, one hour each.
    fn default() -> Self {
        Self::new(10_000, Duration::from_secs(3600))
    }
}

impl MemoryResponseCache {
    /// A cache of at most `max_entries` replies, each kept for `ttl`.
    pub fn new(max_entries: u64, ttl: Duration) -> Self {
        Self::build(max_entries, Some(ttl))
    }

    /// A cache of at most `max_entries` replies that never expire.
    pub fn without_ttl(max_entries: u64) -> Self {
        Self::build(max_entries, None)
    }

    fn build(max_entries: u64, ttl: Option<Duration>) -> Self {
        let mut builder = moka::future::Cache::builder().max_capacity(max_entries);
        if let Some(ttl) = ttl {
            builder = builder.time_to_live(ttl);
        }
        Self {
            entries: builder.build(),
            ttl,
            max_entries,
        }
    }

    /// How many replies are stored (approximate until pending maintenance
    /// has run; see [`run_pending_tasks`](Self::run_pending_tasks)).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Runs pending evictions and bookkeeping now.
    ///
    /// # Cancel safety
    /// Dropping the future leaves the remaining work for later.
    pub async fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks().await;
    }

    /// Removes every reply.
    pub fn clear(&self) {
        self.entries.invalidate_all();
    }
}

#[async_trait]
impl Cache for MemoryResponseCache {
    async fn get(&self, key: &CacheKey) -> Option<ChatResponse> {
        self.entries.get(key).await
    }

    async fn put(&self, key: CacheKey, response: ChatResponse) {
        self.entries.insert(key, response).await;
    }

    /// Coalesces concurrent misses on `key` into one evaluation of `fetch`
    /// (the first caller's); the others receive its reply as a hit, or its
    /// error.
    async fn get_or_fetch(
        &self,
        key: CacheKey,
        fetch: BoxFuture<'_, Result<ChatResponse, ModelError>>,
    ) -> Result<Lookup, ModelError> {
        let entry = self
            .entries
            .entry(key)
            .or_try_insert_with(fetch)
            .await
            .map_err(|shared| ModelError::clone(&shared))?;
        Ok(if entry.is_fresh() {
            Lookup::Miss(entry.into_value())
        } else {
            Lookup::Hit(entry.into_value())
        })
    }
}

/// How a [`Cached`] model uses its store: the store, on or off, sampled
/// requests or not, and a key namespace. As a [`Layer`], it puts a model
/// behind the cache.
///
/// ```
/// use std::sync::Arc;
/// use flowtrace_core::{ChatModel, ChatRequest, MemoryCache, TokenUsage};
/// use flowtrace_core::testing::ScriptedModel;
/// use flowtrace_providers::cache::CacheLayer;
/// use flowtrace_providers::layer::ModelStack;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let model = ModelStack::new(ScriptedModel::new("openai").reply("hi", TokenUsage::new(5, 1)))
///     .layer(CacheLayer::new(Arc::new(MemoryCache::new(100))).namespace("node-a"));
/// let request = ChatRequest::new("gpt-4o-mini").user("hello");
/// assert!(!model.chat(request.clone()).await.unwrap().cached);
/// assert!(model.chat(request).await.unwrap().cached);
/// # });
/// ```
#[derive(Clone)]
#[must_use]
pub struct CacheLayer {
    store: Arc<dyn Cache>,
    enabled: bool,
    deterministic_only: bool,
    namespace: String,
}

impl fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("enabled", &self.enabled)
            .field("deterministic_only", &self.deterministic_only)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl CacheLayer {
    /// Caching in `store` (which other layers may share), on, for every
    /// request, without a namespace.
    pub fn new(store: Arc<dyn Cache>) -> Self {
        Self {
            store,
            enabled: true,
            deterministic_only: false,
            namespace: String::new(),
        }
    }

    /// Caching in a default [`MemoryResponseCache`].
    pub fn in_memory() -> Self {
        Self::new(Arc::new(MemoryResponseCache::default()))
    }

    /// Turns the cache on or off (off: every call goes to the model and
    /// nothing is stored).
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// When `true`, caches only requests with `temperature` set to zero;
    /// others go to the model and are not stored. Default `false`.
    pub fn deterministic_only(mut self, only: bool) -> Self {
        self.deterministic_only = only;
        self
    }

    /// Keys entries under `namespace` (see [`CacheKey::for_request_in`]):
    /// models sharing a store but not a namespace never answer each other's
    /// requests. Default: none, so identical requests to the same provider
    /// share entries.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Whether the cache is on.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Cache> {
        &self.store
    }

    /// Whether `request` goes through the cache.
    pub fn caches(&self, request: &ChatRequest) -> bool {
        self.enabled && (!self.deterministic_only || request.temperature == Some(0.0))
    }
}

impl<M: ChatModel> Layer<M> for CacheLayer {
    type Service = Cached<M>;

    fn layer(&self, inner: M) -> Cached<M> {
        Cached {
            inner,
            config: self.clone(),
        }
    }
}

/// A [`ChatModel`] answering repeated requests from a [`Cache`].
/// See the [module docs](self).
///
/// ```
/// use flowtrace_core::{ChatModel, ChatRequest, TokenUsage};
/// use flowtrace_core::testing::ScriptedModel;
/// use flowtrace_providers::cache::Cached;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let model = Cached::in_memory(ScriptedModel::new("openai").reply("hi", TokenUsage::new(5, 1)));
/// let request = ChatRequest::new("gpt-4o-mini").user("hello");
/// assert!(!model.chat(request.clone()).await.unwrap().cached);
/// assert!(model.chat(request).await.unwrap().cached);
/// assert_eq!(model.inner().calls(), 1);
/// # });
/// ```
pub struct Cached<M> {
    inner: M,
    config: CacheLayer,
}

impl<M: ChatModel> fmt::Debug for Cached<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cached")
            .field("provider", &self.inner.provider())
            .field("enabled", &self.config.enabled)
            .field("deterministic_only", &self.config.deterministic_only)
            .finish_non_exhaustive()
    }
}

impl<M: ChatModel> Cached<M> {
    /// `inner` behind `store` (the same as
    /// [`CacheLayer::new`]`(store).layer(inner)`).
    pub fn new(inner: M, store: Arc<dyn Cache>) -> Self {
        CacheLayer::new(store).layer(inner)
    }

    /// `inner` behind a default [`MemoryResponseCache`].
    pub fn in_memory(inner: M) -> Self {
        CacheLayer::in_memory().layer(inner)
    }

    /// See [`CacheLayer::enabled`].
    #[must_use]
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.config = self.config.enabled(enabled);
        self
    }

    /// See [`CacheLayer::deterministic_only`].
    #[must_use]
    pub fn deterministic_only(mut self, only: bool) -> Self {
        self.config = self.config.deterministic_only(only);
        self
    }

    /// See [`CacheLayer::namespace`].
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config = self.config.namespace(namespace);
        self
    }

    /// Whether the cache is on.
    pub fn is_enabled(&self) -> bool {
        self.config.enabled
    }

    /// The wrapped model.
    pub fn inner(&self) -> &M {
        &self.inner
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Cache> {
        &self.config.store
    }

    /// Whether `request` goes through the cache.
    pub fn caches(&self, request: &ChatRequest) -> bool {
        self.config.caches(request)
    }

    /// Turns a stored reply into a hit and reports it.
    fn hit(
        &self,
        mut response: ChatResponse,
        requested_model: &str,
        observer: &dyn CallObserver,
    ) -> ChatResponse {
        let provider = response
            .provider
            .clone()
            .unwrap_or_else(|| self.inner.provider().to_string());
        let model = if response.model.is_empty() {
            requested_model.to_string()
        } else {
            response.model.clone()
        };
        let saved_cost = match observer
            .price(&provider, &model)
            .or_else(|| observer.price(&provider, requested_model))
            .map(|price| price.cost(&response.usage))
        {
            Some(Ok(cost)) => cost,
            None => Cost::ZERO,
            Some(Err(overflow)) => {
                // The reply is still good; only the figure is unknown.
                tracing::warn!(provider = %provider, model = %model, "{overflow}");
                observer.event(EventKind::Log {
                    level: LogLevel::Warn,
                    message: format!(
                        "cache hit for {provider}/{model}: the saved cost is not reported: {overflow}"
                    ),
                });
                Cost::ZERO
            }
        };
        observer.event(EventKind::CacheHit {
            provider,
            model,
            saved_cost,
            saved_usage: response.usage,
        });
        response.cached = true;
        response
    }
}

#[async_trait]
impl<M: ChatModel> ModelWrapper for Cached<M> {
    type Inner = M;

    fn inner(&self) -> &M {
        &self.inner
    }

    /// # Cancel safety
    /// Dropping the future abandons the call; nothing is stored (callers
    /// waiting on the same miss then make the call themselves).
    async fn chat_observed(
        &self,
        request: ChatRequest,
        observer: &dyn CallObserver,
    ) -> Result<ChatResponse, ModelError> {
        if !self.caches(&request) {
            return self.inner.chat_observed(request, observer).await;
        }
        let key = CacheKey::for_request_in(&self.config.namespace, self.inner.provider(), &request);
        let requested_model = request.model.clone();
        let fetch = Box::pin(self.inner.chat_observed(request, observer));
        match self.config.store.get_or_fetch(key, fetch).await? {
            Lookup::Miss(response) => Ok(response),
            Lookup::Hit(response) => Ok(self.hit(response, &requested_model, observer)),
        }
    }

    fn chat_stream_observed<'a>(
        &'a self,
        request: ChatRequest,
        observer: &'a dyn CallObserver,
    ) -> ChatStream<'a> {
        if !self.caches(&request) {
            return self.inner.chat_stream_observed(request, observer);
        }
        let key = CacheKey::for_request_in(&self.config.namespace, self.inner.provider(), &request);
        let opened = async move {
            if let Some(stored) = self.config.store.get(&key).await {
                let response = self.hit(stored, &request.model, observer);
                let mut events = Vec::with_capacity(2);
                if !response.text.is_empty() {
                    events.push(Ok(StreamEvent::Delta(response.text.clone())));
                }
                events.push(Ok(StreamEvent::Done(response)));
                let replay: ChatStream<'a> = Box::pin(futures::stream::iter(events));
                return replay;
            }
            let mut key = Some(key);
            let store = &self.config.store;
            Box::pin(
                self.inner
                    .chat_stream_observed(request, observer)
                    .then(move |item| {
                        let record = match &item {
                            Ok(StreamEvent::Done(response)) => {
                                key.take().map(|k| (k, response.clone()))
                            }
                            _ => None,
                        };
                        async move {
                            if let Some((key, response)) = record {
                                store.put(key, response).await;
                            }
                            item
                        }
                    }),
            )
        };
        Box::pin(futures::stream::once(opened).flatten())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use flowtrace_core::TokenUsage;
    use flowtrace_core::testing::ScriptedModel;

    #[tokio::test]
    async fn deterministic_only_skips_sampled_requests() {
        let model =
            Cached::in_memory(ScriptedModel::new("openai").then_always("x", TokenUsage::new(1, 1)))
                .deterministic_only(true);
        let sampled = ChatRequest::new("m").user("hi").temperature(0.7);
        let greedy = ChatRequest::new("m").user("hi").temperature(0.0);
        assert!(!model.caches(&sampled));
        assert!(!model.caches(&ChatRequest::new("m").user("hi")));
        assert!(model.caches(&greedy));
        model.chat(sampled.clone()).await.unwrap();
        assert!(!model.chat(sampled).await.unwrap().cached);
        model.chat(greedy.clone()).await.unwrap();
        assert!(model.chat(greedy).await.unwrap().cached);
        assert_eq!(model.inner().calls(), 3);
    }

    #[tokio::test]
    async fn disabled_cache_passes_through() {
        let model =
            Cached::in_memory(ScriptedModel::new("openai").then_always("x", TokenUsage::new(1, 1)))
                .enabled(false);
        let request = ChatRequest::new("m").user("hi");
        model.chat(request.clone()).await.unwrap();
        assert!(!model.chat(request).await.unwrap().cached);
        assert_eq!(model.inner().calls(), 2);
    }
}
