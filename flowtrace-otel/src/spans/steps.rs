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
        let mut attrs = Vec::with_capacity(5);
        attrs.push(KeyValue::new(sc::FLOWTRACE_RUN_ID, self.run_id.clone()));
        if let Some(node) = &ev.node {
            attrs.push(KeyValue::new(
                sc::FLOWTRACE_NODE_ID,
                node.as_str().to_string(),
            ));
        }
        attrs.push(KeyValue::new(sc::FLOWTRACE_STEP_ID, int(id.0)));
        if let Some(p) = ev.parent_step_id {
            attrs.push(KeyValue::new(sc::FLOWTRACE_PARENT_STEP_ID, int(p.0)));
        }
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

    pub(super) fn step_finished(&mut self, shared: &Shared, ev: &TraceEvent, at: SystemTime) {
        let EventKind::StepFinished {
            status,
            attempts,
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
        attrs.push(KeyValue::new(sc::FLOWTRACE_ATTEMPT, i64::from(*attempts)));
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
