//! Errors: [`Error`] for runs, [`NodeError`] for node bodies, [`BuildError`]
//! for graph compilation and [`BudgetExceeded`] for guardrail breaches.

mod budget;
mod build;
mod node;

pub use budget::{BudgetBreach, BudgetExceeded};
pub use build::{BuildError, GraphProblem};
pub(crate) use node::SubgraphPause;
pub use node::{ErrorClass, NodeError};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::checkpoint::CheckpointError;
use crate::ids::{NodeId, ThreadId};
use crate::trace::SinkError;

/// Why a run failed.
///
/// Every message names the node, limit or setting involved.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The graph could not be compiled.
    #[error(transparent)]
    Build(#[from] BuildError),

    /// A node failed permanently, or kept failing until its retries ran out.
    /// The node's last error is the [`source`](std::error::Error::source);
    /// [`Error::report`] prints the whole chain.
    #[error("node {node:?} failed after {attempts} attempt(s)")]
    Node {
        /// The failing node.
        node: NodeId,
        /// How many attempts were made.
        attempts: u32,
        /// The node's last error.
        #[source]
        error: NodeError,
    },

    /// A node attempt exceeded its timeout, and no retry was left.
    #[error("node {node:?} timed out after {after:?} (attempt {attempts})")]
    Timeout {
        /// The node.
        node: NodeId,
        /// Its timeout.
        after: Duration,
        /// How many attempts were made.
        attempts: u32,
    },

    /// The run's deadline passed.
    #[error("run deadline passed after {elapsed:?}{}", node_suffix(.node))]
    DeadlineExceeded {
        /// How long the run had been going.
        elapsed: Duration,
        /// The node that was running, if any.
        node: Option<NodeId>,
    },

    /// The run was canceled through its [`RunHandle`](crate::RunHandle) or
    /// cancellation token.
    #[error("run canceled{}", node_suffix(.node))]
    Canceled {
        /// The node that was running, if any.
        node: Option<NodeId>,
    },

    /// A budget limit was reached.
    #[error(transparent)]
    BudgetExceeded(#[from] BudgetExceeded),

    /// The run executed more nodes than its recursion limit allows (usually an
    /// agent loop that does not end).
    #[error(
        "recursion limit of {limit} node executions reached before running node {node:?}; \
         raise RunConfig::recursion_limit if the graph legitimately needs more"
    )]
    RecursionLimit {
        /// The limit.
        limit: u64,
        /// The node that would have exceeded it.
        node: NodeId,
    },

    /// A router returned a label that none of its branches has.
    #[error("router after node {node:?} returned unknown branch {branch:?} (known: {})", .known.join(", "))]
    UnknownBranch {
        /// The node whose router answered.
        node: NodeId,
        /// The label it returned.
        branch: String,
        /// The labels it declared.
        known: Vec<String>,
    },

    /// A node dispatched instances of a node it did not declare with
    /// `add_dispatch`.
    #[error(
        "node {node:?} dispatched to {target:?}, which is not one of its declared dispatch targets"
    )]
    UnknownDispatchTarget {
        /// The dispatching node.
        node: NodeId,
        /// The undeclared target.
        target: String,
    },

    /// A model call used a model with no price while
    /// [`MissingPrice::Error`](crate::pricing::MissingPrice) is configured.
    #[error(
        "no price for model {provider}/{model} (called by node {node:?}); add it to the price table"
    )]
    MissingPrice {
        /// The node.
        node: NodeId,
        /// The provider.
        provider: String,
        /// The model.
        model: String,
    },

    /// A node panicked; the panic was caught and the run failed cleanly.
    #[error("node {node:?} panicked: {message}")]
    NodePanicked {
        /// The node.
        node: NodeId,
        /// The panic's message.
        message: String,
    },

    /// A trace sink could not flush, so events may be lost.
    #[error(transparent)]
    Sink(#[from] SinkError),

    /// The executor task was lost (for example its runtime shut down).
    #[error("run task ended abnormally: {reason}")]
    Aborted {
        /// What happened.
        reason: String,
        /// The task's join error, when the task panicked or was aborted.
        #[source]
        source: Option<Arc<tokio::task::JoinError>>,
    },

    /// The checkpointer failed (including a fencing conflict with another
    /// writer of the same thread).
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),

    /// The thread has no checkpoint.
    #[error("thread {thread:?} has no checkpoint to resume from")]
    ThreadNotFound {
        /// The thread.
        thread: ThreadId,
    },

    /// `run` was asked to start a thread that already has history.
    #[error(
        "thread {thread:?} already has checkpoints; resume it, or fork it, or use a new thread id"
    )]
    ThreadExists {
        /// The thread.
        thread: ThreadId,
    },

    /// The operation needs a durable run: set `RunConfig::checkpointer` (and
    /// `RunConfig::thread`).
    #[error("{operation} needs RunConfig::checkpointer (and RunConfig::thread)")]
    NotDurable {
        /// What was asked (`resume`, `resume_with`, ...).
        operation: &'static str,
    },

    /// The thread has no checkpoint with this number (never written, or
    /// pruned).
    #[error("thread {thread:?} has no checkpoint {seq}")]
    CheckpointNotFound {
        /// The thread.
        thread: ThreadId,
        /// The checkpoint asked for.
        seq: u64,
    },

    /// A new run was asked to start on a thread that is not finished: it
    /// waits for a human, was halted, failed or is still running. Resume it
    /// instead.
    #[error(
        "thread {thread:?} is {status:?}, not finished: resume it (or fork it) instead of starting a new run on it"
    )]
    ThreadBusy {
        /// The thread.
        thread: ThreadId,
        /// Its status.
        status: crate::checkpoint::ThreadStatus,
    },

    /// A decision was given for a thread that is not waiting for one.
    #[error(
        "thread {thread:?} is not interrupted (it is {status:?}); nothing to approve or reject"
    )]
    NotInterrupted {
        /// The thread.
        thread: ThreadId,
        /// Its status.
        status: crate::checkpoint::ThreadStatus,
    },

    /// A decision names an interrupt that is not pending on the thread
    /// (already decided, from an earlier pause, or unknown).
    #[error(
        "thread {thread:?}: the decision is for interrupt {given:?}, which is not pending (pending: {pending:?})"
    )]
    StaleInterrupt {
        /// The thread.
        thread: ThreadId,
        /// The interrupt named by the decision.
        given: String,
        /// The interrupts that are pending.
        pending: Vec<String>,
    },

    /// Two decisions of one resume name the same interrupt.
    #[error("thread {thread:?}: interrupt {interrupt_id:?} is decided twice in one resume")]
    DuplicateDecision {
        /// The thread.
        thread: ThreadId,
        /// The interrupt.
        interrupt_id: String,
    },

    /// The thread waits for a human decision; resume it with a command.
    #[error(
        "thread {thread:?} is interrupted at node {node:?} (interrupt {interrupt_id:?}{}); resume it with a decision",
        if *.pending > 1 { format!(", and {} more", .pending - 1) } else { String::new() }
    )]
    DecisionRequired {
        /// The thread.
        thread: ThreadId,
        /// The node of the first pending interrupt.
        node: NodeId,
        /// The first pending interrupt.
        interrupt_id: String,
        /// How many interrupts are pending.
        pending: usize,
    },

    /// A state edit names a node the graph does not have, or one that
    /// cannot produce updates (`START`, `END`).
    #[error("cannot apply a state edit as node {node:?}: {reason}")]
    InvalidStateEdit {
        /// The node named.
        node: String,
        /// Why.
        reason: String,
    },

    /// A checkpoint names a node this graph does not have.
    #[error("thread {thread:?} was written by a different graph: it names unknown node {node:?}")]
    GraphMismatch {
        /// The thread.
        thread: ThreadId,
        /// The unknown node.
        node: String,
    },

    /// A state or update could not be (de)serialized for a checkpoint.
    #[error("state serialization failed{}: {message}", node_suffix(.node))]
    StateSerialization {
        /// The node whose update failed, if any.
        node: Option<NodeId>,
        /// The serde error.
        message: String,
    },

    /// A value to be saved in a checkpoint (a state, an update, a dispatch
    /// input, an interrupt payload or answer) nests deeper than
    /// [`MAX_VALUE_DEPTH`](crate::checkpoint::MAX_VALUE_DEPTH): it could be
    /// written but never read back, so it is refused before anything is
    /// saved.
    #[error(
        "a value to checkpoint nests {depth} levels deep, over the limit of {limit} (MAX_VALUE_DEPTH){}",
        node_suffix(.node)
    )]
    ValueTooDeep {
        /// The node whose value it is, if any.
        node: Option<NodeId>,
        /// The depth found.
        depth: usize,
        /// The limit.
        limit: usize,
    },
}

/// Prints an error and its chain of causes, separated by `: `. Made by
/// [`Error::report`] or [`Report::new`] for any error.
///
/// ```
/// use flowtrace_core::error::{NodeError, ErrorClass, Report};
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
/// let e = NodeError::transient("cannot reach the search service").with_source(io);
/// assert_eq!(
///     Report::new(&e).to_string(),
///     "cannot reach the search service (transient): connection refused"
/// );
/// ```
#[derive(Clone, Copy)]
pub struct Report<'a>(&'a (dyn std::error::Error + 'static));

impl<'a> Report<'a> {
    /// A report of `error` and its causes.
    pub fn new(error: &'a (dyn std::error::Error + 'static)) -> Self {
        Self(error)
    }
}

impl fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        // Bounded: a cyclic or absurdly deep chain stops printing.
        let mut depth = 0;
        while let Some(e) = cause {
            depth += 1;
            if depth > 32 {
                return f.write_str(": ...");
            }
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
    }
}

fn node_suffix(node: &Option<NodeId>) -> String {
    match node {
        Some(n) => format!(" while node {n:?} was running"),
        None => String::new(),
    }
}

impl Error {
    /// The error and every cause under it, one after another
    /// (`node "fetch" failed after 3 attempt(s): connection refused (transient)`).
    ///
    /// Each error's own message leaves out its cause (it is the
    /// [`source`](std::error::Error::source)), so printing only `{error}`
    /// shows the top level; print `{}` of this for the whole story.
    pub fn report(&self) -> Report<'_> {
        Report(self)
    }

    pub(crate) fn aborted(reason: impl Into<String>) -> Self {
        Error::Aborted {
            reason: reason.into(),
            source: None,
        }
    }

    /// The node the failure belongs to, when there is one.
    pub fn node(&self) -> Option<&NodeId> {
        match self {
            Error::Node { node, .. }
            | Error::Timeout { node, .. }
            | Error::RecursionLimit { node, .. }
            | Error::UnknownBranch { node, .. }
            | Error::UnknownDispatchTarget { node, .. }
            | Error::MissingPrice { node, .. }
            | Error::NodePanicked { node, .. } => Some(node),
            Error::DeadlineExceeded { node, .. }
            | Error::Canceled { node }
            | Error::StateSerialization { node, .. }
            | Error::ValueTooDeep { node, .. } => node.as_ref(),
            Error::BudgetExceeded(b) => b.node.as_ref(),
            _ => None,
        }
    }

    /// A short, stable name for the kind of failure (`node`, `timeout`,
    /// `budget_exceeded`, …), for summaries and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Build(_) => "build",
            Error::Node { .. } => "node",
            Error::Timeout { .. } => "timeout",
            Error::DeadlineExceeded { .. } => "deadline_exceeded",
            Error::Canceled { .. } => "canceled",
            Error::BudgetExceeded(_) => "budget_exceeded",
            Error::RecursionLimit { .. } => "recursion_limit",
            Error::UnknownBranch { .. } => "unknown_branch",
            Error::UnknownDispatchTarget { .. } => "unknown_dispatch_target",
            Error::MissingPrice { .. } => "missing_price",
            Error::NodePanicked { .. } => "node_panicked",
            Error::Sink(_) => "sink",
            Error::Aborted { .. } => "aborted",
            Error::Checkpoint(_) => "checkpoint",
            Error::ThreadNotFound { .. } => "thread_not_found",
            Error::ThreadExists { .. } => "thread_exists",
            Error::NotInterrupted { .. } => "not_interrupted",
            Error::ThreadBusy { .. } => "thread_busy",
            Error::NotDurable { .. } => "not_durable",
            Error::CheckpointNotFound { .. } => "checkpoint_not_found",
            Error::DuplicateDecision { .. } => "duplicate_decision",
            Error::InvalidStateEdit { .. } => "invalid_state_edit",
            Error::StaleInterrupt { .. } => "stale_interrupt",
            Error::DecisionRequired { .. } => "decision_required",
            Error::GraphMismatch { .. } => "graph_mismatch",
            Error::StateSerialization { .. } => "state_serialization",
            Error::ValueTooDeep { .. } => "value_too_deep",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_strings_are_stable() {
        let e = Error::BudgetExceeded(BudgetExceeded::new(
            BudgetBreach::Cost {
                limit: "0.5".parse().unwrap(),
                observed: "0.62".parse().unwrap(),
            },
            Some(NodeId::new("deep")),
            true,
        ));
        assert_eq!(
            e.to_string(),
            "budget exceeded: max_cost is 0.5, observed 0.62 at node \"deep\" (refused before running)"
        );
        let e = Error::RecursionLimit {
            limit: 25,
            node: NodeId::new("agent"),
        };
        assert!(
            e.to_string()
                .starts_with("recursion limit of 25 node executions")
        );
        let b = BuildError {
            problems: vec![
                GraphProblem::NoEntry,
                GraphProblem::Unreachable { node: "x".into() },
            ],
        };
        assert_eq!(
            b.to_string(),
            "graph has 2 problem(s):\n  - no entry node: call set_entry(..)\n  - node \"x\" is unreachable from the entry"
        );
    }

    #[test]
    fn model_errors_keep_their_class() {
        use crate::model::{ModelError, ModelErrorKind};
        let e: NodeError = ModelError::new(
            ModelErrorKind::RateLimited {
                retry_after: Some(Duration::from_secs(2)),
            },
            "openai",
            "gpt-4o",
            "slow down",
        )
        .into();
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        let e: NodeError =
            ModelError::new(ModelErrorKind::Auth, "openai", "gpt-4o", "bad key").into();
        assert!(!e.is_retryable());
    }
}
