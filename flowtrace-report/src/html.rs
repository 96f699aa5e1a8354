//! Writing values as escaped HTML: event descriptions, facts, blocks,
//! durations and statuses.

use super::*;

pub(super) fn raw_events(out: &mut String, events: &[&TraceEvent]) {
    let mut text = String::new();
    let mut deltas = 0usize;
    for ev in events {
        if matches!(ev.kind, EventKind::LlmDelta { .. }) {
            deltas += 1;
            continue;
        }
        if text.len() > MAX_TEXT {
            break;
        }
        text.push_str(&serde_json::to_string_pretty(ev).unwrap_or_default());
        text.push('\n');
    }
    if deltas > 0 {
        let _ = writeln!(
            text,
            "({deltas} llm.delta events folded: the reply is in llm.response)"
        );
    }
    let _ = write!(out, "<pre class=\"json\">{}</pre>", esc(&clip(&text)));
}

pub(super) fn describe(ev: &TraceEvent) -> String {
    match &ev.kind {
        EventKind::StepStarted { .. } => format!("attempt {}", ev.attempt.max(1)),
        EventKind::StepFinished {
            status,
            attempts,
            error,
            ..
        } => {
            let mut s = format!("{} after {attempts} attempt(s)", step_status(*status));
            if let Some(e) = error {
                let _ = write!(s, ": {e}");
            }
            s
        }
        EventKind::StepSkipped { reason } => reason.clone(),
        EventKind::Route { branch, targets } => format!("{branch} → {}", targets.join(", ")),
        EventKind::LlmRequest {
            provider, model, ..
        } => format!("{provider}/{model}"),
        EventKind::LlmResponse {
            provider,
            model,
            usage,
            cost,
            ..
        } => format!("{provider}/{model} · {} · {cost}", tokens(usage)),
        EventKind::ToolRequest { tool, .. } => tool.clone(),
        EventKind::ToolResponse { tool, error, .. } => match error {
            Some(e) => format!("{tool} failed: {e}"),
            None => format!("{tool} ok"),
        },
        EventKind::Log { level, message } => format!("{level:?}: {message}"),
        EventKind::Retry {
            failed_attempt,
            delay_ms,
            error,
        } => format!("attempt {failed_attempt} failed ({error}); retry in {delay_ms} ms"),
        EventKind::CacheHit {
            provider,
            model,
            saved_cost,
            ..
        } => format!("{provider}/{model}, saved {saved_cost}"),
        EventKind::ModelRoute {
            profile,
            provider,
            model,
            reason,
            ..
        } => format!("{profile} → {provider}/{model} ({reason})"),
        EventKind::Fallback {
            from_provider,
            from_model,
            to_provider,
            to_model,
            reason,
        } => format!("{from_provider}/{from_model} → {to_provider}/{to_model} ({reason})"),
        EventKind::BudgetExceeded {
            limit,
            limit_value,
            observed,
            ..
        } => format!("{limit}: {observed} over {limit_value}"),
        EventKind::Error {
            error_kind,
            message,
        } => format!("{error_kind}: {message}"),
        EventKind::RunFinished { status, .. } => run_status(*status).to_string(),
        _ => String::new(),
    }
}

pub(super) fn kind_class(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Retry { .. } => "retry",
        EventKind::Fallback { .. } => "fallback",
        EventKind::CacheHit { .. } => "cache",
        EventKind::Error { .. } | EventKind::BudgetExceeded { .. } => "error",
        _ => "",
    }
}

pub(super) fn fact(out: &mut String, name: &str, value: &str) {
    let _ = write!(
        out,
        "<div><dt>{}</dt><dd data-fact=\"{}\">{}</dd></div>",
        esc(name),
        esc(name),
        esc(&clip(value))
    );
}

pub(super) fn block(out: &mut String, label: &str, text: &str) {
    let _ = write!(
        out,
        "<figure class=\"block\"><figcaption>{}</figcaption><pre>{}</pre></figure>",
        esc(label),
        esc(&clip(text))
    );
}

pub(super) fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

pub(super) fn text_or_json(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => pretty(other),
    }
}

pub(super) fn tokens(u: &TokenUsage) -> String {
    let mut s = format!("{} in · {} out", u.input_tokens, u.output_tokens);
    if u.cached_input_tokens > 0 {
        let _ = write!(s, " ({} cached)", u.cached_input_tokens);
    }
    s
}

pub(super) fn clip(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_TEXT {
        return text.into();
    }
    let mut cut = MAX_TEXT;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}\n… ({} more bytes not shown)",
        &text[..cut],
        text.len() - cut
    )
    .into()
}

pub(super) fn micros(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

pub(super) fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `850 µs`, `12.3 ms`, `1.25 s`.
pub(super) fn duration(us: i64) -> String {
    let us = us.max(0);
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.1} ms", us as f64 / 1_000.0)
    } else {
        format!("{:.2} s", us as f64 / 1_000_000.0)
    }
}

pub(super) fn run_status(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Canceled => "canceled",
        RunStatus::Interrupted => "interrupted",
        RunStatus::Halted => "halted",
        _ => "unknown",
    }
}

pub(super) fn step_status(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
        StepStatus::Canceled => "canceled",
        StepStatus::Interrupted => "interrupted",
        _ => "unknown",
    }
}

pub(super) fn status_badge(status: &str) -> String {
    format!("<span class=\"badge {status}\">{status}</span>")
}

/// Escapes text for HTML content and quoted attribute values, and makes
/// invisible characters visible: C0 controls other than tab, newline and
/// carriage return as their Unicode control pictures (`␀` for NUL), DEL as
/// `␡`, and C1 controls and the bidirectional formatting characters (which
/// could reorder what the reader sees, "Trojan Source" style) as `\u{…}`
/// text.
pub(super) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            '\0'..='\u{1f}' => {
                out.push(char::from_u32(0x2400 + u32::from(c)).unwrap_or('\u{fffd}'));
            }
            '\u{7f}' => out.push('\u{2421}'),
            c if is_invisible_control(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// C1 controls and the Unicode bidirectional formatting characters:
/// embeddings and overrides (U+202A–U+202E), isolates (U+2066–U+2069), and
/// the implicit marks (U+200E, U+200F, U+061C).
pub(super) fn is_invisible_control(c: char) -> bool {
    matches!(
        c,
        '\u{80}'..='\u{9f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{61c}'
    )
}
