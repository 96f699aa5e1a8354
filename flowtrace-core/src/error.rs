//! Errors: [`Error`] for runs, [`NodeError`] for node bodies, [`BuildError`]
//! for graph compilation and [`BudgetExceeded`] for guardrail breaches.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::checkpoint::CheckpointError;
use crate::ids::{NodeId, ThreadId};
use crate::model::ModelError;
use crate::pricing::{Cost, CostOverflow};
use crate::tool::ToolError;
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

/// Whether a node failure may pass on retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// May pass on retry (rate limits, timeouts, flaky networks).
    Transient,
    /// Will fail again (bad input, auth, a bug).
    Permanent,
}

/// The error a node body returns.
///
/// Classify it: only [`transient`](NodeError::transient) errors are retried.
/// `?` on a [`ModelError`] or [`ToolError`] keeps their classification.
#[derive(Debug, Clone)]
pub struct NodeError {
    repr: NodeErrorRepr,
}

#[derive(Debug, Clone)]
enum NodeErrorRepr {
    Failure {
        class: ErrorClass,
        /// The node's own message; `None` when the error only wraps
        /// `source` (made by [`NodeError::from_error`]): then the source's
        /// message is shown and its causes follow.
        message: Option<String>,
        retry_after: Option<Duration>,
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// A run-level condition (budget, pricing, cancellation) raised inside a
    /// node: it ends the run as that error, without retries.
    Run(Box<Error>),
    /// The node asked for a human decision (`NodeContext::interrupt`).
    Interrupt(serde_json::Value),
    /// A subgraph run by the node paused for human decisions.
    Paused(Arc<SubgraphPause>),
}

/// A subgraph that stopped for human decisions: where it stands and what
/// it asks.
#[derive(Debug)]
pub(crate) struct SubgraphPause {
    pub(crate) state: crate::checkpoint::SubgraphState,
    pub(crate) interrupts: Vec<crate::checkpoint::Interrupt>,
}

impl NodeError {
    /// A failure that may pass on retry.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::failure(ErrorClass::Transient, message.into())
    }

    /// A failure that will not pass on retry.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::failure(ErrorClass::Permanent, message.into())
    }

    fn failure(class: ErrorClass, message: String) -> Self {
        Self {
            repr: NodeErrorRepr::Failure {
                class,
                message: Some(message),
                retry_after: None,
                source: None,
            },
        }
    }

    /// Wraps any error with a classification. The error's message is this
    /// error's message and its causes follow (it is not printed twice);
    /// [`get_ref`](Self::get_ref) gives the wrapped error back.
    pub fn from_error<E>(class: ErrorClass, error: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Self {
            repr: NodeErrorRepr::Failure {
                class,
                message: None,
                retry_after: None,
                source: Some(Arc::new(error)),
            },
        }
    }

    /// Records `cause` as this error's [`source`](std::error::Error::source)
    /// (the node's own message stays in front). On a run error or an
    /// interrupt it does nothing.
    pub fn with_source<E>(mut self, cause: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        if let NodeErrorRepr::Failure {
            message, source, ..
        } = &mut self.repr
        {
            // A wrapped error becomes the message's cause: keep its text as
            // the message so nothing is lost.
            if message.is_none()
                && let Some(old) = source.take()
            {
                *message = Some(old.to_string());
            }
            *source = Some(Arc::new(cause));
        }
        self
    }

    /// The error this one wraps or was caused by, for downcasting
    /// (`e.get_ref().and_then(|e| e.downcast_ref::<std::io::Error>())`).
    pub fn get_ref(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match &self.repr {
            NodeErrorRepr::Failure { source, .. } => source.as_deref(),
            NodeErrorRepr::Run(_) | NodeErrorRepr::Interrupt(_) | NodeErrorRepr::Paused(_) => None,
        }
    }

    /// Asks the executor to wait at least `delay` before the next attempt
    /// (a provider's `Retry-After`).
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        if let NodeErrorRepr::Failure { retry_after, .. } = &mut self.repr {
            *retry_after = Some(delay);
        }
        self
    }

    /// Ends the run with `error` (used for budget, pricing and cancellation
    /// conditions detected inside a node; never retried).
    pub fn run_error(error: Error) -> Self {
        Self {
            repr: NodeErrorRepr::Run(Box::new(error)),
        }
    }

    pub(crate) fn interrupt(payload: serde_json::Value) -> Self {
        Self {
            repr: NodeErrorRepr::Interrupt(payload),
        }
    }

    pub(crate) fn subgraph_paused(pause: SubgraphPause) -> Self {
        Self {
            repr: NodeErrorRepr::Paused(Arc::new(pause)),
        }
    }

    /// The subgraph's pause, when a subgraph run by the node stopped for
    /// human decisions.
    pub(crate) fn subgraph_pause(&self) -> Option<&Arc<SubgraphPause>> {
        match &self.repr {
            NodeErrorRepr::Paused(p) => Some(p),
            _ => None,
        }
    }

    /// The payload, when this is a request for a human decision.
    pub fn interrupt_payload(&self) -> Option<&serde_json::Value> {
        match &self.repr {
            NodeErrorRepr::Interrupt(p) => Some(p),
            _ => None,
        }
    }

    /// The classification. Run-level errors and interrupts are permanent.
    pub fn class(&self) -> ErrorClass {
        match &self.repr {
            NodeErrorRepr::Failure { class, .. } => *class,
            NodeErrorRepr::Run(_) | NodeErrorRepr::Interrupt(_) | NodeErrorRepr::Paused(_) => {
                ErrorClass::Permanent
            }
        }
    }

    /// Whether the executor may retry.
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    /// The requested minimum delay before a retry.
    pub fn retry_after(&self) -> Option<Duration> {
        match &self.repr {
            NodeErrorRepr::Failure { retry_after, .. } => *retry_after,
            NodeErrorRepr::Run(_) | NodeErrorRepr::Interrupt(_) | NodeErrorRepr::Paused(_) => None,
        }
    }

    /// The run-level error this node error carries, if any.
    pub fn as_run_error(&self) -> Option<&Error> {
        match &self.repr {
            NodeErrorRepr::Run(e) => Some(e),
            NodeErrorRepr::Failure { .. }
            | NodeErrorRepr::Interrupt(_)
            | NodeErrorRepr::Paused(_) => None,
        }
    }

    pub(crate) fn into_run_error(self) -> Result<Error, NodeError> {
        match self.repr {
            NodeErrorRepr::Run(e) => Ok(*e),
            repr => Err(NodeError { repr }),
        }
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            NodeErrorRepr::Failure {
                class,
                message,
                source,
                ..
            } => {
                let c = match class {
                    ErrorClass::Transient => "transient",
                    ErrorClass::Permanent => "permanent",
                };
                match (message, source) {
                    (Some(m), _) => write!(f, "{m} ({c})"),
                    (None, Some(s)) => write!(f, "{s} ({c})"),
                    (None, None) => write!(f, "{c} failure"),
                }
            }
            NodeErrorRepr::Run(e) => e.fmt(f),
            NodeErrorRepr::Interrupt(p) => write!(f, "interrupted for a human decision: {p}"),
            NodeErrorRepr::Paused(p) => write!(
                f,
                "subgraph paused for {} human decision(s)",
                p.interrupts.len()
            ),
        }
    }
}

impl std::error::Error for NodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.repr {
            // A wrapped error's message is this error's message: its
            // causes come next.
            NodeErrorRepr::Failure {
                message: None,
                source,
                ..
            } => source.as_deref().and_then(|e| e.source()),
            NodeErrorRepr::Failure { source, .. } => source
                .as_deref()
                .map(|e| e as &(dyn std::error::Error + 'static)),
            // A run error's message is shown: its causes come next.
            NodeErrorRepr::Run(e) => e.source(),
            NodeErrorRepr::Interrupt(_) | NodeErrorRepr::Paused(_) => None,
        }
    }
}

impl From<ModelError> for NodeError {
    fn from(e: ModelError) -> Self {
        let class = if e.is_retryable() {
            ErrorClass::Transient
        } else {
            ErrorClass::Permanent
        };
        let retry_after = e.retry_after();
        let mut err = NodeError::from_error(class, e);
        if let Some(d) = retry_after {
            err = err.with_retry_after(d);
        }
        err
    }
}

impl From<ToolError> for NodeError {
    fn from(e: ToolError) -> Self {
        let class = if e.retryable {
            ErrorClass::Transient
        } else {
            ErrorClass::Permanent
        };
        NodeError::from_error(class, e)
    }
}

impl From<Error> for NodeError {
    fn from(e: Error) -> Self {
        NodeError::run_error(e)
    }
}

/// A model call whose cost cannot be represented fails its step permanently.
impl From<CostOverflow> for NodeError {
    fn from(e: CostOverflow) -> Self {
        NodeError::from_error(ErrorClass::Permanent, e)
    }
}

impl From<serde_json::Error> for NodeError {
    fn from(e: serde_json::Error) -> Self {
        NodeError::from_error(ErrorClass::Permanent, e)
    }
}

/// Which budget limit was breached, with its value and what was observed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BudgetBreach {
    /// `max_node_executions`.
    NodeExecutions {
        /// The limit.
        limit: u64,
        /// Executions the run would have reached.
        observed: u64,
    },
    /// `max_tokens` (input plus output, all model calls).
    Tokens {
        /// The limit.
        limit: u64,
        /// Tokens spent, plus the estimate of a refused call.
        observed: u64,
    },
    /// `max_cost`.
    Cost {
        /// The limit.
        limit: Cost,
        /// Cost spent and reserved, plus the estimate of a refused call
        /// ([`Cost::MAX`] if that total cannot be represented).
        observed: Cost,
    },
    /// `max_duration`.
    Duration {
        /// The limit.
        limit: Duration,
        /// Time elapsed.
        observed: Duration,
    },
}

impl BudgetBreach {
    /// The limit's name: `max_node_executions`, `max_tokens`, `max_cost` or
    /// `max_duration`.
    pub fn limit_name(&self) -> &'static str {
        match self {
            Self::NodeExecutions { .. } => "max_node_executions",
            Self::Tokens { .. } => "max_tokens",
            Self::Cost { .. } => "max_cost",
            Self::Duration { .. } => "max_duration",
        }
    }

    /// The limit's value, formatted.
    pub fn limit_value(&self) -> String {
        match self {
            Self::NodeExecutions { limit, .. } | Self::Tokens { limit, .. } => limit.to_string(),
            Self::Cost { limit, .. } => limit.to_decimal_string(),
            Self::Duration { limit, .. } => format!("{limit:?}"),
        }
    }

    /// The observed value, formatted.
    pub fn observed_value(&self) -> String {
        match self {
            Self::NodeExecutions { observed, .. } | Self::Tokens { observed, .. } => {
                observed.to_string()
            }
            Self::Cost { observed, .. } => observed.to_decimal_string(),
            Self::Duration { observed, .. } => format!("{observed:?}"),
        }
    }
}

/// A budget limit was reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "budget exceeded: {} is {}, observed {}{}{}",
    .breach.limit_name(),
    .breach.limit_value(),
    .breach.observed_value(),
    node_suffix_budget(.node),
    if *.refused_before_run { " (refused before running)" } else { "" }
)]
#[non_exhaustive]
pub struct BudgetExceeded {
    /// The limit and the values.
    pub breach: BudgetBreach,
    /// The node that hit it, if any.
    pub node: Option<NodeId>,
    /// Whether the work was refused before it ran (an estimate did not fit),
    /// as opposed to detected after the fact.
    pub refused_before_run: bool,
}

fn node_suffix_budget(node: &Option<NodeId>) -> String {
    match node {
        Some(n) => format!(" at node {n:?}"),
        None => String::new(),
    }
}

impl BudgetExceeded {
    pub(crate) fn new(
        breach: BudgetBreach,
        node: Option<NodeId>,
        refused_before_run: bool,
    ) -> Self {
        Self {
            breach,
            node,
            refused_before_run,
        }
    }
}

/// One problem found while compiling a graph.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GraphProblem {
    /// Two nodes share an id.
    DuplicateNode {
        /// The id.
        node: NodeId,
    },
    /// A node id is reserved (`__start__`, `__end__`) or empty.
    ReservedNodeId {
        /// The id.
        node: NodeId,
    },
    /// An edge, router, dispatch or entry names a node that does not exist.
    UnknownNode {
        /// The missing id.
        node: NodeId,
        /// Where it was referenced (for example `edge "a" -> "b"`).
        referenced_by: String,
    },
    /// No entry node was set.
    NoEntry,
    /// The node cannot be reached from the entry.
    Unreachable {
        /// The node.
        node: NodeId,
    },
    /// No path leads from the node to the finish.
    NoPathToFinish {
        /// The node.
        node: NodeId,
    },
    /// A conditional edge declares no branch.
    EmptyBranches {
        /// The routing node.
        node: NodeId,
    },
    /// A value of a router's closed label type (an enum) has no branch.
    UnmappedBranch {
        /// The routing node.
        node: NodeId,
        /// The label's name.
        label: String,
    },
    /// A node has more than one router.
    DuplicateRouter {
        /// The node.
        node: NodeId,
    },
    /// A setting is out of range.
    InvalidSetting {
        /// The node, or `None` for graph-wide settings.
        node: Option<NodeId>,
        /// The setting's name.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for GraphProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DuplicateNode { node } => write!(f, "duplicate node id {node:?}"),
            Self::ReservedNodeId { node } => {
                write!(f, "node id {node:?} is reserved or empty")
            }
            Self::UnknownNode {
                node,
                referenced_by,
            } => write!(f, "{referenced_by} refers to unknown node {node:?}"),
            Self::NoEntry => write!(f, "no entry node: call set_entry(..)"),
            Self::Unreachable { node } => {
                write!(f, "node {node:?} is unreachable from the entry")
            }
            Self::NoPathToFinish { node } => write!(
                f,
                "node {node:?} has no path to finish: add an edge from it (or a successor) to END, or call set_finish"
            ),
            Self::EmptyBranches { node } => {
                write!(f, "conditional edge from node {node:?} declares no branch")
            }
            Self::UnmappedBranch { node, label } => write!(
                f,
                "conditional edge from node {node:?} has no branch for label {label:?}: map every value of the label type"
            ),
            Self::DuplicateRouter { node } => {
                write!(f, "node {node:?} has more than one conditional edge router")
            }
            Self::InvalidSetting {
                node: Some(node),
                setting,
                reason,
            } => write!(f, "node {node:?}: invalid {setting}: {reason}"),
            Self::InvalidSetting {
                node: None,
                setting,
                reason,
            } => write!(f, "invalid {setting}: {reason}"),
        }
    }
}

/// A graph could not be compiled. Lists every problem found, not only the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct BuildError {
    /// Every problem, in the order found.
    pub problems: Vec<GraphProblem>,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "graph has {} problem(s):", self.problems.len())?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
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
