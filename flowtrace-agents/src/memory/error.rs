//! [`MemoryError`]: a memory store's failure.

use std::sync::Arc;

/// What kind of failure a [`MemoryError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemoryErrorKind {
    /// The store is temporarily unreachable. Retryable.
    Unavailable,
    /// A value exceeds one of the store's limits. Permanent.
    LimitExceeded,
    /// Any other failure. Permanent.
    Failed,
}

/// A memory store's failure: its kind, a message, and the underlying error
/// as [`source()`](std::error::Error::source).
///
/// ```
/// use flowtrace_agents::memory::{MemoryError, MemoryErrorKind};
/// let e = MemoryError::new(MemoryErrorKind::Unavailable, "database is restarting");
/// assert!(e.is_retryable());
/// assert_eq!(e.to_string(), "memory store: database is restarting");
/// ```
#[derive(Clone, Debug, thiserror::Error)]
#[error("memory store: {message}")]
#[non_exhaustive]
pub struct MemoryError {
    /// What kind of failure.
    pub kind: MemoryErrorKind,
    /// What went wrong.
    pub message: String,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl MemoryError {
    /// A failure of `kind`.
    pub fn new(kind: MemoryErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying error.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind == MemoryErrorKind::Unavailable
    }
}
