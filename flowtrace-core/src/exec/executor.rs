//! The super-step executor.

use std::sync::Arc;

use tokio::time::Instant;

use crate::trace::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{Interrupt, PendingWrite, SubgraphState};
use crate::error::Error;
use crate::error::SubgraphPause;
use crate::exec::durable::Durable;
use crate::exec::shared::RunShared;
use crate::graph::Inner;
use crate::graph::compile::Target;
use crate::ids::StepId;
use crate::node::Scope;
use crate::node::{Dispatch, NodeOutput, StepShared};
use crate::pricing::Amount;
use crate::pricing::{Cost, TokenUsage};
use crate::state::State;
use crate::trace::StepRecord;
use crate::trace::{EventKind, RunStatus, StepStatus, TraceEvent};

/// A node to run in the next super-step, with its dispatch input and what
/// humans already told it.
pub(crate) struct Task {
    pub(crate) node: usize,
    pub(crate) input: Option<serde_json::Value>,
    /// Position in the super-step (set when the super-step starts).
    pub(crate) index: u32,
    /// Answers to the task's `interrupt` calls so far, in call order.
    pub(crate) answers: Vec<serde_json::Value>,
    /// The approval's payload, for a task released from `interrupt_before`.
    pub(crate) approved: Option<serde_json::Value>,
    /// For a subgraph task paused inside its subgraph: where it stands.
    pub(crate) subgraph: Option<Box<SubgraphState>>,
    /// The task's result saved before a crash, pause or failure (replayed
    /// instead of running the task again), or the skip of a rejected task.
    pub(crate) saved: Option<Box<PendingWrite>>,
}

impl Task {
    pub(crate) fn new(node: usize, input: Option<serde_json::Value>) -> Self {
        Self {
            node,
            input,
            index: 0,
            answers: Vec::new(),
            approved: None,
            subgraph: None,
            saved: None,
        }
    }
}

/// What a subgraph run by a node did: finished with its state, or paused.
pub(crate) enum Nested<S> {
    Finished(S),
    Paused(SubgraphPause),
}

/// Why the super-step loop stopped without an error.
pub(crate) enum Stop {
    Completed,
    Interrupted(Vec<Interrupt>),
    Halted,
}

/// Join bookkeeping of one node for the current activation.
#[derive(Default)]
pub(crate) struct Pending {
    pub(crate) resolved: u32,
    pub(crate) fired: u32,
    pub(crate) inputs: Vec<serde_json::Value>,
}

/// Why a task stopped for a human.
pub(super) enum TaskPause {
    /// The node's `interrupt` call number `call` asked this.
    Asked {
        call: u32,
        payload: serde_json::Value,
    },
    /// A subgraph run by the node paused.
    Subgraph(Arc<SubgraphPause>),
}

pub(super) struct TaskOutcome<U> {
    pub(super) node: usize,
    pub(super) index: u32,
    pub(super) output: Option<NodeOutput<U>>,
    /// Boxed, like `pause`: rare, and a smaller outcome is cheaper to move
    /// on every step.
    pub(super) error: Option<Box<Error>>,
    /// Why the task stopped for a human, if it did.
    pub(super) pause: Option<Box<TaskPause>>,
    /// A task a human rejected: recorded as skipped, its successors skip.
    pub(super) rejected: bool,
    pub(super) sibling_canceled: bool,
    pub(super) record: StepRecord,
    /// The update, already serialized (saved as a pending write).
    pub(super) update_json: Option<serde_json::Value>,
}

/// How a task's step ended.
pub(super) struct Ended<U> {
    pub(super) output: Option<NodeOutput<U>>,
    /// Boxed (as in the outcome): rare, and a small `Ended` is cheap to
    /// return on every step.
    pub(super) error: Option<Box<Error>>,
    pub(super) pause: Option<Box<TaskPause>>,
    pub(super) status: StepStatus,
    pub(super) sibling_canceled: bool,
}

impl<U> Ended<U> {
    /// The outcome of `task`'s step, as the super-step merges it.
    pub(super) fn into_outcome(self, task: &Task, record: StepRecord) -> TaskOutcome<U> {
        TaskOutcome {
            node: task.node,
            index: task.index,
            output: self.output,
            error: self.error,
            pause: self.pause,
            rejected: false,
            sibling_canceled: self.sibling_canceled,
            update_json: None,
            record,
        }
    }
}

/// Runs one graph (the top-level one or a subgraph) inside a run.
pub(crate) struct Executor<'g, S: State> {
    pub(super) graph: &'g Inner<S>,
    pub(super) run: Arc<RunShared>,
    pub(super) parent_step: Option<StepId>,
    /// The token that stops this graph: the run's, or for a subgraph the
    /// parent step's.
    pub(super) cancel: CancellationToken,
    pub(crate) state: Arc<S>,
    pub(crate) pending: super::joins::Joins,
    /// `propagate`'s chosen successors and the targets named in its route
    /// event.
    pub(super) chosen: super::joins::NodeSet,
    pub(super) named: super::joins::NodeSet,
    pub(crate) records: Vec<StepRecord>,
    pub(super) generation: u64,
    pub(super) scheduled: Vec<u64>,
    /// Reused per super-step to avoid allocating.
    pub(super) outcomes: Vec<TaskOutcome<S::Update>>,
    pub(super) reservations: Vec<Amount>,
    pub(super) completed: Vec<(usize, usize, Vec<Dispatch>)>,
    /// Checkpoint writer, for durable runs.
    pub(crate) durable: Option<Durable>,
    /// Super-steps completed in the thread.
    pub(crate) superstep: u64,
    pub(crate) interrupt_before: Vec<usize>,
    pub(crate) interrupt_after: Vec<usize>,
    /// Where this executor sits (top level or inside subgraph tasks).
    pub(crate) scope: Arc<Scope>,
    /// Where a subgraph stands when it paused (nested executors only).
    pub(super) paused: Option<SubgraphState>,
    /// The last sequential step's shared data, when its node kept no
    /// context: the next step reuses the allocation.
    pub(super) spare_step: Option<Arc<StepShared>>,
}

impl<'g, S: State> Executor<'g, S> {
    pub(crate) fn new(
        graph: &'g Inner<S>,
        run: Arc<RunShared>,
        parent_step: Option<StepId>,
        cancel: CancellationToken,
        state: Arc<S>,
    ) -> Self {
        let n = graph.nodes.len();
        let scope = Arc::new(Scope::top(run.run_id.as_str()));
        Self {
            graph,
            run,
            parent_step,
            cancel,
            state,
            pending: super::joins::Joins::new(n),
            chosen: Default::default(),
            named: Default::default(),
            // One record per node is the common case (no loops, no skips).
            records: Vec::with_capacity(n),
            generation: 1,
            scheduled: vec![0; n],
            outcomes: Vec::new(),
            reservations: Vec::new(),
            completed: Vec::new(),
            durable: None,
            superstep: 0,
            interrupt_before: graph.interrupt_before.clone(),
            interrupt_after: graph.interrupt_after.clone(),
            scope,
            paused: None,
            spare_step: None,
        }
    }

    pub(super) fn emit(
        &self,
        at: Instant,
        step: Option<StepId>,
        node: Option<usize>,
        attempt: u32,
        kind: EventKind,
    ) {
        self.emit_ts(self.run.ts(at), step, node, attempt, kind);
    }

    /// [`emit`](Self::emit) at a timestamp already computed.
    #[inline]
    pub(super) fn emit_ts(
        &self,
        ts: Timestamp,
        step: Option<StepId>,
        node: Option<usize>,
        attempt: u32,
        kind: EventKind,
    ) {
        // Built here rather than through `RunServices::event`, so the event
        // is written once, in place.
        self.run.bus.emit(TraceEvent {
            ts,
            run_id: self.run.run_id.clone(),
            step_id: step,
            parent_step_id: self.parent_step,
            node: node.map(|n| self.graph.nodes[n].id.clone()),
            attempt,
            kind,
        });
    }

    /// Emits the event `kind` builds, building it only if a sink or a live
    /// subscriber will receive it (for events other than the top-level
    /// run's bookends, which [`emit`](Self::emit) always delivers).
    pub(super) fn emit_with(
        &self,
        at: Instant,
        step: Option<StepId>,
        node: Option<usize>,
        attempt: u32,
        kind: impl FnOnce() -> EventKind,
    ) {
        if self.run.bus.wants_event() {
            self.emit(at, step, node, attempt, kind());
        }
    }

    /// [`emit_with`](Self::emit_with) at a timestamp already computed.
    pub(super) fn emit_with_ts(
        &self,
        ts: Timestamp,
        step: Option<StepId>,
        node: Option<usize>,
        attempt: u32,
        kind: impl FnOnce() -> EventKind,
    ) {
        if self.run.bus.wants_event() {
            // Built in place, as in `emit_ts` (every step emits two).
            self.run.bus.emit(TraceEvent {
                ts,
                run_id: self.run.run_id.clone(),
                step_id: step,
                parent_step_id: self.parent_step,
                node: node.map(|n| self.graph.nodes[n].id.clone()),
                attempt,
                kind: kind(),
            });
        }
    }

    /// Runs the graph as a subgraph of the current run (from its entries, or
    /// from `resume`, where it paused before), returning its final state or
    /// where it paused. Its step records join the run's.
    pub(crate) async fn execute_nested(
        mut self,
        resume: Option<Box<SubgraphState>>,
    ) -> Result<Nested<S>, Error> {
        let started = Instant::now();
        self.emit(
            started,
            None,
            None,
            0,
            EventKind::RunStarted {
                graph: self.graph.name.clone(),
            },
        );
        let ready = match resume {
            None => Ok(self.entry_tasks()),
            Some(saved) => self.restore(*saved),
        };
        let result = match ready {
            Ok(ready) => match self.execute(ready).await {
                Ok(Stop::Interrupted(interrupts)) => match self.paused.take() {
                    Some(state) => Ok(Some(SubgraphPause { state, interrupts })),
                    None => Err(Error::aborted(
                        "a subgraph paused without saving where it stood",
                    )),
                },
                Ok(_) => Ok(None),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let finished = Instant::now();
        let usage: TokenUsage = self.records.iter().map(|r| r.usage).sum();
        let cost: Cost = self.records.iter().map(|r| r.cost).sum();
        let executions = self
            .records
            .iter()
            .filter(|r| r.status != StepStatus::Skipped)
            .count() as u64;
        let status = match &result {
            Ok(Some(_)) => RunStatus::Interrupted,
            other => status_of(other),
        };
        self.emit(
            finished,
            None,
            None,
            0,
            EventKind::RunFinished {
                status,
                usage,
                cost,
                node_executions: executions,
                elapsed_us: finished.saturating_duration_since(started).as_micros() as u64,
                error: result.as_ref().err().map(|e| e.report().to_string()),
            },
        );
        let records = std::mem::take(&mut self.records);
        self.run
            .nested_steps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(records);
        match result? {
            Some(pause) => Ok(Nested::Paused(pause)),
            None => Ok(Nested::Finished(
                Arc::try_unwrap(self.state).unwrap_or_else(|shared| (*shared).clone()),
            )),
        }
    }

    pub(crate) fn node_index(&self, node: &crate::ids::NodeId) -> Result<usize, Error> {
        self.graph
            .index
            .get(node.as_str())
            .copied()
            .ok_or_else(|| Error::GraphMismatch {
                thread: self
                    .durable
                    .as_ref()
                    .map(|d| d.thread.clone())
                    .unwrap_or_else(|| crate::ids::ThreadId::new(self.run.run_id.as_str())),
                node: node.to_string(),
            })
    }

    pub(crate) fn run_shared(&self) -> &Arc<RunShared> {
        &self.run
    }

    /// The forward, back-edge and dispatch targets of `node`.
    pub(crate) fn successors(&self, node: usize) -> Vec<usize> {
        let cn = &self.graph.nodes[node];
        let mut out: Vec<usize> = cn.forward.iter().chain(cn.back.iter()).copied().collect();
        out.extend(cn.dispatch.iter().copied());
        if let Some(r) = &cn.router {
            for b in &r.branches {
                for t in &b.targets {
                    if let Target::Node(t) = t {
                        out.push(*t);
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The first super-step's tasks of a fresh run: the entries.
    pub(crate) fn entry_tasks(&mut self) -> Vec<Task> {
        let mut ready = Vec::new();
        for &e in &self.graph.entries {
            self.fire_forward(e, Vec::new(), &mut ready);
        }
        self.generation += 1;
        ready
    }

    /// Emits an `error` event for `e`.
    pub(super) fn emit_error(
        &self,
        at: Instant,
        step: Option<StepId>,
        node: Option<usize>,
        attempt: u32,
        e: &Error,
    ) {
        self.emit_with(at, step, node, attempt, || EventKind::Error {
            error_kind: e.kind().to_string(),
            message: e.report().to_string(),
        });
    }

    pub(super) fn emit_log(&self, level: crate::trace::LogLevel, message: &str) {
        self.emit_with(Instant::now(), None, None, 0, || EventKind::Log {
            level,
            message: message.to_string(),
        });
    }
}

pub(crate) fn status_of<T>(result: &Result<T, Error>) -> RunStatus {
    match result {
        Ok(_) => RunStatus::Succeeded,
        Err(Error::Canceled { .. }) => RunStatus::Canceled,
        Err(_) => RunStatus::Failed,
    }
}

#[cfg(test)]
mod future_sizes {
    //! Every step creates these futures; keeping them small keeps per-step
    //! overhead in the hundreds of nanoseconds (rarely used paths are boxed).
    use super::*;
    use crate::node::{NodeContext, StepShared};
    use crate::pricing::Amount;
    use crate::{GraphBuilder, JsonState, NodeOutput, RunConfig, node_fn};
    use tokio::time::Instant;

    #[test]
    fn hot_path_futures_stay_small() {
        let g = GraphBuilder::<JsonState>::new("g")
            .add_node("a", node_fn(|_s, _c| async { Ok(NodeOutput::none()) }))
            .set_entry("a")
            .set_finish("a")
            .compile()
            .unwrap();
        let run = Arc::new(RunShared::new(&RunConfig::new(), crate::RunId::new("r")));
        let mut exec = Executor::new(
            &g.inner,
            run.clone(),
            None,
            run.cancel.clone(),
            Arc::new(JsonState::new()),
        );
        let c = run.cancel.clone();
        let step = Arc::new(StepShared {
            run: run.services.clone(),
            engine: run.clone(),
            step_id: StepId(1),
            parent_step: None,
            node: "a".into(),
            input: None,
            cancel: None,
            meter: Default::default(),
            answers: Vec::new(),
            calls: Default::default(),
            approval: None,
            subgraph: Default::default(),
            attempt_cancel: Default::default(),
            scope: Default::default(),
            thread: None,
            superstep: 0,
            task_index: 0,
        });
        let attempt = std::mem::size_of_val(&exec.attempt(
            &g.inner.nodes[0],
            NodeContext::new(step, 1),
            Instant::now(),
            None,
            &c,
        ));
        let t = Task::new(0, None);
        let task = std::mem::size_of_val(&exec.execute_task(&t, Amount::ZERO, None, &mut None));
        let execute = std::mem::size_of_val(&exec.execute(Vec::new()));
        assert!(attempt <= 400, "attempt future is {attempt} bytes");
        assert!(task <= 800, "execute_task future is {task} bytes");
        assert!(execute <= 1152, "execute future is {execute} bytes");
    }
}
