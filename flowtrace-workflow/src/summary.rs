//! The JSON run summary of a workflow run (what `run_workflow --json`
//! prints).
//!
//! [`WorkflowSummary::new`] turns a run's outcome into a plain,
//! serializable document: one entry per step (skipped ones included) with
//! its node type, status, attempts, provider, model, router branch, cache
//! hit, tokens, exact cost and latency; the totals; every node's output;
//! and the error, pending interrupt and thread when there are any. Costs are
//! decimal strings in US dollars (`"0.000412"`), never floating point.
//!
//! ```
//! use flowtrace_workflow::compile::{Runtime, compile};
//! use flowtrace_workflow::spec::load;
//! use flowtrace_workflow::summary::WorkflowSummary;
//! use serde_json::json;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let runtime = Runtime::offline(".");
//! let spec = load(r#"{
//!   "version": "1", "entry": "hello",
//!   "nodes": [{ "id": "hello", "type": "llm",
//!               "config": { "provider": "simulated", "model": "gpt-4o-mini",
//!                           "prompt": "Greet {{input.name}}", "simulated": {"response": "Hello, {{input.name}}!",
//!                                         "usage": { "input": 12, "output": 4 }} } }],
//!   "edges": []
//! }"#, &runtime.known()).unwrap();
//! let workflow = compile(&spec, &runtime).unwrap();
//! let outcome = workflow.run(json!({"name": "Ada"}), |c| c).await;
//! let summary = WorkflowSummary::new(&spec, &outcome);
//! assert_eq!(summary.status, flowtrace_core::RunStatus::Succeeded);
//! assert_eq!(summary.outputs["hello"], "Hello, Ada!");
//! assert_eq!(summary.steps[0].tokens_input, 12);
//! assert!(summary.totals.cost_usd > flowtrace_core::Cost::ZERO);
//! # });
//! ```

use flowtrace_core::exec::ErrorSummary;
use flowtrace_core::{Cost, JsonState, RunFailure, RunOutput, RunStatus, RunSummary, StepStatus};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use flowtrace_core::trace::TraceEvent;

use super::compile::{node_key, router_key};
use super::spec::WorkflowSpec;
use flowtrace_report::ReportRun;
use flowtrace_report::clip_value;

/// What a workflow run returns: its output, or the failure with the
/// summary of what ran.
pub type WorkflowOutcome = Result<RunOutput<JsonState>, RunFailure>;

/// The summary of one workflow run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkflowSummary {
    /// The run's id.
    pub run_id: String,
    /// How it ended.
    pub status: RunStatus,
    /// Every step in start order, skipped ones included.
    pub steps: Vec<StepSummary>,
    /// Totals over the run.
    pub totals: Totals,
    /// Each node's output by node id (nodes that produced one; for a failed
    /// run, those that finished before it failed).
    pub outputs: Map<String, Value>,
    /// Why it failed, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorSummary>,
    /// The decision it waits for, when interrupted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupt: Option<InterruptSummary>,
    /// The durable thread, when checkpointed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
}

/// One step of a workflow run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StepSummary {
    /// The node it ran.
    pub node_id: String,
    /// The node's type (`llm`, `tool`, `router`, `approval`).
    pub node_type: Option<String>,
    /// How it ended (`succeeded`, `failed`, `skipped`, `canceled`,
    /// `interrupted`).
    pub status: StepStatus,
    /// Calls tried: the node's executions plus, for an llm node with
    /// fallbacks, every retried or fallen-back model call. 0 when skipped.
    pub attempts: u32,
    /// Retries within the step (node-level and model-call level).
    pub retries: u32,
    /// Provider fallbacks taken.
    pub fallbacks: u32,
    /// The provider of its last model call.
    pub provider: Option<String>,
    /// The model of its last model call.
    pub model: Option<String>,
    /// For routers: the branch the rule chose.
    pub branch: Option<Value>,
    /// Whether a model call was answered from the cache.
    pub cache_hit: bool,
    /// Input tokens of its model calls.
    pub tokens_input: u64,
    /// Output tokens of its model calls.
    pub tokens_output: u64,
    /// Exact cost in US dollars, as a decimal string.
    pub cost_usd: Cost,
    /// Wall time in milliseconds, retries and back-off included.
    pub latency_ms: u64,
    /// The error, for failed steps; the reason, for skipped ones.
    pub error: Option<String>,
}

/// Totals over a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Totals {
    /// Input tokens.
    pub tokens_input: u64,
    /// Output tokens.
    pub tokens_output: u64,
    /// Exact cost in US dollars, as a decimal string.
    pub cost_usd: Cost,
    /// The run's wall time in milliseconds.
    pub latency_ms: u64,
}

/// A pending decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InterruptSummary {
    /// The interrupt's id (what a decision must name).
    pub id: String,
    /// The node waiting.
    pub node: String,
    /// What the node shows the human.
    pub payload: Value,
}

impl WorkflowSummary {
    /// The summary of a run of `spec`.
    pub fn new(spec: &WorkflowSpec, outcome: &WorkflowOutcome) -> Self {
        let state = state_values(outcome);
        let summary: &RunSummary = match outcome {
            Ok(out) => &out.summary,
            Err(failure) => &failure.summary,
        };
        let steps = summary
            .steps
            .iter()
            .map(|s| {
                let node_type = spec
                    .node(s.node.as_ref())
                    .map(|n| n.node_type().as_str().to_string());
                // A router's own branch (the rule's value) from its state
                // record; otherwise the executor's edge label.
                let branch = state
                    .filter(|_| node_type.as_deref() == Some("router"))
                    .and_then(|st| rule_branch(st, s.node.as_ref()).cloned())
                    .or_else(|| s.branch.clone().map(Value::String));
                StepSummary {
                    node_id: s.node.as_ref().to_string(),
                    node_type,
                    status: s.status,
                    attempts: s.calls_tried(),
                    retries: s.retries(),
                    fallbacks: s.fallbacks,
                    provider: s.provider.clone(),
                    model: s.model.clone(),
                    branch,
                    cache_hit: s.cache_hits > 0,
                    tokens_input: s.usage.input_tokens,
                    tokens_output: s.usage.output_tokens,
                    cost_usd: s.cost,
                    latency_ms: millis(s.latency),
                    error: s.error.clone(),
                }
            })
            .collect();
        let mut outputs = Map::new();
        if let Some(state) = state {
            for node in &spec.nodes {
                if let Some(v) = state.get(&node_key(&node.id)) {
                    outputs.insert(node.id.clone(), v.clone());
                }
            }
        }
        let (error, interrupt, thread) = match outcome {
            Err(failure) => (Some(ErrorSummary::from(&failure.error)), None, None),
            Ok(out) => (
                out.summary.error.clone(),
                out.interrupt().map(|i| InterruptSummary {
                    id: i.id.clone(),
                    node: i.node.as_ref().to_string(),
                    payload: i.payload.clone(),
                }),
                out.thread.as_ref().map(|t| t.as_ref().to_string()),
            ),
        };
        Self {
            run_id: summary.run_id.as_ref().to_string(),
            status: summary.status,
            steps,
            totals: Totals {
                tokens_input: summary.usage.input_tokens,
                tokens_output: summary.usage.output_tokens,
                cost_usd: summary.cost,
                latency_ms: millis(summary.elapsed),
            },
            outputs,
            error,
            interrupt,
            thread,
        }
    }

    /// The steps of node `id`, in order.
    pub fn steps_of<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a StepSummary> + 'a {
        self.steps.iter().filter(move |s| s.node_id == id)
    }

    /// Whether the run reached a state the caller asked for: succeeded,
    /// interrupted for a decision, or halted on request (`run_workflow`
    /// exits 0 for these, 1 otherwise).
    pub fn is_success(&self) -> bool {
        matches!(
            self.status,
            RunStatus::Succeeded | RunStatus::Interrupted | RunStatus::Halted
        )
    }
}

/// An [`HtmlReport`](flowtrace_report::HtmlReport) entry for a run of
/// `spec` with the events it emitted: each node labelled with its type and
/// name, each node's output from the final state, and each router's branch
/// (the rule's value, rather than the executor's edge label). Outputs
/// larger than the report shows ([`MAX_TEXT`](flowtrace_report::MAX_TEXT))
/// are kept as previews.
pub fn report_run(
    spec: &WorkflowSpec,
    outcome: &WorkflowOutcome,
    events: Vec<TraceEvent>,
) -> ReportRun {
    let state = state_values(outcome);
    let summary = match outcome {
        Ok(out) => out.summary.clone(),
        Err(failure) => (*failure.summary).clone(),
    };
    let mut run = ReportRun::new(summary, events);
    for node in &spec.nodes {
        let label = match &node.name {
            Some(name) => format!("{} · {name}", node.node_type().as_str()),
            None => node.node_type().as_str().to_string(),
        };
        run = run.node_label(node.id.clone(), label);
        if let Some(v) = state.and_then(|st| st.get(&node_key(&node.id))) {
            let mut shown = v.clone();
            clip_value(&mut shown);
            run = run.output(node.id.clone(), shown);
        }
        if let Some(branch) = state.and_then(|st| rule_branch(st, &node.id)) {
            let text = branch
                .as_str()
                .map_or_else(|| branch.to_string(), str::to_string);
            run = run.branch(node.id.clone(), text);
        }
    }
    run
}

/// The branch router `id`'s rule chose, from its record in `state`.
fn rule_branch<'s>(state: &'s Map<String, Value>, id: &str) -> Option<&'s Value> {
    state.get(&router_key(id)).and_then(|r| r.get("branch"))
}

/// The state values a run reached, by reference: the final state, or for a
/// failed run the serialized state its completed steps produced (read in
/// place, never copied whole).
fn state_values(outcome: &WorkflowOutcome) -> Option<&Map<String, Value>> {
    match outcome {
        Ok(out) => Some(&out.state.values),
        Err(failure) => failure
            .state
            .as_deref()
            .and_then(|v| v.get("values"))
            .and_then(Value::as_object),
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
