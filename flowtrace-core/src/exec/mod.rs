//! Running graphs: configuration, budgets, retries, handles and reports.
//!
//! # How a run proceeds
//! A run advances in *super-steps*. Each super-step takes every node that is
//! ready, runs them (one after the other by default, or concurrently with
//! [`RunConfig::parallel`]), then merges their updates into the state in a
//! fixed order (graph order, then dispatch order) and evaluates their
//! outgoing edges against the merged state to find the next ready nodes.
//! Between super-steps — the *safe points* — the executor checks
//! cancellation, the deadline, the recursion limit and the budgets.

mod api;
mod attempt;
mod commit;
mod decide;
mod drive;
mod durable;
mod executor;
mod handle;
mod joins;
mod lone;
mod pause;
mod replay;
mod route;
mod superstep;

mod output;
pub(crate) mod shared;

pub use crate::retry::RetryPolicy;
pub use crate::trace::{ErrorSummary, RunSummary, StepRecord};
pub use api::{RunInput, StateSnapshot};
pub use durable::{
    ASYNC_WRITE_QUEUE, Command, Decision, Durability, HaltSignal, HaltSwitch, SnapshotPolicy,
};
pub(crate) use executor::{Executor, Nested};
pub use handle::RunHandle;
pub use output::{RunFailure, RunOutput};

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::checkpoint::{Checkpointer, DefaultDecision};
use crate::ids::{NodeId, RunId, ThreadId};
use crate::pricing::{Cost, MissingPrice, PriceTable, Pricing};
use crate::trace::{EventRedactor, TraceSink};

/// Per-run guardrails. A breach ends the run with
/// [`Error::BudgetExceeded`](crate::Error::BudgetExceeded) naming the limit,
/// its value and the observed value, and emits `budget.exceeded`.
///
/// Token and cost limits are enforced with reservations: a node's
/// [estimate](crate::NodeConfig::estimated_cost) is reserved before it is
/// dispatched and each model call's worst case before it is sent, then
/// settled with the actual amount, so even a wide parallel fan-out can never
/// overshoot the cap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "a Budget does nothing until it is passed to `RunConfig::budget`"]
pub struct Budget {
    /// Most node executions (skipped nodes do not count).
    pub max_node_executions: Option<u64>,
    /// Most tokens (input plus output) across all model calls.
    pub max_tokens: Option<u64>,
    /// Most spend across all model calls.
    pub max_cost: Option<Cost>,
    /// Longest wall time.
    pub max_duration: Option<Duration>,
}

impl Budget {
    /// No limits.
    pub fn unlimited() -> Self {
        Self::default()
    }

    /// Sets the node-execution limit.
    pub fn max_node_executions(mut self, n: u64) -> Self {
        self.max_node_executions = Some(n);
        self
    }

    /// Sets the token limit.
    pub fn max_tokens(mut self, n: u64) -> Self {
        self.max_tokens = Some(n);
        self
    }

    /// Sets the cost limit.
    pub fn max_cost(mut self, cost: Cost) -> Self {
        self.max_cost = Some(cost);
        self
    }

    /// Sets the duration limit.
    pub fn max_duration(mut self, d: Duration) -> Self {
        self.max_duration = Some(d);
        self
    }
}

static DEFAULT_PRICING: LazyLock<Arc<PriceTable>> =
    LazyLock::new(|| Arc::new(PriceTable::builtin()));

/// The default recursion limit (node executions per run).
pub const DEFAULT_RECURSION_LIMIT: u64 = 10_000;

/// How to run a graph. Every setting has a sensible default.
///
/// ```
/// use std::time::Duration;
/// use flowtrace_core::{Budget, RetryPolicy, RunConfig};
/// let config = RunConfig::new()
///     .parallel(8)
///     .recursion_limit(200)
///     .retry(RetryPolicy::new(3))
///     .node_timeout(Duration::from_secs(30))
///     .budget(Budget::default().max_cost("0.50".parse().unwrap()).max_tokens(100_000));
/// # let _ = config;
/// ```
#[derive(Clone)]
#[must_use = "a RunConfig does nothing until a run is started with it"]
pub struct RunConfig {
    pub(crate) run_id: Option<RunId>,
    pub(crate) parallel: Option<usize>,
    pub(crate) recursion_limit: u64,
    pub(crate) budget: Budget,
    pub(crate) deadline: Option<tokio::time::Instant>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) node_timeout: Option<Duration>,
    pub(crate) sinks: Vec<Arc<dyn TraceSink>>,
    pub(crate) redactor: Option<Arc<dyn EventRedactor>>,
    pub(crate) pricing: Arc<dyn Pricing>,
    pub(crate) missing_price: MissingPrice,
    pub(crate) cache: Option<Arc<dyn Cache>>,
    pub(crate) cancel: Option<CancellationToken>,
    pub(crate) event_capacity: usize,
    pub(crate) assumed_max_output_tokens: u32,
    pub(crate) checkpointer: Option<Arc<dyn Checkpointer>>,
    pub(crate) thread: Option<ThreadId>,
    pub(crate) durability: Durability,
    pub(crate) interrupt_before: Vec<NodeId>,
    pub(crate) interrupt_after: Vec<NodeId>,
    pub(crate) halt: Option<Arc<dyn HaltSignal>>,
    pub(crate) interrupt_deadline: Option<(Duration, DefaultDecision)>,
    pub(crate) snapshots: SnapshotPolicy,
    pub(crate) finished_thread: FinishedThread,
    pub(crate) metadata: std::collections::BTreeMap<String, serde_json::Value>,
    pub(crate) summary_scope: SummaryScope,
}

/// Which steps a run's [`RunSummary`] covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SummaryScope {
    /// The steps this run executed or replayed (the default): resuming
    /// costs the same however long the thread's history is.
    #[default]
    Run,
    /// Every step of the thread: the committed steps of earlier runs (read
    /// from the checkpointer, so linear in the thread's length) followed by
    /// this run's.
    Thread,
}

/// What a new run does on a thread whose last run finished.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FinishedThread {
    /// Continue the thread (the default): the new run starts from the
    /// thread's latest state with the input merged in
    /// ([`State::merge_input`](crate::State::merge_input)), its steps are numbered after the thread's,
    /// and the thread's history stays readable. A conversation thread works
    /// this way: each user message is a run.
    #[default]
    Continue,
    /// Refuse with [`Error::ThreadExists`](crate::Error::ThreadExists).
    Refuse,
}

impl fmt::Debug for RunConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunConfig")
            .field("run_id", &self.run_id)
            .field("parallel", &self.parallel)
            .field("recursion_limit", &self.recursion_limit)
            .field("budget", &self.budget)
            .field("deadline", &self.deadline)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("node_timeout", &self.node_timeout)
            .field("sinks", &self.sinks.len())
            .field("redactor", &self.redactor)
            .field("missing_price", &self.missing_price)
            .field("cache", &self.cache.is_some())
            .field("event_capacity", &self.event_capacity)
            .finish_non_exhaustive()
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            run_id: None,
            parallel: None,
            recursion_limit: DEFAULT_RECURSION_LIMIT,
            budget: Budget::default(),
            deadline: None,
            timeout: None,
            retry: None,
            node_timeout: None,
            sinks: Vec::new(),
            redactor: None,
            pricing: DEFAULT_PRICING.clone(),
            missing_price: MissingPrice::default(),
            cache: None,
            cancel: None,
            event_capacity: 1024,
            assumed_max_output_tokens: 4096,
            checkpointer: None,
            thread: None,
            durability: Durability::default(),
            interrupt_before: Vec::new(),
            interrupt_after: Vec::new(),
            halt: None,
            interrupt_deadline: None,
            snapshots: SnapshotPolicy::default(),
            finished_thread: FinishedThread::default(),
            metadata: Default::default(),
            summary_scope: SummaryScope::default(),
        }
    }
}

impl RunConfig {
    /// Defaults: sequential, recursion limit 10,000, no budget, no retries,
    /// no timeouts, built-in prices, unpriced models free with a warning.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `id` as the run id instead of a generated one.
    pub fn run_id(mut self, id: impl Into<RunId>) -> Self {
        self.run_id = Some(id.into());
        self
    }

    /// Runs the ready nodes of each super-step concurrently, at most
    /// `max_concurrency` at a time (0 is treated as 1).
    pub fn parallel(mut self, max_concurrency: usize) -> Self {
        self.parallel = Some(max_concurrency.max(1));
        self
    }

    /// Runs ready nodes one at a time (the default).
    pub fn sequential(mut self) -> Self {
        self.parallel = None;
        self
    }

    /// The most node executions before the run fails with
    /// [`Error::RecursionLimit`](crate::Error::RecursionLimit).
    pub fn recursion_limit(mut self, limit: u64) -> Self {
        self.recursion_limit = limit;
        self
    }

    /// Sets the budget.
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = budget;
        self
    }

    /// Fails the run with [`Error::DeadlineExceeded`](crate::Error::DeadlineExceeded)
    /// when `deadline` passes (checked between super-steps and raced against
    /// every running node and retry delay).
    ///
    /// The deadline is absolute: a config reused after it passed fails its
    /// runs at once. For a limit on each run's own duration, use
    /// [`timeout`](Self::timeout). With both, the earlier instant wins.
    pub fn deadline(mut self, deadline: tokio::time::Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Fails the run with [`Error::DeadlineExceeded`](crate::Error::DeadlineExceeded)
    /// once it has run for `timeout`, counted from the moment each run (or
    /// resume) starts, not from when the config was built, so one config
    /// can serve many runs. With a [`deadline`](Self::deadline) too, the
    /// earlier instant wins.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The retry policy of nodes that set none.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// The attempt timeout of nodes that set none.
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = Some(timeout);
        self
    }

    /// Attaches a sink that receives every event and is flushed before the
    /// run returns.
    pub fn sink(mut self, sink: impl TraceSink + 'static) -> Self {
        self.sinks.push(Arc::new(sink));
        self
    }

    /// Attaches a shared sink.
    pub fn shared_sink(mut self, sink: Arc<dyn TraceSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Rewrites every event with `redactor` before any sink or subscriber
    /// sees it (to remove personal data and credentials). One per run; a
    /// second call replaces the first.
    pub fn redactor(mut self, redactor: Arc<dyn EventRedactor>) -> Self {
        self.redactor = Some(redactor);
        self
    }

    /// Prices model calls with `pricing` instead of the built-in table.
    pub fn pricing(mut self, pricing: Arc<dyn Pricing>) -> Self {
        self.pricing = pricing;
        self
    }

    /// What to do when a model call's model has no price.
    pub fn missing_price(mut self, policy: MissingPrice) -> Self {
        self.missing_price = policy;
        self
    }

    /// Answers repeated model calls from `cache`.
    pub fn cache(mut self, cache: Arc<dyn Cache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Cancels the run when `token` is canceled (the run also has its own
    /// handle; see [`CompiledGraph::stream`](crate::CompiledGraph::stream)).
    pub fn cancellation_token(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// How many events a live subscriber may fall behind before it starts
    /// missing them (default 1024).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// The completion size assumed for budget pre-checks of model calls that
    /// set no `max_tokens` (default 4096).
    pub fn assumed_max_output_tokens(mut self, tokens: u32) -> Self {
        self.assumed_max_output_tokens = tokens;
        self
    }

    /// Makes the run durable: a checkpoint is written to `checkpointer`
    /// after every super-step (see [`durability`](Self::durability)), so the
    /// run survives a crash and can be interrupted, resumed and forked.
    pub fn checkpointer(mut self, checkpointer: Arc<dyn Checkpointer>) -> Self {
        self.checkpointer = Some(checkpointer);
        self
    }

    /// The durable identity of the run (defaults to the run id).
    pub fn thread(mut self, thread: impl Into<ThreadId>) -> Self {
        self.thread = Some(thread.into());
        self
    }

    /// When checkpoints are written (default [`Durability::Sync`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Stops before these nodes run, for a human decision (in addition to
    /// those set on the graph).
    pub fn interrupt_before<I, N>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<NodeId>,
    {
        self.interrupt_before
            .extend(nodes.into_iter().map(Into::into));
        self
    }

    /// Stops after these nodes ran, for a human decision (in addition to
    /// those set on the graph).
    pub fn interrupt_after<I, N>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<NodeId>,
    {
        self.interrupt_after
            .extend(nodes.into_iter().map(Into::into));
        self
    }

    /// Gives every interrupt of this run a deadline: once `after` has passed
    /// since the interrupt, resuming the thread without a decision applies
    /// `default` (approve, reject or escalate), recorded as decided by
    /// `deadline`. A sweeper can simply call [`CompiledGraph::invoke`](crate::CompiledGraph::invoke) with `RunInput::Resume` on
    /// waiting threads.
    pub fn interrupt_deadline(mut self, after: Duration, default: DefaultDecision) -> Self {
        self.interrupt_deadline = Some((after, default));
        self
    }

    /// A kill switch checked at every safe point: when it fires, the run
    /// stops with status `halted` and its checkpoint is kept. Routers that
    /// read [`RouteContext::halt_requested`](crate::graph::RouteContext::halt_requested)
    /// take over: the run then goes on along the branch they chose (for
    /// clean-up) and ends as `halted`.
    pub fn halt_signal(mut self, signal: Arc<dyn HaltSignal>) -> Self {
        self.halt = Some(signal);
        self
    }

    /// When checkpoints hold the full state instead of deltas (default:
    /// every 64 checkpoints or 1 MiB of deltas), so resuming reads the
    /// latest snapshot and a short tail.
    pub fn snapshots(mut self, policy: SnapshotPolicy) -> Self {
        self.snapshots = policy;
        self
    }

    /// Which steps the run's summary covers (default: this run's; with
    /// [`SummaryScope::Thread`], the whole thread's history too).
    pub fn summary_scope(mut self, scope: SummaryScope) -> Self {
        self.summary_scope = scope;
        self
    }

    /// What a new run does on a thread whose last run finished (default:
    /// continue it).
    pub fn finished_thread(mut self, policy: FinishedThread) -> Self {
        self.finished_thread = policy;
        self
    }

    /// Sets one entry of the thread's metadata (tenant, user, conversation,
    /// ...), written with the run's first checkpoint and used by
    /// [`Checkpointer::list_threads`](crate::checkpoint::Checkpointer) filters.
    pub fn thread_metadata(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.metadata.insert(key.into(), value);
        self
    }

    /// The budget.
    pub fn get_budget(&self) -> &Budget {
        &self.budget
    }

    /// The concurrency cap, when parallel.
    pub fn get_parallel(&self) -> Option<usize> {
        self.parallel
    }
}
