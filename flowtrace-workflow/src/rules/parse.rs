//! The parser: tokens into an expression tree, bounded in nesting and size.

use super::*;

pub(super) struct Parser {
    pub(super) tokens: Vec<Token>,
    pub(super) pos: usize,
    pub(super) nesting: usize,
}

pub(super) const EOF_TOKEN: Token = Token {
    tok: Tok::Eof,
    column: 1,
};

impl Parser {
    pub(super) fn peek(&self) -> &Token {
        // The lexer always ends with `Eof` and the parser never advances
        // past it, so the fallback is unreachable in practice.
        self.tokens
            .get(self.pos)
            .or_else(|| self.tokens.last())
            .unwrap_or(&EOF_TOKEN)
    }

    pub(super) fn advance(&mut self) -> Token {
        let token = self.peek().clone();
        if token.tok != Tok::Eof {
            self.pos += 1;
        }
        token
    }

    pub(super) fn expect(&mut self, tok: &Tok, what: &str) -> Result<Token, RuleError> {
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

    pub(super) fn enter(&mut self) -> Result<(), RuleError> {
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

    pub(super) fn parse_ternary(&mut self) -> Result<Expr, RuleError> {
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
    pub(super) fn parse_binary(&mut self, level: usize) -> Result<Expr, RuleError> {
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

    pub(super) fn parse_unary(&mut self) -> Result<Expr, RuleError> {
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

    pub(super) fn parse_postfix(&mut self) -> Result<Expr, RuleError> {
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

    pub(super) fn parse_primary(&mut self) -> Result<Expr, RuleError> {
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
