//! The super-step loop: safe points, running a super-step's tasks
//! (one by one or concurrently), merging their updates and routing.

use std::sync::Arc;

use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::executor::*;
use crate::checkpoint::{Interrupt, InterruptWhen, ThreadStatus};
use crate::error::{BudgetBreach, BudgetExceeded, Error};
use crate::exec::durable::to_json;
use crate::exec::shared::StopReason;
use crate::node::NodeOutput;
use crate::pricing::Amount;
use crate::state::State;

/// Why a super-step stops before it runs.
enum Gate {
    /// A halt was requested.
    Halt,
    /// Nodes about to run have `interrupt_before` gates.
    Interrupts(Vec<Interrupt>),
}

/// What merging a super-step's outcomes produced.
#[derive(Default)]
pub(super) struct Merged {
    /// The serialized updates, in merge order (durable runs).
    pub(super) deltas: Vec<serde_json::Value>,
    /// The nodes of tasks a human rejected.
    pub(super) rejected: Vec<usize>,
}

/// Numbers the tasks of a super-step in their deterministic order: graph
/// order, then dispatch order.
fn number(ready: &mut [Task]) {
    if let [only] = ready {
        only.index = 0;
        return;
    }
    if ready.len() > 1 {
        ready.sort_by_key(|t| t.node);
    }
    for (i, t) in ready.iter_mut().enumerate() {
        t.index = i as u32;
    }
}

impl<S: State> Executor<'_, S> {
    /// Runs super-steps from `ready` until no node is ready, a human
    /// decision or a halt stops the run, or something fails.
    ///
    /// Each super-step: numbers its tasks, stops at a halt or an
    /// `interrupt_before` gate, passes the safe point, runs the tasks,
    /// stops on a failure or a pause, merges the updates, routes, commits
    /// (durable runs) and stops at an `interrupt_after` gate.
    pub(crate) async fn execute(&mut self, mut ready: Vec<Task>) -> Result<Stop, Error> {
        let cancel = self.cancel.clone();
        let cancel = &cancel;
        let mut next: Vec<Task> = Vec::new();
        while !ready.is_empty() {
            number(&mut ready);
            if let Some(gate) = self.gate_before(&ready) {
                return Box::pin(self.stop_at_gate(&ready, gate)).await;
            }
            // A sink over its buffer bound slows the run down here.
            self.run.bus.backpressure(cancel).await;
            if let Err(e) = self.safe_point(&ready, cancel) {
                self.emit_error(Instant::now(), None, None, 0, &e);
                return Err(Box::pin(self.fail(&ready, None, e)).await);
            }
            let first_record = self.records.len();
            let mut outcomes = std::mem::take(&mut self.outcomes);
            // A lone task not saved before (the common case: chains) merges
            // in place unless it failed or paused.
            let ran = match ready.as_slice() {
                [task] if task.saved.is_none() => self.run_lone(task, &mut outcomes).await,
                _ => self
                    .run_tasks(&ready, &mut outcomes, cancel)
                    .await
                    .map(|()| None),
            };
            let merged_in_place = match ran {
                Ok(m) => m,
                Err(e) => {
                    self.outcomes = outcomes;
                    return Err(Box::pin(self.fail(&ready, None, e)).await);
                }
            };
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
            let merged = match merged_in_place {
                Some(merged) => merged,
                None => self.merge(&mut outcomes),
            };
            self.outcomes = outcomes;
            let ran = merged.and_then(|m| Ok((self.route_completed(&m.rejected, &mut next)?, m)));
            let (ran, merged) = match ran {
                Ok(ran) => ran,
                Err(e) => return Err(Box::pin(self.fail(&ready, None, e)).await),
            };
            self.generation += 1;
            self.superstep += 1;
            let mut gates = match self.interrupt_after.is_empty() {
                true => Vec::new(),
                false => self.gates_after(&ran),
            };
            if gates.is_empty() && self.merges_gates_before() {
                // The next super-step stops at `interrupt_before` gates: the
                // pause goes into this super-step's checkpoint, one commit
                // instead of two.
                number(&mut next);
                gates = self.gates_before(&next);
            }
            if self.durable.is_some() && !self.scope.is_nested() {
                let committed = Box::pin(self.commit_superstep(
                    merged.deltas,
                    first_record,
                    &ran,
                    &next,
                    gates.clone(),
                ))
                .await;
                if let Err(e) = committed {
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
        if !self.scope.is_nested() && self.run.halt_requested() {
            return Ok(Stop::Halted);
        }
        Ok(Stop::Completed)
    }

    /// Whether the `interrupt_before` gates of the next super-step are
    /// checked when this one commits (durable top-level runs with gates and
    /// no halt pending), so its checkpoint also records the pause.
    fn merges_gates_before(&self) -> bool {
        !self.interrupt_before.is_empty()
            && self.durable.is_some()
            && !self.scope.is_nested()
            && !self.run.halt_requested()
    }

    /// Whether the super-step about to run stops first: a halt request
    /// (top level only) or `interrupt_before` gates.
    fn gate_before(&self, ready: &[Task]) -> Option<Gate> {
        if !self.scope.is_nested() && self.run.halt_requested() && !self.run.halt_observed() {
            return Some(Gate::Halt);
        }
        if self.interrupt_before.is_empty() {
            return None;
        }
        let gates = self.gates_before(ready);
        (!gates.is_empty()).then_some(Gate::Interrupts(gates))
    }

    /// Stops before running `ready`, at `gate`.
    async fn stop_at_gate(&mut self, ready: &[Task], gate: Gate) -> Result<Stop, Error> {
        match gate {
            Gate::Halt => {
                self.emit_log(
                    crate::trace::LogLevel::Warn,
                    "halt requested: stopping at a safe point",
                );
                self.commit_stop(ready, ThreadStatus::Halted, Vec::new(), None)
                    .await?;
                Ok(Stop::Halted)
            }
            Gate::Interrupts(gates) => self.pause(ready, gates).await,
        }
    }

    /// Runs the super-step's tasks, outcomes in task order.
    async fn run_tasks(
        &mut self,
        ready: &[Task],
        outcomes: &mut Vec<TaskOutcome<S::Update>>,
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
        let mut reservations = std::mem::take(&mut self.reservations);
        let ran = Box::pin(self.superstep(ready, &mut reservations, outcomes, cancel)).await;
        self.reservations = reservations;
        if ran.is_err() {
            outcomes.clear();
        }
        ran
    }

    /// Merges every successful update into the state, in task order, and
    /// records every step. Fills `self.completed` with the nodes to route
    /// (one entry per run of consecutive instances of a node).
    fn merge(&mut self, outcomes: &mut Vec<TaskOutcome<S::Update>>) -> Result<Merged, Error> {
        let mut merged = Merged::default();
        let mut failure: Option<Error> = None;
        for o in outcomes.drain(..) {
            let idx = self.records.len();
            self.records.push(o.record);
            if o.rejected {
                merged.rejected.push(o.node);
                continue;
            }
            let Some(out) = o.output else {
                continue;
            };
            if let Err(e) = self.merge_output(o.node, idx, out, o.update_json, &mut merged) {
                failure.get_or_insert(e);
            }
        }
        if failure.is_some() {
            self.completed.clear();
        }
        failure.map_or(Ok(merged), Err)
    }

    /// Merges the output of `node`'s step (record number `record`) into
    /// the state and adds the node to `self.completed`. The update is
    /// applied even when it cannot be serialized for a durable run (the
    /// error is returned, and the run fails).
    pub(super) fn merge_output(
        &mut self,
        node: usize,
        record: usize,
        out: NodeOutput<S::Update>,
        update_json: Option<serde_json::Value>,
        merged: &mut Merged,
    ) -> Result<(), Error> {
        let mut serialized = Ok(());
        if let Some(update) = out.update {
            if self.durable.is_some() {
                let delta = match update_json {
                    Some(v) => Ok(v),
                    None => to_json(&update, Some(&self.graph.nodes[node].id)),
                };
                match delta {
                    Ok(v) => merged.deltas.push(v),
                    Err(e) => serialized = Err(e),
                }
            }
            Arc::make_mut(&mut self.state).apply(update);
        }
        match self.completed.last_mut() {
            Some(last) if last.0 == node => {
                last.1 = record;
                last.2.extend(out.dispatches);
            }
            _ => self.completed.push((node, record, out.dispatches)),
        }
        serialized
    }

    /// Evaluates the edges of the merged nodes against the merged state,
    /// adding what they schedule to `next`, and skips past rejected tasks.
    /// Returns the nodes that ran (when a later step needs them).
    fn route_completed(
        &mut self,
        rejected: &[usize],
        next: &mut Vec<Task>,
    ) -> Result<Vec<usize>, Error> {
        let keep_ran = self.durable.is_some()
            || self.scope.is_nested()
            || !self.interrupt_after.is_empty()
            || !rejected.is_empty();
        let mut ran: Vec<usize> = Vec::new();
        // One node to route and nothing else to note (the common case:
        // chains): routed straight, with no list to drain.
        if !keep_ran && self.completed.len() == 1 {
            if let Some((node, record, dispatches)) = self.completed.pop() {
                self.propagate(node, record, dispatches, next)?;
            }
            return Ok(ran);
        }
        let mut completed = std::mem::take(&mut self.completed);
        let mut routed = Ok(());
        for (node, record, dispatches) in completed.drain(..) {
            if keep_ran {
                ran.push(node);
            }
            routed = self.propagate(node, record, dispatches, next);
            if routed.is_err() {
                break;
            }
        }
        completed.clear();
        self.completed = completed;
        routed?;
        if !rejected.is_empty() {
            self.skip_rejected(rejected, &ran, next);
        }
        Ok(ran)
    }

    /// The `interrupt_after` gates of the nodes that just ran (one per node).
    fn gates_after(&self, ran: &[usize]) -> Vec<Interrupt> {
        let mut gates: Vec<Interrupt> = Vec::new();
        if self.interrupt_after.is_empty() {
            return gates;
        }
        for &n in ran {
            if self.interrupt_after.contains(&n)
                && !gates.iter().any(|i| i.node == self.graph.nodes[n].id)
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
        gates
    }

    /// Tasks a human rejected: recorded as skipped (done when replayed);
    /// when every instance of a node was rejected, its forward successors
    /// get a skip instead of firing.
    pub(super) fn skip_rejected(
        &mut self,
        rejected: &[usize],
        ran: &[usize],
        next: &mut Vec<Task>,
    ) {
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

    /// Checks cancellation, the deadline, the recursion limit and the
    /// node-execution budget before a super-step, and counts its executions.
    pub(super) fn safe_point(
        &self,
        ready: &[Task],
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
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

    pub(super) fn stop_error(
        &self,
        reason: StopReason,
        now: Instant,
        node: Option<usize>,
    ) -> Error {
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
    pub(super) async fn superstep(
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
            let mut spare = None;
            let mut tasks = ready.iter().zip(reservations.drain(..));
            for (task, reserved) in tasks.by_ref() {
                let mut o = match &task.saved {
                    Some(w) => self.replayed(task, reserved, w),
                    None => self.execute_task(task, reserved, None, &mut spare).await,
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
    pub(super) async fn run_concurrently(
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
                            None => {
                                self.execute_task(task, reserved, Some(token), &mut None)
                                    .await
                            }
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
}
