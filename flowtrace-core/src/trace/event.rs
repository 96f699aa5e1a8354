//! Trace events.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::{NodeId, RunId, StepId};
use crate::model::{ChatRequest, FinishReason, ToolCall};
use crate::pricing::{Cost, TokenUsage};

/// A UTC instant with microsecond precision. Serializes as RFC 3339
/// (`2026-11-21T12:00:00.123456Z`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

impl Timestamp {
    /// Microseconds since the Unix epoch.
    pub const fn from_unix_micros(micros: i64) -> Self {
        Timestamp(micros)
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        let micros = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_micros() as i64,
            Err(e) => -(e.duration().as_micros() as i64),
        };
        Timestamp(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn unix_micros(self) -> i64 {
        self.0
    }

    /// `self` plus `micros` microseconds.
    pub const fn plus_micros(self, micros: u64) -> Self {
        Timestamp(self.0.saturating_add(micros as i64))
    }
}

/// Days since 1970-01-01 to a civil (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(1_000_000);
        let micros = self.0.rem_euclid(1_000_000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, mo, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Timestamp {
    type Err = String;
    /// Parses the format [`Display`](fmt::Display) writes (`Z` suffix,
    /// optional fraction of up to 6 digits).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid RFC 3339 UTC timestamp {s:?}");
        let body = s.strip_suffix('Z').ok_or_else(bad)?;
        let (date, time) = body.split_once('T').ok_or_else(bad)?;
        let mut dp = date.splitn(3, '-');
        let y: i64 = dp.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let mo: u32 = dp.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let d: u32 = dp.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let (hms, frac) = match time.split_once('.') {
            Some((a, b)) => (a, b),
            None => (time, ""),
        };
        let mut tp = hms.splitn(3, ':');
        let h: i64 = tp.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let mi: i64 = tp.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        let se: i64 = tp.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
            return Err(bad());
        }
        if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        // Up to 6 digits, right-padded with zeros (no allocation).
        let mut micros: i64 = 0;
        for i in 0..6 {
            let digit = frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
            micros = micros * 10 + digit;
        }
        let days = days_from_civil(y, mo, d);
        Ok(Timestamp(
            ((days * 86_400 + h * 3600 + mi * 60 + se) * 1_000_000) + micros,
        ))
    }
}

impl Timestamp {
    /// The RFC 3339 text written into a fixed buffer, without going through
    /// `core::fmt` (every checkpoint and event serializes timestamps); `None`
    /// outside years 0–9999, which [`Display`](fmt::Display) handles.
    fn rfc3339_bytes(&self) -> Option<[u8; 27]> {
        let secs = self.0.div_euclid(1_000_000);
        let micros = self.0.rem_euclid(1_000_000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, mo, d) = civil_from_days(days);
        if !(0..=9999).contains(&y) {
            return None;
        }
        let mut b = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut v: u64| {
            for i in (0..width).rev() {
                b[at + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, y as u64);
        put(5, 2, mo as u64);
        put(8, 2, d as u64);
        put(11, 2, (sod / 3600) as u64);
        put(14, 2, ((sod / 60) % 60) as u64);
        put(17, 2, (sod % 60) as u64);
        put(20, 6, micros as u64);
        Some(b)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.rfc3339_bytes() {
            // Only ASCII digits and separators were written.
            Some(b) => match std::str::from_utf8(&b) {
                Ok(text) => s.serialize_str(text),
                Err(_) => s.collect_str(self),
            },
            None => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 UTC timestamp")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Text)
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunStatus {
    /// Every scheduled node finished.
    Succeeded,
    /// A node, limit or sink failed.
    Failed,
    /// Canceled from outside.
    Canceled,
    /// Stopped for a human decision; resume the thread to continue.
    Interrupted,
    /// Stopped by a halt request; its checkpoint is kept.
    Halted,
}

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepStatus {
    /// The node returned successfully.
    Succeeded,
    /// The node failed (after its retries).
    Failed,
    /// The node was not run: its branch was not chosen.
    Skipped,
    /// The node was stopped by cancellation, the deadline or a sibling's failure.
    Canceled,
    /// The node asked for a human decision; it runs again on resume.
    Interrupted,
}

/// Severity of a `log` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Diagnostic detail.
    Debug,
    /// Normal information.
    Info,
    /// Something unexpected that did not fail the run.
    Warn,
    /// A failure.
    Error,
}

/// What happened. The serialized `kind` is the dotted name (`step.started`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
#[non_exhaustive]
pub enum EventKind {
    /// A run (or a subgraph run, when `parent_step_id` is set) began.
    #[serde(rename = "run.started")]
    RunStarted {
        /// The graph's name.
        graph: String,
    },
    /// A run ended. Emitted before sinks are flushed.
    #[serde(rename = "run.finished")]
    RunFinished {
        /// How it ended.
        status: RunStatus,
        /// Tokens of all steps.
        usage: TokenUsage,
        /// Cost of all steps.
        cost: Cost,
        /// Node executions.
        node_executions: u64,
        /// Wall time in microseconds.
        elapsed_us: u64,
        /// The failure, when failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A node began (its first attempt).
    #[serde(rename = "step.started")]
    StepStarted {
        /// For dispatched instances: the instance's input.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<serde_json::Value>,
    },
    /// A node ended.
    #[serde(rename = "step.finished")]
    StepFinished {
        /// How it ended.
        status: StepStatus,
        /// Attempts made.
        attempts: u32,
        /// From the first attempt's start to the end, in microseconds.
        latency_us: u64,
        /// Tokens of the step's model calls.
        usage: TokenUsage,
        /// Cost of the step's model calls.
        cost: Cost,
        /// The failure, when failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A node was not run because no active branch led to it.
    #[serde(rename = "step.skipped")]
    StepSkipped {
        /// Why.
        reason: String,
    },
    /// A router chose a branch after a node.
    #[serde(rename = "route")]
    Route {
        /// The label returned by the router.
        branch: String,
        /// The nodes it leads to (`__end__` for the finish).
        targets: Vec<String>,
    },
    /// A model call is about to be sent.
    #[serde(rename = "llm.request")]
    LlmRequest {
        /// The provider.
        provider: String,
        /// The model.
        model: String,
        /// The request (messages, tools, sampling). Never holds credentials.
        request: Box<ChatRequest>,
        /// Estimated prompt tokens.
        estimated_input_tokens: u64,
        /// Estimated worst-case cost.
        estimated_cost: Cost,
    },
    /// A piece of a streamed reply, as it arrived.
    #[serde(rename = "llm.delta")]
    LlmDelta {
        /// The text of this piece.
        text: String,
    },
    /// A model call returned.
    #[serde(rename = "llm.response")]
    LlmResponse {
        /// The provider.
        provider: String,
        /// The model that answered.
        model: String,
        /// The reply's text.
        text: String,
        /// Tool calls requested.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
        /// Tokens as reported by the provider.
        usage: TokenUsage,
        /// Exact cost.
        cost: Cost,
        /// Call latency in microseconds.
        latency_us: u64,
        /// Why the model stopped.
        finish_reason: FinishReason,
    },
    /// A tool call is about to run.
    #[serde(rename = "tool.request")]
    ToolRequest {
        /// The tool.
        tool: String,
        /// Its arguments.
        arguments: serde_json::Value,
    },
    /// A tool call returned.
    #[serde(rename = "tool.response")]
    ToolResponse {
        /// The tool.
        tool: String,
        /// Its output, on success.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<serde_json::Value>,
        /// Its error, on failure.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Latency in microseconds.
        latency_us: u64,
        /// For a tool with a result cache: whether this call was answered
        /// from it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cache: Option<CacheOutcome>,
    },
    /// A tool call was refused before it ran (not granted, or not known).
    #[serde(rename = "tool.denied")]
    ToolDenied {
        /// The tool the model asked for.
        tool: String,
        /// Why it was refused.
        reason: String,
    },
    /// An agent stopped because it repeated the same tool call.
    #[serde(rename = "agent.loop")]
    AgentLoop {
        /// The agent.
        agent: String,
        /// The tool called again and again.
        tool: String,
        /// The repeated arguments.
        arguments: serde_json::Value,
        /// How many times the same call was asked for.
        repeats: u32,
    },
    /// A call moved from one agent to another with the same capability.
    #[serde(rename = "agent.fallback")]
    AgentFallback {
        /// The capability asked for.
        capability: String,
        /// The agent given up on.
        from_agent: String,
        /// The agent used instead.
        to_agent: String,
        /// Why.
        reason: String,
    },
    /// A conversation was handed over to a human.
    #[serde(rename = "handover")]
    Handover {
        /// Why (`low_confidence`, `user_request`, `consecutive_errors`,
        /// `agent_decision`).
        reason: String,
        /// Skills the human needs.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        required_skills: Vec<String>,
        /// What the human needs to know.
        context: serde_json::Value,
    },
    /// A message from a node or the executor.
    #[serde(rename = "log")]
    Log {
        /// Severity.
        level: LogLevel,
        /// Text.
        message: String,
    },
    /// A failed attempt will be retried.
    #[serde(rename = "retry")]
    Retry {
        /// The attempt that failed (1-based).
        failed_attempt: u32,
        /// Delay before the next attempt, in milliseconds.
        delay_ms: u64,
        /// Why it failed.
        error: String,
    },
    /// A model call was answered from the cache.
    #[serde(rename = "cache.hit")]
    CacheHit {
        /// The provider.
        provider: String,
        /// The model.
        model: String,
        /// What the call would have cost.
        saved_cost: Cost,
        /// The tokens it would have used.
        saved_usage: TokenUsage,
    },
    /// A model router chose a candidate for a call.
    #[serde(rename = "model.route")]
    ModelRoute {
        /// The routing profile (`fast`, `balanced`, `powerful`, or a user's).
        profile: String,
        /// The chosen provider.
        provider: String,
        /// The chosen model.
        model: String,
        /// Why it was chosen.
        reason: String,
        /// Candidates passed over, each with the reason.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        skipped: Vec<String>,
    },
    /// A call moved from one provider/model to the next.
    #[serde(rename = "fallback")]
    Fallback {
        /// The provider given up on.
        from_provider: String,
        /// The model given up on.
        from_model: String,
        /// The provider tried next.
        to_provider: String,
        /// The model tried next.
        to_model: String,
        /// Why.
        reason: String,
    },
    /// The run paused for a human.
    #[serde(rename = "interrupt")]
    Interrupt {
        /// What the human is asked.
        payload: serde_json::Value,
    },
    /// The run continued after an interrupt.
    #[serde(rename = "resume")]
    Resume {
        /// The human's answer.
        payload: serde_json::Value,
    },
    /// A budget limit was reached.
    #[serde(rename = "budget.exceeded")]
    BudgetExceeded {
        /// The limit's name (`max_cost`, …).
        limit: String,
        /// The limit's value.
        limit_value: String,
        /// The observed value.
        observed: String,
        /// Whether the work was refused before it ran.
        refused_before_run: bool,
    },
    /// Something failed.
    #[serde(rename = "error")]
    Error {
        /// A stable name of the failure kind.
        error_kind: String,
        /// The message.
        message: String,
    },
}

impl EventKind {
    /// The dotted name, as serialized (`step.started`, `llm.response`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Self::RunStarted { .. } => "run.started",
            Self::RunFinished { .. } => "run.finished",
            Self::StepStarted { .. } => "step.started",
            Self::StepFinished { .. } => "step.finished",
            Self::StepSkipped { .. } => "step.skipped",
            Self::Route { .. } => "route",
            Self::LlmRequest { .. } => "llm.request",
            Self::LlmDelta { .. } => "llm.delta",
            Self::LlmResponse { .. } => "llm.response",
            Self::ToolRequest { .. } => "tool.request",
            Self::ToolResponse { .. } => "tool.response",
            Self::ToolDenied { .. } => "tool.denied",
            Self::AgentLoop { .. } => "agent.loop",
            Self::AgentFallback { .. } => "agent.fallback",
            Self::Handover { .. } => "handover",
            Self::Log { .. } => "log",
            Self::Retry { .. } => "retry",
            Self::CacheHit { .. } => "cache.hit",
            Self::ModelRoute { .. } => "model.route",
            Self::Fallback { .. } => "fallback",
            Self::Interrupt { .. } => "interrupt",
            Self::Resume { .. } => "resume",
            Self::BudgetExceeded { .. } => "budget.exceeded",
            Self::Error { .. } => "error",
        }
    }
}

/// Whether a cached call was answered from the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CacheOutcome {
    /// Answered from the cache; the call was not made.
    Hit,
    /// Not in the cache; the call was made (and its result kept).
    Miss,
}

/// One trace event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TraceEvent {
    /// When it happened (UTC, microseconds).
    pub ts: Timestamp,
    /// The run.
    pub run_id: RunId,
    /// The step, for step-scoped events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_id: Option<StepId>,
    /// For events of a subgraph: the parent graph's step that runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_step_id: Option<StepId>,
    /// The node, for step-scoped events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeId>,
    /// The attempt (1-based) for step-scoped events, 0 otherwise.
    #[serde(default)]
    pub attempt: u32,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl TraceEvent {
    /// The event as one line of JSON (no trailing newline).
    pub fn to_json_line(&self) -> String {
        // Serializing plain data into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_and_parse() {
        let t = Timestamp::from_unix_micros(1_795_000_000_123_456);
        let s = t.to_string();
        assert_eq!(s, "2026-11-18T11:06:40.123456Z");
        assert_eq!(s.parse::<Timestamp>().unwrap(), t);
        assert_eq!(
            Timestamp::from_unix_micros(0).to_string(),
            "1970-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            "2000-02-29T23:59:59Z"
                .parse::<Timestamp>()
                .unwrap()
                .to_string(),
            "2000-02-29T23:59:59.000000Z"
        );
        assert!("yesterday".parse::<Timestamp>().is_err());
    }

    #[test]
    fn events_serialize_with_dotted_kind() {
        let ev = TraceEvent {
            ts: Timestamp::from_unix_micros(0),
            run_id: RunId::new("r1"),
            step_id: Some(StepId(3)),
            parent_step_id: None,
            node: Some(NodeId::new("summarize")),
            attempt: 1,
            kind: EventKind::StepStarted { input: None },
        };
        let line = ev.to_json_line();
        assert_eq!(
            line,
            r#"{"ts":"1970-01-01T00:00:00.000000Z","run_id":"r1","step_id":3,"node":"summarize","attempt":1,"kind":"step.started"}"#
        );
        let back: TraceEvent = serde_json::from_str(&line).unwrap();
        assert_eq!(back, ev);
        assert_eq!(back.kind.name(), "step.started");
    }

    proptest::proptest! {
        /// The fast serializer writes exactly what `Display` writes, and
        /// the visitor reads it back, across years 0-9999.
        #[test]
        fn timestamps_serialize_like_display_and_round_trip(
            micros in -62_167_219_200_000_000i64..253_402_300_799_999_999i64
        ) {
            let t = Timestamp(micros);
            let json = serde_json::to_string(&t).unwrap();
            proptest::prop_assert_eq!(&json, &format!("\"{t}\""));
            let back: Timestamp = serde_json::from_str(&json).unwrap();
            proptest::prop_assert_eq!(back, t);
        }
    }
}
