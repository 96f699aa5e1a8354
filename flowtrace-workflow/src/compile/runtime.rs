//! The [`Runtime`]: provider factories, tools, the response cache and
//! the limits compiled workflows run with.

use super::*;

/// Builds a model for one call: receives the model name and the node's
/// configuration as JSON (an `llm` node's `config`, or one fallback entry,
/// with the simulated `response` template already rendered).
///
/// It is called outside any lock and may be called concurrently. Models
/// are memoised per node, run and rendered configuration, so it normally
/// runs once for each (two concurrent first calls may both build; one
/// model is kept).
/// Failures are typed: see [`ProviderFactoryError`].
pub type ProviderFactory =
    Arc<dyn Fn(&str, &Value) -> Result<Arc<dyn ChatModel>, ProviderFactoryError> + Send + Sync>;

/// What compiled workflows run with: provider factories, tools and an
/// optional response cache.
#[derive(Clone, Default)]
pub struct Runtime {
    pub(super) providers: HashMap<String, ProviderFactory>,
    pub(super) tools: HashMap<String, Arc<dyn Tool>>,
    pub(super) cache: Option<Arc<dyn Cache>>,
    pub(super) limits: Limits,
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
    /// `root_dir`, `transform_json`, `filter_list`, and an in-memory response cache, with
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
                        .map_err(|e| {
                            ProviderFactoryError::invalid_config("invalid `simulated` options")
                                .with_source(e)
                        })
                }),
            )
            .with_tool(Arc::new(
                ReadFile::new(root_dir).max_bytes(limits.read_file_bytes),
            ))
            .with_tool(Arc::new(
                TransformJson::new().max_output_bytes(limits.tool_output_bytes),
            ))
            .with_tool(Arc::new(crate::tools::FilterList::new()))
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
    #[must_use]
    pub fn with_provider(mut self, name: impl Into<String>, factory: ProviderFactory) -> Self {
        self.providers.insert(name.into(), factory);
        self
    }

    /// Registers (or replaces) a tool under its [`Tool::name`].
    #[must_use]
    pub fn with_tool(mut self, tool: Arc<dyn Tool>) -> Self {
        self.tools.insert(tool.name().to_string(), tool);
        self
    }

    /// Sets the response cache used by LLM nodes with `cache` on.
    #[must_use]
    pub fn with_cache(mut self, cache: Arc<dyn Cache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Sets the limits compiled workflows render and call tools with
    /// ([`Limits::template_output_bytes`], [`Limits::node_render_bytes`],
    /// [`Limits::tool_output_bytes`]). Tools already registered keep their
    /// own settings: use [`offline_with_limits`](Self::offline_with_limits)
    /// for `read_file`'s size limit.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The limits compiled workflows run with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Removes the response cache.
    #[must_use]
    pub fn without_cache(mut self) -> Self {
        self.cache = None;
        self
    }

    /// The response cache, if any.
    pub fn cache(&self) -> Option<&Arc<dyn Cache>> {
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

    /// A [`Known`](crate::spec::Known) listing this runtime's providers and
    /// tools, for [`spec::load`](crate::spec::load).
    pub fn known(&self) -> crate::spec::Known {
        let known = self
            .providers
            .keys()
            .fold(crate::spec::Known::empty(), |k, p| k.with_provider(p));
        self.tools.iter().fold(known, |k, (name, tool)| {
            k.with_tool_schema(name, tool.parameters())
        })
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
