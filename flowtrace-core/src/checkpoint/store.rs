//! The [`Checkpointer`] trait.

use std::sync::Arc;

use async_trait::async_trait;

use super::{
    Checkpoint, CheckpointBatch, CheckpointError, PendingWrite, PruneOutcome, Retention,
    StateRecord, ThreadFilter, ThreadInfo,
};
use crate::ids::ThreadId;

/// Stores the checkpoints and pending writes of threads.
///
/// Implementations must be safe to share between tasks and processes
/// writing different threads, and must fence appends on one thread (see the
/// module docs). The [`conformance`](super::conformance) module checks all of it.
///
/// # The contract
///
/// * **Fencing.** A checkpoint is accepted only as its thread's next:
///   `seq` is the latest's plus one (0 for an empty thread). Pruning does
///   not change this: the next `seq` is always the latest's plus one.
/// * **Depth.** Nothing nesting deeper than [`MAX_RECORD_DEPTH`](super::MAX_RECORD_DEPTH) is stored:
///   [`append`](Self::append), [`append_batch`](Self::append_batch) and
///   [`put_write`](Self::put_write) refuse it with
///   [`CheckpointError::TooDeep`] before storing anything, so every thread
///   that can be written can be read back.
/// * **Snapshots.** The executor writes full states
///   ([`StateRecord::Full`]) now and then; the store never builds them, but
///   [`chain`](Self::chain) must start at the last full state at or before
///   the `seq` asked for and cost what that tail costs, not what the whole
///   history costs. [`get`](Self::get) of the latest and
///   [`writes`](Self::writes) must not depend on the history's length
///   either.
/// * **Pruned history.** Checkpoints removed by [`prune`](Self::prune) read
///   as absent: `get` returns `None`, `list` skips them, `writes` is empty
///   and `chain` fails with [`CheckpointError::Pruned`]. The oldest
///   checkpoint left is always a full state.
/// * **Thread summary.** [`list_threads`](Self::list_threads) reports each
///   thread from a summary the store keeps up to date on every write; it
///   never reads a thread's history.
///
/// # Cancel safety
///
/// Dropping a method's future must leave each write whole: committed
/// entirely or not at all (a dropped write may still have been committed;
/// read the thread to find out).
#[async_trait]
pub trait Checkpointer: Send + Sync {
    /// Appends `checkpoint` to its thread if its `seq` is exactly one more
    /// than the thread's latest (0 for a new thread); otherwise fails with
    /// [`CheckpointError::Conflict`] and stores nothing. Refuses a format
    /// version other than [`CHECKPOINT_FORMAT_VERSION`](super::CHECKPOINT_FORMAT_VERSION)
    /// ([`CheckpointError::UnsupportedVersion`]) and a checkpoint nesting
    /// deeper than [`MAX_RECORD_DEPTH`](super::MAX_RECORD_DEPTH) ([`CheckpointError::TooDeep`]),
    /// storing nothing. Once this returns `Ok`, the checkpoint is as durable
    /// as the store promises.
    async fn append(&self, checkpoint: Checkpoint) -> Result<(), CheckpointError>;

    /// The checkpoint `seq` of `thread`, or its latest when `seq` is `None`.
    /// `None` when the thread has no such checkpoint (never written, pruned,
    /// or the thread is empty). The latest costs the same however long the
    /// history.
    async fn get(
        &self,
        thread: &ThreadId,
        seq: Option<u64>,
    ) -> Result<Option<Checkpoint>, CheckpointError>;

    /// Up to `limit` checkpoints with `seq < before` (all when `before` is
    /// `None`), newest first. Pruned checkpoints are not listed.
    async fn list(
        &self,
        thread: &ThreadId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Checkpoint>, CheckpointError>;

    /// Saves the result of one task of the super-step that follows
    /// checkpoint `seq`. Writing the same task twice keeps the first write.
    /// Refuses a write nesting deeper than [`MAX_RECORD_DEPTH`](super::MAX_RECORD_DEPTH)
    /// ([`CheckpointError::TooDeep`]) and one for a pruned checkpoint
    /// ([`CheckpointError::Pruned`]).
    async fn put_write(
        &self,
        thread: &ThreadId,
        seq: u64,
        write: PendingWrite,
    ) -> Result<(), CheckpointError>;

    /// The task results saved after checkpoint `seq`, by task position
    /// (empty for a pruned checkpoint). Costs what those results cost, not
    /// what the thread's history costs.
    async fn writes(
        &self,
        thread: &ThreadId,
        seq: u64,
    ) -> Result<Vec<PendingWrite>, CheckpointError>;

    /// Writes a whole batch for `thread`, all or nothing: the checkpoints
    /// (consecutive `seq`s, the first being the thread's next) and the
    /// pending writes (each for one of the batch's checkpoints or for the
    /// thread's latest). If any of it is refused, nothing is stored:
    /// [`CheckpointError::Conflict`] when the first `seq` is not the
    /// thread's next, [`CheckpointError::InvalidBatch`] when the batch
    /// breaks its own rules (see [`CheckpointBatch::check`]),
    /// [`CheckpointError::UnsupportedVersion`] or
    /// [`CheckpointError::TooDeep`]. Writes of a task already saved keep
    /// the first, as with [`put_write`](Self::put_write). An empty batch
    /// does nothing.
    ///
    /// Stores should write the batch as one record with one flush. The
    /// provided implementation is a fallback for stores that can't: it
    /// checks the whole batch first (so every refusal above leaves the
    /// thread untouched), then appends the checkpoints one by one and saves
    /// the writes — a crash, or another writer slipping in between two of
    /// its appends, can leave part of the batch.
    async fn append_batch(
        &self,
        thread: &ThreadId,
        batch: CheckpointBatch,
    ) -> Result<(), CheckpointError> {
        let latest = self.get(thread, None).await?.map(|cp| cp.seq);
        batch.check(thread, latest)?;
        for cp in &batch.checkpoints {
            cp.check_depth()?;
        }
        for cp in batch.checkpoints {
            self.append(cp).await?;
        }
        for (seq, w) in batch.writes {
            self.put_write(thread, seq, w).await?;
        }
        Ok(())
    }

    /// The checkpoints needed to rebuild the state at `seq`: from the last
    /// one holding a full state at or before `seq`, up to `seq`, oldest
    /// first. Costs what that tail costs, never what the whole history
    /// costs.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::ThreadNotFound`] for a thread with no checkpoint,
    /// [`CheckpointError::Pruned`] for a pruned `seq`,
    /// [`CheckpointError::CheckpointNotFound`] for a `seq` after the latest,
    /// [`CheckpointError::Corrupt`] if no full state precedes `seq`.
    ///
    /// The provided implementation walks parents with
    /// [`get`](Self::get) (one call per checkpoint of the tail); stores
    /// can answer with one range query.
    async fn chain(&self, thread: &ThreadId, seq: u64) -> Result<Vec<Checkpoint>, CheckpointError> {
        let Some(mut cp) = self.get(thread, Some(seq)).await? else {
            return Err(missing_checkpoint(self, thread, seq).await);
        };
        let mut out = Vec::new();
        loop {
            let parent = match cp.state {
                StateRecord::Full(_) => None,
                StateRecord::Delta(_) => {
                    Some(cp.parent_seq.ok_or_else(|| CheckpointError::Corrupt {
                        thread: thread.clone(),
                        seq,
                        message: "no full state before this checkpoint".into(),
                    })?)
                }
            };
            out.push(cp);
            let Some(p) = parent else { break };
            cp = self
                .get(thread, Some(p))
                .await?
                .ok_or_else(|| CheckpointError::Corrupt {
                    thread: thread.clone(),
                    seq: p,
                    message: "missing from the thread's history".into(),
                })?;
        }
        out.reverse();
        Ok(out)
    }

    /// Deletes every checkpoint and pending write of `thread` and frees
    /// what the store held for it (memory, files, rows). Returns whether
    /// the thread had anything stored. Afterwards the thread reads as empty
    /// and may start again at `seq` 0; other threads (its forks and copies
    /// included) are untouched.
    async fn delete_thread(&self, thread: &ThreadId) -> Result<bool, CheckpointError>;

    /// Removes the old checkpoints of `thread` that `keep` does not ask
    /// for, and their pending writes, but never what a resume of the latest
    /// checkpoint needs.
    ///
    /// The first checkpoint kept is the last full state
    /// ([`StateRecord::Full`]) at or before the oldest that `keep` asks
    /// for; everything from there to the latest stays, with its pending
    /// writes. So the oldest remaining checkpoint is always a full state,
    /// and the latest and its pending writes always stay. The thread's
    /// summary ([`ThreadInfo`]: creation time, metadata, fork origin) is
    /// kept as it was, and fencing goes on: the next append is still the
    /// latest's `seq` plus one. Pruning again with the same retention
    /// removes nothing.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::ThreadNotFound`] for a thread with no checkpoint.
    async fn prune(
        &self,
        thread: &ThreadId,
        keep: Retention,
    ) -> Result<PruneOutcome, CheckpointError>;

    /// The threads that have at least one checkpoint and pass `filter`
    /// ([`ThreadFilter::matches`]), sorted by thread id, starting after
    /// `filter.after`, at most `filter.limit`. Answered from a per-thread
    /// summary, without reading the threads' histories.
    async fn list_threads(&self, filter: &ThreadFilter)
    -> Result<Vec<ThreadInfo>, CheckpointError>;

    /// Copies thread `from` to the new thread `to`: every checkpoint (with
    /// `thread_id` set to `to`, everything else unchanged, pruned ones
    /// staying pruned) and every pending write, all or nothing. `to` then
    /// lists like `from` and is written to independently.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::ThreadNotFound`] if `from` has no checkpoint;
    /// [`CheckpointError::ThreadExists`] if `to` has any (pending writes
    /// `to` held without a checkpoint are dropped).
    async fn copy_thread(&self, from: &ThreadId, to: &ThreadId) -> Result<(), CheckpointError>;
}

/// Why `thread` has no checkpoint `seq`: it has none at all, `seq` is
/// after its latest, or `seq` was pruned.
async fn missing_checkpoint<C: Checkpointer + ?Sized>(
    store: &C,
    thread: &ThreadId,
    seq: u64,
) -> CheckpointError {
    let latest = match store.get(thread, None).await {
        Ok(Some(cp)) => cp.seq,
        Ok(None) => {
            return CheckpointError::ThreadNotFound {
                thread: thread.clone(),
            };
        }
        Err(e) => return e,
    };
    if seq > latest {
        return CheckpointError::CheckpointNotFound {
            thread: thread.clone(),
            seq,
            latest,
        };
    }
    // Only on this error path: find the oldest checkpoint left.
    match store.list(thread, None, usize::MAX).await {
        Ok(all) => match all.last() {
            Some(oldest) if oldest.seq > seq => CheckpointError::Pruned {
                thread: thread.clone(),
                seq,
                oldest: oldest.seq,
            },
            _ => CheckpointError::Corrupt {
                thread: thread.clone(),
                seq,
                message: "missing from the thread's history".into(),
            },
        },
        Err(e) => e,
    }
}

/// Fails to compile if [`Checkpointer`] stops being object safe.
fn _assert_object_safe(_: &dyn Checkpointer) {}

#[async_trait]
impl<C: Checkpointer + ?Sized> Checkpointer for Arc<C> {
    async fn append(&self, checkpoint: Checkpoint) -> Result<(), CheckpointError> {
        (**self).append(checkpoint).await
    }
    async fn get(
        &self,
        thread: &ThreadId,
        seq: Option<u64>,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        (**self).get(thread, seq).await
    }
    async fn list(
        &self,
        thread: &ThreadId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Checkpoint>, CheckpointError> {
        (**self).list(thread, before, limit).await
    }
    async fn put_write(
        &self,
        thread: &ThreadId,
        seq: u64,
        write: PendingWrite,
    ) -> Result<(), CheckpointError> {
        (**self).put_write(thread, seq, write).await
    }
    async fn writes(
        &self,
        thread: &ThreadId,
        seq: u64,
    ) -> Result<Vec<PendingWrite>, CheckpointError> {
        (**self).writes(thread, seq).await
    }
    async fn append_batch(
        &self,
        thread: &ThreadId,
        batch: CheckpointBatch,
    ) -> Result<(), CheckpointError> {
        (**self).append_batch(thread, batch).await
    }
    async fn chain(&self, thread: &ThreadId, seq: u64) -> Result<Vec<Checkpoint>, CheckpointError> {
        (**self).chain(thread, seq).await
    }
    async fn delete_thread(&self, thread: &ThreadId) -> Result<bool, CheckpointError> {
        (**self).delete_thread(thread).await
    }
    async fn prune(
        &self,
        thread: &ThreadId,
        keep: Retention,
    ) -> Result<PruneOutcome, CheckpointError> {
        (**self).prune(thread, keep).await
    }
    async fn list_threads(
        &self,
        filter: &ThreadFilter,
    ) -> Result<Vec<ThreadInfo>, CheckpointError> {
        (**self).list_threads(filter).await
    }
    async fn copy_thread(&self, from: &ThreadId, to: &ThreadId) -> Result<(), CheckpointError> {
        (**self).copy_thread(from, to).await
    }
}
