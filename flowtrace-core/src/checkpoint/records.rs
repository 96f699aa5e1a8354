//! The records a checkpointer stores: checkpoints, their state and frontier,
//! interrupts and decisions, pending writes and batches.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::CheckpointError;
use crate::ids::{NodeId, RunId, ThreadId};
use crate::trace::StepRecord;
use crate::trace::Timestamp;

/// The stored-format version written by this release.
///
/// Version 2 holds every pending interrupt (`interrupts`), per-task answers
/// and paused subgraphs in the frontier, the failing task's error, thread
/// metadata and the thread's step-id counter.
pub const CHECKPOINT_FORMAT_VERSION: u32 = 2;

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
#[non_exhaustive]
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
#[non_exhaustive]
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
#[non_exhaustive]
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
#[non_exhaustive]
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
    /// [`Checkpointer::list_threads`](super::Checkpointer::list_threads) filters. Written with the thread's
    /// first checkpoint and whenever a run changes it; a thread's metadata
    /// is that of its latest checkpoint that has any.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

/// The failure stored with a `failed` checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
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
    /// Checkpoint `seq` of `thread_id`, written by run `run_id`, holding
    /// `state`: in this release's format, with parent `seq - 1` (none for
    /// 0), created now, status [`ThreadStatus::Running`], and nothing else
    /// set (no nodes run, an empty frontier, no interrupts). Set the other
    /// fields on the result.
    ///
    /// ```
    /// use flowtrace_core::checkpoint::{Checkpoint, StateRecord, TaskSpec};
    /// use flowtrace_core::{RunId, ThreadId};
    ///
    /// let mut cp = Checkpoint::new(
    ///     ThreadId::new("t"),
    ///     3,
    ///     RunId::new("r"),
    ///     StateRecord::Delta(vec![serde_json::json!({"n": 1})]),
    /// );
    /// cp.frontier.push(TaskSpec::new("next", None));
    /// assert_eq!(cp.parent_seq, Some(2));
    /// assert!(cp.check_format_version().is_ok());
    /// ```
    pub fn new(thread_id: ThreadId, seq: u64, run_id: RunId, state: StateRecord) -> Self {
        Self {
            thread_id,
            seq,
            parent_seq: seq.checked_sub(1),
            forked_from: None,
            run_id,
            step: 0,
            nodes: Vec::new(),
            created_at: Timestamp::now(),
            format_version: CHECKPOINT_FORMAT_VERSION,
            state,
            frontier: Vec::new(),
            joins: Vec::new(),
            node_executions: 0,
            steps: Vec::new(),
            step_ids: 0,
            status: ThreadStatus::Running,
            interrupts: Vec::new(),
            approvals: Vec::new(),
            error: None,
            metadata: BTreeMap::new(),
        }
    }

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
#[non_exhaustive]
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
    /// Checks the batch against the rules of [`Checkpointer::append_batch`](super::Checkpointer::append_batch)
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
