//! Model routing: pick, for each call, the best model of a named profile
//! that can take the request and that the run can afford.
//!
//! A [`ModelRouter`] is a [`ChatModel`] holding named [`Profile`]s, each an
//! ordered list of [`RouteCandidate`]s (a model, its name, context window,
//! [`Capabilities`], expected latency, a quality score and an optional
//! [`CircuitBreaker`](crate::breaker::CircuitBreaker)). Three profiles come
//! ready-weighted — [`Profile::fast`], [`Profile::balanced`] and
//! [`Profile::powerful`] — and [`Profile::new`] defines your own; every
//! profile takes the candidates you give it (no network client is built
//! in). A router calls through one *active* profile: the first one added,
//! or the one chosen with [`ModelRouter::use_profile`];
//! [`ModelRouter::with_profile`] gives a cheap copy routing through another
//! profile, so one set of profiles can serve several nodes.
//!
//! # How a call is routed
//!
//! For every candidate, in list order, with the request's `model` replaced by
//! the candidate's model name:
//!
//! 1. its prompt is estimated with [`tokens::estimate_for`] for the
//!    candidate's provider, and its output as the request's `max_tokens` or
//!    else the profile's [`assumed_output_tokens`](Profile::assumed_output_tokens);
//! 2. its cost is estimated exactly, in [`Cost`], from
//!    [`CallObserver::price`]: `price.cost(&TokenUsage::new(prompt, output))`
//!    (a model without a price counts as free, as
//!    [`MissingPrice::ZeroWithWarning`](flowtrace_core::MissingPrice) does,
//!    unless the profile [requires prices](Profile::require_price));
//! 3. it is **skipped** when its breaker is open; when its estimated cost
//!    cannot be represented ([`CostOverflow`](flowtrace_core::pricing::CostOverflow));
//!    when it lacks a capability
//!    the call needs (tools if the request offers tools or its history holds
//!    tool calls; JSON output if `response_format` asks for JSON; streaming if
//!    the call streams); when `prompt + output` exceeds
//!    `context_window × (1 − headroom)`; when its cost exceeds the profile's
//!    [`max_cost_per_call`](Profile::max_cost_per_call); or when the run's
//!    [`remaining_budget`](CallObserver::remaining_budget) has fewer tokens
//!    than `prompt + output` or less money than its cost.
//!
//! The candidates left are scored, each term rescaled over them so that the
//! best value scores 1 and the worst 0 (every candidate scores 1 on a term
//! where they are all equal):
//!
//! ```text
//! latency_score = (max_latency − latency) / (max_latency − min_latency)
//! cost_score    = (max_cost − cost)       / (max_cost − min_cost)
//! quality_score = (quality − min_quality) / (max_quality − min_quality)
//! score = (w_latency·latency_score + w_cost·cost_score + w_quality·quality_score)
//!         / (w_latency + w_cost + w_quality)
//! ```
//!
//! The highest score wins; ties go to the earlier candidate. A winner whose
//! breaker refuses the call at the last moment (a half-open breaker's trial
//! already taken) is skipped for the next best. The router then emits
//! `model.route` ([`EventKind::ModelRoute`]) with the chosen provider and
//! model, a human-readable reason and every skipped candidate with its
//! reason, and calls the winner's `chat_observed` / `chat_stream_observed`
//! with the request's `model` set to the candidate's name. The reply's
//! `provider` (when unset) and `model` (when empty) name the candidate, so
//! the call is priced as that model. The outcome is reported to the
//! candidate's breaker.
//!
//! When no candidate qualifies the call fails, without calling anything,
//! with a non-retryable [`ModelErrorKind::InvalidRequest`] whose message
//! lists each candidate and why it was skipped.
//!
//! The router neither retries nor falls back: make a candidate a
//! [`FallbackChain`](crate::fallback::FallbackChain) for that.
//!
//! # Inside a run
//!
//! Called through [`NodeContext::chat`](flowtrace_core::NodeContext::chat),
//! the router's provider is [`ROUTER_PROVIDER`] and the request's model is
//! whatever you name it (say `"auto"`): the context reserves the call's
//! estimated tokens (from [`ChatModel::estimate_input_tokens`], the largest
//! estimate among the active profile's candidates) and, as such a pair has
//! no price, no money; the router then checks each candidate's tokens and
//! cost against what is left of the run's budget. The context hands the
//! call's own reservation back in the budget it reports, so the routed call
//! is not counted twice. With
//! [`MissingPrice::Error`](flowtrace_core::MissingPrice::Error) the context
//! refuses the unpriced `router` pair: give it a zero price in the run's
//! price table.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use flowtrace_core::{ChatModel, ChatRequest, TokenUsage};
//! use flowtrace_core::testing::ScriptedModel;
//! use flowtrace_providers::router::{ModelRouter, Profile, RouteCandidate};
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let small = Arc::new(ScriptedModel::new("openai").then_always("quick", TokenUsage::new(5, 1)));
//! let large = Arc::new(ScriptedModel::new("anthropic").then_always("deep", TokenUsage::new(5, 1)));
//! let candidates = || [
//!     RouteCandidate::new(small.clone(), "gpt-4o-mini").expected_latency(Duration::from_millis(400)).quality(0.6),
//!     RouteCandidate::new(large.clone(), "claude-opus-4").expected_latency(Duration::from_secs(3)).quality(0.95),
//! ];
//! let router = ModelRouter::new()
//!     .profile(Profile::fast(candidates()))
//!     .profile(Profile::powerful(candidates()));
//! let reply = router.chat(ChatRequest::new("auto").user("hi")).await.unwrap();
//! assert_eq!(reply.model, "gpt-4o-mini");
//! let powerful = router.with_profile("powerful").unwrap();
//! let reply = powerful.chat(ChatRequest::new("auto").user("hi")).await.unwrap();
//! assert_eq!(reply.provider.as_deref(), Some("anthropic"));
//! # });
//! ```

mod decision;
mod profile;

use std::sync::Arc;

use async_trait::async_trait;
use flowtrace_core::model::{ObservedModel, ResponseFormat, Role};
use flowtrace_core::{
    CallObserver, ChatModel, ChatRequest, ChatResponse, ChatStream, Cost, EventKind, ModelError,
    ModelErrorKind, StreamEvent, TokenUsage,
};
use futures::StreamExt;

use crate::breaker::{BreakerPermit, BreakerState};
use crate::tokens::{self, Counter};

pub use decision::{RouteDecision, SkipReason, SkippedCandidate, UnknownProfile};
pub use profile::{Capabilities, Capability, Profile, RouteCandidate, Weights};

/// The provider name a [`ModelRouter`] reports before it has routed.
pub const ROUTER_PROVIDER: &str = "router";

/// A [`ChatModel`] that routes each call to one candidate of its active
/// profile. See the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct ModelRouter {
    profiles: Arc<Vec<Profile>>,
    active: usize,
}

/// A candidate that passed every constraint.
struct Qualified<'a> {
    index: usize,
    candidate: &'a RouteCandidate,
    input_tokens: u64,
    cost: Option<Cost>,
    score: f64,
}

/// Everything the router found out about a request.
struct Plan<'a> {
    profile: &'a Profile,
    output_tokens: u64,
    ranked: Vec<Qualified<'a>>,
    skipped: Vec<SkippedCandidate>,
}

/// The winner, ready to call.
struct Chosen<'a> {
    candidate: &'a RouteCandidate,
    permit: Option<BreakerPermit>,
}

impl ModelRouter {
    /// A router without profiles (every call fails until one is added).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `profile`, replacing any profile of the same name. The first
    /// profile added is active until [`use_profile`](Self::use_profile).
    #[must_use]
    pub fn profile(mut self, profile: Profile) -> Self {
        let profiles = Arc::make_mut(&mut self.profiles);
        match profiles.iter_mut().find(|p| p.name == profile.name) {
            Some(slot) => *slot = profile,
            None => profiles.push(profile),
        }
        self
    }

    /// Makes the profile called `name` the active one.
    pub fn use_profile(mut self, name: &str) -> Result<Self, UnknownProfile> {
        self.active = self.find(name)?;
        Ok(self)
    }

    /// A router sharing these profiles that routes through `name` (cheap:
    /// the profiles are shared, not copied).
    pub fn with_profile(&self, name: &str) -> Result<Self, UnknownProfile> {
        self.clone().use_profile(name)
    }

    fn find(&self, name: &str) -> Result<usize, UnknownProfile> {
        self.profiles
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| UnknownProfile {
                name: name.to_string(),
                known: self.profiles.iter().map(|p| p.name.clone()).collect(),
            })
    }

    /// The active profile, if the router has any.
    pub fn active_profile(&self) -> Option<&Profile> {
        self.profiles.get(self.active)
    }

    /// Every profile, in the order added.
    pub fn profiles(&self) -> &[Profile] {
        &self.profiles
    }

    /// Decides where `request` would go now (a streamed call when
    /// `streaming`), without calling anything, taking a breaker permit or
    /// emitting events. Prices and the remaining budget come from
    /// `observer`.
    pub fn route(
        &self,
        request: &ChatRequest,
        streaming: bool,
        observer: &dyn CallObserver,
    ) -> Result<RouteDecision, ModelError> {
        let plan = self.plan(request, streaming, observer)?;
        match plan.ranked.first() {
            Some(best) => Ok(decision(&plan, best, plan.skipped.clone())),
            None => Err(no_candidate(&plan, request)),
        }
    }

    fn plan(
        &self,
        request: &ChatRequest,
        streaming: bool,
        observer: &dyn CallObserver,
    ) -> Result<Plan<'_>, ModelError> {
        let profile = self.active_profile().ok_or_else(|| {
            ModelError::new(
                ModelErrorKind::InvalidRequest,
                ROUTER_PROVIDER,
                request.model.clone(),
                "the model router has no profile",
            )
        })?;
        let needs = required_capabilities(request, streaming);
        let output_tokens = u64::from(request.max_tokens.unwrap_or(profile.assumed_output_tokens));
        let remaining = observer.remaining_budget();
        let mut estimates: Vec<(Counter, u64)> = Vec::new();
        let mut qualified = Vec::new();
        let mut skipped = Vec::new();
        for (index, candidate) in profile.candidates.iter().enumerate() {
            let provider = candidate.provider();
            let counter = Counter::for_model(provider, &candidate.model_name);
            let input_tokens = match estimates.iter().find(|(c, _)| *c == counter) {
                Some(&(_, tokens)) => tokens,
                None => {
                    let tokens = counter.estimate(request);
                    estimates.push((counter, tokens));
                    tokens
                }
            };
            let priced = observer
                .price(provider, &candidate.model_name)
                .map(|p| p.cost(&TokenUsage::new(input_tokens, output_tokens)));
            let cost = priced.and_then(Result::ok);
            let needed = input_tokens.saturating_add(output_tokens);
            let usable = usable_window(candidate.context_window, profile.context_headroom);
            let charged = cost.unwrap_or(Cost::ZERO);
            let reason = if candidate
                .breaker
                .as_ref()
                .is_some_and(|b| matches!(b.state(), BreakerState::Open { .. }))
            {
                Some(SkipReason::CircuitOpen)
            } else if let Some(Err(overflow)) = priced {
                Some(SkipReason::CostOverflow(overflow))
            } else if let Some(&missing) = needs.iter().find(|c| !candidate.capabilities.has(**c)) {
                Some(SkipReason::MissingCapability(missing))
            } else if needed > usable {
                Some(SkipReason::ContextTooSmall {
                    needed,
                    usable,
                    window: candidate.context_window,
                })
            } else if cost.is_none() && profile.require_price {
                Some(SkipReason::NoPrice)
            } else if let Some(max) = profile.max_cost_per_call.filter(|max| charged > *max) {
                Some(SkipReason::OverMaxCostPerCall {
                    estimated: charged,
                    max,
                })
            } else if let Some(left) = remaining.tokens.filter(|left| needed > *left) {
                Some(SkipReason::OverBudgetTokens {
                    needed,
                    remaining: left,
                })
            } else {
                remaining.cost.filter(|left| charged > *left).map(|left| {
                    SkipReason::OverBudgetCost {
                        estimated: charged,
                        remaining: left,
                    }
                })
            };
            match reason {
                Some(reason) => skipped.push(SkippedCandidate {
                    provider: provider.to_string(),
                    model: candidate.model_name.clone(),
                    reason,
                }),
                None => qualified.push(Qualified {
                    index,
                    candidate,
                    input_tokens,
                    cost,
                    score: 0.0,
                }),
            }
        }
        score(&mut qualified, profile.weights);
        // Stable: equal scores keep list order.
        qualified.sort_by(|a, b| b.score.total_cmp(&a.score));
        Ok(Plan {
            profile,
            output_tokens,
            ranked: qualified,
            skipped,
        })
    }

    /// Plans, takes the winner's breaker permit (moving on when it is
    /// refused) and emits `model.route`.
    fn select<'a>(
        &'a self,
        request: &ChatRequest,
        streaming: bool,
        observer: &dyn CallObserver,
    ) -> Result<Chosen<'a>, ModelError> {
        let plan = self.plan(request, streaming, observer)?;
        let mut skipped = plan.skipped.clone();
        for qualified in &plan.ranked {
            let permit = match &qualified.candidate.breaker {
                None => None,
                Some(breaker) => match breaker.try_acquire() {
                    Ok(permit) => Some(permit),
                    Err(_) => {
                        skipped.push(SkippedCandidate {
                            provider: qualified.candidate.provider().to_string(),
                            model: qualified.candidate.model_name.clone(),
                            reason: SkipReason::CircuitOpen,
                        });
                        continue;
                    }
                },
            };
            let decision = decision(&plan, qualified, skipped);
            tracing::debug!(
                profile = %decision.profile,
                provider = %decision.provider,
                model = %decision.model,
                skipped = decision.skipped.len(),
                "model routed"
            );
            observer.event(EventKind::ModelRoute {
                profile: decision.profile,
                provider: decision.provider,
                model: decision.model,
                reason: decision.reason,
                skipped: decision.skipped.iter().map(ToString::to_string).collect(),
            });
            return Ok(Chosen {
                candidate: qualified.candidate,
                permit,
            });
        }
        let plan = Plan { skipped, ..plan };
        Err(no_candidate(&plan, request))
    }
}

/// `window × (1 − headroom)`, rounded down, with the headroom taken to
/// basis points so `0.1` means exactly 10 %.
fn usable_window(window: u64, headroom: f32) -> u64 {
    let kept = 10_000
        - (f64::from(headroom) * 10_000.0)
            .round()
            .clamp(0.0, 10_000.0) as u128;
    u64::try_from(u128::from(window) * kept / 10_000).unwrap_or(u64::MAX)
}

/// What the call needs from a candidate.
fn required_capabilities(request: &ChatRequest, streaming: bool) -> Vec<Capability> {
    let mut needs = Vec::new();
    let tool_history = request
        .messages
        .iter()
        .any(|m| !m.tool_calls.is_empty() || m.role == Role::Tool);
    if !request.tools.is_empty() || tool_history {
        needs.push(Capability::Tools);
    }
    if matches!(
        request.response_format,
        Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. })
    ) {
        needs.push(Capability::JsonOutput);
    }
    if streaming {
        needs.push(Capability::Streaming);
    }
    needs
}

/// Scores the qualified candidates (see the module docs).
fn score(qualified: &mut [Qualified<'_>], weights: Weights) {
    let weight = |w: f32| {
        if w.is_finite() && w > 0.0 {
            f64::from(w)
        } else {
            0.0
        }
    };
    let (wl, wc, wq) = (
        weight(weights.latency),
        weight(weights.cost),
        weight(weights.quality),
    );
    let total = wl + wc + wq;
    let latencies: Vec<f64> = qualified
        .iter()
        .map(|q| q.candidate.expected_latency.as_secs_f64())
        .collect();
    let costs: Vec<f64> = qualified
        .iter()
        .map(|q| q.cost.unwrap_or(Cost::ZERO).as_usd_f64())
        .collect();
    let qualities: Vec<f64> = qualified
        .iter()
        .map(|q| f64::from(q.candidate.quality))
        .collect();
    for (i, q) in qualified.iter_mut().enumerate() {
        q.score = if total > 0.0 {
            (wl * lower_is_better(&latencies, i)
                + wc * lower_is_better(&costs, i)
                + wq * higher_is_better(&qualities, i))
                / total
        } else {
            0.0
        };
    }
}

fn range(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// 1 for the smallest value, 0 for the largest, 1 for all when equal.
fn lower_is_better(values: &[f64], i: usize) -> f64 {
    let (lo, hi) = range(values);
    match values.get(i) {
        Some(v) if hi > lo => (hi - v) / (hi - lo),
        _ => 1.0,
    }
}

/// 1 for the largest value, 0 for the smallest, 1 for all when equal.
fn higher_is_better(values: &[f64], i: usize) -> f64 {
    let (lo, hi) = range(values);
    match values.get(i) {
        Some(v) if hi > lo => (v - lo) / (hi - lo),
        _ => 1.0,
    }
}

fn decision(
    plan: &Plan<'_>,
    chosen: &Qualified<'_>,
    skipped: Vec<SkippedCandidate>,
) -> RouteDecision {
    let candidate = chosen.candidate;
    let weights = plan.profile.weights;
    let cost = chosen
        .cost
        .map_or_else(|| "no price".to_string(), |c| format!("estimated cost {c}"));
    let among = match plan.ranked.len() {
        1 => "the only qualifying candidate".to_string(),
        n => format!("best score {:.3} of {n} qualifying", chosen.score),
    };
    let reason = format!(
        "{among} in profile {:?} (weights latency {}, cost {}, quality {}): \
         expected latency {} ms, {cost}, quality {:.2}, ~{} prompt + {} output tokens",
        plan.profile.name,
        weights.latency,
        weights.cost,
        weights.quality,
        candidate.expected_latency.as_millis(),
        candidate.quality,
        chosen.input_tokens,
        plan.output_tokens,
    );
    RouteDecision {
        profile: plan.profile.name.clone(),
        index: chosen.index,
        provider: candidate.provider().to_string(),
        model: candidate.model_name.clone(),
        reason,
        score: chosen.score,
        estimated_input_tokens: chosen.input_tokens,
        estimated_output_tokens: plan.output_tokens,
        estimated_cost: chosen.cost,
        skipped,
    }
}

fn no_candidate(plan: &Plan<'_>, request: &ChatRequest) -> ModelError {
    let why = if plan.skipped.is_empty() {
        "it has no candidates".to_string()
    } else {
        plan.skipped
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    };
    ModelError::new(
        ModelErrorKind::InvalidRequest,
        ROUTER_PROVIDER,
        request.model.clone(),
        format!(
            "no candidate of routing profile {:?} can take the call: {why}",
            plan.profile.name
        ),
    )
}

/// Names the candidate on its reply.
fn stamp(response: &mut ChatResponse, provider: &str, model: &str) {
    if response.provider.is_none() {
        response.provider = Some(provider.to_string());
    }
    if response.model.is_empty() {
        response.model = model.to_string();
    }
}

#[async_trait]
impl ObservedModel for ModelRouter {
    /// [`ROUTER_PROVIDER`]; replies name the provider that answered.
    fn provider(&self) -> &str {
        ROUTER_PROVIDER
    }

    /// # Cancel safety
    /// Dropping the future abandons the routed call (its breaker counts it
    /// as neither success nor failure).
    async fn chat_observed(
        &self,
        request: ChatRequest,
        observer: &dyn CallObserver,
    ) -> Result<ChatResponse, ModelError> {
        let Chosen { candidate, permit } = self.select(&request, false, observer)?;
        let mut routed = request;
        routed.model = candidate.model_name.clone();
        let result = candidate.model.chat_observed(routed, observer).await;
        if let Some(permit) = permit {
            permit.record(&result);
        }
        let mut response = result?;
        stamp(&mut response, candidate.provider(), &candidate.model_name);
        Ok(response)
    }

    /// Routes when first polled, then streams the chosen candidate's reply.
    fn chat_stream_observed<'a>(
        &'a self,
        request: ChatRequest,
        observer: &'a dyn CallObserver,
    ) -> ChatStream<'a> {
        let chosen = futures::stream::once(async move {
            self.select(&request, true, observer)
                .map(|chosen| (chosen, request))
        });
        Box::pin(chosen.flat_map(move |chosen| -> ChatStream<'a> {
            let (Chosen { candidate, permit }, mut request) = match chosen {
                Ok(chosen) => chosen,
                Err(error) => return Box::pin(futures::stream::iter([Err(error)])),
            };
            request.model = candidate.model_name.clone();
            let mut permit = permit;
            let provider = candidate.provider();
            let model = candidate.model_name.as_str();
            let events = candidate.model.chat_stream_observed(request, observer);
            Box::pin(events.map(move |item| match item {
                Ok(StreamEvent::Done(mut response)) => {
                    if let Some(p) = permit.take() {
                        p.success();
                    }
                    stamp(&mut response, provider, model);
                    Ok(StreamEvent::Done(response))
                }
                Err(error) => {
                    if let Some(p) = permit.take() {
                        p.failure(&error.kind);
                    }
                    Err(error)
                }
                other => other,
            }))
        }))
    }

    /// The largest estimate among the active profile's candidates (so a
    /// budget pre-check covers whichever is chosen).
    fn estimate_input_tokens(&self, request: &ChatRequest) -> u64 {
        self.active_profile()
            .into_iter()
            .flat_map(|p| p.candidates.iter())
            .map(|c| tokens::estimate_for(c.provider(), &c.model_name, request))
            .max()
            .unwrap_or_else(|| request.approx_input_tokens())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn normalisation_maps_best_to_one_and_worst_to_zero() {
        let v = [1.0, 3.0, 2.0];
        assert_eq!(lower_is_better(&v, 0), 1.0);
        assert_eq!(lower_is_better(&v, 1), 0.0);
        assert_eq!(lower_is_better(&v, 2), 0.5);
        assert_eq!(higher_is_better(&v, 1), 1.0);
        assert_eq!(higher_is_better(&v, 0), 0.0);
        assert_eq!(lower_is_better(&[2.0, 2.0], 1), 1.0);
        assert_eq!(higher_is_better(&[0.5], 0), 1.0);
    }

    #[test]
    fn headroom_is_exact() {
        assert_eq!(usable_window(100, 0.1), 90);
        assert_eq!(usable_window(8_192, 0.1), 7_372);
        assert_eq!(usable_window(128_000, 0.0), 128_000);
        assert_eq!(usable_window(u64::MAX, 0.0), u64::MAX);
        assert_eq!(usable_window(1_000, 0.99), 10);
    }

    #[test]
    fn capabilities_follow_the_request() {
        let plain = ChatRequest::new("m").user("hi");
        assert!(required_capabilities(&plain, false).is_empty());
        assert_eq!(
            required_capabilities(&plain, true),
            vec![Capability::Streaming]
        );
        let mut json = plain.clone();
        json.response_format = Some(ResponseFormat::JsonObject);
        assert_eq!(
            required_capabilities(&json, false),
            vec![Capability::JsonOutput]
        );
        json.response_format = Some(ResponseFormat::Text);
        assert!(required_capabilities(&json, false).is_empty());
        let history = plain.message(flowtrace_core::Message::tool_result("c1", "42"));
        assert_eq!(
            required_capabilities(&history, false),
            vec![Capability::Tools]
        );
    }

    #[test]
    fn skip_reasons_read_well() {
        let cents = |c: u64| Cost::from_microdollars(c * 10_000);
        assert_eq!(SkipReason::CircuitOpen.to_string(), "circuit open");
        assert_eq!(
            SkipReason::MissingCapability(Capability::Tools).to_string(),
            "no tools support"
        );
        assert_eq!(
            SkipReason::OverMaxCostPerCall {
                estimated: cents(3),
                max: cents(1)
            }
            .to_string(),
            "estimated cost $0.03 exceeds the profile's max $0.01 per call"
        );
        let s = SkippedCandidate {
            provider: "openai".into(),
            model: "gpt-4o".into(),
            reason: SkipReason::ContextTooSmall {
                needed: 9_000,
                usable: 7_372,
                window: 8_192,
            },
        };
        assert_eq!(
            s.to_string(),
            "openai/gpt-4o: context too small: needs ~9000 tokens, 7372 usable of 8192"
        );
    }

    #[test]
    fn weights_and_quality_are_sanitised() {
        let m: Arc<dyn ChatModel> = Arc::new(ModelRouter::new());
        assert_eq!(
            RouteCandidate::new(m.clone(), "x").quality(7.0).quality,
            1.0
        );
        assert_eq!(RouteCandidate::new(m, "x").quality(f32::NAN).quality, 0.0);
        assert_eq!(
            Profile::new("p").context_headroom(2.0).context_headroom,
            0.99
        );
    }

    #[test]
    fn unknown_profiles_are_reported() {
        let r = ModelRouter::new().profile(Profile::fast([]));
        let e = r.with_profile("cheap").unwrap_err();
        assert_eq!(e.known, vec!["fast".to_string()]);
        assert_eq!(
            e.to_string(),
            "no routing profile named \"cheap\" (known: fast)"
        );
        assert_eq!(r.active_profile().unwrap().name(), "fast");
    }
}
