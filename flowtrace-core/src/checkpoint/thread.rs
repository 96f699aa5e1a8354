//! Managing threads: retention, pruning, filters and thread summaries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Checkpoint, ThreadStatus};
use crate::ids::ThreadId;
use crate::trace::Timestamp;

/// What [`Checkpointer::prune`](super::Checkpointer::prune) keeps of a thread, on top of what a resume
/// of its latest checkpoint needs (which is always kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Retention {
    /// Keep the latest `n` checkpoints (at least the latest, even for 0).
    Latest(usize),
    /// Keep the checkpoints with `seq >= n` (at least the latest, even when
    /// `n` is after it).
    After(u64),
}

/// What [`Checkpointer::prune`](super::Checkpointer::prune) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneOutcome {
    /// Checkpoints removed (their pending writes went with them).
    pub removed: u64,
    /// The thread's oldest checkpoint now: a full state.
    pub oldest_kept: u64,
}

impl PruneOutcome {
    /// `removed` checkpoints were removed; the oldest left is `oldest_kept`.
    pub fn new(removed: u64, oldest_kept: u64) -> Self {
        Self {
            removed,
            oldest_kept,
        }
    }
}

/// Which threads [`Checkpointer::list_threads`](super::Checkpointer::list_threads) returns.
///
/// ```
/// use flowtrace_core::checkpoint::{ThreadFilter, ThreadStatus};
///
/// let filter = ThreadFilter::new()
///     .status(ThreadStatus::Interrupted)
///     .metadata("tenant", "acme")
///     .limit(20);
/// assert_eq!(filter.limit, 20);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ThreadFilter {
    /// Only threads whose latest checkpoint has one of these statuses
    /// (any status when empty).
    pub status: Vec<ThreadStatus>,
    /// Only threads whose metadata has every one of these pairs (each value
    /// equal to the thread's value for that key).
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// Only threads whose id sorts after this one: the cursor of the next
    /// page is the last id of the previous page.
    pub after: Option<ThreadId>,
    /// At most this many threads (100 by default).
    pub limit: usize,
}

impl Default for ThreadFilter {
    fn default() -> Self {
        Self {
            status: Vec::new(),
            metadata: BTreeMap::new(),
            after: None,
            limit: 100,
        }
    }
}

impl ThreadFilter {
    /// Every thread, 100 at a time.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also accept threads whose latest status is `status`.
    #[must_use]
    pub fn status(mut self, status: ThreadStatus) -> Self {
        if !self.status.contains(&status) {
            self.status.push(status);
        }
        self
    }

    /// Only threads whose metadata holds `key` equal to `value`.
    #[must_use]
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Only threads whose id sorts after `thread` (the last id of the
    /// previous page).
    #[must_use]
    pub fn after(mut self, thread: impl Into<ThreadId>) -> Self {
        self.after = Some(thread.into());
        self
    }

    /// At most `limit` threads.
    #[must_use]
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Whether `info` passes the status and metadata conditions (the cursor
    /// and the limit are the caller's).
    pub fn matches(&self, info: &ThreadInfo) -> bool {
        (self.status.is_empty() || self.status.contains(&info.status))
            && self
                .metadata
                .iter()
                .all(|(k, v)| info.metadata.get(k) == Some(v))
    }

    /// Whether `thread` is after the cursor.
    pub fn is_after_cursor(&self, thread: &ThreadId) -> bool {
        self.after.as_ref().is_none_or(|a| thread > a)
    }
}

/// A thread, as [`Checkpointer::list_threads`](super::Checkpointer::list_threads) reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ThreadInfo {
    /// The thread.
    pub thread_id: ThreadId,
    /// Its latest checkpoint.
    pub latest_seq: u64,
    /// Where it stands (the latest checkpoint's status).
    pub status: ThreadStatus,
    /// Super-steps completed (the latest checkpoint's `step`).
    pub step: u64,
    /// When its first checkpoint was written (kept when that checkpoint is
    /// pruned).
    pub created_at: Timestamp,
    /// When its latest checkpoint was written.
    pub updated_at: Timestamp,
    /// Its metadata: that of its latest checkpoint with any (kept when that
    /// checkpoint is pruned; see [`Checkpoint::metadata`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// For a fork: the thread and checkpoint it was forked from (its first
    /// checkpoint's `forked_from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<(ThreadId, u64)>,
}

impl ThreadInfo {
    /// A thread whose latest checkpoint is `latest_seq`, written at
    /// `updated_at`, and whose first was written at `created_at`; no
    /// metadata, not a fork (set those fields afterwards).
    pub fn new(
        thread_id: ThreadId,
        latest_seq: u64,
        status: ThreadStatus,
        step: u64,
        created_at: Timestamp,
        updated_at: Timestamp,
    ) -> Self {
        Self {
            thread_id,
            latest_seq,
            status,
            step,
            created_at,
            updated_at,
            metadata: BTreeMap::new(),
            forked_from: None,
        }
    }

    /// The summary of a thread whose first checkpoint is `first`.
    pub fn from_first(first: &Checkpoint) -> Self {
        Self {
            thread_id: first.thread_id.clone(),
            latest_seq: first.seq,
            status: first.status,
            step: first.step,
            created_at: first.created_at,
            updated_at: first.created_at,
            metadata: first.metadata.clone(),
            forked_from: first.forked_from.clone(),
        }
    }

    /// Folds in the thread's next checkpoint: a store that keeps one
    /// summary per thread calls this on every append.
    pub fn observe(&mut self, checkpoint: &Checkpoint) {
        self.latest_seq = checkpoint.seq;
        self.status = checkpoint.status;
        self.step = checkpoint.step;
        self.updated_at = checkpoint.created_at;
        if !checkpoint.metadata.is_empty() {
            self.metadata.clone_from(&checkpoint.metadata);
        }
    }
}
