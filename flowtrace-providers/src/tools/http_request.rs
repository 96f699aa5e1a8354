//! The `http_request` tool: [`HttpRequest`].

use std::borrow::Cow;
use std::time::Duration;

use async_trait::async_trait;
use flowtrace_core::tool::ToolErrorKind;
use flowtrace_core::{Tool, ToolError, ToolSafety};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde_json::{Map, Value, json};

use super::HTTP_REQUEST;
use crate::redact::Redactor;

mod allowlist;

pub use allowlist::HttpRequestConfigError;
use allowlist::{Credential, HostPattern, origin_of, parse_origin};

/// Makes an HTTP request to an allowlisted host and returns the response.
///
/// Arguments:
/// `{"method": "GET", "url": "https://api.example.com/v1/items?page=2",
/// "headers": {"accept": "application/json"}, "body": <string or JSON>}`
/// (only `url` is required; `method` defaults to `GET`; a JSON `body` other
/// than a string is sent as JSON, with `content-type: application/json`
/// unless the headers set one). Result:
/// `{"status": 200, "url": "<final URL>", "headers": {…}, "body": …}`,
/// where `body` is the parsed JSON when the response says it is JSON
/// (`application/json` or `…+json`) and parses, else the text. A response
/// of any status is a result: the model sees a 404 or a 500 and decides.
///
/// # Allowlist
///
/// Nothing is reachable until allowed: a new tool has an empty allowlist,
/// and a URL whose origin no pattern matches fails with
/// [`ToolErrorKind::PermissionDenied`] naming the host, before any
/// connection is made. [`allow`](Self::allow) takes
///
/// * an origin, `https://api.example.com` or `http://127.0.0.1:8080`: that
///   scheme, host and port (the scheme's default port when none is given);
/// * a host, `api.example.com` or `api.example.com:8443`: that host over
///   `http` or `https`, on the given port or else the scheme's default one;
/// * a wildcard, `*.example.com`: every subdomain of `example.com` (not
///   `example.com` itself) over `http` or `https` on the default ports.
///
/// Hosts are compared after the URL parser's normalisation (lower case,
/// IDNA, IP address forms). Allowing a host name trusts whatever addresses
/// its DNS gives.
///
/// # Redirects
///
/// Redirects (301, 302, 303, 307, 308) are followed, at most
/// [`MAX_REDIRECTS`](Self::MAX_REDIRECTS) of them, and only to allowlisted
/// origins: a redirect elsewhere fails with `PermissionDenied` naming the
/// target's host, and the target is never contacted. 301, 302 and 303 turn
/// a request other than `GET`/`HEAD` into a body-less `GET`, as browsers
/// do; 307 and 308 repeat it as it was. Each hop carries only its own
/// origin's credentials and the model's headers.
///
/// # Proxies
///
/// `HTTP_PROXY` / `HTTPS_PROXY` are ignored: a request goes straight to the
/// allowlisted origin it names, so no proxy sees it or its credentials.
///
/// # Credentials
///
/// [`credential`](Self::credential) attaches a header (an API key, a
/// bearer token) to every request to one origin, and only to it. The
/// model's headers may not set a credential header of the request's origin
/// (`PermissionDenied`), credential values are replaced by `[redacted]`
/// anywhere in the result (headers and body, should the server echo them),
/// and `Debug` does not print them.
///
/// # Limits
///
/// | what | default | set with |
/// |---|---|---|
/// | response body, read as it streams (`LimitExceeded` past it) | [`DEFAULT_MAX_RESPONSE_BYTES`](Self::DEFAULT_MAX_RESPONSE_BYTES) | [`max_response_bytes`](Self::max_response_bytes) |
/// | the whole call: connecting, redirects, reading the body (`Timeout`) | [`DEFAULT_TIMEOUT`](Self::DEFAULT_TIMEOUT) | [`timeout`](Self::timeout) |
/// | request body (`LimitExceeded`) | [`DEFAULT_MAX_REQUEST_BYTES`](Self::DEFAULT_MAX_REQUEST_BYTES) | [`max_request_bytes`](Self::max_request_bytes) |
/// | model-supplied headers (`LimitExceeded`) | [`MAX_HEADERS`](Self::MAX_HEADERS) | — |
/// | URL length (`LimitExceeded`) | [`MAX_URL_LEN`](Self::MAX_URL_LEN) | — |
///
/// # Errors and retries
///
/// * a refused connection, DNS failure or other failure before the request
///   was sent: [`ToolErrorKind::Unavailable`] (retryable);
/// * the timeout: [`ToolErrorKind::Timeout`] (retryable) for `GET`, `HEAD`,
///   `PUT`, `DELETE` and `OPTIONS`; for `POST` and `PATCH`, which the server
///   may already have acted on, [`ToolErrorKind::Failed`] (not retried);
/// * a response body that is not text (not UTF-8): `Failed` — this tool
///   returns text and JSON only;
/// * bad arguments: [`ToolErrorKind::InvalidInput`]; a URL or method not
///   allowed: `PermissionDenied`; a limit: `LimitExceeded`.
///
/// Each error names the host or the limit; the transport error is its
/// `source()`.
///
/// # Safety
///
/// [`HttpRequest::new`] can send any method, so its
/// [`safety`](Tool::safety) is [`ToolSafety::Dangerous`];
/// [`HttpRequest::read_only`] allows only `GET` and `HEAD` and is
/// [`ToolSafety::Safe`].
///
/// # Response headers
///
/// Only the headers in [`RESPONSE_HEADERS`](Self::RESPONSE_HEADERS) are
/// returned (never `set-cookie`), as an object of lower-case names to
/// values (several values joined by `", "`).
///
/// ```
/// use flowtrace_core::{Tool, ToolSafety};
/// use flowtrace_providers::tools::HttpRequest;
///
/// let tool = HttpRequest::read_only()
///     .allow("https://api.example.com").unwrap()
///     .credential("https://api.example.com", "x-api-key", "sk-secret").unwrap();
/// assert_eq!(tool.safety(), ToolSafety::Safe);
/// assert!(!format!("{tool:?}").contains("sk-secret"));
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// // Another host: refused before connecting.
/// let err = tool
///     .call(serde_json::json!({"url": "https://elsewhere.example.org/"}))
///     .await
///     .unwrap_err();
/// assert_eq!(err.kind(), flowtrace_core::tool::ToolErrorKind::PermissionDenied);
/// assert!(err.message.contains("elsewhere.example.org"));
/// # });
/// ```
#[derive(Clone)]
pub struct HttpRequest {
    allowed: Vec<HostPattern>,
    credentials: Vec<Credential>,
    redactor: Redactor,
    read_only: bool,
    timeout: Duration,
    max_response_bytes: u64,
    max_request_bytes: usize,
    client: Result<reqwest::Client, std::sync::Arc<str>>,
}

impl std::fmt::Debug for HttpRequest {
    /// Prints the settings and each credential's origin and header name,
    /// never its value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let credentials: Vec<String> = self
            .credentials
            .iter()
            .map(|c| {
                let (scheme, host, port) = &c.origin;
                format!("{scheme}://{host}:{port} {}: [redacted]", c.name)
            })
            .collect();
        f.debug_struct("HttpRequest")
            .field("allowed", &self.allowed)
            .field("credentials", &credentials)
            .field("read_only", &self.read_only)
            .field("timeout", &self.timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("max_request_bytes", &self.max_request_bytes)
            .finish_non_exhaustive()
    }
}

impl Default for HttpRequest {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpRequest {
    /// The default response body limit: 1 MiB.
    pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 1024 * 1024;
    /// The default request body limit: 1 MiB.
    pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1024 * 1024;
    /// The default time limit of a call, redirects and body included: 30 s.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// The most headers the model may send.
    pub const MAX_HEADERS: usize = 32;
    /// The longest URL, in bytes.
    pub const MAX_URL_LEN: usize = 8 * 1024;
    /// The most redirects one call follows.
    pub const MAX_REDIRECTS: usize = 5;
    /// The response headers returned to the model.
    pub const RESPONSE_HEADERS: &'static [&'static str] = &[
        "cache-control",
        "content-language",
        "content-length",
        "content-type",
        "date",
        "etag",
        "expires",
        "last-modified",
        "link",
        "location",
        "retry-after",
    ];
    /// Headers the model may not set: the transport's own, and cookies.
    pub const FORBIDDEN_HEADERS: &'static [&'static str] = &[
        "connection",
        "content-length",
        "cookie",
        "host",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];

    /// A tool that may send any method, with an empty allowlist (nothing is
    /// reachable until [`allow`](Self::allow)ed). Its safety is
    /// [`ToolSafety::Dangerous`].
    pub fn new() -> Self {
        Self {
            allowed: Vec::new(),
            credentials: Vec::new(),
            redactor: Redactor::default(),
            read_only: false,
            timeout: Self::DEFAULT_TIMEOUT,
            max_response_bytes: Self::DEFAULT_MAX_RESPONSE_BYTES,
            max_request_bytes: Self::DEFAULT_MAX_REQUEST_BYTES,
            client: crate::http::direct_client(),
        }
    }

    /// A tool that only sends `GET` and `HEAD` (another method is
    /// `PermissionDenied`), with an empty allowlist. Its safety is
    /// [`ToolSafety::Safe`].
    pub fn read_only() -> Self {
        Self {
            read_only: true,
            ..Self::new()
        }
    }

    /// Allows requests to the origins `pattern` matches (see the type's
    /// docs for the three forms).
    ///
    /// # Errors
    /// [`HttpRequestConfigError::InvalidPattern`] for any other shape.
    pub fn allow(mut self, pattern: &str) -> Result<Self, HttpRequestConfigError> {
        self.allowed.push(HostPattern::parse(pattern)?);
        Ok(self)
    }

    /// Attaches the header `name: value` to every request to `origin`
    /// (`scheme://host[:port]`, exactly), and to no other. The origin must
    /// also be [`allow`](Self::allow)ed to be reachable.
    ///
    /// # Errors
    /// [`HttpRequestConfigError::InvalidOrigin`] or
    /// [`HttpRequestConfigError::InvalidHeader`].
    pub fn credential(
        mut self,
        origin: &str,
        name: &str,
        value: &str,
    ) -> Result<Self, HttpRequestConfigError> {
        let url = parse_origin(origin).map_err(|reason| HttpRequestConfigError::InvalidOrigin {
            origin: origin.to_string(),
            reason,
        })?;
        let key = origin_of(&url).ok_or_else(|| HttpRequestConfigError::InvalidOrigin {
            origin: origin.to_string(),
            reason: "no host or port".to_string(),
        })?;
        let invalid_header = |source: Box<dyn std::error::Error + Send + Sync>| {
            HttpRequestConfigError::InvalidHeader {
                name: name.to_string(),
                source,
            }
        };
        let header =
            HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid_header(e.into()))?;
        let mut header_value =
            HeaderValue::from_str(value).map_err(|e| invalid_header(e.into()))?;
        header_value.set_sensitive(true);
        self.credentials.push(Credential {
            origin: key,
            name: header,
            value: header_value,
        });
        let secrets: Vec<&str> = self
            .credentials
            .iter()
            .filter_map(|c| c.value.to_str().ok())
            .collect();
        self.redactor = Redactor::new(secrets);
        Ok(self)
    }

    /// Sets the time limit of a call (connecting, every redirect, reading
    /// the body).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the largest response body read, in bytes.
    #[must_use]
    pub fn max_response_bytes(mut self, max: u64) -> Self {
        self.max_response_bytes = max;
        self
    }

    /// Sets the largest request body sent, in bytes.
    #[must_use]
    pub fn max_request_bytes(mut self, max: usize) -> Self {
        self.max_request_bytes = max;
        self
    }

    /// The time limit of a call.
    pub fn get_timeout(&self) -> Duration {
        self.timeout
    }

    /// The response body limit, in bytes.
    pub fn get_max_response_bytes(&self) -> u64 {
        self.max_response_bytes
    }

    /// The request body limit, in bytes.
    pub fn get_max_request_bytes(&self) -> usize {
        self.max_request_bytes
    }

    /// Whether only `GET` and `HEAD` are allowed.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn methods(&self) -> &'static [&'static str] {
        if self.read_only {
            &["GET", "HEAD"]
        } else {
            &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        }
    }

    /// Refuses `url` unless an allowlist pattern matches it.
    fn check_allowed(&self, url: &Url) -> Result<(), ToolError> {
        if self.allowed.iter().any(|p| p.matches(url)) {
            return Ok(());
        }
        let host = url.host_str().unwrap_or("");
        let port = url
            .port_or_known_default()
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        Err(error(
            ToolErrorKind::PermissionDenied,
            format!(
                "host {host:?} ({}://{host}{port}) is not in the tool's allowlist",
                url.scheme()
            ),
        ))
    }

    /// The credential headers for `url`'s origin.
    fn credentials_for(&self, url: &Url) -> impl Iterator<Item = &Credential> {
        let origin = origin_of(url);
        self.credentials
            .iter()
            .filter(move |c| origin.as_ref() == Some(&c.origin))
    }

    fn parse_request(&self, args: &Value) -> Result<Request, ToolError> {
        let invalid = |m: String| error(ToolErrorKind::InvalidInput, m);
        let args = args
            .as_object()
            .ok_or_else(|| invalid("the arguments must be an object".to_string()))?;
        if let Some(key) = args
            .keys()
            .find(|k| !matches!(k.as_str(), "method" | "url" | "headers" | "body"))
        {
            return Err(invalid(format!("unknown argument {key:?}")));
        }
        let url_text = args
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("missing string argument \"url\"".to_string()))?;
        if url_text.len() > Self::MAX_URL_LEN {
            return Err(error(
                ToolErrorKind::LimitExceeded,
                format!(
                    "the URL is {} bytes, over the limit of {}",
                    url_text.len(),
                    Self::MAX_URL_LEN
                ),
            ));
        }
        let url = Url::parse(url_text).map_err(|e| {
            error(ToolErrorKind::InvalidInput, format!("invalid \"url\": {e}")).with_source(e)
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "\"url\" scheme {:?} is not http or https",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "\"url\" must not contain user info (user:password@)".to_string(),
            ));
        }
        let method_text = match args.get("method") {
            None | Some(Value::Null) => "GET",
            Some(Value::String(m)) => m.as_str(),
            Some(_) => return Err(invalid("\"method\" must be a string".to_string())),
        };
        let upper = method_text.to_ascii_uppercase();
        if !self.methods().contains(&upper.as_str()) {
            let kind = if self.read_only
                && ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"].contains(&upper.as_str())
            {
                ToolErrorKind::PermissionDenied
            } else {
                ToolErrorKind::InvalidInput
            };
            return Err(error(
                kind,
                format!(
                    "method {method_text:?} is not allowed (allowed: {})",
                    self.methods().join(", ")
                ),
            ));
        }
        let method = Method::from_bytes(upper.as_bytes())
            .map_err(|e| invalid(format!("invalid \"method\": {e}")))?;
        self.check_allowed(&url)?;

        let mut headers = HeaderMap::new();
        match args.get("headers") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                if map.len() > Self::MAX_HEADERS {
                    return Err(error(
                        ToolErrorKind::LimitExceeded,
                        format!(
                            "{} headers, over the limit of {}",
                            map.len(),
                            Self::MAX_HEADERS
                        ),
                    ));
                }
                for (name, value) in map {
                    let value = value.as_str().ok_or_else(|| {
                        invalid(format!("header {name:?} must have a string value"))
                    })?;
                    let header = HeaderName::from_bytes(name.as_bytes()).map_err(|e| {
                        error(
                            ToolErrorKind::InvalidInput,
                            format!("invalid header name {name:?}"),
                        )
                        .with_source(e)
                    })?;
                    if Self::FORBIDDEN_HEADERS.contains(&header.as_str()) {
                        return Err(invalid(format!(
                            "header {:?} is set by the transport and may not be given",
                            header.as_str()
                        )));
                    }
                    let value = HeaderValue::from_str(value).map_err(|e| {
                        error(
                            ToolErrorKind::InvalidInput,
                            format!("invalid value for header {name:?}"),
                        )
                        .with_source(e)
                    })?;
                    headers.append(header, value);
                }
            }
            Some(_) => return Err(invalid("\"headers\" must be an object".to_string())),
        }
        let body = match args.get("body") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.clone().into_bytes()),
            Some(value) => {
                if !headers.contains_key(reqwest::header::CONTENT_TYPE) {
                    headers.insert(
                        reqwest::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                }
                Some(serde_json::to_vec(value).map_err(|e| {
                    error(ToolErrorKind::InvalidInput, "cannot encode \"body\"").with_source(e)
                })?)
            }
        };
        if let Some(body) = &body
            && body.len() > self.max_request_bytes
        {
            return Err(error(
                ToolErrorKind::LimitExceeded,
                format!(
                    "the request body is {} bytes, over the `max_request_bytes` limit of {}",
                    body.len(),
                    self.max_request_bytes
                ),
            ));
        }
        Ok(Request {
            method,
            url,
            headers,
            body,
        })
    }

    /// Sends `request`, following allowlisted redirects, and reads the
    /// response within the body limit.
    async fn exchange(&self, mut request: Request) -> Result<Value, ToolError> {
        let client = self.client.as_ref().map_err(|e| {
            error(
                ToolErrorKind::Unavailable,
                format!("cannot build the HTTP client: {e}"),
            )
        })?;
        let mut redirects = 0;
        loop {
            self.check_allowed(&request.url)?;
            for credential in self.credentials_for(&request.url) {
                if request.headers.contains_key(&credential.name) {
                    return Err(error(
                        ToolErrorKind::PermissionDenied,
                        format!(
                            "header {:?} is a configured credential for host {:?} and may not be set by the caller",
                            credential.name.as_str(),
                            request.url.host_str().unwrap_or("")
                        ),
                    ));
                }
            }
            let mut headers = request.headers.clone();
            for credential in self.credentials_for(&request.url) {
                headers.insert(credential.name.clone(), credential.value.clone());
            }
            let mut builder = client
                .request(request.method.clone(), request.url.clone())
                .headers(headers);
            if let Some(body) = &request.body {
                builder = builder.body(body.clone());
            }
            let host = request.url.host_str().unwrap_or("").to_string();
            let response = builder.send().await.map_err(|e| {
                let message = format!("request to host {host:?} failed: {}", describe(&e));
                error(ToolErrorKind::Unavailable, message).with_source(e)
            })?;
            let status = response.status();
            if status.is_redirection()
                && let Some(location) = response.headers().get(reqwest::header::LOCATION)
            {
                redirects += 1;
                if redirects > Self::MAX_REDIRECTS {
                    return Err(error(
                        ToolErrorKind::LimitExceeded,
                        format!("more than {} redirects", Self::MAX_REDIRECTS),
                    ));
                }
                let target = location
                    .to_str()
                    .ok()
                    .and_then(|l| request.url.join(l).ok())
                    .ok_or_else(|| {
                        error(
                            ToolErrorKind::Failed,
                            format!("host {host:?} redirected to an invalid location"),
                        )
                    })?;
                if !matches!(target.scheme(), "http" | "https") {
                    return Err(error(
                        ToolErrorKind::PermissionDenied,
                        format!("host {host:?} redirected to a {:?} URL", target.scheme()),
                    ));
                }
                self.check_allowed(&target).map_err(|e| {
                    error(
                        ToolErrorKind::PermissionDenied,
                        format!(
                            "host {host:?} redirected to a host that is not allowed: {}",
                            e.message
                        ),
                    )
                })?;
                let code = status.as_u16();
                if matches!(code, 301..=303)
                    && (code == 303 || !matches!(request.method, Method::GET | Method::HEAD))
                {
                    if request.method != Method::HEAD {
                        request.method = Method::GET;
                    }
                    request.body = None;
                    request.headers.remove(reqwest::header::CONTENT_TYPE);
                }
                request.url = target;
                continue;
            }
            return self.read_response(response).await;
        }
    }

    async fn read_response(&self, mut response: reqwest::Response) -> Result<Value, ToolError> {
        let host = response.url().host_str().unwrap_or("").to_string();
        let limit = self.max_response_bytes;
        let too_large = |seen: u64| {
            error(
                ToolErrorKind::LimitExceeded,
                format!(
                    "the response from host {host:?} is over the `max_response_bytes` limit of \
                     {limit} bytes (at least {seen} bytes)"
                ),
            )
        };
        if let Some(length) = response.content_length()
            && length > limit
        {
            return Err(too_large(length));
        }
        let status = response.status().as_u16();
        let final_url = self.redactor.redact(response.url().as_str()).into_owned();
        let mut headers = Map::new();
        for name in Self::RESPONSE_HEADERS {
            let values: Vec<String> = response
                .headers()
                .get_all(*name)
                .iter()
                .map(|v| {
                    self.redactor
                        .redact(&String::from_utf8_lossy(v.as_bytes()))
                        .into_owned()
                })
                .collect();
            if !values.is_empty() {
                headers.insert((*name).to_string(), Value::String(values.join(", ")));
            }
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mut bytes: Vec<u8> = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            let message = format!(
                "reading the response from host {host:?} failed: {}",
                describe(&e)
            );
            error(ToolErrorKind::Unavailable, message).with_source(e)
        })? {
            let seen = (bytes.len() as u64).saturating_add(chunk.len() as u64);
            if seen > limit {
                return Err(too_large(seen));
            }
            bytes.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            error(
                ToolErrorKind::Failed,
                format!(
                    "the response from host {host:?} is binary ({} bytes, content type {content_type:?}); \
                     this tool returns text and JSON only",
                    e.as_bytes().len()
                ),
            )
        })?;
        let text = self.redactor.redact(&text).into_owned();
        let media = content_type.split(';').next().unwrap_or("").trim();
        let is_json = media == "application/json" || media.ends_with("+json");
        let body = match is_json.then(|| serde_json::from_str::<Value>(&text)) {
            Some(Ok(mut value)) => {
                redact_value(&self.redactor, &mut value);
                value
            }
            _ => Value::String(text),
        };
        Ok(json!({
            "status": status,
            "url": final_url,
            "headers": headers,
            "body": body,
        }))
    }
}

/// A parsed, checked request.
#[derive(Debug)]
struct Request {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
}

fn error(kind: ToolErrorKind, message: impl Into<String>) -> ToolError {
    ToolError::new(HTTP_REQUEST, kind, message)
}

/// A transport error's kind, in words (without its URL).
fn describe(e: &reqwest::Error) -> &'static str {
    if e.is_connect() {
        "could not connect"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "the body could not be read"
    } else if e.is_request() {
        "the request could not be sent"
    } else {
        "transport error"
    }
}

/// Redacts every string (and key) in `value`, without recursion.
fn redact_value(redactor: &Redactor, value: &mut Value) {
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::String(s) => {
                if let Cow::Owned(clean) = redactor.redact(s) {
                    *s = clean;
                }
            }
            Value::Array(items) => stack.extend(items.iter_mut()),
            Value::Object(map) => {
                if map
                    .keys()
                    .any(|k| matches!(redactor.redact(k), Cow::Owned(_)))
                {
                    let old = std::mem::take(map);
                    *map = old
                        .into_iter()
                        .map(|(k, v)| (redactor.redact(&k).into_owned(), v))
                        .collect();
                }
                stack.extend(map.values_mut());
            }
            _ => {}
        }
    }
}

#[async_trait]
impl Tool for HttpRequest {
    fn name(&self) -> &str {
        HTTP_REQUEST
    }

    /// [`ToolSafety::Safe`] for [`read_only`](HttpRequest::read_only)
    /// tools (`GET`/`HEAD` only), else [`ToolSafety::Dangerous`].
    fn safety(&self) -> ToolSafety {
        if self.read_only {
            ToolSafety::Safe
        } else {
            ToolSafety::Dangerous
        }
    }

    fn description(&self) -> &str {
        if self.read_only {
            "Fetches a URL from an allowed host with GET or HEAD and returns the status, headers and body."
        } else {
            "Makes an HTTP request to an allowed host and returns the status, headers and body."
        }
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "method": {
                    "type": "string",
                    "enum": self.methods(),
                    "description": "The HTTP method (default GET)."
                },
                "url": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": Self::MAX_URL_LEN,
                    "description": "An http or https URL on an allowed host."
                },
                "headers": {
                    "type": "object",
                    "maxProperties": Self::MAX_HEADERS,
                    "additionalProperties": {"type": "string"},
                    "description": "Request headers."
                },
                "body": {
                    "description": "The request body: a string is sent as is, other JSON as application/json."
                }
            },
            "required": ["url"],
            "additionalProperties": false
        })
    }

    /// Sends the request.
    ///
    /// # Cancel safety
    /// Dropping the future drops the connection; the server may or may not
    /// have received the request.
    async fn call(&self, args: Value) -> Result<Value, ToolError> {
        let request = self.parse_request(&args)?;
        let idempotent = !matches!(request.method, Method::POST | Method::PATCH);
        let host = request.url.host_str().unwrap_or("").to_string();
        let method = request.method.clone();
        match tokio::time::timeout(self.timeout, self.exchange(request)).await {
            Ok(result) => result,
            Err(elapsed) => {
                let kind = if idempotent {
                    ToolErrorKind::Timeout
                } else {
                    ToolErrorKind::Failed
                };
                Err(error(
                    kind,
                    format!(
                        "{method} to host {host:?} timed out after {:?} (the `timeout` limit)",
                        self.timeout
                    ),
                )
                .with_source(elapsed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn nothing_is_allowed_by_default() {
        let tool = HttpRequest::new();
        let err = tool
            .check_allowed(&Url::parse("https://example.com/").unwrap())
            .unwrap_err();
        assert_eq!(err.kind(), ToolErrorKind::PermissionDenied);
        assert!(err.message.contains("\"example.com\""));
    }

    #[test]
    fn redaction_reaches_nested_strings_and_keys() {
        let r = Redactor::new(["secret-1"]);
        let mut v = json!({"a": [{"secret-1": "x secret-1 y"}], "b": "secret-1"});
        redact_value(&r, &mut v);
        assert_eq!(
            v,
            json!({"a": [{"[redacted]": "x [redacted] y"}], "b": "[redacted]"})
        );
    }
}
