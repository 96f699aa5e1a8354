//! The node kinds of compiled workflows: templates for inputs and tool
//! arguments, and the `llm`, `tool`, `router` and `approval` nodes.

use super::*;
use std::fmt::Write as _;

use crate::limits::{LimitExceeded, LimitKind, Limits};
use crate::template::{Cap, Scope, rendered_len};

pub(super) fn parse_template(
    node: &NodeSpec,
    field: &str,
    source: &str,
) -> Result<Template, CompileError> {
    Template::parse(source).map_err(|source| CompileError::Template {
        node: node.id.clone(),
        field: field.to_string(),
        source,
    })
}

pub(super) fn parse_inputs(node: &NodeSpec) -> Result<Inputs, CompileError> {
    let templates = node
        .inputs
        .iter()
        .map(|(name, source)| {
            parse_template(node, &format!("inputs.{name}"), source).map(|t| (name.clone(), t))
        })
        .collect::<Result<_, _>>()?;
    Ok(Inputs { templates })
}

/// A node's named input templates.
#[derive(Debug, Clone)]
pub(super) struct Inputs {
    pub(super) templates: Vec<(String, Template)>,
}

/// A borrowed view of the run state that templates render against: the
/// run input, node outputs, and the node's own rendered inputs by name.
/// Nothing is copied out of the state: a template that reads a large
/// output copies only what it renders, within the rendering limits.
pub(super) struct StateScope<'a> {
    state: &'a JsonState,
    vars: Option<&'a Map<String, Value>>,
}

impl<'a> StateScope<'a> {
    pub(super) fn new(state: &'a JsonState) -> Self {
        Self { state, vars: None }
    }

    pub(super) fn with_vars(state: &'a JsonState, vars: &'a Map<String, Value>) -> Self {
        Self {
            state,
            vars: Some(vars),
        }
    }
}

impl Scope for StateScope<'_> {
    fn node_output(&self, id: &str) -> Option<&Value> {
        self.state.get(&node_key(id))
    }

    fn input(&self) -> Option<&Value> {
        self.state.get(INPUT_KEY)
    }

    fn var(&self, name: &str) -> Option<&Value> {
        self.vars.and_then(|v| v.get(name))
    }
}

/// Most runs whose totals a [`RunLedger`] tracks at once; past it the
/// totals start afresh (so the per-run bound only weakens with thousands of
/// concurrent runs of one compiled workflow).
const MAX_TRACKED_RUNS: usize = 4096;

/// The bytes each run of one compiled workflow has rendered and received
/// from tools, against [`Limits::run_bytes`]; shared by all its nodes.
#[derive(Debug)]
pub(super) struct RunLedger {
    pub(super) limits: Limits,
    runs: Mutex<HashMap<String, usize>>,
}

impl RunLedger {
    pub(super) fn new(limits: Limits) -> Self {
        Self {
            limits,
            runs: Mutex::new(HashMap::new()),
        }
    }

    /// What run `run` has used so far.
    fn used(&self, run: &str) -> usize {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.get(run).copied().unwrap_or(0)
    }

    /// Adds `bytes` to run `run`'s total, unless that passes the limit.
    pub(super) fn charge(&self, run: &str, bytes: usize) -> Result<(), LimitExceeded> {
        let max = self.limits.run_bytes;
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if !runs.contains_key(run) && runs.len() >= MAX_TRACKED_RUNS {
            runs.clear();
        }
        let total = runs.entry(run.to_owned()).or_insert(0);
        let next = total.saturating_add(bytes);
        if next > max {
            return Err(LimitExceeded::of(LimitKind::RunBytes, max, next));
        }
        *total = next;
        Ok(())
    }
}

/// What one node execution may still render: every rendering is capped at
/// [`Limits::template_output_bytes`], all of one node execution together at
/// [`Limits::node_render_bytes`], and everything a run renders or receives
/// from tools at [`Limits::run_bytes`].
pub(super) struct RenderBudget<'n> {
    node: &'n str,
    run: &'n str,
    ledger: &'n RunLedger,
    used: usize,
}

impl<'n> RenderBudget<'n> {
    pub(super) fn new(node: &'n str, run: &'n str, ledger: &'n RunLedger) -> Self {
        Self {
            node,
            run,
            ledger,
            used: 0,
        }
    }

    /// The cap for the next rendering: the smallest of the per-template
    /// limit, what is left of the node's total and what is left of the
    /// run's.
    fn cap(&self) -> Cap {
        let limits = &self.ledger.limits;
        let mut cap = Cap::template(limits.template_output_bytes);
        let node_left = limits.node_render_bytes.saturating_sub(self.used);
        if node_left < cap.max {
            cap = Cap {
                max: node_left,
                kind: LimitKind::NodeRenderBytes,
                reported_max: limits.node_render_bytes,
                already: self.used,
            };
        }
        let run_used = self.ledger.used(self.run);
        let run_left = limits.run_bytes.saturating_sub(run_used);
        if run_left < cap.max {
            cap = Cap {
                max: run_left,
                kind: LimitKind::RunBytes,
                reported_max: limits.run_bytes,
                already: run_used,
            };
        }
        cap
    }

    fn error(&self, field: &str, error: TemplateError) -> NodeFailure {
        NodeFailure::Template {
            node: self.node.to_owned(),
            field: field.to_owned(),
            error,
        }
    }

    /// Counts `len` rendered bytes against the node and the run.
    fn count(&mut self, len: usize, field: &str) -> Result<(), NodeFailure> {
        self.used = self.used.saturating_add(len);
        self.ledger
            .charge(self.run, len)
            .map_err(|error| NodeFailure::Limit {
                node: self.node.to_owned(),
                field: field.to_owned(),
                error,
            })
    }

    /// Renders `template` as text, charging its size.
    pub(super) fn render(
        &mut self,
        template: &Template,
        scope: &impl Scope,
        field: &str,
    ) -> Result<String, NodeFailure> {
        let text = template
            .render_in(scope, self.cap())
            .map_err(|e| self.error(field, e))?;
        self.count(text.len(), field)?;
        Ok(text)
    }

    /// Renders `template` as a value, charging its size.
    pub(super) fn render_value(
        &mut self,
        template: &Template,
        scope: &impl Scope,
        field: &str,
    ) -> Result<Value, NodeFailure> {
        let (value, len) = template
            .render_value_in(scope, self.cap())
            .map_err(|e| self.error(field, e))?;
        self.count(len, field)?;
        Ok(value)
    }

    /// Charges `len` bytes built outside a template (a prompt assembled
    /// from the inputs) before they are built.
    pub(super) fn charge(&mut self, len: usize, field: &str) -> Result<(), NodeFailure> {
        let cap = self.cap();
        if len > cap.max {
            return Err(self.error(
                field,
                TemplateError::output_too_large(LimitExceeded::of(
                    cap.kind,
                    cap.reported_max,
                    cap.already.saturating_add(len),
                )),
            ));
        }
        self.count(len, field)
    }

    /// The most bytes a tool result may have: the tool output limit, or
    /// what is left of the run's total when smaller; and the limit to
    /// report.
    pub(super) fn tool_cap(&self) -> (usize, LimitKind, usize) {
        let limits = &self.ledger.limits;
        let run_left = limits.run_bytes.saturating_sub(self.ledger.used(self.run));
        if run_left < limits.tool_output_bytes {
            (run_left, LimitKind::RunBytes, limits.run_bytes)
        } else {
            (
                limits.tool_output_bytes,
                LimitKind::ToolOutputBytes,
                limits.tool_output_bytes,
            )
        }
    }

    /// Counts a tool result of `len` bytes against the run.
    pub(super) fn count_tool_output(&mut self, len: usize, field: &str) -> Result<(), NodeFailure> {
        self.ledger
            .charge(self.run, len)
            .map_err(|error| NodeFailure::Limit {
                node: self.node.to_owned(),
                field: field.to_owned(),
                error,
            })
    }
}

/// A JSON value whose strings are templates.
#[derive(Debug, Clone)]
pub(super) enum ArgTemplate {
    Template(Template),
    Array(Vec<ArgTemplate>),
    Object(Vec<(String, ArgTemplate)>),
    Literal(Value),
}

pub(super) fn parse_args(
    node: &NodeSpec,
    value: &Value,
    at: &str,
) -> Result<ArgTemplate, CompileError> {
    Ok(match value {
        Value::String(s) => ArgTemplate::Template(parse_template(node, at, s)?),
        Value::Array(items) => ArgTemplate::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| parse_args(node, v, &format!("{at}.{i}")))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => ArgTemplate::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), parse_args(node, v, &format!("{at}.{k}"))?)))
                .collect::<Result<_, CompileError>>()?,
        ),
        other => ArgTemplate::Literal(other.clone()),
    })
}

pub(super) fn render_args(
    args: &ArgTemplate,
    scope: &impl Scope,
    budget: &mut RenderBudget<'_>,
    at: &str,
) -> Result<Value, NodeFailure> {
    Ok(match args {
        ArgTemplate::Template(t) => budget.render_value(t, scope, at)?,
        ArgTemplate::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, a)| render_args(a, scope, budget, &format!("{at}.{i}")))
                .collect::<Result<_, _>>()?,
        ),
        ArgTemplate::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, a)| {
                    Ok((
                        k.clone(),
                        render_args(a, scope, budget, &format!("{at}.{k}"))?,
                    ))
                })
                .collect::<Result<_, NodeFailure>>()?,
        ),
        ArgTemplate::Literal(v) => v.clone(),
    })
}

/// Renders a node's inputs, in name order, within `budget`.
pub(super) fn render_inputs(
    inputs: &Inputs,
    state: &JsonState,
    budget: &mut RenderBudget<'_>,
) -> Result<Map<String, Value>, NodeFailure> {
    let scope = StateScope::new(state);
    let mut rendered = Map::new();
    for (name, template) in &inputs.templates {
        let value = budget.render_value(template, &scope, &format!("inputs.{name}"))?;
        rendered.insert(name.clone(), value);
    }
    Ok(rendered)
}

pub(super) fn output_update(node: &str, output: Value) -> Map<String, Value> {
    let mut update = Map::new();
    update.insert(node_key(node), output);
    update
}

/// A value as prompt text: strings as they are, other values as JSON.
pub(super) fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The prompt of an LLM node without a `prompt` template: its single
/// input's text, or one `name: value` line per input; charged to `budget`
/// (measured before it is built).
pub(super) fn inputs_prompt(
    inputs: &Map<String, Value>,
    budget: &mut RenderBudget<'_>,
) -> Result<String, NodeFailure> {
    let mut len = 0usize;
    for (i, (name, value)) in inputs.iter().enumerate() {
        // Each value was measured when rendered; its text is no larger
        // than the JSON that was counted.
        let value_len = match value {
            Value::String(s) => s.len(),
            other => rendered_len(other, usize::MAX).unwrap_or(usize::MAX),
        };
        if inputs.len() > 1 {
            len = len.saturating_add(name.len() + 2 + usize::from(i > 0));
        }
        len = len.saturating_add(value_len);
    }
    budget.charge(len, "prompt")?;
    Ok(if inputs.len() == 1 {
        inputs.values().map(as_text).collect()
    } else {
        inputs
            .iter()
            .map(|(k, v)| format!("{k}: {}", as_text(v)))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

// ------------------------------------------------------------------ llm

/// One model of an LLM node (the primary or a fallback), before rendering.
pub(super) struct ModelSpec {
    pub(super) provider: String,
    pub(super) model: String,
    pub(super) factory: ProviderFactory,
    /// The configuration as JSON (without the response).
    pub(super) config: Value,
    /// The simulated response template.
    pub(super) response: Option<Template>,
    /// Where the response template is (`response`, `fallbacks.0.response`).
    pub(super) field: String,
}

impl ModelSpec {
    pub(super) fn new(
        node: &NodeSpec,
        provider: &str,
        model: &str,
        mut config: Value,
        response: Option<&str>,
        runtime: &Runtime,
        field: &str,
    ) -> Result<Self, CompileError> {
        let Some(factory) = runtime.providers.get(provider).cloned() else {
            return Err(CompileError::UnknownProvider {
                node: node.id.clone(),
                provider: provider.to_string(),
            });
        };
        if let Value::Object(map) = &mut config {
            map.remove("response");
            map.remove("fallbacks");
        }
        let response = match response {
            Some(r) => Some(parse_template(node, field, r)?),
            None => None,
        };
        Ok(Self {
            provider: provider.to_string(),
            model: model.to_string(),
            factory,
            config,
            response,
            field: field.to_string(),
        })
    }

    /// The rendered `response` template (the only part of the
    /// configuration that varies between calls).
    pub(super) fn render_response(
        &self,
        scope: &impl Scope,
        budget: &mut RenderBudget<'_>,
    ) -> Result<Option<String>, NodeFailure> {
        self.response
            .as_ref()
            .map(|t| budget.render(t, scope, &self.field))
            .transpose()
    }

    /// The configuration with the rendered response.
    pub(super) fn config_with(&self, response: Option<&str>) -> Value {
        let mut config = self.config.clone();
        if let (Some(text), Value::Object(map)) = (response, &mut config) {
            map.insert("response".into(), Value::String(text.to_string()));
        }
        config
    }
}

pub(super) struct LlmNode {
    pub(super) id: String,
    pub(super) inputs: Inputs,
    pub(super) system: Option<Template>,
    pub(super) prompt: Option<Template>,
    pub(super) temperature: Option<f64>,
    pub(super) max_tokens: Option<u32>,
    pub(super) primary: ModelSpec,
    pub(super) fallbacks: Vec<ModelSpec>,
    pub(super) cache: Option<Arc<dyn ResponseCache>>,
    /// How the fallback chain retries each candidate: the node's `retry`.
    pub(super) chain_retry: RetrySettings,
    /// The fallback chain's timeout per model call: the node's `timeoutMs`.
    pub(super) call_timeout: Option<Duration>,
    /// Built models by rendered configuration.
    pub(super) memo: Mutex<HashMap<String, Arc<dyn ChatModel>>>,
    /// Rendering limits and the per-run totals.
    pub(super) ledger: Arc<RunLedger>,
}

impl LlmNode {
    pub(super) fn new(
        node: &NodeSpec,
        llm: &LlmConfig,
        inputs: Inputs,
        runtime: &Runtime,
        ledger: Arc<RunLedger>,
    ) -> Result<Self, CompileError> {
        let to_json = |v: Result<Value, serde_json::Error>| v.unwrap_or(Value::Null);
        let primary = ModelSpec::new(
            node,
            &llm.provider,
            &llm.model,
            to_json(serde_json::to_value(llm)),
            llm.response.as_deref(),
            runtime,
            "response",
        )?;
        let fallbacks = llm
            .fallbacks
            .iter()
            .enumerate()
            .map(|(i, fb): (usize, &FallbackSpec)| {
                ModelSpec::new(
                    node,
                    &fb.provider,
                    &fb.model,
                    to_json(serde_json::to_value(fb)),
                    fb.response.as_deref(),
                    runtime,
                    &format!("fallbacks.{i}.response"),
                )
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            id: node.id.clone(),
            inputs,
            system: match &llm.system {
                Some(s) => Some(parse_template(node, "system", s)?),
                None => None,
            },
            prompt: match &llm.prompt {
                Some(p) => Some(parse_template(node, "prompt", p)?),
                None => None,
            },
            temperature: llm.temperature,
            max_tokens: llm.max_tokens,
            primary,
            fallbacks,
            cache: if llm.cache {
                runtime.cache.clone()
            } else {
                None
            },
            chain_retry: chain_retry(node.retry),
            call_timeout: node.timeout_ms.map(Duration::from_millis),
            memo: Mutex::new(HashMap::new()),
            ledger,
        })
    }

    /// The model for this call: memoised by rendered configuration.
    pub(super) fn model(
        &self,
        run: &str,
        scope: &impl Scope,
        budget: &mut RenderBudget<'_>,
    ) -> Result<Arc<dyn ChatModel>, NodeError> {
        // The key: the run, then each candidate's rendered response (the
        // rest of each configuration is fixed at compile time).
        let mut responses = Vec::with_capacity(1 + self.fallbacks.len());
        let mut key = String::from(run);
        for spec in std::iter::once(&self.primary).chain(&self.fallbacks) {
            let response = spec.render_response(scope, budget)?;
            // Length-prefixed, so no response text can forge another key.
            match &response {
                Some(r) => {
                    let _ = write!(key, "\u{1}{}:{r}", r.len());
                }
                None => key.push_str("\u{1}-"),
            }
            responses.push((spec, response));
        }
        let mut memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(model) = memo.get(&key) {
            return Ok(model.clone());
        }
        let mut built = Vec::with_capacity(responses.len());
        for (spec, response) in &responses {
            let config = spec.config_with(response.as_deref());
            let model = (spec.factory)(&spec.model, &config).map_err(|e| {
                NodeError::permanent(format!(
                    "node `{}`: provider `{}`: {e}",
                    self.id, spec.provider
                ))
            })?;
            built.push((model, spec.model.clone()));
        }
        let mut iter = built.into_iter();
        let Some((first, first_name)) = iter.next() else {
            return Err(NodeError::permanent("no model"));
        };
        let base: Arc<dyn ChatModel> = if self.fallbacks.is_empty() {
            first
        } else {
            let chain = iter.fold(
                FallbackChain::new(Candidate::new(first).model(first_name)).retry(self.chain_retry),
                |chain, (model, name)| chain.or(Candidate::new(model).model(name)),
            );
            let chain = match self.call_timeout {
                Some(limit) => chain.attempt_timeout(limit),
                None => chain,
            };
            Arc::new(chain)
        };
        let model: Arc<dyn ChatModel> = match &self.cache {
            // Cache entries are keyed by the request and by what else decides
            // the reply: the candidates and their rendered simulated
            // responses. Nodes sending the same request to the same real
            // models share entries; two simulated nodes with different
            // responses do not.
            Some(store) => {
                let namespace = responses
                    .iter()
                    .map(|(spec, r)| match r {
                        Some(r) => format!("{}/{}:{}:{r}", spec.provider, spec.model, r.len()),
                        None => format!("{}/{}", spec.provider, spec.model),
                    })
                    .collect::<Vec<_>>()
                    .join("\u{1}");
                Arc::new(Cached::new(base, store.clone()).namespace(namespace))
            }
            None => base,
        };
        if memo.len() >= MAX_MEMO_MODELS {
            // Other runs' models go first; this run's counters survive.
            let prefix = format!("{run}\u{1}");
            memo.retain(|k, _| k.starts_with(&prefix));
            if memo.len() >= MAX_MEMO_MODELS {
                memo.clear();
            }
        }
        memo.insert(key, model.clone());
        Ok(model)
    }

    pub(super) async fn run(
        &self,
        state: &JsonState,
        ctx: NodeContext,
    ) -> Result<NodeOutput<Map<String, Value>>, NodeError> {
        let run = ctx.run_id().to_string();
        let mut budget = RenderBudget::new(&self.id, &run, &self.ledger);
        let inputs = render_inputs(&self.inputs, state, &mut budget)?;
        let scope = StateScope::with_vars(state, &inputs);
        let prompt = match &self.prompt {
            Some(p) => budget.render(p, &scope, "prompt")?,
            None => inputs_prompt(&inputs, &mut budget)?,
        };
        let mut request = ChatRequest::new(self.primary.model.clone());
        if let Some(system) = &self.system {
            request = request.system(budget.render(system, &scope, "system")?);
        }
        request = request.user(prompt);
        if let Some(t) = self.temperature {
            request = request.temperature(t as f32);
        }
        if let Some(m) = self.max_tokens {
            request = request.max_tokens(m);
        }
        let model = self.model(ctx.run_id().as_ref(), &scope, &mut budget)?;
        let reply = ctx.chat(model.as_ref(), request).await?;
        Ok(NodeOutput::update(output_update(
            &self.id,
            Value::String(reply.text),
        )))
    }
}

// ------------------------------------------------------------------ tool

/// Most schema problems reported for one tool call.
pub(super) const MAX_ARGUMENT_PROBLEMS: usize = 16;

pub(super) struct ToolNode {
    pub(super) id: String,
    pub(super) inputs: Inputs,
    pub(super) tool: Arc<dyn Tool>,
    pub(super) args: ArgTemplate,
    /// The tool's argument schema, checked against the rendered arguments.
    pub(super) schema: jsonschema::Validator,
    /// Rendering and tool output limits, and the per-run totals.
    pub(super) ledger: Arc<RunLedger>,
}

impl ToolNode {
    pub(super) async fn run(
        &self,
        state: &JsonState,
        ctx: NodeContext,
    ) -> Result<NodeOutput<Map<String, Value>>, NodeError> {
        let run = ctx.run_id().to_string();
        let mut budget = RenderBudget::new(&self.id, &run, &self.ledger);
        let inputs = render_inputs(&self.inputs, state, &mut budget)?;
        let scope = StateScope::with_vars(state, &inputs);
        let args = render_args(&self.args, &scope, &mut budget, "config")?;
        let problems: Vec<String> = self
            .schema
            .iter_errors(&args)
            .take(MAX_ARGUMENT_PROBLEMS)
            .map(|e| {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() { "/".to_string() } else { at };
                format!("{at}: {}", e.masked_with("value"))
            })
            .collect();
        if !problems.is_empty() {
            return Err(NodeError::permanent(format!(
                "node `{}`: the arguments for tool `{}` do not fit its schema: {}",
                self.id,
                self.tool.name(),
                problems.join("; ")
            )));
        }
        let (max, kind, reported_max) = budget.tool_cap();
        let guarded = LimitedTool::new(self.tool.clone(), max, kind, reported_max);
        let field = format!("tool `{}`", self.tool.name());
        let output = match ctx.call_tool(&guarded, args).await {
            Ok(output) => {
                budget.count_tool_output(guarded.output_len(), &field)?;
                output
            }
            Err(e) => {
                return Err(match guarded.breach() {
                    Some(limit) => NodeFailure::Limit {
                        node: self.id.clone(),
                        field,
                        error: limit,
                    }
                    .into(),
                    None => e,
                });
            }
        };
        Ok(NodeOutput::update(output_update(&self.id, output)))
    }
}

/// A tool whose results larger than `max` bytes (as compact JSON) fail the
/// call, so they are neither traced nor stored; the breach is kept for the
/// node to report as a typed [`NodeFailure::Limit`].
pub(super) struct LimitedTool {
    inner: Arc<dyn Tool>,
    max: usize,
    kind: LimitKind,
    reported_max: usize,
    breach: Mutex<Option<LimitExceeded>>,
    output_len: Mutex<usize>,
}

impl LimitedTool {
    /// `inner` with results capped at `max` bytes, a breach reported as
    /// `kind` with maximum `reported_max`.
    pub(super) fn new(
        inner: Arc<dyn Tool>,
        max: usize,
        kind: LimitKind,
        reported_max: usize,
    ) -> Self {
        Self {
            inner,
            max,
            kind,
            reported_max,
            breach: Mutex::new(None),
            output_len: Mutex::new(0),
        }
    }

    /// The size of the last result, as compact JSON.
    pub(super) fn output_len(&self) -> usize {
        *self.output_len.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The limit the last call exceeded, if any.
    pub(super) fn breach(&self) -> Option<LimitExceeded> {
        *self.breach.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl Tool for LimitedTool {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn description(&self) -> &str {
        self.inner.description()
    }

    fn parameters(&self) -> Value {
        self.inner.parameters()
    }

    async fn call(&self, args: Value) -> Result<Value, flowtrace_core::ToolError> {
        let output = self.inner.call(args).await?;
        match rendered_len(&output, self.max) {
            Ok(len) => {
                *self.output_len.lock().unwrap_or_else(|p| p.into_inner()) = len;
                Ok(output)
            }
            Err(seen) => {
                let already = self.reported_max.saturating_sub(self.max);
                let limit = LimitExceeded::of_at_least(
                    self.kind,
                    self.reported_max,
                    already.saturating_add(seen),
                );
                *self.breach.lock().unwrap_or_else(|p| p.into_inner()) = Some(limit);
                Err(flowtrace_core::ToolError::permanent(
                    self.inner.name(),
                    format!("result too large: {limit}"),
                ))
            }
        }
    }
}

// ---------------------------------------------------------------- router

pub(super) struct RouterNode {
    pub(super) id: String,
    pub(super) inputs: Inputs,
    pub(super) rule: Rule,
    /// Outgoing edges in document order: target and condition.
    pub(super) edges: Vec<(String, Option<Rule>)>,
    /// Take every edge whose condition holds (else the first one).
    pub(super) fanout: bool,
    /// Rendering limits and the per-run totals.
    pub(super) ledger: Arc<RunLedger>,
}

impl RouterNode {
    pub(super) fn run(
        &self,
        state: &JsonState,
        ctx: NodeContext,
    ) -> Result<NodeOutput<Map<String, Value>>, NodeError> {
        let run = ctx.run_id().to_string();
        let mut budget = RenderBudget::new(&self.id, &run, &self.ledger);
        let inputs = render_inputs(&self.inputs, state, &mut budget)?;
        let rule_error = |field: String, error: RuleError| NodeFailure::Rule {
            node: self.id.clone(),
            field,
            error,
        };
        let mut vars = Value::Object(inputs);
        let result = self
            .rule
            .eval(&vars)
            .map_err(|e| rule_error("rule".into(), e))?;
        let branch = as_text(&result);
        budget.charge(branch.len(), "rule")?;
        if let Value::Object(map) = &mut vars {
            map.insert("branch".into(), Value::String(branch.clone()));
        }
        let mut next: Vec<String> = Vec::new();
        for (target, when) in &self.edges {
            let holds = match when {
                Some(rule) => rule
                    .eval_bool(&vars)
                    .map_err(|e| rule_error(format!("edge to `{target}`"), e))?,
                None => true,
            };
            if holds && !next.contains(target) {
                next.push(target.clone());
                if !self.fanout {
                    break;
                }
            }
        }
        ctx.log(
            LogLevel::Info,
            format!(
                "branch `{branch}` → {}",
                if next.is_empty() {
                    "(end)".to_string()
                } else {
                    next.join(", ")
                }
            ),
        );
        let mut update = output_update(&self.id, Value::String(branch.clone()));
        let mut record = Map::new();
        record.insert("branch".into(), Value::String(branch));
        record.insert(
            "next".into(),
            Value::Array(next.into_iter().map(Value::String).collect()),
        );
        update.insert(router_key(&self.id), Value::Object(record));
        Ok(NodeOutput::update(update))
    }
}

// -------------------------------------------------------------- approval

pub(super) struct ApprovalNode {
    pub(super) id: String,
    pub(super) inputs: Inputs,
    pub(super) message: Option<Template>,
    /// Rendering limits and the per-run totals.
    pub(super) ledger: Arc<RunLedger>,
}

impl ApprovalNode {
    pub(super) fn run(
        &self,
        state: &JsonState,
        ctx: NodeContext,
    ) -> Result<NodeOutput<Map<String, Value>>, NodeError> {
        let run = ctx.run_id().to_string();
        let mut budget = RenderBudget::new(&self.id, &run, &self.ledger);
        let inputs = render_inputs(&self.inputs, state, &mut budget)?;
        if let Some(message) = &self.message {
            let scope = StateScope::with_vars(state, &inputs);
            let text = budget.render(message, &scope, "message")?;
            ctx.log(LogLevel::Info, text);
        }
        let payload = ctx.approval().cloned().unwrap_or(Value::Null);
        Ok(NodeOutput::update(output_update(&self.id, payload)))
    }
}
