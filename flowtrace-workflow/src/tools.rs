//! Built-in tools that use this crate's [rule language](crate::rules).
//!
//! * [`FilterList`] (`filter_list`) — keeps the items of a JSON array for
//!   which a rule holds.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use flowtrace_core::tool::ToolErrorKind;
use flowtrace_core::{Tool, ToolError, ToolSafety};
use serde_json::{Map, Value, json};

use crate::rules::{Rule, RuleError};

/// The name of [`FilterList`].
pub const FILTER_LIST: &str = "filter_list";

/// Keeps the items of a list for which a [rule](crate::rules) is true.
///
/// Arguments: `{"items": [...], "rule": "price > 10 && contains(tags, 'new')"}`.
/// Result: `{"items": [<the matching items, in order>], "matched": 2,
/// "total": 5, "missing": 0}`.
///
/// # How an item is seen
///
/// As a router rule sees its inputs: when the item is an object, each of
/// its fields is a variable (`price`, `tags`, `meta.lang`). Every item,
/// object or not, is also bound whole to the variable `item` (`item > 3`
/// over numbers, `len(item) < 20` over strings); for an object with a field
/// named `item`, `item` is the whole item.
///
/// An item that lacks a variable the rule reads does not match (it is
/// counted in `"missing"`), so one rule can filter items of different
/// shapes. Any other evaluation error — a type error, an arithmetic error,
/// a result that is not a boolean, an evaluation limit — fails the call with
/// [`ToolErrorKind::InvalidInput`] (`LimitExceeded` for a limit) naming the
/// item's index and the rule's column.
///
/// # Limits
///
/// * at most [`MAX_ITEMS`](Self::MAX_ITEMS) items (`LimitExceeded`);
/// * rules of at most [`MAX_RULE_CHARS`](Self::MAX_RULE_CHARS) characters
///   (`LimitExceeded`), and the language's own parse and evaluation limits
///   ([`crate::rules`]) for each item;
/// * an unparsable rule is `InvalidInput`, with the message naming the
///   column of the error.
///
/// Evaluation runs on the caller's task and yields to the runtime every
/// [`YIELD_EVERY`](Self::YIELD_EVERY) items, so a long list does not hold
/// an async worker and a dropped call stops between items.
///
/// ```
/// use flowtrace_core::{Tool, ToolSafety};
/// use flowtrace_workflow::tools::FilterList;
/// use serde_json::json;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let tool = FilterList::new();
/// assert_eq!(tool.safety(), ToolSafety::Safe);
/// let out = tool
///     .call(json!({
///         "items": [{"name": "a", "price": 5}, {"name": "b", "price": 12}, {"name": "c"}],
///         "rule": "price > 10",
///     }))
///     .await
///     .unwrap();
/// assert_eq!(out["items"], json!([{"name": "b", "price": 12}]));
/// assert_eq!(out["missing"], 1);
/// # });
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct FilterList;

impl FilterList {
    /// The most items one call filters.
    pub const MAX_ITEMS: usize = 10_000;
    /// The longest rule, in characters (within
    /// [`rules::MAX_SOURCE_CHARS`](crate::rules::MAX_SOURCE_CHARS)).
    pub const MAX_RULE_CHARS: usize = 1_024;
    /// Items evaluated between two yields to the async runtime.
    pub const YIELD_EVERY: usize = 256;

    /// The tool.
    pub fn new() -> Self {
        Self
    }
}

fn error(kind: ToolErrorKind, message: impl Into<String>) -> ToolError {
    ToolError::new(FILTER_LIST, kind, message)
}

/// The error for `e`, raised by the item at `index`.
fn rule_error(e: RuleError, index: Option<usize>) -> ToolError {
    let kind = if e.limit_exceeded().is_some() {
        ToolErrorKind::LimitExceeded
    } else {
        ToolErrorKind::InvalidInput
    };
    let message = match index {
        Some(i) => format!("the rule failed on item {i}: {e}"),
        None => format!("invalid rule: {e}"),
    };
    error(kind, message).with_source(e)
}

/// The variables a rule sees for `item`.
fn variables(item: &Value) -> Value {
    let mut vars = match item {
        Value::Object(fields) => fields.clone(),
        _ => Map::new(),
    };
    vars.insert("item".to_string(), item.clone());
    Value::Object(vars)
}

/// Returns `Pending` once, waking itself: a yield to the runtime.
#[derive(Debug, Default)]
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

#[async_trait]
impl Tool for FilterList {
    fn name(&self) -> &str {
        FILTER_LIST
    }

    /// [`ToolSafety::Safe`]: filtering has no side effects.
    fn safety(&self) -> ToolSafety {
        ToolSafety::Safe
    }

    fn description(&self) -> &str {
        "Returns the items of a list for which a rule expression is true \
         (object fields are variables; `item` is the whole item)."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "items": {
                    "type": "array",
                    "maxItems": Self::MAX_ITEMS,
                    "description": "The list to filter."
                },
                "rule": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": Self::MAX_RULE_CHARS,
                    "description": "A boolean rule, e.g. \"price > 10 && lower(status) == 'open'\"."
                }
            },
            "required": ["items", "rule"],
            "additionalProperties": false
        })
    }

    /// Filters the items.
    ///
    /// # Cancel safety
    /// Filtering has no side effects; a dropped call stops at its next
    /// yield.
    async fn call(&self, mut args: Value) -> Result<Value, ToolError> {
        let invalid = |m: &str| error(ToolErrorKind::InvalidInput, m);
        let rule_text = args
            .get("rule")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("missing string argument \"rule\""))?;
        let chars = rule_text.chars().count();
        if chars > Self::MAX_RULE_CHARS {
            return Err(error(
                ToolErrorKind::LimitExceeded,
                format!(
                    "the rule is {chars} characters, over the limit of {}",
                    Self::MAX_RULE_CHARS
                ),
            ));
        }
        let rule = Rule::parse(rule_text).map_err(|e| rule_error(e, None))?;
        let items = match args.as_object_mut().and_then(|o| o.remove("items")) {
            Some(Value::Array(items)) => items,
            Some(_) => return Err(invalid("\"items\" must be an array")),
            None => return Err(invalid("missing array argument \"items\"")),
        };
        if items.len() > Self::MAX_ITEMS {
            return Err(error(
                ToolErrorKind::LimitExceeded,
                format!(
                    "{} items, over the limit of {}",
                    items.len(),
                    Self::MAX_ITEMS
                ),
            ));
        }
        let total = items.len();
        let mut kept = Vec::new();
        let mut missing = 0usize;
        for (index, item) in items.into_iter().enumerate() {
            if index > 0 && index % Self::YIELD_EVERY == 0 {
                YieldNow::default().await;
            }
            match rule.eval(&variables(&item)) {
                Ok(Value::Bool(true)) => kept.push(item),
                Ok(Value::Bool(false)) => {}
                Ok(other) => {
                    return Err(invalid(&format!(
                        "the rule must give a boolean, but gave {other} for item {index}"
                    )));
                }
                Err(RuleError::MissingVariable { .. }) => missing += 1,
                Err(e) => return Err(rule_error(e, Some(index))),
            }
        }
        Ok(json!({
            "matched": kept.len(),
            "total": total,
            "missing": missing,
            "items": kept,
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use proptest::prelude::*;

    fn run(args: Value) -> Result<Value, ToolError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(FilterList::new().call(args))
    }

    #[test]
    fn object_fields_and_item_are_variables() {
        let items = json!([
            {"name": "Ada", "age": 36, "meta": {"lang": "en"}},
            {"name": "Bob", "age": 25, "meta": {"lang": "fr"}},
            {"name": "Cy", "age": 41, "meta": {"lang": "en"}},
        ]);
        let out = run(json!({"items": items, "rule": "age > 30 && meta.lang == 'en'"})).unwrap();
        assert_eq!(out["items"], json!([items[0], items[2]]));
        assert_eq!(out["matched"], 2);
        assert_eq!(out["total"], 3);
        let out = run(json!({"items": items, "rule": "item.name == 'Bob'"})).unwrap();
        assert_eq!(out["items"], json!([items[1]]));
        let out =
            run(json!({"items": [1, 5, "x", 9], "rule": "item == 5 || item == 'x'"})).unwrap();
        assert_eq!(out["items"], json!([5, "x"]));
        // A field named `item` is shadowed by the whole item.
        let out = run(json!({"items": [{"item": 1}], "rule": "item.item == 1"})).unwrap();
        assert_eq!(out["matched"], 1);
    }

    #[test]
    fn items_without_a_variable_do_not_match() {
        let out = run(json!({
            "items": [{"price": 12}, {"name": "no price"}, 7],
            "rule": "price > 10"
        }))
        .unwrap();
        assert_eq!(out["items"], json!([{"price": 12}]));
        assert_eq!(out["missing"], 2);
    }

    #[test]
    fn invalid_rules_name_the_column() {
        let err = run(json!({"items": [], "rule": "price > > 3"})).unwrap_err();
        assert_eq!(err.kind(), ToolErrorKind::InvalidInput);
        assert!(err.message.contains("column 9"), "{}", err.message);
        assert!(std::error::Error::source(&err).is_some());
        let err = run(json!({"items": [{"a": "x"}], "rule": "a > 3"})).unwrap_err();
        assert_eq!(err.kind(), ToolErrorKind::InvalidInput);
        assert!(err.message.contains("item 0"), "{}", err.message);
        assert!(err.message.contains("column"), "{}", err.message);
        let err = run(json!({"items": [{"a": 1}], "rule": "a + 1"})).unwrap_err();
        assert_eq!(err.kind(), ToolErrorKind::InvalidInput);
        assert!(err.message.contains("boolean"), "{}", err.message);
    }

    #[test]
    fn limits_and_bad_arguments() {
        let long = format!("item == '{}'", "a".repeat(FilterList::MAX_RULE_CHARS));
        let err = run(json!({"items": [], "rule": long})).unwrap_err();
        assert_eq!(err.kind(), ToolErrorKind::LimitExceeded);
        assert!(err.message.contains("1024"), "{}", err.message);
        let many = vec![Value::Null; FilterList::MAX_ITEMS + 1];
        let err = run(json!({"items": many, "rule": "true"})).unwrap_err();
        assert_eq!(err.kind(), ToolErrorKind::LimitExceeded);
        let at_limit = vec![json!(1); FilterList::MAX_ITEMS];
        let out = run(json!({"items": at_limit, "rule": "item == 1"})).unwrap();
        assert_eq!(out["matched"], FilterList::MAX_ITEMS);
        for args in [
            json!({"rule": "true"}),
            json!({"items": {}, "rule": "true"}),
            json!({"items": []}),
            json!("nope"),
        ] {
            assert_eq!(
                run(args.clone()).unwrap_err().kind(),
                ToolErrorKind::InvalidInput,
                "{args}"
            );
        }
        assert_eq!(FilterList::new().safety(), ToolSafety::Safe);
        assert_eq!(FilterList::new().spec().name, FILTER_LIST);
    }

    fn item() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            "[a-z]{0,6}".prop_map(Value::from),
            (any::<i32>(), "[a-z]{0,4}").prop_map(|(n, s)| json!({"n": n, "s": s})),
            Just(Value::Null),
        ]
    }

    fn is_subsequence(sub: &[Value], of: &[Value]) -> bool {
        let mut it = of.iter();
        sub.iter().all(|x| it.any(|y| y == x))
    }

    proptest! {
        #[test]
        fn true_keeps_all_and_false_keeps_none(items in prop::collection::vec(item(), 0..40)) {
            let out = run(json!({"items": items, "rule": "true"})).unwrap();
            prop_assert_eq!(&out["items"], &json!(items));
            let out = run(json!({"items": items, "rule": "false"})).unwrap();
            prop_assert_eq!(&out["items"], &json!([]));
        }

        #[test]
        fn the_result_is_the_matching_subsequence(
            items in prop::collection::vec(item(), 0..40),
            k in -1000i64..1000,
        ) {
            let out = run(json!({"items": items, "rule": format!("n > {k}")})).unwrap();
            let kept = out["items"].as_array().unwrap();
            prop_assert!(is_subsequence(kept, &items));
            let expected: Vec<&Value> = items
                .iter()
                .filter(|v| v.get("n").and_then(Value::as_i64).is_some_and(|n| n > k))
                .collect();
            prop_assert_eq!(kept.iter().collect::<Vec<_>>(), expected);
            let without = items.iter().filter(|v| v.get("n").is_none()).count();
            prop_assert_eq!(out["missing"].as_u64().unwrap() as usize, without);
        }
    }
}
