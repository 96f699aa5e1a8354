//! Anthropic Messages client (`POST {base}/v1/messages`).
//!
//! Mapping of the provider-neutral [`ChatRequest`]:
//!
//! * `system` and any [`Role::System`] messages become the top-level `system`
//!   prompt (joined by blank lines);
//! * messages are sent as content blocks: text, assistant tool calls as
//!   `tool_use` blocks, tool results as `tool_result` blocks in a `user`
//!   message. Consecutive messages of the same role are merged (Anthropic
//!   requires alternating roles), `tool_result` blocks first; messages with
//!   nothing to send (empty text, no tool calls) are left out;
//! * `max_tokens` is required by Anthropic: a request without one gets the
//!   client's [`default_max_tokens`](Anthropic::default_max_tokens) (4096);
//! * structured output: Anthropic has no `response_format`, so
//!   [`ResponseFormat::JsonSchema`] becomes a forced tool named after the
//!   schema with the schema as its `input_schema` (and
//!   [`ResponseFormat::JsonObject`] a forced tool `json` taking any object).
//!   The tool's input is returned as the reply's text (compact JSON), the
//!   call is removed from `tool_calls`, and the finish reason is `Stop`.
//!   While streaming, the tool input's JSON fragments are the deltas.
//!
//! Usage: Anthropic's `input_tokens` excludes cache reads and writes, so
//! [`TokenUsage::input_tokens`] is the sum of the three, with
//! `cached_input_tokens` = `cache_read_input_tokens` and `cache_write_tokens`
//! = `cache_creation_input_tokens`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_stream::{Event, EventStreamError, Eventsource};
use flowtrace_core::model::{ResponseFormat, ToolCall, ToolChoice};
use flowtrace_core::{
    ChatModel, ChatRequest, ChatResponse, ChatStream, FinishReason, ModelError, ModelErrorKind,
    Role, StreamEvent, TokenUsage,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::http::{self, ApiKey, MissingApiKey};
use crate::redact::{Redactor, StreamRedactor};

const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
const DEFAULT_VERSION: &str = "2023-06-01";
const DEFAULT_MAX_TOKENS: u32 = 4096;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// A client for Anthropic's Messages API. Cheap to clone.
///
/// The timeout bounds a whole non-streamed call, and for a streamed call the
/// wait for the response headers and for each following chunk.
///
/// The key is sent only as `x-api-key`, and only to the base URL: redirects
/// are never followed, and a 3xx answer is a non-retryable
/// [`ModelErrorKind::Redirect`] naming only the target's origin. Should a
/// server echo the key back, it is replaced by `[redacted]` in every error
/// message and reply built from the response.
#[derive(Clone)]
pub struct Anthropic {
    /// The HTTP client, or why it could not be built (reported on each call).
    http: Result<reqwest::Client, Arc<str>>,
    key: ApiKey,
    base_url: String,
    provider: String,
    timeout: Duration,
    version: String,
    default_max_tokens: u32,
}

impl fmt::Debug for Anthropic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Anthropic")
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("api_key", &self.key)
            .field("version", &self.version)
            .field("timeout", &self.timeout)
            .field("default_max_tokens", &self.default_max_tokens)
            .finish_non_exhaustive()
    }
}

impl Anthropic {
    /// A client with `key`, talking to `https://api.anthropic.com`.
    pub fn new(key: ApiKey) -> Self {
        Self {
            http: http::client(),
            key,
            base_url: DEFAULT_BASE_URL.to_string(),
            provider: "anthropic".to_string(),
            timeout: DEFAULT_TIMEOUT,
            version: DEFAULT_VERSION.to_string(),
            default_max_tokens: DEFAULT_MAX_TOKENS,
        }
    }

    /// A client with the key in `ANTHROPIC_API_KEY` and the base URL in
    /// `ANTHROPIC_BASE_URL` (default `https://api.anthropic.com`).
    pub fn from_env() -> Result<Self, MissingApiKey> {
        let client = Self::new(ApiKey::from_env("ANTHROPIC_API_KEY")?);
        Ok(match std::env::var("ANTHROPIC_BASE_URL") {
            Ok(url) if !url.trim().is_empty() => client.base_url(url.trim()),
            _ => client,
        })
    }

    /// Sets the base URL (without `/v1`), for proxies and tests.
    #[must_use]
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into().trim_end_matches('/').to_string();
        self
    }

    /// Sets the provider name used for pricing and errors (default `anthropic`).
    #[must_use]
    pub fn provider_name(mut self, name: impl Into<String>) -> Self {
        self.provider = name.into();
        self
    }

    /// Sets the timeout (default 120 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A copy of this client calling with another key (for example a
    /// consumer's own); the connection pool is shared.
    pub fn with_api_key(&self, key: ApiKey) -> Self {
        Self {
            key,
            ..self.clone()
        }
    }

    /// Sets the `anthropic-version` header (default `2023-06-01`).
    #[must_use]
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Sets the `max_tokens` sent when a request has none (default 4096).
    #[must_use]
    pub fn default_max_tokens(mut self, max_tokens: u32) -> Self {
        self.default_max_tokens = max_tokens;
        self
    }

    fn redactor(&self) -> Redactor {
        Redactor::new([self.key.expose()])
    }

    fn error(&self, kind: ModelErrorKind, model: &str, message: &str) -> ModelError {
        let message = self.redactor().redact(message).into_owned();
        ModelError::new(kind, &self.provider, model, message)
    }

    fn transport_error(&self, e: reqwest::Error, model: &str) -> ModelError {
        http::transport_error(e, &self.provider, model)
    }

    fn timeout_error(&self, model: &str) -> ModelError {
        let message = format!("no answer within {:?}", self.timeout);
        self.error(ModelErrorKind::Timeout, model, &message)
    }

    /// Sends the request; returns the response if its status is 2xx (a
    /// redirect is refused).
    async fn send(
        &self,
        body: &WireRequest<'_>,
        model: &str,
    ) -> Result<reqwest::Response, ModelError> {
        let client = self
            .http
            .as_ref()
            .map_err(|e| self.error(ModelErrorKind::Transport, model, e))?;
        let endpoint = format!("{}/v1/messages", self.base_url);
        let response = client
            .post(&endpoint)
            .header("x-api-key", self.key.expose())
            .header("anthropic-version", &self.version)
            .header("content-type", "application/json")
            .json(body)
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
        let text = response.text().await.unwrap_or_default();
        let kind = http::classify(status.as_u16(), &text, retry_after);
        let message = http::error_message(&redactor.redact(&text));
        Err(self.error(kind, model, &format!("HTTP {}: {message}", status.as_u16())))
    }

    async fn chat_inner(&self, request: &ChatRequest) -> Result<ChatResponse, ModelError> {
        let (body, structured) = build_body(request, self.default_max_tokens, false);
        let model = request.model.as_str();
        let response = self.send(&body, model).await?;
        let text = response
            .text()
            .await
            .map_err(|e| self.transport_error(e, model))?;
        let wire: WireResponse = serde_json::from_str(&text).map_err(|e| {
            let message = format!("unexpected response body: {e}");
            self.error(ModelErrorKind::MalformedResponse, model, &message)
        })?;
        let mut reply = wire.into_response(model, structured.as_deref());
        self.redactor().redact_response(&mut reply);
        Ok(reply)
    }

    async fn open_stream(&self, request: ChatRequest) -> Result<Box<OpenStream>, ModelError> {
        let (body, structured) = build_body(&request, self.default_max_tokens, true);
        let response = tokio::time::timeout(self.timeout, self.send(&body, &request.model))
            .await
            .map_err(|_| self.timeout_error(&request.model))??;
        Ok(Box::new(OpenStream {
            events: response.bytes_stream().eventsource().boxed(),
            acc: StreamAccumulator::new(&request.model, structured),
            model: request.model,
            redact: self.redactor().stream(),
            done: None,
        }))
    }

    async fn stream_step(
        &self,
        state: StreamState,
    ) -> Option<(Result<StreamEvent, ModelError>, StreamState)> {
        let mut open = match state {
            StreamState::Finished => return None,
            StreamState::Start(request) => match self.open_stream(*request).await {
                Ok(open) => open,
                Err(e) => return Some((Err(e), StreamState::Finished)),
            },
            StreamState::Open(open) => open,
        };
        let result = self.next_event(&mut open).await;
        let next = match &result {
            Ok(StreamEvent::Delta(_)) => StreamState::Open(open),
            _ => StreamState::Finished,
        };
        Some((result, next))
    }

    /// Reads events until one gives a delta, the end, or an error.
    async fn next_event(&self, open: &mut OpenStream) -> Result<StreamEvent, ModelError> {
        let malformed = ModelErrorKind::MalformedResponse;
        if let Some(reply) = open.done.take() {
            return Ok(StreamEvent::Done(reply));
        }
        loop {
            let event = match tokio::time::timeout(self.timeout, open.events.next()).await {
                Err(_) => return Err(self.timeout_error(&open.model)),
                Ok(None) => {
                    let message = "the stream ended before message_stop";
                    return Err(self.error(malformed, &open.model, message));
                }
                Ok(Some(Err(EventStreamError::Transport(e)))) => {
                    return Err(self.transport_error(e, &open.model));
                }
                Ok(Some(Err(e))) => {
                    let message = format!("invalid event stream: {e}");
                    return Err(self.error(malformed, &open.model, &message));
                }
                Ok(Some(Ok(event))) => event,
            };
            match open.acc.handle(&event) {
                Ok(None) => {}
                Ok(Some(StreamEvent::Delta(delta))) => {
                    if let Some(safe) = open.redact.push(&delta) {
                        return Ok(StreamEvent::Delta(safe));
                    }
                }
                Ok(Some(StreamEvent::Done(mut reply))) => {
                    self.redactor().redact_response(&mut reply);
                    let Some(rest) = open.redact.finish() else {
                        return Ok(StreamEvent::Done(reply));
                    };
                    open.done = Some(reply);
                    return Ok(StreamEvent::Delta(rest));
                }
                Ok(Some(other)) => return Ok(other),
                Err((kind, message)) => return Err(self.error(kind, &open.model, &message)),
            }
        }
    }
}

#[async_trait]
impl ChatModel for Anthropic {
    fn provider(&self) -> &str {
        &self.provider
    }

    /// Sends the request and waits for the whole reply.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the request.
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ModelError> {
        tokio::time::timeout(self.timeout, self.chat_inner(&request))
            .await
            .map_err(|_| self.timeout_error(&request.model))?
    }

    /// Streams the reply over server-sent events.
    ///
    /// # Cancel safety
    /// Dropping the stream abandons the request.
    fn chat_stream(&self, request: ChatRequest) -> ChatStream<'_> {
        let start = StreamState::Start(Box::new(request));
        futures::stream::unfold(start, move |state| self.stream_step(state)).boxed()
    }

    /// Approximates the prompt's tokens, biased high
    /// ([`crate::tokens::estimate_anthropic`]).
    fn estimate_input_tokens(&self, request: &ChatRequest) -> u64 {
        crate::tokens::estimate_anthropic(request)
    }
}

enum StreamState {
    Start(Box<ChatRequest>),
    Open(Box<OpenStream>),
    Finished,
}

struct OpenStream {
    events: BoxStream<'static, Result<Event, EventStreamError<reqwest::Error>>>,
    acc: StreamAccumulator,
    model: String,
    /// Holds back text that may be the start of an echoed credential.
    redact: StreamRedactor,
    /// The end, once the text held back has been let out.
    done: Option<ChatResponse>,
}

// ---------------------------------------------------------------- request

#[derive(Debug, Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<WireMessage>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
}

#[derive(Debug, Serialize)]
struct WireMessage {
    role: &'static str,
    content: Vec<Value>,
}

/// The forced tool (name, schema) standing for a structured output format.
fn structured_tool(format: Option<&ResponseFormat>) -> Option<(String, Value)> {
    match format? {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(("json".to_string(), json!({"type": "object"}))),
        ResponseFormat::JsonSchema { name, schema, .. } => {
            // Tool names must match ^[a-zA-Z0-9_-]{1,64}$.
            let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
            let clean: String = name
                .chars()
                .map(|c| if valid(c) { c } else { '_' })
                .take(64)
                .collect();
            let clean = if clean.is_empty() {
                "json".to_string()
            } else {
                clean
            };
            Some((clean, schema.clone()))
        }
    }
}

/// A tool's input: Anthropic wants an object; a JSON string is parsed.
fn tool_input(arguments: &Value) -> Value {
    match arguments {
        Value::Null => json!({}),
        Value::String(s) => serde_json::from_str::<Value>(s)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| arguments.clone()),
        other => other.clone(),
    }
}

/// Appends `blocks` as a message of `role`, merging with the previous
/// message when it has the same role (`tool_result` blocks first).
fn push_blocks(messages: &mut Vec<WireMessage>, role: &'static str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match messages.last_mut() {
        Some(last) if last.role == role => {
            last.content.extend(blocks);
            let is_result = |b: &Value| b["type"] == "tool_result";
            let (mut ordered, rest): (Vec<_>, Vec<_>) = last.content.drain(..).partition(is_result);
            ordered.extend(rest);
            last.content = ordered;
        }
        _ => messages.push(WireMessage {
            role,
            content: blocks,
        }),
    }
}

/// The body for `request`, and the name of the forced structured output
/// tool, if any.
fn build_body(
    request: &ChatRequest,
    max_tokens: u32,
    stream: bool,
) -> (WireRequest<'_>, Option<String>) {
    let mut system: Vec<&str> = request.system.iter().map(String::as_str).collect();
    let mut messages = Vec::new();
    for m in &request.messages {
        let text = (!m.content.is_empty()).then(|| json!({"type": "text", "text": m.content}));
        match m.role {
            Role::System => system.push(&m.content),
            Role::User => push_blocks(&mut messages, "user", text.into_iter().collect()),
            Role::Assistant => {
                let calls = m.tool_calls.iter().map(|c| {
                    json!({"type": "tool_use", "id": c.id, "name": c.name, "input": tool_input(&c.arguments)})
                });
                push_blocks(
                    &mut messages,
                    "assistant",
                    text.into_iter().chain(calls).collect(),
                );
            }
            Role::Tool => {
                let id = m.tool_call_id.as_deref().unwrap_or_default();
                let block = json!({"type": "tool_result", "tool_use_id": id, "content": m.content});
                push_blocks(&mut messages, "user", vec![block]);
            }
        }
    }
    system.retain(|s| !s.is_empty());
    let mut tools: Vec<Value> = request
        .tools
        .iter()
        .map(|t| {
            let schema = if t.parameters.is_null() {
                json!({"type": "object"})
            } else {
                t.parameters.clone()
            };
            json!({"name": t.name, "description": t.description, "input_schema": schema})
        })
        .collect();
    let mut tool_choice = request.tool_choice.as_ref().map(|c| match c {
        ToolChoice::Auto => json!({"type": "auto"}),
        ToolChoice::Required => json!({"type": "any"}),
        ToolChoice::None => json!({"type": "none"}),
        ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
    });
    let structured = structured_tool(request.response_format.as_ref()).map(|(name, schema)| {
        let description = "Give the answer as this tool's input, a JSON value matching its schema.";
        tools.push(json!({"name": name, "description": description, "input_schema": schema}));
        tool_choice = Some(json!({"type": "tool", "name": name}));
        name
    });
    let body = WireRequest {
        model: &request.model,
        max_tokens: request.max_tokens.unwrap_or(max_tokens),
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        messages,
        tools,
        tool_choice,
        temperature: request.temperature,
        top_p: request.top_p,
        stop_sequences: &request.stop,
        stream,
    };
    (body, structured)
}

// ---------------------------------------------------------------- response

/// Anthropic's token counts; streamed counts are cumulative.
#[derive(Debug, Default, Clone, Copy, Deserialize)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

impl WireUsage {
    /// These counts, updated with every count `newer` reports.
    fn merge(self, newer: Option<&WireUsage>) -> Self {
        let Some(n) = newer else { return self };
        Self {
            input_tokens: n.input_tokens.or(self.input_tokens),
            output_tokens: n.output_tokens.or(self.output_tokens),
            cache_creation_input_tokens: n
                .cache_creation_input_tokens
                .or(self.cache_creation_input_tokens),
            cache_read_input_tokens: n.cache_read_input_tokens.or(self.cache_read_input_tokens),
        }
    }

    fn usage(self) -> TokenUsage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let write = self.cache_creation_input_tokens.unwrap_or(0);
        TokenUsage {
            input_tokens: self
                .input_tokens
                .unwrap_or(0)
                .saturating_add(read)
                .saturating_add(write),
            output_tokens: self.output_tokens.unwrap_or(0),
            cached_input_tokens: read,
            cache_write_tokens: write,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct WireResponse {
    model: Option<String>,
    content: Vec<WireBlock>,
    stop_reason: Option<String>,
    usage: Option<WireUsage>,
}

impl WireResponse {
    fn into_response(self, requested_model: &str, structured: Option<&str>) -> ChatResponse {
        let mut text = String::new();
        let mut calls = Vec::new();
        for block in self.content {
            match block {
                WireBlock::Text { text: t } => text.push_str(&t),
                WireBlock::ToolUse { id, name, input } => calls.push(ToolCall {
                    id,
                    name,
                    arguments: input,
                }),
                WireBlock::Other => {}
            }
        }
        let usage = WireUsage::default().merge(self.usage.as_ref()).usage();
        let model = self.model.unwrap_or_else(|| requested_model.to_string());
        finish(
            model,
            text,
            calls,
            self.stop_reason.as_deref(),
            usage,
            structured,
        )
    }
}

/// Builds the reply; a call of the structured output tool becomes its text.
fn finish(
    model: String,
    text: String,
    mut calls: Vec<ToolCall>,
    stop_reason: Option<&str>,
    usage: TokenUsage,
    structured: Option<&str>,
) -> ChatResponse {
    let mut finish_reason = match stop_reason {
        Some("end_turn" | "stop_sequence") => FinishReason::Stop,
        Some("max_tokens") => FinishReason::Length,
        Some("tool_use") => FinishReason::ToolCalls,
        Some("refusal") => FinishReason::ContentFilter,
        Some(other) => FinishReason::Other(other.to_string()),
        None => FinishReason::Other("unknown".to_string()),
    };
    let mut reply = ChatResponse::text(model, text, usage);
    if let Some(name) = structured
        && let Some(pos) = calls.iter().position(|c| c.name == name)
    {
        reply.text = calls.remove(pos).arguments.to_string();
        if calls.is_empty() && finish_reason == FinishReason::ToolCalls {
            finish_reason = FinishReason::Stop;
        }
    }
    reply
        .with_tool_calls(calls)
        .with_finish_reason(finish_reason)
}

// ---------------------------------------------------------------- streaming

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireEvent {
    MessageStart {
        message: WireStartMessage,
    },
    ContentBlockStart {
        index: usize,
        content_block: WireBlock,
    },
    ContentBlockDelta {
        index: usize,
        delta: WireDelta,
    },
    MessageDelta {
        delta: Option<WireMessageDelta>,
        usage: Option<WireUsage>,
    },
    MessageStop,
    Error {
        error: Option<Value>,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct WireStartMessage {
    model: Option<String>,
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
struct WireMessageDelta {
    stop_reason: Option<String>,
}

/// A content block being streamed.
#[derive(Debug)]
enum Block {
    Text,
    /// A tool call (with the input given at its start) and its input's JSON
    /// fragments so far.
    Tool(ToolCall, String),
    Ignored,
}

/// Builds the reply from the stream's events.
#[derive(Debug)]
struct StreamAccumulator {
    model: String,
    structured: Option<String>,
    text: String,
    blocks: BTreeMap<usize, Block>,
    usage: WireUsage,
    stop_reason: Option<String>,
}

/// The HTTP status matching an Anthropic error type, for classification.
fn error_status(error_type: &str) -> u16 {
    match error_type {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

type StreamResult<T> = Result<T, (ModelErrorKind, String)>;

impl StreamAccumulator {
    fn new(model: &str, structured: Option<String>) -> Self {
        Self {
            model: model.to_string(),
            structured,
            text: String::new(),
            blocks: BTreeMap::new(),
            usage: WireUsage::default(),
            stop_reason: None,
        }
    }

    /// What one event leads to: nothing yet, a delta or the end.
    fn handle(&mut self, event: &Event) -> StreamResult<Option<StreamEvent>> {
        if event.data.trim().is_empty() {
            return Ok(None);
        }
        let parsed: WireEvent = serde_json::from_str(&event.data).map_err(|e| {
            let message = format!("invalid {:?} event: {e}", event.event);
            (ModelErrorKind::MalformedResponse, message)
        })?;
        let delta = |text: String| Ok((!text.is_empty()).then_some(StreamEvent::Delta(text)));
        match parsed {
            WireEvent::MessageStart { message } => {
                if let Some(model) = message.model {
                    self.model = model;
                }
                self.usage = self.usage.merge(message.usage.as_ref());
            }
            WireEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                WireBlock::Text { text } => {
                    self.blocks.insert(index, Block::Text);
                    self.text.push_str(&text);
                    return delta(text);
                }
                WireBlock::ToolUse { id, name, input } => {
                    let call = ToolCall {
                        id,
                        name,
                        arguments: input,
                    };
                    self.blocks.insert(index, Block::Tool(call, String::new()));
                }
                WireBlock::Other => {
                    self.blocks.insert(index, Block::Ignored);
                }
            },
            WireEvent::ContentBlockDelta {
                index,
                delta: piece,
            } => match (piece, self.blocks.get_mut(&index)) {
                (WireDelta::TextDelta { text }, Some(Block::Text)) => {
                    self.text.push_str(&text);
                    return delta(text);
                }
                (WireDelta::InputJsonDelta { partial_json }, Some(Block::Tool(call, json))) => {
                    json.push_str(&partial_json);
                    if self.structured.as_deref() == Some(call.name.as_str()) {
                        return delta(partial_json);
                    }
                }
                (WireDelta::Other, _) => {}
                _ => {
                    let message = format!("delta for unknown content block {index}");
                    return Err((ModelErrorKind::MalformedResponse, message));
                }
            },
            WireEvent::MessageDelta { delta, usage } => {
                if let Some(reason) = delta.and_then(|d| d.stop_reason) {
                    self.stop_reason = Some(reason);
                }
                self.usage = self.usage.merge(usage.as_ref());
            }
            WireEvent::MessageStop => return self.done().map(|r| Some(StreamEvent::Done(r))),
            WireEvent::Error { error } => {
                let name = error
                    .as_ref()
                    .and_then(|e| e["type"].as_str())
                    .unwrap_or("api_error");
                let kind = http::classify(error_status(name), &event.data, None);
                return Err((
                    kind,
                    format!("stream error: {}", http::error_message(&event.data)),
                ));
            }
            WireEvent::Other => {}
        }
        Ok(None)
    }

    fn done(&mut self) -> StreamResult<ChatResponse> {
        let mut calls = Vec::new();
        for block in std::mem::take(&mut self.blocks).into_values() {
            let Block::Tool(mut call, json) = block else {
                continue;
            };
            if !json.trim().is_empty() {
                call.arguments = serde_json::from_str(&json).map_err(|e| {
                    let message = format!("tool {:?} input is not valid JSON: {e}", call.name);
                    (ModelErrorKind::MalformedResponse, message)
                })?;
            } else if call.arguments.is_null() {
                call.arguments = json!({});
            }
            calls.push(call);
        }
        let (model, text) = (self.model.clone(), std::mem::take(&mut self.text));
        let usage = self.usage.usage();
        Ok(finish(
            model,
            text,
            calls,
            self.stop_reason.as_deref(),
            usage,
            self.structured.as_deref(),
        ))
    }
}

#[cfg(test)]
mod tests;
