//! Checkpointers: the durable history of a run, per thread.
//!
//! A run with a [`Checkpointer`] and a [`ThreadId`] writes a [`Checkpoint`]
//! after every super-step. The first checkpoint of a thread holds the whole
//! state; every later one holds only the updates merged in its super-step
//! ([`StateRecord::Delta`]), so a write costs what changed, not the size of
//! the state. The state at any checkpoint is the last full state before it
//! with the later deltas re-applied through the state's reducers.
//!
//! Inside a super-step whose tasks run concurrently, each finished task's
//! result is saved as a [`PendingWrite`]; a resume after a crash replays those
//! results instead of running the tasks again.
//!
//! Appends are fenced: checkpoint `seq` is accepted only if the thread's
//! latest is `seq - 1` (or the thread is empty and `seq` is 0), so two
//! writers on one thread can never fork its history — the stale one gets
//! [`CheckpointError::Conflict`].
//!
//! Histories are managed with [`Checkpointer::prune`] (drop old
//! checkpoints, never what a resume needs), [`Checkpointer::delete_thread`],
//! [`Checkpointer::copy_thread`] and [`Checkpointer::list_threads`].
//!
//! [`MemoryCheckpointer`] is the in-memory default; [`FileCheckpointer`]
//! keeps threads in append-only files.

pub mod conformance;
mod encode;
mod file;
mod memory;

pub use file::FileCheckpointer;
pub use memory::MemoryCheckpointer;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, RunId, ThreadId};
use crate::trace::StepRecord;
use crate::trace::Timestamp;

/// The stored-format version written by this release.
///
/// Version 2 holds every pending interrupt (`interrupts`), per-task answers
/// and paused subgraphs in the frontier, the failing task's error, thread
/// metadata and the thread's step-id counter.
pub const CHECKPOINT_FORMAT_VERSION: u32 = 2;

/// The deepest nesting of arrays and objects a stored checkpoint may have,
/// counted over the whole record (the checkpoint's own fields take about
/// eight levels, a subgraph paused inside another takes about six more).
///
/// `serde_json` refuses to read anything deeper than 128 levels, so a store
/// that accepted deeper values would hold a thread that can be written but
/// never read back. Runs check their states, updates, inputs and payloads
/// against this limit before anything is saved
/// ([`CheckpointError::TooDeep`]), and stores refuse such checkpoints.
pub const MAX_RECORD_DEPTH: usize = 120;

/// The deepest nesting a single value saved in a checkpoint may have (a
/// state, an update, a dispatch input, an interrupt payload or answer):
/// [`MAX_RECORD_DEPTH`] minus room for the checkpoint's own fields and a few
/// levels of paused subgraphs.
pub const MAX_VALUE_DEPTH: usize = 96;

/// The nesting depth of `value`: 0 for a scalar, 1 for a flat array or
/// object, and so on. Iterative, so any depth is measured without
/// recursion.
pub fn value_depth(value: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack: Vec<(&serde_json::Value, usize)> = vec![(value, 0)];
    while let Some((v, d)) = stack.pop() {
        match v {
            serde_json::Value::Array(items) => {
                deepest = deepest.max(d + 1);
                stack.extend(items.iter().map(|i| (i, d + 1)));
            }
            serde_json::Value::Object(map) => {
                deepest = deepest.max(d + 1);
                stack.extend(map.values().map(|i| (i, d + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// Reads a field that is present as `Some`, even when it is `null` (serde
/// reads a present `null` as `None` otherwise, so `Some(Value::Null)` would
/// not survive a round trip).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// The state part of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "value")]
pub enum StateRecord {
    /// The whole state (first checkpoint of a thread, forks, state edits).
    Full(serde_json::Value),
    /// The updates merged in this super-step, in merge order.
    Delta(Vec<serde_json::Value>),
}

/// A node to run, with its dispatch input and what humans already told it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The node.
    pub node: NodeId,
    /// For dispatched instances: the input.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub input: Option<serde_json::Value>,
    /// The answers to this task's `NodeContext::interrupt` calls so far, in
    /// call order: when the task runs again, its first calls return these
    /// and the next one asks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<serde_json::Value>,
    /// For a task released from a static `interrupt_before` gate: the
    /// approval's payload (the gate does not stop it again).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub approved: Option<serde_json::Value>,
    /// For a subgraph task that paused inside its subgraph: where the
    /// subgraph stands, so resuming continues inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subgraph: Option<Box<SubgraphState>>,
}

impl TaskSpec {
    /// A task of `node` with an optional dispatch input.
    pub fn new(node: impl Into<NodeId>, input: Option<serde_json::Value>) -> Self {
        Self {
            node: node.into(),
            input,
            answers: Vec::new(),
            approved: None,
            subgraph: None,
        }
    }
}

/// A subgraph paused inside a parent task (an interrupt inside it, or a
/// static gate declared on it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubgraphState {
    /// The subgraph's whole state.
    pub state: serde_json::Value,
    /// Super-steps the subgraph completed.
    pub step: u64,
    /// Its tasks to run next (with their answers, approvals and nested
    /// subgraphs).
    pub frontier: Vec<TaskSpec>,
    /// Its joins waiting for more predecessors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joins: Vec<JoinState>,
    /// Results of its tasks that finished in the paused super-step, replayed
    /// instead of run again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writes: Vec<PendingWrite>,
}

/// A join that some, but not all, of its predecessors have reached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JoinState {
    /// The join node.
    pub node: NodeId,
    /// Predecessors that finished or were skipped.
    pub resolved: u32,
    /// Predecessors that finished and chose it.
    pub fired: u32,
    /// Dispatch inputs collected so far.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<serde_json::Value>,
}

/// When a static interrupt stops the run, relative to its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterruptWhen {
    /// Before the node runs.
    Before,
    /// After the node ran.
    After,
    /// From inside the node (`NodeContext::interrupt`).
    During,
}

/// A question waiting for a human.
///
/// Ids are unique within a thread: `{thread}:{super-step}:{node}` for a
/// static gate; `{thread}:{super-step}:{node}.{task}.{call}` for the
/// `call`-th `NodeContext::interrupt` of task position `task`; inside a
/// subgraph the parent's part comes first, then `/` and the subgraph's part
/// (`t:3:review.0/1:approve.0.0`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interrupt {
    /// Identifies this interrupt; a decision must name it.
    pub id: String,
    /// The node (inside its subgraph when `path` is not empty).
    pub node: NodeId,
    /// The subgraph nodes leading to `node`, outermost first (empty at the
    /// top level): a decision's records name the whole path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<NodeId>,
    /// The task positions along `path` (one per path entry), then the
    /// node's own task position (for `during`; for static gates the first
    /// task of the node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<u32>,
    /// For `during`: which `interrupt` call of the task this is (0 for the
    /// first).
    #[serde(default)]
    pub call: u32,
    /// Before, after or during the node.
    pub when: InterruptWhen,
    /// What the human is asked (the node's payload, or null).
    pub payload: serde_json::Value,
    /// When it was raised.
    pub created_at: Timestamp,
    /// After this instant, whoever resumes the thread without a decision
    /// applies [`on_timeout`](Self::on_timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    /// The decision applied once the deadline has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<DefaultDecision>,
}

/// What happens to an interrupt nobody decided before its deadline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DefaultDecision {
    /// Approve with this payload.
    Approve(serde_json::Value),
    /// Reject: the interrupted node does not run and the run ends.
    Reject,
    /// Escalate: skip the interrupted node and continue at this node.
    Escalate(NodeId),
}

impl Interrupt {
    /// The node with its subgraph path, `parent → child → node`.
    pub fn qualified_node(&self) -> String {
        let mut out = String::new();
        for p in &self.path {
            out.push_str(p.as_str());
            out.push_str(" → ");
        }
        out.push_str(self.node.as_str());
        out
    }
}

/// The kind of a human decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DecisionKind {
    /// Continue (a node's `interrupt` call returns the payload).
    Approve,
    /// Edit the state, then continue.
    Update,
    /// Do not run the interrupted node.
    Reject,
    /// Skip the interrupted node and continue elsewhere.
    Escalate,
}

impl DecisionKind {
    /// `approve`, `update`, `reject` or `escalate`.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Approve => "approve",
            DecisionKind::Update => "update",
            DecisionKind::Reject => "reject",
            DecisionKind::Escalate => "escalate",
        }
    }
}

impl std::fmt::Display for DecisionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A human decision applied to an interrupt (or a state edit made with
/// `update_state`, whose `interrupt_id` is empty).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// The interrupt decided.
    pub interrupt_id: String,
    /// The node.
    pub node: NodeId,
    /// The subgraph nodes leading to `node`, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<NodeId>,
    /// Who decided (`deadline` when a default decision was applied).
    pub decided_by: String,
    /// When.
    pub decided_at: Timestamp,
    /// The decision.
    pub decision: DecisionKind,
    /// The decision's payload.
    pub payload: serde_json::Value,
    /// The checkpoint it applied to.
    pub checkpoint_seq: u64,
}

/// Where a thread stands after a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ThreadStatus {
    /// More super-steps follow.
    Running,
    /// Waiting for a human.
    Interrupted,
    /// Stopped by a halt request.
    Halted,
    /// Finished successfully.
    Completed,
    /// Ended by an error.
    Failed,
}

/// One checkpoint of a thread.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The thread.
    pub thread_id: ThreadId,
    /// Position in the thread, from 0.
    pub seq: u64,
    /// The checkpoint this one follows (`None` for the first).
    pub parent_seq: Option<u64>,
    /// For the first checkpoint of a fork: the thread and checkpoint it was
    /// forked from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<(ThreadId, u64)>,
    /// The run that wrote it.
    pub run_id: RunId,
    /// Super-steps completed in the thread when it was written.
    pub step: u64,
    /// The nodes that ran in that super-step.
    pub nodes: Vec<NodeId>,
    /// When it was written.
    pub created_at: Timestamp,
    /// The stored-format version.
    pub format_version: u32,
    /// The state (full, or this super-step's updates).
    pub state: StateRecord,
    /// The tasks to run next.
    pub frontier: Vec<TaskSpec>,
    /// Joins waiting for more predecessors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joins: Vec<JoinState>,
    /// Node executions in the thread so far.
    pub node_executions: u64,
    /// The steps of this super-step (for run summaries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
    /// Step ids issued in the thread so far (the next step is numbered
    /// after this), so a resumed run numbers its steps without reading the
    /// thread's history.
    #[serde(default)]
    pub step_ids: u64,
    /// Where the thread stands.
    pub status: ThreadStatus,
    /// Every question waiting for a human, when interrupted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interrupts: Vec<Interrupt>,
    /// Human decisions applied when this checkpoint was written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<ApprovalRecord>,
    /// For a `failed` checkpoint: the task that failed and why. Resuming
    /// runs only that task again (its finished siblings are replayed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    /// The thread's user metadata (tenant, user, conversation, ...), for
    /// [`Checkpointer::list_threads`] filters. Written with the thread's
    /// first checkpoint and whenever a run changes it; a thread's metadata
    /// is that of its latest checkpoint that has any.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// The failure stored with a `failed` checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskError {
    /// The node whose task failed (empty path and no task when the run
    /// failed between steps, for example on a deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
    /// The task's position in the super-step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<u32>,
    /// The error's kind (`Error::kind`).
    pub kind: String,
    /// The error's message.
    pub message: String,
}

impl Checkpoint {
    /// Fails with [`CheckpointError::UnsupportedVersion`] unless the
    /// checkpoint is in this release's format.
    pub fn check_format_version(&self) -> Result<(), CheckpointError> {
        if self.format_version == CHECKPOINT_FORMAT_VERSION {
            Ok(())
        } else {
            Err(CheckpointError::UnsupportedVersion {
                thread: self.thread_id.clone(),
                found: self.format_version,
                supported: CHECKPOINT_FORMAT_VERSION,
            })
        }
    }
}

/// The result of one task of an unfinished super-step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingWrite {
    /// The task's position in the super-step's frontier.
    pub task: u32,
    /// The task's node.
    pub node: NodeId,
    /// Its update, serialized.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub update: Option<serde_json::Value>,
    /// Its dispatches (target, input).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dispatches: Vec<(NodeId, serde_json::Value)>,
    /// Its step record.
    pub step: StepRecord,
}

/// A checkpointer failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Another writer appended to the thread first (fencing).
    #[error(
        "thread {thread:?}: checkpoint {seq} rejected, the thread's next checkpoint is {expected} (another writer got there first)"
    )]
    Conflict {
        /// The thread.
        thread: ThreadId,
        /// The checkpoint that was written.
        seq: u64,
        /// The checkpoint number the store expected.
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
    /// A checkpoint could not be (de)serialized.
    #[error("thread {thread:?}: checkpoint {seq} is not valid: {message}")]
    Corrupt {
        /// The thread.
        thread: ThreadId,
        /// The checkpoint.
        seq: u64,
        /// What is wrong.
        message: String,
    },
    /// A checkpoint nests deeper than [`MAX_RECORD_DEPTH`]: it could be
    /// written but never read back, so it is refused before anything is
    /// saved.
    #[error(
        "thread {thread:?}: checkpoint {seq} nests {depth} levels deep, over the limit of {limit} (MAX_RECORD_DEPTH){}",
        .node.as_ref().map(|n| format!("; the value came from node {n:?}")).unwrap_or_default()
    )]
    TooDeep {
        /// The thread.
        thread: ThreadId,
        /// The checkpoint.
        seq: u64,
        /// The node whose update, input or payload is too deep, when known.
        node: Option<NodeId>,
        /// The depth found.
        depth: usize,
        /// The limit.
        limit: usize,
    },
    /// The checkpoint asked for was removed by [`Checkpointer::prune`].
    #[error("thread {thread:?}: checkpoint {seq} was pruned (the oldest kept is {oldest})")]
    Pruned {
        /// The thread.
        thread: ThreadId,
        /// The checkpoint asked for.
        seq: u64,
        /// The thread's oldest remaining checkpoint.
        oldest: u64,
    },
    /// The thread has no checkpoint at all.
    #[error("thread {thread:?} has no checkpoint")]
    ThreadNotFound {
        /// The thread.
        thread: ThreadId,
    },
    /// The thread already has checkpoints (a copy's target must have none).
    #[error("thread {thread:?} already has checkpoints")]
    ThreadExists {
        /// The thread.
        thread: ThreadId,
    },
    /// The thread has checkpoints, but not this one: it is after the
    /// latest.
    #[error("thread {thread:?} has no checkpoint {seq} (its latest is {latest})")]
    CheckpointNotFound {
        /// The thread.
        thread: ThreadId,
        /// The checkpoint asked for.
        seq: u64,
        /// The thread's latest checkpoint.
        latest: u64,
    },
    /// A [`CheckpointBatch`] breaks its rules (checkpoints of another
    /// thread, `seq`s not consecutive, a write for a checkpoint that is
    /// neither in the batch nor the thread's latest). Nothing was stored.
    #[error("thread {thread:?}: batch refused: {reason}")]
    InvalidBatch {
        /// The thread.
        thread: ThreadId,
        /// What is wrong.
        reason: String,
    },
    /// A file operation of the store failed.
    #[error("{operation} {}", .path.display())]
    Io {
        /// What the store was doing (`cannot write checkpoint log`, ...).
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The file at a store's path is not one this store wrote (another
    /// program's file, a symbolic link, a device): it is neither read nor
    /// written.
    #[error("{} is not a checkpoint log this store wrote ({reason}); refusing to read or write it", .path.display())]
    ForeignFile {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// The store cannot work as configured or called (no Tokio runtime, a
    /// setting out of range).
    #[error("checkpoint store misconfigured: {message}")]
    Misconfigured {
        /// What is wrong.
        message: String,
    },
    /// The backing store (a database, a remote service, a background task)
    /// failed; the driver's error is the [`source`](std::error::Error::source).
    #[error("checkpoint store failed: {message}")]
    Backend {
        /// What the store was doing.
        message: String,
        /// The driver's error, when there is one.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
}

/// What kind of failure a [`CheckpointError`] is, for callers that branch
/// on it (retry a conflict elsewhere, report corruption, page an operator
/// on I/O).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CheckpointErrorKind {
    /// The thread or checkpoint does not exist (or was pruned).
    NotFound,
    /// Another writer got there first, or the target already exists.
    Conflict,
    /// The store is used or configured wrongly; the request is invalid.
    Misconfigured,
    /// Stored data cannot be read: invalid, an unknown format, or not ours.
    Corrupt,
    /// A value is over a documented limit and was refused before storing.
    LimitExceeded,
    /// A file operation failed.
    Io,
    /// The backing database or service failed.
    Backend,
}

impl CheckpointError {
    /// The kind of failure.
    pub fn kind(&self) -> CheckpointErrorKind {
        use CheckpointErrorKind as K;
        match self {
            CheckpointError::Conflict { .. } | CheckpointError::ThreadExists { .. } => K::Conflict,
            CheckpointError::UnsupportedVersion { .. }
            | CheckpointError::Corrupt { .. }
            | CheckpointError::ForeignFile { .. } => K::Corrupt,
            CheckpointError::TooDeep { .. } => K::LimitExceeded,
            CheckpointError::Pruned { .. }
            | CheckpointError::ThreadNotFound { .. }
            | CheckpointError::CheckpointNotFound { .. } => K::NotFound,
            CheckpointError::InvalidBatch { .. } | CheckpointError::Misconfigured { .. } => {
                K::Misconfigured
            }
            CheckpointError::Io { .. } => K::Io,
            CheckpointError::Backend { .. } => K::Backend,
        }
    }

    /// A backend failure with the driver's error as its cause.
    pub fn backend<E>(message: impl Into<String>, source: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        CheckpointError::Backend {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }
}

impl Checkpoint {
    /// Fails with [`CheckpointError::TooDeep`] when the checkpoint, as
    /// stored, would nest deeper than [`MAX_RECORD_DEPTH`].
    pub fn check_depth(&self) -> Result<(), CheckpointError> {
        let value = serde_json::to_value(self).map_err(|e| CheckpointError::Corrupt {
            thread: self.thread_id.clone(),
            seq: self.seq,
            message: format!("cannot be serialized: {e}"),
        })?;
        let depth = value_depth(&value);
        if depth > MAX_RECORD_DEPTH {
            return Err(CheckpointError::TooDeep {
                thread: self.thread_id.clone(),
                seq: self.seq,
                node: None,
                depth,
                limit: MAX_RECORD_DEPTH,
            });
        }
        Ok(())
    }
}

/// Several checkpoints and pending writes of one thread written as one
/// record: what `Durability::Exit` writes when a run stops, and what group
/// commit uses. All or nothing: if the first checkpoint's `seq` is not the
/// thread's next, nothing is stored ([`CheckpointError::Conflict`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckpointBatch {
    /// Checkpoints to append, consecutive `seq`s, oldest first.
    pub checkpoints: Vec<Checkpoint>,
    /// Task results to save: `(seq, write)` for the super-step after
    /// checkpoint `seq` (one of the batch's checkpoints or the thread's
    /// latest).
    pub writes: Vec<(u64, PendingWrite)>,
}

impl CheckpointBatch {
    /// Checks the batch against the rules of [`Checkpointer::append_batch`]
    /// for `thread`, whose latest checkpoint is `latest` (`None` for an
    /// empty thread): every checkpoint belongs to `thread`, is in this
    /// release's format, and the `seq`s are consecutive from `latest + 1`
    /// (0 for an empty thread); every write is for one of the batch's
    /// checkpoints or for `latest`. Depth is not checked here (see
    /// [`Checkpoint::check_depth`]).
    ///
    /// # Errors
    ///
    /// [`CheckpointError::Conflict`] if the first `seq` is not the thread's
    /// next, [`CheckpointError::UnsupportedVersion`], or
    /// [`CheckpointError::InvalidBatch`] for anything else.
    pub fn check(&self, thread: &ThreadId, latest: Option<u64>) -> Result<(), CheckpointError> {
        let invalid = |reason: String| CheckpointError::InvalidBatch {
            thread: thread.clone(),
            reason,
        };
        let next = latest.map_or(0, |l| l.saturating_add(1));
        let mut expected = next;
        for (i, cp) in self.checkpoints.iter().enumerate() {
            if &cp.thread_id != thread {
                return Err(invalid(format!(
                    "checkpoint {} belongs to thread {:?}",
                    cp.seq, cp.thread_id
                )));
            }
            cp.check_format_version()?;
            if cp.seq != expected {
                return Err(if i == 0 {
                    CheckpointError::Conflict {
                        thread: thread.clone(),
                        seq: cp.seq,
                        expected,
                    }
                } else {
                    invalid(format!(
                        "checkpoint {} follows {} (seqs must be consecutive)",
                        cp.seq,
                        expected.saturating_sub(1)
                    ))
                });
            }
            expected = expected.saturating_add(1);
        }
        for (seq, w) in &self.writes {
            let in_batch = (next..expected).contains(seq);
            if !in_batch && Some(*seq) != latest {
                return Err(invalid(format!(
                    "write of task {} is for checkpoint {seq}, which is neither in the batch nor the thread's latest",
                    w.task
                )));
            }
        }
        Ok(())
    }
}

/// What [`Checkpointer::prune`] keeps of a thread, on top of what a resume
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

/// What [`Checkpointer::prune`] did.
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

/// Which threads [`Checkpointer::list_threads`] returns.
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

/// A thread, as [`Checkpointer::list_threads`] reports it.
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

/// Stores the checkpoints and pending writes of threads.
///
/// Implementations must be safe to share between tasks and processes
/// writing different threads, and must fence appends on one thread (see the
/// module docs). The [`conformance`] module checks all of it.
///
/// # The contract
///
/// * **Fencing.** A checkpoint is accepted only as its thread's next:
///   `seq` is the latest's plus one (0 for an empty thread). Pruning does
///   not change this: the next `seq` is always the latest's plus one.
/// * **Depth.** Nothing nesting deeper than [`MAX_RECORD_DEPTH`] is stored:
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
    /// version other than [`CHECKPOINT_FORMAT_VERSION`]
    /// ([`CheckpointError::UnsupportedVersion`]) and a checkpoint nesting
    /// deeper than [`MAX_RECORD_DEPTH`] ([`CheckpointError::TooDeep`]),
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
    /// Refuses a write nesting deeper than [`MAX_RECORD_DEPTH`]
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
