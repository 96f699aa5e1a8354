//! Measuring a JSON value as it is shown: a string as its text, anything
//! else as compact JSON, without writing it out and without scanning past a
//! limit.

use serde_json::Value;

/// The size of `value` as rendered (a string's length, anything else as
/// compact JSON), if at most `max`; otherwise the size reached when
/// measuring stopped (more than `max`). Measuring stops as soon as the
/// size passes `max`, so its cost is bounded by `max`, not by the value.
pub fn rendered_len(value: &Value, max: usize) -> Result<usize, usize> {
    match value {
        Value::String(s) if s.len() > max => Err(s.len()),
        Value::String(s) => Ok(s.len()),
        other => json_len(other, max),
    }
}

/// A container being measured, with the members still to visit.
enum Frame<'v> {
    Array(std::slice::Iter<'v, Value>),
    Object(serde_json::map::Iter<'v>),
}

/// The length of `value` as compact JSON (as `serde_json` writes it), if at
/// most `max`; otherwise a length over `max` reached when measuring
/// stopped. Iterative, so any nesting depth is fine.
fn json_len(value: &Value, max: usize) -> Result<usize, usize> {
    let mut total = 0usize;
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut next = Some(value);
    loop {
        if let Some(v) = next.take() {
            let add = match v {
                Value::Null | Value::Bool(true) => 4,
                Value::Bool(false) => 5,
                Value::Number(n) => n.to_string().len(),
                Value::String(s) => {
                    // Escaping only lengthens: stop before scanning a
                    // string that cannot fit.
                    let least = total.saturating_add(s.len()).saturating_add(2);
                    if least > max {
                        return Err(least);
                    }
                    escaped_len(s) + 2
                }
                Value::Array(items) => {
                    stack.push(Frame::Array(items.iter()));
                    // Brackets and commas.
                    1 + items.len().max(1)
                }
                Value::Object(map) => {
                    stack.push(Frame::Object(map.iter()));
                    // Braces, commas, and each key's quotes and colon.
                    1 + map.len().max(1) + 3 * map.len()
                }
            };
            total = total.saturating_add(add);
            if total > max {
                return Err(total);
            }
        }
        let Some(frame) = stack.last_mut() else {
            return Ok(total);
        };
        match frame {
            Frame::Array(items) => match items.next() {
                Some(item) => next = Some(item),
                None => {
                    stack.pop();
                }
            },
            Frame::Object(members) => match members.next() {
                Some((key, item)) => {
                    let least = total.saturating_add(key.len());
                    if least > max {
                        return Err(least);
                    }
                    total = total.saturating_add(escaped_len(key));
                    next = Some(item);
                }
                None => {
                    stack.pop();
                }
            },
        }
    }
}

/// The length of `s` with JSON string escapes (without the quotes).
fn escaped_len(s: &str) -> usize {
    let extra: usize = s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
            0..=0x1f => 5,
            _ => 0,
        })
        .sum();
    s.len() + extra
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::rendered_len;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            any::<String>().prop_map(Value::String),
            "[\"\\\\\\n\\t\\u{0}-\\u{1f}\\u{7f}é✓a]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The measured length is serde_json's, and a limit stops it exactly.
        #[test]
        fn matches_serde_json(v in value(), max in 0usize..300) {
            let exact = match &v {
                Value::String(s) => s.len(),
                other => serde_json::to_string(other).unwrap().len(),
            };
            prop_assert_eq!(rendered_len(&v, usize::MAX), Ok(exact));
            match rendered_len(&v, max) {
                Ok(n) => prop_assert!(n == exact && n <= max),
                Err(seen) => prop_assert!(exact > max && seen > max),
            }
        }
    }

    #[test]
    fn stops_early_on_huge_values() {
        let big = json!({"content": "x".repeat(50_000_000), "n": [1, 2]});
        let started = std::time::Instant::now();
        assert!(rendered_len(&big, 1000).is_err());
        assert!(started.elapsed() < std::time::Duration::from_millis(50));
        let deep = (0..100_000).fold(json!(1), |v, _| Value::Array(vec![v]));
        assert_eq!(rendered_len(&deep, usize::MAX), Ok(200_001));
        // (Dropping a value this deep recursively would overflow the stack.)
        std::mem::forget(deep);
    }
}
