//! The checkpointer conformance kit against the stores FlowTrace ships, and
//! against a deliberately broken store, to show the kit catches it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flowtrace_core::ThreadId;
use flowtrace_core::checkpoint::conformance::{self, Check};
use flowtrace_core::checkpoint::{
    CHECKPOINT_FORMAT_VERSION, Checkpoint, CheckpointBatch, CheckpointError, Checkpointer,
    FileCheckpointer, MAX_RECORD_DEPTH, MemoryCheckpointer, PendingWrite, PruneOutcome, Retention,
    StateRecord, ThreadFilter, ThreadInfo, value_depth,
};

use crate::support::TempDir;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_checkpointer_conforms() {
    let store = Arc::new(MemoryCheckpointer::new());
    let result = conformance::run(|| -> Arc<dyn Checkpointer> { store.clone() }).await;
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Runs the kit on file stores in a fresh directory; every call of the
/// kit's `open` opens a new handle on it: a "restart".
async fn file_checkpointer_conforms_in(label: &str) -> TempDir {
    let dir = TempDir::new(label);
    let path = dir.path().to_path_buf();
    let result = conformance::run(move || -> Arc<dyn Checkpointer> {
        Arc::new(FileCheckpointer::open(&path).unwrap())
    })
    .await;
    if let Err(e) = result {
        panic!("{e}");
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_checkpointer_conforms() {
    let dir = file_checkpointer_conforms_in("file").await;
    assert!(std::fs::read_dir(dir.path()).unwrap().count() > 0);
}

#[tokio::test]
async fn file_checkpointer_conforms_on_a_current_thread_runtime() {
    file_checkpointer_conforms_in("file-current-thread").await;
}

/// Stores checkpoints by seq, overwriting whatever is there: it never
/// fences single appends. Everything else it does right (batches are
/// fenced), so the kit must fail it on fencing alone.
#[derive(Default)]
struct NoFence {
    threads: Mutex<BTreeMap<ThreadId, Thread>>,
}

#[derive(Clone, Default)]
struct Thread {
    checkpoints: BTreeMap<u64, Checkpoint>,
    writes: BTreeMap<(u64, u32), PendingWrite>,
    info: Option<ThreadInfo>,
}

impl Thread {
    fn latest(&self) -> Option<u64> {
        self.checkpoints.keys().next_back().copied()
    }

    fn oldest(&self) -> Option<u64> {
        self.checkpoints.keys().next().copied()
    }

    fn insert(&mut self, cp: Checkpoint) {
        match &mut self.info {
            Some(info) => info.observe(&cp),
            None => self.info = Some(ThreadInfo::from_first(&cp)),
        }
        self.checkpoints.insert(cp.seq, cp);
    }
}

fn check_write_depth(thread: &ThreadId, seq: u64, w: &PendingWrite) -> Result<(), CheckpointError> {
    let depth = value_depth(&serde_json::to_value(w).unwrap());
    if depth > MAX_RECORD_DEPTH {
        return Err(CheckpointError::TooDeep {
            thread: thread.clone(),
            seq,
            node: Some(w.node.clone()),
            depth,
            limit: MAX_RECORD_DEPTH,
        });
    }
    Ok(())
}

#[async_trait]
impl Checkpointer for NoFence {
    async fn append(&self, checkpoint: Checkpoint) -> Result<(), CheckpointError> {
        if checkpoint.format_version != CHECKPOINT_FORMAT_VERSION {
            return Err(CheckpointError::UnsupportedVersion {
                thread: checkpoint.thread_id,
                found: checkpoint.format_version,
                supported: CHECKPOINT_FORMAT_VERSION,
            });
        }
        checkpoint.check_depth()?;
        let mut threads = self.threads.lock().unwrap();
        let thread = threads.entry(checkpoint.thread_id.clone()).or_default();
        thread.insert(checkpoint);
        Ok(())
    }

    async fn get(
        &self,
        thread: &ThreadId,
        seq: Option<u64>,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        let threads = self.threads.lock().unwrap();
        let Some(t) = threads.get(thread) else {
            return Ok(None);
        };
        Ok(match seq {
            None => t.checkpoints.values().next_back().cloned(),
            Some(s) => t.checkpoints.get(&s).cloned(),
        })
    }

    async fn list(
        &self,
        thread: &ThreadId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Checkpoint>, CheckpointError> {
        let threads = self.threads.lock().unwrap();
        let Some(t) = threads.get(thread) else {
            return Ok(Vec::new());
        };
        Ok(t.checkpoints
            .range(..before.unwrap_or(u64::MAX))
            .rev()
            .take(limit)
            .map(|(_, c)| c.clone())
            .collect())
    }

    async fn put_write(
        &self,
        thread: &ThreadId,
        seq: u64,
        write: PendingWrite,
    ) -> Result<(), CheckpointError> {
        check_write_depth(thread, seq, &write)?;
        let mut threads = self.threads.lock().unwrap();
        let t = threads.entry(thread.clone()).or_default();
        if let Some(oldest) = t.oldest()
            && seq < oldest
        {
            return Err(CheckpointError::Pruned {
                thread: thread.clone(),
                seq,
                oldest,
            });
        }
        t.writes.entry((seq, write.task)).or_insert(write);
        Ok(())
    }

    async fn writes(
        &self,
        thread: &ThreadId,
        seq: u64,
    ) -> Result<Vec<PendingWrite>, CheckpointError> {
        let threads = self.threads.lock().unwrap();
        Ok(threads
            .get(thread)
            .map(|t| {
                t.writes
                    .range((seq, 0)..=(seq, u32::MAX))
                    .map(|(_, w)| w.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn append_batch(
        &self,
        thread: &ThreadId,
        batch: CheckpointBatch,
    ) -> Result<(), CheckpointError> {
        let mut threads = self.threads.lock().unwrap();
        batch.check(thread, threads.get(thread).and_then(Thread::latest))?;
        for cp in &batch.checkpoints {
            cp.check_depth()?;
        }
        for (seq, w) in &batch.writes {
            check_write_depth(thread, *seq, w)?;
        }
        let t = threads.entry(thread.clone()).or_default();
        for cp in batch.checkpoints {
            t.insert(cp);
        }
        for (seq, w) in batch.writes {
            t.writes.entry((seq, w.task)).or_insert(w);
        }
        Ok(())
    }

    async fn delete_thread(&self, thread: &ThreadId) -> Result<bool, CheckpointError> {
        let removed = self.threads.lock().unwrap().remove(thread);
        Ok(removed.is_some_and(|t| !t.checkpoints.is_empty() || !t.writes.is_empty()))
    }

    async fn prune(
        &self,
        thread: &ThreadId,
        keep: Retention,
    ) -> Result<PruneOutcome, CheckpointError> {
        let mut threads = self.threads.lock().unwrap();
        let not_found = || CheckpointError::ThreadNotFound {
            thread: thread.clone(),
        };
        let t = threads.get_mut(thread).ok_or_else(not_found)?;
        let (Some(oldest), Some(latest)) = (t.oldest(), t.latest()) else {
            return Err(not_found());
        };
        let wanted = match keep {
            Retention::Latest(n) => latest.saturating_sub(n.max(1) as u64 - 1),
            Retention::After(s) => s.min(latest),
            _ => unreachable!(),
        }
        .max(oldest);
        let start = t
            .checkpoints
            .range(..=wanted)
            .rev()
            .find(|(_, c)| matches!(c.state, StateRecord::Full(_)))
            .map_or(oldest, |(s, _)| *s);
        t.checkpoints = t.checkpoints.split_off(&start);
        t.writes = t.writes.split_off(&(start, 0));
        Ok(PruneOutcome::new(start - oldest, start))
    }

    async fn list_threads(
        &self,
        filter: &ThreadFilter,
    ) -> Result<Vec<ThreadInfo>, CheckpointError> {
        let threads = self.threads.lock().unwrap();
        Ok(threads
            .iter()
            .filter(|(id, _)| filter.is_after_cursor(id))
            .filter_map(|(_, t)| t.info.clone())
            .filter(|i| filter.matches(i))
            .take(filter.limit)
            .collect())
    }

    async fn copy_thread(&self, from: &ThreadId, to: &ThreadId) -> Result<(), CheckpointError> {
        let mut threads = self.threads.lock().unwrap();
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
        for cp in copy.checkpoints.values_mut() {
            cp.thread_id = to.clone();
        }
        if let Some(info) = &mut copy.info {
            info.thread_id = to.clone();
        }
        threads.insert(to.clone(), copy);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_that_never_fences_fails_the_fencing_check() {
    let store = Arc::new(NoFence::default());
    let err = conformance::run(|| -> Arc<dyn Checkpointer> { store.clone() })
        .await
        .expect_err("a store without fencing must not conform");
    assert!(err.failed(Check::Fencing), "{err}");
    // Only fencing: the broken store is right about everything else, so the
    // failure pins down the one thing it gets wrong.
    let failed: Vec<Check> = err.failures.iter().map(|f| f.check).collect();
    assert_eq!(failed, [Check::Fencing], "{err}");
    let message = err.to_string();
    assert!(message.contains("fencing: "), "{message}");
    assert!(message.contains("expected Conflict"), "{message}");
}

/// A store that forwards to `inner` but for one planted fault, so the kit
/// must fail it on that check alone.
struct Faulty {
    inner: Box<dyn Checkpointer>,
    fault: Fault,
}

enum Fault {
    /// Fences, but checks and inserts in two steps with a pause between, so
    /// two concurrent appends of the same seq both pass the check.
    RacyFence,
    /// Right about everything but snapshots: `chain` starts at the thread's
    /// first full state instead of the last one before `seq`.
    ChainFromTheStart,
}

impl Faulty {
    fn racy_fence() -> Self {
        Self {
            inner: Box::new(NoFence::default()),
            fault: Fault::RacyFence,
        }
    }

    fn chain_from_the_start() -> Self {
        Self {
            inner: Box::new(MemoryCheckpointer::new()),
            fault: Fault::ChainFromTheStart,
        }
    }
}

#[async_trait]
impl Checkpointer for Faulty {
    async fn append(&self, checkpoint: Checkpoint) -> Result<(), CheckpointError> {
        if let Fault::RacyFence = self.fault {
            let latest = self.inner.get(&checkpoint.thread_id, None).await?;
            let expected = latest.map_or(0, |c| c.seq + 1);
            if checkpoint.seq != expected {
                return Err(CheckpointError::Conflict {
                    thread: checkpoint.thread_id,
                    seq: checkpoint.seq,
                    expected,
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.inner.append(checkpoint).await
    }

    async fn chain(&self, thread: &ThreadId, seq: u64) -> Result<Vec<Checkpoint>, CheckpointError> {
        let Fault::ChainFromTheStart = self.fault else {
            return self.inner.chain(thread, seq).await;
        };
        let mut all = self
            .inner
            .list(thread, Some(seq.saturating_add(1)), usize::MAX)
            .await?;
        all.reverse();
        let first_full = all
            .iter()
            .position(|c| matches!(c.state, StateRecord::Full(_)))
            .unwrap_or(0);
        Ok(all.split_off(first_full))
    }

    async fn get(
        &self,
        thread: &ThreadId,
        seq: Option<u64>,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        self.inner.get(thread, seq).await
    }

    async fn list(
        &self,
        thread: &ThreadId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Checkpoint>, CheckpointError> {
        self.inner.list(thread, before, limit).await
    }

    async fn put_write(
        &self,
        thread: &ThreadId,
        seq: u64,
        write: PendingWrite,
    ) -> Result<(), CheckpointError> {
        self.inner.put_write(thread, seq, write).await
    }

    async fn writes(
        &self,
        thread: &ThreadId,
        seq: u64,
    ) -> Result<Vec<PendingWrite>, CheckpointError> {
        self.inner.writes(thread, seq).await
    }

    async fn append_batch(
        &self,
        thread: &ThreadId,
        batch: CheckpointBatch,
    ) -> Result<(), CheckpointError> {
        self.inner.append_batch(thread, batch).await
    }

    async fn delete_thread(&self, thread: &ThreadId) -> Result<bool, CheckpointError> {
        self.inner.delete_thread(thread).await
    }

    async fn prune(
        &self,
        thread: &ThreadId,
        keep: Retention,
    ) -> Result<PruneOutcome, CheckpointError> {
        self.inner.prune(thread, keep).await
    }

    async fn list_threads(
        &self,
        filter: &ThreadFilter,
    ) -> Result<Vec<ThreadInfo>, CheckpointError> {
        self.inner.list_threads(filter).await
    }

    async fn copy_thread(&self, from: &ThreadId, to: &ThreadId) -> Result<(), CheckpointError> {
        self.inner.copy_thread(from, to).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_with_a_check_then_insert_race_fails_the_fencing_check() {
    let store = Arc::new(Faulty::racy_fence());
    let err = conformance::run(|| -> Arc<dyn Checkpointer> { store.clone() })
        .await
        .expect_err("a racy fence must not conform");
    let failed: Vec<Check> = err.failures.iter().map(|f| f.check).collect();
    assert_eq!(failed, [Check::Fencing], "{err}");
    assert!(err.to_string().contains("at once"), "{err}");
}

#[tokio::test]
async fn checks_run_one_at_a_time_too() {
    let store = Arc::new(NoFence::default());
    let open = || -> Arc<dyn Checkpointer> { store.clone() };
    conformance::run_check(Check::Chain, &open).await.unwrap();
    conformance::history(&open).await.unwrap();
    let failure = conformance::fencing(&open).await.unwrap_err();
    assert_eq!(failure.check, Check::Fencing);
    assert!(failure.to_string().starts_with("fencing: "), "{failure}");
}

#[tokio::test]
async fn sample_checkpoints_are_appendable() {
    let store = MemoryCheckpointer::new();
    let thread = conformance::unique_thread("sample");
    assert_ne!(thread, conformance::unique_thread("sample"));
    let cp = conformance::sample_checkpoint(&thread, 0, StateRecord::Full(serde_json::json!({})));
    store.append(cp.clone()).await.unwrap();
    assert_eq!(store.get(&thread, None).await.unwrap(), Some(cp));
}

#[tokio::test]
async fn a_store_whose_chain_ignores_snapshots_fails_the_snapshot_check() {
    let store = Arc::new(Faulty::chain_from_the_start());
    let open = || -> Arc<dyn Checkpointer> { store.clone() };
    let failure = conformance::chain_from_snapshot(&open).await.unwrap_err();
    assert_eq!(failure.check, Check::ChainFromSnapshot);
    assert!(failure.message.contains("chain(54)"), "{failure}");
    let err = conformance::run(open).await.unwrap_err();
    assert!(err.failed(Check::ChainFromSnapshot), "{err}");
}
