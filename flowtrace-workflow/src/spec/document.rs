//! Reading a workflow document's text into JSON: duplicate keys and nesting
//! depth are checked while parsing (a [`serde_json::Value`] keeps the last
//! of two equal keys silently and has no depth limit of its own below 128),
//! and whole-number floats in integer fields become integers.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::escape;

/// A parsed document and the JSON pointers of the keys it repeats.
pub(super) struct Parsed {
    pub(super) value: Value,
    /// Pointers of repeated keys (the second and later occurrences), in
    /// document order, at most `max_duplicates`.
    pub(super) duplicates: Vec<String>,
    /// Repeated keys beyond `max_duplicates`.
    pub(super) more_duplicates: usize,
}

/// Why a document could not be parsed.
pub(super) enum ParseFailure {
    /// Not JSON.
    Json(serde_json::Error),
    /// Nested deeper than the limit: the pointer of the container that
    /// crossed it and its depth.
    TooDeep { pointer: String, depth: usize },
}

struct Walk {
    /// Escaped pointer segments of the value being parsed.
    path: Vec<String>,
    duplicates: Vec<String>,
    more_duplicates: usize,
    max_duplicates: usize,
    max_depth: usize,
    too_deep: Option<(String, usize)>,
}

impl Walk {
    fn pointer(&self) -> String {
        let mut out = String::new();
        for segment in &self.path {
            out.push('/');
            out.push_str(segment);
        }
        out
    }

    /// Records entering a container at `depth`; an error once too deep.
    fn enter<E: de::Error>(&mut self, depth: usize) -> Result<(), E> {
        if depth > self.max_depth {
            self.too_deep = Some((self.pointer(), depth));
            return Err(E::custom(format_args!(
                "nesting deeper than {} levels",
                self.max_depth
            )));
        }
        Ok(())
    }
}

/// Parses `text`, recording repeated keys (up to `max_duplicates`) and
/// refusing arrays or objects nested deeper than `max_depth` levels.
pub(super) fn parse(
    text: &str,
    max_depth: usize,
    max_duplicates: usize,
) -> Result<Parsed, ParseFailure> {
    let mut walk = Walk {
        path: Vec::new(),
        duplicates: Vec::new(),
        more_duplicates: 0,
        max_duplicates,
        max_depth,
        too_deep: None,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let result = ValueSeed {
        walk: &mut walk,
        depth: 0,
    }
    .deserialize(&mut de)
    .and_then(|value| de.end().map(|()| value));
    match result {
        Ok(value) => Ok(Parsed {
            value,
            duplicates: walk.duplicates,
            more_duplicates: walk.more_duplicates,
        }),
        Err(e) => match walk.too_deep {
            Some((pointer, depth)) => Err(ParseFailure::TooDeep { pointer, depth }),
            None => Err(ParseFailure::Json(e)),
        },
    }
}

struct ValueSeed<'w> {
    walk: &'w mut Walk,
    /// Depth of the enclosing container (0 at the top).
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let depth = self.depth + 1;
        self.walk.enter(depth)?;
        let mut items = Vec::new();
        loop {
            self.walk.path.push(items.len().to_string());
            let next = seq.next_element_seed(ValueSeed {
                walk: &mut *self.walk,
                depth,
            })?;
            self.walk.path.pop();
            match next {
                Some(item) => items.push(item),
                None => break,
            }
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let depth = self.depth + 1;
        self.walk.enter(depth)?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            self.walk.path.push(escape(&key));
            let value = map.next_value_seed(ValueSeed {
                walk: &mut *self.walk,
                depth,
            })?;
            if object.insert(key, value).is_some() {
                if self.walk.duplicates.len() < self.walk.max_duplicates {
                    let pointer = self.walk.pointer();
                    self.walk.duplicates.push(pointer);
                } else {
                    self.walk.more_duplicates += 1;
                }
            }
            self.walk.path.pop();
        }
        Ok(Value::Object(object))
    }
}

// ------------------------------------------------------ integer fields --

/// Integer fields of the `simulated` options of an LLM config or a fallback.
const SIMULATED_INTEGERS: [&str; 2] = ["latencyMs", "failFirst"];

/// Rewrites whole-number floats (`4.0`, `1e2`) in the format's integer
/// fields as integers, as the schema (draft 2020-12 `"type": "integer"`)
/// already accepts them. Other values are left for the schema to judge.
pub(super) fn normalize_integers(doc: &mut Value) {
    let Some(root) = doc.as_object_mut() else {
        return;
    };
    integer_at(root, "maxConcurrency");
    if let Some(limits) = root.get_mut("limits").and_then(Value::as_object_mut) {
        for key in ["maxNodes", "maxSteps", "maxTokens", "timeoutSeconds"] {
            integer_at(limits, key);
        }
    }
    let Some(nodes) = root.get_mut("nodes").and_then(Value::as_array_mut) else {
        return;
    };
    for node in nodes.iter_mut().filter_map(Value::as_object_mut) {
        integer_at(node, "timeoutMs");
        if let Some(retry) = node.get_mut("retry").and_then(Value::as_object_mut) {
            for key in ["maxAttempts", "initialDelayMs", "maxDelayMs"] {
                integer_at(retry, key);
            }
        }
        if node.get("type").and_then(Value::as_str) != Some("llm") {
            continue;
        }
        let Some(config) = node.get_mut("config").and_then(Value::as_object_mut) else {
            continue;
        };
        model_integers(config);
        if let Some(fallbacks) = config.get_mut("fallbacks").and_then(Value::as_array_mut) {
            for fallback in fallbacks.iter_mut().filter_map(Value::as_object_mut) {
                model_integers(fallback);
            }
        }
    }
}

fn model_integers(config: &mut Map<String, Value>) {
    integer_at(config, "maxTokens");
    let Some(simulated) = config.get_mut("simulated").and_then(Value::as_object_mut) else {
        return;
    };
    for key in SIMULATED_INTEGERS {
        integer_at(simulated, key);
    }
    if let Some(usage) = simulated.get_mut("usage").and_then(Value::as_object_mut) {
        integer_at(usage, "input");
        integer_at(usage, "output");
    }
}

/// Largest float below which every whole number is exact (2^53).
const EXACT_FLOAT_INTEGERS: f64 = 9_007_199_254_740_992.0;

fn integer_at(object: &mut Map<String, Value>, key: &str) {
    let Some(slot) = object.get_mut(key) else {
        return;
    };
    let Some(f) = slot.as_f64().filter(|_| slot.is_f64()) else {
        return;
    };
    // Only exactly representable whole numbers: the schema reports the
    // rest (fractions, out-of-range values) with their pointer.
    if f.fract() == 0.0 && f.abs() <= EXACT_FLOAT_INTEGERS {
        *slot = if f >= 0.0 {
            Value::from(f as u64)
        } else {
            Value::from(f as i64)
        };
    }
}
