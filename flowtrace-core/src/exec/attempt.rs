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
use crate::trace::{EventKind, StepStatus};

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

impl<S: State> Executor<'_, S> {
    /// Runs one task: its attempts, retry delays, events and record.
    /// `group` is the super-step's shared token when siblings run
    /// concurrently; `None` means the run's own token.
    pub(super) async fn execute_task(
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
