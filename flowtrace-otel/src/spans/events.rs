//! Events that become span events: retries, fallbacks, cache hits, model
//! routes, interrupts, budget stops, skipped steps and warnings.

use std::time::SystemTime;

use flowtrace_core::trace::{EventKind, LogLevel, TraceEvent};
use opentelemetry::KeyValue;
use opentelemetry::trace::Span as _;
use opentelemetry_sdk::trace::Span;

use super::Shared;
use super::content::{error_text, int};
use super::runs::RunSpans;
use crate::semconv as sc;

impl RunSpans {
    /// Events that become span events on the innermost open span.
    pub(super) fn span_event(&mut self, shared: &Shared, ev: &TraceEvent, at: SystemTime) {
        let mut attrs = Vec::with_capacity(6);
        let name = match &ev.kind {
            EventKind::Retry {
                failed_attempt,
                delay_ms,
                error,
            } => {
                attrs.push(KeyValue::new(
                    sc::FLOWTRACE_ATTEMPT,
                    i64::from(*failed_attempt),
                ));
                attrs.push(KeyValue::new(sc::FLOWTRACE_RETRY_DELAY_MS, int(*delay_ms)));
                attrs.push(KeyValue::new(sc::EXCEPTION_MESSAGE, error_text(error)));
                sc::EVENT_RETRY
            }
            EventKind::Fallback {
                from_provider,
                from_model,
                to_provider,
                to_model,
                reason,
            } => {
                attrs.push(KeyValue::new(
                    sc::FLOWTRACE_FALLBACK_FROM_PROVIDER,
                    from_provider.clone(),
                ));
                attrs.push(KeyValue::new(
                    sc::FLOWTRACE_FALLBACK_FROM_MODEL,
                    from_model.clone(),
                ));
                attrs.push(KeyValue::new(
                    sc::FLOWTRACE_FALLBACK_TO_PROVIDER,
                    to_provider.clone(),
                ));
                attrs.push(KeyValue::new(
                    sc::FLOWTRACE_FALLBACK_TO_MODEL,
                    to_model.clone(),
                ));
                attrs.push(KeyValue::new(sc::FLOWTRACE_REASON, error_text(reason)));
                if let Some(call) = self.open_call(ev) {
                    call.add_event_with_timestamp(sc::EVENT_FALLBACK, at, attrs);
                    return;
                }
                sc::EVENT_FALLBACK
            }
            EventKind::CacheHit {
                provider,
                model,
                saved_cost,
                ..
            } => {
                attrs.push(KeyValue::new(sc::GEN_AI_PROVIDER_NAME, provider.clone()));
                attrs.push(KeyValue::new(sc::GEN_AI_REQUEST_MODEL, model.clone()));
                attrs.push(KeyValue::new(
                    sc::FLOWTRACE_SAVED_COST_USD,
                    saved_cost.as_usd_f64(),
                ));
                if let Some(step) = ev.step_id.and_then(|id| self.steps.get_mut(&id)) {
                    step.cache_hit = true;
                }
                if let Some(call) = self.open_call(ev) {
                    call.set_attribute(KeyValue::new(sc::FLOWTRACE_CACHE_HIT, true));
                    call.add_event_with_timestamp(sc::EVENT_CACHE_HIT, at, attrs);
                    return;
                }
                sc::EVENT_CACHE_HIT
            }
            EventKind::ModelRoute {
                profile,
                provider,
                model,
                reason,
                ..
            } => {
                attrs.push(KeyValue::new(sc::FLOWTRACE_ROUTE_PROFILE, profile.clone()));
                attrs.push(KeyValue::new(sc::GEN_AI_PROVIDER_NAME, provider.clone()));
                attrs.push(KeyValue::new(sc::GEN_AI_REQUEST_MODEL, model.clone()));
                attrs.push(KeyValue::new(sc::FLOWTRACE_REASON, error_text(reason)));
                sc::EVENT_MODEL_ROUTE
            }
            EventKind::Interrupt { payload } | EventKind::Resume { payload } => {
                self.common(ev, &mut attrs);
                if shared.capture_content {
                    shared.push_content(&mut attrs, sc::FLOWTRACE_PAYLOAD, payload.to_string());
                }
                if matches!(ev.kind, EventKind::Interrupt { .. }) {
                    sc::EVENT_INTERRUPT
                } else {
                    sc::EVENT_RESUME
                }
            }
            EventKind::BudgetExceeded {
                limit,
                limit_value,
                observed,
                ..
            } => {
                attrs.push(KeyValue::new(sc::FLOWTRACE_BUDGET_LIMIT, limit.clone()));
                attrs.push(KeyValue::new(
                    sc::FLOWTRACE_BUDGET_LIMIT_VALUE,
                    limit_value.clone(),
                ));
                attrs.push(KeyValue::new(
                    sc::FLOWTRACE_BUDGET_OBSERVED,
                    observed.clone(),
                ));
                sc::EVENT_BUDGET_EXCEEDED
            }
            EventKind::StepSkipped { reason } => {
                self.common(ev, &mut attrs);
                attrs.push(KeyValue::new(sc::FLOWTRACE_REASON, error_text(reason)));
                self.scope(ev)
                    .add_event_with_timestamp(sc::EVENT_STEP_SKIPPED, at, attrs);
                return;
            }
            EventKind::Log {
                level: LogLevel::Warn | LogLevel::Error,
                message,
            } => {
                if shared.capture_content {
                    shared.push_content(&mut attrs, sc::FLOWTRACE_LOG_MESSAGE, message.clone());
                }
                sc::EVENT_LOG
            }
            _ => return,
        };
        self.enclosing(ev).add_event_with_timestamp(name, at, attrs);
    }

    fn open_call(&mut self, ev: &TraceEvent) -> Option<&mut Span> {
        ev.step_id
            .and_then(|id| self.steps.get_mut(&id))
            .and_then(|s| s.calls.front_mut())
            .map(|(_, span)| span)
    }
}
