//! Memory for agents: what was said in a conversation, and what happened in
//! past runs.
//!
//! - [`ConversationMemory`]: the messages of each conversation thread, kept
//!   within a window; [`WindowMemory`] is the in-memory implementation,
//!   bounded by messages and/or tokens.
//! - [`EpisodicStore`]: past goals with the plan tried and how it ended,
//!   looked up by exact goal or by shared keywords;
//!   [`InMemoryEpisodicStore`] is the bounded in-memory implementation.
//!   [`PlanExecuteAgent`](crate::agents::PlanExecuteAgent) consults one
//!   before planning and records every plan it executes.
//!
//! Both traits are asynchronous and fallible so a database can implement
//! them; the in-memory implementations fail only on their documented
//! limits.

mod conversation;
mod episodic;
mod error;

pub use conversation::{
    ConversationMemory, DEFAULT_MAX_THREADS, DEFAULT_WINDOW_MESSAGES, WindowMemory,
    approx_message_tokens,
};
pub use episodic::{
    DEFAULT_EPISODE_CAPACITY, Episode, EpisodeOutcome, EpisodicStore, InMemoryEpisodicStore,
    MAX_GOAL_BYTES, MAX_KEYWORDS, MAX_LOOKUP_RESULTS, keywords,
};
pub use error::{MemoryError, MemoryErrorKind};

/// Proves at compile time that the traits can be used as trait objects.
fn _assert_object_safe(_: &dyn ConversationMemory, _: &dyn EpisodicStore) {}
