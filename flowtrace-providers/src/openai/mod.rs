//! OpenAI Chat Completions client, also for OpenAI-compatible servers.
//!
//! [`OpenAi`] speaks `POST {base_url}/chat/completions`, plain and streamed
//! (server-sent events). It makes no assumption only OpenAI satisfies: a
//! reply may lack `id` or `usage`, carry `finish_reason: null` or extra
//! fields, and a stream may put its usage in a last chunk with no choices, so
//! vLLM, llama.cpp's `llama-server`, Ollama and LiteLLM work through
//! [`OpenAi::base_url`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use flowtrace_core::{ChatModel, ChatRequest};
//! use flowtrace_providers::openai::OpenAi;
//!
//! let openai = OpenAi::from_env()?;
//! let reply = openai.chat(ChatRequest::new("gpt-4o-mini").user("Hi")).await?;
//! println!("{}", reply.text);
//!
//! // A local llama-server, priced under its own name.
//! let local = OpenAi::new(flowtrace_providers::ApiKey::new(""))
//!     .base_url("http://127.0.0.1:8080/v1")
//!     .provider_name("local");
//! # let _ = local;
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_stream::{EventStreamError, Eventsource};
use flowtrace_core::model::{ResponseFormat, ToolCall, ToolChoice};
use flowtrace_core::{
    ChatModel, ChatRequest, ChatResponse, ChatStream, FinishReason, ModelError, ModelErrorKind,
    Role, StreamEvent, TokenUsage,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::http::{self, ApiKey, MissingApiKey};
use crate::redact::{Redactor, StreamRedactor};

/// OpenAI's API root, used unless `OPENAI_BASE_URL` or
/// [`OpenAi::base_url`] says otherwise.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// The request timeout unless [`OpenAi::timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// An extra header given to [`OpenAi::header`] was not a valid HTTP header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid HTTP header {name:?} (name or value)")]
#[non_exhaustive]
pub struct InvalidHeader {
    /// The header's name as given (its value is never shown: it may be a
    /// secret).
    pub name: String,
}

/// A client of the OpenAI Chat Completions API (or of an OpenAI-compatible
/// server). Cheap to clone; the HTTP connection pool is shared.
///
/// The API key is sent only as `Authorization: Bearer …` (not at all when
/// empty, for local servers), and never appears in `Debug` output, errors,
/// traces or logs.
///
/// Credentials (the key and the [extra headers](OpenAi::header)) go only to
/// the base URL: redirects are never followed, and a 3xx answer is a
/// non-retryable [`ModelErrorKind::Redirect`] naming only the target's
/// origin. Should a server echo a credential back, it is replaced by
/// `[redacted]` in every error message and reply built from the response.
#[derive(Clone)]
pub struct OpenAi {
    http: Result<reqwest::Client, Arc<str>>,
    key: ApiKey,
    base_url: Arc<str>,
    provider: Arc<str>,
    timeout: Duration,
    headers: Arc<[(HeaderName, HeaderValue)]>,
}

impl fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("OpenAi")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("extra_headers", &names)
            .field("api_key", &self.key)
            .finish()
    }
}

impl OpenAi {
    /// A client with the key in `OPENAI_API_KEY`, talking to
    /// `OPENAI_BASE_URL` when set, else [`DEFAULT_BASE_URL`].
    pub fn from_env() -> Result<Self, MissingApiKey> {
        let key = ApiKey::from_env("OPENAI_API_KEY")?;
        let base = std::env::var("OPENAI_BASE_URL").ok();
        Ok(Self::with_base(key, base))
    }

    fn with_base(key: ApiKey, base: Option<String>) -> Self {
        match base.filter(|b| !b.trim().is_empty()) {
            Some(base) => Self::new(key).base_url(base),
            None => Self::new(key),
        }
    }

    /// A client of OpenAI with `key`.
    pub fn new(key: ApiKey) -> Self {
        Self {
            http: http::client(),
            key,
            base_url: Arc::from(DEFAULT_BASE_URL),
            provider: Arc::from("openai"),
            timeout: DEFAULT_TIMEOUT,
            headers: Arc::from(Vec::new()),
        }
    }

    /// Talks to another OpenAI-compatible server, e.g.
    /// `http://localhost:8000/v1` (vLLM) or `http://localhost:11434/v1`
    /// (Ollama). Requests go to `{url}/chat/completions`.
    #[must_use]
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        let url = url.into();
        self.base_url = Arc::from(url.trim().trim_end_matches('/'));
        self
    }

    /// The provider name used for pricing and in errors (default `openai`).
    #[must_use]
    pub fn provider_name(mut self, name: impl Into<String>) -> Self {
        self.provider = Arc::from(name.into());
        self
    }

    /// The request timeout (default 120 s), from sending the request to the
    /// end of the reply — of the whole stream for streamed replies.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same client (connection pool, settings) with another key — for
    /// example a consumer's own key. Cheap.
    pub fn with_api_key(&self, key: ApiKey) -> Self {
        Self {
            key,
            ..self.clone()
        }
    }

    /// Uses this `reqwest` client (proxies, TLS settings, pool sizes).
    ///
    /// Build it with `.redirect(reqwest::redirect::Policy::none())`: the
    /// redirect policy of a built client cannot be changed, and a client
    /// that follows redirects sends the request — with the `Authorization`
    /// header to the same host, and the [extra headers](Self::header) to any
    /// host — to wherever the server points it. Redirects are refused either
    /// way by checking each answer: a 3xx, or an answer from another URL than
    /// the one requested, is a [`ModelErrorKind::Redirect`] error and its
    /// body is never read as a reply.
    ///
    /// ```
    /// let http = reqwest::Client::builder()
    ///     .redirect(reqwest::redirect::Policy::none())
    ///     .build()?;
    /// let openai = flowtrace_providers::openai::OpenAi::new(flowtrace_providers::ApiKey::new("sk-…"))
    ///     .http_client(http);
    /// # let _ = openai;
    /// # Ok::<(), reqwest::Error>(())
    /// ```
    #[must_use]
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Ok(client);
        self
    }

    /// Sends an extra header with every request (e.g. `OpenAI-Organization`,
    /// or a gateway's own key such as Azure's `api-key`). Its value is treated
    /// as a credential: never shown in `Debug` output, and replaced by
    /// `[redacted]` in any error or reply that echoes it.
    pub fn header(mut self, name: &str, value: &str) -> Result<Self, InvalidHeader> {
        let invalid = || InvalidHeader {
            name: name.to_string(),
        };
        let header_name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| invalid())?;
        let mut header_value = HeaderValue::from_str(value).map_err(|_| invalid())?;
        header_value.set_sensitive(true);
        let mut headers: Vec<_> = self.headers.iter().cloned().collect();
        headers.push((header_name, header_value));
        self.headers = Arc::from(headers);
        Ok(self)
    }

    fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.base_url)
    }

    /// The credentials this client sends: the key and the extra headers'
    /// values.
    fn redactor(&self) -> Redactor {
        let headers = self.headers.iter().filter_map(|(_, v)| v.to_str().ok());
        Redactor::new(std::iter::once(self.key.expose()).chain(headers))
    }

    fn error(&self, kind: ModelErrorKind, model: &str, message: &str) -> ModelError {
        let message = self.redactor().redact(message).into_owned();
        ModelError::new(kind, &*self.provider, model, message)
    }

    fn transport_error(&self, e: reqwest::Error, model: &str) -> ModelError {
        http::transport_error(e, &self.provider, model)
    }

    fn malformed(&self, model: &str, message: &str) -> ModelError {
        self.error(ModelErrorKind::MalformedResponse, model, message)
    }

    fn status_error(
        &self,
        status: u16,
        body: &str,
        retry_after: Option<Duration>,
        model: &str,
    ) -> ModelError {
        let kind = http::classify(status, body, retry_after);
        // Redacted before `error_message` may cut a credential in two.
        let body = self.redactor().redact(body).into_owned();
        let message = format!("HTTP {status}: {}", http::error_message(&body));
        self.error(kind, model, &message)
    }

    fn problem(&self, problem: Problem, model: &str) -> ModelError {
        match problem {
            Problem::Malformed(message) => self.malformed(model, &message),
            Problem::Api { status, body } => self.status_error(status, &body, None, model),
        }
    }

    /// Posts `request`; a redirect or a non-2xx answer becomes a classified
    /// error.
    async fn send(
        &self,
        request: &ChatRequest,
        stream: bool,
    ) -> Result<reqwest::Response, ModelError> {
        let model = request.model.as_str();
        let client = self
            .http
            .as_ref()
            .map_err(|e| self.error(ModelErrorKind::Transport, model, e))?;
        let endpoint = self.endpoint();
        let mut builder = client
            .post(&endpoint)
            .timeout(self.timeout)
            .json(&request_body(request, stream));
        if !self.key.expose().is_empty() {
            builder = builder.bearer_auth(self.key.expose());
        }
        if stream {
            builder = builder.header(reqwest::header::ACCEPT, "text/event-stream");
        }
        for (name, value) in self.headers.iter() {
            builder = builder.header(name.clone(), value.clone());
        }
        let response = builder
            .send()
            .await
            .map_err(|e| self.transport_error(e, model))?;
        let redactor = self.redactor();
        if let Some(refused) =
            http::refused_redirect(&endpoint, &response, &redactor, &self.provider, model)
        {
            return Err(refused);
        }
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = http::retry_after(response.headers());
        let body = response.text().await.unwrap_or_default();
        Err(self.status_error(status.as_u16(), &body, retry_after, model))
    }

    async fn read_body(
        &self,
        response: reqwest::Response,
        model: &str,
    ) -> Result<String, ModelError> {
        response
            .text()
            .await
            .map_err(|e| self.transport_error(e, model))
    }

    /// Sends a streamed request and returns the reader of its events (with
    /// the whole reply queued when the server ignored `stream: true`).
    async fn open_stream(&self, request: ChatRequest) -> Result<Box<Reader>, ModelError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let response = self.send(&request, true).await?;
        let model = request.model;
        let mut reader = Box::new(Reader {
            events: futures::stream::empty().boxed(),
            acc: Accumulator::default(),
            model,
            deadline,
            pending: VecDeque::new(),
            finished: false,
            redact: self.redactor().stream(),
        });
        let is_json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/json"));
        if !is_json {
            reader.events = response.bytes_stream().eventsource().boxed();
            return Ok(reader);
        }
        let model = &reader.model;
        let body = self.read_body(response, model).await?;
        let mut reply = parse_completion(&body, model).map_err(|p| self.problem(p, model))?;
        self.redactor().redact_response(&mut reply);
        if !reply.text.is_empty() {
            reader
                .pending
                .push_back(Ok(StreamEvent::Delta(reply.text.clone())));
        }
        reader.end(Ok(StreamEvent::Done(reply)));
        Ok(reader)
    }

    /// The next item of a stream being read.
    async fn next_event(&self, mut reader: Box<Reader>) -> Option<(StreamItem, Box<Reader>)> {
        loop {
            if let Some(item) = reader.pending.pop_front() {
                return Some((item, reader));
            }
            if reader.finished {
                return None;
            }
            let model = reader.model.as_str();
            let next = tokio::time::timeout_at(reader.deadline, reader.events.next()).await;
            let failure = match next {
                Ok(Some(Ok(event))) => {
                    self.on_event(&mut reader, &event);
                    continue;
                }
                Err(_) => {
                    let message = format!("no complete reply within {:?}", self.timeout);
                    self.error(ModelErrorKind::Timeout, model, &message)
                }
                Ok(None) => self.malformed(model, "stream ended before [DONE]"),
                Ok(Some(Err(EventStreamError::Transport(e)))) => self.transport_error(e, model),
                Ok(Some(Err(_))) => self.malformed(model, "invalid server-sent event stream"),
            };
            reader.end(Err(failure));
        }
    }

    /// Folds one server-sent event into the reader.
    fn on_event(&self, reader: &mut Reader, event: &eventsource_stream::Event) {
        let data = event.data.trim();
        if data == "[DONE]" {
            let mut reply = std::mem::take(&mut reader.acc).finish(&reader.model);
            self.redactor().redact_response(&mut reply);
            if let Some(rest) = reader.redact.finish() {
                reader.pending.push_back(Ok(StreamEvent::Delta(rest)));
            }
            reader.end(Ok(StreamEvent::Done(reply)));
        } else if !data.is_empty() {
            match reader.acc.apply(data, event.event == "error") {
                Ok(Some(delta)) => {
                    if let Some(safe) = reader.redact.push(&delta) {
                        reader.pending.push_back(Ok(StreamEvent::Delta(safe)));
                    }
                }
                Ok(None) => {}
                Err(problem) => {
                    let e = self.problem(problem, &reader.model);
                    reader.end(Err(e));
                }
            }
        }
    }
}

#[async_trait]
impl ChatModel for OpenAi {
    fn provider(&self) -> &str {
        &self.provider
    }

    /// Posts the request and parses the whole reply.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the request.
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ModelError> {
        let response = self.send(&request, false).await?;
        let body = self.read_body(response, &request.model).await?;
        let mut reply =
            parse_completion(&body, &request.model).map_err(|p| self.problem(p, &request.model))?;
        self.redactor().redact_response(&mut reply);
        Ok(reply)
    }

    /// Posts the request with `stream: true` and yields text deltas as they
    /// arrive, then [`StreamEvent::Done`] with the whole reply and its usage.
    ///
    /// # Cancel safety
    /// Dropping the stream abandons the request.
    fn chat_stream(&self, request: ChatRequest) -> ChatStream<'_> {
        futures::stream::once(self.open_stream(request))
            .flat_map(move |opened| match opened {
                Ok(reader) => futures::stream::unfold(reader, move |r| self.next_event(r)).boxed(),
                Err(e) => futures::stream::iter([Err(e)]).boxed(),
            })
            .boxed()
    }

    /// Counts the prompt with the model's OpenAI encoding
    /// ([`crate::tokens::estimate_openai`]).
    fn estimate_input_tokens(&self, request: &ChatRequest) -> u64 {
        crate::tokens::estimate_openai(request)
    }
}

type StreamItem = Result<StreamEvent, ModelError>;

/// A streamed reply being read.
struct Reader {
    events: BoxStream<'static, Result<eventsource_stream::Event, EventStreamError<reqwest::Error>>>,
    acc: Accumulator,
    model: String,
    deadline: tokio::time::Instant,
    pending: VecDeque<StreamItem>,
    finished: bool,
    /// Holds back text that may be the start of an echoed credential.
    redact: StreamRedactor,
}

impl Reader {
    /// Queues the last item of the stream.
    fn end(&mut self, item: StreamItem) {
        self.pending.push_back(item);
        self.finished = true;
    }
}

/// Why a 2xx body could not become a reply.
#[derive(Debug, PartialEq)]
enum Problem {
    /// Not the expected JSON.
    Malformed(String),
    /// The server reported an error in the body (status inferred).
    Api { status: u16, body: String },
}

// ---------------------------------------------------------------- request --

/// The JSON body of a Chat Completions request.
fn request_body(request: &ChatRequest, stream: bool) -> Value {
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if let Some(system) = &request.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    for m in &request.messages {
        // `Role` serializes as OpenAI's lowercase role names.
        let mut out = json!({"role": m.role, "content": m.content});
        if m.role == Role::Assistant && !m.tool_calls.is_empty() {
            if m.content.is_empty() {
                out["content"] = Value::Null;
            }
            out["tool_calls"] = m
                .tool_calls
                .iter()
                .map(|c| {
                    let arguments = arguments_string(&c.arguments);
                    let function = json!({"name": c.name, "arguments": arguments});
                    json!({"id": c.id, "type": "function", "function": function})
                })
                .collect();
        }
        if let Some(id) = &m.tool_call_id {
            out["tool_call_id"] = json!(id);
        }
        messages.push(out);
    }
    let mut body = json!({"model": request.model, "messages": messages});
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                let function = json!({"name": t.name, "description": t.description,
                                      "parameters": t.parameters});
                json!({"type": "function", "function": function})
            })
            .collect();
    }
    if let Some(choice) = &request.tool_choice {
        body["tool_choice"] = match choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
        };
    }
    if let Some(t) = request.temperature.and_then(number) {
        body["temperature"] = t;
    }
    if let Some(p) = request.top_p.and_then(number) {
        body["top_p"] = p;
    }
    if let Some(n) = request.max_tokens {
        body["max_tokens"] = json!(n);
    }
    if !request.stop.is_empty() {
        body["stop"] = json!(request.stop);
    }
    match &request.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            body["response_format"] = json!({"type": "json_object"})
        }
        Some(ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
        }) => {
            let spec = json!({"name": name, "schema": schema, "strict": strict});
            body["response_format"] = json!({"type": "json_schema", "json_schema": spec});
        }
    }
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// Tool call arguments as the JSON string OpenAI expects. A string value is
/// sent as is: it holds arguments that were not valid JSON when received.
fn arguments_string(arguments: &Value) -> String {
    match arguments {
        Value::String(raw) => raw.clone(),
        other => other.to_string(),
    }
}

/// An `f32` as the JSON number it reads as (`0.2`, not `0.20000000298…`).
fn number(v: f32) -> Option<Value> {
    v.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
}

// --------------------------------------------------------------- response --

#[derive(Deserialize)]
struct WireCompletion {
    model: Option<String>,
    choices: Option<Vec<WireChoice>>,
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    index: Option<u64>,
    message: Option<WireMessage>,
    delta: Option<WireMessage>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    content: Option<Value>,
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Deserialize)]
struct WireToolCall {
    index: Option<u64>,
    id: Option<String>,
    function: Option<WireFunction>,
}

#[derive(Deserialize)]
struct WireFunction {
    name: Option<String>,
    arguments: Option<Value>,
}

#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<WireUsageDetails>,
}

#[derive(Deserialize)]
struct WireUsageDetails {
    cached_tokens: Option<u64>,
}

impl WireUsage {
    fn to_usage(&self) -> TokenUsage {
        TokenUsage {
            cached_input_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            ..TokenUsage::new(
                self.prompt_tokens.unwrap_or(0),
                self.completion_tokens.unwrap_or(0),
            )
        }
    }
}

/// Parses a JSON document of the expected shape, or says briefly why not.
fn parse_json(text: &str, what: &str) -> Result<WireCompletion, Problem> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Problem::Malformed(format!("{what} is not JSON ({e})")))?;
    let no_choices = value
        .get("choices")
        .is_none_or(|c| c.as_array().is_none_or(Vec::is_empty));
    if let Some(error) = value.get("error").filter(|e| !e.is_null())
        && no_choices
    {
        return Err(Problem::Api {
            status: error_status(error),
            body: text.to_string(),
        });
    }
    serde_json::from_value(value).map_err(|e| {
        let detail: String = e.to_string().chars().take(120).collect();
        Problem::Malformed(format!("{what} is not a chat completion ({detail})"))
    })
}

/// The HTTP status an error object reported inside a 2xx body stands for:
/// its numeric `code`, else guessed from its `type` and `code` labels.
fn error_status(error: &Value) -> u16 {
    let code = error.get("code").and_then(Value::as_u64);
    if let Some(code) = code
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..600).contains(c))
    {
        return code;
    }
    let label = |k: &str| {
        error
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    let labels = format!("{} {}", label("type"), label("code"));
    const GUESSES: [(&[&str], u16); 4] = [
        (&["rate_limit"], 429),
        (&["auth", "api_key", "permission"], 401),
        (&["not_found"], 404),
        (&["invalid_request", "context_length"], 400),
    ];
    GUESSES
        .iter()
        .find(|(words, _)| words.iter().any(|w| labels.contains(w)))
        .map_or(500, |(_, status)| *status)
}

/// Text content: a string, or the `text` of content parts.
fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// Tool call arguments from their wire string: parsed JSON, `{}` when empty,
/// or the raw string when it is not valid JSON.
fn parse_arguments(raw: &str) -> Value {
    if raw.trim().is_empty() {
        return Value::Object(Map::new());
    }
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

fn finish_reason(reason: Option<&str>, has_tool_calls: bool) -> FinishReason {
    match reason {
        Some("stop") => FinishReason::Stop,
        Some("length") => FinishReason::Length,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        Some("content_filter") => FinishReason::ContentFilter,
        Some(other) if !other.is_empty() => FinishReason::Other(other.to_string()),
        _ if has_tool_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// A whole (non-streamed) reply: folded like a stream of one chunk.
fn parse_completion(body: &str, requested_model: &str) -> Result<ChatResponse, Problem> {
    let mut acc = Accumulator::default();
    acc.fold(parse_json(body, "response body")?, true);
    if !acc.saw_choice {
        return Err(Problem::Malformed("response has no choices".into()));
    }
    Ok(acc.finish(requested_model))
}

// -------------------------------------------------------------- streaming --

/// A tool call being streamed.
#[derive(Default)]
struct PartialCall {
    index: u64,
    id: String,
    name: String,
    arguments: String,
}

/// What a stream has said so far.
#[derive(Default)]
struct Accumulator {
    text: String,
    calls: Vec<PartialCall>,
    usage: Option<TokenUsage>,
    finish_reason: Option<String>,
    model: Option<String>,
    saw_choice: bool,
}

impl Accumulator {
    /// Folds one stream chunk in; returns its text delta, if any.
    fn apply(&mut self, data: &str, error_event: bool) -> Result<Option<String>, Problem> {
        if error_event {
            let error = serde_json::from_str::<Value>(data)
                .ok()
                .and_then(|v| v.get("error").cloned());
            return Err(Problem::Api {
                status: error.as_ref().map_or(500, error_status),
                body: data.to_string(),
            });
        }
        let chunk = parse_json(data, "stream chunk")?;
        Ok(self.fold(chunk, false))
    }

    /// Folds a chunk (or a `whole` reply) in; returns its text, if any.
    fn fold(&mut self, chunk: WireCompletion, whole: bool) -> Option<String> {
        if self.model.is_none() {
            self.model = chunk.model.filter(|m| !m.is_empty());
        }
        if let Some(usage) = &chunk.usage {
            self.usage = Some(usage.to_usage());
        }
        let mut text = String::new();
        for choice in chunk.choices.unwrap_or_default() {
            if choice.index.unwrap_or(0) != 0 {
                continue;
            }
            self.saw_choice = true;
            if let Some(reason) = choice.finish_reason.filter(|r| !r.is_empty()) {
                self.finish_reason = Some(reason);
            }
            let Some(message) = choice.delta.or(choice.message) else {
                continue;
            };
            text.push_str(&content_text(message.content.as_ref()));
            let calls = message.tool_calls.unwrap_or_default();
            for (i, mut call) in calls.into_iter().enumerate() {
                if whole {
                    // A whole reply lists its calls in order, without index.
                    call.index = Some(i as u64);
                }
                self.apply_call(call);
            }
        }
        self.text.push_str(&text);
        (!text.is_empty()).then_some(text)
    }

    fn apply_call(&mut self, call: WireToolCall) {
        let id = call.id.filter(|id| !id.is_empty());
        let position = match call.index {
            Some(index) => self.calls.iter().position(|c| c.index == index),
            // No index (some servers): a new id starts a new call, anything
            // else continues the last one.
            None => match &id {
                Some(id) => self.calls.iter().position(|c| &c.id == id),
                None => self.calls.len().checked_sub(1),
            },
        };
        let position = position.unwrap_or_else(|| {
            let index = call.index.unwrap_or(self.calls.len() as u64);
            self.calls.push(PartialCall {
                index,
                ..PartialCall::default()
            });
            self.calls.len() - 1
        });
        let Some(slot) = self.calls.get_mut(position) else {
            return;
        };
        if let Some(id) = id {
            slot.id = id;
        }
        if let Some(function) = call.function {
            if let Some(name) = function.name.filter(|n| !n.is_empty()) {
                slot.name = name;
            }
            match function.arguments {
                Some(Value::String(piece)) => slot.arguments.push_str(&piece),
                Some(Value::Null) | None => {}
                Some(other) => slot.arguments.push_str(&other.to_string()),
            }
        }
    }

    /// The whole reply.
    fn finish(mut self, requested_model: &str) -> ChatResponse {
        self.calls.sort_by_key(|c| c.index);
        let tool_calls: Vec<ToolCall> = self
            .calls
            .into_iter()
            .enumerate()
            .map(|(i, c)| ToolCall {
                id: if c.id.is_empty() {
                    format!("call_{i}")
                } else {
                    c.id
                },
                name: c.name,
                arguments: parse_arguments(&c.arguments),
            })
            .collect();
        let finish = finish_reason(self.finish_reason.as_deref(), !tool_calls.is_empty());
        ChatResponse::text(
            self.model.unwrap_or_else(|| requested_model.to_string()),
            self.text,
            self.usage.unwrap_or_default(),
        )
        .with_tool_calls(tool_calls)
        .with_finish_reason(finish)
    }
}

#[cfg(test)]
mod tests;
