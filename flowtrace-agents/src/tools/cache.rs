//! One tool's result cache.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::options::MAX_CACHE_ENTRIES;

#[derive(Clone)]
struct Cached {
    value: Arc<Value>,
    /// On tokio's clock, so a paused test clock expires entries; moka's own
    /// time to live (on the real clock) frees their memory.
    expires: Instant,
}

/// Successful results of one tool by canonical input, for a time to live.
pub(crate) struct ResultCache {
    inner: moka::future::Cache<Vec<u8>, Cached>,
    ttl: Duration,
}

impl std::fmt::Debug for ResultCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultCache")
            .field("ttl", &self.ttl)
            .field("entries", &self.inner.entry_count())
            .finish()
    }
}

impl ResultCache {
    /// An empty cache keeping results for `ttl`, at most
    /// [`MAX_CACHE_ENTRIES`].
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            inner: moka::future::Cache::builder()
                .max_capacity(MAX_CACHE_ENTRIES)
                .time_to_live(ttl)
                .build(),
            ttl,
        }
    }

    /// The fresh result for `key`, if there is one.
    pub(crate) async fn get(&self, key: &[u8]) -> Option<Arc<Value>> {
        let cached = self.inner.get(key).await?;
        if Instant::now() < cached.expires {
            Some(cached.value)
        } else {
            self.inner.invalidate(key).await;
            None
        }
    }

    /// Keeps `value` for `key`.
    pub(crate) async fn insert(&self, key: Vec<u8>, value: Arc<Value>) {
        let expires = Instant::now() + self.ttl;
        self.inner.insert(key, Cached { value, expires }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test(start_paused = true)]
    async fn entries_expire_on_the_tokio_clock() {
        let cache = ResultCache::new(Duration::from_secs(10));
        assert!(cache.get(b"k").await.is_none());
        cache.insert(b"k".to_vec(), Arc::new(json!(1))).await;
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(cache.get(b"k").await.as_deref(), Some(&json!(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(cache.get(b"k").await.is_none());
        assert!(cache.get(b"k").await.is_none());
    }
}
