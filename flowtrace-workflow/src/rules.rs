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

use super::limits::{LimitExceeded, LimitKind};

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

// ---------------------------------------------------------------- lexer --

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Int(u64),
    Float(f64),
    Str(String),
    Ident(String),
    True,
    False,
    Null,
    LParen,
    RParen,
    Comma,
    Dot,
    Question,
    Colon,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Bang,
    AndAnd,
    OrOr,
    EqEq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Int(_) | Tok::Float(_) => "number".into(),
            Tok::Str(_) => "string".into(),
            Tok::Ident(name) => format!("identifier `{name}`"),
            Tok::True => "`true`".into(),
            Tok::False => "`false`".into(),
            Tok::Null => "`null`".into(),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::Comma => "`,`".into(),
            Tok::Dot => "`.`".into(),
            Tok::Question => "`?`".into(),
            Tok::Colon => "`:`".into(),
            Tok::Plus => "`+`".into(),
            Tok::Minus => "`-`".into(),
            Tok::Star => "`*`".into(),
            Tok::Slash => "`/`".into(),
            Tok::Percent => "`%`".into(),
            Tok::Bang => "`!`".into(),
            Tok::AndAnd => "`&&`".into(),
            Tok::OrOr => "`||`".into(),
            Tok::EqEq => "`==`".into(),
            Tok::NotEq => "`!=`".into(),
            Tok::Lt => "`<`".into(),
            Tok::Le => "`<=`".into(),
            Tok::Gt => "`>`".into(),
            Tok::Ge => "`>=`".into(),
            Tok::Eof => "end of input".into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    column: usize,
}

fn lex(source: &str) -> Result<Vec<Token>, RuleError> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let (tok, len) = match c {
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            ',' => (Tok::Comma, 1),
            '.' => (Tok::Dot, 1),
            '?' => (Tok::Question, 1),
            ':' => (Tok::Colon, 1),
            '+' => (Tok::Plus, 1),
            '-' => (Tok::Minus, 1),
            '*' => (Tok::Star, 1),
            '/' => (Tok::Slash, 1),
            '%' => (Tok::Percent, 1),
            '!' if next == Some('=') => (Tok::NotEq, 2),
            '!' => (Tok::Bang, 1),
            '=' if next == Some('=') => (Tok::EqEq, 2),
            '=' => return Err(RuleError::syntax("expected `==`, found `=`", column)),
            '<' if next == Some('=') => (Tok::Le, 2),
            '<' => (Tok::Lt, 1),
            '>' if next == Some('=') => (Tok::Ge, 2),
            '>' => (Tok::Gt, 1),
            '&' if next == Some('&') => (Tok::AndAnd, 2),
            '&' => return Err(RuleError::syntax("expected `&&`, found `&`", column)),
            '|' if next == Some('|') => (Tok::OrOr, 2),
            '|' => return Err(RuleError::syntax("expected `||`, found `|`", column)),
            '\'' | '"' => lex_string(&chars, i)?,
            '0'..='9' => lex_number(&chars, i)?,
            c if c.is_alphabetic() || c == '_' => {
                let mut end = i;
                while end < chars.len() && (chars[end].is_alphanumeric() || chars[end] == '_') {
                    end += 1;
                }
                let word: String = chars[i..end].iter().collect();
                let tok = match word.as_str() {
                    "true" => Tok::True,
                    "false" => Tok::False,
                    "null" => Tok::Null,
                    _ => Tok::Ident(word),
                };
                (tok, end - i)
            }
            other => {
                return Err(RuleError::syntax(
                    format!("unexpected character {other:?}"),
                    column,
                ));
            }
        };
        tokens.push(Token { tok, column });
        i += len;
    }
    tokens.push(Token {
        tok: Tok::Eof,
        column: chars.len() + 1,
    });
    Ok(tokens)
}

/// Lexes a quoted string starting at `start`; returns the token and the
/// number of characters consumed.
fn lex_string(chars: &[char], start: usize) -> Result<(Tok, usize), RuleError> {
    let quote = chars[start];
    let mut out = String::new();
    let mut i = start + 1;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(RuleError::syntax("unterminated string literal", start + 1));
        };
        if c == quote {
            return Ok((Tok::Str(out), i + 1 - start));
        }
        if c == '\\' {
            let escaped = match chars.get(i + 1) {
                Some('\\') => '\\',
                Some('\'') => '\'',
                Some('"') => '"',
                Some('n') => '\n',
                Some('r') => '\r',
                Some('t') => '\t',
                Some('0') => '\0',
                Some(other) => {
                    return Err(RuleError::syntax(
                        format!("unknown escape `\\{other}`"),
                        i + 1,
                    ));
                }
                None => {
                    return Err(RuleError::syntax("unterminated string literal", start + 1));
                }
            };
            out.push(escaped);
            i += 2;
        } else {
            out.push(c);
            i += 1;
        }
    }
}

/// Lexes an unsigned number starting at `start`.
fn lex_number(chars: &[char], start: usize) -> Result<(Tok, usize), RuleError> {
    let digits = |mut i: usize| {
        while chars.get(i).is_some_and(char::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let mut end = digits(start);
    let mut is_float = false;
    if chars.get(end) == Some(&'.') && chars.get(end + 1).is_some_and(char::is_ascii_digit) {
        end = digits(end + 1);
        is_float = true;
    }
    if matches!(chars.get(end), Some('e' | 'E')) {
        let mut exp = end + 1;
        if matches!(chars.get(exp), Some('+' | '-')) {
            exp += 1;
        }
        if !chars.get(exp).is_some_and(char::is_ascii_digit) {
            return Err(RuleError::syntax("malformed number exponent", end + 1));
        }
        end = digits(exp);
        is_float = true;
    }
    let text: String = chars[start..end].iter().collect();
    let column = start + 1;
    if let Some(c) = chars.get(end)
        && (c.is_alphanumeric() || *c == '_')
    {
        return Err(RuleError::syntax(
            format!("unexpected character {c:?} in number"),
            end + 1,
        ));
    }
    if !is_float {
        return match text.parse::<u64>() {
            Ok(n) => Ok((Tok::Int(n), end - start)),
            Err(_) => Err(RuleError::syntax(
                format!(
                    "integer literal out of range (the largest integer is {})",
                    u64::MAX
                ),
                column,
            )),
        };
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok((Tok::Float(f), end - start)),
        _ => Err(RuleError::syntax("number literal out of range", column)),
    }
}

// ------------------------------------------------------------------ AST --

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Len,
    Contains,
    StartsWith,
    Lower,
    Upper,
}

impl Func {
    fn from_name(name: &str) -> Option<Func> {
        Some(match name {
            "len" => Func::Len,
            "contains" => Func::Contains,
            "starts_with" => Func::StartsWith,
            "lower" => Func::Lower,
            "upper" => Func::Upper,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Func::Len => "len",
            Func::Contains => "contains",
            Func::StartsWith => "starts_with",
            Func::Lower => "lower",
            Func::Upper => "upper",
        }
    }

    fn arity(self) -> usize {
        match self {
            Func::Len | Func::Lower | Func::Upper => 1,
            Func::Contains | Func::StartsWith => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinOp {
    fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "||",
            BinOp::And => "&&",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Lit(Value),
    Var(String),
    Field(Box<Expr>, String),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Ternary(Box<Expr>, Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
struct Expr {
    kind: Kind,
    /// 1-based column of the node's operator, name or literal.
    column: usize,
    depth: usize,
}

impl Expr {
    fn new(kind: Kind, column: usize) -> Result<Expr, RuleError> {
        let child_depth = match &kind {
            Kind::Lit(_) | Kind::Var(_) => 0,
            Kind::Field(e, _) | Kind::Not(e) | Kind::Neg(e) => e.depth,
            Kind::Binary(_, a, b) => a.depth.max(b.depth),
            Kind::Ternary(a, b, c) => a.depth.max(b.depth).max(c.depth),
            Kind::Call(_, args) => args.iter().map(|a| a.depth).max().unwrap_or(0),
        };
        let depth = child_depth + 1;
        if depth > MAX_TREE_DEPTH {
            return Err(RuleError::Limit {
                limit: Limit::TreeDepth,
                column,
                value: depth,
            });
        }
        Ok(Expr {
            kind,
            column,
            depth,
        })
    }

    fn collect_variables(&self, out: &mut Vec<String>) {
        match &self.kind {
            Kind::Lit(_) => {}
            Kind::Var(name) => out.push(name.clone()),
            Kind::Field(e, _) | Kind::Not(e) | Kind::Neg(e) => e.collect_variables(out),
            Kind::Binary(_, a, b) => {
                a.collect_variables(out);
                b.collect_variables(out);
            }
            Kind::Ternary(a, b, c) => {
                a.collect_variables(out);
                b.collect_variables(out);
                c.collect_variables(out);
            }
            Kind::Call(_, args) => args.iter().for_each(|a| a.collect_variables(out)),
        }
    }
}

// --------------------------------------------------------------- parser --

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    nesting: usize,
}

const EOF_TOKEN: Token = Token {
    tok: Tok::Eof,
    column: 1,
};

impl Parser {
    fn peek(&self) -> &Token {
        // The lexer always ends with `Eof` and the parser never advances
        // past it, so the fallback is unreachable in practice.
        self.tokens
            .get(self.pos)
            .or_else(|| self.tokens.last())
            .unwrap_or(&EOF_TOKEN)
    }

    fn advance(&mut self) -> Token {
        let token = self.peek().clone();
        if token.tok != Tok::Eof {
            self.pos += 1;
        }
        token
    }

    fn expect(&mut self, tok: &Tok, what: &str) -> Result<Token, RuleError> {
        let next = self.peek();
        if &next.tok == tok {
            Ok(self.advance())
        } else {
            Err(RuleError::syntax(
                format!("expected {what}, found {}", next.tok.describe()),
                next.column,
            ))
        }
    }

    fn enter(&mut self) -> Result<(), RuleError> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(RuleError::Limit {
                limit: Limit::Nesting,
                column: self.peek().column,
                value: self.nesting,
            });
        }
        Ok(())
    }

    fn parse_ternary(&mut self) -> Result<Expr, RuleError> {
        self.enter()?;
        let cond = self.parse_binary(0)?;
        let result = if self.peek().tok == Tok::Question {
            let q = self.advance();
            let then = self.parse_ternary()?;
            self.expect(&Tok::Colon, "`:` in ternary")?;
            let otherwise = self.parse_ternary()?;
            Expr::new(
                Kind::Ternary(Box::new(cond), Box::new(then), Box::new(otherwise)),
                q.column,
            )?
        } else {
            cond
        };
        self.nesting -= 1;
        Ok(result)
    }

    /// Precedence climbing over the left-associative binary operators;
    /// `level` indexes [`Parser::LEVELS`].
    fn parse_binary(&mut self, level: usize) -> Result<Expr, RuleError> {
        let Some(ops) = Self::LEVELS.get(level) else {
            return self.parse_unary();
        };
        let mut lhs = self.parse_binary(level + 1)?;
        loop {
            let next = self.peek();
            let Some(&(_, op)) = ops.iter().find(|(t, _)| *t == next.tok) else {
                return Ok(lhs);
            };
            let column = next.column;
            self.advance();
            let rhs = self.parse_binary(level + 1)?;
            lhs = Expr::new(Kind::Binary(op, Box::new(lhs), Box::new(rhs)), column)?;
        }
    }

    const LEVELS: &'static [&'static [(Tok, BinOp)]] = &[
        &[(Tok::OrOr, BinOp::Or)],
        &[(Tok::AndAnd, BinOp::And)],
        &[(Tok::EqEq, BinOp::Eq), (Tok::NotEq, BinOp::Ne)],
        &[
            (Tok::Lt, BinOp::Lt),
            (Tok::Le, BinOp::Le),
            (Tok::Gt, BinOp::Gt),
            (Tok::Ge, BinOp::Ge),
        ],
        &[(Tok::Plus, BinOp::Add), (Tok::Minus, BinOp::Sub)],
        &[
            (Tok::Star, BinOp::Mul),
            (Tok::Slash, BinOp::Div),
            (Tok::Percent, BinOp::Rem),
        ],
    ];

    fn parse_unary(&mut self) -> Result<Expr, RuleError> {
        let next = self.peek().clone();
        match next.tok {
            Tok::Bang | Tok::Minus => {
                self.advance();
                self.enter()?;
                let operand = self.parse_unary()?;
                self.nesting -= 1;
                let kind = if next.tok == Tok::Bang {
                    Kind::Not(Box::new(operand))
                } else {
                    Kind::Neg(Box::new(operand))
                };
                Expr::new(kind, next.column)
            }
            _ => self.parse_postfix(),
        }
    }

    fn parse_postfix(&mut self) -> Result<Expr, RuleError> {
        let mut expr = self.parse_primary()?;
        while self.peek().tok == Tok::Dot {
            self.advance();
            let name = self.advance();
            let Tok::Ident(field) = name.tok else {
                return Err(RuleError::syntax(
                    format!(
                        "expected a field name after `.`, found {}",
                        name.tok.describe()
                    ),
                    name.column,
                ));
            };
            expr = Expr::new(Kind::Field(Box::new(expr), field), name.column)?;
        }
        Ok(expr)
    }

    fn parse_primary(&mut self) -> Result<Expr, RuleError> {
        let token = self.advance();
        let column = token.column;
        match token.tok {
            Tok::Int(n) => Expr::new(Kind::Lit(Value::from(n)), column),
            Tok::Float(f) => match Number::from_f64(f) {
                Some(n) => Expr::new(Kind::Lit(Value::Number(n)), column),
                None => Err(RuleError::syntax("number literal out of range", column)),
            },
            Tok::Str(s) => Expr::new(Kind::Lit(Value::String(s)), column),
            Tok::True => Expr::new(Kind::Lit(Value::Bool(true)), column),
            Tok::False => Expr::new(Kind::Lit(Value::Bool(false)), column),
            Tok::Null => Expr::new(Kind::Lit(Value::Null), column),
            Tok::LParen => {
                let inner = self.parse_ternary()?;
                self.expect(&Tok::RParen, "`)`")?;
                Ok(inner)
            }
            Tok::Ident(name) if self.peek().tok == Tok::LParen => {
                let Some(func) = Func::from_name(&name) else {
                    return Err(RuleError::syntax(
                        format!(
                            "unknown function `{name}` (expected len, contains, starts_with, lower or upper)"
                        ),
                        column,
                    ));
                };
                self.advance();
                let mut args = Vec::new();
                if self.peek().tok != Tok::RParen {
                    loop {
                        args.push(self.parse_ternary()?);
                        if self.peek().tok != Tok::Comma {
                            break;
                        }
                        self.advance();
                    }
                }
                let close = self.expect(&Tok::RParen, "`,` or `)`")?;
                if args.len() != func.arity() {
                    return Err(RuleError::syntax(
                        format!(
                            "`{}` takes {} argument(s), got {}",
                            func.name(),
                            func.arity(),
                            args.len()
                        ),
                        close.column,
                    ));
                }
                Expr::new(Kind::Call(func, args), column)
            }
            Tok::Ident(name) => Expr::new(Kind::Var(name), column),
            other => Err(RuleError::syntax(
                format!("expected an expression, found {}", other.describe()),
                column,
            )),
        }
    }
}

// ------------------------------------------------------------ evaluator --

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A number: an exact integer in [`INT_MIN`, `INT_MAX`], or a float.
#[derive(Debug, Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

/// The smallest integer (−2⁶³).
const INT_MIN: i128 = i64::MIN as i128;
/// The largest integer (2⁶⁴−1).
const INT_MAX: i128 = u64::MAX as i128;
/// 2⁶⁴ as a float: every float at or above it is above every integer.
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
/// −2⁶³ as a float (exact).
const MINUS_TWO_POW_63: f64 = -9_223_372_036_854_775_808.0;

impl Num {
    fn of(n: &Number) -> Num {
        if let Some(i) = n.as_i64() {
            Num::Int(i128::from(i))
        } else if let Some(u) = n.as_u64() {
            Num::Int(i128::from(u))
        } else {
            Num::Float(n.as_f64().unwrap_or(f64::NAN))
        }
    }

    /// The nearest float (for float arithmetic).
    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    /// Exact comparison, across types; `None` only for NaN.
    fn cmp(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (Num::Int(i), Num::Float(f)) => cmp_int_float(i, f),
            (Num::Float(f), Num::Int(i)) => cmp_int_float(i, f).map(Ordering::reverse),
            (Num::Float(a), Num::Float(b)) => a.partial_cmp(&b),
        }
    }
}

/// Compares integer `i` (within [`INT_MIN`, `INT_MAX`]) with float `f`
/// exactly: `i` is never converted to a float, which could round it.
fn cmp_int_float(i: i128, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    if f >= TWO_POW_64 {
        return Some(Ordering::Less);
    }
    if f < MINUS_TWO_POW_63 {
        return Some(Ordering::Greater);
    }
    // `f` now lies in [−2⁶³, 2⁶⁴): its integer part is exact in i128.
    let whole = f.trunc();
    match i.cmp(&(whole as i128)) {
        Ordering::Equal => whole.partial_cmp(&f),
        unequal => Some(unequal),
    }
}

/// An integer result as JSON, or an overflow error outside the range.
fn int_value(i: i128, column: usize) -> Result<Value, RuleError> {
    if let Ok(v) = i64::try_from(i) {
        Ok(Value::from(v))
    } else if let Ok(v) = u64::try_from(i) {
        Ok(Value::from(v))
    } else {
        Err(RuleError::arith(
            format!(
                "integer overflow: the result is outside the integer range {INT_MIN} to {INT_MAX}"
            ),
            column,
        ))
    }
}

fn float_value(f: f64, column: usize) -> Result<Value, RuleError> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| RuleError::arith("result is not a finite number", column))
}

struct Evaluator<'a> {
    vars: &'a Value,
    bytes_left: usize,
    work_left: usize,
}

impl<'a> Evaluator<'a> {
    fn charge(&mut self, bytes: usize, column: usize) -> Result<(), RuleError> {
        self.work(bytes, column)?;
        match self.bytes_left.checked_sub(bytes) {
            Some(left) => {
                self.bytes_left = left;
                Ok(())
            }
            None => Err(RuleError::Limit {
                limit: Limit::EvalBytes,
                column,
                value: (MAX_EVAL_BYTES - self.bytes_left).saturating_add(bytes),
            }),
        }
    }

    fn work(&mut self, units: usize, column: usize) -> Result<(), RuleError> {
        match self.work_left.checked_sub(units) {
            Some(left) => {
                self.work_left = left;
                Ok(())
            }
            None => Err(RuleError::Limit {
                limit: Limit::EvalWork,
                column,
                value: (MAX_EVAL_WORK - self.work_left).saturating_add(units),
            }),
        }
    }

    /// Exact structural equality (numbers compared exactly across types),
    /// charging one unit per value and one per string byte compared.
    fn values_equal(&mut self, a: &Value, b: &Value, column: usize) -> Result<bool, RuleError> {
        let mut pending = vec![(a, b)];
        while let Some((a, b)) = pending.pop() {
            self.work(1, column)?;
            let same = match (a, b) {
                (Value::Null, Value::Null) => true,
                (Value::Bool(x), Value::Bool(y)) => x == y,
                (Value::Number(x), Value::Number(y)) => {
                    Num::of(x).cmp(Num::of(y)) == Some(Ordering::Equal)
                }
                (Value::String(x), Value::String(y)) => {
                    self.work(x.len().min(y.len()), column)?;
                    x == y
                }
                (Value::Array(x), Value::Array(y)) => {
                    pending.extend(x.iter().zip(y));
                    x.len() == y.len()
                }
                (Value::Object(x), Value::Object(y)) => {
                    self.work(x.len(), column)?;
                    let mut same = x.len() == y.len();
                    for (key, value) in x {
                        match y.get(key) {
                            Some(other) if same => pending.push((value, other)),
                            _ => same = false,
                        }
                    }
                    same
                }
                _ => false,
            };
            if !same {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn eval_bool_operand(&mut self, e: &'a Expr, op: &str) -> Result<bool, RuleError> {
        match self.eval(e)?.as_ref() {
            Value::Bool(b) => Ok(*b),
            other => Err(RuleError::type_err(
                format!("`{op}` needs a boolean, got {}", type_name(other)),
                e.column,
            )),
        }
    }

    fn eval(&mut self, e: &'a Expr) -> Result<Cow<'a, Value>, RuleError> {
        let column = e.column;
        self.work(1, column)?;
        match &e.kind {
            Kind::Lit(v) => Ok(Cow::Borrowed(v)),
            Kind::Var(name) => match self.vars.get(name) {
                Some(v) => Ok(Cow::Borrowed(v)),
                None => Err(RuleError::MissingVariable {
                    name: name.clone(),
                    column,
                }),
            },
            Kind::Field(inner, field) => {
                let base = self.eval(inner)?;
                let missing = || RuleError::MissingVariable {
                    name: format!("{}.{field}", path_of(inner)),
                    column,
                };
                match base {
                    Cow::Borrowed(Value::Object(map)) => {
                        map.get(field).map(Cow::Borrowed).ok_or_else(missing)
                    }
                    Cow::Owned(Value::Object(mut map)) => {
                        map.remove(field).map(Cow::Owned).ok_or_else(missing)
                    }
                    other => Err(RuleError::type_err(
                        format!(
                            "cannot read field `{field}` of a {}",
                            type_name(other.as_ref())
                        ),
                        column,
                    )),
                }
            }
            Kind::Not(inner) => Ok(Cow::Owned(Value::Bool(
                !self.eval_bool_operand(inner, "!")?,
            ))),
            Kind::Neg(inner) => match self.eval(inner)?.as_ref() {
                Value::Number(n) => match Num::of(n) {
                    Num::Int(i) => int_value(-i, column).map(Cow::Owned),
                    Num::Float(f) => float_value(-f, column).map(Cow::Owned),
                },
                other => Err(RuleError::type_err(
                    format!("cannot negate a {}", type_name(other)),
                    column,
                )),
            },
            Kind::Binary(BinOp::And, a, b) => {
                let v = self.eval_bool_operand(a, "&&")? && self.eval_bool_operand(b, "&&")?;
                Ok(Cow::Owned(Value::Bool(v)))
            }
            Kind::Binary(BinOp::Or, a, b) => {
                let v = self.eval_bool_operand(a, "||")? || self.eval_bool_operand(b, "||")?;
                Ok(Cow::Owned(Value::Bool(v)))
            }
            Kind::Binary(op, a, b) => {
                let lhs = self.eval(a)?;
                let rhs = self.eval(b)?;
                self.binary(*op, lhs.as_ref(), rhs.as_ref(), column)
                    .map(Cow::Owned)
            }
            Kind::Ternary(cond, then, otherwise) => {
                if self.eval_bool_operand(cond, "?")? {
                    self.eval(then)
                } else {
                    self.eval(otherwise)
                }
            }
            Kind::Call(func, args) => {
                let mut values = Vec::with_capacity(args.len());
                for arg in args {
                    values.push(self.eval(arg)?);
                }
                self.call(*func, &values, column).map(Cow::Owned)
            }
        }
    }

    fn binary(
        &mut self,
        op: BinOp,
        lhs: &Value,
        rhs: &Value,
        column: usize,
    ) -> Result<Value, RuleError> {
        let mismatch = || {
            RuleError::type_err(
                format!(
                    "`{}` cannot be applied to {} and {}",
                    op.symbol(),
                    type_name(lhs),
                    type_name(rhs)
                ),
                column,
            )
        };
        match op {
            BinOp::Eq => Ok(Value::Bool(self.values_equal(lhs, rhs, column)?)),
            BinOp::Ne => Ok(Value::Bool(!self.values_equal(lhs, rhs, column)?)),
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let ord = match (lhs, rhs) {
                    (Value::Number(x), Value::Number(y)) => Num::of(x).cmp(Num::of(y)),
                    (Value::String(x), Value::String(y)) => {
                        self.work(x.len().min(y.len()), column)?;
                        Some(x.cmp(y))
                    }
                    _ => return Err(mismatch()),
                };
                let Some(ord) = ord else {
                    return Ok(Value::Bool(false));
                };
                Ok(Value::Bool(match op {
                    BinOp::Lt => ord.is_lt(),
                    BinOp::Le => ord.is_le(),
                    BinOp::Gt => ord.is_gt(),
                    _ => ord.is_ge(),
                }))
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => {
                if let (BinOp::Add, Value::String(x), Value::String(y)) = (op, lhs, rhs) {
                    // (`charge` also counts the bytes as work.)
                    self.charge(x.len().saturating_add(y.len()), column)?;
                    let mut s = String::with_capacity(x.len() + y.len());
                    s.push_str(x);
                    s.push_str(y);
                    return Ok(Value::String(s));
                }
                let (Value::Number(x), Value::Number(y)) = (lhs, rhs) else {
                    return Err(mismatch());
                };
                arithmetic(op, Num::of(x), Num::of(y), column)
            }
            BinOp::And | BinOp::Or => Err(mismatch()),
        }
    }

    fn call(
        &mut self,
        func: Func,
        args: &[Cow<'a, Value>],
        column: usize,
    ) -> Result<Value, RuleError> {
        let bad = || {
            let types: Vec<&str> = args.iter().map(|a| type_name(a.as_ref())).collect();
            RuleError::type_err(
                format!(
                    "`{}` cannot be applied to ({})",
                    func.name(),
                    types.join(", ")
                ),
                column,
            )
        };
        let arg = |i: usize| args.get(i).map(|a| a.as_ref());
        match (func, arg(0), arg(1)) {
            (Func::Len, Some(Value::String(s)), _) => {
                self.work(s.len(), column)?;
                Ok(Value::from(s.chars().count()))
            }
            (Func::Len, Some(Value::Array(a)), _) => Ok(Value::from(a.len())),
            (Func::Len, Some(Value::Object(o)), _) => Ok(Value::from(o.len())),
            (Func::Contains, Some(Value::String(h)), Some(Value::String(n))) => {
                self.work(h.len().saturating_add(n.len()), column)?;
                Ok(Value::Bool(h.contains(n.as_str())))
            }
            (Func::Contains, Some(Value::Array(items)), Some(needle)) => {
                for item in items {
                    if self.values_equal(item, needle, column)? {
                        return Ok(Value::Bool(true));
                    }
                }
                Ok(Value::Bool(false))
            }
            (Func::StartsWith, Some(Value::String(s)), Some(Value::String(p))) => {
                self.work(p.len(), column)?;
                Ok(Value::Bool(s.starts_with(p.as_str())))
            }
            (Func::Lower | Func::Upper, Some(Value::String(s)), _) => {
                // Case mapping can grow a string by at most 3x.
                self.charge(s.len().saturating_mul(3), column)?;
                Ok(Value::String(if func == Func::Lower {
                    s.to_lowercase()
                } else {
                    s.to_uppercase()
                }))
            }
            _ => Err(bad()),
        }
    }
}

fn arithmetic(op: BinOp, x: Num, y: Num, column: usize) -> Result<Value, RuleError> {
    if let (Num::Int(a), Num::Int(b)) = (x, y) {
        // Both within [−2⁶³, 2⁶⁴): sums, differences and remainders fit in
        // i128; products are checked.
        return match op {
            BinOp::Add => int_value(a + b, column),
            BinOp::Sub => int_value(a - b, column),
            BinOp::Mul => match a.checked_mul(b) {
                Some(p) => int_value(p, column),
                None => int_value(INT_MAX + 1, column),
            },
            BinOp::Div | BinOp::Rem if b == 0 => Err(RuleError::arith("division by zero", column)),
            BinOp::Div if a % b == 0 => int_value(a / b, column),
            BinOp::Div => float_value(a as f64 / b as f64, column),
            _ => int_value(a % b, column),
        };
    }
    let (a, b) = (x.as_f64(), y.as_f64());
    if matches!(op, BinOp::Div | BinOp::Rem) && b == 0.0 {
        return Err(RuleError::arith("division by zero", column));
    }
    let r = match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => a / b,
        _ => a % b,
    };
    float_value(r, column)
}

/// The dotted path of a field-access chain, for error messages.
fn path_of(e: &Expr) -> String {
    match &e.kind {
        Kind::Var(name) => name.clone(),
        Kind::Field(inner, field) => format!("{}.{field}", path_of(inner)),
        _ => "(expression)".into(),
    }
}

#[cfg(test)]
mod tests;
