//! [`PromptTemplate`]: a Jinja prompt, compiled once and rendered per call.

use std::fmt;
use std::io;
use std::sync::Arc;

/// The largest prompt a template may render, in bytes: rendering stops with
/// [`TemplateErrorKind::TooLarge`] past it (a loop over a large state value
/// cannot build an unbounded prompt).
pub const MAX_PROMPT_BYTES: usize = 1 << 20;

/// What kind of failure a [`TemplateError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TemplateErrorKind {
    /// The template does not parse.
    Syntax,
    /// A variable the template uses is missing from the context.
    Undefined,
    /// Rendering failed otherwise (a filter error, a type error).
    Render,
    /// The rendered prompt exceeds [`MAX_PROMPT_BYTES`].
    TooLarge,
}

/// A template that failed to compile or render: the kind, the engine's
/// message and the line in the template.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct TemplateError {
    /// What kind of failure.
    pub kind: TemplateErrorKind,
    /// The template engine's description.
    pub message: String,
    /// The line of the template, when known (1-based).
    pub line: Option<usize>,
}

impl TemplateError {
    fn from_engine(e: &minijinja::Error, default: TemplateErrorKind) -> Self {
        let kind = match e.kind() {
            minijinja::ErrorKind::SyntaxError => TemplateErrorKind::Syntax,
            minijinja::ErrorKind::UndefinedError => TemplateErrorKind::Undefined,
            _ => default,
        };
        Self {
            kind,
            message: e.to_string(),
            line: e.line(),
        }
    }
}

/// A prompt written in Jinja syntax (`{{ input }}`, `{% for m in
/// conversation %}`), through [minijinja]: prompt authors already know the
/// syntax from Python tooling; the crate is small, maintained and has no
/// dependencies beyond serde. The template is compiled when made, so a
/// syntax error shows up before any run. Undefined variables are errors
/// (strict mode), so a typo in a variable name fails loudly instead of
/// rendering an empty string. Block tags eat the newline after them and the
/// indentation before them (Jinja's `trim_blocks` and `lstrip_blocks`), so
/// `{% for %}` loops lay out like the text they produce; a trailing newline
/// is kept. Rendered output is bounded by
/// [`MAX_PROMPT_BYTES`]. Cheap to clone.
///
/// ```
/// use flowtrace_agents::agents::PromptTemplate;
/// use serde_json::json;
///
/// let t = PromptTemplate::new("summary", "Summarize in {{ words }} words:\n{{ input }}").unwrap();
/// let prompt = t.render(&json!({"words": 10, "input": "FlowTrace runs graphs."})).unwrap();
/// assert_eq!(prompt, "Summarize in 10 words:\nFlowTrace runs graphs.");
/// assert!(t.render(&json!({"input": "x"})).is_err()); // `words` is missing
/// ```
///
/// [minijinja]: https://docs.rs/minijinja
#[derive(Clone)]
pub struct PromptTemplate {
    name: Arc<str>,
    env: Arc<minijinja::Environment<'static>>,
}

impl fmt::Debug for PromptTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PromptTemplate")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PromptTemplate {
    /// Compiles `source` as the template named `name`.
    ///
    /// # Errors
    /// A [`TemplateError`] of kind [`Syntax`](TemplateErrorKind::Syntax).
    pub fn new(name: impl Into<String>, source: impl Into<String>) -> Result<Self, TemplateError> {
        let name: String = name.into();
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        // Prompts are plain text: never HTML-escape.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .map_err(|e| TemplateError::from_engine(&e, TemplateErrorKind::Syntax))?;
        env.set_syntax(syntax);
        env.add_template_owned(name.clone(), source.into())
            .map_err(|e| TemplateError::from_engine(&e, TemplateErrorKind::Syntax))?;
        Ok(Self {
            name: Arc::from(name),
            env: Arc::new(env),
        })
    }

    /// The template's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renders the template with `vars` (a JSON object: its keys are the
    /// template's variables).
    ///
    /// # Errors
    /// A [`TemplateError`]: a missing variable
    /// ([`Undefined`](TemplateErrorKind::Undefined)), a failing filter
    /// ([`Render`](TemplateErrorKind::Render)), or a prompt over
    /// [`MAX_PROMPT_BYTES`] ([`TooLarge`](TemplateErrorKind::TooLarge)).
    pub fn render(&self, vars: &serde_json::Value) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template(&self.name)
            .map_err(|e| TemplateError::from_engine(&e, TemplateErrorKind::Render))?;
        let mut out = Bounded {
            buf: Vec::new(),
            limit: MAX_PROMPT_BYTES,
            exceeded: false,
        };
        let ctx = minijinja::Value::from(minijinja::value::Serde(vars));
        let result = template.render_captured_to(ctx, &mut out).map(drop);
        if out.exceeded {
            return Err(TemplateError {
                kind: TemplateErrorKind::TooLarge,
                message: format!(
                    "the rendered prompt exceeds {MAX_PROMPT_BYTES} bytes (MAX_PROMPT_BYTES)"
                ),
                line: None,
            });
        }
        result.map_err(|e| TemplateError::from_engine(&e, TemplateErrorKind::Render))?;
        String::from_utf8(out.buf).map_err(|e| TemplateError {
            kind: TemplateErrorKind::Render,
            message: format!("the rendered prompt is not UTF-8: {e}"),
            line: None,
        })
    }
}

/// A writer that refuses to grow past `limit` bytes.
struct Bounded {
    buf: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl io::Write for Bounded {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.limit {
            self.exceeded = true;
            return Err(io::Error::other("prompt too large"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    #[test]
    fn renders_loops_and_filters_without_escaping() {
        let t = PromptTemplate::new(
            "t",
            "{% for m in conversation %}{{ m.role }}: {{ m.content }}\n{% endfor %}<{{ input | upper }}>",
        )
        .unwrap();
        let out = t
            .render(&json!({
                "conversation": [{"role": "user", "content": "a & b"}],
                "input": "x"
            }))
            .unwrap();
        assert_eq!(out, "user: a & b\n<X>");
    }

    #[test]
    fn errors_are_typed() {
        let e = PromptTemplate::new("bad", "{% for %}").unwrap_err();
        assert_eq!(e.kind, TemplateErrorKind::Syntax);
        assert_eq!(e.line, Some(1));
        let t = PromptTemplate::new("t", "{{ missing.field }}").unwrap();
        assert_eq!(
            t.render(&json!({})).unwrap_err().kind,
            TemplateErrorKind::Undefined
        );
    }

    #[test]
    fn output_is_bounded() {
        let t = PromptTemplate::new("t", "{% for i in range(n) %}{{ chunk }}{% endfor %}").unwrap();
        let chunk = "x".repeat(1024);
        let ok = t.render(&json!({"n": 10, "chunk": chunk})).unwrap();
        assert_eq!(ok.len(), 10 * 1024);
        let e = t.render(&json!({"n": 2000, "chunk": chunk})).unwrap_err();
        assert_eq!(e.kind, TemplateErrorKind::TooLarge);
    }
}
