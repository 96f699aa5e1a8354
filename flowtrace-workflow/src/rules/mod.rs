//! A small, safe expression language for workflow router rules and edge
//! conditions.
//!
//! ```
//! use flowtrace_workflow::rules::Rule;
//! use serde_json::json;
//!
//! let rule = Rule::parse("len(text) > 5 ? 'deep' : 'shallow'")?;
//! assert_eq!(rule.eval(&json!({"text": "hello world"}))?, json!("deep"));
//! assert_eq!(rule.variables(), vec!["text".to_string()]);
//!
//! let when = Rule::parse("branch == 'deep'")?;
//! assert!(when.eval_bool(&json!({"branch": "deep"}))?);
//! # Ok::<(), flowtrace_workflow::rules::RuleError>(())
//! ```
//!
//! # Language
//!
//! * literals: numbers (`42`, `1.5`, `2e3`), strings in single or double
//!   quotes (escapes `\\ \' \" \n \r \t \0`), `true`, `false`, `null`;
//! * variables (`text`) and field access on JSON objects (`doc.meta.lang`);
//! * comparison `== != < <= > >=` (`==`/`!=` work on any two values, the
//!   ordering operators on two numbers or two strings);
//! * boolean logic `&& || !` (operands must be booleans; `&&` and `||`
//!   short-circuit);
//! * arithmetic `+ - * / %` on numbers, and `+` on two strings
//!   (concatenation); division by zero is an error (see *Numbers*);
//! * parentheses and the ternary `cond ? a : b` (only the chosen branch is
//!   evaluated);
//! * functions `len(x)` (characters of a string, items of an array, keys of
//!   an object), `contains(haystack, needle)` (substring, or array
//!   membership), `starts_with(s, prefix)`, `lower(s)`, `upper(s)`.
//!
//! # Numbers
//!
//! A number is an **integer** or a **float**. Integers are exact: any value
//! from −2⁶³ to 2⁶⁴−1 (the range of `i64` and `u64` together), written as a
//! literal without `.` or exponent, or read from JSON. Floats are IEEE-754
//! doubles: literals with `.` or an exponent (`1.5`, `2e3`; `1e2` is the
//! float 100.0), and JSON numbers that are not integers.
//!
//! * `+ - * %` on two integers give the exact integer result; a result
//!   outside the integer range is an [arithmetic error](RuleError::Arithmetic),
//!   never a silent float. `/` on two integers gives an integer when the
//!   division is exact and a float otherwise. An integer literal larger
//!   than 2⁶⁴−1 is a syntax error. (`-` before a literal is negation:
//!   `-9223372036854775808` is the smallest integer.)
//! * Arithmetic with a float operand is float arithmetic: the integer
//!   operand is converted to the nearest float. A non-finite result is an
//!   arithmetic error.
//! * Comparisons (`== != < <= > >=`, and equality inside `contains` and
//!   between arrays or objects) compare the **exact** values, whatever the
//!   types: `9007199254740993 == 9007199254740992.0` is false, `100 == 1e2`
//!   and `[1] == [1.0]` are true. No comparison goes through a lossy
//!   conversion.
//!
//! # Bounded cost
//!
//! There are no loops, no user functions and no variables bindings, so an
//! evaluation visits each node of the expression at most once. Sources are
//! capped at [`MAX_SOURCE_CHARS`] characters, syntactic nesting at
//! [`MAX_NESTING`] levels, the expression tree at [`MAX_TREE_DEPTH`] levels,
//! the strings an evaluation builds (concatenation, `lower`, `upper`) at
//! [`MAX_EVAL_BYTES`] bytes in total, and the work it does (expression
//! nodes visited, plus bytes and values examined by functions, comparisons
//! and concatenations) at [`MAX_EVAL_WORK`] units. Each breach is a
//! [`RuleError::Limit`] naming the limit ([`RuleError::limit_exceeded`]).
//! Invalid input yields a [`RuleError`], never a panic.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

use serde_json::{Number, Value};

use crate::limits::{LimitExceeded, LimitKind};

mod ast;
mod eval;
mod lex;
mod parse;

use ast::*;
use eval::*;
use lex::*;
use parse::*;

/// Maximum length of a rule's source, in characters.
pub const MAX_SOURCE_CHARS: usize = 4096;
/// Maximum syntactic nesting (parentheses, unary operators, ternaries,
/// function arguments) while parsing.
pub const MAX_NESTING: usize = 64;
/// Maximum depth of the parsed expression tree (long operator chains such as
/// `a + b + c + …` count one level per operator).
pub const MAX_TREE_DEPTH: usize = 256;
/// Maximum number of bytes of strings one evaluation may build.
pub const MAX_EVAL_BYTES: usize = 64 * 1024 * 1024;
/// Maximum work of one evaluation: expression nodes visited, plus bytes
/// and JSON values examined by functions, comparisons and concatenations.
pub const MAX_EVAL_WORK: usize = 256 * 1024 * 1024;

/// Which limit a rule exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// The source is longer than [`MAX_SOURCE_CHARS`].
    SourceLength,
    /// Nesting is deeper than [`MAX_NESTING`].
    Nesting,
    /// The expression tree is deeper than [`MAX_TREE_DEPTH`].
    TreeDepth,
    /// The evaluation built more than [`MAX_EVAL_BYTES`] of strings.
    EvalBytes,
    /// The evaluation did more than [`MAX_EVAL_WORK`] units of work.
    EvalWork,
}

impl Limit {
    /// The numeric value of this limit.
    pub fn max(self) -> usize {
        match self {
            Limit::SourceLength => MAX_SOURCE_CHARS,
            Limit::Nesting => MAX_NESTING,
            Limit::TreeDepth => MAX_TREE_DEPTH,
            Limit::EvalBytes => MAX_EVAL_BYTES,
            Limit::EvalWork => MAX_EVAL_WORK,
        }
    }

    /// Whether the limit is on evaluation (rather than on the source).
    pub fn is_evaluation(self) -> bool {
        matches!(self, Limit::EvalBytes | Limit::EvalWork)
    }
}

impl Limit {
    /// The corresponding [`LimitKind`].
    pub fn kind(self) -> LimitKind {
        match self {
            Limit::SourceLength => LimitKind::RuleSourceChars,
            Limit::Nesting => LimitKind::RuleNesting,
            Limit::TreeDepth => LimitKind::RuleTreeDepth,
            Limit::EvalBytes => LimitKind::RuleEvalBytes,
            Limit::EvalWork => LimitKind::RuleEvalWork,
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Limit::SourceLength => "maximum source length (characters)",
            Limit::Nesting => "maximum nesting depth",
            Limit::TreeDepth => "maximum expression depth",
            Limit::EvalBytes => "maximum evaluation string bytes",
            Limit::EvalWork => "maximum evaluation work",
        };
        write!(f, "{name} of {}", self.max())
    }
}

/// An error parsing or evaluating a [`Rule`]. Every variant carries the
/// 1-based column (in characters) of the offending place in the source.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RuleError {
    /// The source is not a valid expression.
    #[error("syntax error at column {column}: {message}")]
    Syntax {
        /// What is wrong.
        message: String,
        /// 1-based column.
        column: usize,
    },
    /// The rule exceeds a size, depth or cost limit. Reads "too complex
    /// at column …" for source limits and "too costly to evaluate at
    /// column …" for evaluation ones, followed by the limit and the value.
    #[error(
        "{} at column {column}: {}",
        if limit.is_evaluation() { "too costly to evaluate" } else { "too complex" },
        self.limit_exceeded().map(|l| l.to_string()).unwrap_or_default()
    )]
    Limit {
        /// Which limit.
        limit: Limit,
        /// 1-based column.
        column: usize,
        /// The value that crossed it: the source's length in characters,
        /// the nesting or depth reached, or the bytes or work units the
        /// evaluation reached (a lower bound: evaluation stops there).
        value: usize,
    },
    /// The rule reads a variable or field that is not present.
    #[error("unknown variable `{name}` at column {column}")]
    MissingVariable {
        /// The variable, or dotted field path, that is missing.
        name: String,
        /// 1-based column.
        column: usize,
    },
    /// An operator or function was applied to values of the wrong type.
    #[error("type error at column {column}: {message}")]
    Type {
        /// What is wrong.
        message: String,
        /// 1-based column.
        column: usize,
    },
    /// Arithmetic failed (division by zero, overflow, non-finite result).
    #[error("arithmetic error at column {column}: {message}")]
    Arithmetic {
        /// What is wrong.
        message: String,
        /// 1-based column.
        column: usize,
    },
}

impl RuleError {
    /// The 1-based column (in characters) the error refers to.
    pub fn column(&self) -> usize {
        match self {
            RuleError::Syntax { column, .. }
            | RuleError::Limit { column, .. }
            | RuleError::MissingVariable { column, .. }
            | RuleError::Type { column, .. }
            | RuleError::Arithmetic { column, .. } => *column,
        }
    }

    /// The limit exceeded, for [`RuleError::Limit`].
    pub fn limit_exceeded(&self) -> Option<LimitExceeded> {
        match self {
            RuleError::Limit {
                limit: l @ Limit::SourceLength,
                value,
                ..
            } => Some(LimitExceeded::of(l.kind(), l.max(), *value)),
            RuleError::Limit { limit, value, .. } => Some(LimitExceeded::of_at_least(
                limit.kind(),
                limit.max(),
                *value,
            )),
            _ => None,
        }
    }

    fn syntax(message: impl Into<String>, column: usize) -> Self {
        RuleError::Syntax {
            message: message.into(),
            column,
        }
    }

    fn type_err(message: impl Into<String>, column: usize) -> Self {
        RuleError::Type {
            message: message.into(),
            column,
        }
    }

    fn arith(message: impl Into<String>, column: usize) -> Self {
        RuleError::Arithmetic {
            message: message.into(),
            column,
        }
    }
}

/// A parsed rule expression, ready to evaluate any number of times.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    source: String,
    root: Expr,
    variables: Vec<String>,
}

impl Rule {
    /// Parses `source`, enforcing [`MAX_SOURCE_CHARS`], [`MAX_NESTING`] and
    /// [`MAX_TREE_DEPTH`].
    pub fn parse(source: &str) -> Result<Rule, RuleError> {
        if source.char_indices().nth(MAX_SOURCE_CHARS).is_some() {
            return Err(RuleError::Limit {
                limit: Limit::SourceLength,
                column: MAX_SOURCE_CHARS + 1,
                value: source.chars().count(),
            });
        }
        let tokens = lex(source)?;
        let mut parser = Parser {
            tokens,
            pos: 0,
            nesting: 0,
        };
        let root = parser.parse_ternary()?;
        let next = parser.peek();
        if next.tok != Tok::Eof {
            return Err(RuleError::syntax(
                format!("unexpected {} after the expression", next.tok.describe()),
                next.column,
            ));
        }
        let mut variables = Vec::new();
        root.collect_variables(&mut variables);
        variables.sort();
        variables.dedup();
        Ok(Rule {
            source: source.to_owned(),
            root,
            variables,
        })
    }

    /// The source text this rule was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The top-level variable names the rule may read, sorted and without
    /// duplicates (for `a.b.c` this is `a`).
    pub fn variables(&self) -> Vec<String> {
        self.variables.clone()
    }

    /// Evaluates the rule against `vars`, a JSON object mapping variable
    /// names to values. A variable that is absent (or `vars` not being an
    /// object) is a [`RuleError::MissingVariable`].
    pub fn eval(&self, vars: &Value) -> Result<Value, RuleError> {
        let mut ev = Evaluator {
            vars,
            bytes_left: MAX_EVAL_BYTES,
            work_left: MAX_EVAL_WORK,
        };
        Ok(ev.eval(&self.root)?.into_owned())
    }

    /// Evaluates the rule and requires a boolean result (for edge `when`
    /// conditions).
    pub fn eval_bool(&self, vars: &Value) -> Result<bool, RuleError> {
        match self.eval(vars)? {
            Value::Bool(b) => Ok(b),
            other => Err(RuleError::type_err(
                format!("condition must be a boolean, got {}", type_name(&other)),
                1,
            )),
        }
    }
}

impl std::str::FromStr for Rule {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Rule::parse(s)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests;
