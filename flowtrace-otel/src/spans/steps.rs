//! Step spans: `step.started` to `step.finished`, kept open for a
//! following `route` event.

use std::collections::VecDeque;
use std::time::SystemTime;

use flowtrace_core::trace::{EventKind, StepStatus, TraceEvent};
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Status};
use opentelemetry_sdk::trace::SdkTracer;

use super::Shared;
use super::content::{error_text, int};
use super::runs::{MAX_PARKED_STEPS, RunSpans, Step, end_step, failure, money, new_span, usage};
use crate::semconv as sc;

impl RunSpans {
    pub(super) fn step_started(
        &mut self,
        tracer: &SdkTracer,
        shared: &Shared,
        ev: &TraceEvent,
        at: SystemTime,
    ) {
        let Some(id) = ev.step_id else { return };
        // Routes of earlier steps have been taken by now.
        if !self.parked.is_empty() {
            let n = self.parked.len() as u64;
            self.unpark_all();
            shared.counters.ended(n);
        }
        if !self.has_room(shared) {
            return;
        }
        let attrs = self.step_attrs(ev, id.0, 1);
        let span = self.start_child(
            tracer,
            shared,
            self.parent_of(ev.parent_step_id),
            new_span(sc::SPAN_STEP, SpanKind::Internal, at, attrs),
        );
        self.open = self.open.saturating_add(1);
        let step = Step {
            span,
            calls: VecDeque::new(),
            tools: VecDeque::new(),
            cache_hit: false,
            errored: false,
        };
        if let Some(old) = self.steps.insert(id, step) {
            end_step(old, at).end_with_timestamp(at);
            self.open = self.open.saturating_sub(1);
            shared.counters.ended(1);
        }
    }

    /// The attributes every attempt span of a step carries.
    fn step_attrs(&self, ev: &TraceEvent, step_id: u64, attempt: u32) -> Vec<KeyValue> {
        let mut attrs = Vec::with_capacity(6);
        attrs.push(KeyValue::new(sc::FLOWTRACE_RUN_ID, self.run_id.clone()));
        if let Some(node) = &ev.node {
            attrs.push(KeyValue::new(
                sc::FLOWTRACE_NODE_ID,
                node.as_str().to_string(),
            ));
        }
        attrs.push(KeyValue::new(sc::FLOWTRACE_STEP_ID, int(step_id)));
        attrs.push(KeyValue::new(sc::FLOWTRACE_ATTEMPT, i64::from(attempt)));
        if let Some(p) = ev.parent_step_id {
            attrs.push(KeyValue::new(sc::FLOWTRACE_PARENT_STEP_ID, int(p.0)));
        }
        attrs
    }

    /// A node attempt failed and will be retried (a `retry` event of the
    /// step itself, with no model or tool call open: a call's own retries
    /// stay events on the call's span). Ends the attempt's span (status
    /// error, the retry as an event) and opens the next attempt's, starting
    /// after the retry delay. Returns whether it did.
    pub(super) fn next_attempt(
        &mut self,
        tracer: &SdkTracer,
        shared: &Shared,
        ev: &TraceEvent,
        at: SystemTime,
    ) -> bool {
        let EventKind::Retry {
            failed_attempt,
            delay_ms,
            error,
        } = &ev.kind
        else {
            return false;
        };
        let Some(id) = ev.step_id else { return false };
        let ours = self
            .steps
            .get(&id)
            .is_some_and(|s| s.calls.is_empty() && s.tools.is_empty());
        if !ours {
            return false;
        }
        let Some(step) = self.steps.remove(&id) else {
            return false;
        };
        let cache_hit = step.cache_hit;
        let mut span = end_step(step, at);
        span.add_event_with_timestamp(
            sc::EVENT_RETRY,
            at,
            vec![
                KeyValue::new(sc::FLOWTRACE_ATTEMPT, i64::from(*failed_attempt)),
                KeyValue::new(sc::FLOWTRACE_RETRY_DELAY_MS, int(*delay_ms)),
                KeyValue::new(sc::EXCEPTION_MESSAGE, error_text(error)),
            ],
        );
        span.set_attribute(KeyValue::new(sc::FLOWTRACE_STEP_STATUS, "retried"));
        span.set_status(Status::error(error_text(error)));
        span.end_with_timestamp(at);
        shared.counters.ended(1);
        let start = at
            .checked_add(std::time::Duration::from_millis(*delay_ms))
            .unwrap_or(at);
        let attrs = self.step_attrs(ev, id.0, failed_attempt.saturating_add(1));
        let span = self.start_child(
            tracer,
            shared,
            self.parent_of(ev.parent_step_id),
            new_span(sc::SPAN_STEP, SpanKind::Internal, start, attrs),
        );
        self.steps.insert(
            id,
            Step {
                span,
                calls: VecDeque::new(),
                tools: VecDeque::new(),
                cache_hit,
                errored: false,
            },
        );
        true
    }

    pub(super) fn step_finished(&mut self, shared: &Shared, ev: &TraceEvent, at: SystemTime) {
        let EventKind::StepFinished {
            status,
            usage: u,
            cost,
            error,
            ..
        } = &ev.kind
        else {
            return;
        };
        let Some(id) = ev.step_id else { return };
        let Some(step) = self.steps.remove(&id) else {
            return;
        };
        let calls = (step.calls.len() + step.tools.len()) as u64;
        let cache_hit = step.cache_hit;
        let errored = step.errored;
        let mut span = end_step(step, at);
        self.open = self.open.saturating_sub(calls as usize);
        shared.counters.ended(calls);
        let mut attrs = Vec::with_capacity(7);
        // `flowtrace.attempt` was set when this attempt's span started.
        attrs.push(KeyValue::new(
            sc::FLOWTRACE_STEP_STATUS,
            step_status(*status),
        ));
        attrs.push(KeyValue::new(sc::FLOWTRACE_CACHE_HIT, cache_hit));
        money(&mut attrs, *cost);
        if u.input_tokens != 0 || u.output_tokens != 0 {
            usage(&mut attrs, u);
        }
        span.set_attributes(attrs);
        if *status == StepStatus::Failed {
            let message = error.as_deref().unwrap_or("the step failed");
            if errored {
                span.set_status(Status::error(error_text(message)));
            } else {
                failure(&mut span, at, "flowtrace.step_failed", message);
            }
        }
        // Kept open for the `route` event that may follow.
        if self.parked.len() >= MAX_PARKED_STEPS
            && let Some((_, mut s, end)) = self.parked.pop_front()
        {
            s.end_with_timestamp(end);
            self.open = self.open.saturating_sub(1);
            shared.counters.ended(1);
        }
        self.parked.push_back((id, span, at));
    }
}

fn step_status(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
        StepStatus::Canceled => "canceled",
        StepStatus::Interrupted => "interrupted",
        _ => "other",
    }
}
