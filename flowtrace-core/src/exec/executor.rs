//! The super-step executor.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::checkpoint::{
    CHECKPOINT_FORMAT_VERSION, Checkpoint, Interrupt, InterruptWhen, JoinState, PendingWrite,
    StateRecord, SubgraphState, TaskError, TaskSpec, ThreadStatus,
};
use crate::error::SubgraphPause;
use crate::error::{BudgetBreach, BudgetExceeded, Error, NodeError};
use crate::exec::durable::check_value_depth;
use crate::exec::durable::{Durable, to_json};
use crate::exec::shared::{RunShared, StopReason};
use crate::graph::compile::{CompiledNode, Target};
use crate::graph::{Inner, Routes};
use crate::ids::StepId;
use crate::node::Scope;
use crate::node::{Dispatch, NodeContext, NodeOutput, StepMeter, StepShared};
use crate::pricing::Amount;
use crate::pricing::{Cost, TokenUsage};
use crate::state::State;
use crate::trace::StepRecord;
use crate::trace::{EventKind, RunStatus, StepStatus};

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

/// Why an attempt (or the wait before the next) ended without output.
enum Failure {
    Node(NodeError),
    Timeout(Duration),
    Canceled,
    SiblingCanceled,
    Stop(StopReason),
    Panicked(String),
}

impl Failure {
    fn describe(&self) -> String {
        match self {
            Failure::Node(e) => crate::error::Report::new(e).to_string(),
            Failure::Timeout(t) => format!("attempt timed out after {t:?}"),
            Failure::Canceled | Failure::SiblingCanceled => "canceled".into(),
            Failure::Stop(StopReason::Deadline) => "run deadline passed".into(),
            Failure::Stop(StopReason::DurationBudget) => "run duration budget exhausted".into(),
            Failure::Panicked(m) => format!("panicked: {m}"),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Node(e) => e.retry_after(),
            _ => None,
        }
    }
}

/// Why a task stopped for a human.
enum TaskPause {
    /// The node's `interrupt` call number `call` asked this.
    Asked {
        call: u32,
        payload: serde_json::Value,
    },
    /// A subgraph run by the node paused.
    Subgraph(Arc<SubgraphPause>),
}

struct TaskOutcome<U> {
    node: usize,
    index: u32,
    output: Option<NodeOutput<U>>,
    error: Option<Error>,
    /// Why the task stopped for a human, if it did.
    pause: Option<TaskPause>,
    /// A task a human rejected: recorded as skipped, its successors skip.
    rejected: bool,
    sibling_canceled: bool,
    record: StepRecord,
    /// The update, already serialized (saved as a pending write).
    update_json: Option<serde_json::Value>,
}

/// Runs one graph (the top-level one or a subgraph) inside a run.
pub(crate) struct Executor<'g, S: State> {
    graph: &'g Inner<S>,
    run: Arc<RunShared>,
    parent_step: Option<StepId>,
    /// The token that stops this graph: the run's, or for a subgraph the
    /// parent step's.
    cancel: CancellationToken,
    pub(crate) state: Arc<S>,
    pub(crate) pending: super::joins::Joins,
    /// `propagate`'s chosen successors and the targets named in its route
    /// event.
    chosen: super::joins::NodeSet,
    named: super::joins::NodeSet,
    pub(crate) records: Vec<StepRecord>,
    generation: u64,
    scheduled: Vec<u64>,
    /// Reused per super-step to avoid allocating.
    outcomes: Vec<TaskOutcome<S::Update>>,
    reservations: Vec<Amount>,
    completed: Vec<(usize, usize, Vec<Dispatch>)>,
    /// Checkpoint writer, for durable runs.
    pub(crate) durable: Option<Durable>,
    /// Super-steps completed in the thread.
    pub(crate) superstep: u64,
    pub(crate) interrupt_before: Vec<usize>,
    pub(crate) interrupt_after: Vec<usize>,
    /// Where this executor sits (top level or inside subgraph tasks).
    pub(crate) scope: Arc<Scope>,
    /// Where a subgraph stands when it paused (nested executors only).
    paused: Option<SubgraphState>,
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
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
        }
    }

    fn emit(
        &self,
        at: Instant,
        step: Option<StepId>,
        node: Option<usize>,
        attempt: u32,
        kind: EventKind,
    ) {
        self.run.event(
            at,
            step,
            self.parent_step,
            node.map(|n| &self.graph.nodes[n].id),
            attempt,
            kind,
        );
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

    /// Positions a nested executor (whose state is already the saved one)
    /// where its subgraph paused and returns the tasks to run.
    fn restore(&mut self, saved: SubgraphState) -> Result<Vec<Task>, Error> {
        self.superstep = saved.step;
        self.restore_joins(&saved.joins)?;
        self.tasks_from(saved.frontier, saved.writes)
    }

    /// Restores partially resolved joins.
    pub(crate) fn restore_joins(&mut self, joins: &[JoinState]) -> Result<(), Error> {
        for j in joins {
            let i = self.node_index(&j.node)?;
            let p = &mut self.pending[i];
            p.resolved = j.resolved;
            p.fired = j.fired;
            p.inputs = j.inputs.clone();
        }
        Ok(())
    }

    /// The tasks of a stored frontier, with their saved results attached
    /// (`writes` are by position in `frontier`).
    pub(crate) fn tasks_from(
        &self,
        frontier: Vec<TaskSpec>,
        writes: Vec<PendingWrite>,
    ) -> Result<Vec<Task>, Error> {
        let mut tasks = Vec::with_capacity(frontier.len());
        for spec in frontier {
            let mut t = Task::new(self.node_index(&spec.node)?, spec.input);
            t.answers = spec.answers;
            t.approved = spec.approved;
            t.subgraph = spec.subgraph;
            tasks.push(t);
        }
        for w in writes {
            if let Some(t) = tasks.get_mut(w.task as usize)
                && self.graph.nodes[t.node].id == w.node
            {
                t.saved = Some(Box::new(w));
            }
        }
        Ok(tasks)
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

    /// Re-evaluates the edges out of `node` (after a human edited the state
    /// as if the node had produced it), adding what they schedule to `next`.
    pub(crate) fn reroute(&mut self, node: usize, next: &mut Vec<Task>) -> Result<(), Error> {
        self.propagate(node, usize::MAX, Vec::new(), next)?;
        self.generation += 1;
        Ok(())
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

    /// Runs super-steps from `ready` until no node is ready, a human
    /// decision or a halt stops the run, or something fails.
    pub(crate) async fn execute(&mut self, mut ready: Vec<Task>) -> Result<Stop, Error> {
        let cancel = self.cancel.clone();
        let cancel = &cancel;
        let mut next: Vec<Task> = Vec::new();
        let nested = self.scope.is_nested();
        while !ready.is_empty() {
            if ready.len() > 1 {
                // Deterministic order: graph order, then dispatch order.
                ready.sort_by_key(|t| t.node);
            }
            for (i, t) in ready.iter_mut().enumerate() {
                t.index = i as u32;
            }
            if !nested && self.run.halt_requested() && !self.run.halt_observed() {
                self.emit_log(
                    crate::trace::LogLevel::Warn,
                    "halt requested: stopping at a safe point",
                );
                Box::pin(self.commit_stop(&ready, ThreadStatus::Halted, Vec::new(), None)).await?;
                return Ok(Stop::Halted);
            }
            if !self.interrupt_before.is_empty() {
                let gates = self.gates_before(&ready);
                if !gates.is_empty() {
                    return Box::pin(self.pause(&ready, gates)).await;
                }
            }
            // A sink over its buffer bound slows the run down here.
            self.run.bus.backpressure(cancel).await;
            if let Err(e) = self.safe_point(&ready, cancel) {
                self.emit(
                    Instant::now(),
                    None,
                    None,
                    0,
                    EventKind::Error {
                        error_kind: e.kind().to_string(),
                        message: e.report().to_string(),
                    },
                );
                return Err(Box::pin(self.fail(&ready, None, e)).await);
            }
            let first_record = self.records.len();
            let mut outcomes = std::mem::take(&mut self.outcomes);
            if ready.len() == 1 && ready[0].saved.is_none() {
                // The common case (chains): one task, nothing to reserve
                // across siblings or to replay.
                let task = &ready[0];
                let cfg = &self.graph.nodes[task.node].config;
                let amount = Amount {
                    tokens: cfg.estimated_tokens,
                    cost: cfg.estimated_cost,
                };
                if let Err(b) = self
                    .run
                    .ledger
                    .reserve(amount, &self.graph.nodes[task.node].id)
                {
                    return Err(Box::pin(self.fail(&ready, None, Error::BudgetExceeded(b))).await);
                }
                outcomes.push(self.execute_task(task, amount, None).await);
            } else {
                let mut reservations = std::mem::take(&mut self.reservations);
                let ran =
                    Box::pin(self.superstep(&ready, &mut reservations, &mut outcomes, cancel))
                        .await;
                self.reservations = reservations;
                if let Err(e) = ran {
                    outcomes.clear();
                    self.outcomes = outcomes;
                    return Err(Box::pin(self.fail(&ready, None, e)).await);
                }
            }

            // A failure ends the run; the finished siblings' results are
            // kept, so resuming runs only what did not finish.
            if let Some(pos) = outcomes
                .iter()
                .position(|o| o.error.is_some() && !o.sibling_canceled)
            {
                let e = Box::pin(self.fail_superstep(&mut ready, &mut outcomes, pos)).await;
                self.outcomes = outcomes;
                return Err(e);
            }
            // Nodes asked for humans: keep the finished siblings' results,
            // surface every question at once.
            if outcomes.iter().any(|o| o.pause.is_some()) {
                let stop = Box::pin(self.pause_superstep(&mut ready, &mut outcomes)).await;
                self.outcomes = outcomes;
                return stop;
            }

            // Merge every successful update, in task order.
            let durable = self.durable.is_some();
            let mut deltas: Vec<serde_json::Value> = Vec::new();
            let mut failure: Option<Error> = None;
            let mut completed = std::mem::take(&mut self.completed);
            let mut rejected: Vec<usize> = Vec::new();
            for o in outcomes.drain(..) {
                let idx = self.records.len();
                self.records.push(o.record);
                if o.rejected {
                    rejected.push(o.node);
                    continue;
                }
                if let Some(out) = o.output {
                    if let Some(update) = out.update {
                        if durable {
                            match o.update_json {
                                Some(v) => deltas.push(v),
                                None => {
                                    match to_json(&update, Some(&self.graph.nodes[o.node].id)) {
                                        Ok(v) => deltas.push(v),
                                        Err(e) => {
                                            failure.get_or_insert(e);
                                        }
                                    }
                                }
                            }
                        }
                        Arc::make_mut(&mut self.state).apply(update);
                    }
                    match completed.last_mut() {
                        Some(last) if last.0 == o.node => {
                            last.1 = idx;
                            last.2.extend(out.dispatches);
                        }
                        _ => completed.push((o.node, idx, out.dispatches)),
                    }
                }
            }
            self.outcomes = outcomes;
            if let Some(e) = failure {
                completed.clear();
                self.completed = completed;
                return Err(Box::pin(self.fail(&ready, None, e)).await);
            }

            // Evaluate edges against the merged state.
            let mut ran_nodes: Vec<usize> = Vec::new();
            let mut routed = Ok(());
            for (node, record, dispatches) in completed.drain(..) {
                if durable || nested || !self.interrupt_after.is_empty() || !rejected.is_empty() {
                    ran_nodes.push(node);
                }
                routed = self.propagate(node, record, dispatches, &mut next);
                if routed.is_err() {
                    break;
                }
            }
            completed.clear();
            self.completed = completed;
            if let Err(e) = routed {
                return Err(Box::pin(self.fail(&ready, None, e)).await);
            }
            if !rejected.is_empty() {
                self.skip_rejected(&rejected, &ran_nodes, &mut next);
            }
            self.generation += 1;
            self.superstep += 1;

            let mut gates = Vec::new();
            if !self.interrupt_after.is_empty() {
                for &n in &ran_nodes {
                    if self.interrupt_after.contains(&n)
                        && !gates
                            .iter()
                            .any(|i: &Interrupt| i.node == self.graph.nodes[n].id)
                    {
                        gates.push(self.new_interrupt(
                            n,
                            InterruptWhen::After,
                            serde_json::Value::Null,
                            0,
                            0,
                        ));
                    }
                }
            }
            if self.durable.is_some() && !nested {
                let status = match (gates.is_empty(), next.is_empty()) {
                    (false, _) => ThreadStatus::Interrupted,
                    (true, true) => ThreadStatus::Completed,
                    (true, false) => ThreadStatus::Running,
                };
                let steps = self.records[first_record..].to_vec();
                let nodes = ran_nodes
                    .iter()
                    .map(|&n| self.graph.nodes[n].id.clone())
                    .collect();
                if let Err(e) =
                    Box::pin(self.commit_step(deltas, &next, nodes, steps, status, gates.clone()))
                        .await
                {
                    std::mem::swap(&mut ready, &mut next);
                    return Err(e);
                }
            }
            std::mem::swap(&mut ready, &mut next);
            next.clear();
            if !gates.is_empty() {
                return Box::pin(self.pause_after(&ready, gates)).await;
            }
        }
        if !nested && self.run.halt_requested() {
            return Ok(Stop::Halted);
        }
        Ok(Stop::Completed)
    }

    /// Tasks a human rejected: recorded as skipped (done when replayed);
    /// when every instance of a node was rejected, its forward successors
    /// get a skip instead of firing.
    fn skip_rejected(&mut self, rejected: &[usize], ran: &[usize], next: &mut Vec<Task>) {
        let graph = self.graph;
        // Sorted once, so thousands of rejected instances stay linear.
        let mut nodes = rejected.to_vec();
        nodes.sort_unstable();
        nodes.dedup();
        let mut ran = ran.to_vec();
        ran.sort_unstable();
        for n in nodes {
            if ran.binary_search(&n).is_ok() {
                continue;
            }
            let reason = format!("{:?} was rejected by a human", graph.nodes[n].id.as_str());
            for &u in &graph.nodes[n].forward {
                self.skip_token(u, &reason, next);
            }
        }
    }

    fn emit_log(&self, level: crate::trace::LogLevel, message: &str) {
        self.emit(
            Instant::now(),
            None,
            None,
            0,
            EventKind::Log {
                level,
                message: message.to_string(),
            },
        );
    }

    fn emit_interrupt(&self, interrupt: &Interrupt) {
        let node = self.graph.index.get(interrupt.node.as_str()).copied();
        self.emit(
            Instant::now(),
            None,
            node,
            0,
            EventKind::Interrupt {
                payload: serde_json::json!({
                    "interrupt_id": interrupt.id,
                    "when": interrupt.when,
                    "payload": interrupt.payload,
                    "path": interrupt.path,
                    "node_path": interrupt.qualified_node(),
                }),
            },
        );
    }

    fn new_interrupt(
        &self,
        node: usize,
        when: InterruptWhen,
        payload: serde_json::Value,
        task: u32,
        call: u32,
    ) -> Interrupt {
        let id = &self.graph.nodes[node].id;
        let id_text = match when {
            InterruptWhen::During => format!(
                "{}{}:{id}.{task}.{call}",
                self.scope.id_prefix, self.superstep
            ),
            _ => format!("{}{}:{id}", self.scope.id_prefix, self.superstep),
        };
        let created_at = self.run.ts(Instant::now());
        let (deadline, on_timeout) = match &self.run.interrupt_deadline {
            Some((after, default)) => (
                Some(created_at.plus_micros(after.as_micros() as u64)),
                Some(default.clone()),
            ),
            None => (None, None),
        };
        let mut tasks = self.scope.tasks.clone();
        tasks.push(task);
        Interrupt {
            id: id_text,
            node: id.clone(),
            path: self.scope.path.clone(),
            tasks,
            call,
            when,
            payload,
            deadline,
            on_timeout,
            created_at,
        }
    }

    /// The static `interrupt_before` gates the tasks of `ready` meet (one
    /// per node; tasks a human already approved pass).
    fn gates_before(&self, ready: &[Task]) -> Vec<Interrupt> {
        let mut out: Vec<Interrupt> = Vec::new();
        for t in ready {
            if self.interrupt_before.contains(&t.node)
                && t.approved.is_none()
                && t.saved.is_none()
                && !out.iter().any(|i| i.node == self.graph.nodes[t.node].id)
            {
                out.push(self.new_interrupt(
                    t.node,
                    InterruptWhen::Before,
                    serde_json::Value::Null,
                    t.index,
                    0,
                ));
            }
        }
        out
    }

    /// The scheduler's frontier as stored in a checkpoint.
    fn frontier(&self, tasks: &[Task]) -> Vec<TaskSpec> {
        tasks
            .iter()
            .map(|t| TaskSpec {
                node: self.graph.nodes[t.node].id.clone(),
                input: t.input.clone(),
                answers: t.answers.clone(),
                approved: t.approved.clone(),
                subgraph: t.subgraph.clone(),
            })
            .collect()
    }

    /// The saved results of `tasks`, numbered by their positions.
    pub(crate) fn saved_writes(tasks: &[Task]) -> Vec<PendingWrite> {
        tasks
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                t.saved.as_ref().map(|w| {
                    let mut w = (**w).clone();
                    w.task = i as u32;
                    w
                })
            })
            .collect()
    }

    /// A finished task's result as a pending write.
    fn pending_write(&self, o: &TaskOutcome<S::Update>) -> Result<PendingWrite, Error> {
        let id = &self.graph.nodes[o.node].id;
        let (update, dispatches) = match &o.output {
            Some(out) => (
                match (&o.update_json, &out.update) {
                    (Some(v), _) => Some(v.clone()),
                    (None, Some(u)) => Some(to_json(u, Some(id))?),
                    (None, None) => None,
                },
                out.dispatches
                    .iter()
                    .map(|d| (d.target.clone(), d.input.clone()))
                    .collect(),
            ),
            None => (None, Vec::new()),
        };
        Ok(PendingWrite {
            task: o.index,
            node: id.clone(),
            update,
            dispatches,
            step: o.record.clone(),
        })
    }

    /// Stops for humans before running `ready`: records where the graph
    /// stands (a checkpoint at the top level; the subgraph's position for a
    /// nested graph, carried up by its parent task) and surfaces every
    /// question.
    async fn pause(&mut self, ready: &[Task], interrupts: Vec<Interrupt>) -> Result<Stop, Error> {
        if self.scope.is_nested() {
            self.save_position(ready)?;
        } else {
            self.commit_stop(ready, ThreadStatus::Interrupted, interrupts.clone(), None)
                .await?;
        }
        for i in interrupts.iter().filter(|i| i.path == self.scope.path) {
            self.emit_interrupt(i);
        }
        Ok(Stop::Interrupted(interrupts))
    }

    /// Stops after a super-step whose nodes have `interrupt_after` gates
    /// (the top level's checkpoint is already written).
    async fn pause_after(&mut self, next: &[Task], gates: Vec<Interrupt>) -> Result<Stop, Error> {
        if self.scope.is_nested() {
            self.save_position(next)?;
        }
        for i in &gates {
            self.emit_interrupt(i);
        }
        Ok(Stop::Interrupted(gates))
    }

    /// A nested graph's position, for its parent task to carry.
    fn save_position(&mut self, ready: &[Task]) -> Result<(), Error> {
        self.paused = Some(SubgraphState {
            state: to_json(&*self.state, self.scope.path.last())?,
            step: self.superstep,
            frontier: self.frontier(ready),
            joins: self.joins(),
            writes: Self::saved_writes(ready),
        });
        Ok(())
    }

    /// Tasks of the super-step asked for humans: keeps the finished
    /// siblings' results and every task's pause, then stops.
    async fn pause_superstep(
        &mut self,
        ready: &mut [Task],
        outcomes: &mut Vec<TaskOutcome<S::Update>>,
    ) -> Result<Stop, Error> {
        let mut interrupts = Vec::new();
        let mut result = Ok(());
        for o in outcomes.drain(..) {
            match &o.pause {
                Some(TaskPause::Asked { call, payload }) => {
                    interrupts.push(self.new_interrupt(
                        o.node,
                        InterruptWhen::During,
                        payload.clone(),
                        o.index,
                        *call,
                    ));
                }
                Some(TaskPause::Subgraph(p)) => {
                    if let Some(t) = ready.get_mut(o.index as usize) {
                        t.subgraph = Some(Box::new(p.state.clone()));
                    }
                    interrupts.extend(p.interrupts.iter().cloned());
                }
                None => {
                    if o.output.is_some()
                        && o.error.is_none()
                        && ready
                            .get(o.index as usize)
                            .is_some_and(|t| t.saved.is_none())
                    {
                        match self.pending_write(&o) {
                            Ok(w) => {
                                if let Some(t) = ready.get_mut(o.index as usize) {
                                    t.saved = Some(Box::new(w));
                                }
                            }
                            Err(e) => result = Err(e),
                        }
                    }
                }
            }
            self.records.push(o.record);
        }
        result?;
        self.pause(ready, interrupts).await
    }

    /// A task of the super-step failed: keeps the finished siblings'
    /// results (merged into the in-memory state, so the failure report shows
    /// them, and saved with the failed checkpoint, so resuming replays
    /// them) and records the failure.
    async fn fail_superstep(
        &mut self,
        ready: &mut [Task],
        outcomes: &mut Vec<TaskOutcome<S::Update>>,
        pos: usize,
    ) -> Error {
        let failed_task = outcomes[pos].index;
        let mut error = None;
        for mut o in outcomes.drain(..) {
            if o.index == failed_task {
                error = o.error.take();
            } else if o.output.is_some()
                && o.error.is_none()
                && o.pause.is_none()
                && !o.rejected
                && ready
                    .get(o.index as usize)
                    .is_some_and(|t| t.saved.is_none())
                && let Ok(w) = self.pending_write(&o)
                && let Some(t) = ready.get_mut(o.index as usize)
            {
                t.saved = Some(Box::new(w));
            }
            if !o.rejected
                && let Some(update) = o.output.and_then(|out| out.update)
            {
                Arc::make_mut(&mut self.state).apply(update);
            }
            self.records.push(o.record);
        }
        let error = error.unwrap_or_else(|| Error::aborted("a task failed without an error"));
        self.fail(ready, Some(failed_task), error).await
    }

    /// Records a failed run in its thread (top level, durable runs): a
    /// `failed` checkpoint with the super-step's tasks (finished ones with
    /// their saved results) and the error. Returns the error.
    async fn fail(&mut self, ready: &[Task], task: Option<u32>, error: Error) -> Error {
        if self.scope.is_nested() || self.durable.is_none() || matches!(error, Error::Checkpoint(_))
        {
            return error;
        }
        let node = task
            .and_then(|t| ready.get(t as usize))
            .map(|t| self.graph.nodes[t.node].id.clone())
            .or_else(|| error.node().cloned());
        let record = TaskError {
            node,
            task,
            kind: error.kind().to_string(),
            message: error.report().to_string(),
        };
        if let Err(e) = self
            .commit_stop(ready, ThreadStatus::Failed, Vec::new(), Some(record))
            .await
        {
            self.emit_log(
                crate::trace::LogLevel::Error,
                &format!("the failure could not be recorded in the thread: {e}"),
            );
        }
        error
    }

    /// Joins some of whose predecessors have resolved.
    fn joins(&self) -> Vec<JoinState> {
        self.pending
            .open()
            .into_iter()
            .map(|(i, p)| JoinState {
                node: self.graph.nodes[i].id.clone(),
                resolved: p.resolved,
                fired: p.fired,
                inputs: p.inputs.clone(),
            })
            .collect()
    }

    pub(crate) fn checkpoint(
        &self,
        state: StateRecord,
        frontier: &[Task],
        nodes: Vec<crate::ids::NodeId>,
        steps: Vec<StepRecord>,
        status: ThreadStatus,
        interrupts: Vec<Interrupt>,
    ) -> Result<Checkpoint, Error> {
        let (thread, seq) = match &self.durable {
            Some(d) => (d.thread.clone(), d.next_seq()),
            None => (crate::ids::ThreadId::new(self.run.run_id.as_str()), 0),
        };
        for t in frontier {
            if let Some(input) = &t.input {
                check_value_depth(input, Some(&self.graph.nodes[t.node].id))?;
            }
        }
        for i in &interrupts {
            check_value_depth(&i.payload, Some(&i.node))?;
        }
        Ok(Checkpoint {
            thread_id: thread,
            seq,
            parent_seq: seq.checked_sub(1),
            forked_from: None,
            run_id: self.run.run_id.clone(),
            step: self.superstep,
            nodes,
            created_at: self.run.ts(Instant::now()),
            format_version: CHECKPOINT_FORMAT_VERSION,
            state,
            frontier: self.frontier(frontier),
            joins: self.joins(),
            node_executions: self
                .run
                .executions
                .load(std::sync::atomic::Ordering::Acquire),
            steps,
            step_ids: self.run.step_ids_issued(),
            status,
            interrupts,
            approvals: Vec::new(),
            error: None,
            metadata: Default::default(),
        })
    }

    /// Writes a checkpoint that stops the thread before running `ready`
    /// (same frontier, no state change), with the saved results of the
    /// tasks that finished, as one batch.
    async fn commit_stop(
        &mut self,
        ready: &[Task],
        status: ThreadStatus,
        interrupts: Vec<Interrupt>,
        error: Option<TaskError>,
    ) -> Result<(), Error> {
        if self.durable.is_none() {
            return Ok(());
        }
        let mut cp = self.checkpoint(
            StateRecord::Delta(Vec::new()),
            ready,
            Vec::new(),
            Vec::new(),
            status,
            interrupts,
        )?;
        cp.error = error;
        let writes = Self::saved_writes(ready);
        if let Some(d) = self.durable.as_mut() {
            d.commit(cp, writes).await?;
        }
        Ok(())
    }

    /// Writes the checkpoint of a merged super-step (a full snapshot of the
    /// state when the durability settings say one is due).
    async fn commit_step(
        &mut self,
        deltas: Vec<serde_json::Value>,
        next: &[Task],
        nodes: Vec<crate::ids::NodeId>,
        steps: Vec<StepRecord>,
        status: ThreadStatus,
        interrupts: Vec<Interrupt>,
    ) -> Result<(), Error> {
        let snapshot = self
            .durable
            .as_ref()
            .is_some_and(|d| d.snapshot_due(&deltas));
        let state = if snapshot {
            StateRecord::Full(to_json(&*self.state, None)?)
        } else {
            StateRecord::Delta(deltas)
        };
        let cp = self.checkpoint(state, next, nodes, steps, status, interrupts)?;
        if let Some(d) = self.durable.as_mut() {
            d.append(cp).await?;
        }
        Ok(())
    }

    /// Checks cancellation, the deadline, the recursion limit and the
    /// node-execution budget before a super-step, and counts its executions.
    fn safe_point(&self, ready: &[Task], cancel: &CancellationToken) -> Result<(), Error> {
        if cancel.is_cancelled() {
            return Err(Error::Canceled { node: None });
        }
        if let Some((at, reason)) = self.run.stop_at() {
            let now = Instant::now();
            if now >= at {
                return Err(self.stop_error(reason, now, None));
            }
        }
        let n = ready.len() as u64;
        let after = self
            .run
            .executions
            .fetch_add(n, std::sync::atomic::Ordering::AcqRel)
            + n;
        let first_over = |limit: u64| {
            let before = after - n;
            let i = limit.saturating_sub(before).min(n.saturating_sub(1)) as usize;
            self.graph.nodes[ready[i].node].id.clone()
        };
        if after > self.run.recursion_limit {
            self.run
                .executions
                .fetch_sub(n, std::sync::atomic::Ordering::AcqRel);
            return Err(Error::RecursionLimit {
                limit: self.run.recursion_limit,
                node: first_over(self.run.recursion_limit),
            });
        }
        if let Some(limit) = self.run.max_node_executions
            && after > limit
        {
            self.run
                .executions
                .fetch_sub(n, std::sync::atomic::Ordering::AcqRel);
            return Err(Error::BudgetExceeded(BudgetExceeded::new(
                BudgetBreach::NodeExecutions {
                    limit,
                    observed: after,
                },
                Some(first_over(limit)),
                true,
            )));
        }
        Ok(())
    }

    fn stop_error(&self, reason: StopReason, now: Instant, node: Option<usize>) -> Error {
        let elapsed = now.saturating_duration_since(self.run.start);
        let node = node.map(|n| self.graph.nodes[n].id.clone());
        match reason {
            StopReason::Deadline => Error::DeadlineExceeded { elapsed, node },
            StopReason::DurationBudget => Error::BudgetExceeded(BudgetExceeded::new(
                BudgetBreach::Duration {
                    limit: self.run.max_duration.unwrap_or_default(),
                    observed: elapsed,
                },
                node,
                false,
            )),
        }
    }

    /// Reserves the tasks' estimates, then runs them (sequentially, or
    /// concurrently up to the cap). Outcomes come back in task order.
    async fn superstep(
        &self,
        ready: &[Task],
        reservations: &mut Vec<Amount>,
        outcomes: &mut Vec<TaskOutcome<S::Update>>,
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
        let ledger = &self.run.ledger;
        reservations.clear();
        for t in ready.iter() {
            let cfg = &self.graph.nodes[t.node].config;
            let amount = if t.saved.is_some() {
                Amount::ZERO
            } else {
                Amount {
                    tokens: cfg.estimated_tokens,
                    cost: cfg.estimated_cost,
                }
            };
            if let Err(breach) = ledger.reserve(amount, &self.graph.nodes[t.node].id) {
                reservations.drain(..).for_each(|r| ledger.release(r));
                return Err(Error::BudgetExceeded(breach));
            }
            reservations.push(amount);
        }

        let n = ready.len();
        let parallel = self.run.parallel.filter(|_| n > 1);
        let Some(cap) = parallel else {
            let mut tasks = ready.iter().zip(reservations.drain(..));
            for (task, reserved) in tasks.by_ref() {
                let mut o = match &task.saved {
                    Some(w) => self.replayed(task, reserved, w),
                    None => self.execute_task(task, reserved, None).await,
                };
                if n > 1 && self.durable.is_some() {
                    // Boxed so the durable path does not grow every step's future.
                    Box::pin(self.save_pending(&mut o)).await;
                }
                let failed = o.error.is_some();
                outcomes.push(o);
                if failed {
                    break;
                }
            }
            for (_, reserved) in tasks {
                ledger.release(reserved);
            }
            return Ok(());
        };

        Box::pin(self.run_concurrently(ready, reservations, outcomes, cancel, cap)).await;
        Ok(())
    }

    /// Runs a super-step's tasks concurrently, at most `cap` at a time.
    /// Siblings share a child token, canceled when one of them fails.
    async fn run_concurrently(
        &self,
        ready: &[Task],
        reservations: &mut Vec<Amount>,
        outcomes: &mut Vec<TaskOutcome<S::Update>>,
        cancel: &CancellationToken,
        cap: usize,
    ) {
        let n = ready.len();
        let token = cancel.child_token();
        let mut slots: Vec<Option<TaskOutcome<S::Update>>> = (0..n).map(|_| None).collect();
        {
            let token = &token;
            let amounts: Vec<Amount> = std::mem::take(reservations);
            let mut running = futures::stream::iter(0..n)
                .map(|i| {
                    let task = &ready[i];
                    let reserved = amounts.get(i).copied().unwrap_or(Amount::ZERO);
                    async move {
                        let mut o = match &task.saved {
                            Some(w) => self.replayed(task, reserved, w),
                            None => self.execute_task(task, reserved, Some(token)).await,
                        };
                        if self.durable.is_some() {
                            Box::pin(self.save_pending(&mut o)).await;
                        }
                        (i, o)
                    }
                })
                .buffer_unordered(cap);
            while let Some((i, o)) = running.next().await {
                if o.error.is_some() && !o.sibling_canceled {
                    token.cancel();
                }
                if let Some(slot) = slots.get_mut(i) {
                    *slot = Some(o);
                }
            }
        }
        outcomes.extend(slots.into_iter().flatten());
    }

    /// In a durable run, saves a finished task's result as a pending write
    /// right away, so a crash before the super-step commits replays it
    /// instead of running the task again.
    async fn save_pending(&self, o: &mut TaskOutcome<S::Update>) {
        let Some(d) = &self.durable else {
            return;
        };
        if !d.writes_now() || o.update_json.is_some() || o.rejected || o.pause.is_some() {
            return;
        }
        if o.output.is_none() || o.error.is_some() {
            return;
        }
        let write = match self.pending_write(o) {
            Ok(w) => w,
            Err(e) => {
                o.error = Some(e);
                return;
            }
        };
        let update = write.update.clone();
        if let Err(e) = d
            .store
            .put_write(&d.thread, d.next_seq().saturating_sub(1), write)
            .await
        {
            o.error = Some(Error::Checkpoint(e));
        }
        o.update_json = update;
    }

    /// The outcome of a task whose result was saved before (or that a human
    /// rejected): no execution.
    fn replayed(&self, task: &Task, reserved: Amount, w: &PendingWrite) -> TaskOutcome<S::Update> {
        self.run.ledger.release(reserved);
        let id = &self.graph.nodes[task.node].id;
        let rejected = w.step.status == StepStatus::Skipped;
        let update = match &w.update {
            None => Ok(None),
            Some(v) => <S::Update as serde::Deserialize>::deserialize(v).map(Some),
        };
        let (output, error) = match update {
            Ok(update) => (
                Some(NodeOutput {
                    update,
                    dispatches: w
                        .dispatches
                        .iter()
                        .map(|(t, i)| Dispatch::json(t.clone(), i.clone()))
                        .collect(),
                }),
                None,
            ),
            Err(e) => (
                None,
                Some(Error::StateSerialization {
                    node: Some(id.clone()),
                    message: format!("saved result does not match the update type: {e}"),
                }),
            ),
        };
        if rejected {
            self.emit(
                Instant::now(),
                Some(w.step.step_id),
                Some(task.node),
                0,
                EventKind::StepSkipped {
                    reason: w
                        .step
                        .error
                        .clone()
                        .unwrap_or_else(|| "rejected by a human".into()),
                },
            );
        } else {
            self.emit_log(
                crate::trace::LogLevel::Info,
                &format!("replayed the saved result of node {id:?} (not run again)"),
            );
        }
        TaskOutcome {
            node: task.node,
            index: task.index,
            output,
            error,
            pause: None,
            rejected,
            sibling_canceled: false,
            record: w.step.clone(),
            update_json: w.update.clone(),
        }
    }

    /// Runs one task: its attempts, retry delays, events and record.
    /// `group` is the super-step's shared token when siblings run
    /// concurrently; `None` means the run's own token.
    async fn execute_task(
        &self,
        task: &Task,
        reserved: Amount,
        group: Option<&CancellationToken>,
    ) -> TaskOutcome<S::Update> {
        let cn = &self.graph.nodes[task.node];
        let run = &self.run;
        let step_id = run.next_step_id();
        let started = Instant::now();
        self.emit(
            started,
            Some(step_id),
            Some(task.node),
            1,
            EventKind::StepStarted {
                input: task.input.clone(),
            },
        );
        let cancel = group.unwrap_or(&self.cancel);
        let step = Arc::new(StepShared {
            run: run.services.clone(),
            engine: run.clone(),
            step_id,
            parent_step: self.parent_step,
            node: cn.id.clone(),
            input: task.input.clone(),
            cancel: Some(cancel.clone()),
            meter: Mutex::new(StepMeter {
                reserved,
                ..StepMeter::default()
            }),
            answers: task.answers.clone(),
            calls: std::sync::atomic::AtomicU32::new(0),
            approval: task.approved.clone(),
            subgraph: Mutex::new(task.subgraph.clone()),
            attempt_cancel: Mutex::new(None),
            scope: self.scope.clone(),
            thread: self.durable.as_ref().map(|d| d.thread.clone()),
            superstep: self.superstep,
            task_index: task.index,
        });
        let retry = cn.config.retry.as_ref().or(run.default_retry.as_ref());
        let timeout = cn.config.timeout.or(run.default_timeout);
        let mut attempt = 1u32;
        let result = loop {
            let ctx = NodeContext::new(step.clone(), attempt);
            let attempt_start = if attempt == 1 {
                started
            } else {
                step.calls.store(0, std::sync::atomic::Ordering::Release);
                *step
                    .attempt_cancel
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = None;
                Instant::now()
            };
            let failure = match self.attempt(cn, ctx, attempt_start, timeout, cancel).await {
                Ok(out) => break Ok(out),
                Err(f) => f,
            };
            if let Failure::Timeout(_) = failure {
                // Tell whatever the attempt spawned that it is over.
                if let Some(t) = step
                    .attempt_cancel
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                {
                    t.cancel();
                }
            }
            let Some(policy) = retry else {
                break Err(failure);
            };
            let retryable = match &failure {
                Failure::Node(e) => e.is_retryable(),
                Failure::Timeout(_) => policy.get_retry_timeouts(),
                _ => false,
            };
            if !retryable || attempt >= policy.get_max_attempts() {
                break Err(failure);
            }
            // Recomputed from the start (seeded jitter repeats), so no
            // iterator is held across the awaits of every step.
            let mut delay = policy
                .delays()
                .nth(attempt as usize - 1)
                .unwrap_or_default();
            if let Some(at_least) = failure.retry_after() {
                delay = delay.max(at_least);
            }
            self.emit(
                Instant::now(),
                Some(step_id),
                Some(task.node),
                attempt,
                EventKind::Retry {
                    failed_attempt: attempt,
                    delay_ms: delay.as_millis() as u64,
                    error: failure.describe(),
                },
            );
            if let Err(stop) = Box::pin(self.pause_before_retry(delay, cancel)).await {
                break Err(stop);
            }
            attempt += 1;
        };
        let finished = Instant::now();

        let (usage, cost, provider, model, cache_hits, call_retries, fallbacks) = {
            let mut m = step.meter();
            let leftover = std::mem::replace(&mut m.reserved, Amount::ZERO);
            run.ledger.release(leftover);
            (
                m.usage,
                m.cost,
                m.provider.take(),
                m.model.take(),
                m.cache_hits,
                m.call_retries,
                m.fallbacks,
            )
        };
        let mut pause = None;
        let (output, error, status, sibling_canceled) = match result {
            Ok(out) => (Some(out), None, StepStatus::Succeeded, false),
            Err(Failure::Node(e)) if e.interrupt_payload().is_some() => {
                pause = e.interrupt_payload().map(|p| TaskPause::Asked {
                    call: task.answers.len() as u32,
                    payload: p.clone(),
                });
                (None, None, StepStatus::Interrupted, false)
            }
            Err(Failure::Node(e)) if e.subgraph_pause().is_some() => {
                pause = e.subgraph_pause().cloned().map(TaskPause::Subgraph);
                (None, None, StepStatus::Interrupted, false)
            }
            Err(f) => {
                let (e, status, sibling) = self.failure_to_error(f, task.node, attempt, finished);
                (None, Some(e), status, sibling)
            }
        };
        let latency = finished.saturating_duration_since(started);
        let error_text = error.as_ref().map(|e| e.report().to_string());
        self.emit(
            finished,
            Some(step_id),
            Some(task.node),
            attempt,
            EventKind::StepFinished {
                status,
                attempts: attempt,
                latency_us: latency.as_micros() as u64,
                usage,
                cost,
                error: error_text.clone(),
            },
        );
        if let (Some(e), false) = (&error, sibling_canceled) {
            self.emit(
                finished,
                Some(step_id),
                Some(task.node),
                attempt,
                EventKind::Error {
                    error_kind: e.kind().to_string(),
                    message: e.report().to_string(),
                },
            );
        }
        TaskOutcome {
            node: task.node,
            index: task.index,
            output,
            error,
            pause,
            rejected: false,
            sibling_canceled,
            update_json: None,
            record: StepRecord {
                step_id,
                node: cn.id.clone(),
                parent_step_id: self.parent_step,
                status,
                attempts: attempt,
                usage,
                cost,
                latency,
                started_at: run.ts(started),
                provider,
                model,
                cache_hits,
                call_retries,
                fallbacks,
                branch: None,
                input: task.input.clone(),
                error: error_text,
            },
        }
    }

    /// One attempt: polls the node once (most nodes finish right away), and
    /// only if it is still pending races it against the timeout, the run's
    /// stop instant and cancellation.
    async fn attempt(
        &self,
        cn: &CompiledNode<S>,
        ctx: NodeContext,
        attempt_start: Instant,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<NodeOutput<S::Update>, Failure> {
        let span = tracing::debug_span!(
            "flowtrace.node",
            run_id = %self.run.run_id,
            node = %cn.id,
            step = ctx.step_id().0,
            attempt = ctx.attempt()
        );
        let fut =
            AssertUnwindSafe(cn.node.run(self.state.clone(), ctx).instrument(span)).catch_unwind();
        let mut fut = std::pin::pin!(fut);
        let res = match futures::poll!(fut.as_mut()) {
            Poll::Ready(r) => r,
            // Boxed: only pending nodes pay for the timers and the select.
            Poll::Pending => Box::pin(self.race(fut, attempt_start, timeout, cancel)).await?,
        };
        match res {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(Failure::Node(e)),
            Err(payload) => Err(Failure::Panicked(panic_message(payload.as_ref()))),
        }
    }

    /// Drives a pending node attempt to completion unless its timeout, the
    /// run's stop instant or cancellation comes first.
    async fn race<F>(
        &self,
        mut fut: std::pin::Pin<&mut F>,
        attempt_start: Instant,
        timeout: Option<Duration>,
        cancel: &CancellationToken,
    ) -> Result<F::Output, Failure>
    where
        F: std::future::Future,
    {
        let node_deadline = timeout.map(|t| attempt_start + t);
        let stop = self.run.stop_at();
        let wake = earliest(node_deadline, stop.map(|s| s.0));
        let sleep = async move {
            match wake {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            biased;
            r = fut.as_mut() => Ok(r),
            _ = cancel.cancelled() => Err(self.cancel_failure()),
            _ = sleep => Err(match (node_deadline, stop) {
                (Some(nd), Some((at, reason))) if at <= nd => Failure::Stop(reason),
                (Some(_), _) => Failure::Timeout(timeout.unwrap_or_default()),
                (None, Some((_, reason))) => Failure::Stop(reason),
                (None, None) => Failure::Timeout(Duration::ZERO),
            }),
        }
    }

    /// Waits `delay` before a retry, unless the run stops first.
    async fn pause_before_retry(
        &self,
        delay: Duration,
        cancel: &CancellationToken,
    ) -> Result<(), Failure> {
        let stop = self.run.stop_at();
        let until = Instant::now() + delay;
        if let Some((at, reason)) = stop
            && at <= until
        {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(self.cancel_failure()),
                _ = tokio::time::sleep_until(at) => return Err(Failure::Stop(reason)),
            }
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(self.cancel_failure()),
            _ = tokio::time::sleep_until(until) => Ok(()),
        }
    }

    fn cancel_failure(&self) -> Failure {
        if self.run.cancel.is_cancelled() {
            Failure::Canceled
        } else {
            Failure::SiblingCanceled
        }
    }

    fn failure_to_error(
        &self,
        failure: Failure,
        node: usize,
        attempts: u32,
        now: Instant,
    ) -> (Error, StepStatus, bool) {
        let id = &self.graph.nodes[node].id;
        match failure {
            Failure::Node(e) => match e.into_run_error() {
                Ok(run_error) => {
                    let status = if matches!(run_error, Error::Canceled { .. }) {
                        StepStatus::Canceled
                    } else {
                        StepStatus::Failed
                    };
                    (run_error, status, false)
                }
                Err(error) => (
                    Error::Node {
                        node: id.clone(),
                        attempts,
                        error,
                    },
                    StepStatus::Failed,
                    false,
                ),
            },
            Failure::Timeout(after) => (
                Error::Timeout {
                    node: id.clone(),
                    after,
                    attempts,
                },
                StepStatus::Failed,
                false,
            ),
            Failure::Canceled => (
                Error::Canceled {
                    node: Some(id.clone()),
                },
                StepStatus::Canceled,
                false,
            ),
            Failure::SiblingCanceled => (
                Error::Canceled {
                    node: Some(id.clone()),
                },
                StepStatus::Canceled,
                true,
            ),
            Failure::Stop(reason) => (
                self.stop_error(reason, now, Some(node)),
                StepStatus::Canceled,
                false,
            ),
            Failure::Panicked(message) => (
                Error::NodePanicked {
                    node: id.clone(),
                    message,
                },
                StepStatus::Failed,
                false,
            ),
        }
    }

    /// Fires, skips or dispatches the successors of a node whose instances
    /// all finished in the last super-step.
    fn propagate(
        &mut self,
        node: usize,
        record: usize,
        dispatches: Vec<Dispatch>,
        next: &mut Vec<Task>,
    ) -> Result<(), Error> {
        let graph = self.graph;
        let cn = &graph.nodes[node];
        if cn.router.is_none() && cn.dispatch.is_empty() && dispatches.is_empty() {
            // Plain edges only: every successor fires.
            for target in &cn.statics {
                if let Target::Node(t) = *target {
                    if cn.is_back(t) {
                        self.schedule(t, Vec::new(), next);
                    } else {
                        self.fire_forward(t, Vec::new(), next);
                    }
                }
            }
            return Ok(());
        }

        let n = graph.nodes.len();
        self.chosen.clear(n);
        for target in &cn.statics {
            if let Target::Node(t) = *target {
                self.chosen.insert(t);
            }
        }
        let mut skip_reason = String::from("no active predecessor");
        if let Some(router) = &cn.router {
            let state = &*self.state;
            let route_ctx = crate::graph::RouteContext { run: &self.run };
            let routes =
                std::panic::catch_unwind(AssertUnwindSafe(|| (router.route)(state, &route_ctx)))
                    .map_err(|p| Error::NodePanicked {
                        node: cn.id.clone(),
                        message: format!("router panicked: {}", panic_message(p.as_ref())),
                    })?;
            let positions: &[usize] = match &routes {
                Routes::One(i) => std::slice::from_ref(i),
                Routes::Many(is) => is,
                Routes::Unknown(label) => {
                    return Err(Error::UnknownBranch {
                        node: cn.id.clone(),
                        branch: label.clone(),
                        known: router.branches.iter().map(|b| b.label.clone()).collect(),
                    });
                }
            };
            let mut names: Vec<String> = Vec::new();
            self.named.clear(n);
            let mut end_named = false;
            for &position in positions {
                let Some(branch) = router.branches.get(position) else {
                    continue;
                };
                for t in &branch.targets {
                    match *t {
                        Target::Node(t) => {
                            self.chosen.insert(t);
                            if self.named.insert(t) {
                                names.push(graph.nodes[t].id.to_string());
                            }
                        }
                        Target::End if !end_named => {
                            end_named = true;
                            names.push(crate::graph::END.to_string());
                        }
                        Target::End => {}
                    }
                }
            }
            let label_of = |i: &usize| router.branches.get(*i).map_or("", |b| b.label.as_str());
            let chosen_label = match &routes {
                Routes::One(i) => label_of(i).to_string(),
                Routes::Many(is) => is.iter().map(label_of).collect::<Vec<_>>().join(","),
                Routes::Unknown(label) => label.clone(),
            };
            skip_reason = match positions.len() {
                0 => format!("router {:?} chose no branch", cn.id.as_str()),
                1 => format!(
                    "branch {:?} of {:?} was chosen",
                    chosen_label,
                    cn.id.as_str()
                ),
                _ => format!(
                    "branches {:?} of {:?} were chosen",
                    chosen_label,
                    cn.id.as_str()
                ),
            };
            let step_id = self.records.get(record).map(|r| r.step_id);
            if let Some(r) = self.records.get_mut(record) {
                r.branch = Some(chosen_label.clone());
            }
            self.emit(
                Instant::now(),
                step_id,
                Some(node),
                0,
                EventKind::Route {
                    branch: chosen_label,
                    targets: names,
                },
            );
        }

        // Dispatch inputs by target (each target is one forward or back successor).
        let mut inputs: std::collections::HashMap<usize, Vec<serde_json::Value>> =
            Default::default();
        for d in dispatches {
            let target = graph
                .index
                .get(d.target.as_str())
                .copied()
                .filter(|&t| cn.may_dispatch(t))
                .ok_or_else(|| Error::UnknownDispatchTarget {
                    node: cn.id.clone(),
                    target: d.target.to_string(),
                })?;
            inputs.entry(target).or_default().push(d.input);
        }

        let mut batch = |t: usize| match inputs.is_empty() {
            true => None,
            false => inputs.remove(&t),
        };
        for &t in &cn.forward {
            match batch(t) {
                Some(batch) => self.fire_forward(t, batch, next),
                None if self.chosen.contains(t) => self.fire_forward(t, Vec::new(), next),
                None => self.skip_token(t, &skip_reason, next),
            }
        }
        for &t in &cn.back {
            match batch(t) {
                Some(batch) => self.schedule(t, batch, next),
                None if self.chosen.contains(t) => self.schedule(t, Vec::new(), next),
                None => {}
            }
        }
        Ok(())
    }

    /// A forward edge into `t` fired.
    fn fire_forward(&mut self, t: usize, inputs: Vec<serde_json::Value>, next: &mut Vec<Task>) {
        let p = &mut self.pending[t];
        p.resolved += 1;
        p.fired += 1;
        if !inputs.is_empty() {
            p.inputs.extend(inputs);
        }
        self.check_ready(t, "no active predecessor", next);
    }

    /// A forward edge into `t` will not fire in this activation.
    fn skip_token(&mut self, t: usize, reason: &str, next: &mut Vec<Task>) {
        self.pending[t].resolved += 1;
        self.check_ready(t, reason, next);
    }

    /// Once every forward predecessor of `t` resolved: runs it if any fired,
    /// otherwise records it as skipped and passes the skip on.
    fn check_ready(&mut self, t: usize, reason: &str, next: &mut Vec<Task>) {
        let graph = self.graph;
        // Nodes skipped transitively, handled after `t`.
        let mut work: Vec<usize> = Vec::new();
        let mut current = Some((t, reason));
        while let Some((t, reason)) = current
            .take()
            .or_else(|| work.pop().map(|u| (u, "every predecessor was skipped")))
        {
            let p = &mut self.pending[t];
            if p.resolved < graph.nodes[t].forward_in {
                continue;
            }
            let fired = p.fired;
            let inputs = std::mem::take(&mut p.inputs);
            p.resolved = 0;
            p.fired = 0;
            self.pending.settle(t);
            if fired > 0 {
                self.schedule(t, inputs, next);
                continue;
            }
            self.record_skip(t, reason);
            for &u in &graph.nodes[t].forward {
                self.pending[u].resolved += 1;
                work.push(u);
            }
        }
    }

    fn schedule(&mut self, t: usize, inputs: Vec<serde_json::Value>, next: &mut Vec<Task>) {
        if inputs.is_empty() {
            if self.scheduled[t] == self.generation {
                return;
            }
            self.scheduled[t] = self.generation;
            next.push(Task::new(t, None));
        } else {
            next.extend(inputs.into_iter().map(|input| Task::new(t, Some(input))));
        }
    }

    fn record_skip(&mut self, t: usize, reason: &str) {
        let step_id = self.run.next_step_id();
        let now = Instant::now();
        self.emit(
            now,
            Some(step_id),
            Some(t),
            0,
            EventKind::StepSkipped {
                reason: reason.to_string(),
            },
        );
        self.records.push(StepRecord::skipped(
            step_id,
            self.graph.nodes[t].id.clone(),
            self.parent_step,
            self.run.ts(now),
            reason,
        ));
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
    use crate::{GraphBuilder, JsonState, NodeOutput, RunConfig, node_fn};

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
        let task = std::mem::size_of_val(&exec.execute_task(&t, Amount::ZERO, None));
        let execute = std::mem::size_of_val(&exec.execute(Vec::new()));
        assert!(attempt <= 400, "attempt future is {attempt} bytes");
        assert!(task <= 800, "execute_task future is {task} bytes");
        assert!(execute <= 1152, "execute future is {execute} bytes");
    }
}
