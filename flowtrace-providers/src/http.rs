//! What every HTTP client here shares: API keys that never leak, error
//! classification, `Retry-After`, and transport error mapping.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use flowtrace_core::{ModelError, ModelErrorKind};

/// An API key. It is sent only in request headers; `Debug` and `Display`
/// print `ApiKey(***)`, and error messages are scrubbed of it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    /// A key given directly (for example a consumer's own key).
    pub fn new(key: impl AsRef<str>) -> Self {
        Self(Arc::from(key.as_ref()))
    }

    /// The key in environment variable `var`.
    pub fn from_env(var: &str) -> Result<Self, MissingApiKey> {
        match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Ok(Self::new(v.trim())),
            _ => Err(MissingApiKey {
                var: var.to_string(),
            }),
        }
    }

    /// The secret itself, for building request headers only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the key replaced by `***`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_string();
        }
        text.replace(&*self.0, "***")
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// No API key was configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no API key: set the environment variable {var} or pass a key explicitly")]
#[non_exhaustive]
pub struct MissingApiKey {
    /// The variable that was read.
    pub var: String,
}

/// The delay a server asks for: `retry-after-ms`, or `retry-after` in
/// seconds (fractions allowed). HTTP dates are not honoured.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let read = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = read("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    read("retry-after")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
}

/// The class of an HTTP error answer.
pub(crate) fn classify(status: u16, body: &str, retry_after: Option<Duration>) -> ModelErrorKind {
    let lower = body.to_ascii_lowercase();
    let context = [
        "context_length_exceeded",
        "maximum context length",
        "context window",
        "prompt is too long",
        "too many tokens",
        "exceeds the context",
    ]
    .iter()
    .any(|p| lower.contains(p));
    let filtered = [
        "content_filter",
        "content_policy",
        "content policy",
        "safety system",
    ]
    .iter()
    .any(|p| lower.contains(p));
    match status {
        429 => ModelErrorKind::RateLimited { retry_after },
        408 | 504 => ModelErrorKind::Timeout,
        401 | 403 => ModelErrorKind::Auth,
        404 => ModelErrorKind::NotFound,
        400 | 413 | 422 if context => ModelErrorKind::ContextLengthExceeded,
        400..=499 if filtered => ModelErrorKind::ContentFiltered,
        500..=599 => ModelErrorKind::Overloaded,
        _ => ModelErrorKind::InvalidRequest,
    }
}

/// The provider's error message from a JSON error body (`error.message` or
/// `message`), or the start of the body.
pub(crate) fn error_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .and_then(|m| m.as_str())
            .map(str::to_string)
    });
    let text = message.unwrap_or_else(|| body.trim().to_string());
    let mut out: String = text.chars().take(500).collect();
    if text.chars().count() > 500 {
        out.push('…');
    }
    if out.is_empty() {
        "(empty body)".to_string()
    } else {
        out
    }
}

/// Maps a reqwest failure (no HTTP answer, or a body that could not be read).
pub(crate) fn transport_error(
    e: &reqwest::Error,
    key: &ApiKey,
    provider: &str,
    model: &str,
) -> ModelError {
    let kind = if e.is_timeout() {
        ModelErrorKind::Timeout
    } else if e.is_decode() || e.is_body() {
        ModelErrorKind::MalformedResponse
    } else {
        ModelErrorKind::Transport
    };
    ModelError::new(kind, provider, model, key.scrub(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_print() {
        let k = ApiKey::new("sk-secret-123456");
        assert_eq!(format!("{k:?}"), "ApiKey(***)");
        assert_eq!(k.to_string(), "***");
        assert_eq!(
            k.scrub("bad key sk-secret-123456 given"),
            "bad key *** given"
        );
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(
            classify(429, "", Some(Duration::from_secs(2))),
            ModelErrorKind::RateLimited {
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(classify(503, "", None), ModelErrorKind::Overloaded);
        assert_eq!(
            classify(529, "overloaded_error", None),
            ModelErrorKind::Overloaded
        );
        assert_eq!(classify(401, "", None), ModelErrorKind::Auth);
        assert_eq!(classify(404, "", None), ModelErrorKind::NotFound);
        assert_eq!(
            classify(400, r#"{"error":{"code":"context_length_exceeded"}}"#, None),
            ModelErrorKind::ContextLengthExceeded
        );
        assert_eq!(
            classify(400, r#"{"error":{"code":"content_filter"}}"#, None),
            ModelErrorKind::ContentFiltered
        );
        assert_eq!(classify(400, "{}", None), ModelErrorKind::InvalidRequest);
        assert!(classify(500, "", None).is_retryable());
        assert!(!classify(400, "", None).is_retryable());
    }

    #[test]
    fn messages_come_from_json_bodies() {
        assert_eq!(
            error_message(r#"{"error":{"message":"slow down"}}"#),
            "slow down"
        );
        assert_eq!(
            error_message(r#"{"type":"error","message":"nope"}"#),
            "nope"
        );
        assert_eq!(error_message(""), "(empty body)");
        assert_eq!(error_message(&"x".repeat(600)).chars().count(), 501);
    }

    #[test]
    fn retry_after_headers() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "1.5".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
    }
}
