//! `llm` nodes: the model (with fallbacks, retries, cache), built per rendered model name.

use super::*;

/// One model of an LLM node (the primary or a fallback), before rendering.
pub(in crate::compile) struct ModelSpec {
    pub(in crate::compile) provider: String,
    pub(in crate::compile) model: String,
    pub(in crate::compile) factory: ProviderFactory,
    /// The configuration as JSON (without fallbacks and the simulated
    /// response template).
    pub(in crate::compile) config: Value,
    /// The simulated response template.
    pub(in crate::compile) response: Option<Template>,
    /// Where the response template is (`simulated.response`,
    /// `fallbacks.0.simulated.response`).
    pub(in crate::compile) field: String,
}

impl ModelSpec {
    pub(in crate::compile) fn new(
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
            map.remove("fallbacks");
            if let Some(Value::Object(simulated)) = map.get_mut("simulated") {
                simulated.remove("response");
            }
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
    pub(in crate::compile) fn render_response(
        &self,
        scope: &impl Scope,
        budget: &mut RenderBudget<'_>,
    ) -> Result<Option<String>, NodeFailure> {
        self.response
            .as_ref()
            .map(|t| budget.render(t, scope, &self.field))
            .transpose()
    }

    /// The configuration with the rendered response (in `simulated`).
    pub(in crate::compile) fn config_with(&self, response: Option<&str>) -> Value {
        let mut config = self.config.clone();
        if let (Some(text), Value::Object(map)) = (response, &mut config) {
            let simulated = map
                .entry("simulated")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(simulated) = simulated {
                simulated.insert("response".into(), Value::String(text.to_string()));
            }
        }
        config
    }
}

pub(in crate::compile) struct LlmNode {
    pub(in crate::compile) id: String,
    pub(in crate::compile) inputs: Inputs,
    pub(in crate::compile) system: Option<Template>,
    pub(in crate::compile) prompt: Option<Template>,
    pub(in crate::compile) temperature: Option<f64>,
    pub(in crate::compile) max_tokens: Option<u32>,
    pub(in crate::compile) primary: ModelSpec,
    pub(in crate::compile) fallbacks: Vec<ModelSpec>,
    pub(in crate::compile) cache: Option<Arc<dyn Cache>>,
    /// How the fallback chain retries each candidate: the node's `retry`.
    pub(in crate::compile) chain_retry: RetryPolicy,
    /// The fallback chain's timeout per model call: the node's `timeoutMs`.
    pub(in crate::compile) call_timeout: Option<Duration>,
    /// Built models by rendered configuration.
    pub(in crate::compile) memo: Mutex<HashMap<String, Arc<dyn ChatModel>>>,
    /// Rendering limits and the per-run totals.
    pub(in crate::compile) ledger: Arc<RunLedger>,
}

impl LlmNode {
    pub(in crate::compile) fn new(
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
            llm.simulated.as_ref().and_then(|s| s.response.as_deref()),
            runtime,
            "simulated.response",
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
                    fb.simulated.as_ref().and_then(|s| s.response.as_deref()),
                    runtime,
                    &format!("fallbacks.{i}.simulated.response"),
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
    pub(in crate::compile) fn model(
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
        if let Some(model) = self.memo_get(&key) {
            return Ok(model);
        }
        // Built outside the lock: the factories are user code.
        let model = self.build(&responses)?;
        Ok(self.memo_insert(run, key, model))
    }

    /// The memoised model for `key`, if any.
    fn memo_get(&self, key: &str) -> Option<Arc<dyn ChatModel>> {
        let memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        memo.get(key).cloned()
    }

    /// Memoises `model` under `key` and returns the model to use: one
    /// another call memoised meanwhile wins, so each key keeps one model
    /// instance (and its call counters). At most [`MAX_MEMO_MODELS`] are
    /// kept; other runs' models go first.
    fn memo_insert(&self, run: &str, key: String, model: Arc<dyn ChatModel>) -> Arc<dyn ChatModel> {
        let mut memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = memo.get(&key) {
            return existing.clone();
        }
        if memo.len() >= MAX_MEMO_MODELS {
            let prefix = format!("{run}\u{1}");
            memo.retain(|k, _| k.starts_with(&prefix));
            if memo.len() >= MAX_MEMO_MODELS {
                memo.clear();
            }
        }
        memo.insert(key, model.clone());
        model
    }

    /// Builds the model of one call: each candidate through its provider
    /// factory, chained when there are fallbacks, cached when enabled.
    fn build(
        &self,
        responses: &[(&ModelSpec, Option<String>)],
    ) -> Result<Arc<dyn ChatModel>, NodeError> {
        let mut built = Vec::with_capacity(responses.len());
        for (spec, response) in responses {
            let config = spec.config_with(response.as_deref());
            let model =
                (spec.factory)(&spec.model, &config).map_err(|source| NodeFailure::Provider {
                    node: self.id.clone(),
                    provider: spec.provider.clone(),
                    model: spec.model.clone(),
                    source,
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
                FallbackChain::new(Candidate::new(first).model(first_name))
                    .retry(self.chain_retry.clone()),
                |chain, (model, name)| chain.or(Candidate::new(model).model(name)),
            );
            let chain = match self.call_timeout {
                Some(limit) => chain.attempt_timeout(limit),
                None => chain,
            };
            Arc::new(chain)
        };
        Ok(match &self.cache {
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
        })
    }

    pub(in crate::compile) async fn run(
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
