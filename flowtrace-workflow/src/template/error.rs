//! Template errors: what went wrong, and where in the source.

use super::*;

/// Where in a template source a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// Byte offset from the start of the source, 0-based.
    pub offset: usize,
    /// Line number, 1-based.
    pub line: usize,
    /// Column within the line, 1-based, counted in characters.
    pub column: usize,
}

impl Position {
    /// Computes the position of byte `offset` in `source` (clamped to the
    /// source length and to a character boundary).
    pub(super) fn at(source: &str, offset: usize) -> Self {
        let mut offset = offset.min(source.len());
        while !source.is_char_boundary(offset) {
            offset = offset.saturating_sub(1);
        }
        let before = source.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).unwrap_or("").chars().count() + 1;
        Self {
            offset,
            line,
            column,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// What kind of problem a [`TemplateError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TemplateErrorKind {
    /// Malformed placeholder: unterminated `{{`, empty `{{ }}`, bad path.
    Syntax,
    /// Code-like syntax that templates deliberately do not support:
    /// blocks, comments, filters, calls, literals, operators.
    Unsupported,
    /// The template source is longer than [`MAX_TEMPLATE_LEN`].
    TemplateTooLong,
    /// A referenced node output, field, input or variable is missing.
    MissingValue,
    /// The rendered output would exceed the context's output limit.
    OutputTooLarge,
}

/// Error parsing or rendering a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    kind: TemplateErrorKind,
    message: String,
    position: Option<Position>,
    pub(super) limit: Option<Box<LimitExceeded>>,
}

impl TemplateError {
    pub(super) fn new(
        kind: TemplateErrorKind,
        message: impl Into<String>,
        position: Option<Position>,
    ) -> Self {
        Self {
            kind,
            message: message.into(),
            position,
            limit: None,
        }
    }

    /// An [`OutputTooLarge`](TemplateErrorKind::OutputTooLarge) error for
    /// `limit`.
    pub(crate) fn output_too_large(limit: LimitExceeded) -> Self {
        Self {
            kind: TemplateErrorKind::OutputTooLarge,
            message: format!("rendered output too large: {limit}"),
            position: None,
            limit: Some(Box::new(limit)),
        }
    }

    pub(super) fn at(
        kind: TemplateErrorKind,
        source: &str,
        offset: usize,
        message: impl Into<String>,
    ) -> Self {
        Self::new(kind, message, Some(Position::at(source, offset)))
    }

    /// What kind of problem this is.
    pub fn kind(&self) -> TemplateErrorKind {
        self.kind
    }

    /// The message, without the position.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The limit exceeded, for
    /// [`OutputTooLarge`](TemplateErrorKind::OutputTooLarge) and
    /// [`TemplateTooLong`](TemplateErrorKind::TemplateTooLong).
    pub fn limit(&self) -> Option<&LimitExceeded> {
        self.limit.as_deref()
    }

    /// Where in the template source the problem is: the offending character
    /// for parse errors, the start of the placeholder for render errors.
    /// `None` for errors about the template as a whole (length, output size).
    pub fn position(&self) -> Option<Position> {
        self.position
    }
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(p) => write!(f, "template error at {p}: {}", self.message),
            None => write!(f, "template error: {}", self.message),
        }
    }
}

impl std::error::Error for TemplateError {}
