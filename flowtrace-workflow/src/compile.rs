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
//! | `"router.<id>"` | `{"branch": …, "next": <target id or null>}` for router `<id>` |
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
//!   stored under `router.<id>` (`{"branch", "next": [targets]}`).
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
use flowtrace_providers::cache::{Cached, MemoryResponseCache, ResponseCache};
use flowtrace_providers::fallback::{Candidate, FallbackChain, RetrySettings};
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

/// Builds a model for one call: receives the model name and the node's
/// configuration as JSON (an `llm` node's `config`, or one fallback entry,
/// with the simulated `response` template already rendered).
pub type ProviderFactory =
    Arc<dyn Fn(&str, &Value) -> Result<Arc<dyn ChatModel>, String> + Send + Sync>;

/// What compiled workflows run with: provider factories, tools and an
/// optional response cache.
#[derive(Clone, Default)]
pub struct Runtime {
    providers: HashMap<String, ProviderFactory>,
    tools: HashMap<String, Arc<dyn Tool>>,
    cache: Option<Arc<dyn ResponseCache>>,
    limits: Limits,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut providers: Vec<&String> = self.providers.keys().collect();
        providers.sort();
        let mut tools: Vec<&String> = self.tools.keys().collect();
        tools.sort();
        f.debug_struct("Runtime")
            .field("providers", &providers)
            .field("tools", &tools)
            .field("cache", &self.cache.is_some())
            .field("limits", &self.limits)
            .finish()
    }
}

impl Runtime {
    /// An empty runtime: no providers, no tools, no cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The offline runtime: the `simulated` provider, `read_file` confined to
    /// `root_dir`, `transform_json`, and an in-memory response cache, with
    /// the default [`Limits`].
    pub fn offline(root_dir: impl Into<PathBuf>) -> Self {
        Self::offline_with_limits(root_dir, Limits::default())
    }

    /// [`offline`](Self::offline) with `limits`, which also set the size
    /// limit of `read_file` ([`Limits::read_file_bytes`]) and the largest
    /// result and intermediate value of `transform_json`
    /// ([`Limits::tool_output_bytes`]).
    pub fn offline_with_limits(root_dir: impl Into<PathBuf>, limits: Limits) -> Self {
        Self::new()
            .with_limits(limits)
            .with_provider(
                SIMULATED_PROVIDER,
                Arc::new(|_model: &str, config: &Value| {
                    simulated_model(config)
                        .map(|m| Arc::new(m) as Arc<dyn ChatModel>)
                        .map_err(|e| format!("invalid simulated config: {e}"))
                }),
            )
            .with_tool(Arc::new(
                ReadFile::new(root_dir).max_bytes(limits.read_file_bytes),
            ))
            .with_tool(Arc::new(
                TransformJson::new().max_output_bytes(limits.tool_output_bytes),
            ))
            .with_cache(Arc::new(MemoryResponseCache::default()))
    }

    /// [`offline`](Self::offline) rooted at `root_dir`, plus `openai` and
    /// `anthropic` when `OPENAI_API_KEY` / `ANTHROPIC_API_KEY` are set.
    pub fn with_env(root_dir: impl Into<PathBuf>) -> Self {
        let mut runtime = Self::offline(root_dir);
        if let Ok(client) = OpenAi::from_env() {
            let client: Arc<dyn ChatModel> = Arc::new(client);
            runtime = runtime.with_provider("openai", Arc::new(move |_, _| Ok(client.clone())));
        }
        if let Ok(client) = Anthropic::from_env() {
            let client: Arc<dyn ChatModel> = Arc::new(client);
            runtime = runtime.with_provider("anthropic", Arc::new(move |_, _| Ok(client.clone())));
        }
        runtime
    }

    /// Registers (or replaces) provider `name`.
    pub fn with_provider(mut self, name: impl Into<String>, factory: ProviderFactory) -> Self {
        self.providers.insert(name.into(), factory);
        self
    }

    /// Registers (or replaces) a tool under its [`Tool::name`].
    pub fn with_tool(mut self, tool: Arc<dyn Tool>) -> Self {
        self.tools.insert(tool.name().to_string(), tool);
        self
    }

    /// Sets the response cache used by LLM nodes with `cache` on.
    pub fn with_cache(mut self, cache: Arc<dyn ResponseCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Sets the limits compiled workflows render and call tools with
    /// ([`Limits::template_output_bytes`], [`Limits::node_render_bytes`],
    /// [`Limits::tool_output_bytes`]). Tools already registered keep their
    /// own settings: use [`offline_with_limits`](Self::offline_with_limits)
    /// for `read_file`'s size limit.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The limits compiled workflows run with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Removes the response cache.
    pub fn without_cache(mut self) -> Self {
        self.cache = None;
        self
    }

    /// The response cache, if any.
    pub fn cache(&self) -> Option<&Arc<dyn ResponseCache>> {
        self.cache.as_ref()
    }

    /// Whether provider `name` is registered.
    pub fn has_provider(&self, name: &str) -> bool {
        self.providers.contains_key(name)
    }

    /// The tool named `name`, if registered.
    pub fn tool(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.get(name)
    }

    /// A [`Known`](super::spec::Known) listing this runtime's providers and
    /// tools, for [`spec::load`](super::spec::load).
    pub fn known(&self) -> super::spec::Known {
        let known = self
            .providers
            .keys()
            .fold(super::spec::Known::empty(), |k, p| k.with_provider(p));
        self.tools.iter().fold(known, |k, (name, tool)| {
            k.with_tool_schema(name, tool.parameters())
        })
    }
}

/// Why a spec could not be compiled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompileError {
    /// An LLM node (or one of its fallbacks) names an unregistered provider.
    #[error("node `{node}`: provider `{provider}` is not registered")]
    UnknownProvider {
        /// The node.
        node: String,
        /// The provider.
        provider: String,
    },
    /// A tool node names an unregistered tool.
    #[error("node `{node}`: tool `{tool}` is not registered")]
    UnknownTool {
        /// The node.
        node: String,
        /// The tool.
        tool: String,
    },
    /// A tool's argument schema is not a valid JSON Schema.
    #[error("node `{node}`: tool `{tool}` has an invalid argument schema: {message}")]
    ToolSchema {
        /// The node.
        node: String,
        /// The tool.
        tool: String,
        /// What is wrong with the schema.
        message: String,
    },
    /// A template does not parse.
    #[error("node `{node}`, {field}: {source}")]
    Template {
        /// The node.
        node: String,
        /// Which template (`inputs.x`, `prompt`, …).
        field: String,
        /// The parse error.
        source: TemplateError,
    },
    /// A router rule or edge condition does not parse.
    #[error("node `{node}`, {field}: {source}")]
    Rule {
        /// The node.
        node: String,
        /// `rule` or `edge to <id>`.
        field: String,
        /// The parse error.
        source: RuleError,
    },
    /// The spec has more nodes than `limits.maxNodes`.
    #[error("the workflow has {nodes} nodes, over its limit maxNodes = {limit}")]
    TooManyNodes {
        /// Nodes in the spec.
        nodes: usize,
        /// The limit.
        limit: u32,
    },
    /// The executor refused the graph.
    #[error("invalid graph: {0}")]
    Graph(#[from] BuildError),
}

/// Why a node of a compiled workflow failed: the source of its
/// [`NodeError`] (reach it with `std::error::Error::source` and
/// `downcast_ref::<NodeFailure>()`), so callers can branch on the kind and
/// on [`limit`](Self::limit) instead of parsing the message.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NodeFailure {
    /// A template did not render (a missing value, or output over a limit).
    #[error("node `{node}`, {field}: {error}")]
    Template {
        /// The node.
        node: String,
        /// Which template (`inputs.x`, `prompt`, `config.input`, …).
        field: String,
        /// The rendering error.
        error: TemplateError,
    },
    /// A router rule or edge condition failed to evaluate.
    #[error("node `{node}`, {field}: {error}")]
    Rule {
        /// The node.
        node: String,
        /// `rule` or `edge to <id>`.
        field: String,
        /// The evaluation error.
        error: RuleError,
    },
    /// A limit other than a rendering one was exceeded (a tool's result
    /// over [`Limits::tool_output_bytes`], or the run's total over
    /// [`Limits::run_bytes`]).
    #[error("node `{node}`, {field}: {error}")]
    Limit {
        /// The node.
        node: String,
        /// What exceeded it (`tool `read_file``).
        field: String,
        /// The limit and the value.
        error: LimitExceeded,
    },
}

impl NodeFailure {
    /// The node that failed.
    pub fn node(&self) -> &str {
        match self {
            NodeFailure::Template { node, .. }
            | NodeFailure::Rule { node, .. }
            | NodeFailure::Limit { node, .. } => node,
        }
    }

    /// The limit exceeded, if that is why the node failed.
    pub fn limit(&self) -> Option<LimitExceeded> {
        match self {
            NodeFailure::Template { error, .. } => error.limit().copied(),
            NodeFailure::Rule { error, .. } => error.limit_exceeded(),
            NodeFailure::Limit { error, .. } => Some(*error),
        }
    }
}

impl From<NodeFailure> for NodeError {
    fn from(failure: NodeFailure) -> Self {
        NodeError::from_error(ErrorClass::Permanent, failure)
    }
}

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
            .run(Self::initial_state(input), adjust(self.config()))
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
        self.graph.resume_with(command, adjust(self.config())).await
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
            let key = router_key(&node.id);
            let branches: Vec<(String, String)> = outgoing
                .iter()
                .map(|e| (edge_label(&e.to), e.to.clone()))
                .collect();
            // The router node stored the targets it chose under `next`.
            builder = builder.add_conditional_fanout(
                node.id.as_str(),
                move |state: &JsonState, _ctx| {
                    state
                        .get(&key)
                        .and_then(|r| r.get("next"))
                        .and_then(Value::as_array)
                        .map(|targets| {
                            targets
                                .iter()
                                .filter_map(Value::as_str)
                                .map(edge_label)
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default()
                },
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

fn edge_label(target: &str) -> String {
    format!("to:{target}")
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
fn chain_retry(retry: Option<RetrySpec>) -> RetrySettings {
    let defaults = RetryPolicy::default();
    match retry {
        None => RetrySettings {
            retries: 0,
            ..RetrySettings::default()
        },
        Some(r) => RetrySettings {
            retries: r.max_attempts.saturating_sub(1),
            base_delay: r
                .initial_delay_ms
                .map_or(defaults.get_initial_delay(), Duration::from_millis),
            max_delay: r
                .max_delay_ms
                .map_or(defaults.get_max_delay(), Duration::from_millis),
        },
    }
}

/// The simulated model a model config (an LLM config or a fallback, as
/// JSON) describes: its `simulated` options, if any.
fn simulated_model(config: &Value) -> Result<SimulatedModel, serde_json::Error> {
    let spec = match config.get("simulated") {
        Some(options) => SimulatedSpec::deserialize(options)?,
        None => SimulatedSpec::default(),
    };
    let mut sim = SimulatedConfig::new();
    if let Some(text) = spec.response {
        sim = sim.response(text);
    }
    if let Some(ms) = spec.latency_ms {
        sim = sim.latency(Duration::from_millis(ms));
    }
    if let Some(calls) = spec.fail_first {
        let kind = match spec.fail_kind {
            Some(FailKind::RateLimit) => SimulatedFailure::RateLimit,
            Some(FailKind::Timeout) => SimulatedFailure::Timeout,
            Some(FailKind::InvalidRequest) => SimulatedFailure::InvalidRequest,
            Some(FailKind::ServerError) | None => SimulatedFailure::ServerError,
        };
        sim = sim.fail_first(u64::from(calls), kind);
    }
    if let Some(usage) = spec.usage {
        sim = sim.usage(usage.input, usage.output);
    }
    Ok(SimulatedModel::new(sim))
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
mod tests;

#[cfg(test)]
mod amplification_tests;
