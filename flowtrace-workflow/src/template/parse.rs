//! Parsing the inside of a `{{ … }}` placeholder.

use super::*;

pub(super) const EXPRESSION_KEYWORDS: &[&str] = &[
    "if", "else", "elif", "not", "and", "or", "in", "is", "for", "true", "false", "none",
];

/// Parses the inside of a placeholder, `source[inner_start..inner_end]`;
/// `open` is the offset of its `{{`.
pub(super) fn parse_expr(
    source: &str,
    open: usize,
    inner_start: usize,
    inner_end: usize,
) -> Result<Expr, TemplateError> {
    let inner = source.get(inner_start..inner_end).unwrap_or("");
    let unsupported = |offset: usize, msg: &str| {
        TemplateError::at(TemplateErrorKind::Unsupported, source, offset, msg)
    };
    let syntax = |offset: usize, msg: String| {
        TemplateError::at(TemplateErrorKind::Syntax, source, offset, msg)
    };

    let lead = inner.len() - inner.trim_start().len();
    let trimmed = inner.trim();
    let start = inner_start + lead;
    if trimmed.is_empty() {
        return Err(syntax(
            open,
            "empty placeholder `{{ }}`: expected a path such as `input.topic`".to_owned(),
        ));
    }
    if trimmed.starts_with('-') || trimmed.ends_with('-') {
        let at = if trimmed.starts_with('-') {
            start
        } else {
            start + trimmed.len() - 1
        };
        return Err(unsupported(
            at,
            "whitespace control (`{{-` / `-}}`) is not supported",
        ));
    }
    // Code-like characters first, so `{{ 1 + 2 }}` says "operators" rather
    // than "unexpected whitespace".
    for (i, c) in trimmed.char_indices() {
        let msg = match c {
            '|' => "filters (`|`) are not supported; templates only substitute `{{ path }}`",
            '(' | ')' => "function calls are not supported; templates only substitute `{{ path }}`",
            '[' | ']' => {
                "subscripts (`[…]`) are not supported; use a dotted path such as `items.0`"
            }
            '\'' | '"' => {
                "string literals are not supported; templates only substitute `{{ path }}`"
            }
            '+' | '*' | '/' | '%' | '~' | '<' | '>' | '=' | '!' | '&' | '^' => {
                "operators are not supported; templates only substitute `{{ path }}`"
            }
            '{' | '}' | ',' | ':' | ';' => {
                "unexpected character in placeholder; expected a dotted path"
            }
            c if c.is_ascii_alphanumeric()
                || c == '_'
                || c == '-'
                || c == '.'
                || c.is_whitespace() =>
            {
                continue;
            }
            _ => {
                "unexpected character in placeholder; path segments use ASCII letters, digits, `_` and `-`"
            }
        };
        return Err(unsupported(start + i, msg));
    }
    if let Some(ws) = trimmed.find(char::is_whitespace) {
        let tokens: Vec<&str> = trimmed.split_whitespace().collect();
        let msg = if tokens
            .iter()
            .any(|t| t.starts_with('-') || t.ends_with('-'))
        {
            "operators are not supported; templates only substitute `{{ path }}`"
        } else if tokens
            .iter()
            .any(|t| EXPRESSION_KEYWORDS.contains(&t.to_ascii_lowercase().as_str()))
        {
            "expressions (`if`, `not`, `and`, …) are not supported; templates only substitute `{{ path }}`"
        } else {
            "only a single dotted path is allowed inside `{{ }}` (no spaces within it)"
        };
        return Err(unsupported(start + ws, msg));
    }

    let mut segments: Vec<&str> = Vec::new();
    let mut seg_offsets: Vec<usize> = Vec::new();
    let mut seg_start = 0;
    for piece in trimmed.split('.') {
        let at = start + seg_start;
        if piece.is_empty() {
            return Err(syntax(at, format!("empty path segment in `{trimmed}`")));
        }
        if piece.starts_with('-') {
            return Err(unsupported(
                at,
                "operators are not supported; templates only substitute `{{ path }}`",
            ));
        }
        segments.push(piece);
        seg_offsets.push(at);
        seg_start += piece.len() + 1;
    }
    let (root, rest) = match segments.as_slice() {
        [first, ..] if first.starts_with(|c: char| c.is_ascii_digit()) => {
            return Err(unsupported(
                start,
                "number literals are not supported; a path must start with a name such as `input` or `node`",
            ));
        }
        ["node", id, "output", rest @ ..] => (Root::Node((*id).to_owned()), rest),
        ["node", ..] => {
            let at = seg_offsets
                .get(1)
                .or(seg_offsets.first())
                .copied()
                .unwrap_or(start);
            return Err(syntax(
                at,
                format!(
                    "`{trimmed}`: expected `node.<id>.output` optionally followed by `.<field>…`"
                ),
            ));
        }
        ["input", rest @ ..] => (Root::Input, rest),
        [name, rest @ ..] => (Root::Var((*name).to_owned()), rest),
        [] => return Err(syntax(start, "expected a path".to_owned())),
    };
    Ok(Expr {
        root,
        path: rest.iter().map(|s| (*s).to_owned()).collect(),
        text: trimmed.to_owned(),
        offset: open,
    })
}
