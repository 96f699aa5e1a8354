//! The allowlist of [`HttpRequest`](super::HttpRequest): host patterns,
//! origins and per-origin credentials.

use reqwest::Url;
use reqwest::header::{HeaderName, HeaderValue};

/// One allowlist entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum HostPattern {
    /// Exactly this scheme, host and port.
    Origin {
        scheme: String,
        host: String,
        port: u16,
    },
    /// This host over http or https, on this port or the scheme's default.
    Host { host: String, port: Option<u16> },
    /// Any subdomain of this domain, over http or https, default ports.
    Subdomains { domain: String },
}

impl HostPattern {
    /// Parses an [`HttpRequest::allow`](super::HttpRequest::allow) pattern.
    pub(super) fn parse(pattern: &str) -> Result<Self, HttpRequestConfigError> {
        let invalid = |reason: String| HttpRequestConfigError::InvalidPattern {
            pattern: pattern.to_string(),
            reason,
        };
        let parsed = if pattern.contains("://") {
            let url = parse_origin(pattern).map_err(invalid)?;
            let (scheme, host, port) =
                origin_of(&url).ok_or_else(|| invalid("no host or port".to_string()))?;
            Self::Origin { scheme, host, port }
        } else if let Some(domain) = pattern.strip_prefix("*.") {
            let url = parse_origin(&format!("http://{domain}")).map_err(invalid)?;
            match url.domain() {
                Some(d) if url.port().is_none() && d.contains('.') => Self::Subdomains {
                    domain: d.to_string(),
                },
                _ => {
                    return Err(invalid(
                        "a wildcard needs a domain of two labels or more, without a port"
                            .to_string(),
                    ));
                }
            }
        } else {
            if pattern.is_empty() || pattern.contains(['/', '*', '@', '?', '#']) {
                return Err(invalid(
                    "expected an origin, a host[:port] or *.domain".to_string(),
                ));
            }
            let url = parse_origin(&format!("http://{pattern}")).map_err(invalid)?;
            let host = url
                .host_str()
                .ok_or_else(|| invalid("no host".to_string()))?;
            Self::Host {
                host: host.to_string(),
                port: url.port(),
            }
        };
        Ok(parsed)
    }

    pub(super) fn matches(&self, url: &Url) -> bool {
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return false;
        };
        let scheme = url.scheme();
        let web = scheme == "http" || scheme == "https";
        let default_port = url.port().is_none() || url.port() == default_port(scheme);
        match self {
            Self::Origin {
                scheme: s,
                host: h,
                port: p,
            } => s == scheme && h == host && *p == port,
            Self::Host { host: h, port: p } => {
                web && h == host && p.map_or(default_port, |p| p == port)
            }
            Self::Subdomains { domain } => {
                web && default_port
                    && host.len() > domain.len() + 1
                    && host.ends_with(domain.as_str())
                    && host[..host.len() - domain.len()].ends_with('.')
            }
        }
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

/// A header attached to requests to one origin.
#[derive(Clone, Debug)]
pub(super) struct Credential {
    pub(super) origin: (String, String, u16),
    pub(super) name: HeaderName,
    /// Marked sensitive, so `Debug` prints `Sensitive`.
    pub(super) value: HeaderValue,
}

/// `(scheme, host, port)` of `url`.
pub(super) fn origin_of(url: &Url) -> Option<(String, String, u16)> {
    Some((
        url.scheme().to_string(),
        url.host_str()?.to_string(),
        url.port_or_known_default()?,
    ))
}

/// A rejected [`HttpRequest`](super::HttpRequest) setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpRequestConfigError {
    /// An [`allow`](super::HttpRequest::allow) pattern that is not an origin, a
    /// host or a `*.domain` wildcard.
    #[error("invalid allowlist pattern {pattern:?}: {reason}")]
    InvalidPattern {
        /// The pattern as given.
        pattern: String,
        /// Why it was refused.
        reason: String,
    },
    /// A [`credential`](super::HttpRequest::credential) origin that is not
    /// `scheme://host[:port]`.
    #[error("invalid credential origin {origin:?}: {reason}")]
    InvalidOrigin {
        /// The origin as given.
        origin: String,
        /// Why it was refused.
        reason: String,
    },
    /// A credential header name or value that is not valid in HTTP.
    #[error("invalid credential header {name:?}")]
    InvalidHeader {
        /// The header name as given.
        name: String,
        /// The parse error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Parses `https://host[:port]` with nothing after the authority.
pub(super) fn parse_origin(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} is not http or https", url.scheme()));
    }
    if url.host_str().is_none() {
        return Err("no host".to_string());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("user info is not allowed".to_string());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err("only scheme, host and port are allowed (no path or query)".to_string());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn allows(pattern: &str, url: &str) -> bool {
        HostPattern::parse(pattern)
            .unwrap()
            .matches(&Url::parse(url).unwrap())
    }

    #[test]
    fn origin_patterns_match_scheme_host_and_port() {
        assert!(allows(
            "https://api.example.com",
            "https://api.example.com/v1"
        ));
        assert!(allows(
            "https://api.example.com",
            "https://API.example.com:443/"
        ));
        assert!(!allows(
            "https://api.example.com",
            "http://api.example.com/"
        ));
        assert!(!allows(
            "https://api.example.com",
            "https://api.example.com:8443/"
        ));
        assert!(!allows(
            "https://api.example.com",
            "https://x.api.example.com/"
        ));
        assert!(allows("http://127.0.0.1:8080", "http://127.0.0.1:8080/a"));
        assert!(!allows("http://127.0.0.1:8080", "http://127.0.0.1:8081/a"));
    }

    #[test]
    fn host_patterns_match_either_scheme_on_the_given_or_default_port() {
        assert!(allows("api.example.com", "https://api.example.com/"));
        assert!(allows("api.example.com", "http://api.example.com/"));
        assert!(!allows("api.example.com", "https://api.example.com:8443/"));
        assert!(allows(
            "api.example.com:8443",
            "https://api.example.com:8443/"
        ));
        assert!(!allows("api.example.com:8443", "https://api.example.com/"));
        assert!(!allows(
            "api.example.com",
            "https://api.example.com.evil.net/"
        ));
        assert!(allows("[::1]:9000", "http://[::1]:9000/"));
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        assert!(allows("*.example.com", "https://a.example.com/"));
        assert!(allows("*.example.com", "https://a.b.example.com/"));
        assert!(!allows("*.example.com", "https://example.com/"));
        assert!(!allows("*.example.com", "https://badexample.com/"));
        assert!(!allows("*.example.com", "https://a.example.com:8443/"));
        assert!(!allows("*.example.com", "https://a.example.com.evil.net/"));
    }
}
