//! The in-memory checkpointer.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::{
    Checkpoint, CheckpointBatch, CheckpointError, Checkpointer, PendingWrite, PruneOutcome,
    Retention, StateRecord, ThreadFilter, ThreadInfo, encode,
};
use crate::ids::ThreadId;

/// One thread: its checkpoints and pending writes as JSON bytes, plus a
/// small index.
#[derive(Default)]
struct Thread {
    /// The `seq` of `checkpoints[0]` (the oldest kept).
    base: u64,
    /// Checkpoints, oldest first, each as its JSON encoding.
    checkpoints: VecDeque<Arc<[u8]>>,
    /// The `seq`s of the full states among them, ascending.
    fulls: VecDeque<u64>,
    /// Pending writes by checkpoint `seq` and task position.
    writes: BTreeMap<(u64, u32), Arc<[u8]>>,
    /// The summary `list_threads` reports (`None` before the first
    /// checkpoint).
    info: Option<ThreadInfo>,
}

impl Thread {
    fn latest(&self) -> Option<u64> {
        let len = self.checkpoints.len() as u64;
        len.checked_sub(1).map(|l| self.base + l)
    }

    fn next_seq(&self) -> u64 {
        self.latest().map_or(0, |l| l + 1)
    }

    fn slot(&self, seq: u64) -> Option<&Arc<[u8]>> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.checkpoints.get(i)
    }

    /// The last full state at or before `seq`.
    fn last_full(&self, seq: u64) -> Option<u64> {
        let i = self.fulls.partition_point(|&f| f <= seq);
        self.fulls.get(i.checked_sub(1)?).copied()
    }

    /// Adds the thread's next checkpoint (already fenced).
    fn push(&mut self, cp: &Checkpoint, bytes: Vec<u8>) {
        if self.checkpoints.is_empty() {
            self.base = cp.seq;
        }
        match &mut self.info {
            Some(info) => info.observe(cp),
            None => self.info = Some(ThreadInfo::from_first(cp)),
        }
        if matches!(cp.state, StateRecord::Full(_)) {
            self.fulls.push_back(cp.seq);
        }
        self.checkpoints.push_back(bytes.into());
    }

    /// Saves a write unless its task is already saved.
    fn put_write(&mut self, seq: u64, task: u32, bytes: Vec<u8>) {
        self.writes
            .entry((seq, task))
            .or_insert_with(|| bytes.into());
    }

    fn writes_of(&self, seq: u64) -> Vec<Arc<[u8]>> {
        self.writes
            .range((seq, 0)..=(seq, u32::MAX))
            .map(|(_, w)| Arc::clone(w))
            .collect()
    }
}

/// Keeps every thread in memory (lost when the process ends). The default
/// checkpointer.
///
/// Each checkpoint and pending write is held as its JSON encoding (about
/// what a [`FileCheckpointer`](super::FileCheckpointer) writes to disk for
/// it, without the framing) plus a few bytes of index, and read back by
/// deserializing it; [`prune`](Checkpointer::prune) and
/// [`delete_thread`](Checkpointer::delete_thread) free what they remove.
/// Reads copy nothing under the store's lock: they take shared handles on
/// the bytes and deserialize after releasing it.
#[derive(Default)]
pub struct MemoryCheckpointer {
    threads: Mutex<BTreeMap<ThreadId, Thread>>,
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

    fn lock(&self) -> MutexGuard<'_, BTreeMap<ThreadId, Thread>> {
        // Plain data: a poisoned lock still holds a consistent history,
        // because no mutation below can panic halfway.
        self.threads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes of encoded checkpoints and pending writes held (test helper).
    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        self.lock()
            .values()
            .map(|t| {
                t.checkpoints.iter().map(|c| c.len()).sum::<usize>()
                    + t.writes.values().map(|w| w.len()).sum::<usize>()
            })
            .sum()
    }
}

fn read_all(
    thread: &ThreadId,
    slots: Vec<(u64, Arc<[u8]>)>,
) -> Result<Vec<Checkpoint>, CheckpointError> {
    slots
        .iter()
        .map(|(seq, bytes)| encode::read_checkpoint(thread, *seq, bytes))
        .collect()
}

#[async_trait]
impl Checkpointer for MemoryCheckpointer {
    async fn append(&self, checkpoint: Checkpoint) -> Result<(), CheckpointError> {
        checkpoint.check_format_version()?;
        let bytes = encode::checkpoint(&checkpoint)?;
        let mut threads = self.lock();
        let expected = threads
            .get(&checkpoint.thread_id)
            .map_or(0, Thread::next_seq);
        if checkpoint.seq != expected {
            return Err(CheckpointError::Conflict {
                thread: checkpoint.thread_id,
                seq: checkpoint.seq,
                expected,
            });
        }
        threads
            .entry(checkpoint.thread_id.clone())
            .or_default()
            .push(&checkpoint, bytes);
        Ok(())
    }

    async fn get(
        &self,
        thread: &ThreadId,
        seq: Option<u64>,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        let found = {
            let threads = self.lock();
            threads.get(thread).and_then(|t| {
                let seq = seq.or_else(|| t.latest())?;
                t.slot(seq).map(|b| (seq, Arc::clone(b)))
            })
        };
        found
            .map(|(seq, bytes)| encode::read_checkpoint(thread, seq, &bytes))
            .transpose()
    }

    async fn list(
        &self,
        thread: &ThreadId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Checkpoint>, CheckpointError> {
        let slots: Vec<(u64, Arc<[u8]>)> = {
            let threads = self.lock();
            let Some(t) = threads.get(thread) else {
                return Ok(Vec::new());
            };
            let end = before.unwrap_or(u64::MAX).min(t.next_seq());
            (t.base..end)
                .rev()
                .take(limit)
                .filter_map(|s| t.slot(s).map(|b| (s, Arc::clone(b))))
                .collect()
        };
        read_all(thread, slots)
    }

    async fn put_write(
        &self,
        thread: &ThreadId,
        seq: u64,
        write: PendingWrite,
    ) -> Result<(), CheckpointError> {
        let bytes = encode::write(thread, seq, &write)?;
        let mut threads = self.lock();
        let t = threads.entry(thread.clone()).or_default();
        if t.latest().is_some() && seq < t.base {
            return Err(CheckpointError::Pruned {
                thread: thread.clone(),
                seq,
                oldest: t.base,
            });
        }
        t.put_write(seq, write.task, bytes);
        Ok(())
    }

    async fn writes(
        &self,
        thread: &ThreadId,
        seq: u64,
    ) -> Result<Vec<PendingWrite>, CheckpointError> {
        let found = self
            .lock()
            .get(thread)
            .map(|t| t.writes_of(seq))
            .unwrap_or_default();
        found
            .iter()
            .map(|bytes| encode::read_write(thread, seq, bytes))
            .collect()
    }

    async fn append_batch(
        &self,
        thread: &ThreadId,
        batch: CheckpointBatch,
    ) -> Result<(), CheckpointError> {
        if batch.checkpoints.is_empty() && batch.writes.is_empty() {
            return Ok(());
        }
        for cp in &batch.checkpoints {
            cp.check_format_version()?;
        }
        let checkpoints = batch
            .checkpoints
            .iter()
            .map(encode::checkpoint)
            .collect::<Result<Vec<_>, _>>()?;
        let writes = batch
            .writes
            .iter()
            .map(|(seq, w)| encode::write(thread, *seq, w))
            .collect::<Result<Vec<_>, _>>()?;
        let mut threads = self.lock();
        batch.check(thread, threads.get(thread).and_then(Thread::latest))?;
        let t = threads.entry(thread.clone()).or_default();
        for (cp, bytes) in batch.checkpoints.iter().zip(checkpoints) {
            t.push(cp, bytes);
        }
        for ((seq, w), bytes) in batch.writes.iter().zip(writes) {
            t.put_write(*seq, w.task, bytes);
        }
        Ok(())
    }

    async fn chain(&self, thread: &ThreadId, seq: u64) -> Result<Vec<Checkpoint>, CheckpointError> {
        let slots: Vec<(u64, Arc<[u8]>)> = {
            let threads = self.lock();
            let (t, latest) = threads
                .get(thread)
                .and_then(|t| Some((t, t.latest()?)))
                .ok_or_else(|| CheckpointError::ThreadNotFound {
                    thread: thread.clone(),
                })?;
            if seq > latest {
                return Err(CheckpointError::CheckpointNotFound {
                    thread: thread.clone(),
                    seq,
                    latest,
                });
            }
            if seq < t.base {
                return Err(CheckpointError::Pruned {
                    thread: thread.clone(),
                    seq,
                    oldest: t.base,
                });
            }
            let start = t.last_full(seq).filter(|&f| f >= t.base).ok_or_else(|| {
                CheckpointError::Corrupt {
                    thread: thread.clone(),
                    seq,
                    message: "no full state before this checkpoint".into(),
                }
            })?;
            (start..=seq)
                .filter_map(|s| t.slot(s).map(|b| (s, Arc::clone(b))))
                .collect()
        };
        read_all(thread, slots)
    }

    async fn delete_thread(&self, thread: &ThreadId) -> Result<bool, CheckpointError> {
        let removed = self.lock().remove(thread);
        // Freed here, outside the lock.
        Ok(removed.is_some_and(|t| !t.checkpoints.is_empty() || !t.writes.is_empty()))
    }

    async fn prune(
        &self,
        thread: &ThreadId,
        keep: Retention,
    ) -> Result<PruneOutcome, CheckpointError> {
        let (outcome, removed_bytes, removed_writes) = {
            let mut threads = self.lock();
            let (t, latest) = threads
                .get_mut(thread)
                .and_then(|t| {
                    let latest = t.latest()?;
                    Some((t, latest))
                })
                .ok_or_else(|| CheckpointError::ThreadNotFound {
                    thread: thread.clone(),
                })?;
            let start = encode::first_kept(t.base, latest, keep, |s| t.last_full(s));
            let removed = start - t.base;
            let n = usize::try_from(removed).unwrap_or(usize::MAX);
            let removed_bytes: Vec<Arc<[u8]>> = t.checkpoints.drain(..n).collect();
            while t.fulls.front().is_some_and(|&f| f < start) {
                t.fulls.pop_front();
            }
            let kept_writes = t.writes.split_off(&(start, 0));
            let removed_writes = std::mem::replace(&mut t.writes, kept_writes);
            t.base = start;
            if removed > 0 {
                t.checkpoints.shrink_to_fit();
                t.fulls.shrink_to_fit();
            }
            (
                PruneOutcome::new(removed, start),
                removed_bytes,
                removed_writes,
            )
        };
        // Freed here, outside the lock.
        drop((removed_bytes, removed_writes));
        Ok(outcome)
    }

    async fn list_threads(
        &self,
        filter: &ThreadFilter,
    ) -> Result<Vec<ThreadInfo>, CheckpointError> {
        let threads = self.lock();
        let from: Bound<&ThreadId> = filter
            .after
            .as_ref()
            .map_or(Bound::Unbounded, Bound::Excluded);
        Ok(threads
            .range::<ThreadId, _>((from, Bound::Unbounded))
            .filter_map(|(_, t)| t.info.as_ref())
            .filter(|info| filter.matches(info))
            .take(filter.limit)
            .cloned()
            .collect())
    }

    async fn copy_thread(&self, from: &ThreadId, to: &ThreadId) -> Result<(), CheckpointError> {
        let exists = |t: Option<&Thread>| t.is_some_and(|t| t.latest().is_some());
        let (slots, fulls, writes, info) = {
            let threads = self.lock();
            let src = threads
                .get(from)
                .filter(|t| t.latest().is_some())
                .ok_or_else(|| CheckpointError::ThreadNotFound {
                    thread: from.clone(),
                })?;
            if exists(threads.get(to)) {
                return Err(CheckpointError::ThreadExists { thread: to.clone() });
            }
            let slots: Vec<(u64, Arc<[u8]>)> = (src.base..src.next_seq())
                .filter_map(|s| src.slot(s).map(|b| (s, Arc::clone(b))))
                .collect();
            (
                slots,
                src.fulls.clone(),
                src.writes.clone(),
                src.info.clone(),
            )
        };
        // Re-encode outside the lock: each checkpoint names its thread.
        let base = slots.first().map_or(0, |(s, _)| *s);
        let mut checkpoints = VecDeque::with_capacity(slots.len());
        for (seq, bytes) in &slots {
            let mut cp = encode::read_checkpoint(from, *seq, bytes)?;
            cp.thread_id = to.clone();
            checkpoints.push_back(Arc::from(encode::checkpoint(&cp)?));
        }
        let info = info.map(|mut i| {
            i.thread_id = to.clone();
            i
        });
        let mut threads = self.lock();
        if exists(threads.get(to)) {
            return Err(CheckpointError::ThreadExists { thread: to.clone() });
        }
        threads.insert(
            to.clone(),
            Thread {
                base,
                checkpoints,
                fulls,
                writes,
                info,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::checkpoint::conformance::{sample_checkpoint, sample_write};

    fn state(seq: u64) -> StateRecord {
        if seq % 10 == 0 {
            StateRecord::Full(json!({ "items": seq }))
        } else {
            StateRecord::Delta(vec![json!({ "seq": seq })])
        }
    }

    #[tokio::test]
    async fn delete_and_prune_free_what_they_remove() {
        let store = MemoryCheckpointer::new();
        let (a, b) = (ThreadId::new("a"), ThreadId::new("b"));
        for t in [&a, &b] {
            for seq in 0..25 {
                store
                    .append(sample_checkpoint(t, seq, state(seq)))
                    .await
                    .unwrap();
                store
                    .put_write(t, seq, sample_write(0, json!(seq)))
                    .await
                    .unwrap();
            }
        }
        let both = store.held_bytes();
        assert!(store.delete_thread(&a).await.unwrap());
        assert_eq!(store.held_bytes(), both / 2);
        assert!(!store.lock().contains_key(&a));
        assert!(!store.delete_thread(&a).await.unwrap());

        let outcome = store.prune(&b, Retention::Latest(2)).await.unwrap();
        assert_eq!(outcome, PruneOutcome::new(20, 20));
        let held = store.held_bytes();
        assert!(held < both / 8, "{held} of {both}");
        let threads = store.lock();
        let t = threads.get(&b).unwrap();
        assert_eq!((t.base, t.checkpoints.len(), t.writes.len()), (20, 5, 5));
        assert_eq!(t.fulls, [20]);
    }

    #[tokio::test]
    async fn the_summary_follows_the_latest_checkpoint() {
        let store = MemoryCheckpointer::new();
        let t = ThreadId::new("t");
        let mut first = sample_checkpoint(&t, 0, state(0));
        first.metadata.insert("tenant".into(), json!("acme"));
        store.append(first.clone()).await.unwrap();
        let mut second = sample_checkpoint(&t, 1, state(1));
        second.status = crate::checkpoint::ThreadStatus::Completed;
        store.append(second.clone()).await.unwrap();
        let listed = store.list_threads(&ThreadFilter::new()).await.unwrap();
        let mut want = ThreadInfo::from_first(&first);
        want.observe(&second);
        assert_eq!(listed, [want.clone()]);
        assert_eq!(want.metadata.get("tenant"), Some(&json!("acme")));
        assert_eq!(want.latest_seq, 1);
        assert_eq!(want.updated_at, second.created_at);
        assert_eq!(want.created_at, first.created_at);
    }
}
