//! Attribute values built from events: content (opt-in, size-limited),
//! finish reasons, token counts and timestamps.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flowtrace_core::model::{ChatRequest, FinishReason};
use flowtrace_core::trace::Timestamp;
use opentelemetry::{Array, KeyValue, StringValue, Value};

use crate::semconv;

/// The longest error message written into a span status or an
/// `exception` event, in bytes; longer ones are cut.
pub const MAX_ERROR_BYTES: usize = 2 * 1024;

/// An event's timestamp as a `SystemTime`.
pub(crate) fn system_time(ts: Timestamp) -> SystemTime {
    let micros = ts.unix_micros();
    if micros >= 0 {
        UNIX_EPOCH + Duration::from_micros(micros.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_micros(micros.unsigned_abs())
    }
}

/// A count as an OTel integer (saturating).
pub(crate) fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The convention's name of a finish reason (`stop`, `length`, …).
pub(crate) fn finish_reason(r: &FinishReason) -> StringValue {
    match r {
        FinishReason::Stop => "stop".into(),
        FinishReason::Length => "length".into(),
        FinishReason::ToolCalls => "tool_calls".into(),
        FinishReason::ContentFilter => "content_filter".into(),
        FinishReason::Other(s) => s.clone().into(),
    }
}

/// `[reason]` as a string-array attribute.
pub(crate) fn finish_reasons(r: &FinishReason) -> KeyValue {
    KeyValue::new(
        semconv::GEN_AI_RESPONSE_FINISH_REASONS,
        Value::Array(Array::String(vec![finish_reason(r)])),
    )
}

/// `s` cut to at most `limit` bytes on a character boundary; whether it was cut.
pub(crate) fn truncate(mut s: String, limit: usize) -> (String, bool) {
    if s.len() <= limit {
        return (s, false);
    }
    let mut at = limit;
    while at > 0 && !s.is_char_boundary(at) {
        at -= 1;
    }
    s.truncate(at);
    (s, true)
}

/// An error message for a status or an event, cut at [`MAX_ERROR_BYTES`].
pub(crate) fn error_text(message: &str) -> String {
    if message.len() <= MAX_ERROR_BYTES {
        return message.to_string();
    }
    truncate(message.to_string(), MAX_ERROR_BYTES).0
}

/// Pushes `key` = the JSON `text` (cut at `limit`) onto `attrs`, with the
/// truncation marker when cut.
pub(crate) fn push_content(
    attrs: &mut Vec<KeyValue>,
    key: &'static str,
    text: String,
    limit: usize,
) {
    let (text, cut) = truncate(text, limit);
    attrs.push(KeyValue::new(key, text));
    if cut {
        attrs.push(KeyValue::new(semconv::FLOWTRACE_CONTENT_TRUNCATED, true));
    }
}

/// The request's system prompt and messages as a JSON array of
/// `{"role", "content"}` objects (tool calls included).
pub(crate) fn input_messages(request: &ChatRequest) -> String {
    let mut out = Vec::with_capacity(request.messages.as_slice().len() + 1);
    if let Some(system) = &request.system {
        out.push(serde_json::json!({"role": "system", "content": system}));
    }
    for m in request.messages.as_slice() {
        let mut v = serde_json::json!({"role": m.role, "content": m.content});
        if !m.tool_calls.is_empty()
            && let Some(obj) = v.as_object_mut()
        {
            obj.insert(
                "tool_calls".into(),
                serde_json::to_value(&m.tool_calls).unwrap_or_default(),
            );
        }
        out.push(v);
    }
    serde_json::Value::Array(out).to_string()
}

/// The reply as a JSON array of one assistant message.
pub(crate) fn output_messages(
    text: &str,
    tool_calls: &[flowtrace_core::model::ToolCall],
    reason: &FinishReason,
) -> String {
    let mut v = serde_json::json!({
        "role": "assistant",
        "content": text,
        "finish_reason": finish_reason(reason).as_str(),
    });
    if !tool_calls.is_empty()
        && let Some(obj) = v.as_object_mut()
    {
        obj.insert(
            "tool_calls".into(),
            serde_json::to_value(tool_calls).unwrap_or_default(),
        );
    }
    serde_json::Value::Array(vec![v]).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries() {
        let (s, cut) = truncate("héllo".to_string(), 2);
        assert_eq!((s.as_str(), cut), ("h", true));
        let (s, cut) = truncate("abc".to_string(), 3);
        assert_eq!((s.as_str(), cut), ("abc", false));
    }

    #[test]
    fn timestamps_convert_both_sides_of_the_epoch() {
        assert_eq!(
            system_time(Timestamp::from_unix_micros(1_500_000)),
            UNIX_EPOCH + Duration::from_micros(1_500_000)
        );
        assert_eq!(
            system_time(Timestamp::from_unix_micros(-1)),
            UNIX_EPOCH - Duration::from_micros(1)
        );
    }
}
