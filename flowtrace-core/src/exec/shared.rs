//! State shared by everything that runs inside one run: the node-facing
//! services (event bus, clock, pricing, budget ledger) and the engine's
//! settings and counters. Subgraphs share their parent run's `RunShared`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::exec::durable::HaltSignal;
use crate::exec::{RetryPolicy, RunConfig};
use crate::ids::{NodeId, RunId, StepId};
use crate::node::RunServices;
use crate::pricing::Ledger;
use crate::trace::{EventBus, StepRecord, Timestamp};

/// Everything one run (and its subgraphs) shares: the services a node's
/// context sees ([`RunServices`], reached through `Deref`) and the engine's
/// own settings and counters.
pub(crate) struct RunShared {
    pub(crate) services: Arc<RunServices>,
    pub(crate) max_node_executions: Option<u64>,
    pub(crate) recursion_limit: u64,
    pub(crate) max_duration: Option<std::time::Duration>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) parallel: Option<usize>,
    pub(crate) default_retry: Option<RetryPolicy>,
    pub(crate) default_timeout: Option<std::time::Duration>,
    step_seq: AtomicU64,
    pub(crate) executions: AtomicU64,
    /// Step records of subgraph runs, drained by the top-level executor.
    pub(crate) nested_steps: Mutex<Vec<StepRecord>>,
    pub(crate) halt: Option<Arc<dyn HaltSignal>>,
    pub(crate) checkpointer: Option<Arc<dyn crate::checkpoint::Checkpointer>>,
    pub(crate) thread: Option<crate::ids::ThreadId>,
    pub(crate) durability: crate::exec::Durability,
    pub(crate) interrupt_before: Vec<NodeId>,
    pub(crate) interrupt_after: Vec<NodeId>,
    pub(crate) interrupt_deadline:
        Option<(std::time::Duration, crate::checkpoint::DefaultDecision)>,
    pub(crate) snapshots: crate::exec::SnapshotPolicy,
    pub(crate) finished_thread: crate::exec::FinishedThread,
    pub(crate) metadata: std::collections::BTreeMap<String, serde_json::Value>,
    pub(crate) summary_scope: crate::exec::SummaryScope,
    /// Set when a router saw the halt request (the graph handles it).
    halt_observed: std::sync::atomic::AtomicBool,
}

impl std::ops::Deref for RunShared {
    type Target = RunServices;

    fn deref(&self) -> &RunServices {
        &self.services
    }
}

impl fmt::Debug for RunShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunShared")
            .field("run_id", &self.run_id)
            .finish_non_exhaustive()
    }
}

impl RunShared {
    pub(crate) fn new(config: &RunConfig, run_id: RunId) -> Self {
        let start = Instant::now();
        let services = RunServices {
            run_id,
            bus: EventBus::new(config.sinks.clone(), config.event_capacity)
                .with_redactor(config.redactor.clone()),
            start,
            start_ts: Timestamp::now(),
            pricing: config.pricing.clone(),
            missing_price: config.missing_price,
            cache: config.cache.clone(),
            ledger: Ledger::new(config.budget.max_tokens, config.budget.max_cost),
            default_max_output_tokens: config.assumed_max_output_tokens,
            // A child of the caller's token: canceling this run never
            // cancels another run sharing the caller's token.
            cancel: config
                .cancel
                .as_ref()
                .map(CancellationToken::child_token)
                .unwrap_or_default(),
        };
        Self {
            services: Arc::new(services),
            max_node_executions: config.budget.max_node_executions,
            recursion_limit: config.recursion_limit,
            max_duration: config.budget.max_duration,
            deadline: deadline(config, start),
            parallel: config.parallel,
            default_retry: config.retry.clone(),
            default_timeout: config.node_timeout,
            step_seq: AtomicU64::new(0),
            executions: AtomicU64::new(0),
            nested_steps: Mutex::new(Vec::new()),
            halt: config.halt.clone(),
            checkpointer: config.checkpointer.clone(),
            thread: config.thread.clone(),
            durability: config.durability,
            interrupt_before: config.interrupt_before.clone(),
            interrupt_after: config.interrupt_after.clone(),
            interrupt_deadline: config.interrupt_deadline.clone(),
            snapshots: config.snapshots,
            finished_thread: config.finished_thread,
            metadata: config.metadata.clone(),
            summary_scope: config.summary_scope,
            halt_observed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether the run's halt signal fired.
    pub(crate) fn halt_requested(&self) -> bool {
        self.halt.as_ref().is_some_and(|h| h.halt_requested())
    }

    /// Whether a router saw the halt request.
    pub(crate) fn halt_observed(&self) -> bool {
        self.halt_observed.load(Ordering::Acquire)
    }

    pub(crate) fn observe_halt(&self) {
        self.halt_observed.store(true, Ordering::Release);
    }

    /// Continues step numbering after a resumed thread's history.
    pub(crate) fn set_step_base(&self, base: u64) {
        self.step_seq.store(base, Ordering::Relaxed);
    }

    /// Step ids issued so far (the latest one).
    pub(crate) fn step_ids_issued(&self) -> u64 {
        self.step_seq.load(Ordering::Relaxed)
    }

    pub(crate) fn next_step_id(&self) -> StepId {
        StepId(self.step_seq.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// The earliest instant the run must stop: its deadline or the end of
    /// its duration budget.
    pub(crate) fn stop_at(&self) -> Option<(Instant, StopReason)> {
        let budget = self
            .max_duration
            .map(|d| (self.start + d, StopReason::DurationBudget));
        let deadline = self.deadline.map(|d| (d, StopReason::Deadline));
        match (budget, deadline) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }
}

/// The run's deadline: the config's absolute deadline or its timeout counted
/// from `start`, whichever comes first. A timeout too long to represent as
/// an instant sets no deadline.
fn deadline(config: &RunConfig, start: Instant) -> Option<Instant> {
    let relative = config.timeout.and_then(|t| start.checked_add(t));
    match (config.deadline, relative) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Which run-level limit a stop instant belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopReason {
    Deadline,
    DurationBudget,
}
