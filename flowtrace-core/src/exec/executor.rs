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
    StateRecord, TaskSpec, ThreadStatus,
};
use crate::error::{BudgetBreach, BudgetExceeded, Error, NodeError};
use crate::exec::StepRecord;
use crate::exec::durable::{Durable, to_json};
use crate::exec::shared::{Amount, RunShared, StopReason};
use crate::graph::compile::{CompiledNode, Target};
use crate::graph::{Inner, Routes};
use crate::ids::StepId;
use crate::node::{Dispatch, NodeContext, NodeOutput, StepMeter, StepShared};
use crate::pricing::{Cost, TokenUsage};
use crate::state::State;
use crate::trace::{EventKind, RunStatus, StepStatus};

/// A node to run in the next super-step, with its dispatch input.
pub(crate) struct Task {
    pub(crate) node: usize,
    pub(crate) input: Option<serde_json::Value>,
    /// Position in the super-step (set when the super-step starts).
    pub(crate) index: u32,
    /// The human's answer, for a node resumed after its own interrupt.
    pub(crate) resume: Option<serde_json::Value>,
    /// The approval's payload, for a node released from `interrupt_before`.
    pub(crate) approval: Option<serde_json::Value>,
}

impl Task {
    pub(crate) fn new(node: usize, input: Option<serde_json::Value>) -> Self {
        Self {
            node,
            input,
            index: 0,
            resume: None,
            approval: None,
        }
    }
}

/// The id of an interrupt: thread, super-step and node.
pub(crate) fn node_interrupt_id(thread: &str, superstep: u64, node: &crate::ids::NodeId) -> String {
    format!("{thread}:{superstep}:{node}")
}

/// Why the super-step loop stopped without an error.
pub(crate) enum Stop {
    Completed,
    Interrupted(Interrupt),
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
            Failure::Node(e) => e.to_string(),
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

struct TaskOutcome<U> {
    node: usize,
    index: u32,
    output: Option<NodeOutput<U>>,
    error: Option<Error>,
    /// The payload of the node's `interrupt` call.
    interrupt: Option<serde_json::Value>,
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
    pub(crate) pending: Vec<Pending>,
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
    /// Nodes let through their static interrupt once (after an approval).
    pub(crate) released: Vec<usize>,
    /// Task results saved before a crash or interrupt, by task position,
    /// replayed instead of re-running those tasks.
    pub(crate) replay: Vec<PendingWrite>,
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
        Self {
            graph,
            run,
            parent_step,
            cancel,
            state,
            pending: (0..n).map(|_| Pending::default()).collect(),
            // One record per node is the common case (no loops, no skips).
            records: Vec::with_capacity(n),
            generation: 1,
            scheduled: vec![0; n],
            outcomes: Vec::new(),
            reservations: Vec::new(),
            completed: Vec::new(),
            durable: None,
            superstep: 0,
            interrupt_before: Vec::new(),
            interrupt_after: Vec::new(),
            released: Vec::new(),
            replay: Vec::new(),
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

    /// Runs the graph as a subgraph of the current run, returning its final
    /// state. Its step records join the run's.
    pub(crate) async fn execute_nested(mut self) -> Result<S, Error> {
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
        let ready = self.entry_tasks();
        let result = match self.execute(ready).await {
            Ok(Stop::Interrupted(i)) => Err(Error::Node {
                node: i.node.clone(),
                attempts: 1,
                error: NodeError::permanent(format!(
                    "interrupts inside subgraphs are not supported (node {:?} asked for a decision)",
                    i.node
                )),
            }),
            Ok(_) => Ok(()),
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
        self.emit(
            finished,
            None,
            None,
            0,
            EventKind::RunFinished {
                status: status_of(&result),
                usage,
                cost,
                node_executions: executions,
                elapsed_us: finished.saturating_duration_since(started).as_micros() as u64,
                error: result.as_ref().err().map(|e| e.to_string()),
            },
        );
        let records = std::mem::take(&mut self.records);
        self.run
            .nested_steps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(records);
        result?;
        Ok(Arc::try_unwrap(self.state).unwrap_or_else(|shared| (*shared).clone()))
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
        while !ready.is_empty() {
            if ready.len() > 1 {
                // Deterministic order: graph order, then dispatch order.
                ready.sort_by_key(|t| t.node);
            }
            for (i, t) in ready.iter_mut().enumerate() {
                t.index = i as u32;
            }
            if self.run.halt_requested() && !self.run.halt_observed() {
                self.emit_log(
                    crate::trace::LogLevel::Warn,
                    "halt requested: stopping at a safe point",
                );
                Box::pin(self.commit_pause(&ready, ThreadStatus::Halted, None)).await?;
                return Ok(Stop::Halted);
            }
            if !self.interrupt_before.is_empty() {
                let hit = ready
                    .iter()
                    .find(|t| {
                        self.interrupt_before.contains(&t.node) && !self.released.contains(&t.node)
                    })
                    .map(|t| t.node);
                if let Some(node) = hit {
                    let interrupt =
                        self.new_interrupt(node, InterruptWhen::Before, serde_json::Value::Null);
                    Box::pin(self.commit_pause(
                        &ready,
                        ThreadStatus::Interrupted,
                        Some(interrupt.clone()),
                    ))
                    .await?;
                    return Ok(Stop::Interrupted(interrupt));
                }
            }
            self.released.clear();
            if let Err(e) = self.safe_point(&ready, cancel) {
                self.emit(
                    Instant::now(),
                    None,
                    None,
                    0,
                    EventKind::Error {
                        error_kind: e.kind().to_string(),
                        message: e.to_string(),
                    },
                );
                return Err(e);
            }
            let first_record = self.records.len();
            let mut outcomes = std::mem::take(&mut self.outcomes);
            if ready.len() == 1 && self.replay.is_empty() {
                // The common case (chains): one task, nothing to reserve
                // across siblings or to replay.
                let task = ready
                    .pop()
                    .ok_or_else(|| Error::Aborted("empty super-step".into()))?;
                let cfg = &self.graph.nodes[task.node].config;
                let amount = Amount {
                    tokens: cfg.estimated_tokens,
                    cost: cfg.estimated_cost,
                };
                self.run
                    .ledger
                    .reserve(amount, &self.graph.nodes[task.node].id)?;
                outcomes.push(self.execute_task(task, amount, None).await);
            } else {
                let mut reservations = std::mem::take(&mut self.reservations);
                let ran =
                    Box::pin(self.superstep(&mut ready, &mut reservations, &mut outcomes, cancel))
                        .await;
                self.reservations = reservations;
                ran?;
            }
            // Saved results belong to the first super-step after a resume only.
            self.replay.clear();

            // A node asked for a human: keep the finished siblings' results as
            // pending writes, re-run the super-step on resume.
            if let Some(pos) = outcomes.iter().position(|o| o.interrupt.is_some()) {
                return Box::pin(self.pause_for_node(&mut outcomes, pos)).await;
            }

            // Merge every successful update, in task order.
            let durable = self.durable.is_some();
            let mut deltas: Vec<serde_json::Value> = Vec::new();
            let mut failure: Option<Error> = None;
            let mut completed = std::mem::take(&mut self.completed);
            for o in outcomes.drain(..) {
                let idx = self.records.len();
                self.records.push(o.record);
                match (o.output, o.error) {
                    (Some(out), None) => {
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
                    (_, Some(e)) => {
                        if failure.is_none() && !o.sibling_canceled {
                            failure = Some(e);
                        }
                    }
                    (None, None) => {}
                }
            }
            self.outcomes = outcomes;
            if let Some(e) = failure {
                self.completed = completed;
                return Err(e);
            }

            // Evaluate edges against the merged state.
            let mut ran_nodes: Vec<usize> = Vec::new();
            for (node, record, dispatches) in completed.drain(..) {
                if durable || !self.interrupt_after.is_empty() {
                    ran_nodes.push(node);
                }
                self.propagate(node, record, dispatches, &mut next)?;
            }
            self.completed = completed;
            self.generation += 1;
            self.superstep += 1;

            let after = ran_nodes
                .iter()
                .copied()
                .find(|n| self.interrupt_after.contains(n));
            let interrupt =
                after.map(|n| self.new_interrupt(n, InterruptWhen::After, serde_json::Value::Null));
            if self.durable.is_some() {
                let status = match (&interrupt, next.is_empty()) {
                    (Some(_), _) => ThreadStatus::Interrupted,
                    (None, true) => ThreadStatus::Completed,
                    (None, false) => ThreadStatus::Running,
                };
                let steps = self.records[first_record..].to_vec();
                let nodes = ran_nodes
                    .iter()
                    .map(|&n| self.graph.nodes[n].id.clone())
                    .collect();
                let cp = self.checkpoint(
                    StateRecord::Delta(deltas),
                    &next,
                    nodes,
                    steps,
                    status,
                    interrupt.clone(),
                );
                if let Some(d) = self.durable.as_mut() {
                    Box::pin(d.append(cp)).await?;
                }
            }
            if let Some(interrupt) = interrupt {
                self.emit_interrupt(&interrupt);
                std::mem::swap(&mut ready, &mut next);
                return Ok(Stop::Interrupted(interrupt));
            }
            std::mem::swap(&mut ready, &mut next);
        }
        if self.run.halt_requested() {
            return Ok(Stop::Halted);
        }
        Ok(Stop::Completed)
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
                }),
            },
        );
    }

    fn new_interrupt(
        &self,
        node: usize,
        when: InterruptWhen,
        payload: serde_json::Value,
    ) -> Interrupt {
        let id = node_interrupt_id(
            self.durable
                .as_ref()
                .map(|d| d.thread.as_str())
                .unwrap_or(self.run.run_id.as_str()),
            self.superstep,
            &self.graph.nodes[node].id,
        );
        let created_at = self.run.ts(Instant::now());
        let (deadline, on_timeout) = match &self.run.interrupt_deadline {
            Some((after, default)) => (
                Some(created_at.plus_micros(after.as_micros() as u64)),
                Some(default.clone()),
            ),
            None => (None, None),
        };
        Interrupt {
            id,
            node: self.graph.nodes[node].id.clone(),
            path: Vec::new(),
            tasks: Vec::new(),
            call: 0,
            when,
            payload,
            deadline,
            on_timeout,
            created_at,
        }
    }

    /// The scheduler's frontier as stored in a checkpoint.
    fn frontier(&self, tasks: &[Task]) -> Vec<TaskSpec> {
        tasks
            .iter()
            .map(|t| TaskSpec::new(self.graph.nodes[t.node].id.clone(), t.input.clone()))
            .collect()
    }

    /// Joins some of whose predecessors have resolved.
    fn joins(&self) -> Vec<JoinState> {
        self.pending
            .iter()
            .enumerate()
            .filter(|(_, p)| p.resolved > 0)
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
        interrupt: Option<Interrupt>,
    ) -> Checkpoint {
        let (thread, seq) = match &self.durable {
            Some(d) => (d.thread.clone(), d.next_seq()),
            None => (crate::ids::ThreadId::new(self.run.run_id.as_str()), 0),
        };
        Checkpoint {
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
            status,
            step_ids: 0,
            interrupts: interrupt.into_iter().collect(),
            approvals: Vec::new(),
            error: None,
            metadata: Default::default(),
        }
    }

    /// Stops before running `ready`: a checkpoint with the same frontier and
    /// no state change records the interrupt or halt.
    async fn commit_pause(
        &mut self,
        ready: &[Task],
        status: ThreadStatus,
        interrupt: Option<Interrupt>,
    ) -> Result<(), Error> {
        if self.durable.is_some() {
            let cp = self.checkpoint(
                StateRecord::Delta(Vec::new()),
                ready,
                Vec::new(),
                Vec::new(),
                status,
                interrupt.clone(),
            );
            if let Some(d) = self.durable.as_mut() {
                d.append(cp).await?;
            }
        }
        if let Some(i) = &interrupt {
            self.emit_interrupt(i);
        }
        Ok(())
    }

    /// A node called `interrupt`: saves the finished siblings' results as
    /// pending writes of the pause checkpoint, writes it, and stops.
    async fn pause_for_node(
        &mut self,
        outcomes: &mut Vec<TaskOutcome<S::Update>>,
        pos: usize,
    ) -> Result<Stop, Error> {
        let node = outcomes[pos].node;
        let payload = outcomes[pos].interrupt.clone().unwrap_or_default();
        let interrupt = self.new_interrupt(node, InterruptWhen::During, payload);
        // Rebuild the frontier of this super-step from the outcomes (in task order).
        let mut writes = Vec::new();
        let mut frontier = Vec::new();
        for o in outcomes.drain(..) {
            frontier.push(Task {
                node: o.node,
                input: o.record.input.clone(),
                index: o.index,
                resume: None,
                approval: None,
            });
            if let (Some(out), None, None) = (&o.output, &o.error, &o.interrupt) {
                let update = match &out.update {
                    Some(u) => Some(to_json(u, Some(&self.graph.nodes[o.node].id))?),
                    None => None,
                };
                writes.push(PendingWrite {
                    task: o.index,
                    node: self.graph.nodes[o.node].id.clone(),
                    update,
                    dispatches: out
                        .dispatches
                        .iter()
                        .map(|d| (d.target.clone(), d.input.clone()))
                        .collect(),
                    step: o.record.clone(),
                });
            }
            self.records.push(o.record);
        }
        if self.durable.is_some() {
            let cp = self.checkpoint(
                StateRecord::Delta(Vec::new()),
                &frontier,
                Vec::new(),
                Vec::new(),
                ThreadStatus::Interrupted,
                Some(interrupt.clone()),
            );
            if let Some(d) = self.durable.as_mut() {
                let seq = cp.seq;
                for w in writes {
                    d.put_write(seq, w).await?;
                }
                d.append(cp).await?;
            }
        }
        self.emit_interrupt(&interrupt);
        Ok(Stop::Interrupted(interrupt))
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
        ready: &mut Vec<Task>,
        reservations: &mut Vec<Amount>,
        outcomes: &mut Vec<TaskOutcome<S::Update>>,
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
        let ledger = &self.run.ledger;
        reservations.clear();
        for t in ready.iter() {
            let cfg = &self.graph.nodes[t.node].config;
            let amount = Amount {
                tokens: cfg.estimated_tokens,
                cost: cfg.estimated_cost,
            };
            if let Err(breach) = ledger.reserve(amount, &self.graph.nodes[t.node].id) {
                reservations.drain(..).for_each(|r| ledger.release(r));
                ready.clear();
                return Err(Error::BudgetExceeded(breach));
            }
            reservations.push(amount);
        }

        let n = ready.len();
        let parallel = self.run.parallel.filter(|_| n > 1);
        let Some(cap) = parallel else {
            let mut tasks = ready.drain(..).zip(reservations.drain(..));
            for (task, reserved) in tasks.by_ref() {
                let mut o = match self.saved_result(&task) {
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
        ready: &mut Vec<Task>,
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
            let mut running =
                futures::stream::iter(ready.drain(..).zip(reservations.drain(..)).enumerate())
                    .map(|(i, (task, reserved))| async move {
                        let mut o = match self.saved_result(&task) {
                            Some(w) => self.replayed(task, reserved, w),
                            None => self.execute_task(task, reserved, Some(token)).await,
                        };
                        if self.durable.is_some() {
                            Box::pin(self.save_pending(&mut o)).await;
                        }
                        (i, o)
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

    /// The result of `task` saved before a crash or interrupt, if any.
    fn saved_result(&self, task: &Task) -> Option<&PendingWrite> {
        if self.replay.is_empty() {
            return None;
        }
        let id = &self.graph.nodes[task.node].id;
        self.replay
            .iter()
            .find(|w| w.task == task.index && &w.node == id)
    }

    /// In a durable run, saves a finished task's result as a pending write
    /// right away, so a crash before the super-step commits replays it
    /// instead of running the task again.
    async fn save_pending(&self, o: &mut TaskOutcome<S::Update>) {
        let Some(d) = &self.durable else {
            return;
        };
        if !d.writes_now() || o.update_json.is_some() {
            return;
        }
        let Some(out) = &o.output else {
            return;
        };
        let id = &self.graph.nodes[o.node].id;
        let update = match &out.update {
            Some(u) => match to_json(u, Some(id)) {
                Ok(v) => Some(v),
                Err(e) => {
                    o.error = Some(e);
                    return;
                }
            },
            None => None,
        };
        let write = PendingWrite {
            task: o.index,
            node: id.clone(),
            update: update.clone(),
            dispatches: out
                .dispatches
                .iter()
                .map(|d| (d.target.clone(), d.input.clone()))
                .collect(),
            step: o.record.clone(),
        };
        if let Err(e) = d
            .store
            .put_write(&d.thread, d.next_seq().saturating_sub(1), write)
            .await
        {
            o.error = Some(Error::Checkpoint(e));
        }
        o.update_json = update;
    }

    /// The outcome of a task whose result was saved before: no execution.
    fn replayed(&self, task: Task, reserved: Amount, w: &PendingWrite) -> TaskOutcome<S::Update> {
        self.run.ledger.release(reserved);
        let id = &self.graph.nodes[task.node].id;
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
        self.emit_log(
            crate::trace::LogLevel::Info,
            &format!("replayed the saved result of node {id:?} (not run again)"),
        );
        TaskOutcome {
            node: task.node,
            index: task.index,
            output,
            error,
            interrupt: None,
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
        task: Task,
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
        let record_input = task.input.clone();
        let cancel = group.unwrap_or(&self.cancel);
        let step = Arc::new(StepShared {
            run: run.clone(),
            step_id,
            parent_step: self.parent_step,
            node: cn.id.clone(),
            input: task.input,
            cancel: group.cloned(),
            meter: Mutex::new(StepMeter {
                reserved,
                ..StepMeter::default()
            }),
            resume: Mutex::new(task.resume),
            approval: task.approval,
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
                Instant::now()
            };
            let failure = match self.attempt(cn, ctx, attempt_start, timeout, cancel).await {
                Ok(out) => break Ok(out),
                Err(f) => f,
            };
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
            if let Err(stop) = Box::pin(self.pause(delay, cancel)).await {
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
        let mut interrupt = None;
        let (output, error, status, sibling_canceled) = match result {
            Ok(out) => (Some(out), None, StepStatus::Succeeded, false),
            Err(Failure::Node(e)) if e.interrupt_payload().is_some() => {
                interrupt = e.interrupt_payload().cloned();
                (None, None, StepStatus::Interrupted, false)
            }
            Err(f) => {
                let (e, status, sibling) = self.failure_to_error(f, task.node, attempt, finished);
                (None, Some(e), status, sibling)
            }
        };
        let latency = finished.saturating_duration_since(started);
        let error_text = error.as_ref().map(|e| e.to_string());
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
                    message: e.to_string(),
                },
            );
        }
        TaskOutcome {
            node: task.node,
            index: task.index,
            output,
            error,
            interrupt,
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
                input: record_input,
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
    async fn pause(&self, delay: Duration, cancel: &CancellationToken) -> Result<(), Failure> {
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

        let mut chosen: Vec<usize> = cn
            .statics
            .iter()
            .filter_map(|t| match t {
                Target::Node(t) => Some(*t),
                Target::End => None,
            })
            .collect();
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
            let labels: &[std::borrow::Cow<'static, str>] = match &routes {
                Routes::One(label) => std::slice::from_ref(label),
                Routes::Many(labels) => labels,
            };
            let mut names: Vec<String> = Vec::new();
            for label in labels {
                let Some(branch) = router.branches.iter().find(|b| b.label == *label) else {
                    return Err(Error::UnknownBranch {
                        node: cn.id.clone(),
                        branch: label.to_string(),
                        known: router.branches.iter().map(|b| b.label.clone()).collect(),
                    });
                };
                for t in &branch.targets {
                    let name = match t {
                        Target::Node(t) => {
                            if !chosen.contains(t) {
                                chosen.push(*t);
                            }
                            graph.nodes[*t].id.to_string()
                        }
                        Target::End => crate::graph::END.to_string(),
                    };
                    if !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
            let chosen_label = match &routes {
                Routes::One(label) => label.to_string(),
                Routes::Many(labels) => labels.join(","),
            };
            skip_reason = match labels.len() {
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

        let mut inputs: Vec<(usize, Vec<serde_json::Value>)> = Vec::new();
        for d in dispatches {
            let target = graph
                .index
                .get(d.target.as_str())
                .copied()
                .filter(|t| cn.dispatch.contains(t))
                .ok_or_else(|| Error::UnknownDispatchTarget {
                    node: cn.id.clone(),
                    target: d.target.to_string(),
                })?;
            match inputs.iter_mut().find(|(t, _)| *t == target) {
                Some((_, v)) => v.push(d.input),
                None => inputs.push((target, vec![d.input])),
            }
        }

        for &t in &cn.forward {
            let batch = inputs
                .iter_mut()
                .find(|(d, _)| *d == t)
                .map(|(_, v)| std::mem::take(v));
            match batch {
                Some(batch) => self.fire_forward(t, batch, next),
                None if chosen.contains(&t) => self.fire_forward(t, Vec::new(), next),
                None => self.skip_token(t, &skip_reason, next),
            }
        }
        for &t in &cn.back {
            let batch = inputs
                .iter_mut()
                .find(|(d, _)| *d == t)
                .map(|(_, v)| std::mem::take(v));
            match batch {
                Some(batch) => self.schedule(t, batch, next),
                None if chosen.contains(&t) => self.schedule(t, Vec::new(), next),
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
        self.records.push(StepRecord {
            step_id,
            node: self.graph.nodes[t].id.clone(),
            parent_step_id: self.parent_step,
            status: StepStatus::Skipped,
            attempts: 0,
            usage: TokenUsage::default(),
            cost: Cost::ZERO,
            latency: Duration::ZERO,
            started_at: self.run.ts(now),
            provider: None,
            model: None,
            cache_hits: 0,
            call_retries: 0,
            fallbacks: 0,
            branch: None,
            input: None,
            error: Some(reason.to_string()),
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
            run: run.clone(),
            step_id: StepId(1),
            parent_step: None,
            node: "a".into(),
            input: None,
            cancel: None,
            meter: Default::default(),
            resume: Default::default(),
            approval: None,
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
        let task =
            std::mem::size_of_val(&exec.execute_task(Task::new(0, None), Amount::ZERO, None));
        let execute = std::mem::size_of_val(&exec.execute(Vec::new()));
        assert!(attempt <= 400, "attempt future is {attempt} bytes");
        assert!(task <= 800, "execute_task future is {task} bytes");
        assert!(execute <= 1000, "execute future is {execute} bytes");
    }
}
