//! A human-readable, one-line-per-event rendering of a run's trace.

use std::collections::HashSet;
use std::fmt::Write as _;

use futures::{Stream, StreamExt};

use super::{
    CacheOutcome, EventKind, EventStream, LogLevel, RunStatus, StepStatus, StreamItem, Timestamp,
    TraceEvent,
};
use crate::ids::StepId;

/// Renders trace events as a terminal timeline: one line per event, with
/// the time since the run started, the step, the node, and what happened
/// (tokens, cost, latency, retries, cache hits, fallbacks, branches).
/// Subgraph steps are indented under their parent.
///
/// ```
/// use flowtrace_core::trace::Timeline;
/// let mut timeline = Timeline::new();
/// # let events: Vec<flowtrace_core::TraceEvent> = Vec::new();
/// for event in &events {
///     if let Some(line) = timeline.line(event) {
///         println!("{line}");
///     }
/// }
/// ```
#[derive(Debug, Default)]
pub struct Timeline {
    start: Option<Timestamp>,
    nested: HashSet<StepId>,
}

fn us(v: u64) -> String {
    if v >= 1_000_000 {
        format!("{:.2}s", v as f64 / 1e6)
    } else {
        format!("{:.1}ms", v as f64 / 1e3)
    }
}

impl Timeline {
    /// A timeline whose clock starts at the first event it sees.
    pub fn new() -> Self {
        Self::default()
    }

    /// The lines of a live event stream, as the run goes: each event's line
    /// (events it does not show are left out) and a `(missed N events)`
    /// line when the subscriber lagged behind.
    ///
    /// ```no_run
    /// # async fn demo(mut handle: flowtrace_core::RunHandle<flowtrace_core::JsonState>) {
    /// use flowtrace_core::trace::Timeline;
    /// use futures::StreamExt;
    ///
    /// let mut lines = Timeline::new().follow(handle.events());
    /// while let Some(line) = lines.next().await {
    ///     println!("{line}");
    /// }
    /// # }
    /// ```
    pub fn follow(mut self, events: EventStream) -> impl Stream<Item = String> + Send {
        events.filter_map(move |item| {
            let line = match item {
                StreamItem::Event(event) => self.line(&event),
                StreamItem::Lagged { missed } => Some(format!("(missed {missed} events)")),
            };
            std::future::ready(line)
        })
    }

    /// The line for `event`, or `None` for events it does not show.
    pub fn line(&mut self, event: &TraceEvent) -> Option<String> {
        if matches!(event.kind, EventKind::LlmDelta { .. }) {
            // Streamed pieces are summed up by the `llm.response` line.
            return None;
        }
        let start = *self.start.get_or_insert(event.ts);
        let offset = event
            .ts
            .unix_micros()
            .saturating_sub(start.unix_micros())
            .max(0) as u64;
        let depth = match event.parent_step_id {
            Some(p) => {
                self.nested.insert(p);
                2
            }
            None => 0,
        };
        let indent = " ".repeat(depth);
        let step = event.step_id.map(|s| format!("#{s}")).unwrap_or_default();
        let node = event.node.as_ref().map(|n| n.as_str()).unwrap_or("");
        let mut out = format!("{:>10} {step:>4} {indent}", format!("+{}", us(offset)));
        let w = &mut out;
        let _ = match &event.kind {
            EventKind::RunStarted { graph } => match event.parent_step_id {
                Some(parent) => write!(w, "▶ subgraph {graph:?} started (inside step #{parent})"),
                None => write!(w, "▶ run {} started (graph {graph:?})", event.run_id),
            },
            EventKind::RunFinished {
                status,
                usage,
                cost,
                node_executions,
                elapsed_us,
                error,
            } => {
                let mark = match (status, event.parent_step_id.is_some()) {
                    (RunStatus::Succeeded, false) => "■ run succeeded",
                    (RunStatus::Succeeded, true) => "■ subgraph succeeded",
                    (RunStatus::Failed, false) => "■ run FAILED",
                    (RunStatus::Failed, true) => "■ subgraph FAILED",
                    (RunStatus::Canceled, _) => "■ run canceled",
                    (RunStatus::Interrupted, _) => "⏸ run interrupted",
                    (RunStatus::Halted, _) => "■ run halted",
                };
                let r = write!(
                    w,
                    "{mark}: {node_executions} node executions, {} in / {} out tokens, {cost}, {}",
                    usage.input_tokens,
                    usage.output_tokens,
                    us(*elapsed_us)
                );
                if let Some(e) = error {
                    let _ = write!(w, " — {e}");
                }
                r
            }
            EventKind::StepStarted { input } => match input {
                Some(i) => write!(w, "┌ {node} started with input {i}"),
                None => write!(w, "┌ {node} started"),
            },
            EventKind::StepFinished {
                status,
                attempts,
                latency_us,
                usage,
                cost,
                error,
            } => {
                let mark = match status {
                    StepStatus::Succeeded => "└ ✓",
                    StepStatus::Failed => "└ ✗",
                    StepStatus::Canceled => "└ ⊘",
                    StepStatus::Skipped => "└ ⤼",
                    StepStatus::Interrupted => "└ ⏸",
                };
                let mut r = write!(w, "{mark} {node} in {}", us(*latency_us));
                if *attempts > 1 {
                    r = write!(w, " after {attempts} attempts");
                }
                if !usage.is_zero() || !cost.is_zero() {
                    r = write!(
                        w,
                        " · {} in / {} out tokens · {cost}",
                        usage.input_tokens, usage.output_tokens
                    );
                }
                if let Some(e) = error {
                    r = write!(w, " — {e}");
                }
                r
            }
            EventKind::StepSkipped { reason } => write!(w, "⤼ {node} skipped: {reason}"),
            EventKind::Route { branch, targets } => {
                write!(
                    w,
                    "→ {node} chose branch {branch:?} → {}",
                    targets.join(", ")
                )
            }
            EventKind::LlmRequest {
                provider,
                model,
                estimated_input_tokens,
                estimated_cost,
                ..
            } => write!(
                w,
                "│ llm {provider}/{model} request (~{estimated_input_tokens} prompt tokens, at most {estimated_cost})"
            ),
            EventKind::LlmDelta { text } => write!(w, "│ … {text}"),
            EventKind::LlmResponse {
                provider,
                model,
                usage,
                cost,
                latency_us,
                ..
            } => write!(
                w,
                "│ llm {provider}/{model} replied: {} in / {} out tokens, {cost}, {}",
                usage.input_tokens,
                usage.output_tokens,
                us(*latency_us)
            ),
            EventKind::ToolRequest { tool, arguments } => write!(w, "│ tool {tool}({arguments})"),
            EventKind::ToolResponse {
                tool,
                error,
                latency_us,
                cache,
                ..
            } => match (error, cache) {
                (Some(e), _) => write!(w, "│ tool {tool} failed in {}: {e}", us(*latency_us)),
                (None, Some(CacheOutcome::Hit)) => {
                    write!(
                        w,
                        "│ tool {tool} answered from cache in {}",
                        us(*latency_us)
                    )
                }
                (None, _) => write!(w, "│ tool {tool} returned in {}", us(*latency_us)),
            },
            EventKind::ToolDenied { tool, reason } => write!(w, "│ tool {tool} denied: {reason}"),
            EventKind::AgentLoop {
                agent,
                tool,
                repeats,
                ..
            } => write!(
                w,
                "⛔ agent {agent} stopped: {tool} called {repeats} times with the same arguments"
            ),
            EventKind::AgentFallback {
                capability,
                from_agent,
                to_agent,
                reason,
            } => write!(
                w,
                "↪ agent fallback for {capability}: {from_agent} → {to_agent} ({reason})"
            ),
            EventKind::Handover {
                reason,
                required_skills,
                ..
            } => {
                if required_skills.is_empty() {
                    write!(w, "☎ handed over to a human: {reason}")
                } else {
                    write!(
                        w,
                        "☎ handed over to a human: {reason} (skills: {})",
                        required_skills.join(", ")
                    )
                }
            }
            EventKind::Log { level, message } => {
                let l = match level {
                    LogLevel::Debug => "debug",
                    LogLevel::Info => "info",
                    LogLevel::Warn => "WARN",
                    LogLevel::Error => "ERROR",
                };
                write!(w, "│ [{l}] {message}")
            }
            EventKind::Retry {
                failed_attempt,
                delay_ms,
                error,
            } => write!(
                w,
                "│ ↻ {node} attempt {failed_attempt} failed ({error}); retrying in {delay_ms}ms"
            ),
            EventKind::CacheHit {
                provider,
                model,
                saved_cost,
                ..
            } => write!(
                w,
                "│ ⚡ cache hit for {provider}/{model}, saved {saved_cost}"
            ),
            EventKind::ModelRoute {
                profile,
                provider,
                model,
                reason,
                ..
            } => write!(
                w,
                "│ ⤳ {profile} profile chose {provider}/{model} ({reason})"
            ),
            EventKind::Fallback {
                from_provider,
                from_model,
                to_provider,
                to_model,
                reason,
            } => write!(
                w,
                "│ ⇢ fallback {from_provider}/{from_model} → {to_provider}/{to_model} ({reason})"
            ),
            EventKind::Interrupt { payload } => write!(w, "⏸ interrupted: {payload}"),
            EventKind::Resume { payload } => write!(w, "⏵ resumed with {payload}"),
            EventKind::BudgetExceeded {
                limit,
                limit_value,
                observed,
                ..
            } => write!(
                w,
                "⛔ budget exceeded: {limit} is {limit_value}, observed {observed}"
            ),
            EventKind::Error {
                error_kind,
                message,
            } => write!(w, "✗ {error_kind}: {message}"),
        };
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{NodeId, RunId};

    #[test]
    fn renders_offsets_and_nesting() {
        let mut t = Timeline::new();
        let ev = |us: i64, parent: Option<u64>, kind| TraceEvent {
            ts: Timestamp::from_unix_micros(1_000_000 + us),
            run_id: RunId::new("r"),
            step_id: Some(StepId(2)),
            parent_step_id: parent.map(StepId),
            node: Some(NodeId::new("summarize")),
            attempt: 1,
            kind,
        };
        let a = t
            .line(&ev(0, None, EventKind::StepStarted { input: None }))
            .unwrap();
        assert!(
            a.contains("+0.0ms") && a.contains("┌ summarize started"),
            "{a}"
        );
        let b = t
            .line(&ev(
                1500,
                Some(1),
                EventKind::Retry {
                    failed_attempt: 1,
                    delay_ms: 100,
                    error: "rate limited".into(),
                },
            ))
            .unwrap();
        assert!(
            b.contains("+1.5ms") && b.contains("  │ ↻ summarize attempt 1 failed"),
            "{b}"
        );
    }
}
