//! Compiling a loaded [`WorkflowSpec`] onto the executor.
//!
//! [`compile`] turns a validated spec into a [`CompiledWorkflow`]: a
//! [`CompiledGraph`] over [`JsonState`] plus a [`RunConfig`] template derived
//! from the spec's `parallel`, `maxConcurrency` and `limits`. Models and
//! tools come from a [`Runtime`]: a registry of provider factories, tools
//! and an optional response cache.
//!
//! ```
//! use flowtrace_workflow::compile::{CompiledWorkflow, Runtime, compile};
//! use flowtrace_workflow::spec::load;
//! use serde_json::json;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let runtime = Runtime::offline(std::env::temp_dir());
//! let spec = load(r#"{
//!   "version": "1", "entry": "greet",
//!   "nodes": [ { "id": "greet", "type": "llm",
//!     "config": { "provider": "simulated", "model": "gpt-4o-mini",
//!                 "prompt": "Greet {{who}}", "simulated": {"response": "Hello, {{who}}!"} },
//!     "inputs": { "who": "{{input.name}}" } } ]
//! }"#, &runtime.known()).unwrap();
//! let workflow = compile(&spec, &runtime).unwrap();
//! let out = workflow.run(json!({"name": "Ada"}), |config| config).await.unwrap();
//! assert_eq!(CompiledWorkflow::output(&out.state, "greet"), Some(&json!("Hello, Ada!")));
//! assert!(out.summary.cost > flowtrace_core::Cost::ZERO);
//! # });
//! ```
//!
//! # State layout
//!
//! The run state is a flat [`JsonState`] object (flat keys, so nodes of one
//! super-step never overwrite each other's updates):
//!
//! | key | value |
//! |---|---|
//! | `"input"` | the run input |
//! | `"node.<id>"` | the output of node `<id>` (LLM: reply text; tool: the tool's JSON result; router: the branch string; approval: the approval payload, or `null`) |
//! | `"router.<id>"` | `{"branch": …, "next": [target ids]}` for router `<id>`: its decision |
//!
//! Templates read `{{input…}}`, `{{node.<id>.output…}}` (from the
//! `"node.<id>"` keys) and the node's own rendered `inputs` by name.
//!
//! # Node kinds
//!
//! * `llm`: renders `inputs`, `system` and `prompt` (without a prompt, the
//!   rendered inputs as `name: value` lines), builds the model through the
//!   provider factory (for `simulated`, the `response` template is rendered
//!   with the same variables first), wraps it in a
//!   [`FallbackChain`] when `fallbacks` are given (the node's `retry`
//!   applies to each candidate in turn — attempts with exponential back-off,
//!   each retry a `retry` event — and the chain falls back once the
//!   primary's retries are exhausted; `timeoutMs` bounds each model call,
//!   and a call that times out falls back at once instead of being retried;
//!   a `Retry-After` longer than `maxDelayMs` also falls back at once
//!   rather than waiting; the node itself then runs once) and in
//!   [`Cached`] when `cache` is true (the default) and the runtime has a
//!   cache, then calls it through [`NodeContext::chat`]. Models are
//!   memoised per run, node and rendered configuration, so a node-level
//!   retry talks to the same model instance (a simulated `failFirst`
//!   counts the calls of one run, across attempts; the next run starts
//!   afresh, while the response cache is shared).
//! * `tool`: renders every string argument (recursively) as a template and
//!   calls the tool through [`NodeContext::call_tool`].
//! * `router`: evaluates the rule against the rendered inputs; the result
//!   (a string, or the JSON text of another value) is the branch. The
//!   router then evaluates the `when` conditions of its outgoing edges, in
//!   document order, with the variables `{branch, …inputs}`: **the first
//!   edge whose condition holds wins** (an edge without `when` always
//!   holds, so it can serve as the default), or with `"fanout": true`
//!   **every** edge whose condition holds is taken and those targets run
//!   together (joins downstream wait for all of them). When none holds the
//!   branch ends at the router. The branch and the chosen targets are
//!   stored under `router.<id>` (`{"branch", "next": [targets]}`). This is
//!   the only place the rule and the conditions are evaluated: the router's
//!   conditional edge reads `next` (the step record's `branch` lists the
//!   targets taken, comma-separated) and evaluates nothing.
//! * `approval`: compiled with an interrupt before the node (needs a
//!   checkpointer in the run config); once approved with
//!   [`Command::approve`], the node records the approval payload as its
//!   output.
//!
//! Every node without outgoing edges is a finish node.
//!
//! # Limits
//!
//! Nodes render against a borrowed view of the run state (nothing is
//! copied out of it but what a template renders), and every rendering is
//! bounded by the runtime's [`Limits`] (see
//! [`Runtime::with_limits`]): each one (prompt, system prompt, input, tool
//! argument, simulated response, approval message, and the prompt an `llm`
//! node builds from its inputs) by [`Limits::template_output_bytes`], all
//! of one node execution together by [`Limits::node_render_bytes`]. A tool
//! result larger than [`Limits::tool_output_bytes`] fails the call before
//! it is traced or stored. Everything one run renders and receives from
//! tools, across all its nodes (parallel ones included), is bounded by
//! [`Limits::run_bytes`]. Each breach fails the node with a
//! [`NodeFailure`] naming the limit and the size reached.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowtrace_core::exec::Command;
use flowtrace_core::trace::LogLevel;
use flowtrace_core::{
    Budget, BuildError, ChatModel, ChatRequest, CompiledGraph, GraphBuilder, JsonState, NodeConfig,
    NodeContext, NodeError, NodeOutput, RetryPolicy, RunConfig, RunFailure, RunOutput, Tool,
    node_fn,
};
use flowtrace_providers::anthropic::Anthropic;
use flowtrace_providers::cache::{Cache, Cached, MemoryResponseCache};
use flowtrace_providers::fallback::{Candidate, FallbackChain};
use flowtrace_providers::openai::OpenAi;
use flowtrace_providers::simulated::{SimulatedConfig, SimulatedFailure, SimulatedModel};
use flowtrace_providers::tools::{ReadFile, TransformJson};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::limits::{LimitExceeded, Limits};
use super::rules::{Rule, RuleError};
use super::spec::{
    EdgeSpec, FailKind, FallbackSpec, LlmConfig, NodeKind, NodeSpec, RetrySpec, SIMULATED_PROVIDER,
    SimulatedSpec, WorkflowSpec,
};
use super::template::{Template, TemplateError};
use flowtrace_core::ErrorClass;

/// State key of the run input.
pub const INPUT_KEY: &str = "input";

/// Most memoised models per LLM node; other runs' models are dropped when full.
const MAX_MEMO_MODELS: usize = 256;

/// Default concurrency when `parallel` is true without `maxConcurrency`.
pub const DEFAULT_MAX_CONCURRENCY: usize = 4;

/// The state key holding node `id`'s output (`"node.<id>"`).
pub fn node_key(id: &str) -> String {
    format!("node.{id}")
}

/// The state key holding router `id`'s decision (`"router.<id>"`).
pub fn router_key(id: &str) -> String {
    format!("router.{id}")
}

mod error;
mod runtime;

pub use error::*;
pub use runtime::*;

/// A compiled workflow: the graph and the run configuration derived from
/// the spec.
#[derive(Debug, Clone)]
pub struct CompiledWorkflow {
    graph: CompiledGraph<JsonState>,
    config: RunConfig,
}

impl CompiledWorkflow {
    /// The executor graph.
    pub fn graph(&self) -> &CompiledGraph<JsonState> {
        &self.graph
    }

    /// The run configuration template (parallelism, recursion limit,
    /// budget) derived from the spec.
    pub fn config(&self) -> RunConfig {
        self.config.clone()
    }

    /// The initial state of a run with `input`.
    pub fn initial_state(input: Value) -> JsonState {
        let mut state = JsonState::new();
        state.values.insert(INPUT_KEY.to_string(), input);
        state
    }

    /// The output of node `id` in `state`, if it ran.
    pub fn output<'s>(state: &'s JsonState, id: &str) -> Option<&'s Value> {
        state.get(&node_key(id))
    }

    /// Runs the workflow on `input`, with the config template adjusted by
    /// `adjust` (for example to add a sink, a checkpointer or a thread).
    pub async fn run(
        &self,
        input: Value,
        adjust: impl FnOnce(RunConfig) -> RunConfig,
    ) -> Result<RunOutput<JsonState>, RunFailure> {
        self.graph
            .invoke(Self::initial_state(input), adjust(self.config()))
            .await
    }

    /// Resumes an interrupted durable run with `command` (for example
    /// [`Command::approve`]), with the config template adjusted by `adjust`
    /// (which must name the same checkpointer and thread).
    pub async fn resume_with(
        &self,
        command: Command<Map<String, Value>>,
        adjust: impl FnOnce(RunConfig) -> RunConfig,
    ) -> Result<RunOutput<JsonState>, RunFailure> {
        self.graph.invoke(command, adjust(self.config())).await
    }
}

/// Compiles `spec` with the models and tools of `runtime`.
pub fn compile(spec: &WorkflowSpec, runtime: &Runtime) -> Result<CompiledWorkflow, CompileError> {
    let limits = spec.limits.unwrap_or_default();
    if let Some(limit) = limits.max_nodes
        && spec.nodes.len() > limit as usize
    {
        return Err(CompileError::TooManyNodes {
            nodes: spec.nodes.len(),
            limit,
        });
    }

    let ledger = Arc::new(RunLedger::new(runtime.limits));
    let mut builder = GraphBuilder::<JsonState>::new("workflow").set_entry(spec.entry.as_str());
    let mut approvals = Vec::new();
    for node in &spec.nodes {
        let inputs = parse_inputs(node)?;
        // An llm node with fallbacks retries (and times out) each call inside
        // its fallback chain, then moves on; the node itself runs once.
        let in_chain = matches!(&node.kind, NodeKind::Llm(llm) if !llm.fallbacks.is_empty());
        let config = node_config(node, in_chain);
        builder = match &node.kind {
            NodeKind::Llm(llm) => {
                let compiled = Arc::new(LlmNode::new(node, llm, inputs, runtime, ledger.clone())?);
                builder.add_node_with(
                    node.id.as_str(),
                    node_fn(move |state: Arc<JsonState>, ctx: NodeContext| {
                        let n = compiled.clone();
                        async move { n.run(&state, ctx).await }
                    }),
                    config,
                )
            }
            NodeKind::Tool(tool) => {
                let Some(handle) = runtime.tool(&tool.tool).cloned() else {
                    return Err(CompileError::UnknownTool {
                        node: node.id.clone(),
                        tool: tool.tool.clone(),
                    });
                };
                let args = parse_args(node, &Value::Object(tool.args.clone()), "config")?;
                let schema = jsonschema::validator_for(&handle.parameters()).map_err(|e| {
                    CompileError::ToolSchema {
                        node: node.id.clone(),
                        tool: tool.tool.clone(),
                        message: e.to_string(),
                    }
                })?;
                let compiled = Arc::new(ToolNode {
                    id: node.id.clone(),
                    inputs,
                    tool: handle,
                    args,
                    schema,
                    ledger: ledger.clone(),
                });
                builder.add_node_with(
                    node.id.as_str(),
                    node_fn(move |state: Arc<JsonState>, ctx: NodeContext| {
                        let n = compiled.clone();
                        async move { n.run(&state, ctx).await }
                    }),
                    config,
                )
            }
            NodeKind::Router(router) => {
                let rule_err = |field: String| {
                    let node = node.id.clone();
                    move |source| CompileError::Rule {
                        node,
                        field,
                        source,
                    }
                };
                let rule = Rule::parse(&router.rule).map_err(rule_err("rule".into()))?;
                let mut edges = Vec::new();
                for edge in spec.outgoing(&node.id) {
                    let when = match &edge.when {
                        Some(w) => Some(
                            Rule::parse(w).map_err(rule_err(format!("edge to `{}`", edge.to)))?,
                        ),
                        None => None,
                    };
                    edges.push((edge.to.clone(), when));
                }
                let compiled = Arc::new(RouterNode {
                    id: node.id.clone(),
                    inputs,
                    rule,
                    edges,
                    fanout: router.fanout,
                    ledger: ledger.clone(),
                });
                builder.add_node_with(
                    node.id.as_str(),
                    node_fn(move |state: Arc<JsonState>, ctx: NodeContext| {
                        let n = compiled.clone();
                        async move { n.run(&state, ctx) }
                    }),
                    config,
                )
            }
            NodeKind::Approval(approval) => {
                approvals.push(node.id.clone());
                let message = match &approval.message {
                    Some(m) => Some(parse_template(node, "message", m)?),
                    None => None,
                };
                let compiled = Arc::new(ApprovalNode {
                    id: node.id.clone(),
                    inputs,
                    message,
                    ledger: ledger.clone(),
                });
                builder.add_node_with(
                    node.id.as_str(),
                    node_fn(move |state: Arc<JsonState>, ctx: NodeContext| {
                        let n = compiled.clone();
                        async move { n.run(&state, ctx) }
                    }),
                    config,
                )
            }
        };
    }

    for node in &spec.nodes {
        let outgoing: Vec<&EdgeSpec> = spec.outgoing(&node.id).collect();
        if outgoing.is_empty() {
            builder = builder.set_finish(node.id.as_str());
        } else if matches!(node.kind, NodeKind::Router(_)) {
            // The router node chose its targets once (rule, then the
            // `when` conditions, whose evaluation errors fail the node);
            // the edge only reads that choice. Branch labels are the target
            // ids, so the step record names the targets taken.
            let key = router_key(&node.id);
            let mut branches: Vec<(String, String)> = Vec::new();
            for edge in &outgoing {
                if !branches.iter().any(|(label, _)| *label == edge.to) {
                    branches.push((edge.to.clone(), edge.to.clone()));
                }
            }
            builder = builder.add_conditional_fanout(
                node.id.as_str(),
                move |state: &JsonState, _ctx| chosen_targets(state, &key),
                branches,
            );
        } else {
            for edge in outgoing {
                builder = builder.add_edge(edge.from.as_str(), edge.to.as_str());
            }
        }
    }
    if !approvals.is_empty() {
        builder = builder.interrupt_before(approvals);
    }
    let graph = builder.compile()?;
    Ok(CompiledWorkflow {
        graph,
        config: run_config(spec),
    })
}

/// The targets router `key` chose, from its record in the state.
fn chosen_targets(state: &JsonState, key: &str) -> Vec<String> {
    state
        .get(key)
        .and_then(|r| r.get("next"))
        .and_then(Value::as_array)
        .map(|targets| {
            targets
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The run configuration template of `spec`.
fn run_config(spec: &WorkflowSpec) -> RunConfig {
    let mut config = RunConfig::new();
    config = if spec.parallel {
        let cap = spec
            .max_concurrency
            .map_or(DEFAULT_MAX_CONCURRENCY, |c| c as usize);
        config.parallel(cap)
    } else {
        config.sequential()
    };
    let mut budget = Budget::default();
    if let Some(limits) = spec.limits {
        if let Some(steps) = limits.max_steps {
            config = config.recursion_limit(steps);
            budget = budget.max_node_executions(steps);
        }
        if let Some(tokens) = limits.max_tokens {
            budget = budget.max_tokens(tokens);
        }
        if let Some(cost) = limits.max_cost_usd {
            budget = budget.max_cost(cost);
        }
        if let Some(secs) = limits.timeout_seconds {
            budget = budget.max_duration(Duration::from_secs(secs));
        }
    }
    config.budget(budget)
}

/// A fallback chain's per-candidate retries from a node's `retry` (the
/// executor's defaults for unset delays; no retry when unset).
fn chain_retry(retry: Option<RetrySpec>) -> RetryPolicy {
    let Some(r) = retry else {
        return RetryPolicy::never();
    };
    let mut policy = RetryPolicy::new(r.max_attempts);
    if let Some(ms) = r.initial_delay_ms {
        policy = policy.initial_delay(Duration::from_millis(ms));
    }
    if let Some(ms) = r.max_delay_ms {
        policy = policy.max_delay(Duration::from_millis(ms));
    }
    policy
}

/// The executor settings of a node: retry policy and per-attempt timeout.
/// For an llm node with fallbacks (`in_chain`) both belong to its fallback
/// chain instead (retries per candidate, timeout per model call), and the
/// node itself runs once without a timeout of its own.
fn node_config(node: &NodeSpec, in_chain: bool) -> NodeConfig {
    let mut config = NodeConfig::new();
    if in_chain {
        return config;
    }
    if let Some(retry) = node.retry {
        let mut policy = RetryPolicy::new(retry.max_attempts);
        if let Some(ms) = retry.initial_delay_ms {
            policy = policy.initial_delay(Duration::from_millis(ms));
        }
        if let Some(ms) = retry.max_delay_ms {
            policy = policy.max_delay(Duration::from_millis(ms));
        }
        config = config.retry(policy);
    }
    if let Some(ms) = node.timeout_ms {
        config = config.timeout(Duration::from_millis(ms));
    }
    config
}

mod nodes;

use nodes::*;

#[cfg(test)]
mod test_support;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod amplification_tests;
