//! Credentials: provider API keys, auth headers, passwords and tokens. They
//! are removed in every redaction mode, including
//! [`RedactionMode::Off`](super::RedactionMode::Off).

use regex::Regex;

use super::error::PiiError;

/// What a removed credential is replaced with.
pub const CREDENTIAL_MASK: &str = "[REDACTED_CREDENTIAL]";

/// JSON object keys whose values are always removed, compared ignoring
/// case with `-` read as `_`.
pub const CREDENTIAL_KEYS: &[&str] = &[
    "authorization",
    "proxy_authorization",
    "x_api_key",
    "api_key",
    "apikey",
    "x_goog_api_key",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "auth_token",
    "session_token",
    "cookie",
    "set_cookie",
    "private_key",
];

/// Key endings whose values are always removed as well
/// (`openai_api_key`, `db_password`, …), compared like [`CREDENTIAL_KEYS`].
pub const CREDENTIAL_KEY_SUFFIXES: &[&str] = &[
    "_api_key",
    "_secret",
    "_password",
    "_access_token",
    "_auth_token",
    "_private_key",
];

/// Whether values under the JSON key `key` are credentials.
///
/// ```
/// use flowtrace_agents::pii::is_credential_key;
/// assert!(is_credential_key("Authorization"));
/// assert!(is_credential_key("X-API-Key"));
/// assert!(is_credential_key("openai_api_key"));
/// assert!(!is_credential_key("max_tokens"));
/// ```
pub fn is_credential_key(key: &str) -> bool {
    // Keys longer than any listed name plus a prefix are compared by their
    // last 64 bytes (suffixes only), normalized on the stack: no allocation.
    let mut buf = [0u8; 64];
    let bytes = key.as_bytes();
    let tail = &bytes[bytes.len().saturating_sub(buf.len())..];
    let buf = &mut buf[..tail.len()];
    for (out, b) in buf.iter_mut().zip(tail) {
        *out = match b.to_ascii_lowercase() {
            b'-' => b'_',
            c => c,
        };
    }
    let whole = tail.len() == bytes.len();
    (whole && CREDENTIAL_KEYS.iter().any(|k| k.as_bytes() == &buf[..]))
        || CREDENTIAL_KEY_SUFFIXES
            .iter()
            .any(|s| buf.ends_with(s.as_bytes()))
}

const BEARER: &str = r"(?i)\b(?:bearer|basic)\s+[A-Za-z0-9\-._~+/]{8,}=*";
const API_KEY: &str = r"\b(?:sk-(?:ant-|proj-)?[A-Za-z0-9_\-]{16,}|AIza[0-9A-Za-z_\-]{30,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abpr]-[A-Za-z0-9\-]{10,})";
const KEY_VALUE: &str = r#"(?i)\b(?:x-api-key|api[_-]?key|password|passwd|secret|client[_-]?secret|access[_-]?token|auth[_-]?token|authorization|cookie)"?\s*[:=]\s*"?([^\s"',;&}]+)"#;

/// The credential patterns, for the detector's first pass.
pub(crate) const PATTERNS: [&str; 3] = [BEARER, API_KEY, KEY_VALUE];

/// The compiled credential patterns.
#[derive(Debug)]
pub(crate) struct Patterns {
    bearer: Regex,
    api_key: Regex,
    key_value: Regex,
}

impl Patterns {
    pub(crate) fn compile() -> Result<Self, PiiError> {
        let re = |name: &'static str, p: &str| {
            Regex::new(p).map_err(|source| PiiError::Pattern { name, source })
        };
        Ok(Self {
            bearer: re("bearer", BEARER)?,
            api_key: re("api_key", API_KEY)?,
            key_value: re("key_value", KEY_VALUE)?,
        })
    }

    /// Byte ranges of credentials in `text` (overlaps included).
    pub(crate) fn find_into(&self, text: &str, out: &mut Vec<(usize, usize)>) {
        for m in self.bearer.find_iter(text) {
            out.push((m.start(), m.end()));
        }
        for m in self.api_key.find_iter(text) {
            out.push((m.start(), m.end()));
        }
        for c in self.key_value.captures_iter(text) {
            if let Some(v) = c.get(1) {
                out.push((v.start(), v.end()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> Vec<&str> {
        let p = Patterns::compile().unwrap();
        let mut out = Vec::new();
        p.find_into(text, &mut out);
        out.sort();
        out.iter().map(|&(s, e)| &text[s..e]).collect()
    }

    #[test]
    fn keys() {
        for k in [
            "authorization",
            "Proxy-Authorization",
            "x-api-key",
            "API_KEY",
            "api-key",
            "password",
            "secret",
            "token",
            "Cookie",
            "anthropic_api_key",
            "db_password",
        ] {
            assert!(is_credential_key(k), "{k}");
        }
        for k in [
            "max_tokens",
            "input_tokens",
            "tokenizer",
            "secretary",
            "author",
            "key",
            "content",
        ] {
            assert!(!is_credential_key(k), "{k}");
        }
        assert!(!is_credential_key(&"a".repeat(100)));
    }

    #[test]
    fn values() {
        assert_eq!(
            found("Authorization: Bearer abc.def-ghi_123"),
            ["Bearer", "Bearer abc.def-ghi_123"]
        );
        assert_eq!(
            found("key sk-ant-api03-AAAAAAAAAAAAAAAAAAAAAAAA end"),
            ["sk-ant-api03-AAAAAAAAAAAAAAAAAAAAAAAA"]
        );
        assert_eq!(
            found("sk-proj-abcdefghijklmnop1234"),
            ["sk-proj-abcdefghijklmnop1234"]
        );
        assert_eq!(found(r#"{"password": "hunter22"}"#), ["hunter22"]);
        assert_eq!(found("api_key=XYZ123&x=1"), ["XYZ123"]);
        assert!(found("the sk-1 model, a task-force, a bearer of news").is_empty());
    }
}
