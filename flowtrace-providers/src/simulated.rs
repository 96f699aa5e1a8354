//! An offline, deterministic chat model for demos, tests and dry runs.
//!
//! [`SimulatedModel`] answers every request locally — no network, no API
//! key — with a configured reply (or a short echo of the last user message),
//! after a configured latency, and can fail its first calls with a chosen
//! error kind to exercise retries. Its provider name is `simulated`, and the
//! built-in price table prices its models like the real models of the same
//! name (`gpt-4o-mini`, `gpt-4o`, `gpt-4.1-mini`, `claude-3-5-haiku`,
//! `claude-sonnet-4`, `claude-3-5-sonnet`), so a simulated run shows
//! realistic costs.
//!
//! The configuration deserializes from a JSON node config:
//!
//! ```
//! use flowtrace_core::{ChatModel, ChatRequest};
//! use flowtrace_providers::simulated::{SimulatedConfig, SimulatedModel};
//! use serde_json::json;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let config = SimulatedConfig::from_json(&json!({
//!     "response": "Paris.",
//!     "latency_ms": 5,
//!     "usage": {"input": 12, "output": 2}
//! }))
//! .unwrap();
//! let model = SimulatedModel::new(config);
//! let reply = model
//!     .chat(ChatRequest::new("gpt-4o-mini").user("Capital of France?"))
//!     .await
//!     .unwrap();
//! assert_eq!(reply.text, "Paris.");
//! assert_eq!(reply.usage.output_tokens, 2);
//! # });
//! ```
//!
//! # Scripted turns and tool calls
//!
//! `turns` scripts the replies by their position in the conversation: the
//! reply to a request whose messages already hold `k` assistant turns is
//! `turns[k]` (text, tool calls, or both), and once the script is used up
//! the model answers as configured above. Keying on the conversation rather
//! than on a call counter keeps it deterministic across concurrent runs,
//! retries and resumed threads. A tool call's id is the scripted one or
//! `call_{turn}_{n}` (both 1-based), so a ReAct agent can be driven offline:
//!
//! ```
//! use flowtrace_core::{ChatModel, ChatRequest, FinishReason, Message};
//! use flowtrace_providers::simulated::{SimulatedConfig, SimulatedModel, SimulatedTurn};
//! use serde_json::json;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let model = SimulatedModel::new(
//!     SimulatedConfig::new()
//!         .turn(SimulatedTurn::tool_call("get_weather", json!({"city": "Paris"})))
//!         .turn(SimulatedTurn::text("Sunny in Paris.")),
//! );
//! let first = model.chat(ChatRequest::new("gpt-4o-mini").user("Weather?")).await.unwrap();
//! assert_eq!(first.finish_reason, FinishReason::ToolCalls);
//! assert_eq!(first.tool_calls[0].id, "call_1_1");
//! let second = model
//!     .chat(
//!         ChatRequest::new("gpt-4o-mini")
//!             .user("Weather?")
//!             .message(first.to_message())
//!             .message(Message::tool_result("call_1_1", r#"{"sky": "clear"}"#)),
//!     )
//!     .await
//!     .unwrap();
//! assert_eq!(second.text, "Sunny in Paris.");
//! # });
//! ```
//!
//! The same script as a JSON node config:
//! `{"turns": [{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}, {"response": "Sunny in Paris."}]}`.
//!
//! # Token usage
//!
//! With `usage` configured, every reply reports exactly those counts.
//! Otherwise the input is estimated with
//! [`tokens::estimate_openai`](crate::tokens::estimate_openai) (OpenAI's
//! tokenizer for the requested model name, plus chat framing — also for
//! `claude-*` names, which get `cl100k_base`), and the output is the reply
//! text counted with the same tokenizer
//! ([`tokens::count_tokens`](crate::tokens::count_tokens)), plus each tool
//! call's name and JSON arguments counted the same way. Both are
//! deterministic.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use flowtrace_core::model::{Role, ToolCall};
use flowtrace_core::{
    ChatModel, ChatRequest, ChatResponse, ChatStream, FinishReason, ModelError, ModelErrorKind,
    StreamEvent, TokenUsage,
};
use serde::{Deserialize, Serialize};

use crate::tokens::{Encoding, count_tokens, estimate_openai};

/// The provider name of [`SimulatedModel`], as used in the price table.
pub const PROVIDER: &str = "simulated";

/// How many words of the last user message the echo reply repeats when no
/// `response` is configured.
pub const ECHO_WORDS: usize = 12;

/// The error a simulated call fails with (`fail_kind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SimulatedFailure {
    /// `rate_limit`: [`ModelErrorKind::RateLimited`] without a retry delay
    /// (retryable).
    RateLimit,
    /// `server_error`: [`ModelErrorKind::Overloaded`] (retryable). The
    /// default.
    #[default]
    ServerError,
    /// `timeout`: [`ModelErrorKind::Timeout`] (retryable).
    Timeout,
    /// `invalid_request`: [`ModelErrorKind::InvalidRequest`] (not retryable).
    InvalidRequest,
}

impl SimulatedFailure {
    /// The error kind this failure produces.
    pub fn kind(self) -> ModelErrorKind {
        match self {
            Self::RateLimit => ModelErrorKind::RateLimited { retry_after: None },
            Self::ServerError => ModelErrorKind::Overloaded,
            Self::Timeout => ModelErrorKind::Timeout,
            Self::InvalidRequest => ModelErrorKind::InvalidRequest,
        }
    }
}

/// Fixed token counts for every reply (`usage`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimulatedUsage {
    /// Prompt tokens (`input`, or `input_tokens`).
    #[serde(alias = "input_tokens")]
    pub input: u64,
    /// Completion tokens (`output`, or `output_tokens`).
    #[serde(alias = "output_tokens")]
    pub output: u64,
}

/// One tool call of a [`SimulatedTurn`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SimulatedToolCall {
    /// The call's id; `call_{turn}_{n}` (both 1-based) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The tool's name.
    pub name: String,
    /// The arguments (`{}` when absent).
    #[serde(default = "empty_object")]
    pub arguments: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

impl SimulatedToolCall {
    /// A call of `name` with `arguments` and a generated id.
    pub fn new(name: impl Into<String>, arguments: serde_json::Value) -> Self {
        Self {
            id: None,
            name: name.into(),
            arguments,
        }
    }

    /// Uses `id` as the call's id.
    #[must_use]
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
}

/// One scripted reply (see [Scripted turns](self#scripted-turns-and-tool-calls)):
/// text, tool calls, or both.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SimulatedTurn {
    /// The reply's text. When absent: empty if the turn calls tools, else
    /// the model's configured reply (`response`, or the echo).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// The tool calls, in order (the reply then finishes with
    /// [`FinishReason::ToolCalls`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<SimulatedToolCall>,
}

impl SimulatedTurn {
    /// A text reply.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            response: Some(text.into()),
            tool_calls: Vec::new(),
        }
    }

    /// A reply asking for one tool call.
    pub fn tool_call(name: impl Into<String>, arguments: serde_json::Value) -> Self {
        Self::default().with_tool_call(SimulatedToolCall::new(name, arguments))
    }

    /// Adds a tool call to the reply.
    #[must_use]
    pub fn with_tool_call(mut self, call: SimulatedToolCall) -> Self {
        self.tool_calls.push(call);
        self
    }
}

/// How a [`SimulatedModel`] answers. Every field is optional in JSON; keys
/// other than these are ignored, so the config can sit inside a larger node
/// config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SimulatedConfig {
    /// The reply text, used as is. Without it the reply is
    /// `"[simulated] "` followed by the first [`ECHO_WORDS`] words of the
    /// last user message (and `…` when there are more).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// How long each call takes, in milliseconds (slept with Tokio's clock,
    /// so tests under a paused clock run instantly). Failed calls take it
    /// too; a streamed reply spreads it across its deltas.
    pub latency_ms: u64,
    /// How many of the model instance's first calls fail.
    pub fail_first: u64,
    /// What those calls fail with.
    pub fail_kind: SimulatedFailure,
    /// Fixed token counts; estimated when absent (see the
    /// [module docs](self)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<SimulatedUsage>,
    /// Scripted replies by position in the conversation (see
    /// [Scripted turns](self#scripted-turns-and-tool-calls)).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub turns: Vec<SimulatedTurn>,
}

impl SimulatedConfig {
    /// A config that echoes the last user message instantly, never failing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a JSON node config (see the type's docs for the fields).
    pub fn from_json(value: &serde_json::Value) -> Result<Self, serde_json::Error> {
        Self::deserialize(value)
    }

    /// Sets the reply text.
    #[must_use]
    pub fn response(mut self, text: impl Into<String>) -> Self {
        self.response = Some(text.into());
        self
    }

    /// Sets the latency of every call (whole milliseconds; sub-millisecond
    /// parts are dropped).
    #[must_use]
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Makes the first `calls` calls fail with `kind`.
    #[must_use]
    pub fn fail_first(mut self, calls: u64, kind: SimulatedFailure) -> Self {
        self.fail_first = calls;
        self.fail_kind = kind;
        self
    }

    /// Reports these token counts for every reply.
    #[must_use]
    pub fn usage(mut self, input: u64, output: u64) -> Self {
        self.usage = Some(SimulatedUsage { input, output });
        self
    }

    /// Appends a scripted turn: the reply to a conversation holding as many
    /// assistant turns as there are turns before this one.
    #[must_use]
    pub fn turn(mut self, turn: SimulatedTurn) -> Self {
        self.turns.push(turn);
        self
    }
}

/// An offline, deterministic [`ChatModel`] (provider `simulated`); see the
/// [module docs](self).
///
/// It answers with the requested model name, so pricing uses the
/// `simulated` rows of the price table. Each instance counts its own calls
/// (plain and streamed) for `fail_first`; clones of an `Arc` share the
/// count.
#[derive(Debug)]
pub struct SimulatedModel {
    config: SimulatedConfig,
    calls: AtomicU64,
}

impl SimulatedModel {
    /// A model answering as `config` says.
    pub fn new(config: SimulatedConfig) -> Self {
        Self {
            config,
            calls: AtomicU64::new(0),
        }
    }

    /// A model from a JSON node config.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, serde_json::Error> {
        SimulatedConfig::from_json(value).map(Self::new)
    }

    /// Its configuration.
    pub fn config(&self) -> &SimulatedConfig {
        &self.config
    }

    /// How many calls it has received so far (failed ones included).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    fn latency(&self) -> Duration {
        Duration::from_millis(self.config.latency_ms)
    }

    /// Counts a call; the error it must fail with, if any.
    fn begin_call(&self, model: &str) -> Option<ModelError> {
        let index = self.calls.fetch_add(1, Ordering::SeqCst);
        (index < self.config.fail_first).then(|| {
            ModelError::new(
                self.config.fail_kind.kind(),
                PROVIDER,
                model,
                format!(
                    "simulated failure {} of {}",
                    index.saturating_add(1),
                    self.config.fail_first
                ),
            )
        })
    }

    /// The reply to `request`, without latency.
    fn respond(&self, request: &ChatRequest) -> ChatResponse {
        let turn_index = request
            .messages
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .count();
        let turn = self.config.turns.get(turn_index);
        let tool_calls: Vec<ToolCall> = turn
            .map(|t| {
                t.tool_calls
                    .iter()
                    .enumerate()
                    .map(|(n, c)| ToolCall {
                        id: c.id.clone().unwrap_or_else(|| {
                            format!("call_{}_{}", turn_index.saturating_add(1), n + 1)
                        }),
                        name: c.name.clone(),
                        arguments: c.arguments.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let text = match (
            turn.and_then(|t| t.response.as_ref()),
            &self.config.response,
        ) {
            (Some(text), _) => text.clone(),
            (None, _) if !tool_calls.is_empty() => String::new(),
            (None, Some(text)) => text.clone(),
            (None, None) => echo(request),
        };
        let usage = match self.config.usage {
            Some(u) => TokenUsage::new(u.input, u.output),
            None => {
                let encoding = Encoding::for_model(&request.model);
                let calls: u64 = tool_calls
                    .iter()
                    .map(|c| {
                        count_tokens(encoding, &c.name)
                            .saturating_add(count_tokens(encoding, &c.arguments.to_string()))
                    })
                    .fold(0, u64::saturating_add);
                TokenUsage::new(
                    estimate_openai(request),
                    count_tokens(encoding, &text).saturating_add(calls),
                )
            }
        };
        let response = ChatResponse::text(request.model.clone(), text, usage);
        if tool_calls.is_empty() {
            response
        } else {
            response
                .with_tool_calls(tool_calls)
                .with_finish_reason(FinishReason::ToolCalls)
        }
    }
}

#[async_trait]
impl ChatModel for SimulatedModel {
    fn provider(&self) -> &str {
        PROVIDER
    }

    /// Sleeps for the configured latency, then fails (for the first
    /// `fail_first` calls) or answers.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the call; it still counts towards
    /// `fail_first`.
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ModelError> {
        let failure = self.begin_call(&request.model);
        pause(self.latency()).await;
        match failure {
            Some(error) => Err(error),
            None => Ok(self.respond(&request)),
        }
    }

    /// Streams the reply word by word (each delta is a word with the
    /// whitespace that follows it, so the deltas concatenate to the reply),
    /// the latency spread evenly across them, then
    /// [`StreamEvent::Done`]. A failing call sleeps the whole latency and
    /// yields its error.
    ///
    /// # Cancel safety
    /// Dropping the stream abandons the call; once polled, it counts towards
    /// `fail_first`.
    fn chat_stream(&self, request: ChatRequest) -> ChatStream<'_> {
        Box::pin(futures::stream::unfold(
            Phase::Start(request),
            move |phase| async move {
                match phase {
                    Phase::Start(request) => {
                        let latency = self.latency();
                        if let Some(error) = self.begin_call(&request.model) {
                            pause(latency).await;
                            return Some((Err(error), Phase::Finished));
                        }
                        let response = self.respond(&request);
                        let pieces: VecDeque<String> = split_words(&response.text).into();
                        let total = pieces.len();
                        Some(
                            next_piece(Streaming {
                                pieces,
                                sent: 0,
                                total,
                                latency,
                                response,
                            })
                            .await,
                        )
                    }
                    Phase::Streaming(streaming) => Some(next_piece(streaming).await),
                    Phase::Finished => None,
                }
            },
        ))
    }

    /// The configured input tokens, or the same estimate a reply reports.
    fn estimate_input_tokens(&self, request: &ChatRequest) -> u64 {
        match self.config.usage {
            Some(u) => u.input,
            None => estimate_openai(request),
        }
    }
}

/// Waits `latency`; a zero latency does not touch the timer (whose
/// resolution is a millisecond), so zero-latency calls return at once.
async fn pause(latency: Duration) {
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
}

/// Where a simulated stream is.
enum Phase {
    Start(ChatRequest),
    Streaming(Streaming),
    Finished,
}

struct Streaming {
    pieces: VecDeque<String>,
    sent: usize,
    total: usize,
    latency: Duration,
    response: ChatResponse,
}

/// Sleeps for the next piece's share of the latency and yields it, or
/// yields the final response once every piece is out.
async fn next_piece(mut s: Streaming) -> (Result<StreamEvent, ModelError>, Phase) {
    match s.pieces.pop_front() {
        Some(piece) => {
            pause(share(s.latency, s.sent, s.total)).await;
            s.sent += 1;
            (Ok(StreamEvent::Delta(piece)), Phase::Streaming(s))
        }
        None => {
            if s.total == 0 {
                pause(s.latency).await;
            }
            (Ok(StreamEvent::Done(s.response)), Phase::Finished)
        }
    }
}

/// Piece `index`'s share of `latency` split across `count` pieces; the
/// shares add up to `latency` exactly.
fn share(latency: Duration, index: usize, count: usize) -> Duration {
    if count == 0 {
        return latency;
    }
    let total = latency.as_nanos();
    let count = count as u128;
    let index = index as u128;
    let before = total * index / count;
    let through = total * (index + 1) / count;
    Duration::from_nanos(u64::try_from(through - before).unwrap_or(u64::MAX))
}

/// Splits `text` into words, each keeping the whitespace after it (leading
/// whitespace stays with the first word), so the pieces concatenate back to
/// `text`.
fn split_words(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut prev_space = false;
    let mut seen_word = false;
    for (i, c) in text.char_indices() {
        let space = c.is_whitespace();
        if !space && prev_space && seen_word {
            pieces.push(text[start..i].to_string());
            start = i;
        }
        if !space {
            seen_word = true;
        }
        prev_space = space;
    }
    if start < text.len() {
        pieces.push(text[start..].to_string());
    }
    pieces
}

/// `[simulated] ` and the first [`ECHO_WORDS`] words of the last user
/// message.
fn echo(request: &ChatRequest) -> String {
    let last = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.as_str());
    let Some(content) = last else {
        return "[simulated] (no user message)".to_string();
    };
    let mut words = content.split_whitespace();
    let head: Vec<&str> = words.by_ref().take(ECHO_WORDS).collect();
    let more = if words.next().is_some() { " …" } else { "" };
    format!("[simulated] {}{more}", head.join(" "))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn words_concatenate_back() {
        for text in ["", "one", "  lead and  trail  ", "a\nb\tc", "héllo wörld ✓"] {
            let pieces = split_words(text);
            assert_eq!(pieces.concat(), text);
            assert!(pieces.iter().all(|p| !p.is_empty()));
        }
        assert_eq!(split_words("a b  c"), ["a ", "b  ", "c"]);
        assert_eq!(split_words("  a b"), ["  a ", "b"]);
    }

    #[test]
    fn shares_add_up() {
        let latency = Duration::from_millis(1000);
        let sum: Duration = (0..7).map(|i| share(latency, i, 7)).sum();
        assert_eq!(sum, latency);
        assert_eq!(share(latency, 0, 0), latency);
    }

    #[test]
    fn echo_truncates() {
        let r = ChatRequest::new("m")
            .user("first")
            .user("one two three four five six seven eight nine ten eleven twelve thirteen");
        assert_eq!(
            echo(&r),
            "[simulated] one two three four five six seven eight nine ten eleven twelve …"
        );
        assert_eq!(
            echo(&ChatRequest::new("m").user("  hi  there ")),
            "[simulated] hi there"
        );
        assert_eq!(
            echo(&ChatRequest::new("m")),
            "[simulated] (no user message)"
        );
    }

    #[test]
    fn config_parses_snake_case_and_ignores_other_keys() {
        let c = SimulatedConfig::from_json(&serde_json::json!({
            "model": "gpt-4o-mini",
            "response": "ok",
            "latency_ms": 250,
            "fail_first": 2,
            "fail_kind": "invalid_request",
            "usage": {"input": 3, "output_tokens": 4}
        }))
        .unwrap();
        assert_eq!(
            c,
            SimulatedConfig::new()
                .response("ok")
                .latency(Duration::from_millis(250))
                .fail_first(2, SimulatedFailure::InvalidRequest)
                .usage(3, 4)
        );
        assert_eq!(
            SimulatedConfig::from_json(&serde_json::json!({})).unwrap(),
            SimulatedConfig::default()
        );
        let err = SimulatedConfig::from_json(&serde_json::json!({"fail_kind": "boom"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("rate_limit"), "{err}");
    }

    #[tokio::test]
    async fn turns_follow_the_conversation_then_fall_back() {
        use flowtrace_core::Message;
        let config = SimulatedConfig::from_json(&serde_json::json!({
            "response": "done",
            "usage": {"input": 7, "output": 3},
            "turns": [
                {"tool_calls": [
                    {"name": "search", "arguments": {"q": "rust"}},
                    {"id": "mine", "name": "clock"}
                ]},
                {"response": "thinking", "tool_calls": [{"name": "search", "arguments": {"q": "more"}}]}
            ]
        }))
        .unwrap();
        let model = SimulatedModel::new(config);
        let req = ChatRequest::new("gpt-4o-mini").user("go");
        let first = model.chat(req.clone()).await.unwrap();
        assert_eq!(first.text, "");
        assert_eq!(first.finish_reason, FinishReason::ToolCalls);
        let ids: Vec<&str> = first.tool_calls.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["call_1_1", "mine"]);
        assert_eq!(
            first.tool_calls[0].arguments,
            serde_json::json!({"q": "rust"})
        );
        assert_eq!(first.tool_calls[1].arguments, serde_json::json!({}));
        assert_eq!(first.usage, TokenUsage::new(7, 3));
        // The same conversation gets the same reply (no hidden counter).
        assert_eq!(model.chat(req.clone()).await.unwrap(), first);

        let req = req
            .message(first.to_message())
            .message(Message::tool_result("call_1_1", "[]"))
            .message(Message::tool_result("mine", "12:00"));
        let second = model.chat(req.clone()).await.unwrap();
        assert_eq!(second.text, "thinking");
        assert_eq!(second.tool_calls[0].id, "call_2_1");

        let req = req.message(second.to_message());
        let third = model.chat(req).await.unwrap();
        assert_eq!(third.text, "done");
        assert!(third.tool_calls.is_empty());
        assert_eq!(third.finish_reason, FinishReason::Stop);
    }

    #[tokio::test]
    async fn tool_call_tokens_are_counted_and_streams_carry_the_calls() {
        let model = SimulatedModel::new(SimulatedConfig::new().turn(SimulatedTurn::tool_call(
            "get_weather",
            serde_json::json!({"city": "Paris"}),
        )));
        let req = ChatRequest::new("gpt-4o-mini").user("weather?");
        let reply = model.chat(req.clone()).await.unwrap();
        let encoding = Encoding::for_model("gpt-4o-mini");
        let expected =
            count_tokens(encoding, "get_weather") + count_tokens(encoding, r#"{"city":"Paris"}"#);
        assert_eq!(reply.usage.output_tokens, expected);
        assert!(expected > 0);

        use futures::StreamExt;
        let events: Vec<_> = model.chat_stream(req).collect().await;
        match events.last() {
            Some(Ok(StreamEvent::Done(done))) => assert_eq!(done, &reply),
            other => panic!("no final response: {other:?}"),
        }
    }
}
