//! Events inside a step: model and tool call spans, routes, and the span
//! events (retry, fallback, cache hit, interrupt, budget, error, log).

use std::time::{Duration, SystemTime};

use flowtrace_core::trace::{CacheOutcome, EventKind, TraceEvent};
use opentelemetry::trace::{Span as _, SpanKind};
use opentelemetry::{Array, KeyValue, StringValue, Value};
use opentelemetry_sdk::trace::SdkTracer;

use super::Shared;
use super::content::{self, int};
use super::runs::{MAX_OPEN_CALLS_PER_STEP, RunSpans, exception, failure, new_span};
use crate::semconv as sc;

impl RunSpans {
    pub(super) fn record_in_step(
        &mut self,
        tracer: &SdkTracer,
        shared: &Shared,
        ev: &TraceEvent,
        at: SystemTime,
    ) {
        match &ev.kind {
            EventKind::LlmRequest { .. } => self.llm_request(tracer, shared, ev, at),
            EventKind::LlmResponse { .. } => self.llm_response(tracer, shared, ev, at),
            EventKind::ToolRequest { .. } => self.tool_request(tracer, shared, ev, at),
            EventKind::ToolResponse { .. } => self.tool_response(shared, ev, at),
            EventKind::Route { branch, targets } => self.route(shared, ev, branch, targets, at),
            EventKind::Error {
                error_kind,
                message,
            } => self.error(shared, ev, error_kind, message, at),
            EventKind::Retry { .. } => {
                if !self.next_attempt(tracer, shared, ev, at) {
                    self.span_event(shared, ev, at);
                }
            }
            _ => self.span_event(shared, ev, at),
        }
    }

    /// Whether step `ev.step_id` is open and has room for another call.
    fn call_room(&self, shared: &Shared, ev: &TraceEvent) -> bool {
        let room = ev
            .step_id
            .and_then(|id| self.steps.get(&id))
            .is_some_and(|s| s.calls.len() + s.tools.len() < MAX_OPEN_CALLS_PER_STEP);
        if !room {
            shared.counters.refused();
        }
        room && self.has_room(shared)
    }

    pub(super) fn common(&self, ev: &TraceEvent, attrs: &mut Vec<KeyValue>) {
        attrs.push(KeyValue::new(sc::FLOWTRACE_RUN_ID, self.run_id.clone()));
        if let Some(node) = &ev.node {
            attrs.push(KeyValue::new(
                sc::FLOWTRACE_NODE_ID,
                node.as_str().to_string(),
            ));
        }
    }

    fn llm_request(
        &mut self,
        tracer: &SdkTracer,
        shared: &Shared,
        ev: &TraceEvent,
        at: SystemTime,
    ) {
        let EventKind::LlmRequest {
            provider,
            model,
            request,
            ..
        } = &ev.kind
        else {
            return;
        };
        if !self.call_room(shared, ev) {
            return;
        }
        let mut attrs = Vec::with_capacity(10);
        attrs.push(KeyValue::new(sc::GEN_AI_OPERATION_NAME, sc::OPERATION_CHAT));
        // The provider is set when the call ends (`provider_attrs`): a
        // fallback chain may answer from another one, and the SDK keeps
        // every value an attribute is given.
        attrs.push(KeyValue::new(sc::GEN_AI_REQUEST_MODEL, model.clone()));
        if let Some(t) = request.temperature {
            attrs.push(KeyValue::new(sc::GEN_AI_REQUEST_TEMPERATURE, f64::from(t)));
        }
        if let Some(m) = request.max_tokens {
            attrs.push(KeyValue::new(sc::GEN_AI_REQUEST_MAX_TOKENS, i64::from(m)));
        }
        self.common(ev, &mut attrs);
        if shared.capture_content {
            shared.push_content(
                &mut attrs,
                sc::GEN_AI_INPUT_MESSAGES,
                content::input_messages(request),
            );
        }
        let parent = ev
            .step_id
            .and_then(|id| self.steps.get(&id))
            .map(|s| &s.span);
        let span = self.start_child(
            tracer,
            shared,
            parent,
            new_span(
                format!("{} {model}", sc::OPERATION_CHAT),
                SpanKind::Client,
                at,
                attrs,
            ),
        );
        if let Some(step) = ev.step_id.and_then(|id| self.steps.get_mut(&id)) {
            step.calls.push_back((provider.clone(), span));
            self.open = self.open.saturating_add(1);
        }
    }

    fn llm_response(
        &mut self,
        tracer: &SdkTracer,
        shared: &Shared,
        ev: &TraceEvent,
        at: SystemTime,
    ) {
        let EventKind::LlmResponse {
            provider,
            model,
            text,
            tool_calls,
            usage,
            cost,
            latency_us,
            finish_reason,
        } = &ev.kind
        else {
            return;
        };
        let open = ev
            .step_id
            .and_then(|id| self.steps.get_mut(&id))
            .and_then(|s| s.calls.pop_front());
        // The provider asked, when a request was seen: a fallback chain may
        // have answered from another one.
        let mut asked = None;
        let mut span = match open {
            Some((provider, span)) => {
                self.open = self.open.saturating_sub(1);
                asked = Some(provider);
                span
            }
            // A response with no request seen (a call over the limit gets
            // neither): a span of the call's latency, when there is room.
            None => {
                if !self.call_room(shared, ev) {
                    return;
                }
                let start = at
                    .checked_sub(Duration::from_micros(*latency_us))
                    .unwrap_or(at);
                let parent = ev
                    .step_id
                    .and_then(|id| self.steps.get(&id))
                    .map(|s| &s.span);
                let attrs = vec![
                    KeyValue::new(sc::GEN_AI_OPERATION_NAME, sc::OPERATION_CHAT),
                    KeyValue::new(sc::GEN_AI_REQUEST_MODEL, model.clone()),
                ];
                self.start_child(
                    tracer,
                    shared,
                    parent,
                    new_span(
                        format!("{} {model}", sc::OPERATION_CHAT),
                        SpanKind::Client,
                        start,
                        attrs,
                    ),
                )
            }
        };
        let mut attrs = Vec::with_capacity(10);
        provider_attrs(&mut attrs, provider);
        if let Some(a) = asked.filter(|a| a != provider) {
            attrs.push(KeyValue::new(sc::FLOWTRACE_REQUESTED_PROVIDER, a));
        }
        attrs.push(KeyValue::new(sc::GEN_AI_RESPONSE_MODEL, model.clone()));
        attrs.push(KeyValue::new(
            sc::GEN_AI_USAGE_INPUT_TOKENS,
            int(usage.input_tokens),
        ));
        attrs.push(KeyValue::new(
            sc::GEN_AI_USAGE_OUTPUT_TOKENS,
            int(usage.output_tokens),
        ));
        attrs.push(content::finish_reasons(finish_reason));
        super::runs::money(&mut attrs, *cost);
        if shared.capture_content {
            shared.push_content(
                &mut attrs,
                sc::GEN_AI_OUTPUT_MESSAGES,
                content::output_messages(text, tool_calls, finish_reason),
            );
        }
        span.set_attributes(attrs);
        span.end_with_timestamp(at);
        shared.counters.ended(1);
    }

    fn tool_request(
        &mut self,
        tracer: &SdkTracer,
        shared: &Shared,
        ev: &TraceEvent,
        at: SystemTime,
    ) {
        let EventKind::ToolRequest { tool, arguments } = &ev.kind else {
            return;
        };
        if !self.call_room(shared, ev) {
            return;
        }
        let mut attrs = Vec::with_capacity(5);
        attrs.push(KeyValue::new(
            sc::GEN_AI_OPERATION_NAME,
            sc::OPERATION_EXECUTE_TOOL,
        ));
        attrs.push(KeyValue::new(sc::GEN_AI_TOOL_NAME, tool.clone()));
        self.common(ev, &mut attrs);
        if shared.capture_content {
            shared.push_content(
                &mut attrs,
                sc::GEN_AI_TOOL_CALL_ARGUMENTS,
                arguments.to_string(),
            );
        }
        let parent = ev
            .step_id
            .and_then(|id| self.steps.get(&id))
            .map(|s| &s.span);
        let span = self.start_child(
            tracer,
            shared,
            parent,
            new_span(
                format!("{} {tool}", sc::OPERATION_EXECUTE_TOOL),
                SpanKind::Internal,
                at,
                attrs,
            ),
        );
        if let Some(step) = ev.step_id.and_then(|id| self.steps.get_mut(&id)) {
            step.tools.push_back((tool.clone(), span));
            self.open = self.open.saturating_add(1);
        }
    }

    fn tool_response(&mut self, shared: &Shared, ev: &TraceEvent, at: SystemTime) {
        let EventKind::ToolResponse {
            tool,
            output,
            error,
            cache,
            ..
        } = &ev.kind
        else {
            return;
        };
        let Some(step) = ev.step_id.and_then(|id| self.steps.get_mut(&id)) else {
            return;
        };
        let Some(i) = step.tools.iter().position(|(name, _)| name == tool) else {
            return;
        };
        let Some((_, mut span)) = step.tools.remove(i) else {
            return;
        };
        self.open = self.open.saturating_sub(1);
        if let Some(e) = error {
            failure(&mut span, at, "flowtrace.tool_error", e);
        }
        if let Some(outcome) = cache {
            span.set_attribute(KeyValue::new(
                sc::FLOWTRACE_CACHE_HIT,
                matches!(outcome, CacheOutcome::Hit),
            ));
        }
        if shared.capture_content
            && let Some(out) = output
        {
            let mut attrs = Vec::with_capacity(2);
            shared.push_content(&mut attrs, sc::GEN_AI_TOOL_CALL_RESULT, out.to_string());
            span.set_attributes(attrs);
        }
        span.end_with_timestamp(at);
        shared.counters.ended(1);
    }

    fn route(
        &mut self,
        shared: &Shared,
        ev: &TraceEvent,
        branch: &str,
        targets: &[String],
        at: SystemTime,
    ) {
        let attrs = [
            KeyValue::new(sc::FLOWTRACE_BRANCH, branch.to_string()),
            KeyValue::new(
                sc::FLOWTRACE_BRANCH_TARGETS,
                Value::Array(Array::String(
                    targets
                        .iter()
                        .map(|t| StringValue::from(t.clone()))
                        .collect(),
                )),
            ),
        ];
        if let Some(id) = ev.step_id {
            if let Some(i) = self.parked.iter().position(|(p, _, _)| *p == id)
                && let Some((_, mut span, end)) = self.parked.remove(i)
            {
                span.set_attributes(attrs);
                span.end_with_timestamp(end);
                self.open = self.open.saturating_sub(1);
                shared.counters.ended(1);
                return;
            }
            if let Some(step) = self.steps.get_mut(&id) {
                step.span.set_attributes(attrs);
                return;
            }
        }
        let mut attrs = attrs.to_vec();
        self.common(ev, &mut attrs);
        self.scope(ev)
            .add_event_with_timestamp(sc::EVENT_ROUTE, at, attrs);
    }

    fn error(
        &mut self,
        shared: &Shared,
        ev: &TraceEvent,
        kind: &str,
        message: &str,
        at: SystemTime,
    ) {
        if let Some(step) = ev.step_id.and_then(|id| self.steps.get_mut(&id)) {
            // A failed model call: no response follows, its span ends here.
            if kind.starts_with("model.")
                && let Some((provider, mut call)) = step.calls.pop_front()
            {
                let mut attrs = Vec::with_capacity(2);
                provider_attrs(&mut attrs, &provider);
                call.set_attributes(attrs);
                failure(&mut call, at, kind, message);
                call.end_with_timestamp(at);
                self.open = self.open.saturating_sub(1);
                shared.counters.ended(1);
                return;
            }
            // The attempt may be retried: the step's status is set by
            // `step.finished`.
            exception(&mut step.span, at, kind, message);
            step.errored = true;
            return;
        }
        exception(self.scope(ev), at, kind, message);
    }
}

/// The provider of a model call's span (`gen_ai.provider.name` and the
/// older `gen_ai.system`), set once, when the call ends.
pub(super) fn provider_attrs(attrs: &mut Vec<KeyValue>, provider: &str) {
    attrs.push(KeyValue::new(sc::GEN_AI_PROVIDER_NAME, provider.to_owned()));
    attrs.push(KeyValue::new(sc::GEN_AI_SYSTEM, provider.to_owned()));
}
