//! Per-run state and the mapping from events to instruments.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use flowtrace_core::trace::{EventKind, RunStatus, StepStatus};
use flowtrace_core::{RunId, StepId, TraceEvent};

use super::instruments::Instruments;
use super::labels::{
    INPUT, LIMIT, MODEL, NODE, OTHER, OUTPUT, PROVIDER, REASON, STATUS, TYPE, WORKFLOW,
};
use super::usd;

/// Steps of one run whose model calls are tracked at once.
const MAX_STEPS_PER_RUN: usize = 1024;

/// Breakers remembered as open at once.
const MAX_OPEN_BREAKERS: usize = 1024;

/// Model calls of one step: sent and not answered, and answers announced
/// by a `cache.hit` (their tokens were not spent).
#[derive(Debug, Default, Clone, Copy)]
struct Calls {
    in_flight: u32,
    cached: u32,
}

#[derive(Debug)]
struct Run {
    workflow: Box<str>,
    steps: HashMap<StepId, Calls>,
}

/// What the sink remembers between events, bounded.
#[derive(Debug)]
pub(crate) struct Runs {
    runs: Mutex<HashMap<RunId, Run>>,
    max_runs: usize,
    open_breakers: Mutex<HashSet<(Box<str>, Box<str>)>>,
}

impl Runs {
    pub(crate) fn new(max_runs: usize) -> Self {
        Self {
            runs: Mutex::new(HashMap::new()),
            max_runs,
            open_breakers: Mutex::new(HashSet::new()),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.runs.lock().map(|r| r.len()).unwrap_or(0)
    }

    fn with_run<T>(&self, run: &RunId, f: impl FnOnce(Option<&mut Run>) -> T) -> T {
        match self.runs.lock() {
            Ok(mut runs) => f(runs.get_mut(run)),
            Err(_) => f(None),
        }
    }

    fn workflow(&self, run: &RunId) -> String {
        self.with_run(run, |r| {
            r.map_or(OTHER.to_string(), |r| r.workflow.to_string())
        })
    }

    fn start(&self, run: &RunId, graph: &str) {
        if let Ok(mut runs) = self.runs.lock()
            && (runs.contains_key(run) || runs.len() < self.max_runs)
        {
            runs.insert(
                run.clone(),
                Run {
                    workflow: graph.into(),
                    steps: HashMap::new(),
                },
            );
        }
    }

    fn finish(&self, run: &RunId) -> String {
        match self.runs.lock() {
            Ok(mut runs) => runs
                .remove(run)
                .map_or(OTHER.to_string(), |r| r.workflow.into()),
            Err(_) => OTHER.to_string(),
        }
    }

    /// Updates the model calls of `step` (when tracked, or when there is room).
    fn calls<T>(&self, run: &RunId, step: Option<StepId>, f: impl FnOnce(&mut Calls) -> T) -> T {
        let mut scratch = Calls::default();
        self.with_run(run, |r| match (r, step) {
            (Some(r), Some(step)) => {
                if r.steps.len() < MAX_STEPS_PER_RUN || r.steps.contains_key(&step) {
                    f(r.steps.entry(step).or_default())
                } else {
                    f(&mut scratch)
                }
            }
            _ => f(&mut scratch),
        })
    }

    fn end_step(&self, run: &RunId, step: Option<StepId>) {
        if let Some(step) = step {
            self.with_run(run, |r| {
                if let Some(r) = r {
                    r.steps.remove(&step);
                }
            });
        }
    }

    /// Marks a breaker open; false when already known open.
    fn open_breaker(&self, provider: &str, model: &str) -> bool {
        match self.open_breakers.lock() {
            Ok(mut open) if open.len() < MAX_OPEN_BREAKERS => {
                open.insert((provider.into(), model.into()))
            }
            _ => true,
        }
    }

    /// Marks a breaker closed; true when it was known open.
    fn close_breaker(&self, provider: &str, model: &str) -> bool {
        match self.open_breakers.lock() {
            Ok(mut open) => {
                !open.is_empty() && open.remove(&(Box::from(provider), Box::from(model)))
            }
            Err(_) => false,
        }
    }
}

fn step_status(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
        StepStatus::Canceled => "canceled",
        StepStatus::Interrupted => "interrupted",
        _ => OTHER,
    }
}

fn run_status(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Canceled => "canceled",
        RunStatus::Interrupted => "interrupted",
        RunStatus::Halted => "halted",
        _ => OTHER,
    }
}

fn seconds(micros: u64) -> f64 {
    micros as f64 / 1e6
}

/// Records one event.
pub(crate) fn record(m: &Instruments, runs: &Runs, e: &TraceEvent) {
    let root = e.parent_step_id.is_none();
    let node = e.node.as_ref().map_or(OTHER, |n| n.as_str());
    match &e.kind {
        EventKind::RunStarted { graph } if root => runs.start(&e.run_id, graph),
        EventKind::RunFinished {
            status, elapsed_us, ..
        } if root => {
            let workflow = runs.finish(&e.run_id);
            m.run_duration.record(
                seconds(*elapsed_us),
                &[(WORKFLOW, &workflow), (STATUS, run_status(*status))],
            );
        }
        EventKind::StepFinished {
            status, latency_us, ..
        } => {
            runs.end_step(&e.run_id, e.step_id);
            let workflow = runs.workflow(&e.run_id);
            m.node_executions.add(
                1,
                &[
                    (WORKFLOW, &workflow),
                    (NODE, node),
                    (STATUS, step_status(*status)),
                ],
            );
            m.node_duration
                .record(seconds(*latency_us), &[(WORKFLOW, &workflow), (NODE, node)]);
        }
        EventKind::LlmRequest { .. } => runs.calls(&e.run_id, e.step_id, |c| {
            c.in_flight = c.in_flight.saturating_add(1);
        }),
        EventKind::Error { error_kind, .. } if error_kind.starts_with("model.") => {
            runs.calls(&e.run_id, e.step_id, |c| {
                c.in_flight = c.in_flight.saturating_sub(1);
            });
        }
        EventKind::CacheHit {
            provider, model, ..
        } => {
            // A provider-side cache answers a call already sent (its reply
            // follows as `llm.response`); core's cache answers without one.
            runs.calls(&e.run_id, e.step_id, |c| {
                if c.in_flight > c.cached {
                    c.cached += 1;
                }
            });
            m.cache_hits
                .add(1, &[(PROVIDER, provider.as_str()), (MODEL, model.as_str())]);
        }
        EventKind::LlmResponse {
            provider,
            model,
            usage,
            cost,
            ..
        } => {
            let cached = runs.calls(&e.run_id, e.step_id, |c| {
                c.in_flight = c.in_flight.saturating_sub(1);
                let cached = c.cached > 0;
                c.cached = c.cached.saturating_sub(1);
                cached
            });
            let (p, md) = (provider.as_str(), model.as_str());
            if !cached {
                m.calls.add(1, &[(PROVIDER, p), (MODEL, md)]);
                if usage.input_tokens > 0 {
                    m.tokens.add(
                        usage.input_tokens,
                        &[(PROVIDER, p), (MODEL, md), (TYPE, INPUT)],
                    );
                }
                if usage.output_tokens > 0 {
                    m.tokens.add(
                        usage.output_tokens,
                        &[(PROVIDER, p), (MODEL, md), (TYPE, OUTPUT)],
                    );
                }
                if !cost.is_zero() {
                    m.cost.add(usd(*cost), &[(PROVIDER, p), (MODEL, md)]);
                }
            }
            if runs.close_breaker(p, md) {
                m.breaker_open.record(0, &[(PROVIDER, p), (MODEL, md)]);
            }
        }
        EventKind::Retry { .. } => {
            let workflow = runs.workflow(&e.run_id);
            m.retries.add(1, &[(WORKFLOW, &workflow), (NODE, node)]);
        }
        EventKind::Fallback {
            from_provider,
            from_model,
            reason,
            ..
        } => {
            let (p, md) = (from_provider.as_str(), from_model.as_str());
            m.fallbacks
                .add(1, &[(PROVIDER, p), (MODEL, md), (REASON, reason.as_str())]);
            if reason == "circuit_open" && runs.open_breaker(p, md) {
                m.breaker_open.record(1, &[(PROVIDER, p), (MODEL, md)]);
            }
        }
        EventKind::BudgetExceeded { limit, .. } => {
            let workflow = runs.workflow(&e.run_id);
            m.budget_exceeded
                .add(1, &[(WORKFLOW, &workflow), (LIMIT, limit.as_str())]);
        }
        _ => {}
    }
}
