//! What a run reports: per-step records and totals.
//!
//! Part of the contracts: checkpoints store [`StepRecord`]s and sinks
//! receive [`RunSummary`]s, so these records import nothing from the engine.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{RunStatus, StepStatus, Timestamp};
use crate::error::Error;
use crate::ids::{NodeId, RunId, StepId};
use crate::pricing::{Cost, TokenUsage};

/// One step of a run: a node execution, or a node recorded as skipped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StepRecord {
    /// The step's id (steps are numbered in start order).
    pub step_id: StepId,
    /// The node.
    pub node: NodeId,
    /// For steps of a subgraph: the parent graph's step running it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_step_id: Option<StepId>,
    /// How it ended.
    pub status: StepStatus,
    /// Attempts made (0 for skipped steps).
    pub attempts: u32,
    /// Tokens of its model calls, all attempts.
    pub usage: TokenUsage,
    /// Exact cost of its model calls, all attempts.
    pub cost: Cost,
    /// From start to end, all attempts and retry delays included.
    #[serde(rename = "latency_us", with = "duration_us")]
    pub latency: Duration,
    /// When it started.
    pub started_at: Timestamp,
    /// The provider of its last model call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The model of its last model call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Model calls answered from the cache.
    #[serde(default)]
    pub cache_hits: u32,
    /// Retries of model calls made inside the step (by a wrapper such as a
    /// fallback chain); node-level retries are counted in `attempts`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub call_retries: u32,
    /// Provider fallbacks taken inside the step.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fallbacks: u32,
    /// The branch its router chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// For dispatched instances: the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A failure, summarized for JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErrorSummary {
    /// [`Error::kind`].
    pub kind: String,
    /// The message.
    pub message: String,
}

impl ErrorSummary {
    /// A failure of kind `kind` (an [`Error::kind`] name) with `message`.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

impl From<&Error> for ErrorSummary {
    fn from(e: &Error) -> Self {
        Self {
            kind: e.kind().to_string(),
            message: e.report().to_string(),
        }
    }
}

/// A run's report.
///
/// `usage` and `cost` are the exact sums of the steps' (subgraph steps
/// included), by construction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunSummary {
    /// The run.
    pub run_id: RunId,
    /// The graph's name.
    pub graph: String,
    /// How it ended.
    pub status: RunStatus,
    /// Every step, in start order (skipped ones included).
    pub steps: Vec<StepRecord>,
    /// Total tokens.
    pub usage: TokenUsage,
    /// Total cost.
    pub cost: Cost,
    /// Node executions (skips excluded).
    pub node_executions: u64,
    /// When it started.
    pub started_at: Timestamp,
    /// How long it took.
    #[serde(rename = "elapsed_us", with = "duration_us")]
    pub elapsed: Duration,
    /// The failure, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorSummary>,
}

impl StepRecord {
    /// Step `step_id` of `node`, with `status`, started at `started_at`:
    /// one attempt, no tokens, no cost, no latency, and no optional field
    /// set. Set the other fields on the result.
    ///
    /// ```
    /// use std::time::Duration;
    /// use flowtrace_core::trace::{StepRecord, StepStatus, Timestamp};
    /// use flowtrace_core::StepId;
    ///
    /// let mut step = StepRecord::new(StepId(1), "fetch", StepStatus::Succeeded, Timestamp::now());
    /// step.latency = Duration::from_millis(40);
    /// assert_eq!(step.attempts, 1);
    /// ```
    pub fn new(
        step_id: StepId,
        node: impl Into<NodeId>,
        status: StepStatus,
        started_at: Timestamp,
    ) -> Self {
        Self {
            step_id,
            node: node.into(),
            parent_step_id: None,
            status,
            attempts: 1,
            usage: TokenUsage::default(),
            cost: Cost::ZERO,
            latency: Duration::ZERO,
            started_at,
            provider: None,
            model: None,
            cache_hits: 0,
            call_retries: 0,
            fallbacks: 0,
            branch: None,
            input: None,
            error: None,
        }
    }

    /// The record of a step that did not run (skipped, or rejected by a
    /// human), with why.
    pub(crate) fn skipped(
        step_id: crate::ids::StepId,
        node: crate::ids::NodeId,
        parent_step_id: Option<crate::ids::StepId>,
        started_at: crate::trace::Timestamp,
        reason: &str,
    ) -> Self {
        Self {
            step_id,
            node,
            parent_step_id,
            status: StepStatus::Skipped,
            attempts: 0,
            usage: TokenUsage::default(),
            cost: Cost::ZERO,
            latency: std::time::Duration::ZERO,
            started_at,
            provider: None,
            model: None,
            cache_hits: 0,
            call_retries: 0,
            fallbacks: 0,
            branch: None,
            input: None,
            error: Some(reason.to_string()),
        }
    }

    /// Retries within the step: the node's own retries plus retried model
    /// calls inside it.
    pub fn retries(&self) -> u32 {
        self.attempts
            .saturating_sub(1)
            .saturating_add(self.call_retries)
    }

    /// Calls tried: the node's executions plus every retried or
    /// fallen-back model call inside it (0 when skipped).
    pub fn calls_tried(&self) -> u32 {
        self.attempts
            .saturating_add(self.call_retries)
            .saturating_add(self.fallbacks)
    }
}

impl RunSummary {
    /// The summary of run `run_id` of `graph` that ended with `status`
    /// after `elapsed`, made of `steps`: `usage`, `cost` and
    /// `node_executions` (the steps not skipped) are computed from the
    /// steps, and no error is set.
    ///
    /// ```
    /// use std::time::Duration;
    /// use flowtrace_core::trace::{RunStatus, RunSummary, StepRecord, StepStatus, Timestamp};
    /// use flowtrace_core::{RunId, StepId};
    ///
    /// let t0 = Timestamp::now();
    /// let steps = vec![
    ///     StepRecord::new(StepId(1), "a", StepStatus::Succeeded, t0),
    ///     StepRecord::new(StepId(2), "b", StepStatus::Skipped, t0),
    /// ];
    /// let summary = RunSummary::new(RunId::new("r"), "g", RunStatus::Succeeded, steps, t0, Duration::from_millis(5));
    /// assert_eq!(summary.node_executions, 1);
    /// ```
    pub fn new(
        run_id: RunId,
        graph: impl Into<String>,
        status: RunStatus,
        steps: Vec<StepRecord>,
        started_at: Timestamp,
        elapsed: Duration,
    ) -> Self {
        let usage = steps.iter().map(|s| s.usage).sum();
        let cost = steps.iter().map(|s| s.cost).sum();
        let node_executions = steps
            .iter()
            .filter(|s| s.status != StepStatus::Skipped)
            .count() as u64;
        Self {
            run_id,
            graph: graph.into(),
            status,
            steps,
            usage,
            cost,
            node_executions,
            started_at,
            elapsed,
            error: None,
        }
    }

    /// The records of one node, in order.
    pub fn steps_of<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a StepRecord> + 'a {
        self.steps.iter().filter(move |s| s.node == node)
    }

    /// The number of steps with the given status.
    pub fn count(&self, status: StepStatus) -> usize {
        self.steps.iter().filter(|s| s.status == status).count()
    }
}

impl fmt::Display for RunSummary {
    /// A plain-text table of the steps and totals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "run {} ({}): {:?} in {:.1?}",
            self.run_id, self.graph, self.status, self.elapsed
        )?;
        writeln!(
            f,
            "  {:>4}  {:<20} {:<9} {:>3} {:>8} {:>8} {:>12} {:>10}",
            "step", "node", "status", "try", "in", "out", "cost", "latency"
        )?;
        for s in &self.steps {
            let status = match s.status {
                StepStatus::Succeeded => "ok",
                StepStatus::Failed => "failed",
                StepStatus::Skipped => "skipped",
                StepStatus::Canceled => "canceled",
                StepStatus::Interrupted => "paused",
            };
            let indent = if s.parent_step_id.is_some() { "  " } else { "" };
            writeln!(
                f,
                "  {:>4}  {:<20} {:<9} {:>3} {:>8} {:>8} {:>12} {:>10}",
                s.step_id.0,
                format!("{indent}{}", s.node),
                status,
                s.attempts,
                s.usage.input_tokens,
                s.usage.output_tokens,
                s.cost.to_string(),
                format!("{:.1?}", s.latency),
            )?;
        }
        write!(
            f,
            "  total: {} node executions, {} in / {} out tokens, {}",
            self.node_executions, self.usage.input_tokens, self.usage.output_tokens, self.cost
        )?;
        if let Some(e) = &self.error {
            write!(f, "\n  error ({}): {}", e.kind, e.message)?;
        }
        Ok(())
    }
}

/// A run that ended without failing: finished, interrupted for a human, or
mod duration_us {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros() as u64)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_micros)
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
