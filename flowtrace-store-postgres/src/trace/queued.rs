//! What [`record`](flowtrace_core::trace::TraceSink::record) queues: the
//! event encoded once, plus the few facts the writer needs for the step
//! and run rows.

use std::borrow::Cow;

use flowtrace_core::trace::{EventKind, RunStatus, StepStatus, Timestamp, TraceEvent};
use flowtrace_core::{Cost, TokenUsage};
use tokio::sync::oneshot;

use flowtrace_core::trace::SinkError;

/// A message from the sink to its writer, in record order.
pub(super) enum Message {
    /// One event.
    Event(Queued),
    /// Answer once every event queued before this one is committed.
    Flush(oneshot::Sender<Result<(), SinkError>>),
}

/// Bytes counted per queued event on top of its encoded payload (the
/// struct, its run id and bookkeeping), for the byte bound.
pub(super) const EVENT_OVERHEAD_BYTES: usize = 160;

/// One event, encoded.
pub(super) struct Queued {
    pub(super) run_id: String,
    pub(super) step_id: Option<u64>,
    /// Emitted by a subgraph (it has a parent step).
    pub(super) nested: bool,
    pub(super) ts: Timestamp,
    pub(super) kind: &'static str,
    /// The whole event as JSON, safe for `jsonb`.
    pub(super) payload: String,
    pub(super) fact: Fact,
}

impl Queued {
    /// The bytes this event holds while queued.
    pub(super) fn weight(&self) -> usize {
        self.payload.len() + self.run_id.len() + EVENT_OVERHEAD_BYTES
    }
}

/// What an event says about its step or run, beyond the event row.
pub(super) enum Fact {
    /// Nothing: only the event row.
    None,
    /// `run.started`.
    RunStarted,
    /// `run.finished`.
    RunFinished(Box<RunEnd>),
    /// `step.started`.
    StepStarted,
    /// `llm.request`, `llm.response` or `cache.hit`: who answers the step.
    Call {
        provider: String,
        model: String,
        cache_hit: bool,
    },
    /// `step.finished`.
    StepFinished(Box<StepEnd>),
    /// `step.skipped`.
    StepSkipped { node: String, reason: String },
}

/// The totals of a finished run.
pub(super) struct RunEnd {
    pub(super) status: &'static str,
    pub(super) usage: TokenUsage,
    pub(super) cost: Cost,
    pub(super) elapsed_us: u64,
    pub(super) error: Option<String>,
}

/// The record of a finished step.
pub(super) struct StepEnd {
    pub(super) node: String,
    pub(super) status: &'static str,
    pub(super) attempts: u32,
    pub(super) latency_us: u64,
    pub(super) usage: TokenUsage,
    pub(super) cost: Cost,
    pub(super) error: Option<String>,
}

/// The `workflow_runs.status` of a run that ended with `status`.
pub(super) fn run_status(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Succeeded => "succeeded",
        RunStatus::Canceled => "canceled",
        RunStatus::Interrupted => "interrupted",
        RunStatus::Halted => "halted",
        // `Failed`, and any status added later.
        _ => "failed",
    }
}

/// The `run_steps.status` of a step that ended with `status`.
pub(super) fn step_status(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Succeeded => "succeeded",
        StepStatus::Skipped => "skipped",
        StepStatus::Canceled => "canceled",
        StepStatus::Interrupted => "interrupted",
        _ => "failed",
    }
}

/// Text PostgreSQL accepts: NUL (which `text` refuses) becomes U+FFFD.
pub(super) fn pg_text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// JSON text `jsonb` accepts: the escape `\u0000` (which `jsonb` refuses)
/// becomes `\ufffd`. Escaped backslashes followed by `u0000` are left alone.
pub(super) fn jsonb_safe(json: String) -> String {
    const NUL: &str = "\\u0000";
    if !json.contains(NUL) {
        return json;
    }
    let mut out = String::with_capacity(json.len());
    let mut rest = json.as_str();
    while let Some(at) = rest.find(NUL) {
        let (before, after) = rest.split_at(at);
        out.push_str(before);
        // An escape only if the backslash itself is not escaped: an even
        // number of backslashes runs before it.
        let run = out.bytes().rev().take_while(|&b| b == b'\\').count();
        if run % 2 == 0 {
            out.push_str("\\ufffd");
        } else {
            out.push_str(NUL);
        }
        rest = after.get(NUL.len()..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

fn node_of(event: &TraceEvent) -> String {
    event
        .node
        .as_ref()
        .map(|n| pg_text(n.as_str()).into_owned())
        .unwrap_or_default()
}

/// The facts of `event` the writer needs.
fn fact(event: &TraceEvent) -> Fact {
    match &event.kind {
        EventKind::RunStarted { .. } => Fact::RunStarted,
        EventKind::RunFinished {
            status,
            usage,
            cost,
            elapsed_us,
            error,
            ..
        } => Fact::RunFinished(Box::new(RunEnd {
            status: run_status(*status),
            usage: *usage,
            cost: *cost,
            elapsed_us: *elapsed_us,
            error: error.clone(),
        })),
        EventKind::StepStarted { .. } => Fact::StepStarted,
        EventKind::LlmRequest {
            provider, model, ..
        } => Fact::Call {
            provider: pg_text(provider).into_owned(),
            model: pg_text(model).into_owned(),
            cache_hit: false,
        },
        EventKind::LlmResponse {
            provider, model, ..
        } => Fact::Call {
            provider: pg_text(provider).into_owned(),
            // An empty model means "the one asked for" (`llm.request`).
            model: pg_text(model).into_owned(),
            cache_hit: false,
        },
        EventKind::CacheHit {
            provider, model, ..
        } => Fact::Call {
            provider: pg_text(provider).into_owned(),
            model: pg_text(model).into_owned(),
            cache_hit: true,
        },
        EventKind::StepFinished {
            status,
            attempts,
            latency_us,
            usage,
            cost,
            error,
        } => Fact::StepFinished(Box::new(StepEnd {
            node: node_of(event),
            status: step_status(*status),
            attempts: *attempts,
            latency_us: *latency_us,
            usage: *usage,
            cost: *cost,
            error: error.as_deref().map(|e| pg_text(e).into_owned()),
        })),
        EventKind::StepSkipped { reason } => Fact::StepSkipped {
            node: node_of(event),
            reason: pg_text(reason).into_owned(),
        },
        _ => Fact::None,
    }
}

/// Encodes `event` for the writer; `Err` only if it cannot be serialized.
pub(super) fn encode(event: &TraceEvent) -> Result<Queued, serde_json::Error> {
    let payload = jsonb_safe(serde_json::to_string(event)?);
    Ok(Queued {
        run_id: pg_text(event.run_id.as_str()).into_owned(),
        step_id: event.step_id.map(|s| s.0),
        nested: event.parent_step_id.is_some(),
        ts: event.ts,
        kind: event.kind.name(),
        payload,
        fact: fact(event),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_escapes_are_replaced_but_escaped_backslashes_kept() {
        assert_eq!(jsonb_safe(r#"{"a":"x"}"#.into()), r#"{"a":"x"}"#);
        assert_eq!(
            jsonb_safe(r#"{"a":"x\u0000y"}"#.into()),
            r#"{"a":"x\ufffdy"}"#
        );
        // `\\u0000` is a backslash followed by the text `u0000`.
        assert_eq!(
            jsonb_safe(r#"{"a":"\\u0000 \\\u0000"}"#.into()),
            r#"{"a":"\\u0000 \\\ufffd"}"#
        );
        assert_eq!(pg_text("a\0b"), "a\u{FFFD}b");
    }
}
