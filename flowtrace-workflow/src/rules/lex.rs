//! The lexer: a rule's source into tokens, each with its column.

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
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
    pub(super) fn describe(&self) -> String {
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
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) column: usize,
}

pub(super) fn lex(source: &str) -> Result<Vec<Token>, RuleError> {
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
pub(super) fn lex_string(chars: &[char], start: usize) -> Result<(Tok, usize), RuleError> {
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
pub(super) fn lex_number(chars: &[char], start: usize) -> Result<(Tok, usize), RuleError> {
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
