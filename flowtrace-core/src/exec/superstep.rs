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
use crate::pricing::Amount;
use crate::state::State;
use crate::trace::EventKind;

impl<S: State> Executor<'_, S> {
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
}
