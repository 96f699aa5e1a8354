//! What a node's context reaches of its run: the services every step
//! shares (ids, clock, event bus, pricing, cache, budget ledger, cancellation)
//! and where the task sits (its scope). The engine creates these; this
//! module imports nothing from it.

use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::ids::{NodeId, RunId, StepId};
use crate::pricing::{Ledger, MissingPrice, Pricing};
use crate::trace::{EventBus, EventKind, Timestamp, TraceEvent};

/// The run-wide services a node's context uses.
pub(crate) struct RunServices {
    pub(crate) run_id: RunId,
    pub(crate) bus: EventBus,
    pub(crate) start: Instant,
    pub(crate) start_ts: Timestamp,
    pub(crate) pricing: Arc<dyn Pricing>,
    pub(crate) missing_price: MissingPrice,
    pub(crate) cache: Option<Arc<dyn Cache>>,
    pub(crate) ledger: Ledger,
    pub(crate) default_max_output_tokens: u32,
    pub(crate) cancel: CancellationToken,
}

impl fmt::Debug for RunServices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunServices")
            .field("run_id", &self.run_id)
            .finish_non_exhaustive()
    }
}

impl RunServices {
    /// The wall-clock timestamp of `at`, on the run's monotonic clock.
    pub(crate) fn ts(&self, at: Instant) -> Timestamp {
        self.start_ts
            .plus_micros(at.saturating_duration_since(self.start).as_micros() as u64)
    }

    pub(crate) fn event(
        &self,
        at: Instant,
        step_id: Option<StepId>,
        parent_step_id: Option<StepId>,
        node: Option<&NodeId>,
        attempt: u32,
        kind: EventKind,
    ) {
        self.bus.emit(TraceEvent {
            ts: self.ts(at),
            run_id: self.run_id.clone(),
            step_id,
            parent_step_id,
            node: node.cloned(),
            attempt,
            kind,
        });
    }
}

/// The id prefix, subgraph path and task positions of an executor: empty
/// path at the top level; one entry per subgraph task it runs inside.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scope {
    /// `{thread}:` at the top level, then `{super-step}:{node}.{task}/` per
    /// subgraph level.
    pub(crate) id_prefix: String,
    pub(crate) path: Vec<NodeId>,
    pub(crate) tasks: Vec<u32>,
}

impl Scope {
    /// The top-level scope of `thread` (the run id stands in without one).
    pub(crate) fn top(thread: &str) -> Self {
        Self {
            id_prefix: format!("{thread}:"),
            path: Vec::new(),
            tasks: Vec::new(),
        }
    }

    /// The scope of a subgraph run by task `task` of `node` in super-step
    /// `superstep` of this scope.
    pub(crate) fn child(&self, superstep: u64, node: &NodeId, task: u32) -> Self {
        let mut path = self.path.clone();
        path.push(node.clone());
        let mut tasks = self.tasks.clone();
        tasks.push(task);
        Self {
            id_prefix: format!("{}{superstep}:{node}.{task}/", self.id_prefix),
            path,
            tasks,
        }
    }

    pub(crate) fn is_nested(&self) -> bool {
        !self.path.is_empty()
    }
}
