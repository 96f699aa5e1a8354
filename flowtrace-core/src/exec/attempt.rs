//! One task's attempts: retries, timeouts, cancellation and the step's
//! events and record.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures::FutureExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::executor::*;
use crate::error::{Error, NodeError};
use crate::exec::shared::StopReason;
use crate::graph::compile::CompiledNode;
use crate::node::{NodeContext, NodeOutput, StepMeter, StepShared};
use crate::pricing::Amount;
use crate::state::State;
use crate::trace::StepRecord;
use crate::trace::{EventKind, StepStatus, Timestamp};

/// Why an attempt (or the wait before the next) ended without output.
pub(super) enum Failure {
    Node(NodeError),
    Timeout(Duration),
    Canceled,
    SiblingCanceled,
    Stop(StopReason),
    Panicked(String),
}

impl Failure {
    pub(super) fn describe(&self) -> String {
        match self {
            Failure::Node(e) => crate::error::Report::new(e).to_string(),
            Failure::Timeout(t) => format!("attempt timed out after {t:?}"),
            Failure::Canceled | Failure::SiblingCanceled => "canceled".into(),
            Failure::Stop(StopReason::Deadline) => "run deadline passed".into(),
            Failure::Stop(StopReason::DurationBudget) => "run duration budget exhausted".into(),
            Failure::Panicked(m) => format!("panicked: {m}"),
        }
    }

    pub(super) fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Node(e) => e.retry_after(),
            _ => None,
        }
    }
}

pub(super) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

pub(super) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What a step still shared with a context the node kept has consumed:
/// its reservation moves out (it is released now) and its provider and
/// model are taken; the counts stay.
fn settle_shared(step: &StepShared) -> StepMeter {
    let mut m = step.meter();
    StepMeter {
        usage: m.usage,
        cost: m.cost,
        reserved: std::mem::replace(&mut m.reserved, Amount::ZERO),
        provider: m.provider.take(),
        model: m.model.take(),
        cache_hits: m.cache_hits,
        model_calls: m.model_calls,
        call_retries: m.call_retries,
        fallbacks: m.fallbacks,
    }
}

impl<S: State> Executor<'_, S> {
    /// Runs one task: its attempts, retry delays, events and record.
    /// `group` is the super-step's shared token when siblings run
    /// concurrently; `None` means the run's own token. `spare` is a
    /// previous step's shared data to reuse, and receives this step's when
    /// the node kept no context.
    pub(super) async fn execute_task(
        &self,
        task: &Task,
        reserved: Amount,
        group: Option<&CancellationToken>,
        spare: &mut Option<Arc<StepShared>>,
    ) -> TaskOutcome<S::Update> {
        let cancel = group.unwrap_or(&self.cancel);
        let (step, started, started_ts) = self.start_step(task, reserved, group, spare.take());
        let (result, attempts) = self.run_attempts(task, &step, started, cancel).await;
        let (ended, record) = self.finish_step(task, step, started_ts, result, attempts, spare);
        ended.into_outcome(task, record)
    }

    /// Starts a task's step: its id, its `step.started` event and what its
    /// context shares with the executor (in `spare`'s allocation, when one
    /// is given; it holds the same run's data).
    pub(super) fn start_step(
        &self,
        task: &Task,
        reserved: Amount,
        group: Option<&CancellationToken>,
        spare: Option<Arc<StepShared>>,
    ) -> (Arc<StepShared>, Instant, Timestamp) {
        let cancel = group.unwrap_or(&self.cancel);
        let run = &self.run;
        let step_id = run.next_step_id();
        let started = Instant::now();
        // Computed once: the event's time and the record's.
        let started_ts = run.ts(started);
        self.emit_with_ts(started_ts, Some(step_id), Some(task.node), 1, || {
            EventKind::StepStarted {
                input: task.input.clone(),
            }
        });
        // Cloning a token takes a lock: only tokens other than the run's
        // own (which the context falls back to) are stored.
        let own_cancel = || (group.is_some() || self.parent_step.is_some()).then(|| cancel.clone());
        let thread = || self.durable.as_ref().map(|d| d.thread.clone());
        let mut spare = spare;
        if let Some(s) = spare.as_mut().and_then(Arc::get_mut) {
            s.step_id = step_id;
            s.parent_step = self.parent_step;
            s.node = self.graph.nodes[task.node].id.clone();
            s.input = task.input.clone();
            s.cancel = own_cancel();
            *s.meter.get_mut().unwrap_or_else(|p| p.into_inner()) = StepMeter {
                reserved,
                ..StepMeter::default()
            };
            // Usually both are empty: nothing to clone.
            if !(s.answers.is_empty() && task.answers.is_empty()) {
                s.answers.clone_from(&task.answers);
            }
            *s.calls.get_mut() = 0;
            s.approval.clone_from(&task.approved);
            *s.subgraph.get_mut().unwrap_or_else(|p| p.into_inner()) = task.subgraph.clone();
            *s.attempt_cancel
                .get_mut()
                .unwrap_or_else(|p| p.into_inner()) = None;
            if !Arc::ptr_eq(&s.scope, &self.scope) {
                s.scope = self.scope.clone();
            }
            s.thread = thread();
            s.superstep = self.superstep;
            s.task_index = task.index;
        } else {
            spare = None;
        }
        let step = match spare {
            Some(spare) => spare,
            None => Arc::new(StepShared {
                run: run.services.clone(),
                engine: run.clone(),
                step_id,
                parent_step: self.parent_step,
                node: self.graph.nodes[task.node].id.clone(),
                input: task.input.clone(),
                cancel: own_cancel(),
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
                thread: thread(),
                superstep: self.superstep,
                task_index: task.index,
            }),
        };
        (step, started, started_ts)
    }

    /// Runs the node's attempts until one succeeds, the failure is not
    /// retried, or the run stops during a retry delay. Returns the last
    /// attempt's result and its number.
    pub(super) async fn run_attempts(
        &self,
        task: &Task,
        step: &Arc<StepShared>,
        started: Instant,
        cancel: &CancellationToken,
    ) -> (Result<NodeOutput<S::Update>, Failure>, u32) {
        let cn = &self.graph.nodes[task.node];
        let timeout = cn.config.timeout.or(self.run.default_timeout);
        let mut attempt = 1u32;
        loop {
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
                Ok(out) => return (Ok(out), attempt),
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
            let Some(delay) = self.retry_delay(cn, &failure, attempt) else {
                return (Err(failure), attempt);
            };
            self.emit_with(
                Instant::now(),
                Some(step.step_id),
                Some(task.node),
                attempt,
                || EventKind::Retry {
                    failed_attempt: attempt,
                    delay_ms: delay.as_millis() as u64,
                    error: failure.describe(),
                },
            );
            if let Err(stop) = Box::pin(self.pause_before_retry(delay, cancel)).await {
                return (Err(stop), attempt);
            }
            attempt += 1;
        }
    }

    /// How long to wait before retrying after `failure` of attempt number
    /// `attempt`, or `None` when the node's (or the run's) retry policy
    /// does not retry it.
    fn retry_delay(
        &self,
        cn: &CompiledNode<S>,
        failure: &Failure,
        attempt: u32,
    ) -> Option<Duration> {
        let policy = cn
            .config
            .retry
            .as_ref()
            .or(self.run.default_retry.as_ref())?;
        let retryable = match failure {
            Failure::Node(e) => e.is_retryable(),
            Failure::Timeout(_) => policy.get_retry_timeouts(),
            _ => false,
        };
        if !retryable || attempt >= policy.get_max_attempts() {
            return None;
        }
        // Recomputed from the start (seeded jitter repeats), so no
        // iterator is held across the awaits of every step.
        let delay = policy
            .delays()
            .nth(attempt as usize - 1)
            .unwrap_or_default();
        Some(match failure.retry_after() {
            Some(at_least) => delay.max(at_least),
            None => delay,
        })
    }

    /// Ends a task's step: settles its reservation, classifies its result,
    /// emits `step.finished` (and `error`) and builds its record.
    pub(super) fn finish_step(
        &self,
        task: &Task,
        mut step: Arc<StepShared>,
        started_ts: Timestamp,
        result: Result<NodeOutput<S::Update>, Failure>,
        attempts: u32,
        spare: &mut Option<Arc<StepShared>>,
    ) -> (Ended<S::Update>, StepRecord) {
        let finished = Instant::now();
        let finished_ts = self.run.ts(finished);
        // Usually the node kept no context: the step's data is taken
        // without locking or cloning.
        // (Checked once: a context dropped meanwhile only costs the next
        // step an allocation.)
        let (meter, input, only) = match Arc::get_mut(&mut step) {
            Some(only) => {
                // Copied out field by field (the next step resets the meter).
                let m = only.meter.get_mut().unwrap_or_else(|p| p.into_inner());
                let meter = StepMeter {
                    provider: m.provider.take(),
                    model: m.model.take(),
                    ..*m
                };
                (meter, only.input.take(), true)
            }
            None => (settle_shared(&step), task.input.clone(), false),
        };
        let step_id = step.step_id;
        let node = step.node.clone();
        if only {
            *spare = Some(step);
        }
        self.run.ledger.release(meter.reserved);
        let ended = self.classify(task, result, attempts, finished);
        // In microseconds, as the events and records report it: the
        // difference of the two timestamps, with no further clock math.
        let latency = Duration::from_micros(
            finished_ts
                .unix_micros()
                .saturating_sub(started_ts.unix_micros())
                .max(0) as u64,
        );
        let error_text = ended.error.as_ref().map(|e| e.report().to_string());
        self.emit_with_ts(
            finished_ts,
            Some(step_id),
            Some(task.node),
            attempts,
            || EventKind::StepFinished {
                status: ended.status,
                attempts,
                latency_us: latency.as_micros() as u64,
                usage: meter.usage,
                cost: meter.cost,
                error: error_text.clone(),
            },
        );
        if let (Some(e), false) = (&ended.error, ended.sibling_canceled) {
            self.emit_error(finished, Some(step_id), Some(task.node), attempts, e);
        }
        let record = StepRecord {
            step_id,
            node,
            parent_step_id: self.parent_step,
            status: ended.status,
            attempts,
            usage: meter.usage,
            cost: meter.cost,
            latency,
            started_at: started_ts,
            provider: meter.provider,
            model: meter.model,
            cache_hits: meter.cache_hits,
            call_retries: meter.call_retries,
            fallbacks: meter.fallbacks,
            branch: None,
            input,
            error: error_text,
        };
        (ended, record)
    }

    /// What the last attempt's result means for the task: output, a pause
    /// for a human, or an error (with the step's status).
    fn classify(
        &self,
        task: &Task,
        result: Result<NodeOutput<S::Update>, Failure>,
        attempts: u32,
        finished: Instant,
    ) -> Ended<S::Update> {
        let ended = |output, error, pause, status, sibling_canceled| Ended {
            output,
            error,
            pause,
            status,
            sibling_canceled,
        };
        match result {
            Ok(out) => ended(Some(out), None, None, StepStatus::Succeeded, false),
            Err(Failure::Node(e)) if e.interrupt_payload().is_some() => {
                let pause = e.interrupt_payload().map(|p| TaskPause::Asked {
                    call: task.answers.len() as u32,
                    payload: p.clone(),
                });
                ended(
                    None,
                    None,
                    pause.map(Box::new),
                    StepStatus::Interrupted,
                    false,
                )
            }
            Err(Failure::Node(e)) if e.subgraph_pause().is_some() => {
                let pause = e.subgraph_pause().cloned().map(TaskPause::Subgraph);
                ended(
                    None,
                    None,
                    pause.map(Box::new),
                    StepStatus::Interrupted,
                    false,
                )
            }
            Err(f) => {
                let (e, status, sibling) = self.failure_to_error(f, task.node, attempts, finished);
                ended(None, Some(Box::new(e)), None, status, sibling)
            }
        }
    }

    /// One attempt: polls the node once (most nodes finish right away), and
    /// only if it is still pending races it against the timeout, the run's
    /// stop instant and cancellation.
    pub(super) async fn attempt(
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
    pub(super) async fn race<F>(
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
    pub(super) async fn pause_before_retry(
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

    pub(super) fn cancel_failure(&self) -> Failure {
        if self.run.cancel.is_cancelled() {
            Failure::Canceled
        } else {
            Failure::SiblingCanceled
        }
    }

    pub(super) fn failure_to_error(
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
}
