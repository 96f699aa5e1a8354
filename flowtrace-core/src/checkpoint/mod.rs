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

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::exec::StepRecord;
use crate::ids::{NodeId, RunId, ThreadId};
use crate::trace::Timestamp;

/// The stored-format version written by this release.
pub const CHECKPOINT_FORMAT_VERSION: u32 = 1;

/// The state part of a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "value")]
pub enum StateRecord {
    /// The whole state (first checkpoint of a thread, forks, state edits).
    Full(serde_json::Value),
    /// The updates merged in this super-step, in merge order.
    Delta(Vec<serde_json::Value>),
}

/// A node to run, with its dispatch input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The node.
    pub node: NodeId,
    /// For dispatched instances: the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
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

/// A run waiting for a human.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interrupt {
    /// Identifies this interrupt; a resume must name it.
    pub id: String,
    /// The node.
    pub node: NodeId,
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

/// A human decision applied to an interrupt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// The interrupt decided.
    pub interrupt_id: String,
    /// The node.
    pub node: NodeId,
    /// Who decided (`deadline` when a default decision was applied).
    pub decided_by: String,
    /// When.
    pub decided_at: Timestamp,
    /// The decision: `approve`, `update`, `reject` or `escalate`.
    pub decision: String,
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
    /// Where the thread stands.
    pub status: ThreadStatus,
    /// The pending interrupt, when interrupted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupt: Option<Interrupt>,
    /// Human decisions applied when this checkpoint was written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<ApprovalRecord>,
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
    /// The backing store failed.
    #[error("checkpoint store failed: {0}")]
    Store(String),
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
}
