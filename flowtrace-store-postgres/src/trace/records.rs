//! What [`TraceStore`](super::TraceStore) reads back: events, pages, run
//! and step rows, and purge counts.

use flowtrace_core::Cost;
use flowtrace_core::trace::{Timestamp, TraceEvent};

use crate::error::StoreError;

/// One stored trace event.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StoredEvent {
    /// Its number within its run, from 0, in the order it was recorded.
    pub seq: i64,
    /// When it happened.
    pub ts: Timestamp,
    /// Its kind's dotted name (`step.finished`).
    pub kind: String,
    /// Its step, for step-scoped events.
    pub step_id: Option<u64>,
    /// The whole event as JSON (a serialized [`TraceEvent`]).
    pub payload: serde_json::Value,
}

impl StoredEvent {
    /// The event, decoded.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the payload is not a [`TraceEvent`]
    /// this version knows (say, a kind added by a later version).
    pub fn event(&self) -> Result<TraceEvent, StoreError> {
        serde_json::from_value(self.payload.clone()).map_err(|e| StoreError::Corrupt {
            message: format!("trace event {} ({})", self.seq, self.kind),
            source: Some(Box::new(e)),
        })
    }
}

/// One page of a run's events.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct EventPage {
    /// The events, by `seq`.
    pub events: Vec<StoredEvent>,
    /// The cursor of the next page (pass it as `after`), or `None` when
    /// this page holds the last stored event.
    pub next: Option<i64>,
}

/// A run's `workflow_runs` row.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RunRow {
    /// The run id.
    pub id: String,
    /// The workflow it runs, when it was queued from the registry.
    pub workflow_id: Option<String>,
    /// That workflow's version.
    pub workflow_version: Option<i32>,
    /// Its thread, for durable runs.
    pub thread_id: Option<String>,
    /// Who asked for it.
    pub triggered_by: Option<String>,
    /// `queued`, `running`, `succeeded`, `failed`, `canceled`,
    /// `interrupted` or `halted`.
    pub status: String,
    /// Its input, for queued runs.
    pub input: Option<serde_json::Value>,
    /// When the row was created.
    pub enqueued_at: Timestamp,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it last stopped.
    pub finished_at: Option<Timestamp>,
    /// Prompt tokens of all its steps.
    pub total_tokens_input: u64,
    /// Completion tokens of all its steps.
    pub total_tokens_output: u64,
    /// The exact cost of all its steps.
    pub total_cost: Cost,
    /// Its wall time, in milliseconds.
    pub total_latency_ms: u64,
    /// Why it failed (`{"message": …}`), when it did.
    pub error_summary: Option<serde_json::Value>,
    /// The run summary stored when it stopped, if a component stored one.
    pub summary: Option<serde_json::Value>,
    /// The worker running it now, for queued runs.
    pub claimed_by: Option<String>,
    /// When the row last changed.
    pub updated_at: Timestamp,
}

/// One `run_steps` row.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StepRow {
    /// The step's id within its run.
    pub step_id: u64,
    /// The node.
    pub node_id: String,
    /// The node's type, when known.
    pub node_type: Option<String>,
    /// `succeeded`, `failed`, `skipped`, `canceled` or `interrupted`.
    pub status: String,
    /// Attempts made (0 when skipped).
    pub attempt: u32,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// From start to end, in milliseconds.
    pub latency_ms: Option<f64>,
    /// Prompt tokens of its model calls.
    pub tokens_input: u64,
    /// Completion tokens of its model calls.
    pub tokens_output: u64,
    /// The exact cost of its model calls.
    pub cost: Cost,
    /// Whether a model call of the step was answered from a cache.
    pub cache_hit: bool,
    /// The provider of its last model call.
    pub provider: Option<String>,
    /// The model of its last model call.
    pub model: Option<String>,
    /// Why it failed or was skipped.
    pub error: Option<String>,
}

/// What [`TraceStore::purge_finished`](super::TraceStore::purge_finished)
/// deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PurgeReport {
    /// `trace_events` rows deleted.
    pub events: u64,
    /// `run_steps` rows deleted.
    pub steps: u64,
    /// `workflow_runs` rows deleted ([`RunRows::Delete`] only).
    pub runs: u64,
    /// Checkpoints and pending writes deleted, of the finished runs'
    /// threads that no newer run uses.
    pub checkpoints: u64,
    /// Threads (their summary rows and leases) deleted with them.
    pub threads: u64,
}

/// Whether a purge also deletes the runs' `workflow_runs` rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunRows {
    /// Keep them (with their status and totals): the default.
    #[default]
    Keep,
    /// Delete them too.
    Delete,
}
