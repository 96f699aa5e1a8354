//! Exact-match response caching for model calls.
//!
//! When a run is configured with a [`Cache`],
//! [`NodeContext::chat`](crate::NodeContext::chat) looks every request up
//! before calling the model: a hit returns the stored response, emits a
//! `cache.hit` event with the cost it saved, and costs the step nothing.

use std::fmt;

use async_trait::async_trait;
use serde::Serialize;

use futures::future::BoxFuture;

use crate::model::{ChatRequest, ChatResponse, ModelError};

/// The exact identity of a model call: provider, model, system prompt,
/// messages, tools and sampling parameters, as canonical JSON.
///
/// Two requests share a key exactly when every one of those fields is equal,
/// so a hit never returns a reply to a different question.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(String);

impl CacheKey {
    /// The key of `request` sent to `provider`.
    pub fn for_request(provider: &str, request: &ChatRequest) -> Self {
        Self::for_request_in("", provider, request)
    }

    /// The key of `request` sent to `provider` within `namespace`: the same
    /// request in two namespaces has two keys. Use it when something other
    /// than the request decides the reply (a model configuration, a
    /// simulated response); an empty namespace is [`for_request`](Self::for_request).
    pub fn for_request_in(namespace: &str, provider: &str, request: &ChatRequest) -> Self {
        #[derive(Serialize)]
        struct Keyed<'a> {
            #[serde(skip_serializing_if = "str::is_empty")]
            namespace: &'a str,
            provider: &'a str,
            request: &'a ChatRequest,
        }
        // Serializing plain data into a String cannot fail.
        CacheKey(
            serde_json::to_string(&Keyed {
                namespace,
                provider,
                request,
            })
            .unwrap_or_default(),
        )
    }

    /// The canonical text the key is made of.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: String = self.0.chars().take(60).collect();
        write!(f, "CacheKey({shown:?}…)")
    }
}

/// The outcome of [`Cache::get_or_fetch`].
#[derive(Clone, Debug, PartialEq)]
pub enum Lookup {
    /// The response was stored (or fetched by a concurrent identical call).
    Hit(ChatResponse),
    /// This call fetched the response (and stored it).
    Miss(ChatResponse),
}

/// A store of model responses keyed by [`CacheKey`]: the one cache trait of
/// FlowTrace, used by a run's [`RunConfig`](crate::RunConfig) cache and by
/// the cache layer of `flowtrace-providers`.
///
/// Implementations decide eviction (TTL, size); a miss is `None`. Only
/// [`get`](Self::get) and [`put`](Self::put) are required;
/// [`get_or_fetch`](Self::get_or_fetch) should be overridden by stores that
/// can coalesce concurrent identical misses.
#[async_trait]
pub trait Cache: Send + Sync {
    /// The stored response for `key`, if any.
    ///
    /// # Cancel safety
    /// Dropping the future has no effect on the store.
    async fn get(&self, key: &CacheKey) -> Option<ChatResponse>;

    /// Stores `response` under `key`.
    ///
    /// # Cancel safety
    /// Dropping the future may leave the response unstored.
    async fn put(&self, key: CacheKey, response: ChatResponse);

    /// The stored response for `key`; on a miss, awaits `fetch` and stores
    /// its response (an error is returned and not stored). The default
    /// looks up, fetches and puts without coalescing concurrent misses.
    ///
    /// # Cancel safety
    /// Dropping the future abandons `fetch` (nothing is stored).
    async fn get_or_fetch(
        &self,
        key: CacheKey,
        fetch: BoxFuture<'_, Result<ChatResponse, ModelError>>,
    ) -> Result<Lookup, ModelError> {
        if let Some(hit) = self.get(&key).await {
            return Ok(Lookup::Hit(hit));
        }
        let response = fetch.await?;
        self.put(key, response.clone()).await;
        Ok(Lookup::Miss(response))
    }
}

/// An in-memory [`Cache`] holding at most `max_entries` responses (the
/// oldest is evicted first). Entries never expire; use it for tests, demos
/// and short-lived processes.
#[derive(Debug)]
pub struct MemoryCache {
    max_entries: usize,
    entries: std::sync::Mutex<(
        std::collections::HashMap<CacheKey, ChatResponse>,
        std::collections::VecDeque<CacheKey>,
    )>,
}

impl MemoryCache {
    /// A cache holding at most `max_entries` responses.
    pub fn new(max_entries: usize) -> Self {
        Self {
            max_entries: max_entries.max(1),
            entries: std::sync::Mutex::default(),
        }
    }

    /// How many responses are stored.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.0.len()).unwrap_or(0)
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &CacheKey) -> Option<ChatResponse> {
        self.entries.lock().ok()?.0.get(key).cloned()
    }

    async fn put(&self, key: CacheKey, response: ChatResponse) {
        let Ok(mut guard) = self.entries.lock() else {
            return;
        };
        let (map, order) = &mut *guard;
        if map.insert(key.clone(), response).is_none() {
            order.push_back(key);
        }
        while map.len() > self.max_entries {
            match order.pop_front() {
                Some(old) => {
                    map.remove(&old);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_on_every_field() {
        let base = ChatRequest::new("gpt-4o-mini").system("s").user("hello");
        let k = CacheKey::for_request("openai", &base);
        assert_eq!(k, CacheKey::for_request_in("", "openai", &base));
        assert_ne!(k, CacheKey::for_request_in("node-a", "openai", &base));
        assert_ne!(
            CacheKey::for_request_in("node-a", "openai", &base),
            CacheKey::for_request_in("node-b", "openai", &base)
        );
        assert_eq!(k, CacheKey::for_request("openai", &base.clone()));
        assert_ne!(k, CacheKey::for_request("anthropic", &base));
        assert_ne!(
            k,
            CacheKey::for_request("openai", &base.clone().temperature(0.5))
        );
        assert_ne!(
            k,
            CacheKey::for_request("openai", &base.clone().system("t"))
        );
        assert_ne!(
            k,
            CacheKey::for_request("openai", &base.clone().user("again"))
        );
    }

    #[tokio::test]
    async fn memory_cache_evicts_oldest() {
        let c = MemoryCache::new(2);
        let key = |s: &str| CacheKey::for_request("p", &ChatRequest::new(s));
        let resp = ChatResponse::text("m", "t", crate::TokenUsage::new(1, 1));
        c.put(key("a"), resp.clone()).await;
        c.put(key("b"), resp.clone()).await;
        c.put(key("c"), resp.clone()).await;
        assert_eq!(c.len(), 2);
        assert!(c.get(&key("a")).await.is_none());
        assert_eq!(c.get(&key("c")).await, Some(resp));
    }

    #[tokio::test]
    async fn default_get_or_fetch_stores_replies_but_not_errors() {
        let store = MemoryCache::new(10);
        let key = CacheKey::for_request("p", &ChatRequest::new("m"));
        let failing = store
            .get_or_fetch(
                key.clone(),
                Box::pin(async {
                    Err(ModelError::new(
                        crate::ModelErrorKind::Overloaded,
                        "p",
                        "m",
                        "down",
                    ))
                }),
            )
            .await;
        assert!(failing.is_err());
        assert!(store.is_empty());
        let reply = ChatResponse::text("m", "ok", crate::TokenUsage::new(1, 1));
        let first = store
            .get_or_fetch(key.clone(), Box::pin(async { Ok(reply.clone()) }))
            .await;
        assert_eq!(first.ok(), Some(Lookup::Miss(reply.clone())));
        let second = store
            .get_or_fetch(
                key,
                Box::pin(async {
                    Err(ModelError::new(
                        crate::ModelErrorKind::Overloaded,
                        "p",
                        "m",
                        "fetched twice",
                    ))
                }),
            )
            .await;
        assert_eq!(second.ok(), Some(Lookup::Hit(reply)));
    }
}
