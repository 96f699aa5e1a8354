//! JSON helpers for tool calls: bounded depth and size, the canonical form
//! used as a cache key, and the credential scrubber for `tool.request`.

use std::io;

use serde_json::Value;

use super::options::MAX_JSON_DEPTH;
use crate::pii::{CREDENTIAL_MASK, is_credential_key};

/// A copy of `value` with every credential's value (see
/// [`is_credential_key`](crate::pii::is_credential_key), the one list of
/// credential names, shared with the PII redactor), at any depth, replaced
/// by [`CREDENTIAL_MASK`](crate::pii::CREDENTIAL_MASK); whatever
/// lies deeper than [`MAX_JSON_DEPTH`] is replaced whole, so nothing
/// unexamined leaks.
///
/// ```
/// use flowtrace_agents::tools::scrub_credentials;
/// use serde_json::json;
/// let v = json!({"url": "https://x", "headers": {"Authorization": "Bearer sk-1"}, "api-key": "k"});
/// assert_eq!(
///     scrub_credentials(&v),
///     json!({"url": "https://x", "headers": {"Authorization": "[REDACTED_CREDENTIAL]"}, "api-key": "[REDACTED_CREDENTIAL]"})
/// );
/// ```
pub fn scrub_credentials(value: &Value) -> Value {
    // A structural clone, then redaction in place: cheaper than rebuilding
    // every map.
    let mut copy = value.clone();
    scrub(&mut copy, 0);
    copy
}

fn scrub(value: &mut Value, depth: usize) {
    match value {
        Value::Object(_) | Value::Array(_) if depth >= MAX_JSON_DEPTH => {
            *value = Value::String(CREDENTIAL_MASK.to_string());
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_credential_key(k) {
                    *v = Value::String(CREDENTIAL_MASK.to_string());
                } else {
                    scrub(v, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            for v in items {
                scrub(v, depth + 1);
            }
        }
        _ => {}
    }
}

/// Whether `value` nests arrays and objects deeper than `max`.
pub(crate) fn deeper_than(value: &Value, max: usize) -> bool {
    fn walk(v: &Value, depth: usize, max: usize) -> bool {
        match v {
            Value::Array(items) => depth >= max || items.iter().any(|i| walk(i, depth + 1, max)),
            Value::Object(map) => depth >= max || map.values().any(|i| walk(i, depth + 1, max)),
            _ => false,
        }
    }
    walk(value, 0, max)
}

/// A writer that counts bytes and fails once they pass a limit.
struct Counter {
    bytes: usize,
    limit: usize,
}

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes = self.bytes.saturating_add(buf.len());
        if self.bytes > self.limit {
            return Err(io::Error::other("limit passed"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether compact JSON of `value` is longer than `limit` bytes; stops
/// counting as soon as it is. `value` must be no deeper than
/// [`MAX_JSON_DEPTH`] (checked first by the caller).
pub(crate) fn longer_than(value: &Value, limit: usize) -> bool {
    let mut counter = Counter { bytes: 0, limit };
    serde_json::to_writer(&mut counter, value).is_err()
}

/// The canonical JSON text of `value`: compact, object keys sorted by their
/// bytes at every level, so equal inputs give equal keys whatever their key
/// order. `value` must be no deeper than [`MAX_JSON_DEPTH`].
pub(crate) fn canonical(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_leaf(k, out);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        leaf => write_leaf(leaf, out),
    }
}

/// Writes a string or scalar as compact JSON.
fn write_leaf<T: serde::Serialize + ?Sized>(leaf: &T, out: &mut Vec<u8>) {
    // Writing a string or scalar into memory cannot fail; were it to, the
    // partial text still ends the key, which stays as distinct as its input.
    let _ = serde_json::to_writer(&mut *out, leaf);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_ignores_key_order_only() {
        let a = json!({"b": 1, "a": {"y": [1, "x"], "x": null}});
        let b = json!({"a": {"x": null, "y": [1, "x"]}, "b": 1});
        assert_eq!(canonical(&a), canonical(&b));
        assert_eq!(canonical(&a), br#"{"a":{"x":null,"y":[1,"x"]},"b":1}"#);
        assert_ne!(
            canonical(&json!({"a": [1, 2]})),
            canonical(&json!({"a": [2, 1]}))
        );
        assert_ne!(canonical(&json!({"a": "1"})), canonical(&json!({"a": 1})));
        assert_eq!(canonical(&json!("q\"")), br#""q\"""#);
    }

    #[test]
    fn depth_and_size_are_bounded() {
        let mut deep = json!(1);
        for _ in 0..5 {
            deep = json!([deep]);
        }
        assert!(deeper_than(&deep, 4));
        assert!(!deeper_than(&deep, 5));
        assert!(deeper_than(&json!({}), 0));
        assert!(!deeper_than(&json!(3), 0));
        let v = json!({"a": "xxxx"}); // {"a":"xxxx"} = 12 bytes
        assert!(!longer_than(&v, 12));
        assert!(longer_than(&v, 11));
    }

    #[test]
    fn credentials_are_scrubbed_at_any_depth_and_below_the_bound() {
        let v = json!({
            "q": "weather",
            "max_tokens": 10,
            "auth": {"PASSWORD": "p", "list": [{"Cookie": "c", "x-api-key": "k"}]},
            "proxy-authorization": {"nested": "object"},
            "client_secret": "s",
        });
        assert_eq!(
            scrub_credentials(&v),
            json!({
                "q": "weather",
                "max_tokens": 10,
                "auth": {"PASSWORD": CREDENTIAL_MASK, "list": [{"Cookie": CREDENTIAL_MASK, "x-api-key": CREDENTIAL_MASK}]},
                "proxy-authorization": CREDENTIAL_MASK,
                "client_secret": CREDENTIAL_MASK,
            })
        );
        let mut deep = json!({"token": "t"});
        for _ in 0..MAX_JSON_DEPTH {
            deep = json!({"next": deep});
        }
        let scrubbed = scrub_credentials(&deep).to_string();
        assert!(!scrubbed.contains("\"t\""), "{scrubbed}");
        let long_key = format!("{}_api_key", "x".repeat(100));
        assert!(is_credential_key(&long_key));
        assert!(!is_credential_key(&"y".repeat(100)));
    }
}
