//! The in-memory checkpointer.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{
    Checkpoint, CheckpointBatch, CheckpointError, Checkpointer, PendingWrite, PruneOutcome,
    Retention, StateRecord, ThreadFilter, ThreadInfo, ThreadStatus, encode,
};
use crate::ids::ThreadId;

/// One thread: its checkpoints and pending writes as JSON, plus a small
/// index.
#[derive(Clone, Default)]
struct Thread {
    /// The `seq` of the first checkpoint in `bytes` (the oldest kept).
    base: u64,
    /// The checkpoints' JSON, oldest first, back to back, each without its
    /// leading `{"thread_id":<id>,` (the thread's key holds it).
    bytes: Vec<u8>,
    /// Where each checkpoint ends in `bytes`.
    ends: Vec<usize>,
    /// The `seq`s of the full states, ascending.
    fulls: Vec<u64>,
    /// Pending writes' JSON by checkpoint `seq` and task position.
    writes: BTreeMap<(u64, u32), Box<[u8]>>,
    /// The summary `list_threads` reports (`None` before the first
    /// checkpoint).
    info: Option<ThreadInfo>,
}

impl Thread {
    fn latest(&self) -> Option<u64> {
        let len = self.ends.len() as u64;
        len.checked_sub(1).map(|l| self.base + l)
    }

    fn next_seq(&self) -> u64 {
        self.latest().map_or(0, |l| l + 1)
    }

    /// The stored bytes of checkpoint `seq`.
    fn slot(&self, seq: u64) -> Option<&[u8]> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        let end = *self.ends.get(i)?;
        let start = i
            .checked_sub(1)
            .map_or(Some(0), |p| self.ends.get(p).copied())?;
        self.bytes.get(start..end)
    }

    /// Copies out the stored bytes of `seqs`.
    fn copy_out(&self, seqs: impl Iterator<Item = u64>) -> Vec<(u64, Vec<u8>)> {
        seqs.filter_map(|s| self.slot(s).map(|b| (s, b.to_vec())))
            .collect()
    }

    /// The last full state at or before `seq`.
    fn last_full(&self, seq: u64) -> Option<u64> {
        let i = self.fulls.partition_point(|&f| f <= seq);
        self.fulls.get(i.checked_sub(1)?).copied()
    }

    /// Adds the thread's next checkpoint (already fenced), given its JSON.
    fn push(&mut self, cp: &Checkpoint, json: &[u8]) -> Result<(), CheckpointError> {
        let stored = strip_thread(&cp.thread_id, cp.seq, json)?;
        if self.ends.is_empty() {
            self.base = cp.seq;
        }
        match &mut self.info {
            Some(info) => info.observe(cp),
            None => self.info = Some(ThreadInfo::from_first(cp)),
        }
        if matches!(cp.state, StateRecord::Full(_)) {
            grow(&mut self.fulls, 1);
            self.fulls.push(cp.seq);
        }
        grow(&mut self.bytes, stored.len());
        self.bytes.extend_from_slice(stored);
        grow(&mut self.ends, 1);
        self.ends.push(self.bytes.len());
        Ok(())
    }

    /// Gives back the growth slack once the thread is idle (its latest
    /// checkpoint is not `running`: finished, failed, halted, or waiting
    /// for a human), so idle threads hold exactly their bytes.
    fn settle(&mut self) {
        if self
            .info
            .as_ref()
            .is_some_and(|i| i.status != ThreadStatus::Running)
        {
            self.bytes.shrink_to_fit();
            self.ends.shrink_to_fit();
            self.fulls.shrink_to_fit();
        }
    }

    /// Saves a write unless its task is already saved.
    fn put_write(&mut self, seq: u64, task: u32, json: Vec<u8>) {
        self.writes
            .entry((seq, task))
            .or_insert_with(|| json.into_boxed_slice());
    }

    /// Removes the checkpoints before `start` and their writes.
    fn drop_before(&mut self, start: u64) {
        let n = usize::try_from(start - self.base).unwrap_or(usize::MAX);
        let cut = n
            .checked_sub(1)
            .and_then(|i| self.ends.get(i).copied())
            .unwrap_or(0);
        self.bytes.drain(..cut);
        self.ends.drain(..n.min(self.ends.len()));
        for end in &mut self.ends {
            *end -= cut;
        }
        let kept_fulls = self.fulls.partition_point(|&f| f < start);
        self.fulls.drain(..kept_fulls);
        self.writes = self.writes.split_off(&(start, 0));
        self.base = start;
        self.bytes.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.fulls.shrink_to_fit();
    }
}

/// Makes room for `more` items, doubling: appends copy each byte about
/// once in all, so a step costs the same at 100 and 100,000 checkpoints.
/// The slack (at most the thread's own size, while it runs) is given back
/// once the thread is idle (see [`Thread::settle`]).
fn grow<T>(v: &mut Vec<T>, more: usize) {
    if v.capacity() - v.len() >= more {
        return;
    }
    let floor = (1024 / size_of::<T>().max(1)).max(1);
    v.reserve_exact(more.max(v.len()).max(floor));
}

/// The prefix every checkpoint of `thread` starts with as JSON:
/// `{"thread_id":<id>,` (`thread_id` is `Checkpoint`'s first field).
fn thread_prefix(thread: &ThreadId) -> Vec<u8> {
    let mut prefix = b"{\"thread_id\":".to_vec();
    // Serializing a string can't fail.
    if serde_json::to_writer(&mut prefix, thread.as_str()).is_err() {
        prefix.clear();
    }
    prefix.push(b',');
    prefix
}

/// `json` (checkpoint `seq` of `thread`) without its thread prefix.
fn strip_thread<'a>(
    thread: &ThreadId,
    seq: u64,
    json: &'a [u8],
) -> Result<&'a [u8], CheckpointError> {
    json.strip_prefix(thread_prefix(thread).as_slice())
        .ok_or_else(|| CheckpointError::Corrupt {
            thread: thread.clone(),
            seq,
            message: "serialized without its thread id first".into(),
        })
}

/// Keeps every thread in memory (lost when the process ends). The default
/// checkpointer.
///
/// Each thread's checkpoints are held as their JSON encoding, back to back
/// in one buffer (less than a [`FileCheckpointer`](super::FileCheckpointer)
/// writes to disk for them: no framing, and no thread id repeated in each),
/// plus a few bytes of index per checkpoint, and read back by deserializing
/// them; pending writes likewise. [`prune`](Checkpointer::prune) and
/// [`delete_thread`](Checkpointer::delete_thread) free what they remove.
/// Reads copy the bytes they need under the store's lock and deserialize
/// after releasing it.
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
            .map(|t| t.bytes.capacity() + t.writes.values().map(|w| w.len()).sum::<usize>())
            .sum()
    }
}

/// Reads back checkpoints copied out of `thread`.
fn read_all(
    thread: &ThreadId,
    stored: Vec<(u64, Vec<u8>)>,
) -> Result<Vec<Checkpoint>, CheckpointError> {
    let prefix = thread_prefix(thread);
    let mut json = Vec::new();
    stored
        .iter()
        .map(|(seq, bytes)| {
            json.clear();
            json.extend_from_slice(&prefix);
            json.extend_from_slice(bytes);
            encode::read_checkpoint(thread, *seq, &json)
        })
        .collect()
}

#[async_trait]
impl Checkpointer for MemoryCheckpointer {
    async fn append(&self, checkpoint: Checkpoint) -> Result<(), CheckpointError> {
        checkpoint.check_format_version()?;
        let json = encode::checkpoint(&checkpoint)?;
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
        let t = threads.entry(checkpoint.thread_id.clone()).or_default();
        t.push(&checkpoint, &json)?;
        t.settle();
        Ok(())
    }

    async fn get(
        &self,
        thread: &ThreadId,
        seq: Option<u64>,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        let found = self
            .lock()
            .get(thread)
            .and_then(|t| Some(t.copy_out(std::iter::once(seq.or_else(|| t.latest())?))))
            .unwrap_or_default();
        Ok(read_all(thread, found)?.pop())
    }

    async fn list(
        &self,
        thread: &ThreadId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Checkpoint>, CheckpointError> {
        let found = self
            .lock()
            .get(thread)
            .map(|t| {
                let end = before.unwrap_or(u64::MAX).min(t.next_seq());
                t.copy_out((t.base..end).rev().take(limit))
            })
            .unwrap_or_default();
        read_all(thread, found)
    }

    async fn put_write(
        &self,
        thread: &ThreadId,
        seq: u64,
        write: PendingWrite,
    ) -> Result<(), CheckpointError> {
        let json = encode::write(thread, seq, &write)?;
        let mut threads = self.lock();
        let t = threads.entry(thread.clone()).or_default();
        if t.latest().is_some() && seq < t.base {
            return Err(CheckpointError::Pruned {
                thread: thread.clone(),
                seq,
                oldest: t.base,
            });
        }
        t.put_write(seq, write.task, json);
        Ok(())
    }

    async fn writes(
        &self,
        thread: &ThreadId,
        seq: u64,
    ) -> Result<Vec<PendingWrite>, CheckpointError> {
        let found: Vec<Vec<u8>> = self
            .lock()
            .get(thread)
            .map(|t| {
                t.writes
                    .range((seq, 0)..=(seq, u32::MAX))
                    .map(|(_, w)| w.to_vec())
                    .collect()
            })
            .unwrap_or_default();
        found
            .iter()
            .map(|json| encode::read_write(thread, seq, json))
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
            .map(|cp| {
                let json = encode::checkpoint(cp)?;
                strip_thread(&cp.thread_id, cp.seq, &json)?;
                Ok(json)
            })
            .collect::<Result<Vec<_>, CheckpointError>>()?;
        let writes = batch
            .writes
            .iter()
            .map(|(seq, w)| encode::write(thread, *seq, w))
            .collect::<Result<Vec<_>, _>>()?;
        let mut threads = self.lock();
        batch.check(thread, threads.get(thread).and_then(Thread::latest))?;
        let t = threads.entry(thread.clone()).or_default();
        for (cp, json) in batch.checkpoints.iter().zip(&checkpoints) {
            // Checked above: cannot fail.
            t.push(cp, json)?;
        }
        for ((seq, w), json) in batch.writes.iter().zip(writes) {
            t.put_write(*seq, w.task, json);
        }
        t.settle();
        Ok(())
    }

    async fn chain(&self, thread: &ThreadId, seq: u64) -> Result<Vec<Checkpoint>, CheckpointError> {
        let found = {
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
            t.copy_out(start..=seq)
        };
        read_all(thread, found)
    }

    async fn delete_thread(&self, thread: &ThreadId) -> Result<bool, CheckpointError> {
        let removed = self.lock().remove(thread);
        // Freed here, outside the lock.
        Ok(removed.is_some_and(|t| !t.ends.is_empty() || !t.writes.is_empty()))
    }

    async fn prune(
        &self,
        thread: &ThreadId,
        keep: Retention,
    ) -> Result<PruneOutcome, CheckpointError> {
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
        let oldest = t.base;
        let start = encode::first_kept(oldest, latest, keep, |s| t.last_full(s));
        if start > oldest {
            t.drop_before(start);
        }
        Ok(PruneOutcome::new(start - oldest, start))
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
        let mut threads = self.lock();
        // Stored checkpoints don't name their thread: a copy is the bytes.
        let mut copy = threads
            .get(from)
            .filter(|t| t.latest().is_some())
            .cloned()
            .ok_or_else(|| CheckpointError::ThreadNotFound {
                thread: from.clone(),
            })?;
        if threads.get(to).is_some_and(|t| t.latest().is_some()) {
            return Err(CheckpointError::ThreadExists { thread: to.clone() });
        }
        if let Some(info) = &mut copy.info {
            info.thread_id = to.clone();
        }
        threads.insert(to.clone(), copy);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::checkpoint::conformance::{sample_checkpoint, sample_write};

    fn state(seq: u64) -> StateRecord {
        if seq.is_multiple_of(10) {
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
        assert_eq!((t.base, t.ends.len(), t.writes.len()), (20, 5, 5));
        assert_eq!(t.fulls, [20]);
        assert_eq!(t.bytes.len(), *t.ends.last().unwrap());
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
