//! The node kinds of compiled workflows: templates for inputs and tool
//! arguments, and the `llm`, `tool`, `router` and `approval` nodes.

use super::*;
use std::fmt::Write as _;

use crate::workflow::template::Reference;

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
    Ok(Inputs {
        templates,
        reads: Reads::of(node),
    })
}

/// A node's named input templates, and what its templates read.
#[derive(Debug, Clone)]
pub(super) struct Inputs {
    pub(super) templates: Vec<(String, Template)>,
    pub(super) reads: Reads,
}

/// The node outputs (and whether the run input) a node's templates read,
/// so that rendering copies only those out of the state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Reads {
    pub(super) nodes: Vec<String>,
    pub(super) input: bool,
}

impl Reads {
    /// Everything any string of `node` (inputs and configuration, fallbacks
    /// included) reads as a template.
    pub(super) fn of(node: &NodeSpec) -> Self {
        fn walk(value: &Value, reads: &mut Reads) {
            match value {
                Value::String(source) if source.contains("{{") => {
                    let Ok(template) = Template::parse(source) else {
                        return;
                    };
                    for r in template.references() {
                        match r {
                            Reference::Node { id, .. } if !reads.nodes.contains(&id) => {
                                reads.nodes.push(id);
                            }
                            Reference::Input { .. } => reads.input = true,
                            _ => {}
                        }
                    }
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, reads)),
                Value::Object(map) => map.values().for_each(|v| walk(v, reads)),
                _ => {}
            }
        }
        let mut reads = Reads::default();
        if let Ok(value) = serde_json::to_value(node) {
            walk(&value, &mut reads);
        }
        reads
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
    ctx: &TemplateContext,
) -> Result<Value, TemplateError> {
    Ok(match args {
        ArgTemplate::Template(t) => t.render_value(ctx)?,
        ArgTemplate::Array(items) => Value::Array(
            items
                .iter()
                .map(|a| render_args(a, ctx))
                .collect::<Result<_, _>>()?,
        ),
        ArgTemplate::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, a)| Ok((k.clone(), render_args(a, ctx)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        ArgTemplate::Literal(v) => v.clone(),
    })
}

/// The template context of `state` for a node reading `reads`: the input
/// and the outputs it reads (and only those, so a step never copies the
/// whole state).
pub(super) fn base_context(state: &JsonState, reads: &Reads) -> TemplateContext {
    let mut ctx = TemplateContext::new();
    if reads.input
        && let Some(input) = state.get(INPUT_KEY)
    {
        ctx.set_input(input.clone());
    }
    for id in &reads.nodes {
        if let Some(value) = state.get(&node_key(id)) {
            ctx.insert_node_output(id.clone(), value.clone());
        }
    }
    ctx
}

pub(super) fn template_error(node: &str, field: &str, e: TemplateError) -> NodeError {
    NodeError::permanent(format!("node `{node}`, {field}: {e}"))
}

/// Renders a node's inputs; returns them and the context with them as
/// variables.
pub(super) fn render_inputs(
    node: &str,
    inputs: &Inputs,
    state: &JsonState,
) -> Result<(Map<String, Value>, TemplateContext), NodeError> {
    let mut ctx = base_context(state, &inputs.reads);
    let mut rendered = Map::new();
    for (name, template) in &inputs.templates {
        let value = template
            .render_value(&ctx)
            .map_err(|e| template_error(node, &format!("inputs.{name}"), e))?;
        rendered.insert(name.clone(), value);
    }
    for (name, value) in &rendered {
        ctx.insert_var(name.clone(), value.clone());
    }
    Ok((rendered, ctx))
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
        })
    }

    /// The rendered `response` template (the only part of the
    /// configuration that varies between calls).
    pub(super) fn render_response(
        &self,
        ctx: &TemplateContext,
        node: &str,
    ) -> Result<Option<String>, NodeError> {
        self.response
            .as_ref()
            .map(|t| {
                t.render(ctx)
                    .map_err(|e| template_error(node, "response", e))
            })
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
}

impl LlmNode {
    pub(super) fn new(
        node: &NodeSpec,
        llm: &LlmConfig,
        inputs: Inputs,
        runtime: &Runtime,
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
        })
    }

    /// The model for this call: memoised by rendered configuration.
    pub(super) fn model(
        &self,
        run: &str,
        ctx: &TemplateContext,
    ) -> Result<Arc<dyn ChatModel>, NodeError> {
        // The key: the run, then each candidate's rendered response (the
        // rest of each configuration is fixed at compile time).
        let mut responses = Vec::with_capacity(1 + self.fallbacks.len());
        let mut key = String::from(run);
        for spec in std::iter::once(&self.primary).chain(&self.fallbacks) {
            let response = spec.render_response(ctx, &self.id)?;
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
        let (inputs, tctx) = render_inputs(&self.id, &self.inputs, state)?;
        let prompt = match &self.prompt {
            Some(p) => p
                .render(&tctx)
                .map_err(|e| template_error(&self.id, "prompt", e))?,
            None if inputs.len() == 1 => inputs.values().map(as_text).collect(),
            None => inputs
                .iter()
                .map(|(k, v)| format!("{k}: {}", as_text(v)))
                .collect::<Vec<_>>()
                .join("\n"),
        };
        let mut request = ChatRequest::new(self.primary.model.clone());
        if let Some(system) = &self.system {
            request = request.system(
                system
                    .render(&tctx)
                    .map_err(|e| template_error(&self.id, "system", e))?,
            );
        }
        request = request.user(prompt);
        if let Some(t) = self.temperature {
            request = request.temperature(t as f32);
        }
        if let Some(m) = self.max_tokens {
            request = request.max_tokens(m);
        }
        let model = self.model(ctx.run_id().as_ref(), &tctx)?;
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
}

impl ToolNode {
    pub(super) async fn run(
        &self,
        state: &JsonState,
        ctx: NodeContext,
    ) -> Result<NodeOutput<Map<String, Value>>, NodeError> {
        let (_, tctx) = render_inputs(&self.id, &self.inputs, state)?;
        let args =
            render_args(&self.args, &tctx).map_err(|e| template_error(&self.id, "config", e))?;
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
        let output = ctx.call_tool(self.tool.as_ref(), args).await?;
        Ok(NodeOutput::update(output_update(&self.id, output)))
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
}

impl RouterNode {
    pub(super) fn run(
        &self,
        state: &JsonState,
        ctx: NodeContext,
    ) -> Result<NodeOutput<Map<String, Value>>, NodeError> {
        let (inputs, _) = render_inputs(&self.id, &self.inputs, state)?;
        let vars = Value::Object(inputs.clone());
        let result = self
            .rule
            .eval(&vars)
            .map_err(|e| NodeError::permanent(format!("node `{}`, rule: {e}", self.id)))?;
        let branch = as_text(&result);
        let mut vars = inputs;
        vars.insert("branch".into(), Value::String(branch.clone()));
        let vars = Value::Object(vars);
        let mut next: Vec<String> = Vec::new();
        for (target, when) in &self.edges {
            let holds = match when {
                Some(rule) => rule.eval_bool(&vars).map_err(|e| {
                    NodeError::permanent(format!("node `{}`, edge to `{target}`: {e}", self.id))
                })?,
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
}

impl ApprovalNode {
    pub(super) fn run(
        &self,
        state: &JsonState,
        ctx: NodeContext,
    ) -> Result<NodeOutput<Map<String, Value>>, NodeError> {
        let (_, tctx) = render_inputs(&self.id, &self.inputs, state)?;
        if let Some(message) = &self.message {
            let text = message
                .render(&tctx)
                .map_err(|e| template_error(&self.id, "message", e))?;
            ctx.log(LogLevel::Info, text);
        }
        let payload = ctx.approval().cloned().unwrap_or(Value::Null);
        Ok(NodeOutput::update(output_update(&self.id, payload)))
    }
}
