//! Checkpointers: durable snapshots of a run's state, per thread.
//!
//! A [`Checkpointer`] stores, for each [`ThreadId`], the state after each
//! super-step with its metadata, and lists a thread's history newest first.
//! [`MemoryCheckpointer`] is the in-memory default.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, ThreadId};
use crate::trace::Timestamp;

/// The stored-format version written by this release.
pub const CHECKPOINT_FORMAT_VERSION: u32 = 1;

/// One checkpoint of a thread.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The thread.
    pub thread_id: ThreadId,
    /// Position in the thread's history, from 1.
    pub step: u64,
    /// The checkpoint this one follows.
    pub parent_step: Option<u64>,
    /// The nodes that ran in the super-step that produced it.
    pub nodes: Vec<NodeId>,
    /// The state, as JSON.
    pub state: serde_json::Value,
    /// When it was taken.
    pub created_at: Timestamp,
    /// The stored-format version.
    pub format_version: u32,
}

/// A checkpointer failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Another writer appended to the thread first.
    #[error(
        "thread {thread:?}: checkpoint step {step} conflicts with the stored history (expected step {expected})"
    )]
    Conflict {
        /// The thread.
        thread: ThreadId,
        /// The step that was written.
        step: u64,
        /// The step the store expected next.
        expected: u64,
    },
    /// The stored format is not one this release reads.
    #[error(
        "thread {thread:?}: unsupported checkpoint format version {found} (this release reads {supported})"
    )]
    UnsupportedVersion {
        /// The thread.
        thread: ThreadId,
        /// The version found.
        found: u32,
        /// The version supported.
        supported: u32,
    },
    /// The backing store failed.
    #[error("checkpoint store failed: {0}")]
    Store(String),
}

/// Stores checkpoints per thread.
#[async_trait]
pub trait Checkpointer: Send + Sync {
    /// Appends `checkpoint` to its thread. Its `step` must be exactly one
    /// more than the thread's latest (1 for a new thread), otherwise
    /// [`CheckpointError::Conflict`].
    async fn put(&self, checkpoint: Checkpoint) -> Result<(), CheckpointError>;

    /// The checkpoint at `step`, or the latest when `step` is `None`.
    async fn get(
        &self,
        thread: &ThreadId,
        step: Option<u64>,
    ) -> Result<Option<Checkpoint>, CheckpointError>;

    /// Up to `limit` checkpoints older than `before` (or the newest), newest first.
    async fn list(
        &self,
        thread: &ThreadId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Checkpoint>, CheckpointError>;
}

/// Keeps checkpoints in memory (lost when the process ends).
#[derive(Default)]
pub struct MemoryCheckpointer {
    threads: Mutex<HashMap<ThreadId, Vec<Checkpoint>>>,
}

impl fmt::Debug for MemoryCheckpointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryCheckpointer").finish_non_exhaustive()
    }
}

impl MemoryCheckpointer {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ThreadId, Vec<Checkpoint>>> {
        self.threads.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Checkpointer for MemoryCheckpointer {
    async fn put(&self, checkpoint: Checkpoint) -> Result<(), CheckpointError> {
        if checkpoint.format_version != CHECKPOINT_FORMAT_VERSION {
            return Err(CheckpointError::UnsupportedVersion {
                thread: checkpoint.thread_id,
                found: checkpoint.format_version,
                supported: CHECKPOINT_FORMAT_VERSION,
            });
        }
        let mut threads = self.lock();
        let history = threads.entry(checkpoint.thread_id.clone()).or_default();
        let expected = history.len() as u64 + 1;
        if checkpoint.step != expected {
            return Err(CheckpointError::Conflict {
                thread: checkpoint.thread_id,
                step: checkpoint.step,
                expected,
            });
        }
        history.push(checkpoint);
        Ok(())
    }

    async fn get(
        &self,
        thread: &ThreadId,
        step: Option<u64>,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        let threads = self.lock();
        let Some(history) = threads.get(thread) else {
            return Ok(None);
        };
        Ok(match step {
            None => history.last().cloned(),
            Some(s) => s
                .checked_sub(1)
                .and_then(|i| history.get(i as usize))
                .cloned(),
        })
    }

    async fn list(
        &self,
        thread: &ThreadId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Checkpoint>, CheckpointError> {
        let threads = self.lock();
        let Some(history) = threads.get(thread) else {
            return Ok(Vec::new());
        };
        let end = before.map_or(history.len(), |b| {
            (b.saturating_sub(1) as usize).min(history.len())
        });
        Ok(history[..end].iter().rev().take(limit).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(thread: &str, step: u64) -> Checkpoint {
        Checkpoint {
            thread_id: thread.into(),
            step,
            parent_step: step.checked_sub(1).filter(|s| *s > 0),
            nodes: vec!["n".into()],
            state: serde_json::json!({ "step": step }),
            created_at: Timestamp::now(),
            format_version: CHECKPOINT_FORMAT_VERSION,
        }
    }

    #[tokio::test]
    async fn history_is_newest_first_with_paging() {
        let store = MemoryCheckpointer::new();
        for s in 1..=5 {
            store.put(cp("t", s)).await.unwrap();
        }
        let t: ThreadId = "t".into();
        let page: Vec<u64> = store
            .list(&t, None, 2)
            .await
            .unwrap()
            .iter()
            .map(|c| c.step)
            .collect();
        assert_eq!(page, [5, 4]);
        let page: Vec<u64> = store
            .list(&t, Some(4), 10)
            .await
            .unwrap()
            .iter()
            .map(|c| c.step)
            .collect();
        assert_eq!(page, [3, 2, 1]);
        assert_eq!(store.get(&t, None).await.unwrap().unwrap().step, 5);
        assert_eq!(
            store.get(&t, Some(2)).await.unwrap().unwrap().state["step"],
            2
        );
    }

    #[tokio::test]
    async fn stale_writer_is_rejected() {
        let store = MemoryCheckpointer::new();
        store.put(cp("t", 1)).await.unwrap();
        let err = store.put(cp("t", 1)).await.unwrap_err();
        assert!(
            matches!(err, CheckpointError::Conflict { expected: 2, .. }),
            "{err}"
        );
        let mut bad = cp("u", 1);
        bad.format_version = 99;
        assert!(matches!(
            store.put(bad).await,
            Err(CheckpointError::UnsupportedVersion { found: 99, .. })
        ));
    }
}
