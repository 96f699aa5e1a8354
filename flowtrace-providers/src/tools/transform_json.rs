//! The `transform_json` tool: [`TransformJson`].

use std::sync::OnceLock;

use async_trait::async_trait;
use flowtrace_core::tool::ToolErrorKind;
use flowtrace_core::{Tool, ToolError, ToolSafety};
use jmespath::ast::Ast;
use serde_json::{Value, json};

use super::TRANSFORM_JSON;

mod bounds;

use bounds::{Analysis, Converter, ast_depth, count_operators, json_bytes, value_depth};

/// Evaluates a [JMESPath](https://jmespath.org/) expression against JSON.
///
/// Arguments: `{"input": <any JSON>, "expression": "people[?age > `30`].name"}`.
/// Result: whatever the expression selects (`null` when nothing matches).
///
/// Expressions longer than the limit
/// ([`DEFAULT_MAX_EXPRESSION_LEN`](Self::DEFAULT_MAX_EXPRESSION_LEN)
/// characters unless set with
/// [`max_expression_len`](Self::max_expression_len)) or with more than
/// [`MAX_OPERATORS`](Self::MAX_OPERATORS) operators are refused, and so
/// are parsed expressions nested deeper than
/// [`MAX_EXPRESSION_DEPTH`](Self::MAX_EXPRESSION_DEPTH) and inputs whose
/// arrays and objects nest deeper than
/// [`MAX_INPUT_DEPTH`](Self::MAX_INPUT_DEPTH) (both measured without
/// recursion): the JMESPath parser recurses once per operator, and the
/// interpreter and the conversions once per level of the expression and of
/// the values. Within these bounds an evaluation needs several MiB of
/// stack in an unoptimised build — more than the 2 MiB that Tokio gives its
/// workers and blocking threads by default — so evaluations run on a small,
/// fixed pool of threads with [`STACK_BYTES`](Self::STACK_BYTES) stacks
/// (at most [`EVAL_THREADS`](Self::EVAL_THREADS), started on first use and
/// shared by every call; calls beyond that queue), never on the caller's
/// async worker and never on a thread started for the call. A unit test
/// runs the worst accepted cases on a thread with half that stack.
///
/// A short expression can still build a huge value (`[@,@]` doubles its
/// input; twenty of them in a row make megabytes into terabytes) or do
/// unbounded work, and the JMESPath interpreter cannot be interrupted. So
/// before evaluating, the tool computes from the expression and the size
/// of the input (as compact JSON) an upper bound on the size of the result
/// and of every intermediate value, and on the work of the evaluation
/// (nodes visited plus bytes of the values they take and yield; a
/// projection counts its right-hand side once per possible element). It
/// refuses the call, with a permanent error naming the limit and the bound,
/// when
///
/// * the result could exceed
///   [`DEFAULT_MAX_OUTPUT_BYTES`](Self::DEFAULT_MAX_OUTPUT_BYTES) (unless
///   set with [`max_output_bytes`](Self::max_output_bytes)),
/// * an intermediate value could exceed that limit or the input's size,
///   whichever is larger, or
/// * the work could exceed [`DEFAULT_MAX_WORK`](Self::DEFAULT_MAX_WORK)
///   units (unless set with [`max_work`](Self::max_work)).
///
/// The bounds hold for every input of that size, so an expression that
/// multiplies small elements (`[*].{a: a, b: b}` over a long array) may be
/// refused for inputs of a few megabytes even when the actual result would
/// be small. The result is then converted to JSON counting its bytes, and
/// refused as soon as it passes the output limit. An evaluation that has
/// started always ends within its work bound, even if the call that started
/// it was dropped.
#[derive(Clone, Debug)]
pub struct TransformJson {
    max_expression_len: usize,
    max_output_bytes: usize,
    max_work: u64,
}

/// The limits one evaluation runs under.
#[derive(Clone, Copy, Debug)]
struct Budget {
    max_output_bytes: u64,
    max_work: u64,
}

impl Default for TransformJson {
    fn default() -> Self {
        Self::new()
    }
}

impl TransformJson {
    /// The default longest expression, in characters.
    pub const DEFAULT_MAX_EXPRESSION_LEN: usize = 4096;
    /// The most operator characters (`.`, `|`, `[`, `(`, `{`, `!`, `&`,
    /// `<`, `>`, `=`, `?`, `*`, `@`, outside quotes and literals) an
    /// expression may contain; this bounds the parser's recursion.
    pub const MAX_OPERATORS: usize = 256;
    /// The deepest parsed expression accepted: the height of its syntax
    /// tree (a lone field is 1; each operator adds at most 2 levels, and a
    /// literal adds its own nesting). This bounds the interpreter's
    /// recursion.
    pub const MAX_EXPRESSION_DEPTH: usize = 2 * Self::MAX_OPERATORS + 8;
    /// The deepest input accepted: arrays and objects nested at most this
    /// many levels (`serde_json` refuses deeper text when parsing, so any
    /// parsed JSON passes). This bounds the conversions' recursion.
    pub const MAX_INPUT_DEPTH: usize = 128;
    /// The stack of each thread of the evaluation pool: 16 MiB, twice what
    /// the worst accepted evaluation needs in an unoptimised build.
    pub const STACK_BYTES: usize = 16 * 1024 * 1024;
    /// The most threads in the evaluation pool (fewer on machines with
    /// fewer CPUs).
    pub const EVAL_THREADS: usize = 4;
    /// The default largest result (and intermediate value), as compact
    /// JSON: 16 MiB, the default `tool_output_bytes` of the `flowtrace`
    /// facade.
    pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;
    /// The default most work units of one evaluation: 2^28 (about 268
    /// million), a few seconds at most.
    pub const DEFAULT_MAX_WORK: u64 = 1 << 28;

    /// The tool with the default limits.
    pub fn new() -> Self {
        Self {
            max_expression_len: Self::DEFAULT_MAX_EXPRESSION_LEN,
            max_output_bytes: Self::DEFAULT_MAX_OUTPUT_BYTES,
            max_work: Self::DEFAULT_MAX_WORK,
        }
    }

    /// Sets the largest result (and intermediate value, unless the input is
    /// larger) an evaluation may build, in bytes of compact JSON.
    #[must_use]
    pub fn max_output_bytes(mut self, max: usize) -> Self {
        self.max_output_bytes = max;
        self
    }

    /// Sets the most work units one evaluation may take (see the type's
    /// documentation for what a unit is).
    #[must_use]
    pub fn max_work(mut self, max: u64) -> Self {
        self.max_work = max;
        self
    }

    fn budget(&self) -> Budget {
        Budget {
            max_output_bytes: u64::try_from(self.max_output_bytes).unwrap_or(u64::MAX),
            max_work: self.max_work,
        }
    }

    /// Sets the longest expression it accepts, in characters (the operator
    /// limit still applies).
    #[must_use]
    pub fn max_expression_len(mut self, max: usize) -> Self {
        self.max_expression_len = max;
        self
    }

    fn check_expression(&self, expression: &str) -> Result<(), ToolError> {
        let len = expression.chars().count();
        if len > self.max_expression_len {
            return Err(ToolError::new(
                TRANSFORM_JSON,
                ToolErrorKind::LimitExceeded,
                format!(
                    "expression is {len} characters, over the {}-character limit",
                    self.max_expression_len
                ),
            ));
        }
        let operators = count_operators(expression);
        if operators > Self::MAX_OPERATORS {
            return Err(ToolError::new(
                TRANSFORM_JSON,
                ToolErrorKind::LimitExceeded,
                format!(
                    "expression has {operators} operators, over the limit of {}",
                    Self::MAX_OPERATORS
                ),
            ));
        }
        Ok(())
    }
}

/// Refuses `ast` when its bounds over an input of `input_bytes` pass the
/// budget.
fn check_cost(ast: &Ast, input_bytes: u64, budget: Budget) -> Result<(), ToolError> {
    let refuse =
        |message: String| ToolError::new(TRANSFORM_JSON, ToolErrorKind::LimitExceeded, message);
    let mut analysis = Analysis::default();
    let cost = analysis.cost(ast, input_bytes.max(1)).map_err(refuse)?;
    let max = budget.max_output_bytes;
    if cost.size > max {
        return Err(refuse(format!(
            "the result could reach {} bytes for this {input_bytes}-byte input, \
             over the `max_output_bytes` limit of {max} bytes",
            cost.size
        )));
    }
    let intermediate = max.max(input_bytes);
    if analysis.largest > intermediate {
        return Err(refuse(format!(
            "an intermediate value could reach {} bytes for this {input_bytes}-byte input, \
             over the `max_output_bytes` limit of {intermediate} bytes (or the input's size)",
            analysis.largest
        )));
    }
    if cost.work > budget.max_work {
        return Err(refuse(format!(
            "the evaluation could take {} work units for this {input_bytes}-byte input, \
             over the `max_work` limit of {} units",
            cost.work, budget.max_work
        )));
    }
    Ok(())
}

/// Compiles, bounds and evaluates `expression` over an input within
/// [`TransformJson::MAX_INPUT_DEPTH`] (blocking: call it off the async
/// workers).
fn evaluate(expression: &str, input: &Value, budget: Budget) -> Result<Value, ToolError> {
    let compiled = jmespath::compile(expression).map_err(|e| {
        ToolError::new(
            TRANSFORM_JSON,
            ToolErrorKind::InvalidInput,
            format!(
                "invalid JMESPath expression: {} (at character {})",
                e.reason, e.offset
            ),
        )
    })?;
    let depth = ast_depth(compiled.as_ast());
    if depth > TransformJson::MAX_EXPRESSION_DEPTH {
        return Err(ToolError::new(
            TRANSFORM_JSON,
            ToolErrorKind::LimitExceeded,
            format!(
                "the expression nests {depth} levels deep, over the limit of {}",
                TransformJson::MAX_EXPRESSION_DEPTH
            ),
        ));
    }
    check_cost(compiled.as_ast(), json_bytes(input), budget)?;
    let result = compiled.search(input).map_err(|e| {
        ToolError::new(
            TRANSFORM_JSON,
            ToolErrorKind::Failed,
            format!("JMESPath evaluation failed: {}", e.reason),
        )
    })?;
    let max = budget.max_output_bytes;
    Converter { max, bytes: 0 }
        .convert(&result)
        .map_err(|seen| {
            ToolError::new(
                TRANSFORM_JSON,
                ToolErrorKind::LimitExceeded,
                format!(
                    "the result is at least {seen} bytes, over the `max_output_bytes` limit of {max} bytes"
                ),
            )
        })
}

#[async_trait]
impl Tool for TransformJson {
    fn name(&self) -> &str {
        TRANSFORM_JSON
    }

    /// [`ToolSafety::Safe`]: Evaluating an expression has no side effects.
    fn safety(&self) -> ToolSafety {
        ToolSafety::Safe
    }

    fn description(&self) -> &str {
        "Queries or reshapes JSON with a JMESPath expression and returns the result."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "input": {
                    "description": "The JSON value to query (any type)."
                },
                "expression": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": self.max_expression_len,
                    "description": "A JMESPath expression, e.g. \"items[?price > `10`].name\"."
                }
            },
            "required": ["input", "expression"],
            "additionalProperties": false
        })
    }

    /// Evaluates the expression on the evaluation pool.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the result; an evaluation already
    /// started finishes in the background, within its work bound.
    /// Evaluation has no side effects.
    async fn call(&self, mut args: Value) -> Result<Value, ToolError> {
        let expression = args
            .get("expression")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ToolError::new(
                    TRANSFORM_JSON,
                    ToolErrorKind::InvalidInput,
                    "missing string argument \"expression\"",
                )
            })?
            .to_string();
        let input = args
            .as_object_mut()
            .and_then(|o| o.remove("input"))
            .ok_or_else(|| {
                ToolError::new(
                    TRANSFORM_JSON,
                    ToolErrorKind::InvalidInput,
                    "missing argument \"input\"",
                )
            })?;
        self.check_expression(&expression)?;
        let depth = value_depth(&input);
        if depth > Self::MAX_INPUT_DEPTH {
            return Err(ToolError::new(
                TRANSFORM_JSON,
                ToolErrorKind::LimitExceeded,
                format!(
                    "the input nests {depth} levels deep, over the limit of {}",
                    Self::MAX_INPUT_DEPTH
                ),
            ));
        }
        let budget = self.budget();
        let (tx, rx) = tokio::sync::oneshot::channel();
        eval_pool()?.spawn(move || {
            let _ = tx.send(evaluate(&expression, &input, budget));
        });
        // The sender only drops unsent if evaluation panicked, which would
        // happen again on retry.
        rx.await.map_err(|_| {
            ToolError::new(
                TRANSFORM_JSON,
                ToolErrorKind::Failed,
                "the evaluation failed unexpectedly",
            )
        })?
    }
}

/// The pool evaluating JMESPath expressions (see [`TransformJson`]),
/// started on first use.
fn eval_pool() -> Result<&'static rayon_core::ThreadPool, ToolError> {
    static POOL: OnceLock<Result<rayon_core::ThreadPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, TransformJson::EVAL_THREADS);
        rayon_core::ThreadPoolBuilder::new()
            .num_threads(threads)
            .stack_size(TransformJson::STACK_BYTES)
            .thread_name(|i| format!("flowtrace-jmespath-{i}"))
            // A panicking evaluation drops its sender; the call reports it.
            .panic_handler(|_| {})
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| {
        ToolError::new(
            TRANSFORM_JSON,
            ToolErrorKind::Unavailable,
            format!("cannot start the evaluation threads: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn bounds_cover_actual_sizes() {
        let inputs = [
            json!(null),
            json!(1),
            json!([1, 1, 1, 1, 1, 1, 1]),
            json!({"a": [1, 2, 3], "b": {"c": "x\"y"}}),
            json!({"people": [{"name": "ann", "age": 40, "langs": ["en"]},
                              {"name": "bo", "age": 20, "langs": []}, 1, "s", null]}),
            json!([[1, [2]], [[3]], "abc", {"k": [1]}]),
        ];
        let expressions = [
            "@",
            "a",
            "[@,@]",
            "[*].{x: @, y: a, z: `[1,2]`}",
            "people[?age > `30`].name",
            "people[*].[name, age, langs[0]]",
            "*.[@, @]",
            "[][]",
            "map(&[@, to_string(@)], @)",
            "sort_by(people, &name)",
            "to_string(to_string(@))",
            "join(to_string(@), [to_string(@), to_string(@)])",
            "merge(@, {a: @})",
            "keys(@)",
            "values(@)",
            "[0:2].[@, @][]",
            "a || b && @",
            "people[?!contains(langs, 'fr')] | [*].{n: name, l: length(langs)}",
            "to_array(@)[*][*][*]",
            "max_by(people, &age)",
        ];
        for input in &inputs {
            let n = json_bytes(input);
            for expression in expressions {
                let compiled = jmespath::compile(expression).unwrap();
                let mut analysis = Analysis::default();
                let cost = analysis.cost(compiled.as_ast(), n.max(1)).unwrap();
                let Ok(result) = compiled.search(input) else {
                    continue;
                };
                let actual = json_bytes(&*result);
                assert!(
                    actual <= cost.size,
                    "{expression} over {input}: {actual} > bound {}",
                    cost.size
                );
            }
        }
    }

    /// An array holding an array … `depth` levels deep, built without
    /// recursion.
    fn nested(depth: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..depth {
            v = Value::Array(vec![v]);
        }
        v
    }

    /// The deepest expressions and inputs the tool accepts, evaluated and
    /// dropped on a thread with half the pool's stack: if they needed more,
    /// the thread would overflow and abort the test.
    #[test]
    fn the_worst_accepted_cases_fit_in_half_the_pool_stack() {
        let ops = TransformJson::MAX_OPERATORS;
        let max_depth = TransformJson::MAX_EXPRESSION_DEPTH;
        let deep = nested(TransformJson::MAX_INPUT_DEPTH);
        assert_eq!(value_depth(&deep), TransformJson::MAX_INPUT_DEPTH);
        // A literal nested just deep enough to reach the depth limit.
        let literal_depth = max_depth - (2 * ops + 1);
        let literal = format!(
            "`{}`",
            serde_json::to_string(&nested(literal_depth)).unwrap()
        );
        let cases = [
            (format!("{}a", "!".repeat(ops)), json!({"a": deep})),
            (format!("a{}", ".b".repeat(ops)), json!({})),
            (format!("a{}", "[]".repeat(ops)), json!({"a": deep})),
            (format!("{literal}{}", "[]".repeat(ops)), json!(null)),
            (
                format!("{}@{}", "[".repeat(ops - 1), "]".repeat(ops - 1)),
                deep.clone(),
            ),
            (
                format!("{}@{}", "not_null(".repeat(ops / 2), ")".repeat(ops / 2)),
                deep.clone(),
            ),
            (
                format!("{}@", "to_array(".repeat(ops / 2)) + &")".repeat(ops / 2),
                deep,
            ),
        ];
        let tool = TransformJson::new();
        for (expression, input) in cases {
            tool.check_expression(&expression).unwrap();
            let compiled = jmespath::compile(&expression).unwrap();
            assert!(ast_depth(compiled.as_ast()) <= max_depth, "{expression}");
            let budget = tool.budget();
            let shown: String = expression.chars().take(40).collect();
            let outcome = std::thread::Builder::new()
                .stack_size(TransformJson::STACK_BYTES / 2)
                .spawn(move || {
                    let result = evaluate(&expression, &input, budget);
                    drop(input);
                    result.map(|value| value_depth(&value))
                })
                .unwrap()
                .join()
                .unwrap();
            assert!(outcome.is_ok(), "{shown}…: {outcome:?}");
        }
        // One level more is refused before evaluation.
        let literal = format!(
            "`{}`",
            serde_json::to_string(&nested(literal_depth + 1)).unwrap()
        );
        let too_deep = format!("{literal}{}", "[]".repeat(ops));
        let e = evaluate(&too_deep, &json!(null), tool.budget()).unwrap_err();
        assert_eq!(e.kind(), ToolErrorKind::LimitExceeded);
        assert!(e.message.contains("levels deep"), "{e}");
    }

    #[test]
    fn depths_are_measured_without_recursion() {
        assert_eq!(value_depth(&json!(1)), 0);
        assert_eq!(value_depth(&json!({"a": [1, {"b": []}]})), 3);
        let very_deep = nested(100_000);
        assert_eq!(value_depth(&very_deep), 100_000);
        // Dropping it would recurse; this test only measures.
        std::mem::forget(very_deep);
        let ast = |e: &str| ast_depth(jmespath::compile(e).unwrap().as_ast());
        assert_eq!(ast("a"), 1);
        assert_eq!(ast("a.b"), 2);
        assert_eq!(ast("!a"), 2);
        assert_eq!(ast("`[[1]]`"), 3);
        assert_eq!(ast("[a, b.c]"), 3);
    }

    #[test]
    fn operators_outside_quotes_only() {
        assert_eq!(count_operators("a.b[0]"), 2);
        assert_eq!(count_operators("\"a.b\".c"), 1);
        assert_eq!(count_operators("a == 'x.\\'.y'"), 2);
        assert_eq!(count_operators("a[?b == `{\"c\": [1]}`]"), 4);
        assert_eq!(count_operators("{name: name, id: id}"), 1);
    }
}
