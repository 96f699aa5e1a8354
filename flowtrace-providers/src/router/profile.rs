//! What a [`ModelRouter`](super::ModelRouter) routes between: candidates,
//! their capabilities, score weights and profiles.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use flowtrace_core::{ChatModel, Cost};

use crate::breaker::CircuitBreaker;

/// What a candidate model can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Capabilities {
    /// Tool calling.
    pub tools: bool,
    /// JSON mode or structured output.
    pub json_output: bool,
    /// Streamed replies.
    pub streaming: bool,
}

impl Default for Capabilities {
    /// [`Capabilities::ALL`].
    fn default() -> Self {
        Self::ALL
    }
}

impl Capabilities {
    /// Everything.
    pub const ALL: Self = Self {
        tools: true,
        json_output: true,
        streaming: true,
    };
    /// Plain text, whole replies only.
    pub const TEXT_ONLY: Self = Self {
        tools: false,
        json_output: false,
        streaming: false,
    };

    /// Sets tool calling.
    #[must_use]
    pub const fn tools(mut self, yes: bool) -> Self {
        self.tools = yes;
        self
    }

    /// Sets JSON output.
    #[must_use]
    pub const fn json_output(mut self, yes: bool) -> Self {
        self.json_output = yes;
        self
    }

    /// Sets streaming.
    #[must_use]
    pub const fn streaming(mut self, yes: bool) -> Self {
        self.streaming = yes;
        self
    }

    pub(crate) fn has(&self, capability: Capability) -> bool {
        match capability {
            Capability::Tools => self.tools,
            Capability::JsonOutput => self.json_output,
            Capability::Streaming => self.streaming,
        }
    }
}

/// One capability a call may need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Capability {
    /// Tool calling.
    Tools,
    /// JSON output.
    JsonOutput,
    /// Streaming.
    Streaming,
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tools => "tools",
            Self::JsonOutput => "JSON output",
            Self::Streaming => "streaming",
        })
    }
}

/// How much a profile cares about each term of the score (see the
/// [router docs](super) for the formula). Negative or non-finite weights
/// count as zero.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weights {
    /// Weight of low expected latency.
    pub latency: f32,
    /// Weight of low estimated cost.
    pub cost: f32,
    /// Weight of high quality.
    pub quality: f32,
}

impl Weights {
    /// [`Profile::fast`]'s weights: latency 0.6, cost 0.3, quality 0.1.
    pub const FAST: Self = Self::new(0.6, 0.3, 0.1);
    /// [`Profile::balanced`]'s (and [`Profile::new`]'s) weights: latency
    /// 0.3, cost 0.3, quality 0.4.
    pub const BALANCED: Self = Self::new(0.3, 0.3, 0.4);
    /// [`Profile::powerful`]'s weights: latency 0.05, cost 0.05, quality 0.9.
    pub const POWERFUL: Self = Self::new(0.05, 0.05, 0.9);

    /// Weights for latency, cost and quality.
    pub const fn new(latency: f32, cost: f32, quality: f32) -> Self {
        Self {
            latency,
            cost,
            quality,
        }
    }
}

/// One model a [`Profile`] may route to.
#[derive(Clone)]
pub struct RouteCandidate {
    pub(crate) model: Arc<dyn ChatModel>,
    pub(crate) model_name: String,
    pub(crate) context_window: u64,
    pub(crate) capabilities: Capabilities,
    pub(crate) expected_latency: Duration,
    pub(crate) quality: f32,
    pub(crate) breaker: Option<Arc<CircuitBreaker>>,
}

impl fmt::Debug for RouteCandidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteCandidate")
            .field("provider", &self.provider())
            .field("model_name", &self.model_name)
            .field("context_window", &self.context_window)
            .field("capabilities", &self.capabilities)
            .field("expected_latency", &self.expected_latency)
            .field("quality", &self.quality)
            .field("breaker", &self.breaker.as_ref().map(|b| b.state()))
            .finish()
    }
}

impl RouteCandidate {
    /// `model_name` served by `model`, with a 128,000-token context window,
    /// every capability, an expected latency of one second, quality 0.5 and
    /// no breaker.
    pub fn new(model: Arc<dyn ChatModel>, model_name: impl Into<String>) -> Self {
        Self {
            model,
            model_name: model_name.into(),
            context_window: 128_000,
            capabilities: Capabilities::ALL,
            expected_latency: Duration::from_secs(1),
            quality: 0.5,
            breaker: None,
        }
    }

    /// Sets the context window, in tokens (prompt and reply together).
    #[must_use]
    pub fn context_window(mut self, tokens: u64) -> Self {
        self.context_window = tokens;
        self
    }

    /// Sets what the model can do.
    #[must_use]
    pub fn capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// Sets the typical time to a whole reply.
    #[must_use]
    pub fn expected_latency(mut self, latency: Duration) -> Self {
        self.expected_latency = latency;
        self
    }

    /// Sets the quality score, from 0 (worst) to 1 (best); out-of-range
    /// values are clamped and NaN counts as 0. It ranks candidates; it is
    /// not money.
    #[must_use]
    pub fn quality(mut self, quality: f32) -> Self {
        self.quality = if quality.is_nan() {
            0.0
        } else {
            quality.clamp(0.0, 1.0)
        };
        self
    }

    /// Skips the candidate while `breaker` is open, and reports each call's
    /// outcome to it.
    #[must_use]
    pub fn breaker(mut self, breaker: Arc<CircuitBreaker>) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// The candidate's provider.
    pub fn provider(&self) -> &str {
        self.model.provider()
    }

    /// The model name sent to the provider.
    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    /// The context window, in tokens.
    pub fn window(&self) -> u64 {
        self.context_window
    }

    /// What the model can do.
    pub fn capability_set(&self) -> Capabilities {
        self.capabilities
    }

    /// The expected latency.
    pub fn latency(&self) -> Duration {
        self.expected_latency
    }

    /// The quality score.
    pub fn quality_score(&self) -> f32 {
        self.quality
    }

    /// The breaker, if any.
    pub fn circuit_breaker(&self) -> Option<&Arc<CircuitBreaker>> {
        self.breaker.as_ref()
    }
}

/// A named, ordered list of candidates with constraints and weights.
#[derive(Clone, Debug)]
pub struct Profile {
    pub(crate) name: String,
    pub(crate) candidates: Vec<RouteCandidate>,
    pub(crate) weights: Weights,
    pub(crate) max_cost_per_call: Option<Cost>,
    pub(crate) context_headroom: f32,
    pub(crate) assumed_output_tokens: u32,
    pub(crate) require_price: bool,
}

impl Profile {
    /// An empty profile named `name`, with [`Weights::BALANCED`], no cost
    /// cap, 10 % context headroom and 4,096 assumed output tokens.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            candidates: Vec::new(),
            weights: Weights::BALANCED,
            max_cost_per_call: None,
            context_headroom: 0.1,
            assumed_output_tokens: 4_096,
            require_price: false,
        }
    }

    fn builtin(
        name: &str,
        weights: Weights,
        candidates: impl IntoIterator<Item = RouteCandidate>,
    ) -> Self {
        Self::new(name).weights(weights).candidates(candidates)
    }

    /// The `fast` profile over `candidates`, weighted [`Weights::FAST`].
    pub fn fast(candidates: impl IntoIterator<Item = RouteCandidate>) -> Self {
        Self::builtin("fast", Weights::FAST, candidates)
    }

    /// The `balanced` profile over `candidates`, weighted
    /// [`Weights::BALANCED`].
    pub fn balanced(candidates: impl IntoIterator<Item = RouteCandidate>) -> Self {
        Self::builtin("balanced", Weights::BALANCED, candidates)
    }

    /// The `powerful` profile over `candidates`, weighted
    /// [`Weights::POWERFUL`].
    pub fn powerful(candidates: impl IntoIterator<Item = RouteCandidate>) -> Self {
        Self::builtin("powerful", Weights::POWERFUL, candidates)
    }

    /// Appends a candidate.
    #[must_use]
    pub fn candidate(mut self, candidate: RouteCandidate) -> Self {
        self.candidates.push(candidate);
        self
    }

    /// Appends candidates.
    #[must_use]
    pub fn candidates(mut self, candidates: impl IntoIterator<Item = RouteCandidate>) -> Self {
        self.candidates.extend(candidates);
        self
    }

    /// Sets the score weights.
    #[must_use]
    pub fn weights(mut self, weights: Weights) -> Self {
        self.weights = weights;
        self
    }

    /// Skips candidates whose estimated cost for the call exceeds `max`.
    #[must_use]
    pub fn max_cost_per_call(mut self, max: Cost) -> Self {
        self.max_cost_per_call = Some(max);
        self
    }

    /// Keeps this fraction of each context window free (clamped to 0–0.99;
    /// default 0.1): a candidate fits when the estimated prompt plus output
    /// is at most `context_window × (1 − headroom)`.
    #[must_use]
    pub fn context_headroom(mut self, headroom: f32) -> Self {
        self.context_headroom = if headroom.is_nan() {
            0.0
        } else {
            headroom.clamp(0.0, 0.99)
        };
        self
    }

    /// The output tokens assumed when a request sets no `max_tokens`
    /// (default 4,096, like the run's own pre-check).
    #[must_use]
    pub fn assumed_output_tokens(mut self, tokens: u32) -> Self {
        self.assumed_output_tokens = tokens;
        self
    }

    /// Skips candidates without a price instead of counting them as free.
    #[must_use]
    pub fn require_price(mut self, yes: bool) -> Self {
        self.require_price = yes;
        self
    }

    /// The profile's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The candidates, in order.
    pub fn candidate_list(&self) -> &[RouteCandidate] {
        &self.candidates
    }

    /// The score weights.
    pub fn score_weights(&self) -> Weights {
        self.weights
    }
}
