//! Durable execution: checkpoint writing modes, human decisions, halting,
//! and rebuilding a run from a thread's history.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize as _, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::checkpoint::{
    Checkpoint, CheckpointBatch, CheckpointError, Checkpointer, PendingWrite, StateRecord,
};
use crate::error::Error;
use crate::ids::{NodeId, ThreadId};
use crate::state::State;

/// When checkpoints are written, as LangGraph users know it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// Each checkpoint is written before the next super-step starts (the
    /// default): a crash loses at most the super-step in progress. The
    /// run's sinks are flushed before each checkpoint is written, so every
    /// committed step's events have reached them.
    #[default]
    Sync,
    /// Checkpoints are written in order by a background task while the run
    /// goes on; the run waits for them before it reports its result.
    Async,
    /// Checkpoints are kept in memory and written when the run stops
    /// (finished, failed, interrupted or halted): fastest, but a crash loses
    /// the run's progress.
    Exit,
}

/// A source of halt requests (a kill switch), checked at every safe point.
///
/// [`HaltSwitch`] is the in-process implementation; a store can implement
/// this from a notification channel (for example PostgreSQL LISTEN/NOTIFY).
pub trait HaltSignal: Send + Sync {
    /// Whether someone asked the run to halt.
    fn halt_requested(&self) -> bool;
}

/// An in-process kill switch: clone it, give one copy to the run
/// ([`RunConfig::halt_signal`](crate::RunConfig::halt_signal)) and call
/// [`halt`](HaltSwitch::halt) on another from any task.
#[derive(Clone, Debug, Default)]
pub struct HaltSwitch {
    flag: Arc<AtomicBool>,
}

impl HaltSwitch {
    /// A switch that is off.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every run using this switch to halt at its next safe point.
    pub fn halt(&self) {
        self.flag.store(true, Ordering::Release);
    }
}

impl HaltSignal for HaltSwitch {
    fn halt_requested(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }
}

/// What the human decided about an interrupt.
#[derive(Debug)]
#[non_exhaustive]
pub enum Decision<U> {
    /// Continue. A node that called `NodeContext::interrupt` receives the payload.
    Approve(serde_json::Value),
    /// Apply a state update (through the reducers), then continue.
    Update(U),
    /// Do not run the interrupted node (or, for an interrupt after a node, its
    /// successors): go to `goto` instead, or end the run when `None`.
    Reject {
        /// Where to go instead.
        goto: Option<NodeId>,
    },
    /// Hand the decision to someone else: skip the interrupted node (or, for
    /// an interrupt after a node, its successors) and run `to`.
    Escalate {
        /// The escalation node.
        to: NodeId,
    },
}

/// A decision about a thread's pending interrupt, used to resume it.
///
/// ```
/// use flowtrace_core::exec::Command;
/// use flowtrace_core::JsonState;
/// let cmd: Command<<JsonState as flowtrace_core::State>::Update> =
///     Command::approve("billing:3:billing_approval", serde_json::json!({"limit": 500})).by("alice@example.com");
/// # let _ = cmd;
/// ```
#[derive(Debug)]
#[must_use = "a Command does nothing until a run resumes with it"]
pub struct Command<U> {
    pub(crate) interrupt_id: String,
    pub(crate) decision: Decision<U>,
    pub(crate) by: String,
}

impl<U> Command<U> {
    fn new(interrupt_id: impl Into<String>, decision: Decision<U>) -> Self {
        Self {
            interrupt_id: interrupt_id.into(),
            decision,
            by: "unknown".into(),
        }
    }

    /// Approves interrupt `interrupt_id` with `payload`.
    pub fn approve(interrupt_id: impl Into<String>, payload: serde_json::Value) -> Self {
        Self::new(interrupt_id, Decision::Approve(payload))
    }

    /// Edits the state with `update`, then continues.
    pub fn update(interrupt_id: impl Into<String>, update: U) -> Self {
        Self::new(interrupt_id, Decision::Update(update))
    }

    /// Rejects: ends the run without running the interrupted node.
    pub fn reject(interrupt_id: impl Into<String>) -> Self {
        Self::new(interrupt_id, Decision::Reject { goto: None })
    }

    /// Rejects and continues at `node` instead.
    pub fn reject_to(interrupt_id: impl Into<String>, node: impl Into<NodeId>) -> Self {
        Self::new(
            interrupt_id,
            Decision::Reject {
                goto: Some(node.into()),
            },
        )
    }

    /// Escalates to `node` (for example a supervisor's review).
    pub fn escalate(interrupt_id: impl Into<String>, node: impl Into<NodeId>) -> Self {
        Self::new(interrupt_id, Decision::Escalate { to: node.into() })
    }

    /// Records who decided (kept in the approval record).
    pub fn by(mut self, who: impl Into<String>) -> Self {
        self.by = who.into();
        self
    }

    /// The interrupt it decides.
    pub fn interrupt_id(&self) -> &str {
        &self.interrupt_id
    }
}

/// When a checkpoint holds the whole state instead of the super-step's
/// updates, so resuming reads the latest snapshot plus a short tail of
/// deltas however long the thread is.
///
/// A snapshot is written once `every` checkpoints followed the last full
/// state, or once the deltas written since then pass `max_delta_bytes`
/// (estimated from their JSON), whichever comes first.
///
/// ```
/// use flowtrace_core::exec::SnapshotPolicy;
/// let policy = SnapshotPolicy::default().every(32).max_delta_bytes(256 * 1024);
/// assert_eq!(policy.get_every(), 32);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a SnapshotPolicy does nothing until it is passed to `RunConfig::snapshots`"]
pub struct SnapshotPolicy {
    every: u32,
    max_delta_bytes: usize,
}

impl Default for SnapshotPolicy {
    /// Every 64 checkpoints or 1 MiB of deltas.
    fn default() -> Self {
        Self {
            every: 64,
            max_delta_bytes: 1 << 20,
        }
    }
}

impl SnapshotPolicy {
    /// A snapshot after at most `n` delta checkpoints (0 is treated as 1:
    /// every checkpoint holds the full state).
    pub fn every(mut self, n: u32) -> Self {
        self.every = n.max(1);
        self
    }

    /// A snapshot once the deltas since the last one pass `bytes`.
    pub fn max_delta_bytes(mut self, bytes: usize) -> Self {
        self.max_delta_bytes = bytes;
        self
    }

    /// The count limit.
    pub fn get_every(&self) -> u32 {
        self.every
    }

    /// The size limit.
    pub fn get_max_delta_bytes(&self) -> usize {
        self.max_delta_bytes
    }
}

/// How many writes the `Async` durability mode queues before the run waits
/// for the store (back-pressure instead of unbounded growth).
pub const ASYNC_WRITE_QUEUE: usize = 64;

enum WriteOp {
    Append(Box<Checkpoint>),
    Batch(CheckpointBatch),
}

/// The queue and task of the async-mode writer.
type BackgroundWriter = (
    mpsc::Sender<WriteOp>,
    JoinHandle<Result<(), CheckpointError>>,
);

/// Writes a thread's checkpoints according to the durability mode.
pub(crate) struct Durable {
    pub(crate) store: Arc<dyn Checkpointer>,
    pub(crate) thread: ThreadId,
    /// The latest checkpoint written (or queued), if any.
    pub(crate) seq: Option<u64>,
    mode: Durability,
    /// Exit mode: everything written when the run stops, as one batch.
    buffered: CheckpointBatch,
    background: Option<BackgroundWriter>,
    snapshots: SnapshotPolicy,
    /// Delta checkpoints since the last full state, and their estimated size.
    since_full: u32,
    bytes_since_full: usize,
}

impl fmt::Debug for Durable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Durable")
            .field("thread", &self.thread)
            .field("seq", &self.seq)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Durable {
    pub(crate) fn new(
        store: Arc<dyn Checkpointer>,
        thread: ThreadId,
        mode: Durability,
        snapshots: SnapshotPolicy,
    ) -> Self {
        Self {
            store,
            thread,
            seq: None,
            mode,
            buffered: CheckpointBatch::default(),
            background: None,
            snapshots,
            since_full: 0,
            bytes_since_full: 0,
        }
    }

    /// Whether each checkpoint is written before the run goes on.
    pub(crate) fn is_sync(&self) -> bool {
        self.mode == Durability::Sync
    }

    /// Whether pending writes are saved as tasks finish (not in exit mode).
    pub(crate) fn writes_now(&self) -> bool {
        self.mode != Durability::Exit && self.seq.is_some()
    }

    /// The seq the next checkpoint gets.
    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.map_or(0, |s| s + 1)
    }

    /// Positions the writer after a thread's latest checkpoint, `deltas`
    /// checkpoints after its last full state.
    pub(crate) fn resume_at(&mut self, seq: u64, deltas: u32) {
        self.seq = Some(seq);
        self.since_full = deltas;
        self.bytes_since_full = 0;
    }

    /// Whether the next checkpoint should hold the full state, given the
    /// deltas it would hold.
    pub(crate) fn snapshot_due(&self, deltas: &[serde_json::Value]) -> bool {
        self.since_full + 1 >= self.snapshots.every
            || self.bytes_since_full + deltas.iter().map(json_size).sum::<usize>()
                > self.snapshots.max_delta_bytes
    }

    async fn submit(&mut self, op: WriteOp) -> Result<(), Error> {
        match self.mode {
            Durability::Sync => apply(self.store.as_ref(), &self.thread, op)
                .await
                .map_err(Error::from),
            Durability::Exit => {
                match op {
                    WriteOp::Append(cp) => self.buffered.checkpoints.push(*cp),
                    WriteOp::Batch(b) => {
                        self.buffered.checkpoints.extend(b.checkpoints);
                        self.buffered.writes.extend(b.writes);
                    }
                }
                Ok(())
            }
            Durability::Async => {
                if self.background.is_none() {
                    let (tx, mut rx) = mpsc::channel::<WriteOp>(ASYNC_WRITE_QUEUE);
                    let store = self.store.clone();
                    let thread = self.thread.clone();
                    let task = tokio::spawn(async move {
                        while let Some(op) = rx.recv().await {
                            apply(store.as_ref(), &thread, op).await?;
                        }
                        Ok(())
                    });
                    self.background = Some((tx, task));
                }
                if let Some((tx, _)) = &self.background
                    && tx.send(op).await.is_err()
                {
                    // The writer stopped on an error; `finish` reports it.
                    return self.finish().await;
                }
                Ok(())
            }
        }
    }

    /// Appends the next checkpoint.
    pub(crate) async fn append(&mut self, checkpoint: Checkpoint) -> Result<(), Error> {
        self.seq = Some(checkpoint.seq);
        match &checkpoint.state {
            StateRecord::Full(_) => {
                self.since_full = 0;
                self.bytes_since_full = 0;
            }
            StateRecord::Delta(d) => {
                self.since_full += 1;
                self.bytes_since_full += d.iter().map(json_size).sum::<usize>();
            }
        }
        self.submit(WriteOp::Append(Box::new(checkpoint))).await
    }

    /// Appends the next checkpoint together with the saved task results of
    /// the super-step that follows it, as one batch.
    pub(crate) async fn commit(
        &mut self,
        checkpoint: Checkpoint,
        writes: Vec<PendingWrite>,
    ) -> Result<(), Error> {
        if writes.is_empty() {
            return self.append(checkpoint).await;
        }
        let seq = checkpoint.seq;
        self.seq = Some(seq);
        if let StateRecord::Delta(d) = &checkpoint.state {
            self.since_full += 1;
            self.bytes_since_full += d.iter().map(json_size).sum::<usize>();
        }
        let batch = CheckpointBatch {
            checkpoints: vec![checkpoint],
            writes: writes.into_iter().map(|w| (seq, w)).collect(),
        };
        self.submit(WriteOp::Batch(batch)).await
    }

    /// Writes everything still buffered or queued. Called when the run stops.
    pub(crate) async fn finish(&mut self) -> Result<(), Error> {
        let buffered = std::mem::take(&mut self.buffered);
        if !buffered.checkpoints.is_empty() || !buffered.writes.is_empty() {
            // One record, one flush, however many super-steps ran.
            self.store.append_batch(&self.thread, buffered).await?;
        }
        if let Some((tx, task)) = self.background.take() {
            drop(tx);
            match task.await {
                Ok(r) => r?,
                Err(e) => {
                    return Err(Error::aborted(format!(
                        "the background checkpoint writer of thread {:?} stopped: {e}",
                        self.thread
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The approximate JSON size of `value`, for the snapshot policy.
fn json_size(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Null | serde_json::Value::Bool(_) => 5,
        serde_json::Value::Number(_) => 12,
        serde_json::Value::String(s) => s.len() + 2,
        serde_json::Value::Array(a) => 2 + a.iter().map(|v| json_size(v) + 1).sum::<usize>(),
        serde_json::Value::Object(m) => {
            2 + m
                .iter()
                .map(|(k, v)| k.len() + 4 + json_size(v))
                .sum::<usize>()
        }
    }
}

async fn apply(
    store: &dyn Checkpointer,
    thread: &ThreadId,
    op: WriteOp,
) -> Result<(), CheckpointError> {
    match op {
        WriteOp::Append(cp) => store.append(*cp).await,
        WriteOp::Batch(b) => store.append_batch(thread, b).await,
    }
}

/// Serializes a state or update for a checkpoint, refusing values nested
/// deeper than [`MAX_VALUE_DEPTH`](crate::checkpoint::MAX_VALUE_DEPTH).
pub(crate) fn to_json<T: Serialize>(
    value: &T,
    node: Option<&NodeId>,
) -> Result<serde_json::Value, Error> {
    let v = serde_json::to_value(value).map_err(|e| Error::StateSerialization {
        node: node.cloned(),
        message: e.to_string(),
    })?;
    check_value_depth(&v, node)?;
    Ok(v)
}

/// Refuses a value nested deeper than
/// [`MAX_VALUE_DEPTH`](crate::checkpoint::MAX_VALUE_DEPTH).
pub(crate) fn check_value_depth(
    value: &serde_json::Value,
    node: Option<&NodeId>,
) -> Result<(), Error> {
    // Scalars and flat values (the common case) need no walk.
    let nested = match value {
        serde_json::Value::Array(a) => a.iter().any(|v| v.is_array() || v.is_object()),
        serde_json::Value::Object(m) => m.values().any(|v| v.is_array() || v.is_object()),
        _ => false,
    };
    if !nested {
        return Ok(());
    }
    let depth = crate::checkpoint::value_depth(value);
    if depth > crate::checkpoint::MAX_VALUE_DEPTH {
        return Err(Error::ValueTooDeep {
            node: node.cloned(),
            depth,
            limit: crate::checkpoint::MAX_VALUE_DEPTH,
        });
    }
    Ok(())
}

/// Rebuilds the state from a chain of checkpoints (a full state, then deltas).
pub(crate) fn rebuild<S: State>(thread: &ThreadId, chain: &[Checkpoint]) -> Result<S, Error> {
    let mut state: Option<S> = None;
    for cp in chain {
        apply_record(thread, &mut state, cp)?;
    }
    state.ok_or_else(|| {
        Error::Checkpoint(CheckpointError::Corrupt {
            thread: thread.clone(),
            seq: chain.last().map_or(0, |c| c.seq),
            message: "no full state in the thread's history".into(),
        })
    })
}

/// Applies one checkpoint's state record: a full state replaces `state`,
/// deltas go through the reducers.
pub(crate) fn apply_record<S: State>(
    thread: &ThreadId,
    state: &mut Option<S>,
    cp: &Checkpoint,
) -> Result<(), Error> {
    match &cp.state {
        StateRecord::Full(v) => {
            *state = Some(S::deserialize(v).map_err(|e| corrupt(thread, cp.seq, e))?);
        }
        StateRecord::Delta(updates) => {
            let s = state.as_mut().ok_or_else(|| {
                Error::Checkpoint(CheckpointError::Corrupt {
                    thread: thread.clone(),
                    seq: cp.seq,
                    message: "delta without a full state before it".into(),
                })
            })?;
            for u in updates {
                let update = S::Update::deserialize(u).map_err(|e| corrupt(thread, cp.seq, e))?;
                s.apply(update);
            }
        }
    }
    Ok(())
}

fn corrupt(thread: &ThreadId, seq: u64, e: serde_json::Error) -> Error {
    Error::Checkpoint(CheckpointError::Corrupt {
        thread: thread.clone(),
        seq,
        message: format!("state does not match this graph's state type: {e}"),
    })
}
