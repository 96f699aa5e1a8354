//! [`ModelError`] and its [`ModelErrorKind`].

use std::fmt;
use std::time::Duration;

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
