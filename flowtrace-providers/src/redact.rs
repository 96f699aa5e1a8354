//! Redaction of a client's credentials from text built from responses.
//!
//! A server may echo request headers back — in an error body, a proxy's
//! diagnostic page, or even in "generated" text. Every string a client
//! builds from a response (error messages, reply text, tool call arguments,
//! streamed deltas) goes through a [`Redactor`] holding the credentials the
//! client sends, which replaces each with [`REDACTED`].

use std::borrow::Cow;
use std::sync::Arc;

use flowtrace_core::ChatResponse;
use serde_json::Value;

/// What a credential is replaced with.
pub(crate) const REDACTED: &str = "[redacted]";

/// Credentials shorter than this are not redacted: they would match
/// ordinary text, and are no secret worth the name.
const MIN_SECRET_LEN: usize = 4;

/// The credentials a client sends, to replace in text built from responses.
#[derive(Clone, Debug, Default)]
pub(crate) struct Redactor {
    /// Longest first, so a credential containing another is replaced whole.
    secrets: Vec<Arc<str>>,
}

impl Redactor {
    /// A redactor of `secrets` (short and empty ones are ignored).
    pub(crate) fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut secrets: Vec<Arc<str>> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .map(Arc::from)
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Self { secrets }
    }

    /// `text` with every credential replaced by [`REDACTED`].
    pub(crate) fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut out = Cow::Borrowed(text);
        for secret in &self.secrets {
            if out.contains(&**secret) {
                out = Cow::Owned(out.replace(&**secret, REDACTED));
            }
        }
        out
    }

    /// Replaces, in place, every credential in `text`.
    fn redact_in_place(&self, text: &mut String) {
        if let Cow::Owned(clean) = self.redact(text) {
            *text = clean;
        }
    }

    /// Redacts every string of a reply: its text, model name and tool calls
    /// (ids, names, and the strings anywhere in their arguments).
    pub(crate) fn redact_response(&self, response: &mut ChatResponse) {
        if self.secrets.is_empty() {
            return;
        }
        self.redact_in_place(&mut response.text);
        self.redact_in_place(&mut response.model);
        for call in &mut response.tool_calls {
            self.redact_in_place(&mut call.id);
            self.redact_in_place(&mut call.name);
            self.redact_value(&mut call.arguments);
        }
    }

    fn redact_value(&self, value: &mut Value) {
        match value {
            Value::String(s) => self.redact_in_place(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_value(v)),
            Value::Object(map) => {
                if map.keys().any(|k| matches!(self.redact(k), Cow::Owned(_))) {
                    *map = std::mem::take(map)
                        .into_iter()
                        .map(|(k, mut v)| {
                            self.redact_value(&mut v);
                            (self.redact(&k).into_owned(), v)
                        })
                        .collect();
                } else {
                    map.values_mut().for_each(|v| self.redact_value(v));
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    /// A redactor of streamed text, which may cut a credential across
    /// deltas.
    pub(crate) fn stream(&self) -> StreamRedactor {
        StreamRedactor {
            redactor: self.clone(),
            held: String::new(),
        }
    }
}

/// Redacts a stream of text deltas: a delta ending with what may be the
/// start of a credential is held back until the next one says.
///
/// The deltas it lets out, followed by [`finish`](Self::finish), add up to
/// the whole text redacted at once.
#[derive(Debug)]
pub(crate) struct StreamRedactor {
    redactor: Redactor,
    held: String,
}

impl StreamRedactor {
    /// Takes the next delta; returns the text that is safe to pass on, if
    /// any.
    pub(crate) fn push(&mut self, delta: &str) -> Option<String> {
        if self.redactor.secrets.is_empty() {
            return (!delta.is_empty()).then(|| delta.to_string());
        }
        self.held.push_str(delta);
        self.redactor.redact_in_place(&mut self.held);
        let keep = self.unfinished_secret_len();
        let cut = self.held.len() - keep;
        let rest = self.held.split_off(cut);
        let out = std::mem::replace(&mut self.held, rest);
        (!out.is_empty()).then_some(out)
    }

    /// The end of the stream: the text still held back, if any (it was no
    /// credential after all).
    pub(crate) fn finish(&mut self) -> Option<String> {
        let out = std::mem::take(&mut self.held);
        (!out.is_empty()).then_some(out)
    }

    /// The length of the longest end of the held text that starts some
    /// credential without completing it.
    fn unfinished_secret_len(&self) -> usize {
        let held = self.held.as_str();
        let longest = self
            .redactor
            .secrets
            .iter()
            .map(|s| s.len() - 1)
            .max()
            .unwrap_or(0)
            .min(held.len());
        (1..=longest)
            .rev()
            .find(|&n| {
                let start = held.len() - n;
                held.is_char_boundary(start)
                    && self
                        .redactor
                        .secrets
                        .iter()
                        .any(|s| s.len() > n && s.starts_with(&held[start..]))
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use flowtrace_core::TokenUsage;
    use flowtrace_core::model::ToolCall;
    use serde_json::json;

    const KEY: &str = "sk-secret-123456";

    #[test]
    fn credentials_are_replaced_longest_first() {
        let r = Redactor::new([KEY, "sk-secret", "", "abc"]);
        assert_eq!(
            r.redact("bad key sk-secret-123456 given"),
            "bad key [redacted] given"
        );
        assert_eq!(r.redact("sk-secret-12"), "[redacted]-12");
        assert_eq!(
            r.redact("abc is too short to redact"),
            "abc is too short to redact"
        );
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn every_string_of_a_reply_is_redacted() {
        let r = Redactor::new([KEY]);
        let mut response = ChatResponse::text(KEY, format!("echo {KEY}"), TokenUsage::new(1, 1));
        response.tool_calls.push(ToolCall {
            id: KEY.into(),
            name: "t".into(),
            arguments: json!({"a": [KEY, 1, {KEY: KEY}], "b": null}),
        });
        r.redact_response(&mut response);
        assert_eq!(response.text, "echo [redacted]");
        assert_eq!(response.model, REDACTED);
        assert_eq!(response.tool_calls[0].id, REDACTED);
        assert_eq!(
            response.tool_calls[0].arguments,
            json!({"a": [REDACTED, 1, {REDACTED: REDACTED}], "b": null})
        );
    }

    /// Every way of cutting a text into deltas lets out the same redacted
    /// text, and never a piece of the key.
    #[test]
    fn a_key_cut_across_deltas_is_redacted() {
        let r = Redactor::new([KEY]);
        let text = format!("a sk-s {KEY}{KEY} é sk-secret-1234");
        let whole = r.redact(&text).into_owned();
        assert_eq!(whole, "a sk-s [redacted][redacted] é sk-secret-1234");
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        for step in 1..=text.len() {
            let mut stream = r.stream();
            let mut out = String::new();
            let mut start = 0;
            for chunk in chars.chunks(step) {
                let end = chunk.last().map_or(start, |(i, c)| i + c.len_utf8());
                if let Some(piece) = stream.push(&text[start..end]) {
                    assert!(!piece.contains("sk-secret-12345"), "{piece}");
                    out.push_str(&piece);
                }
                start = end;
            }
            out.extend(stream.finish());
            assert_eq!(out, whole, "deltas of {step} characters");
        }
    }

    #[test]
    fn without_credentials_deltas_pass_through() {
        let mut stream = Redactor::new([""]).stream();
        assert_eq!(stream.push("sk-"), Some("sk-".to_string()));
        assert_eq!(stream.push(""), None);
        assert_eq!(stream.finish(), None);
    }
}
