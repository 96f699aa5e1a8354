//! [`BudgetExceeded`]: which budget limit a run breached.

use std::time::Duration;

use crate::ids::NodeId;
use crate::pricing::Cost;

/// Which budget limit was breached, with its value and what was observed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BudgetBreach {
    /// `max_node_executions`.
    NodeExecutions {
        /// The limit.
        limit: u64,
        /// Executions the run would have reached.
        observed: u64,
    },
    /// `max_tokens` (input plus output, all model calls).
    Tokens {
        /// The limit.
        limit: u64,
        /// Tokens spent, plus the estimate of a refused call.
        observed: u64,
    },
    /// `max_cost`.
    Cost {
        /// The limit.
        limit: Cost,
        /// Cost spent and reserved, plus the estimate of a refused call
        /// ([`Cost::MAX`] if that total cannot be represented).
        observed: Cost,
    },
    /// `max_duration`.
    Duration {
        /// The limit.
        limit: Duration,
        /// Time elapsed.
        observed: Duration,
    },
}

impl BudgetBreach {
    /// The limit's name: `max_node_executions`, `max_tokens`, `max_cost` or
    /// `max_duration`.
    pub fn limit_name(&self) -> &'static str {
        match self {
            Self::NodeExecutions { .. } => "max_node_executions",
            Self::Tokens { .. } => "max_tokens",
            Self::Cost { .. } => "max_cost",
            Self::Duration { .. } => "max_duration",
        }
    }

    /// The limit's value, formatted.
    pub fn limit_value(&self) -> String {
        match self {
            Self::NodeExecutions { limit, .. } | Self::Tokens { limit, .. } => limit.to_string(),
            Self::Cost { limit, .. } => limit.to_decimal_string(),
            Self::Duration { limit, .. } => format!("{limit:?}"),
        }
    }

    /// The observed value, formatted.
    pub fn observed_value(&self) -> String {
        match self {
            Self::NodeExecutions { observed, .. } | Self::Tokens { observed, .. } => {
                observed.to_string()
            }
            Self::Cost { observed, .. } => observed.to_decimal_string(),
            Self::Duration { observed, .. } => format!("{observed:?}"),
        }
    }
}

/// A budget limit was reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "budget exceeded: {} is {}, observed {}{}{}",
    .breach.limit_name(),
    .breach.limit_value(),
    .breach.observed_value(),
    node_suffix_budget(.node),
    if *.refused_before_run { " (refused before running)" } else { "" }
)]
#[non_exhaustive]
pub struct BudgetExceeded {
    /// The limit and the values.
    pub breach: BudgetBreach,
    /// The node that hit it, if any.
    pub node: Option<NodeId>,
    /// Whether the work was refused before it ran (an estimate did not fit),
    /// as opposed to detected after the fact.
    pub refused_before_run: bool,
}

fn node_suffix_budget(node: &Option<NodeId>) -> String {
    match node {
        Some(n) => format!(" at node {n:?}"),
        None => String::new(),
    }
}

impl BudgetExceeded {
    pub(crate) fn new(
        breach: BudgetBreach,
        node: Option<NodeId>,
        refused_before_run: bool,
    ) -> Self {
        Self {
            breach,
            node,
            refused_before_run,
        }
    }
}
