//! What every HTTP client here shares: API keys that never leak, HTTP
//! clients that never follow redirects, error classification, `Retry-After`,
//! and transport error mapping.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use flowtrace_core::{ModelError, ModelErrorKind};

use crate::redact::Redactor;

/// An API key. It is sent only in request headers, and only to the client's
/// configured base URL (redirects are refused); `Debug` and `Display` print
/// `ApiKey(***)`, and text built from responses has it replaced by
/// `[redacted]`.
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

/// The HTTP client the providers build: it never follows a redirect, so a
/// credential header only ever goes to the configured base URL (reqwest
/// keeps custom headers such as `x-api-key` across origins when it follows
/// one).
pub(crate) fn client() -> Result<reqwest::Client, Arc<str>> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Arc::from(format!("could not build the HTTP client: {e}")))
}

/// [`client`] that never goes through a proxy from `HTTP_PROXY` /
/// `HTTPS_PROXY`: for tools whose host allowlist and per-origin credentials
/// must mean exactly the origin they name (a proxy would see every request,
/// and plain-HTTP credentials with it).
pub(crate) fn direct_client() -> Result<reqwest::Client, Arc<str>> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| Arc::from(format!("could not build the HTTP client: {e}")))
}

/// `scheme://host:port` of `url` (the port even when it is the scheme's
/// default): no user info, path, query or fragment.
fn origin(url: &reqwest::Url) -> Option<String> {
    let host = url.host_str()?;
    Some(match url.port_or_known_default() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    })
}

/// The refusal of a redirect: a 3xx answer, or — from a user-supplied HTTP
/// client that follows redirects — an answer from another URL than
/// `requested`. Its kind is [`ModelErrorKind::Redirect`] naming the target's
/// origin only; it is not retryable.
pub(crate) fn refused_redirect(
    requested: &str,
    response: &reqwest::Response,
    redactor: &Redactor,
    provider: &str,
    model: &str,
) -> Option<ModelError> {
    let status = response.status().as_u16();
    let advice = "credentials are only sent to the configured base URL";
    let (target, message) = if response.status().is_redirection() {
        let target = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|location| response.url().join(location.trim()).ok())
            .and_then(|url| origin(&url));
        let message = match &target {
            Some(to) => format!("HTTP {status}: redirect to {to} refused: {advice}"),
            None => format!("HTTP {status}: redirect refused: {advice}"),
        };
        (target, message)
    } else {
        let same = reqwest::Url::parse(requested).is_ok_and(|url| &url == response.url());
        if same {
            return None;
        }
        let target = origin(response.url());
        let to = target.as_deref().unwrap_or("another URL");
        let message = format!(
            "HTTP {status} from {to}: the HTTP client followed a redirect; the reply is refused \
             ({advice}: build the client with reqwest::redirect::Policy::none())"
        );
        (target, message)
    };
    let origin = target.map(|t| redactor.redact(&t).into_owned());
    let kind = ModelErrorKind::Redirect { origin };
    Some(ModelError::new(
        kind,
        provider,
        model,
        redactor.redact(&message),
    ))
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
        300..=399 => ModelErrorKind::Redirect { origin: None },
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

/// Maps a reqwest failure (no HTTP answer, or a body that could not be
/// read): the message says what failed, and the reqwest error — stripped of
/// its URL, which may carry credentials — is the error's `source()`.
pub(crate) fn transport_error(e: reqwest::Error, provider: &str, model: &str) -> ModelError {
    let (kind, message) = if e.is_timeout() {
        (ModelErrorKind::Timeout, "the request timed out")
    } else if e.is_decode() || e.is_body() {
        (
            ModelErrorKind::MalformedResponse,
            "the response body could not be read",
        )
    } else {
        (ModelErrorKind::Transport, "the request could not be sent")
    };
    ModelError::new(kind, provider, model, message).with_source(e.without_url())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn transport_errors_keep_their_cause_without_the_url() {
        use std::error::Error as _;
        // Nothing listens on port 1 of the loopback address.
        let url = "http://user:sk-secret-123456@127.0.0.1:1/v1?key=sk-secret-123456";
        let failure = client().unwrap().get(url).send().await.unwrap_err();
        let e = transport_error(failure, "openai", "gpt-4o");
        assert_eq!(e.kind, ModelErrorKind::Transport);
        assert_eq!(
            e.to_string(),
            r#"openai model "gpt-4o" failed (transport): the request could not be sent"#
        );
        let mut chain = Vec::new();
        let mut cause = e.source();
        while let Some(c) = cause {
            chain.push(c.to_string());
            cause = c.source();
        }
        assert!(!chain.is_empty());
        let everything = format!("{e} {e:?} {}", chain.join(" "));
        assert!(!everything.contains("sk-secret"), "{everything}");
        assert!(!everything.contains("127.0.0.1:1/v1"), "{everything}");
    }

    #[test]
    fn keys_never_print() {
        let k = ApiKey::new("sk-secret-123456");
        assert_eq!(format!("{k:?}"), "ApiKey(***)");
        assert_eq!(k.to_string(), "***");
    }

    #[test]
    fn redirect_origins_have_no_path_query_or_user_info() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert_eq!(
            origin(&url("http://user:pw@localhost:8080/a/b?key=1#f")).as_deref(),
            Some("http://localhost:8080")
        );
        assert_eq!(
            origin(&url("https://api.example.com/v1")).as_deref(),
            Some("https://api.example.com:443")
        );
        assert_eq!(
            origin(&url("http://[::1]:9/x")).as_deref(),
            Some("http://[::1]:9")
        );
        assert_eq!(origin(&url("data:text/plain,hi")), None);
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
        assert_eq!(
            classify(307, "", None),
            ModelErrorKind::Redirect { origin: None }
        );
        assert!(!classify(301, "", None).is_retryable());
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
