//! [`ConversationMemory`] and its windowed in-memory implementation.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use flowtrace_core::Message;
use flowtrace_core::model::Role;

use super::MemoryError;

/// The message window of a [`WindowMemory`] unless configured otherwise.
pub const DEFAULT_WINDOW_MESSAGES: usize = 50;

/// The most conversation threads a [`WindowMemory`] keeps unless configured
/// otherwise; past it the least recently used thread is forgotten (thread
/// keys often come from users, so their number must be bounded).
pub const DEFAULT_MAX_THREADS: usize = 10_000;

/// The messages of conversation threads.
///
/// # Contract
/// Calls on one thread may run concurrently; an implementation keeps each
/// call atomic (an `append` is seen whole or not at all). What is kept is
/// the implementation's policy (a window, a summary): `messages` returns
/// what is kept, oldest first. Retries are the caller's job.
#[async_trait]
pub trait ConversationMemory: Send + Sync {
    /// Appends `messages` to `thread` (creating it).
    ///
    /// # Cancel safety
    /// Dropping the future may or may not have appended the messages.
    async fn append(&self, thread: &str, messages: &[Message]) -> Result<(), MemoryError>;

    /// The messages kept for `thread`, oldest first (empty for an unknown
    /// thread).
    async fn messages(&self, thread: &str) -> Result<Vec<Message>, MemoryError>;

    /// Forgets `thread`.
    async fn clear(&self, thread: &str) -> Result<(), MemoryError>;
}

/// The default token count of a message: one token per three bytes of its
/// text and tool calls, plus four of framing — the same deliberately
/// generous estimate as
/// [`ChatRequest::approx_input_tokens`](flowtrace_core::ChatRequest::approx_input_tokens).
pub fn approx_message_tokens(message: &Message) -> u64 {
    let mut bytes = message.content.len();
    for c in &message.tool_calls {
        bytes = bytes
            .saturating_add(c.name.len())
            .saturating_add(c.arguments.to_string().len());
    }
    u64::try_from(bytes.div_ceil(3))
        .unwrap_or(u64::MAX)
        .saturating_add(4)
}

type TokenCounter = Arc<dyn Fn(&Message) -> u64 + Send + Sync>;

#[derive(Debug, Default)]
struct Window {
    messages: VecDeque<(Message, u64)>,
    tokens: u64,
    last_used: u64,
}

#[derive(Debug, Default)]
struct Threads {
    windows: HashMap<String, Window>,
    clock: u64,
}

/// A [`ConversationMemory`] in process memory that keeps, per thread, the
/// most recent messages within a window: at most
/// [`max_messages`](Self::max_messages) messages and/or
/// [`max_tokens`](Self::max_tokens) tokens (counted with
/// [`approx_message_tokens`] or your own [counter](Self::token_counter)).
///
/// The oldest messages go first; tool results whose assistant turn was
/// dropped go with it (a conversation never starts with an orphan tool
/// result, which providers reject). A message larger than the whole token
/// window is not kept. At most [`max_threads`](Self::max_threads) threads
/// are kept, the least recently used forgotten first.
///
/// ```
/// use flowtrace_agents::memory::{ConversationMemory, WindowMemory};
/// use flowtrace_core::Message;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let memory = WindowMemory::new().max_messages(2);
/// memory.append("t1", &[Message::user("a"), Message::assistant("b")]).await.unwrap();
/// memory.append("t1", &[Message::user("c")]).await.unwrap();
/// let kept = memory.messages("t1").await.unwrap();
/// assert_eq!(kept, vec![Message::assistant("b"), Message::user("c")]);
/// # });
/// ```
#[must_use]
pub struct WindowMemory {
    max_messages: Option<usize>,
    max_tokens: Option<u64>,
    max_threads: usize,
    counter: TokenCounter,
    threads: Mutex<Threads>,
}

impl fmt::Debug for WindowMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WindowMemory")
            .field("max_messages", &self.max_messages)
            .field("max_tokens", &self.max_tokens)
            .field("max_threads", &self.max_threads)
            .field("threads", &self.lock().windows.len())
            .finish_non_exhaustive()
    }
}

impl Default for WindowMemory {
    fn default() -> Self {
        Self::new()
    }
}

impl WindowMemory {
    /// A window of [`DEFAULT_WINDOW_MESSAGES`] messages, no token bound, at
    /// most [`DEFAULT_MAX_THREADS`] threads.
    pub fn new() -> Self {
        Self {
            max_messages: Some(DEFAULT_WINDOW_MESSAGES),
            max_tokens: None,
            max_threads: DEFAULT_MAX_THREADS,
            counter: Arc::new(approx_message_tokens),
            threads: Mutex::new(Threads::default()),
        }
    }

    /// Sets the most messages kept per thread (`None`: no message bound).
    pub fn max_messages(mut self, limit: impl Into<Option<usize>>) -> Self {
        self.max_messages = limit.into();
        self
    }

    /// Sets the most tokens kept per thread (`None`: no token bound).
    pub fn max_tokens(mut self, limit: impl Into<Option<u64>>) -> Self {
        self.max_tokens = limit.into();
        self
    }

    /// Sets the most threads kept (at least 1).
    pub fn max_threads(mut self, limit: usize) -> Self {
        self.max_threads = limit.max(1);
        self
    }

    /// Counts a message's tokens with `counter` (an exact tokenizer)
    /// instead of [`approx_message_tokens`].
    pub fn token_counter(
        mut self,
        counter: impl Fn(&Message) -> u64 + Send + Sync + 'static,
    ) -> Self {
        self.counter = Arc::new(counter);
        self
    }

    /// The message bound.
    pub fn get_max_messages(&self) -> Option<usize> {
        self.max_messages
    }

    /// The token bound.
    pub fn get_max_tokens(&self) -> Option<u64> {
        self.max_tokens
    }

    /// The thread bound.
    pub fn get_max_threads(&self) -> usize {
        self.max_threads
    }

    /// The tokens kept for `thread`, as counted.
    pub fn tokens(&self, thread: &str) -> u64 {
        self.lock().windows.get(thread).map_or(0, |w| w.tokens)
    }

    fn lock(&self) -> MutexGuard<'_, Threads> {
        // The windows hold plain data: a poisoned lock still has valid data.
        self.threads.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn over(&self, w: &Window) -> bool {
        self.max_messages.is_some_and(|m| w.messages.len() > m)
            || self.max_tokens.is_some_and(|t| w.tokens > t)
    }
}

impl Window {
    fn pop_front(&mut self) {
        if let Some((_, tokens)) = self.messages.pop_front() {
            self.tokens = self.tokens.saturating_sub(tokens);
        }
    }
}

#[async_trait]
impl ConversationMemory for WindowMemory {
    async fn append(&self, thread: &str, messages: &[Message]) -> Result<(), MemoryError> {
        let counted: Vec<(Message, u64)> = messages
            .iter()
            .map(|m| (m.clone(), (self.counter)(m)))
            .collect();
        let mut threads = self.lock();
        threads.clock = threads.clock.saturating_add(1);
        let now = threads.clock;
        if !threads.windows.contains_key(thread) && threads.windows.len() >= self.max_threads {
            let oldest = threads
                .windows
                .iter()
                .min_by_key(|(_, w)| w.last_used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                threads.windows.remove(&oldest);
            }
        }
        let window = threads.windows.entry(thread.to_string()).or_default();
        window.last_used = now;
        for (message, tokens) in counted {
            window.tokens = window.tokens.saturating_add(tokens);
            window.messages.push_back((message, tokens));
        }
        while self.over(window) {
            window.pop_front();
        }
        while window
            .messages
            .front()
            .is_some_and(|(m, _)| m.role == Role::Tool)
        {
            window.pop_front();
        }
        Ok(())
    }

    async fn messages(&self, thread: &str) -> Result<Vec<Message>, MemoryError> {
        let mut threads = self.lock();
        threads.clock = threads.clock.saturating_add(1);
        let now = threads.clock;
        Ok(match threads.windows.get_mut(thread) {
            Some(w) => {
                w.last_used = now;
                w.messages.iter().map(|(m, _)| m.clone()).collect()
            }
            None => Vec::new(),
        })
    }

    async fn clear(&self, thread: &str) -> Result<(), MemoryError> {
        self.lock().windows.remove(thread);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use flowtrace_core::model::ToolCall;

    use super::*;

    #[test]
    fn approx_tokens() {
        assert_eq!(approx_message_tokens(&Message::user("")), 4);
        assert_eq!(approx_message_tokens(&Message::user("abcd")), 6);
        let call = ToolCall {
            id: "1".into(),
            name: "ab".into(),
            arguments: serde_json::json!({}),
        };
        // "ab" + "{}" = 4 bytes -> 2 tokens + 4.
        assert_eq!(
            approx_message_tokens(&Message::assistant("").with_tool_calls(vec![call])),
            6
        );
    }

    fn message(kind: u8, n: usize) -> Message {
        match kind % 3 {
            0 => Message::user("u".repeat(n)),
            1 => Message::assistant("a".repeat(n)),
            _ => Message::tool_result("c", "t".repeat(n)),
        }
    }

    proptest::proptest! {
        #[test]
        fn the_window_is_a_bounded_suffix_without_a_leading_tool_result(
            batches in proptest::collection::vec(
                proptest::collection::vec((0u8..3, 0usize..40), 0..6),
                1..8,
            ),
            max_messages in proptest::option::of(1usize..8),
            max_tokens in proptest::option::of(1u64..60),
        ) {
            let memory = WindowMemory::new()
                .max_messages(max_messages)
                .max_tokens(max_tokens)
                .token_counter(|m: &Message| m.content.len() as u64);
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut all = Vec::new();
            for batch in batches {
                let batch: Vec<Message> = batch.into_iter().map(|(k, n)| message(k, n)).collect();
                all.extend(batch.iter().cloned());
                rt.block_on(memory.append("t", &batch)).unwrap();
                let kept = rt.block_on(memory.messages("t")).unwrap();
                // A suffix of everything appended so far.
                proptest::prop_assert!(all.ends_with(&kept));
                if let Some(m) = max_messages {
                    proptest::prop_assert!(kept.len() <= m);
                }
                let tokens: u64 = kept.iter().map(|m| m.content.len() as u64).sum();
                proptest::prop_assert_eq!(tokens, memory.tokens("t"));
                if let Some(t) = max_tokens {
                    proptest::prop_assert!(tokens <= t);
                }
                proptest::prop_assert!(kept.first().is_none_or(|m| m.role != Role::Tool));
            }
        }
    }
}
