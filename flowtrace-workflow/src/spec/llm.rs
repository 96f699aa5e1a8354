//! The configuration of `llm` nodes: provider, model, fallbacks, and the
//! options only the `simulated` provider reads.

use super::*;

/// How a simulated provider fails its first calls (`failKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum FailKind {
    /// `rateLimit`: HTTP 429.
    RateLimit,
    /// `serverError`: HTTP 5xx.
    ServerError,
    /// `timeout`: the call times out.
    Timeout,
    /// `invalidRequest`: HTTP 400 (not retryable).
    InvalidRequest,
}

/// Token usage a simulated provider reports for each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SimulatedUsage {
    /// Prompt tokens.
    pub input: u64,
    /// Completion tokens.
    pub output: u64,
}

impl SimulatedUsage {
    /// `input` prompt tokens and `output` completion tokens.
    pub fn new(input: u64, output: u64) -> Self {
        SimulatedUsage { input, output }
    }
}

fn default_true() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// Options of the `simulated` provider: the `simulated` object of an LLM
/// config or a fallback, allowed only with `"provider": "simulated"`.
///
/// ```
/// use flowtrace_workflow::spec::{FailKind, SimulatedSpec};
///
/// let sim = SimulatedSpec::new().response("Hi {{name}}").latency_ms(20).fail_first(2, FailKind::RateLimit);
/// let json = serde_json::to_value(&sim)?;
/// assert_eq!(json, serde_json::json!({
///     "response": "Hi {{name}}", "latencyMs": 20, "failFirst": 2, "failKind": "rateLimit"
/// }));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct SimulatedSpec {
    /// The response template (default: an echo of the prompt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// Latency per call, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// How many first calls fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_first: Option<u32>,
    /// How those calls fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_kind: Option<FailKind>,
    /// Reported token usage (default: estimated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<SimulatedUsage>,
}

impl SimulatedSpec {
    /// No options: instant echo replies that never fail.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the response template.
    #[must_use]
    pub fn response(mut self, template: impl Into<String>) -> Self {
        self.response = Some(template.into());
        self
    }

    /// Sets the latency of every call, in milliseconds.
    #[must_use]
    pub fn latency_ms(mut self, ms: u64) -> Self {
        self.latency_ms = Some(ms);
        self
    }

    /// Makes the first `calls` calls fail with `kind`.
    #[must_use]
    pub fn fail_first(mut self, calls: u32, kind: FailKind) -> Self {
        self.fail_first = Some(calls);
        self.fail_kind = Some(kind);
        self
    }

    /// Reports these token counts for every call.
    #[must_use]
    pub fn usage(mut self, input: u64, output: u64) -> Self {
        self.usage = Some(SimulatedUsage { input, output });
        self
    }
}

/// Configuration of an `llm` node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct LlmConfig {
    /// Provider name, registered with the host (see [`Known`]).
    pub provider: String,
    /// Model name.
    pub model: String,
    /// System prompt template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// User prompt template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Sampling temperature (0 to 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Completion token limit (`maxTokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Whether identical calls may be answered from the response cache
    /// (default true).
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub cache: bool,
    /// Providers tried in order when this one fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<FallbackSpec>,
    /// Options of the `simulated` provider (only with that provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulated: Option<SimulatedSpec>,
}

impl LlmConfig {
    /// A call to `model` of `provider`, with no prompt template (the
    /// node's inputs become the prompt), the cache on and no fallbacks.
    pub fn new(provider: impl Into<String>, model: impl Into<String>) -> Self {
        LlmConfig {
            provider: provider.into(),
            model: model.into(),
            system: None,
            prompt: None,
            temperature: None,
            max_tokens: None,
            cache: true,
            fallbacks: Vec::new(),
            simulated: None,
        }
    }

    /// Sets the system prompt template.
    #[must_use]
    pub fn system(mut self, template: impl Into<String>) -> Self {
        self.system = Some(template.into());
        self
    }

    /// Sets the user prompt template.
    #[must_use]
    pub fn prompt(mut self, template: impl Into<String>) -> Self {
        self.prompt = Some(template.into());
        self
    }

    /// Sets the sampling temperature.
    #[must_use]
    pub fn temperature(mut self, temperature: f64) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Sets the completion token limit.
    #[must_use]
    pub fn max_tokens(mut self, tokens: u32) -> Self {
        self.max_tokens = Some(tokens);
        self
    }

    /// Turns the response cache on or off for this node.
    #[must_use]
    pub fn cache(mut self, on: bool) -> Self {
        self.cache = on;
        self
    }

    /// Adds a fallback, tried after the primary and earlier fallbacks.
    #[must_use]
    pub fn fallback(mut self, fallback: FallbackSpec) -> Self {
        self.fallbacks.push(fallback);
        self
    }

    /// Sets the simulated provider's options.
    #[must_use]
    pub fn simulated(mut self, options: SimulatedSpec) -> Self {
        self.simulated = Some(options);
        self
    }
}

/// One fallback of an `llm` node: a provider, a model and provider options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct FallbackSpec {
    /// Provider name.
    pub provider: String,
    /// Model name.
    pub model: String,
    /// Sampling temperature (0 to 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Completion token limit (`maxTokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Options of the `simulated` provider (only with that provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulated: Option<SimulatedSpec>,
}

impl FallbackSpec {
    /// A fallback to `model` of `provider`.
    pub fn new(provider: impl Into<String>, model: impl Into<String>) -> Self {
        FallbackSpec {
            provider: provider.into(),
            model: model.into(),
            temperature: None,
            max_tokens: None,
            simulated: None,
        }
    }

    /// Sets the simulated provider's options.
    #[must_use]
    pub fn simulated(mut self, options: SimulatedSpec) -> Self {
        self.simulated = Some(options);
        self
    }
}
