//! Loading a price table document (`run_workflow --pricing`) the way
//! workflows are loaded: bounded, and with every problem reported at once
//! with its JSON pointer.
//!
//! Two shapes are accepted (the shapes of
//! [`PriceTable::from_json`](flowtrace_core::PriceTable::from_json)):
//!
//! ```json
//! {"openai/gpt-4o-mini": {"input_per_million": 0.15, "output_per_million": 0.6}}
//! {"as_of": "2025-08-15", "models": {"openai/gpt-4o-mini": {"input_per_million": "0.15", "output_per_million": "0.6"}}}
//! ```
//!
//! Each price has `input_per_million` and `output_per_million` (dollars per
//! million tokens, a JSON number or a decimal string) and optionally
//! `cached_input_per_million` and `cache_write_per_million`.
//!
//! ```
//! use flowtrace_workflow::limits::Limits;
//! use flowtrace_workflow::pricing::load_price_table;
//!
//! let errors = load_price_table(
//!     r#"{"models": {"openai/gpt-4o": {"input_per_million": 2.5}, "nokey": {}}}"#,
//!     &Limits::default(),
//! )
//! .unwrap_err();
//! let text = errors.to_string();
//! assert!(text.contains("/models/openai~1gpt-4o: missing `output_per_million`"));
//! assert!(text.contains("/models/nokey: invalid key"));
//! ```

use flowtrace_core::PriceTable;
use flowtrace_core::pricing::PerMillion;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::limits::{LimitExceeded, LimitKind, Limits};
use super::spec::{LoadErrors, MAX_PROBLEMS, Problem, ProblemKind, document_problems, escape};

/// The fields of one price.
const FIELDS: [&str; 4] = [
    "input_per_million",
    "output_per_million",
    "cached_input_per_million",
    "cache_write_per_million",
];

/// What a price looks like, for messages.
const PRICE_SHAPE: &str = "{\"input_per_million\": <dollars>, \"output_per_million\": <dollars>} \
(optionally \"cached_input_per_million\" and \"cache_write_per_million\"; dollars as a number \
or a decimal string)";

/// What a document looks like, for messages.
const DOCUMENT_SHAPE: &str = "{\"provider/model\": <price>, …} or \
{\"as_of\": \"<date>\", \"models\": {\"provider/model\": <price>, …}}";

/// Parses a price table document, reporting every problem (size, JSON
/// syntax, repeated keys, shape, keys, prices) with its JSON pointer.
pub fn load_price_table(text: &str, limits: &Limits) -> Result<PriceTable, LoadErrors> {
    if text.len() > limits.pricing_bytes {
        let limit = LimitExceeded::of(LimitKind::PricingBytes, limits.pricing_bytes, text.len());
        return Err(LoadErrors::from_problems(vec![
            Problem::new(
                "",
                ProblemKind::TooLarge,
                format!("price table too large: {limit}"),
            )
            .with_limit(Some(limit)),
        ]));
    }
    let (value, mut problems) = document_problems(text, limits)?;
    check_document(&value, &mut problems);
    if !problems.is_empty() {
        problems.truncate(MAX_PROBLEMS);
        return Err(LoadErrors::from_problems(problems));
    }
    PriceTable::from_json(text).map_err(|e| {
        LoadErrors::from_problems(vec![Problem::new("", ProblemKind::Schema, e.to_string())])
    })
}

fn check_document(value: &Value, out: &mut Vec<Problem>) {
    let Some(root) = value.as_object() else {
        out.push(Problem::new(
            "",
            ProblemKind::Schema,
            format!("expected an object: {DOCUMENT_SHAPE}"),
        ));
        return;
    };
    if !root.contains_key("models") {
        check_models(root, "", out);
        return;
    }
    for key in root
        .keys()
        .filter(|k| !matches!(k.as_str(), "as_of" | "models"))
    {
        out.push(Problem::new(
            format!("/{}", escape(key)),
            ProblemKind::Schema,
            format!(
                "unknown key `{}` next to `models` (the wrapped form has only `as_of` and `models`)",
                clip(key)
            ),
        ));
    }
    if let Some(as_of) = root.get("as_of")
        && !as_of.is_string()
        && !as_of.is_null()
    {
        out.push(Problem::new(
            "/as_of",
            ProblemKind::Schema,
            "expected a string (the date the prices were taken)",
        ));
    }
    match root.get("models") {
        Some(Value::Object(models)) => check_models(models, "/models", out),
        _ => out.push(Problem::new(
            "/models",
            ProblemKind::Schema,
            "expected an object mapping \"provider/model\" to a price",
        )),
    }
}

fn check_models(models: &Map<String, Value>, base: &str, out: &mut Vec<Problem>) {
    for (key, price) in models {
        if out.len() > MAX_PROBLEMS {
            return;
        }
        let pointer = format!("{base}/{}", escape(key));
        let valid_key = key
            .split_once('/')
            .is_some_and(|(p, m)| !p.is_empty() && !m.is_empty());
        if !valid_key {
            out.push(Problem::new(
                &pointer,
                ProblemKind::Invalid,
                format!("invalid key `{}`: expected \"provider/model\"", clip(key)),
            ));
        }
        let Some(fields) = price.as_object() else {
            out.push(Problem::new(
                &pointer,
                ProblemKind::Schema,
                format!("expected a price object {PRICE_SHAPE}"),
            ));
            continue;
        };
        for required in ["input_per_million", "output_per_million"] {
            if !fields.contains_key(required) {
                out.push(Problem::new(
                    &pointer,
                    ProblemKind::Schema,
                    format!("missing `{required}`; a price is {PRICE_SHAPE}"),
                ));
            }
        }
        for (field, amount) in fields {
            let at = format!("{pointer}/{}", escape(field));
            if !FIELDS.contains(&field.as_str()) {
                out.push(Problem::new(
                    at,
                    ProblemKind::Schema,
                    format!(
                        "unknown field `{}` (expected {})",
                        clip(field),
                        FIELDS.join(", ")
                    ),
                ));
                continue;
            }
            if let Err(e) = PerMillion::deserialize(amount) {
                out.push(Problem::new(
                    at,
                    ProblemKind::Schema,
                    format!("not a dollar amount per million tokens: {e}"),
                ));
            }
        }
    }
}

/// A user-supplied key cut for a message.
fn clip(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", s.get(..cut).unwrap_or_default()),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowtrace_core::Pricing;

    fn problems(text: &str) -> Vec<Problem> {
        load_price_table(text, &Limits::default())
            .unwrap_err()
            .into_problems()
    }

    #[test]
    fn both_shapes_load() {
        let flat = load_price_table(
            r#"{"acme/m": {"input_per_million": 1, "output_per_million": "2.5"}}"#,
            &Limits::default(),
        )
        .unwrap();
        assert!(flat.price("acme", "m").is_some());
        let wrapped = load_price_table(
            r#"{"as_of": "2026-01-01", "models": {"acme/m": {"input_per_million": 1, "output_per_million": 2, "cached_input_per_million": 0.5}}}"#,
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(wrapped.as_of(), Some("2026-01-01"));
    }

    #[test]
    fn every_problem_is_reported_with_its_pointer() {
        let p = problems(
            r#"{"as_of": 5, "models": {"acme/m": {"input_per_million": "x", "output_per_milion": 1},
                "bad": {"input_per_million": 1, "output_per_million": 1}, "acme/n": 3}, "extra": 1}"#,
        );
        let lines: Vec<String> = p.iter().map(ToString::to_string).collect();
        let has = |needle: &str| {
            assert!(
                lines.iter().any(|l| l.starts_with(needle)),
                "no `{needle}` in:\n{}",
                lines.join("\n")
            )
        };
        has("/extra: unknown key `extra`");
        has("/as_of: expected a string");
        has("/models/acme~1m/input_per_million: not a dollar amount");
        has("/models/acme~1m/output_per_milion: unknown field `output_per_milion`");
        has("/models/acme~1m: missing `output_per_million`");
        has("/models/bad: invalid key `bad`");
        has("/models/acme~1n: expected a price object");
        assert!(lines.iter().all(|l| !l.contains("untagged")));
    }

    #[test]
    fn shape_size_syntax_and_repeats() {
        let p = problems("[1, 2]");
        assert!(p[0].to_string().contains("expected an object"), "{}", p[0]);
        let p = problems(r#"{"models": []}"#);
        assert_eq!(p[0].pointer, "/models");
        let p = problems(
            r#"{"acme/m": {"input_per_million": 1, "output_per_million": 2, "input_per_million": 3}}"#,
        );
        assert_eq!(p[0].kind, ProblemKind::DuplicateKey);
        assert_eq!(p[0].pointer, "/acme~1m/input_per_million");
        let p = problems("{");
        assert_eq!(p[0].kind, ProblemKind::Json);
        let small = Limits {
            pricing_bytes: 10,
            ..Limits::default()
        };
        let e = load_price_table(r#"{"acme/m": {}}"#, &small).unwrap_err();
        assert_eq!(
            e.problems()[0].limit.map(|l| l.limit),
            Some(LimitKind::PricingBytes)
        );
    }
}
