//! A trace sink that keeps what a report shows: every event, with large
//! payloads cut to previews as they are recorded.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flowtrace_core::trace::{EventKind, SinkError, TraceEvent, TraceSink};
use serde_json::Value;

use super::MAX_TEXT;
use crate::size::rendered_len;

/// Records events for an [`HtmlReport`](super::HtmlReport), keeping at
/// most a preview of [`MAX_TEXT`] bytes of each payload (model requests and
/// replies, tool arguments and results, step inputs, logs, interrupt
/// payloads), which is all the report shows: a run that moves large values
/// around does not keep a second copy of them in memory for its report.
///
/// Use it where a [`MemorySink`](flowtrace_core::trace::MemorySink) would
/// collect the events of a report run, then pass
/// [`take_events`](Self::take_events) to
/// [`ReportRun::new`](super::ReportRun::new).
#[derive(Debug, Default, Clone)]
pub struct ReportRecorder {
    events: Arc<Mutex<Vec<TraceEvent>>>,
}

impl ReportRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the events recorded so far (the recorder is left empty).
    pub fn take_events(&self) -> Vec<TraceEvent> {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *events)
    }
}

#[async_trait]
impl TraceSink for ReportRecorder {
    fn name(&self) -> &str {
        "report recorder"
    }

    fn record(&self, event: &TraceEvent) {
        let mut event = event.clone();
        clip_event(&mut event.kind);
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.push(event);
    }

    async fn flush(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Cuts the payloads of `kind` to previews.
fn clip_event(kind: &mut EventKind) {
    match kind {
        EventKind::StepStarted { input: Some(v) }
        | EventKind::ToolRequest { arguments: v, .. }
        | EventKind::ToolResponse {
            output: Some(v), ..
        }
        | EventKind::Interrupt { payload: v }
        | EventKind::Resume { payload: v } => clip_value(v),
        EventKind::LlmRequest { request, .. } => {
            if let Some(system) = &mut request.system {
                clip_string(system);
            }
            for message in &mut request.messages {
                clip_string(&mut message.content);
            }
        }
        EventKind::LlmResponse { text, .. }
        | EventKind::LlmDelta { text }
        | EventKind::Log { message: text, .. }
        | EventKind::Error { message: text, .. } => clip_string(text),
        _ => {}
    }
    if let EventKind::ToolResponse { error: Some(e), .. }
    | EventKind::StepFinished { error: Some(e), .. } = kind
    {
        clip_string(e);
    }
}

/// `value` as it is when at most [`MAX_TEXT`] bytes of compact JSON (a
/// string: of text), otherwise a string previewing its start.
pub fn clip_value(value: &mut Value) {
    if let Value::String(s) = value {
        clip_string(s);
        return;
    }
    if rendered_len(value, MAX_TEXT).is_ok() {
        return;
    }
    let mut text = preview(value, MAX_TEXT);
    text.push_str("\n… (cut: the value is larger than the report shows)");
    *value = Value::String(text);
}

/// `s` cut to [`MAX_TEXT`] bytes (at a character boundary), with a note.
fn clip_string(s: &mut String) {
    if s.len() <= MAX_TEXT {
        return;
    }
    let mut cut = MAX_TEXT;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let more = s.len() - cut;
    s.truncate(cut);
    s.push_str(&format!("\n… ({more} more bytes not recorded)"));
}

/// The start of `value` as compact JSON: about `max` bytes of it, built
/// without writing (or scanning) the rest.
fn preview(value: &Value, max: usize) -> String {
    enum Frame<'v> {
        Array(std::slice::Iter<'v, Value>, bool),
        Object(serde_json::map::Iter<'v>, bool),
    }
    let mut out = String::new();
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut next = Some(value);
    while out.len() < max {
        if let Some(v) = next.take() {
            match v {
                Value::String(s) => push_string(&mut out, s, max),
                Value::Array(items) => {
                    out.push('[');
                    stack.push(Frame::Array(items.iter(), true));
                }
                Value::Object(map) => {
                    out.push('{');
                    stack.push(Frame::Object(map.iter(), true));
                }
                scalar => out.push_str(&scalar.to_string()),
            }
            continue;
        }
        let Some(frame) = stack.last_mut() else {
            break;
        };
        match frame {
            Frame::Array(items, first) => match items.next() {
                Some(item) => {
                    if !std::mem::take(first) {
                        out.push(',');
                    }
                    next = Some(item);
                }
                None => {
                    out.push(']');
                    stack.pop();
                }
            },
            Frame::Object(members, first) => match members.next() {
                Some((key, item)) => {
                    if !std::mem::take(first) {
                        out.push(',');
                    }
                    push_string(&mut out, key, max);
                    out.push(':');
                    next = Some(item);
                }
                None => {
                    out.push('}');
                    stack.pop();
                }
            },
        }
    }
    out
}

/// Appends `s` as a JSON string, escaping at most what fits in `max`.
fn push_string(out: &mut String, s: &str, max: usize) {
    let mut cut = max.saturating_sub(out.len()).min(s.len());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = s.get(..cut).unwrap_or_default();
    out.push_str(&Value::String(head.to_owned()).to_string());
    if cut < s.len() {
        // Reopen the string: the cut shows as an unterminated literal.
        out.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn large_payloads_become_previews() {
        let mut v = json!({"rows": vec!["x".repeat(1000); 200]});
        clip_value(&mut v);
        let text = v.as_str().unwrap();
        assert!(text.len() < MAX_TEXT + 100);
        assert!(text.starts_with("{\"rows\":[\"xxx"));
        let mut v = json!({"a": [1, "b\"c", null, {"d": true}], "big": "y".repeat(200_000)});
        clip_value(&mut v);
        assert!(
            v.as_str()
                .unwrap()
                .starts_with("{\"a\":[1,\"b\\\"c\",null,{\"d\":true}],\"big\":\"yyy"),
            "{v}"
        );
        let mut small = json!({"a": 1});
        clip_value(&mut small);
        assert_eq!(small, json!({"a": 1}));
        let mut s = "é".repeat(MAX_TEXT);
        clip_string(&mut s);
        assert!(s.len() < MAX_TEXT + 100 && s.contains("more bytes not recorded"));
    }
}
