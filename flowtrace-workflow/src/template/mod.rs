//! Substitution-only templates for JSON workflows.
//!
//! Node `inputs` and LLM `prompt` / `response` strings may contain
//! placeholders of exactly one shape, `{{ path }}`, where `path` is a dotted
//! path:
//!
//! | placeholder | value |
//! |---|---|
//! | `{{node.<id>.output}}` | the whole output of node `<id>` |
//! | `{{node.<id>.output.<field>.<field>…}}` | a field of that output (a numeric segment indexes an array: `items.0`) |
//! | `{{input}}`, `{{input.<var>…}}` | the workflow input, or a field of it |
//! | `{{<name>}}`, `{{<name>.<field>…}}` | an extra named variable supplied by the caller (for example a node's own input by name) |
//!
//! Templates never execute code. The parser is a small hand-written scanner,
//! not a template engine: there are no blocks (`{% … %}`), comments
//! (`{# … #}`), filters (`|`), calls, subscripts, literals or operators, and
//! any of these is rejected at parse time with a [`TemplateError`] pointing
//! at the offending line and column. (A general engine such as `minijinja`
//! always compiles `if`/`for`/expressions and only exposes its syntax tree
//! behind unstable features, so restricting it would have needed a scanner
//! like this one anyway.)
//!
//! Path segments are ASCII letters, digits, `_` and `-`; a segment may not
//! start with `-`, and the first segment may not start with a digit. Spaces
//! around the path are allowed (`{{ input.topic }}`), spaces inside it are
//! not. There is no escape for a literal `{{`; a lone `}}` outside a
//! placeholder is ordinary text.
//!
//! [`Template::references`] lists every node, input and variable a template
//! reads, so a workflow loader can reject a reference to a node that does not
//! exist or cannot have run before the referencing node. Rendering
//! ([`Template::render`], [`Template::render_value`]) looks values up in a
//! [`TemplateContext`]; a missing node, field or variable is an error naming
//! the full path, never a silent empty string.
//!
//! Hostile input is bounded: a template longer than [`MAX_TEMPLATE_LEN`]
//! bytes is rejected, and rendering stops with an error once the output would
//! exceed the context's output limit (by default [`DEFAULT_MAX_OUTPUT_LEN`]).
//! The limit applies to every way of rendering: [`Template::render`] stops
//! writing at the limit, and [`Template::render_value`] of a single
//! placeholder measures the referenced value (a string by its length,
//! anything else as compact JSON, stopping at the limit) before copying it.
//! The error ([`TemplateErrorKind::OutputTooLarge`]) carries the
//! [`LimitExceeded`] with the limit and the size reached.
//!
//! ```
//! use flowtrace_workflow::template::{Reference, Template, TemplateContext};
//! use serde_json::json;
//!
//! let t = Template::parse("Summarise {{ node.ingest.output.content }} about {{input.topic}}")?;
//! assert_eq!(
//!     t.references(),
//!     vec![
//!         Reference::Node { id: "ingest".into(), path: vec!["content".into()] },
//!         Reference::Input { path: vec!["topic".into()] },
//!     ]
//! );
//! let ctx = TemplateContext::new()
//!     .with_input(json!({"topic": "rust"}))
//!     .with_node_output("ingest", json!({"content": "a text"}));
//! assert_eq!(t.render(&ctx)?, "Summarise a text about rust");
//! # Ok::<(), flowtrace_workflow::template::TemplateError>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::LazyLock;

use serde_json::Value;

use super::limits::{LimitExceeded, LimitKind, Limits};
pub(crate) use flowtrace_report::size::rendered_len;

mod error;
mod parse;

pub use error::*;
use parse::*;

/// Largest template source accepted by [`Template::parse`], in bytes (64 KiB).
pub const MAX_TEMPLATE_LEN: usize = 64 * 1024;

/// Default largest rendered output, in bytes (1 MiB, the default
/// [`Limits::template_output_bytes`]); see
/// [`TemplateContext::with_max_output_len`].
pub const DEFAULT_MAX_OUTPUT_LEN: usize = Limits::DEFAULT.template_output_bytes;

/// Something a template reads, as listed by [`Template::references`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Reference {
    /// `{{node.<id>.output…}}`: the output of node `id`; `path` is the field
    /// path after `output` (empty for the whole output).
    Node {
        /// The referenced node's id.
        id: String,
        /// Field path within the node's output (after `output`).
        path: Vec<String>,
    },
    /// `{{input…}}`: the workflow input; `path` is the field path after
    /// `input` (empty for the whole input).
    Input {
        /// Field path within the workflow input.
        path: Vec<String>,
    },
    /// `{{<name>…}}`: an extra named variable (only its name; any field path
    /// after it is resolved at render time).
    Var(String),
}

/// The root a placeholder path starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Root {
    Node(String),
    Input,
    Var(String),
}

/// One `{{ … }}` placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expr {
    root: Root,
    /// Field path after the root (after `output` for nodes).
    path: Vec<String>,
    /// The path as written, for error messages (`node.a.output.x`).
    text: String,
    /// Byte offset of the opening `{{`.
    offset: usize,
}

impl Expr {
    fn reference(&self) -> Reference {
        match &self.root {
            Root::Node(id) => Reference::Node {
                id: id.clone(),
                path: self.path.clone(),
            },
            Root::Input => Reference::Input {
                path: self.path.clone(),
            },
            Root::Var(name) => Reference::Var(name.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Expr(Expr),
}

/// A parsed, substitution-only template. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// Values a template is rendered against: node outputs by node id, the
/// workflow input, and extra named variables.
#[derive(Debug, Clone)]
pub struct TemplateContext {
    nodes: HashMap<String, Value>,
    input: Value,
    vars: HashMap<String, Value>,
    max_output_len: usize,
}

impl Default for TemplateContext {
    fn default() -> Self {
        Self::new()
    }
}

impl TemplateContext {
    /// An empty context: no node outputs, input `{}`, no variables, output
    /// limit [`DEFAULT_MAX_OUTPUT_LEN`].
    pub fn new() -> Self {
        Self {
            nodes: HashMap::new(),
            input: Value::Object(serde_json::Map::new()),
            vars: HashMap::new(),
            max_output_len: DEFAULT_MAX_OUTPUT_LEN,
        }
    }

    /// Sets the workflow input (read by `{{input…}}`).
    #[must_use]
    pub fn with_input(mut self, input: Value) -> Self {
        self.input = input;
        self
    }

    /// Adds (or replaces) the output of node `id` (read by
    /// `{{node.<id>.output…}}`).
    #[must_use]
    pub fn with_node_output(mut self, id: impl Into<String>, output: Value) -> Self {
        self.insert_node_output(id, output);
        self
    }

    /// Adds (or replaces) an extra named variable (read by `{{<name>…}}`).
    #[must_use]
    pub fn with_var(mut self, name: impl Into<String>, value: Value) -> Self {
        self.insert_var(name, value);
        self
    }

    /// Sets the largest output [`Template::render`] may produce, in bytes.
    #[must_use]
    pub fn with_max_output_len(mut self, max: usize) -> Self {
        self.max_output_len = max;
        self
    }

    /// Sets the workflow input in place.
    pub fn set_input(&mut self, input: Value) {
        self.input = input;
    }

    /// Adds (or replaces) the output of node `id` in place.
    pub fn insert_node_output(&mut self, id: impl Into<String>, output: Value) {
        self.nodes.insert(id.into(), output);
    }

    /// Adds (or replaces) an extra named variable in place.
    pub fn insert_var(&mut self, name: impl Into<String>, value: Value) {
        self.vars.insert(name.into(), value);
    }

    /// The workflow input.
    pub fn input(&self) -> &Value {
        &self.input
    }

    /// The output of node `id`, if recorded.
    pub fn node_output(&self, id: &str) -> Option<&Value> {
        self.nodes.get(id)
    }

    /// The extra variable `name`, if set.
    pub fn var(&self, name: &str) -> Option<&Value> {
        self.vars.get(name)
    }

    /// The output limit in bytes.
    pub fn max_output_len(&self) -> usize {
        self.max_output_len
    }
}

impl Template {
    /// Parses `source`, rejecting anything but text and `{{ path }}`
    /// placeholders. Errors carry the 1-based line/column of the problem.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        if source.len() > MAX_TEMPLATE_LEN {
            let limit = LimitExceeded::of(
                LimitKind::TemplateSourceBytes,
                MAX_TEMPLATE_LEN,
                source.len(),
            );
            let mut e = TemplateError::new(
                TemplateErrorKind::TemplateTooLong,
                format!("template too long: {limit}"),
                None,
            );
            e.limit = Some(Box::new(limit));
            return Err(e);
        }
        let mut parts = Vec::new();
        let mut text_start = 0;
        let mut pos = 0;
        while let Some(rel) = source.get(pos..).and_then(|rest| rest.find('{')) {
            let open = pos + rel;
            let next = source.as_bytes().get(open + 1).copied();
            match next {
                Some(b'{') => {
                    if open > text_start {
                        parts.push(Part::Text(
                            source.get(text_start..open).unwrap_or("").to_owned(),
                        ));
                    }
                    let inner_start = open + 2;
                    let Some(close_rel) =
                        source.get(inner_start..).and_then(|rest| rest.find("}}"))
                    else {
                        return Err(TemplateError::at(
                            TemplateErrorKind::Syntax,
                            source,
                            open,
                            "unterminated `{{`: missing closing `}}`",
                        ));
                    };
                    let inner_end = inner_start + close_rel;
                    let expr = parse_expr(source, open, inner_start, inner_end)?;
                    parts.push(Part::Expr(expr));
                    pos = inner_end + 2;
                    text_start = pos;
                }
                Some(b'%') => {
                    return Err(TemplateError::at(
                        TemplateErrorKind::Unsupported,
                        source,
                        open,
                        "`{% … %}` blocks (if, for, set, …) are not supported; templates only substitute `{{ path }}`",
                    ));
                }
                Some(b'#') => {
                    return Err(TemplateError::at(
                        TemplateErrorKind::Unsupported,
                        source,
                        open,
                        "`{# … #}` comments are not supported; templates only substitute `{{ path }}`",
                    ));
                }
                _ => pos = open + 1,
            }
        }
        if source.len() > text_start {
            parts.push(Part::Text(
                source.get(text_start..).unwrap_or("").to_owned(),
            ));
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// The source the template was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template is exactly one placeholder with no surrounding
    /// text (not even whitespace); [`render_value`](Self::render_value) then
    /// returns the referenced JSON value unchanged.
    pub fn is_single_expression(&self) -> bool {
        matches!(self.parts.as_slice(), [Part::Expr(_)])
    }

    /// Whether the template has no placeholders at all.
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// Everything the template reads, in order of first appearance, without
    /// duplicates.
    pub fn references(&self) -> Vec<Reference> {
        let mut out: Vec<Reference> = Vec::new();
        for part in &self.parts {
            if let Part::Expr(expr) = part {
                let r = expr.reference();
                if !out.contains(&r) {
                    out.push(r);
                }
            }
        }
        out
    }

    /// Renders the template to a string. Strings are inserted as they are;
    /// any other value (number, bool, null, object, array) is inserted as
    /// compact JSON. Fails if a referenced value is missing or the output
    /// would exceed [`TemplateContext::max_output_len`].
    pub fn render(&self, ctx: &TemplateContext) -> Result<String, TemplateError> {
        self.render_in(ctx, Cap::template(ctx.max_output_len))
    }

    /// Renders the template to a JSON value: if the template is a single
    /// placeholder ([`is_single_expression`](Self::is_single_expression)),
    /// the referenced value itself (so a workflow input keeps its JSON type);
    /// otherwise the [rendered](Self::render) string as a JSON string. Either
    /// way the result is at most [`TemplateContext::max_output_len`] bytes
    /// (a value counted as compact JSON, a string by its length).
    pub fn render_value(&self, ctx: &TemplateContext) -> Result<Value, TemplateError> {
        self.render_value_in(ctx, Cap::template(ctx.max_output_len))
            .map(|(value, _)| value)
    }

    /// [`render`](Self::render) against any [`Scope`], with output cap `cap`.
    pub(crate) fn render_in(&self, scope: &impl Scope, cap: Cap) -> Result<String, TemplateError> {
        let mut out = LimitedBuf {
            buf: Vec::new(),
            limit: cap.max,
            tried: 0,
        };
        for part in &self.parts {
            let written = match part {
                Part::Text(text) => out.push(text.as_bytes()),
                Part::Expr(expr) => match self.lookup(expr, scope)? {
                    Value::String(s) => out.push(s.as_bytes()),
                    other => serde_json::to_writer(&mut out, other).map_err(|_| ()),
                },
            };
            if written.is_err() {
                return Err(TemplateError::output_too_large(cap.exceeded(out.tried)));
            }
        }
        String::from_utf8(out.buf).map_err(|_| {
            TemplateError::new(
                TemplateErrorKind::Syntax,
                "rendered output is not valid UTF-8",
                None,
            )
        })
    }

    /// [`render_value`](Self::render_value) against any [`Scope`], with
    /// output cap `cap`; also returns the rendered size in bytes.
    pub(crate) fn render_value_in(
        &self,
        scope: &impl Scope,
        cap: Cap,
    ) -> Result<(Value, usize), TemplateError> {
        match self.parts.as_slice() {
            [Part::Expr(expr)] => {
                let value = self.lookup(expr, scope)?;
                let len = rendered_len(value, cap.max)
                    .map_err(|tried| TemplateError::output_too_large(cap.exceeded(tried)))?;
                Ok((value.clone(), len))
            }
            _ => self.render_in(scope, cap).map(|s| {
                let len = s.len();
                (Value::String(s), len)
            }),
        }
    }

    fn lookup<'c>(&self, expr: &Expr, scope: &'c impl Scope) -> Result<&'c Value, TemplateError> {
        let missing = |message: String| {
            TemplateError::at(
                TemplateErrorKind::MissingValue,
                &self.source,
                expr.offset,
                message,
            )
        };
        let (mut current, mut walked) = match &expr.root {
            Root::Node(id) => match scope.node_output(id) {
                Some(v) => (v, format!("node.{id}.output")),
                None => {
                    return Err(missing(format!(
                        "`{}`: node `{id}` has no output (it is unknown or has not run)",
                        expr.text
                    )));
                }
            },
            Root::Input => (scope.input().unwrap_or(&*EMPTY_OBJECT), "input".to_owned()),
            Root::Var(name) => match scope.var(name) {
                Some(v) => (v, name.clone()),
                None => {
                    return Err(missing(format!(
                        "`{}`: variable `{name}` is not defined",
                        expr.text
                    )));
                }
            },
        };
        for segment in &expr.path {
            let next = match current {
                Value::Object(map) => map.get(segment),
                Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            };
            current = match next {
                Some(v) => v,
                None => {
                    let why = match current {
                        Value::Object(_) => format!("`{walked}` has no field `{segment}`"),
                        Value::Array(items) => format!(
                            "`{walked}` is an array of {} items; `{segment}` is not a valid index",
                            items.len()
                        ),
                        other => format!(
                            "`{walked}` is {}, which has no field `{segment}`",
                            type_name(other)
                        ),
                    };
                    return Err(missing(format!("`{}`: {why}", expr.text)));
                }
            };
            walked.push('.');
            walked.push_str(segment);
        }
        Ok(current)
    }
}

/// The input of a scope without one: `{}`.
static EMPTY_OBJECT: LazyLock<Value> = LazyLock::new(|| Value::Object(serde_json::Map::new()));

/// Where templates look values up: a [`TemplateContext`], or (in compiled
/// workflows) a borrowed view of the run state, so rendering never copies
/// a node's whole output.
pub(crate) trait Scope {
    /// The output of node `id`.
    fn node_output(&self, id: &str) -> Option<&Value>;
    /// The workflow input (`None` reads as `{}`).
    fn input(&self) -> Option<&Value>;
    /// The extra variable `name`.
    fn var(&self, name: &str) -> Option<&Value>;
}

impl Scope for TemplateContext {
    fn node_output(&self, id: &str) -> Option<&Value> {
        self.nodes.get(id)
    }

    fn input(&self) -> Option<&Value> {
        Some(&self.input)
    }

    fn var(&self, name: &str) -> Option<&Value> {
        self.vars.get(name)
    }
}

/// An output cap: the most bytes a rendering may produce, and the limit
/// that is reported when it is crossed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cap {
    /// Most bytes this rendering may produce.
    pub(crate) max: usize,
    /// The limit reported when crossed.
    pub(crate) kind: LimitKind,
    /// The limit's maximum as reported.
    pub(crate) reported_max: usize,
    /// Bytes already counted against the limit before this rendering.
    pub(crate) already: usize,
}

impl Cap {
    /// The per-template cap `max` ([`LimitKind::TemplateOutputBytes`]).
    pub(crate) fn template(max: usize) -> Self {
        Cap {
            max,
            kind: LimitKind::TemplateOutputBytes,
            reported_max: max,
            already: 0,
        }
    }

    /// The breach, after `tried` bytes of this rendering.
    fn exceeded(self, tried: usize) -> LimitExceeded {
        LimitExceeded::of_at_least(
            self.kind,
            self.reported_max,
            self.already.saturating_add(tried),
        )
    }
}

impl std::str::FromStr for Template {
    type Err = TemplateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Output buffer that refuses to grow past `limit` bytes.
struct LimitedBuf {
    buf: Vec<u8>,
    limit: usize,
    /// The size the last write would have reached.
    tried: usize,
}

impl LimitedBuf {
    fn push(&mut self, bytes: &[u8]) -> Result<(), ()> {
        self.tried = self.buf.len().saturating_add(bytes.len());
        if self.tried > self.limit {
            return Err(());
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }
}

impl io::Write for LimitedBuf {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.push(bytes)
            .map_err(|()| io::Error::other("output limit exceeded"))?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
