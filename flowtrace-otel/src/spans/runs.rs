//! The open runs of an [`OtelSink`](super::OtelSink): which span each event
//! belongs to, and when each span ends.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use flowtrace_core::trace::{EventKind, RunStatus, TraceEvent};
use flowtrace_core::{Cost, RunId, StepId, TokenUsage};
use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanKind, Status, TraceContextExt,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::trace::{SdkTracer, Span};

use super::Shared;
use super::content::{error_text, int, system_time};
use crate::semconv as sc;

/// Finished step spans kept open for the `route` event that follows them
/// (to set `flowtrace.branch`), per run; the oldest is ended beyond this.
pub const MAX_PARKED_STEPS: usize = 256;

/// Open model and tool calls per step; further calls get no span (counted
/// as refused).
pub const MAX_OPEN_CALLS_PER_STEP: usize = 64;

/// Every open run, by id.
#[derive(Default)]
pub(super) struct Runs {
    runs: HashMap<RunId, RunSpans>,
    seq: u64,
}

pub(super) struct RunSpans {
    seq: u64,
    /// The `flowtrace.run_id` attribute value.
    pub(super) run_id: Value,
    pub(super) root: Span,
    pub(super) subruns: HashMap<StepId, Span>,
    pub(super) steps: HashMap<StepId, Step>,
    pub(super) parked: VecDeque<(StepId, Span, SystemTime)>,
    /// Open spans other than the root (steps, calls, subruns, parked).
    pub(super) open: usize,
}

pub(super) struct Step {
    pub(super) span: Span,
    /// Open model calls: the provider asked, and the call's span.
    pub(super) calls: VecDeque<(String, Span)>,
    pub(super) tools: VecDeque<(String, Span)>,
    pub(super) cache_hit: bool,
    /// An `error` event was recorded on the step span.
    pub(super) errored: bool,
}

/// A span named `name` of `kind` starting at `at`.
pub(super) fn new_span(
    name: impl Into<Cow<'static, str>>,
    kind: SpanKind,
    at: SystemTime,
    attrs: Vec<KeyValue>,
) -> SpanBuilder {
    SpanBuilder::from_name(name)
        .with_kind(kind)
        .with_start_time(at)
        .with_attributes(attrs)
}

/// A context whose active span is `span` (a local parent), over the
/// host's context.
fn child_of(base: &Context, span: &Span) -> Context {
    let p = span.span_context();
    base.with_remote_span_context(SpanContext::new(
        p.trace_id(),
        p.span_id(),
        p.trace_flags(),
        false,
        p.trace_state().clone(),
    ))
}

/// Records a failure on `span` (an `exception` event and `error.type`)
/// without changing its status.
pub(super) fn exception(span: &mut Span, at: SystemTime, kind: &str, message: &str) {
    span.add_event_with_timestamp(
        sc::EVENT_EXCEPTION,
        at,
        vec![
            KeyValue::new(sc::EXCEPTION_TYPE, kind.to_string()),
            KeyValue::new(sc::EXCEPTION_MESSAGE, error_text(message)),
        ],
    );
    span.set_attribute(KeyValue::new(sc::ERROR_TYPE, kind.to_string()));
}

/// Records a failure on `span` and sets its status to error.
pub(super) fn failure(span: &mut Span, at: SystemTime, kind: &str, message: &str) {
    exception(span, at, kind, message);
    span.set_status(Status::error(error_text(message)));
}

pub(super) fn money(attrs: &mut Vec<KeyValue>, cost: Cost) {
    // Converted once, from the exact amount, at the edge.
    attrs.push(KeyValue::new(sc::FLOWTRACE_COST_USD, cost.as_usd_f64()));
    if cost != Cost::ZERO {
        attrs.push(KeyValue::new(sc::FLOWTRACE_COST, cost.to_decimal_string()));
    }
}

pub(super) fn usage(attrs: &mut Vec<KeyValue>, u: &TokenUsage) {
    attrs.push(KeyValue::new(
        sc::FLOWTRACE_USAGE_INPUT_TOKENS,
        int(u.input_tokens),
    ));
    attrs.push(KeyValue::new(
        sc::FLOWTRACE_USAGE_OUTPUT_TOKENS,
        int(u.output_tokens),
    ));
}

pub(super) fn end_step(mut step: Step, at: SystemTime) -> Span {
    for (provider, mut c) in step.calls.drain(..) {
        let mut attrs = Vec::with_capacity(2);
        super::calls::provider_attrs(&mut attrs, &provider);
        c.set_attributes(attrs);
        c.end_with_timestamp(at);
    }
    for (_, mut t) in step.tools.drain(..) {
        t.end_with_timestamp(at);
    }
    step.span
}

impl RunSpans {
    /// Ends every span of the run (children at `at`), the root last.
    fn end_all(mut self, at: SystemTime) -> Span {
        for (_, mut s, end) in self.parked.drain(..) {
            s.end_with_timestamp(end);
        }
        for (_, step) in self.steps.drain() {
            end_step(step, at).end_with_timestamp(at);
        }
        for (_, mut s) in self.subruns.drain() {
            s.end_with_timestamp(at);
        }
        self.root
    }

    pub(super) fn unpark_all(&mut self) {
        while let Some((_, mut s, end)) = self.parked.pop_front() {
            s.end_with_timestamp(end);
            self.open = self.open.saturating_sub(1);
        }
    }

    /// The span of the run (or subgraph run) an event belongs to.
    pub(super) fn scope(&mut self, ev: &TraceEvent) -> &mut Span {
        match ev.parent_step_id.and_then(|p| self.subruns.get_mut(&p)) {
            Some(s) => s,
            None => &mut self.root,
        }
    }

    /// The innermost open span of an event: its step, else its scope.
    pub(super) fn enclosing(&mut self, ev: &TraceEvent) -> &mut Span {
        if let Some(id) = ev.step_id
            && self.steps.contains_key(&id)
        {
            return match self.steps.get_mut(&id) {
                Some(step) => &mut step.span,
                None => &mut self.root,
            };
        }
        self.scope(ev)
    }

    /// The span a new child of step `parent` (or of the scope) hangs under.
    pub(super) fn parent_of(&self, parent: Option<StepId>) -> Option<&Span> {
        let p = parent?;
        self.subruns
            .get(&p)
            .or_else(|| self.steps.get(&p).map(|s| &s.span))
    }
}

impl Runs {
    /// Maps one event onto spans.
    pub(super) fn record(&mut self, tracer: &SdkTracer, shared: &Shared, ev: &TraceEvent) {
        let at = system_time(ev.ts);
        if let EventKind::RunStarted { graph } = &ev.kind
            && ev.parent_step_id.is_none()
        {
            self.start_run(tracer, shared, ev, graph, at);
            return;
        }
        if let EventKind::RunFinished { .. } = &ev.kind
            && ev.parent_step_id.is_none()
        {
            if let Some(run) = self.runs.remove(&ev.run_id) {
                finish_run(run, ev, at, shared);
            }
            return;
        }
        let Some(run) = self.runs.get_mut(&ev.run_id) else {
            return;
        };
        run.record(tracer, shared, ev, at);
    }

    fn start_run(
        &mut self,
        tracer: &SdkTracer,
        shared: &Shared,
        ev: &TraceEvent,
        graph: &str,
        at: SystemTime,
    ) {
        if let Some(old) = self.runs.remove(&ev.run_id) {
            evict(old, at, shared);
        }
        while self.runs.len() >= shared.max_open_runs.max(1) {
            let oldest = self
                .runs
                .iter()
                .min_by_key(|(_, r)| r.seq)
                .map(|(k, _)| k.clone());
            match oldest.and_then(|k| self.runs.remove(&k)) {
                Some(old) => evict(old, at, shared),
                None => break,
            }
        }
        self.seq += 1;
        // Shared by every span of the run (a reference count, not a copy).
        let run_id = Value::from(Arc::<str>::from(ev.run_id.as_str()));
        let root = SpanBuilder::from_name(sc::SPAN_RUN)
            .with_kind(SpanKind::Internal)
            .with_start_time(at)
            .with_attributes([
                KeyValue::new(sc::FLOWTRACE_RUN_ID, run_id.clone()),
                KeyValue::new(sc::FLOWTRACE_GRAPH, graph.to_string()),
            ])
            .start_with_context(tracer, &shared.parent);
        shared.counters.started(1);
        self.runs.insert(
            ev.run_id.clone(),
            RunSpans {
                seq: self.seq,
                run_id,
                root,
                subruns: HashMap::new(),
                steps: HashMap::new(),
                parked: VecDeque::new(),
                open: 0,
            },
        );
    }
}

fn evict(run: RunSpans, at: SystemTime, shared: &Shared) {
    let ended = run.open as u64 + 1;
    let mut root = run.end_all(at);
    failure(
        &mut root,
        at,
        "flowtrace.evicted",
        "too many open runs: evicted before it finished",
    );
    root.end_with_timestamp(at);
    shared.counters.ended(ended);
    shared.counters.evicted();
}

fn finish_run(run: RunSpans, ev: &TraceEvent, at: SystemTime, shared: &Shared) {
    let ended = run.open as u64 + 1;
    let mut root = run.end_all(at);
    if let EventKind::RunFinished {
        status,
        usage: u,
        cost,
        node_executions,
        error,
        ..
    } = &ev.kind
    {
        let mut attrs = Vec::with_capacity(6);
        attrs.push(KeyValue::new(sc::FLOWTRACE_RUN_STATUS, run_status(*status)));
        attrs.push(KeyValue::new(
            sc::FLOWTRACE_NODE_EXECUTIONS,
            int(*node_executions),
        ));
        money(&mut attrs, *cost);
        usage(&mut attrs, u);
        root.set_attributes(attrs);
        if *status == RunStatus::Failed {
            failure(
                &mut root,
                at,
                "flowtrace.run_failed",
                error.as_deref().unwrap_or("the run failed"),
            );
        }
    }
    root.end_with_timestamp(at);
    shared.counters.ended(ended);
}

fn run_status(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Canceled => "canceled",
        RunStatus::Interrupted => "interrupted",
        RunStatus::Halted => "halted",
        _ => "other",
    }
}
impl RunSpans {
    pub(super) fn has_room(&self, shared: &Shared) -> bool {
        if self.open < shared.max_open_spans_per_run {
            true
        } else {
            shared.counters.refused();
            false
        }
    }

    /// Starts `span` under `parent` (the run span when `None`).
    pub(super) fn start_child(
        &self,
        tracer: &SdkTracer,
        shared: &Shared,
        parent: Option<&Span>,
        span: SpanBuilder,
    ) -> Span {
        let parent = parent.unwrap_or(&self.root);
        let cx = child_of(&shared.parent, parent);
        shared.counters.started(1);
        span.start_with_context(tracer, &cx)
    }

    fn record(&mut self, tracer: &SdkTracer, shared: &Shared, ev: &TraceEvent, at: SystemTime) {
        match &ev.kind {
            EventKind::RunStarted { graph } => {
                let Some(p) = ev.parent_step_id else { return };
                if !self.has_room(shared) {
                    return;
                }
                let attrs = vec![
                    KeyValue::new(sc::FLOWTRACE_RUN_ID, self.run_id.clone()),
                    KeyValue::new(sc::FLOWTRACE_GRAPH, graph.to_string()),
                    KeyValue::new(sc::FLOWTRACE_PARENT_STEP_ID, int(p.0)),
                ];
                let span = self.start_child(
                    tracer,
                    shared,
                    self.parent_of(Some(p)),
                    new_span(sc::SPAN_RUN, SpanKind::Internal, at, attrs),
                );
                self.open = self.open.saturating_add(1);
                if let Some(mut old) = self.subruns.insert(p, span) {
                    old.end_with_timestamp(at);
                    self.open = self.open.saturating_sub(1);
                    shared.counters.ended(1);
                }
            }
            EventKind::RunFinished {
                status,
                usage: u,
                cost,
                node_executions,
                error,
                ..
            } => {
                let Some(mut span) = ev.parent_step_id.and_then(|p| self.subruns.remove(&p)) else {
                    return;
                };
                let mut attrs = Vec::with_capacity(6);
                attrs.push(KeyValue::new(sc::FLOWTRACE_RUN_STATUS, run_status(*status)));
                attrs.push(KeyValue::new(
                    sc::FLOWTRACE_NODE_EXECUTIONS,
                    int(*node_executions),
                ));
                money(&mut attrs, *cost);
                usage(&mut attrs, u);
                span.set_attributes(attrs);
                if *status == RunStatus::Failed {
                    failure(
                        &mut span,
                        at,
                        "flowtrace.run_failed",
                        error.as_deref().unwrap_or("the subgraph run failed"),
                    );
                }
                span.end_with_timestamp(at);
                self.open = self.open.saturating_sub(1);
                shared.counters.ended(1);
            }
            EventKind::StepStarted { .. } => self.step_started(tracer, shared, ev, at),
            EventKind::StepFinished { .. } => self.step_finished(shared, ev, at),
            _ => self.record_in_step(tracer, shared, ev, at),
        }
    }
}
