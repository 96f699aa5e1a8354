//! The in-memory checkpointer.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{Checkpoint, CheckpointError, Checkpointer, PendingWrite};
use crate::ids::ThreadId;

#[derive(Default)]
struct Thread {
    checkpoints: Vec<Checkpoint>,
    /// Pending writes by checkpoint seq, then task position.
    writes: HashMap<u64, BTreeMap<u32, PendingWrite>>,
}

/// Keeps every thread in memory (lost when the process ends). The default
/// checkpointer.
#[derive(Default)]
pub struct MemoryCheckpointer {
    threads: Mutex<HashMap<ThreadId, Thread>>,
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

    fn lock(&self) -> MutexGuard<'_, HashMap<ThreadId, Thread>> {
        // Plain data: a poisoned lock still holds a consistent history,
        // because every mutation below is a single push or insert.
        self.threads.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Checkpointer for MemoryCheckpointer {
    async fn append(&self, checkpoint: Checkpoint) -> Result<(), CheckpointError> {
        checkpoint.check_format_version()?;
        let mut threads = self.lock();
        let thread = threads.entry(checkpoint.thread_id.clone()).or_default();
        let expected = thread.checkpoints.len() as u64;
        if checkpoint.seq != expected {
            return Err(CheckpointError::Conflict {
                thread: checkpoint.thread_id,
                seq: checkpoint.seq,
                expected,
            });
        }
        thread.checkpoints.push(checkpoint);
        Ok(())
    }

    async fn get(
        &self,
        thread: &ThreadId,
        seq: Option<u64>,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        let threads = self.lock();
        let Some(t) = threads.get(thread) else {
            return Ok(None);
        };
        Ok(match seq {
            None => t.checkpoints.last().cloned(),
            Some(s) => usize::try_from(s)
                .ok()
                .and_then(|i| t.checkpoints.get(i))
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
        let Some(t) = threads.get(thread) else {
            return Ok(Vec::new());
        };
        let end = before.map_or(t.checkpoints.len(), |b| {
            (b as usize).min(t.checkpoints.len())
        });
        Ok(t.checkpoints[..end]
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect())
    }

    async fn put_write(
        &self,
        thread: &ThreadId,
        seq: u64,
        write: PendingWrite,
    ) -> Result<(), CheckpointError> {
        let mut threads = self.lock();
        threads
            .entry(thread.clone())
            .or_default()
            .writes
            .entry(seq)
            .or_default()
            .entry(write.task)
            .or_insert(write);
        Ok(())
    }

    async fn writes(
        &self,
        thread: &ThreadId,
        seq: u64,
    ) -> Result<Vec<PendingWrite>, CheckpointError> {
        let threads = self.lock();
        Ok(threads
            .get(thread)
            .and_then(|t| t.writes.get(&seq))
            .map(|w| w.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn chain(&self, thread: &ThreadId, seq: u64) -> Result<Vec<Checkpoint>, CheckpointError> {
        let threads = self.lock();
        let Some(t) = threads.get(thread) else {
            return Ok(Vec::new());
        };
        let end = (seq as usize).saturating_add(1).min(t.checkpoints.len());
        let start = t.checkpoints[..end]
            .iter()
            .rposition(|c| matches!(c.state, super::StateRecord::Full(_)))
            .ok_or_else(|| CheckpointError::Corrupt {
                thread: thread.clone(),
                seq,
                message: "no full state before this checkpoint".into(),
            })?;
        Ok(t.checkpoints[start..end].to_vec())
    }
}
