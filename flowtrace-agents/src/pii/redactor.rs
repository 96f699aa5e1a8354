//! The event redactor: personal data masked or tokenized, credentials
//! always removed.

use std::sync::Arc;

use serde_json::Value;

use flowtrace_core::model::{ChatRequest, Message, ResponseFormat, ToolChoice};
use flowtrace_core::trace::{EventKind, EventRedactor, LogLevel, TraceEvent};

use super::credentials::{CREDENTIAL_MASK, is_credential_key};
use super::detect::{Detector, PiiKind, PiiMatch};
use super::error::PiiError;
use super::vault::Vault;

/// The longest string scanned, in bytes. A longer string is cut to this
/// length (at a character boundary, including [`TRUNCATION_MARKER`], which
/// is appended) and the kept part scanned in full: the redactor runs on
/// the executor's task for every event and must stay quick. The cut part
/// never reaches a sink. A value straddling the cut may leave a fragment
/// (say, the first 12 digits of a card).
pub const MAX_SCANNED_STRING_BYTES: usize = 1 << 20;
/// Appended to a string cut at [`MAX_SCANNED_STRING_BYTES`].
pub const TRUNCATION_MARKER: &str = "…[TRUNCATED_BY_REDACTOR]";

/// What to do with personal data. Credentials are removed in every mode.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum RedactionMode {
    /// Leave personal data; only remove credentials.
    Off,
    /// Replace each piece with its kind's mask (`[REDACTED_EMAIL]`,
    /// `[REDACTED_PHONE]`, `[REDACTED_SSN]`, `[REDACTED_CARD]`).
    #[default]
    Mask,
    /// Replace each piece with a stable token (`[EMAIL_1]`) that the
    /// host can [reveal](Vault::reveal) through the vault. Use one vault
    /// per run.
    Tokenize(Arc<Vault>),
}

/// An [`EventRedactor`] removing personal data (emails, phone numbers,
/// SSN-like numbers, card numbers) and credentials (API keys, auth headers,
/// passwords, tokens, cookies) from every string of every event: the
/// known event kinds field by field, and any other kind through a serde
/// round trip. Install it per run with
/// [`RunConfig::redactor`](flowtrace_core::RunConfig::redactor); sinks and
/// live subscribers then only ever see redacted events.
///
/// Credentials are removed in every mode, [`RedactionMode::Off`]
/// included: values under keys such as `authorization`, `x-api-key`,
/// `api_key`, `password`, `secret`, `token` or `cookie` (see
/// [`CREDENTIAL_KEYS`](super::CREDENTIAL_KEYS)), and text that looks like
/// `Bearer …`, `sk-…`/`sk-ant-…` keys or `password=…`.
///
/// Streamed `llm.delta` pieces are redacted one by one, so a value split
/// across two pieces can slip through in them; the `llm.response` event
/// carries the whole text, redacted. Drop `llm.delta` events from sinks
/// that must never hold personal data.
///
/// ```
/// use std::sync::Arc;
/// use flowtrace_agents::pii::{PiiRedactor, RedactionMode, Vault};
/// let masked = PiiRedactor::new(RedactionMode::Mask).unwrap();
/// assert_eq!(
///     masked.redact_text("mail ana@example.com, key sk-ant-0123456789abcdefXYZ"),
///     "mail [REDACTED_EMAIL], key [REDACTED_CREDENTIAL]"
/// );
/// let vault = Arc::new(Vault::new());
/// let tokens = PiiRedactor::new(RedactionMode::Tokenize(vault.clone())).unwrap();
/// assert_eq!(tokens.redact_text("call 555-123-4567"), "call [PHONE_1]");
/// assert_eq!(vault.reveal("[PHONE_1]").as_deref(), Some("555-123-4567"));
/// ```
#[derive(Clone, Debug)]
pub struct PiiRedactor {
    detector: Detector,
    mode: RedactionMode,
    kinds: [bool; 4],
}

/// A span to replace: personal data of a kind, or a credential.
#[derive(Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    kind: Option<PiiKind>,
}

impl PiiRedactor {
    /// A redactor in `mode`, detecting every [`PiiKind`].
    pub fn new(mode: RedactionMode) -> Result<Self, PiiError> {
        Ok(Self {
            detector: Detector::new()?,
            mode,
            kinds: [true; 4],
        })
    }

    /// Stops detecting `kind` (credentials are always removed).
    #[must_use]
    pub fn without(mut self, kind: PiiKind) -> Self {
        self.kinds[kind.index()] = false;
        self
    }

    /// The mode.
    pub fn mode(&self) -> &RedactionMode {
        &self.mode
    }

    /// `text` redacted.
    pub fn redact_text(&self, text: &str) -> String {
        self.rewrite(text).unwrap_or_else(|| text.to_owned())
    }

    /// Redacts `s` in place; whether it changed.
    pub fn redact_string(&self, s: &mut String) -> bool {
        match self.rewrite(s) {
            Some(new) => {
                *s = new;
                true
            }
            None => false,
        }
    }

    /// Whether `text` may need rewriting (the cheap first pass).
    fn may_need(&self, text: &str) -> bool {
        text.len() > MAX_SCANNED_STRING_BYTES || self.detector.patterns().any.is_match(text)
    }

    /// The redacted text, or `None` when it is unchanged.
    fn rewrite(&self, text: &str) -> Option<String> {
        let truncated = text.len() > MAX_SCANNED_STRING_BYTES;
        let text = if truncated {
            cut_for_marker(text)
        } else {
            text
        };
        // Masks and tokens may be longer than what they replace: the result
        // is cut again so it never exceeds the limit (and a second pass
        // changes nothing).
        let finish = |mut out: String| {
            if truncated {
                out.push_str(TRUNCATION_MARKER);
            }
            if out.len() > MAX_SCANNED_STRING_BYTES {
                let cut = cut_for_marker(&out).len();
                out.truncate(cut);
                out.push_str(TRUNCATION_MARKER);
            }
            Some(out)
        };
        let patterns = self.detector.patterns();
        if !patterns.any.is_match(text) {
            return if truncated {
                finish(text.to_owned())
            } else {
                None
            };
        }
        let mut credentials = Vec::new();
        patterns.credentials.find_into(text, &mut credentials);
        let mut spans: Vec<Span> = credentials
            .into_iter()
            .map(|(start, end)| Span {
                start,
                end,
                kind: None,
            })
            .collect();
        if !matches!(self.mode, RedactionMode::Off) {
            let mut pii: Vec<PiiMatch> = Vec::new();
            self.detector.find_into(text, &mut pii);
            spans.extend(
                pii.into_iter()
                    .filter(|m| self.kinds[m.kind.index()])
                    .map(|m| Span {
                        start: m.start,
                        end: m.end,
                        kind: Some(m.kind),
                    }),
            );
        }
        if spans.is_empty() {
            return if truncated {
                finish(text.to_owned())
            } else {
                None
            };
        }
        // By start; at one start the longest, then credentials first.
        spans.sort_by(|a, b| {
            a.start
                .cmp(&b.start)
                .then(b.end.cmp(&a.end))
                .then(a.kind.is_some().cmp(&b.kind.is_some()))
        });
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for span in spans {
            if span.start < at {
                continue;
            }
            out.push_str(&text[at..span.start]);
            let value = &text[span.start..span.end];
            match (span.kind, &self.mode) {
                (None, _) => out.push_str(CREDENTIAL_MASK),
                (Some(kind), RedactionMode::Tokenize(vault)) => {
                    out.push_str(&vault.tokenize(kind, value))
                }
                (Some(kind), _) => out.push_str(kind.mask()),
            }
            at = span.end;
        }
        out.push_str(&text[at..]);
        if !truncated && out == text {
            return None;
        }
        finish(out)
    }

    /// Redacts every string of `value` in place (object keys included;
    /// values under credential keys are replaced whole); whether it
    /// changed. Walks with an explicit stack, so depth is not limited by
    /// the call stack.
    pub fn redact_value(&self, value: &mut Value) -> bool {
        let mut changed = false;
        let mut stack: Vec<&mut Value> = vec![value];
        while let Some(v) = stack.pop() {
            match v {
                Value::String(s) => changed |= self.redact_string(s),
                Value::Array(items) => stack.extend(items.iter_mut()),
                Value::Object(map) => {
                    if map.keys().any(|k| self.may_need(k)) {
                        let old = std::mem::take(map);
                        for (k, x) in old {
                            let k = match self.rewrite(&k) {
                                Some(new) => {
                                    changed = true;
                                    new
                                }
                                None => k,
                            };
                            map.insert(k, x);
                        }
                    }
                    for (k, x) in map.iter_mut() {
                        if is_credential_key(k) {
                            if x.as_str() != Some(CREDENTIAL_MASK) {
                                *x = Value::String(CREDENTIAL_MASK.to_owned());
                                changed = true;
                            }
                        } else {
                            stack.push(x);
                        }
                    }
                }
                Value::Null | Value::Bool(_) | Value::Number(_) => {}
            }
        }
        changed
    }

    /// Whether `value` may need rewriting (read-only; no allocation).
    fn value_may_need(&self, value: &Value) -> bool {
        let mut stack: Vec<&Value> = vec![value];
        while let Some(v) = stack.pop() {
            match v {
                Value::String(s) if self.may_need(s) => return true,
                Value::Array(items) => stack.extend(items.iter()),
                Value::Object(map) => {
                    for (k, x) in map {
                        if is_credential_key(k) || self.may_need(k) {
                            return true;
                        }
                        stack.push(x);
                    }
                }
                _ => {}
            }
        }
        false
    }

    fn opt_string(&self, s: &mut Option<String>) {
        if let Some(s) = s {
            self.redact_string(s);
        }
    }

    fn opt_value(&self, v: &mut Option<Value>) {
        if let Some(v) = v {
            self.redact_value(v);
        }
    }

    fn strings(&self, items: &mut [String]) {
        for s in items {
            self.redact_string(s);
        }
    }

    fn message_may_need(&self, m: &Message) -> bool {
        self.may_need(&m.content)
            || m.tool_calls
                .iter()
                .any(|c| self.may_need(&c.name) || self.value_may_need(&c.arguments))
    }

    /// Redacts a chat request: system prompt, messages (text and tool call
    /// arguments), tool specs, tool choice, stop sequences and response
    /// schema. The shared message buffer is copied only when a message
    /// changes.
    pub fn redact_request(&self, request: &mut ChatRequest) {
        self.opt_string(&mut request.system);
        if request.messages.iter().any(|m| self.message_may_need(m)) {
            for m in request.messages.make_mut() {
                self.redact_string(&mut m.content);
                for call in &mut m.tool_calls {
                    self.redact_string(&mut call.name);
                    self.redact_value(&mut call.arguments);
                }
            }
        }
        for tool in &mut request.tools {
            self.redact_string(&mut tool.description);
            self.redact_value(&mut tool.parameters);
        }
        if let Some(ToolChoice::Tool(name)) = &mut request.tool_choice {
            self.redact_string(name);
        }
        self.strings(&mut request.stop);
        if let Some(ResponseFormat::JsonSchema { name, schema, .. }) = &mut request.response_format
        {
            self.redact_string(name);
            self.redact_value(schema);
        }
    }

    /// Redacts every string of an event kind. Kinds this version does not
    /// know go through a serde round trip; one that cannot be rebuilt is
    /// replaced by a `log` warning naming it, so nothing leaks.
    pub fn redact_kind(&self, kind: &mut EventKind) {
        match kind {
            EventKind::RunStarted { graph } => {
                self.redact_string(graph);
            }
            EventKind::RunFinished { error, .. } | EventKind::StepFinished { error, .. } => {
                self.opt_string(error)
            }
            EventKind::StepStarted { input } => self.opt_value(input),
            EventKind::StepSkipped { reason } => {
                self.redact_string(reason);
            }
            EventKind::Route { branch, targets } => {
                self.redact_string(branch);
                self.strings(targets);
            }
            EventKind::LlmRequest {
                provider,
                model,
                request,
                ..
            } => {
                self.redact_string(provider);
                self.redact_string(model);
                self.redact_request(request);
            }
            EventKind::LlmDelta { text } => {
                self.redact_string(text);
            }
            EventKind::LlmResponse {
                provider,
                model,
                text,
                tool_calls,
                ..
            } => {
                self.redact_string(provider);
                self.redact_string(model);
                self.redact_string(text);
                for call in tool_calls {
                    self.redact_string(&mut call.name);
                    self.redact_value(&mut call.arguments);
                }
            }
            EventKind::ToolRequest { tool, arguments } => {
                self.redact_string(tool);
                self.redact_value(arguments);
            }
            EventKind::ToolResponse {
                tool,
                output,
                error,
                ..
            } => {
                self.redact_string(tool);
                self.opt_value(output);
                self.opt_string(error);
            }
            EventKind::ToolDenied { tool, reason } => {
                self.redact_string(tool);
                self.redact_string(reason);
            }
            EventKind::AgentLoop {
                agent,
                tool,
                arguments,
                ..
            } => {
                self.redact_string(agent);
                self.redact_string(tool);
                self.redact_value(arguments);
            }
            EventKind::AgentFallback {
                capability,
                from_agent,
                to_agent,
                reason,
            } => {
                for s in [capability, from_agent, to_agent, reason] {
                    self.redact_string(s);
                }
            }
            EventKind::Handover {
                reason,
                required_skills,
                context,
            } => {
                self.redact_string(reason);
                self.strings(required_skills);
                self.redact_value(context);
            }
            EventKind::Log { message, .. } => {
                self.redact_string(message);
            }
            EventKind::Retry { error, .. } => {
                self.redact_string(error);
            }
            EventKind::CacheHit {
                provider, model, ..
            } => {
                self.redact_string(provider);
                self.redact_string(model);
            }
            EventKind::ModelRoute {
                profile,
                provider,
                model,
                reason,
                skipped,
            } => {
                for s in [profile, provider, model, reason] {
                    self.redact_string(s);
                }
                self.strings(skipped);
            }
            EventKind::Fallback {
                from_provider,
                from_model,
                to_provider,
                to_model,
                reason,
            } => {
                for s in [from_provider, from_model, to_provider, to_model, reason] {
                    self.redact_string(s);
                }
            }
            EventKind::Interrupt { payload } | EventKind::Resume { payload } => {
                self.redact_value(payload);
            }
            EventKind::BudgetExceeded {
                limit,
                limit_value,
                observed,
                ..
            } => {
                for s in [limit, limit_value, observed] {
                    self.redact_string(s);
                }
            }
            EventKind::Error {
                error_kind,
                message,
            } => {
                self.redact_string(error_kind);
                self.redact_string(message);
            }
            other => self.redact_via_serde(other),
        }
    }

    /// The fallback for event kinds added after this version: serialize,
    /// redact every string, deserialize.
    pub(crate) fn redact_via_serde(&self, kind: &mut EventKind) {
        let name = kind.name();
        let rebuilt = serde_json::to_value(&*kind).and_then(|mut v| {
            if self.redact_value(&mut v) {
                serde_json::from_value::<EventKind>(v).map(Some)
            } else {
                Ok(None)
            }
        });
        match rebuilt {
            Ok(Some(new)) => *kind = new,
            Ok(None) => {}
            Err(e) => {
                *kind = EventKind::Log {
                    level: LogLevel::Warn,
                    message: format!(
                        "a {name} event was withheld by the PII redactor: it could not be rewritten ({e})"
                    ),
                }
            }
        }
    }
}

/// `text` cut so that it and [`TRUNCATION_MARKER`] fit in
/// [`MAX_SCANNED_STRING_BYTES`].
fn cut_for_marker(text: &str) -> &str {
    let mut cut = MAX_SCANNED_STRING_BYTES - TRUNCATION_MARKER.len();
    if cut >= text.len() {
        return text;
    }
    while cut > 0 && !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

impl EventRedactor for PiiRedactor {
    fn redact(&self, event: &mut TraceEvent) {
        self.redact_kind(&mut event.kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowtrace_core::model::ToolCall;
    use serde_json::json;

    fn mask() -> PiiRedactor {
        PiiRedactor::new(RedactionMode::Mask).unwrap()
    }

    #[test]
    fn masks_every_kind_and_credentials() {
        let r = mask();
        assert_eq!(
            r.redact_text("ana@example.com | +1 (555) 123-4567 | 123-45-6789 | 4111-1111-1111-1111 | Bearer abcdefgh12345"),
            "[REDACTED_EMAIL] | [REDACTED_PHONE] | [REDACTED_SSN] | [REDACTED_CARD] | [REDACTED_CREDENTIAL]"
        );
        assert_eq!(
            r.redact_text("nothing here 2024-01-01"),
            "nothing here 2024-01-01"
        );
        let no_email = mask().without(PiiKind::Email);
        assert_eq!(
            no_email.redact_text("ana@example.com 123-45-6789"),
            "ana@example.com [REDACTED_SSN]"
        );
    }

    #[test]
    fn off_mode_still_removes_credentials() {
        let r = PiiRedactor::new(RedactionMode::Off).unwrap();
        assert_eq!(
            r.redact_text("ana@example.com password=hunter22 sk-abcdefghijklmnopqrstu"),
            "ana@example.com password=[REDACTED_CREDENTIAL] [REDACTED_CREDENTIAL]"
        );
        let mut v = json!({"headers": {"Authorization": "Bearer x", "X-Api-Key": 12, "accept": "json"}, "email": "ana@example.com"});
        assert!(r.redact_value(&mut v));
        assert_eq!(
            v,
            json!({"headers": {"Authorization": CREDENTIAL_MASK, "X-Api-Key": CREDENTIAL_MASK, "accept": "json"}, "email": "ana@example.com"})
        );
        assert!(!r.redact_value(&mut v), "a second pass changes nothing");
    }

    #[test]
    fn keys_holding_pii_are_rewritten() {
        let r = mask();
        let mut v = json!({"ana@example.com": {"phone": "555-123-4567"}, "ok": 1});
        r.redact_value(&mut v);
        assert_eq!(
            v,
            json!({"[REDACTED_EMAIL]": {"phone": "[REDACTED_PHONE]"}, "ok": 1})
        );
    }

    #[test]
    fn long_strings_are_cut_and_marked() {
        let r = PiiRedactor::new(RedactionMode::Off).unwrap();
        let mut s = "ana@example.com ".to_owned();
        s.push_str(&"é".repeat(MAX_SCANNED_STRING_BYTES));
        let out = mask().redact_text(&s);
        assert!(out.starts_with("[REDACTED_EMAIL] "));
        assert!(out.ends_with(TRUNCATION_MARKER));
        assert!(out.len() <= MAX_SCANNED_STRING_BYTES);
        assert_eq!(mask().redact_text(&out), out, "idempotent");
        let plain = r.redact_text(&"a".repeat(MAX_SCANNED_STRING_BYTES + 1));
        assert_eq!(plain.len(), MAX_SCANNED_STRING_BYTES);
        // Masks longer than the values push a string at the limit over it:
        // it is cut again.
        let many = "a@b.co ".repeat(MAX_SCANNED_STRING_BYTES / 7);
        let out = mask().redact_text(&many);
        assert!(out.len() <= MAX_SCANNED_STRING_BYTES && out.ends_with(TRUNCATION_MARKER));
        assert_eq!(mask().redact_text(&out), out);
    }

    #[test]
    fn deep_values_do_not_overflow_the_stack() {
        let mut v = json!("ana@example.com");
        for _ in 0..100_000 {
            v = Value::Array(vec![v]);
        }
        assert!(mask().redact_value(&mut v));
        let mut inner = &v;
        while let Value::Array(a) = inner {
            inner = &a[0];
        }
        assert_eq!(inner, &json!("[REDACTED_EMAIL]"));
        // Drop iteratively too (serde_json's recursive drop would overflow).
        let mut cur = v;
        while let Value::Array(mut a) = cur {
            cur = a.pop().unwrap_or(Value::Null);
        }
    }

    #[test]
    fn requests_copy_shared_messages_only_when_needed() {
        let r = mask();
        let clean = ChatRequest::new("m").user("hello").user("how are you");
        let mut copy = clean.clone();
        r.redact_request(&mut copy);
        assert!(copy.messages.shares_buffer_with(&clean.messages));
        let mut req = ChatRequest::new("m")
            .system("agent for ana@example.com")
            .user("my card 4111 1111 1111 1111");
        let mut assistant = Message::assistant("");
        assistant.tool_calls.push(ToolCall {
            id: "c1".into(),
            name: "lookup".into(),
            arguments: json!({"email": "bo@example.org", "api_key": "k"}),
        });
        req.messages.push(assistant);
        let shared = req.clone();
        r.redact_request(&mut req);
        assert!(!req.messages.shares_buffer_with(&shared.messages));
        assert_eq!(req.system.as_deref(), Some("agent for [REDACTED_EMAIL]"));
        assert_eq!(req.messages[0].content, "my card [REDACTED_CARD]");
        assert_eq!(
            req.messages[1].tool_calls[0].arguments,
            json!({"email": "[REDACTED_EMAIL]", "api_key": CREDENTIAL_MASK})
        );
        assert_eq!(
            shared.messages[0].content, "my card 4111 1111 1111 1111",
            "the original is untouched"
        );
    }

    #[test]
    fn the_serde_fallback_redacts_any_kind() {
        let r = mask();
        let mut kind = EventKind::AgentFallback {
            capability: "billing".into(),
            from_agent: "a".into(),
            to_agent: "b".into(),
            reason: "user ana@example.com timed out".into(),
        };
        r.redact_via_serde(&mut kind);
        assert_eq!(
            kind,
            EventKind::AgentFallback {
                capability: "billing".into(),
                from_agent: "a".into(),
                to_agent: "b".into(),
                reason: "user [REDACTED_EMAIL] timed out".into(),
            }
        );
    }
}
