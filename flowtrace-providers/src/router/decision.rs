//! What a [`ModelRouter`](super::ModelRouter) decided, and why.

use std::fmt;

use flowtrace_core::Cost;
use flowtrace_core::pricing::CostOverflow;

use super::Capability;

/// Why a candidate was passed over.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SkipReason {
    /// Its circuit breaker is open (or its half-open trial is taken).
    CircuitOpen,
    /// It cannot do what the call needs.
    MissingCapability(Capability),
    /// The prompt and reply would not fit its context window.
    ContextTooSmall {
        /// Estimated prompt plus output tokens.
        needed: u64,
        /// The window less the headroom.
        usable: u64,
        /// The whole window.
        window: u64,
    },
    /// It has no price and the profile requires one.
    NoPrice,
    /// Its estimated cost passes [`Cost::MAX`] (token counts or prices near
    /// `u64::MAX`).
    CostOverflow(CostOverflow),
    /// Its estimated cost exceeds the profile's cap per call.
    OverMaxCostPerCall {
        /// The estimated cost.
        estimated: Cost,
        /// The cap.
        max: Cost,
    },
    /// The run has fewer tokens left than the call may use.
    OverBudgetTokens {
        /// Estimated prompt plus output tokens.
        needed: u64,
        /// Tokens left in the run's budget.
        remaining: u64,
    },
    /// The run has less money left than the call may cost.
    OverBudgetCost {
        /// The estimated cost.
        estimated: Cost,
        /// Money left in the run's budget.
        remaining: Cost,
    },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CircuitOpen => f.write_str("circuit open"),
            Self::MissingCapability(c) => write!(f, "no {c} support"),
            Self::ContextTooSmall {
                needed,
                usable,
                window,
            } => write!(
                f,
                "context too small: needs ~{needed} tokens, {usable} usable of {window}"
            ),
            Self::NoPrice => f.write_str("no price known"),
            Self::CostOverflow(e) => write!(f, "estimated {e}"),
            Self::OverMaxCostPerCall { estimated, max } => write!(
                f,
                "estimated cost {estimated} exceeds the profile's max {max} per call"
            ),
            Self::OverBudgetTokens { needed, remaining } => write!(
                f,
                "needs ~{needed} tokens but the run's budget has {remaining} left"
            ),
            Self::OverBudgetCost {
                estimated,
                remaining,
            } => write!(
                f,
                "estimated cost {estimated} exceeds the run's remaining budget {remaining}"
            ),
        }
    }
}

/// A candidate passed over, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SkippedCandidate {
    /// Its provider.
    pub provider: String,
    /// Its model name.
    pub model: String,
    /// Why.
    pub reason: SkipReason,
}

impl fmt::Display for SkippedCandidate {
    /// `provider/model: reason`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}: {}", self.provider, self.model, self.reason)
    }
}

/// A routing decision.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RouteDecision {
    /// The profile used.
    pub profile: String,
    /// The chosen candidate's position in the profile.
    pub index: usize,
    /// The chosen provider.
    pub provider: String,
    /// The chosen model name.
    pub model: String,
    /// Why it was chosen, for people.
    pub reason: String,
    /// Its score, from 0 to 1.
    pub score: f64,
    /// Its estimated prompt tokens.
    pub estimated_input_tokens: u64,
    /// The output tokens assumed.
    pub estimated_output_tokens: u64,
    /// Its estimated cost (`None` without a price).
    pub estimated_cost: Option<Cost>,
    /// The candidates passed over, in list order of evaluation.
    pub skipped: Vec<SkippedCandidate>,
}

/// [`ModelRouter::use_profile`](super::ModelRouter::use_profile) or
/// [`ModelRouter::with_profile`](super::ModelRouter::with_profile) named a
/// profile the router does not have.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no routing profile named {name:?} (known: {})", known.join(", "))]
#[non_exhaustive]
pub struct UnknownProfile {
    /// The name asked for.
    pub name: String,
    /// The profiles the router has.
    pub known: Vec<String>,
}
