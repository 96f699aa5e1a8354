//! Deterministic stand-ins for tests, doctests and offline demos.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use futures::StreamExt;

use crate::model::{
    ChatModel, ChatRequest, ChatResponse, FinishReason, ModelError, ModelErrorKind, StreamEvent,
    ToolCall,
};
use crate::pricing::TokenUsage;

/// A [`ChatModel`] that answers from a script, in order: each call takes the
/// next scripted reply or error. Records every request it receives.
///
/// ```
/// use flowtrace_core::{ChatModel, ChatRequest, TokenUsage};
/// use flowtrace_core::testing::ScriptedModel;
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let model = ScriptedModel::new("openai").reply("hello", TokenUsage::new(12, 3));
/// let r = model.chat(ChatRequest::new("gpt-4o-mini").user("hi")).await.unwrap();
/// assert_eq!(r.text, "hello");
/// assert_eq!(model.calls(), 1);
/// # });
/// ```
pub struct ScriptedModel {
    provider: String,
    script: Mutex<VecDeque<Result<ChatResponse, ModelErrorKind>>>,
    repeat_last: Option<Result<ChatResponse, ModelErrorKind>>,
    latency: Duration,
    requests: Mutex<Vec<ChatRequest>>,
}

impl fmt::Debug for ScriptedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedModel")
            .field("provider", &self.provider)
            .field("latency", &self.latency)
            .finish_non_exhaustive()
    }
}

impl ScriptedModel {
    /// An empty script for `provider` (the name used for pricing).
    pub fn new(provider: impl Into<String>) -> Self {
        Self {
            provider: provider.into(),
            script: Mutex::new(VecDeque::new()),
            repeat_last: None,
            latency: Duration::ZERO,
            requests: Mutex::new(Vec::new()),
        }
    }

    fn push(self, item: Result<ChatResponse, ModelErrorKind>) -> Self {
        if let Ok(mut s) = self.script.lock() {
            s.push_back(item);
        }
        self
    }

    /// Scripts a text reply with the given usage (the model name is echoed
    /// from the request).
    pub fn reply(self, text: impl Into<String>, usage: TokenUsage) -> Self {
        self.push(Ok(ChatResponse::text("", text, usage)))
    }

    /// Scripts a reply asking for one tool call.
    pub fn tool_call(
        self,
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: serde_json::Value,
        usage: TokenUsage,
    ) -> Self {
        self.push(Ok(ChatResponse {
            text: String::new(),
            tool_calls: vec![ToolCall {
                id: id.into(),
                name: name.into(),
                arguments,
            }],
            usage,
            finish_reason: FinishReason::ToolCalls,
            model: String::new(),
            provider: None,
            cached: false,
        }))
    }

    /// Scripts a failure.
    pub fn fail(self, kind: ModelErrorKind) -> Self {
        self.push(Err(kind))
    }

    /// Once the script is used up, keeps answering with `text` and `usage`
    /// (instead of failing).
    pub fn then_always(mut self, text: impl Into<String>, usage: TokenUsage) -> Self {
        self.repeat_last = Some(Ok(ChatResponse::text("", text, usage)));
        self
    }

    /// Waits `latency` (on Tokio's clock) before each answer.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// How many calls were made.
    pub fn calls(&self) -> usize {
        self.requests.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// The requests received, in order.
    pub fn requests(&self) -> Vec<ChatRequest> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl ChatModel for ScriptedModel {
    fn provider(&self) -> &str {
        &self.provider
    }

    /// Streams the scripted reply word by word (each word with its
    /// following whitespace), then the whole reply.
    fn chat_stream(&self, request: ChatRequest) -> crate::model::ChatStream<'_> {
        Box::pin(
            futures::stream::once(async move { self.chat(request).await }).flat_map(|r| {
                let events: Vec<Result<StreamEvent, ModelError>> = match r {
                    Ok(resp) => {
                        let mut pieces: Vec<Result<StreamEvent, ModelError>> = resp
                            .text
                            .split_inclusive(char::is_whitespace)
                            .map(|w| Ok(StreamEvent::Delta(w.to_string())))
                            .collect();
                        pieces.push(Ok(StreamEvent::Done(resp)));
                        pieces
                    }
                    Err(e) => vec![Err(e)],
                };
                futures::stream::iter(events)
            }),
        )
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ModelError> {
        if let Ok(mut r) = self.requests.lock() {
            r.push(request.clone());
        }
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let next = self
            .script
            .lock()
            .ok()
            .and_then(|mut s| s.pop_front())
            .or_else(|| self.repeat_last.clone());
        match next {
            Some(Ok(mut response)) => {
                response.model = request.model;
                Ok(response)
            }
            Some(Err(kind)) => Err(ModelError::new(
                kind,
                &self.provider,
                request.model,
                "scripted failure",
            )),
            None => Err(ModelError::new(
                ModelErrorKind::InvalidRequest,
                &self.provider,
                request.model,
                "the script has no more replies",
            )),
        }
    }
}
