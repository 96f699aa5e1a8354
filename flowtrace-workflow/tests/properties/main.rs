//! Property-based tests over the workflow loader, the rule parser and
//! evaluator, the template renderer and `transform_json`, with size-bounded
//! strategies.
//!
//! `cargo test` runs a modest number of cases (a few seconds in debug).
//! `FLOWTRACE_PROPTEST_LONG=1` runs the long mode, over 1,000,000 cases in
//! total (meant for a release build:
//! `FLOWTRACE_PROPTEST_LONG=1 cargo test --release -p flowtrace-workflow --test properties`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cmp::Ordering;
use std::collections::BTreeMap;

use flowtrace_core::Tool;
use flowtrace_providers::tools::TransformJson;
use flowtrace_workflow::rules::{Rule, RuleError};
use flowtrace_workflow::spec::{Known, MAX_PROBLEMS, ProblemKind, load};
use flowtrace_workflow::template::{Template, TemplateContext, TemplateErrorKind};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Cases for one property: `short` normally, `long` with
/// `FLOWTRACE_PROPTEST_LONG=1`.
fn config(short: u32, long: u32) -> ProptestConfig {
    let long_mode = std::env::var("FLOWTRACE_PROPTEST_LONG").is_ok_and(|v| v == "1");
    ProptestConfig {
        cases: if long_mode { long } else { short },
        // Shrinking a rare failure must not take forever.
        max_shrink_iters: 2048,
        ..ProptestConfig::default()
    }
}

// ----------------------------------------------------------- strategies --

/// Small JSON values, edge-biased numbers included.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        "[a-z{}. %#]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,5}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid workflow to mutate.
fn base_workflow() -> Value {
    json!({
        "version": "1", "entry": "read",
        "nodes": [
            {"id": "read", "type": "tool", "config": {"tool": "read_file", "path": "{{input.file}}"}},
            {"id": "sum", "type": "llm", "inputs": {"text": "{{node.read.output.content}}"},
             "retry": {"maxAttempts": 2, "initialDelayMs": 10, "maxDelayMs": 100}, "timeoutMs": 1000,
             "config": {"provider": "simulated", "model": "gpt-4o-mini", "prompt": "Sum {{text}}",
                        "simulated": {"response": "ok", "usage": {"input": 3, "output": 4}},
                        "fallbacks": [{"provider": "openai", "model": "gpt-4o"}]}},
            {"id": "gate", "type": "router", "inputs": {"s": "{{node.sum.output}}"},
             "config": {"rule": "len(s) > 2 ? 'long' : 'short'"}},
            {"id": "ok", "type": "approval", "config": {"message": "{{node.sum.output}}"}},
            {"id": "pick", "type": "tool",
             "config": {"tool": "transform_json", "input": "{{node.read.output}}", "expression": "bytes"}}
        ],
        "edges": [
            {"from": "read", "to": "sum"}, {"from": "sum", "to": "gate"},
            {"from": "gate", "to": "ok", "when": "branch == 'long'"},
            {"from": "gate", "to": "pick"}
        ],
        "limits": {"maxNodes": 10, "maxSteps": 20, "maxTokens": 1000, "maxCostUsd": "0.5",
                   "timeoutSeconds": 60},
        "parallel": true, "maxConcurrency": 2
    })
}

/// Every JSON pointer in `v`, the root included.
fn pointers(v: &Value, at: &str, out: &mut Vec<String>) {
    out.push(at.to_owned());
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pointers(item, &format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                let k = k.replace('~', "~0").replace('/', "~1");
                pointers(item, &format!("{at}/{k}"), out);
            }
        }
        _ => {}
    }
}

/// One mutation: which place (by index), what to do, with what.
#[derive(Debug, Clone)]
struct Mutation {
    place: usize,
    action: u8,
    value: Value,
    key: String,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (any::<usize>(), 0u8..4, json_value(), "[a-zA-Z_$]{1,8}").prop_map(
        |(place, action, value, key)| Mutation {
            place,
            action,
            value,
            key,
        },
    )
}

fn apply(doc: &mut Value, m: &Mutation) {
    let mut all = Vec::new();
    pointers(doc, "", &mut all);
    let at = all[m.place % all.len()].clone();
    let Some(target) = doc.pointer_mut(&at) else {
        return;
    };
    match (m.action, target) {
        (0, target) => *target = m.value.clone(),
        (1, Value::Object(map)) => {
            map.insert(m.key.clone(), m.value.clone());
        }
        (2, Value::Object(map)) => {
            let first = map.keys().next().cloned();
            if let Some(k) = first {
                map.remove(&k);
            }
        }
        (2, Value::Array(items)) if !items.is_empty() => {
            items.remove(0);
        }
        (3, Value::Array(items)) => items.push(m.value.clone()),
        // A whole number written as a float where integers are expected.
        (_, target) if target.is_u64() => {
            *target = json!(target.as_u64().unwrap_or_default() as f64);
        }
        _ => {}
    }
}

/// An object whose keys repeat, as text, with the pointers of its repeated
/// keys (second and later occurrences) in document order.
#[derive(Debug, Clone)]
enum Tree {
    Leaf(i64),
    Object(Vec<(String, Tree)>),
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = any::<i64>().prop_map(Tree::Leaf);
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop::collection::vec(("[ab~/]{1,2}", inner), 0..5).prop_map(Tree::Object)
    })
}

fn render_tree(t: &Tree, at: &str, text: &mut String, dups: &mut Vec<String>) {
    match t {
        Tree::Leaf(n) => text.push_str(&n.to_string()),
        Tree::Object(members) => {
            text.push('{');
            let mut seen = std::collections::HashSet::new();
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(&serde_json::to_string(k).unwrap());
                text.push(':');
                let here = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                render_tree(v, &here, text, dups);
                if !seen.insert(k.clone()) {
                    dups.push(here);
                }
            }
            text.push('}');
        }
    }
}

/// Integers at and around the edges of exactness and of the range.
fn edge_int() -> impl Strategy<Value = i128> {
    let edges: Vec<i128> = [
        0i128,
        1,
        -1,
        1 << 53,
        (1 << 53) + 1,
        (1 << 53) - 1,
        i128::from(i64::MAX),
        i128::from(i64::MIN),
        i128::from(u64::MAX),
        i128::from(u64::MAX) - 1,
        1 << 63,
    ]
    .to_vec();
    prop_oneof![
        prop::sample::select(edges.clone()),
        (prop::sample::select(edges), -3i128..=3).prop_map(|(e, d)| e + d),
        any::<i64>().prop_map(i128::from),
        any::<u64>().prop_map(i128::from),
    ]
    .prop_filter("within the integer range", |i| {
        (i128::from(i64::MIN)..=i128::from(u64::MAX)).contains(i)
    })
}

fn edge_float() -> impl Strategy<Value = f64> {
    prop_oneof![
        edge_int().prop_map(|i| i as f64),
        (edge_int(), 0.0f64..1.0).prop_map(|(i, f)| i as f64 + f),
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        -1e20f64..1e20,
        prop::sample::select(vec![
            0.5,
            -0.5,
            1e-300,
            -1e-300,
            18446744073709551616.0,
            -9223372036854775808.0,
            9007199254740992.0
        ]),
    ]
}

fn int_json(i: i128) -> Value {
    match (i64::try_from(i), u64::try_from(i)) {
        (Ok(v), _) => Value::from(v),
        (_, Ok(v)) => Value::from(v),
        _ => unreachable!("outside the range"),
    }
}

/// Reference: compares `i` with `f` exactly through `f`'s binary
/// decomposition (independent of the evaluator's method).
fn reference_cmp(i: i128, f: f64) -> Ordering {
    if f == 0.0 {
        return i.cmp(&0);
    }
    let bits = f.to_bits();
    let negative = bits >> 63 == 1;
    let exponent = ((bits >> 52) & 0x7ff) as i32;
    let fraction = i128::from(bits & ((1u64 << 52) - 1));
    let (mantissa, exp) = if exponent == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1 << 52), exponent - 1075)
    };
    let sign = if negative { -1 } else { 1 };
    if exp >= 0 {
        if exp > 70 {
            // |f| ≥ 2^70 > every integer in range.
            return if negative {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        return i.cmp(&(sign * (mantissa << exp)));
    }
    let shift = -exp;
    if shift > 60 {
        // |f| < 2^53 · 2^-61 < 1.
        return if i != 0 {
            i.cmp(&0)
        } else if negative {
            Ordering::Greater
        } else {
            Ordering::Less
        };
    }
    // i · 2^shift vs ±mantissa, with |i| < 2^65 and shift ≤ 60.
    (i << shift).cmp(&(sign * mantissa))
}

const RULE_TOKENS: &[&str] = &[
    "a",
    "b",
    "x",
    "n",
    "text",
    "doc",
    "1",
    "2.5",
    "0",
    "18446744073709551615",
    "9223372036854775808",
    "1e2",
    "'s'",
    "\"q\\n\"",
    "true",
    "false",
    "null",
    "(",
    ")",
    "+",
    "-",
    "*",
    "/",
    "%",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "&&",
    "||",
    "!",
    "?",
    ":",
    ",",
    ".",
    "len(",
    "contains(",
    "lower(",
    "upper(",
    "starts_with(",
    "=",
    "&",
    "'",
    "é",
    "\u{202e}",
];

const JMES_TOKENS: &[&str] = &[
    "@",
    "a",
    "b",
    "[0]",
    "[*]",
    "[]",
    ".a",
    " | ",
    "[@,@]",
    "{x: @}",
    "length(@)",
    "to_string(@)",
    "keys(@)",
    "sort(@)",
    "`1`",
    "[?a > `1`]",
    "*",
    "&",
    "'lit'",
];

fn transform(input: Value, expression: &str) -> Result<Value, flowtrace_core::ToolError> {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
    }
    let tool = TransformJson::new();
    RT.with(|rt| rt.block_on(tool.call(json!({"input": input, "expression": expression}))))
}

fn rendered_len(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        other => serde_json::to_string(other).unwrap().len(),
    }
}

// ------------------------------------------------------------- loader --

proptest! {
    #![proptest_config(config(32, 150_000))]

    /// Mutated workflows: no panic; every problem points into the document;
    /// a document that loads survives a round trip unchanged.
    #[test]
    fn loader_reports_problems_at_real_pointers(mutations in prop::collection::vec(mutation(), 0..4)) {
        let mut doc = base_workflow();
        for m in &mutations {
            apply(&mut doc, m);
        }
        let text = doc.to_string();
        match load(&text, &Known::default()) {
            Ok(spec) => {
                let again = serde_json::to_string(&spec).unwrap();
                let reloaded = load(&again, &Known::default());
                prop_assert!(reloaded.is_ok(), "{again}: {:?}", reloaded.err());
                prop_assert_eq!(reloaded.unwrap(), spec);
            }
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                prop_assert!(errors.len() <= MAX_PROBLEMS);
                for p in &errors {
                    prop_assert!(
                        p.pointer.is_empty() || doc.pointer(&p.pointer).is_some(),
                        "{} does not resolve in {}", p, text
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(config(32, 150_000))]

    /// Repeated keys: exactly the repeats are reported, at their pointers,
    /// in document order, whatever else is wrong.
    #[test]
    fn loader_reports_every_repeated_key(t in tree(), bad_entry in any::<bool>()) {
        let mut object = String::new();
        let mut expected = Vec::new();
        let t = match t {
            Tree::Leaf(_) => Tree::Object(vec![]),
            other => other,
        };
        render_tree(&t, "/nodes/0/config/input", &mut object, &mut expected);
        let entry = if bad_entry { "nope" } else { "a" };
        let text = format!(
            r#"{{"version":"1","entry":"{entry}","nodes":[{{"id":"a","type":"tool","config":{{"tool":"transform_json","expression":"@","input":{object}}}}}]}}"#
        );
        let result = load(&text, &Known::default());
        let reported: Vec<String> = match &result {
            Ok(_) => Vec::new(),
            Err(e) => e
                .iter()
                .filter(|p| p.kind == ProblemKind::DuplicateKey)
                .map(|p| p.pointer.clone())
                .collect(),
        };
        prop_assert_eq!(&reported, &expected);
        prop_assert_eq!(result.is_ok(), expected.is_empty() && !bad_entry);
        if bad_entry {
            let e = result.unwrap_err();
            prop_assert!(e.iter().any(|p| p.pointer == "/entry"));
        }
    }
}

proptest! {
    #![proptest_config(config(64, 100_000))]

    /// Arbitrary text: never a panic, bounded problems.
    #[test]
    fn loader_survives_arbitrary_text(text in r#"[\[\]{}",:0-9.eE+\-a-z \\u{202e}]{0,200}"#) {
        if let Err(e) = load(&text, &Known::default()) {
            prop_assert!(!e.is_empty() && e.len() <= MAX_PROBLEMS);
        }
    }
}

// -------------------------------------------------------------- rules --

fn rule_vars() -> impl Strategy<Value = Value> {
    (json_value(), json_value(), json_value(), edge_int(), "[a-zA-Zé ]{0,20}").prop_map(
        |(a, b, doc, n, text)| json!({"a": a, "b": b, "doc": doc, "x": 2.5, "n": int_json(n), "text": text}),
    )
}

proptest! {
    #![proptest_config(config(256, 250_000))]

    /// Token soup: parsing and evaluation never panic, columns point into
    /// the source, limit errors name a limit that was crossed.
    #[test]
    fn rules_never_panic(tokens in prop::collection::vec(prop::sample::select(RULE_TOKENS), 0..24),
                         spaced in any::<bool>(), vars in rule_vars()) {
        let src = tokens.join(if spaced { " " } else { "" });
        let width = src.chars().count() + 1;
        match Rule::parse(&src) {
            Err(e) => {
                prop_assert!((1..=width).contains(&e.column()), "{src:?}: {e}");
                if let Some(l) = e.limit_exceeded() {
                    prop_assert!(l.value > l.max);
                }
            }
            Ok(rule) => {
                prop_assert_eq!(rule.source(), src.as_str());
                let names = rule.variables();
                let mut sorted = names.clone();
                sorted.sort();
                sorted.dedup();
                prop_assert_eq!(&names, &sorted);
                match rule.eval(&vars) {
                    Ok(v) => {
                        // Deterministic.
                        prop_assert_eq!(rule.eval(&vars).unwrap(), v);
                    }
                    Err(e) => {
                        prop_assert!((1..=width).contains(&e.column()), "{src:?}: {e}");
                        prop_assert!(!e.to_string().contains("rule rule"));
                    }
                }
            }
        }
    }

    /// Integer arithmetic is exact over the whole range, and overflow is an
    /// error, never a float.
    #[test]
    fn integer_arithmetic_is_exact(a in edge_int(), b in edge_int(), op in 0usize..4) {
        let vars = json!({"a": int_json(a), "b": int_json(b)});
        let (src, exact) = match op {
            0 => ("a + b", Some(a + b)),
            1 => ("a - b", Some(a - b)),
            2 => ("a * b", a.checked_mul(b)),
            _ => ("a % b", if b == 0 { None } else { Some(a % b) }),
        };
        let got = Rule::parse(src).unwrap().eval(&vars);
        let in_range = exact.filter(|r| (i128::from(i64::MIN)..=i128::from(u64::MAX)).contains(r));
        match in_range {
            Some(r) => prop_assert_eq!(got.unwrap(), int_json(r)),
            None => prop_assert!(matches!(got, Err(RuleError::Arithmetic { .. })), "{src} {a} {b}: {got:?}"),
        }
    }

    /// Integer/float comparisons are exact (checked against the float's
    /// binary decomposition).
    #[test]
    fn integer_float_comparisons_are_exact(i in edge_int(), f in edge_float()) {
        let vars = json!({"i": int_json(i), "f": f});
        let expected = reference_cmp(i, f);
        for (src, holds) in [
            ("i < f", expected == Ordering::Less),
            ("i == f", expected == Ordering::Equal),
            ("i > f", expected == Ordering::Greater),
            ("f <= i", expected != Ordering::Less),
            ("i != f", expected != Ordering::Equal),
        ] {
            let got = Rule::parse(src).unwrap().eval(&vars).unwrap();
            prop_assert_eq!(got, json!(holds), "{} with i = {}, f = {:e}", src, i, f);
        }
    }
}

// ------------------------------------------------------------ templates --

fn template_context() -> impl Strategy<Value = TemplateContext> {
    (
        json_value(),
        json_value(),
        json_value(),
        json_value(),
        json_value(),
    )
        .prop_map(|(input, a, b, x, y)| {
            TemplateContext::new()
                .with_input(input)
                .with_node_output("a", a)
                .with_node_output("b", b)
                .with_var("x", x)
                .with_var("y", y)
        })
}

proptest! {
    #![proptest_config(config(256, 250_000))]

    /// Rendering never panics, never passes its limit, and a breach is
    /// exactly an output longer than the limit.
    #[test]
    fn templates_render_within_their_limit(
        src in r"([a-z .]|\{\{ ?(input|node\.[abc]\.output|[xyz])(\.[a-z0-9_]{1,2}){0,2} ?\}\}|\{|\}|\{%|%\}|#|\|){0,10}",
        ctx in template_context(),
        limit in 0usize..400,
    ) {
        let Ok(template) = Template::parse(&src) else {
            return Ok(());
        };
        let limited = ctx.clone().with_max_output_len(limit);
        let unlimited = ctx.with_max_output_len(usize::MAX);
        match (template.render(&limited), template.render(&unlimited)) {
            (Ok(s), Ok(full)) => {
                prop_assert!(s.len() <= limit);
                prop_assert_eq!(s, full);
            }
            (Err(e), Ok(full)) => {
                prop_assert_eq!(e.kind(), TemplateErrorKind::OutputTooLarge);
                prop_assert!(full.len() > limit);
                let l = e.limit().unwrap();
                prop_assert!(l.value > l.max && l.max == limit as u64);
            }
            // Rendering stops at the first problem: with a limit, that can
            // be the output size before a missing value further on.
            (Err(e), Err(full)) if e.kind() == TemplateErrorKind::OutputTooLarge => {
                prop_assert_ne!(full.kind(), TemplateErrorKind::OutputTooLarge);
            }
            (Err(e), Err(full)) => prop_assert_eq!(e.kind(), full.kind()),
            (Ok(s), Err(e)) => prop_assert!(false, "{s:?} within the limit but {e} without"),
        }
        match (template.render_value(&limited), template.render_value(&unlimited)) {
            (Ok(v), Ok(full)) => {
                prop_assert!(rendered_len(&v) <= limit);
                prop_assert_eq!(v, full);
            }
            (Err(e), Ok(full)) => {
                prop_assert_eq!(e.kind(), TemplateErrorKind::OutputTooLarge);
                prop_assert!(rendered_len(&full) > limit);
            }
            (Err(e), Err(full)) if e.kind() == TemplateErrorKind::OutputTooLarge => {
                prop_assert_ne!(full.kind(), TemplateErrorKind::OutputTooLarge);
            }
            (Err(e), Err(full)) => prop_assert_eq!(e.kind(), full.kind()),
            (Ok(v), Err(e)) => prop_assert!(false, "{v} within the limit but {e} without"),
        }
    }
}

// ------------------------------------------------------- transform_json --

proptest! {
    #![proptest_config(config(64, 100_000))]

    /// Small expressions over small inputs: a result or a permanent error,
    /// never a panic, and the same answer twice.
    #[test]
    fn transform_json_is_total_on_small_inputs(
        tokens in prop::collection::vec(prop::sample::select(JMES_TOKENS), 1..6),
        input in json_value(),
    ) {
        let expression = tokens.concat();
        let first = transform(input.clone(), &expression);
        match &first {
            Ok(v) => {
                // Small in, small out: at most 5 doublings of a small input.
                prop_assert!(serde_json::to_string(v).unwrap().len() < 64 * 1024 * 1024);
            }
            Err(e) => prop_assert!(!e.is_retryable(), "{e}"),
        }
        let second = transform(input, &expression);
        prop_assert_eq!(first.map_err(|e| e.message), second.map_err(|e| e.message));
    }
}

#[test]
fn the_long_mode_runs_over_a_million_cases() {
    let long = [
        150_000u32, 150_000, 100_000, 250_000, 250_000, 250_000, 250_000, 100_000,
    ];
    let total: u64 = long.iter().map(|&c| u64::from(c)).sum();
    assert!(total >= 1_000_000, "{total}");
    let _ = BTreeMap::<(), ()>::new();
}
