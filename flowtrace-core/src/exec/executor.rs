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

use crate::error::{BudgetBreach, BudgetExceeded, Error, NodeError};
use crate::exec::shared::{Amount, RunShared, StopReason};
use crate::exec::{RunFailure, RunOutput, RunSummary, StepRecord};
use crate::graph::Inner;
use crate::graph::compile::{CompiledNode, Target};
use crate::ids::StepId;
use crate::node::{Dispatch, NodeContext, NodeOutput, StepMeter, StepShared};
use crate::pricing::{Cost, TokenUsage};
use crate::state::State;
use crate::trace::{EventKind, RunStatus, StepStatus};

/// A node to run in the next super-step, with its dispatch input.
struct Task {
    node: usize,
    input: Option<serde_json::Value>,
}

/// Join bookkeeping of one node for the current activation.
#[derive(Default)]
struct Pending {
    resolved: u32,
    fired: u32,
    inputs: Vec<serde_json::Value>,
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
    output: Option<NodeOutput<U>>,
    error: Option<Error>,
    sibling_canceled: bool,
    record: StepRecord,
}

/// Runs one graph (the top-level one or a subgraph) inside a run.
pub(crate) struct Executor<'g, S: State> {
    graph: &'g Inner<S>,
    run: Arc<RunShared>,
    parent_step: Option<StepId>,
    /// The token that stops this graph: the run's, or for a subgraph the
    /// parent step's.
    cancel: CancellationToken,
    state: Arc<S>,
    pending: Vec<Pending>,
    records: Vec<StepRecord>,
    generation: u64,
    scheduled: Vec<u64>,
    /// Reused per super-step to avoid allocating.
    outcomes: Vec<TaskOutcome<S::Update>>,
    reservations: Vec<Amount>,
    completed: Vec<(usize, usize, Vec<Dispatch>)>,
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
        let result = self.execute().await;
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

    /// Runs super-steps until no node is ready or something fails.
    async fn execute(&mut self) -> Result<(), Error> {
        let graph = self.graph;
        let cancel = self.cancel.clone();
        let cancel = &cancel;
        let mut ready: Vec<Task> = Vec::new();
        let mut next: Vec<Task> = Vec::new();
        for &e in &graph.entries {
            self.fire_forward(e, Vec::new(), &mut ready);
        }
        self.generation += 1;
        while !ready.is_empty() {
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
            if ready.len() > 1 {
                // Deterministic order: graph order, then dispatch order.
                ready.sort_by_key(|t| t.node);
            }
            let mut outcomes = std::mem::take(&mut self.outcomes);
            let mut reservations = std::mem::take(&mut self.reservations);
            let ran = self
                .superstep(&mut ready, &mut reservations, &mut outcomes, cancel)
                .await;
            self.reservations = reservations;
            ran?;

            // Merge every successful update, in task order.
            let mut failure: Option<Error> = None;
            let mut completed = std::mem::take(&mut self.completed);
            for o in outcomes.drain(..) {
                let idx = self.records.len();
                self.records.push(o.record);
                match (o.output, o.error) {
                    (Some(out), None) => {
                        if let Some(update) = out.update {
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
                return Err(e);
            }

            // Evaluate edges against the merged state.
            for (node, record, dispatches) in completed.drain(..) {
                self.propagate(node, record, dispatches, &mut next)?;
            }
            self.completed = completed;
            self.generation += 1;
            std::mem::swap(&mut ready, &mut next);
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
                let o = self.execute_task(task, reserved, None).await;
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

        // Siblings share a child token, canceled when one of them fails.
        let token = cancel.child_token();
        let mut slots: Vec<Option<TaskOutcome<S::Update>>> = (0..n).map(|_| None).collect();
        {
            let token = &token;
            let mut running =
                futures::stream::iter(ready.drain(..).zip(reservations.drain(..)).enumerate())
                    .map(|(i, (task, reserved))| async move {
                        (i, self.execute_task(task, reserved, Some(token)).await)
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
        Ok(())
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
        });
        let retry = cn.config.retry.as_ref().or(run.default_retry.as_ref());
        let timeout = cn.config.timeout.or(run.default_timeout);
        let mut attempt = 1u32;
        let mut delays = None;
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
            let mut delay = delays
                .get_or_insert_with(|| policy.delays())
                .next()
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
            if let Err(stop) = self.pause(delay, cancel).await {
                break Err(stop);
            }
            attempt += 1;
        };
        let finished = Instant::now();

        let (usage, cost, provider, model, cache_hits) = {
            let mut m = step.meter();
            let leftover = std::mem::replace(&mut m.reserved, Amount::ZERO);
            run.ledger.release(leftover);
            (
                m.usage,
                m.cost,
                m.provider.take(),
                m.model.take(),
                m.cache_hits,
            )
        };
        let (output, error, status, sibling_canceled) = match result {
            Ok(out) => (Some(out), None, StepStatus::Succeeded, false),
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
            output,
            error,
            sibling_canceled,
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
            Poll::Pending => {
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
                    r = fut.as_mut() => r,
                    _ = cancel.cancelled() => {
                        return Err(if self.run.cancel.is_cancelled() {
                            Failure::Canceled
                        } else {
                            Failure::SiblingCanceled
                        });
                    }
                    _ = sleep => {
                        return Err(match (node_deadline, stop) {
                            (Some(nd), Some((at, reason))) if at <= nd => Failure::Stop(reason),
                            (Some(_), _) => Failure::Timeout(timeout.unwrap_or_default()),
                            (None, Some((_, reason))) => Failure::Stop(reason),
                            (None, None) => Failure::Timeout(Duration::ZERO),
                        });
                    }
                }
            }
        };
        match res {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(Failure::Node(e)),
            Err(payload) => Err(Failure::Panicked(panic_message(payload.as_ref()))),
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
            let label = std::panic::catch_unwind(AssertUnwindSafe(|| (router.route)(state)))
                .map_err(|p| Error::NodePanicked {
                    node: cn.id.clone(),
                    message: format!("router panicked: {}", panic_message(p.as_ref())),
                })?;
            let Some(branch) = router.branches.iter().find(|b| b.label == label) else {
                return Err(Error::UnknownBranch {
                    node: cn.id.clone(),
                    branch: label.into_owned(),
                    known: router.branches.iter().map(|b| b.label.clone()).collect(),
                });
            };
            let names: Vec<String> = branch
                .targets
                .iter()
                .map(|t| match t {
                    Target::Node(t) => graph.nodes[*t].id.to_string(),
                    Target::End => crate::graph::END.to_string(),
                })
                .collect();
            for t in &branch.targets {
                if let Target::Node(t) = t {
                    chosen.push(*t);
                }
            }
            skip_reason = format!(
                "branch {:?} of {:?} was chosen",
                branch.label,
                cn.id.as_str()
            );
            let step_id = self.records.get(record).map(|r| r.step_id);
            if let Some(r) = self.records.get_mut(record) {
                r.branch = Some(branch.label.clone());
            }
            self.emit(
                Instant::now(),
                step_id,
                Some(node),
                0,
                EventKind::Route {
                    branch: branch.label.clone(),
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
            next.push(Task {
                node: t,
                input: None,
            });
        } else {
            next.extend(inputs.into_iter().map(|input| Task {
                node: t,
                input: Some(input),
            }));
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
            branch: None,
            input: None,
            error: Some(reason.to_string()),
        });
    }
}

fn status_of<T>(result: &Result<T, Error>) -> RunStatus {
    match result {
        Ok(_) => RunStatus::Succeeded,
        Err(Error::Canceled { .. }) => RunStatus::Canceled,
        Err(_) => RunStatus::Failed,
    }
}

/// Runs a top-level graph: `run.started`, the super-steps, the summary,
/// `budget.exceeded` on a breach, `run.finished`, and the sink flush.
pub(crate) async fn drive<S: State>(
    graph: &Inner<S>,
    run: Arc<RunShared>,
    input: S,
) -> Result<RunOutput<S>, RunFailure> {
    let started = Instant::now();
    run.event(
        started,
        None,
        None,
        None,
        0,
        EventKind::RunStarted {
            graph: graph.name.clone(),
        },
    );
    let mut exec = Executor::new(
        graph,
        run.clone(),
        None,
        run.cancel.clone(),
        Arc::new(input),
    );
    let result = exec.execute().await;
    let Executor {
        state, mut records, ..
    } = exec;
    {
        let mut nested = run.nested_steps.lock().unwrap_or_else(|p| p.into_inner());
        if !nested.is_empty() {
            records.append(&mut nested);
            records.sort_by_key(|r| r.step_id);
        }
    }
    let finished = Instant::now();
    let usage: TokenUsage = records.iter().map(|r| r.usage).sum();
    let cost: Cost = records.iter().map(|r| r.cost).sum();
    let node_executions = records
        .iter()
        .filter(|r| r.status != StepStatus::Skipped)
        .count() as u64;
    let elapsed = finished.saturating_duration_since(started);

    if let Err(Error::BudgetExceeded(b)) = &result {
        run.event(
            finished,
            None,
            None,
            b.node.as_ref(),
            0,
            EventKind::BudgetExceeded {
                limit: b.breach.limit_name().to_string(),
                limit_value: b.breach.limit_value(),
                observed: b.breach.observed_value(),
                refused_before_run: b.refused_before_run,
            },
        );
    }
    run.event(
        finished,
        None,
        None,
        None,
        0,
        EventKind::RunFinished {
            status: status_of(&result),
            usage,
            cost,
            node_executions,
            elapsed_us: elapsed.as_micros() as u64,
            error: result.as_ref().err().map(|e| e.to_string()),
        },
    );
    let flushed = run.bus.flush().await;
    let result = match (result, flushed) {
        (Ok(()), Err(e)) => Err(Error::Sink(e)),
        (r, _) => r,
    };
    let summary = RunSummary {
        run_id: run.run_id.clone(),
        graph: graph.name.clone(),
        status: status_of(&result),
        steps: records,
        usage,
        cost,
        node_executions,
        started_at: run.ts(started),
        elapsed,
        error: result.as_ref().err().map(Into::into),
    };
    match result {
        Ok(()) => Ok(RunOutput {
            state: Arc::try_unwrap(state).unwrap_or_else(|shared| (*shared).clone()),
            summary,
        }),
        Err(error) => Err(RunFailure {
            error,
            summary: Box::new(summary),
        }),
    }
}
