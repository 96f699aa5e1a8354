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
//! [`MemoryCheckpointer`] is the in-memory default.

pub mod conformance;
mod file;
mod memory;

pub use file::FileCheckpointer;
pub use memory::MemoryCheckpointer;

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::exec::StepRecord;
use crate::ids::{NodeId, RunId, ThreadId};
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    /// The answers to this task's `NodeContext::interrupt` calls so far, in
    /// call order: when the task runs again, its first calls return these
    /// and the next one asks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<serde_json::Value>,
    /// For a task released from a static `interrupt_before` gate: the
    /// approval's payload (the gate does not stop it again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    /// The backing store failed.
    #[error("checkpoint store failed: {0}")]
    Store(String),
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

/// Stores the checkpoints and pending writes of threads.
///
/// Implementations must be safe to share between tasks and processes
/// writing different threads, and must fence appends on one thread (see the
/// module docs). The [`conformance`] module checks all of it.
#[async_trait]
pub trait Checkpointer: Send + Sync {
    /// Appends `checkpoint` to its thread if its `seq` is exactly one more
    /// than the thread's latest (0 for a new thread); otherwise fails with
    /// [`CheckpointError::Conflict`] and stores nothing. Once this returns
    /// `Ok`, the checkpoint is as durable as the store promises.
    async fn append(&self, checkpoint: Checkpoint) -> Result<(), CheckpointError>;

    /// The checkpoint `seq` of `thread`, or its latest when `seq` is `None`.
    async fn get(
        &self,
        thread: &ThreadId,
        seq: Option<u64>,
    ) -> Result<Option<Checkpoint>, CheckpointError>;

    /// Up to `limit` checkpoints with `seq < before` (all when `before` is
    /// `None`), newest first.
    async fn list(
        &self,
        thread: &ThreadId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Checkpoint>, CheckpointError>;

    /// Saves the result of one task of the super-step that follows
    /// checkpoint `seq`. Writing the same task twice keeps the first write.
    async fn put_write(
        &self,
        thread: &ThreadId,
        seq: u64,
        write: PendingWrite,
    ) -> Result<(), CheckpointError>;

    /// The task results saved after checkpoint `seq`, by task position.
    async fn writes(
        &self,
        thread: &ThreadId,
        seq: u64,
    ) -> Result<Vec<PendingWrite>, CheckpointError>;

    /// Writes a whole batch for `thread` (see [`CheckpointBatch`]). The
    /// default appends the checkpoints one by one, then saves the writes;
    /// stores should write the batch as one record with one flush.
    async fn append_batch(
        &self,
        thread: &ThreadId,
        batch: CheckpointBatch,
    ) -> Result<(), CheckpointError> {
        for cp in batch.checkpoints {
            self.append(cp).await?;
        }
        for (seq, w) in batch.writes {
            self.put_write(thread, seq, w).await?;
        }
        Ok(())
    }

    /// The checkpoints needed to rebuild the state at `seq`: from the last
    /// one holding a full state up to `seq`, oldest first. The default walks
    /// parents with [`get`](Checkpointer::get); stores can answer with one
    /// range query.
    async fn chain(&self, thread: &ThreadId, seq: u64) -> Result<Vec<Checkpoint>, CheckpointError> {
        let mut out = Vec::new();
        let mut next = Some(seq);
        while let Some(s) = next {
            let cp = self
                .get(thread, Some(s))
                .await?
                .ok_or_else(|| CheckpointError::Corrupt {
                    thread: thread.clone(),
                    seq: s,
                    message: "missing from the thread's history".into(),
                })?;
            let full = matches!(cp.state, StateRecord::Full(_));
            next = if full { None } else { cp.parent_seq };
            out.push(cp);
            if !full && next.is_none() {
                return Err(CheckpointError::Corrupt {
                    thread: thread.clone(),
                    seq,
                    message: "no full state before this checkpoint".into(),
                });
            }
        }
        out.reverse();
        Ok(out)
    }
}

#[async_trait]
impl<C: Checkpointer + ?Sized> Checkpointer for std::sync::Arc<C> {
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
    async fn chain(&self, thread: &ThreadId, seq: u64) -> Result<Vec<Checkpoint>, CheckpointError> {
        (**self).chain(thread, seq).await
    }
    async fn append_batch(
        &self,
        thread: &ThreadId,
        batch: CheckpointBatch,
    ) -> Result<(), CheckpointError> {
        (**self).append_batch(thread, batch).await
    }
}
