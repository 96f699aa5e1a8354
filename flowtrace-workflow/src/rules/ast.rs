//! The syntax tree of a rule: functions, operators and expressions.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Func {
    Len,
    Contains,
    StartsWith,
    Lower,
    Upper,
}

impl Func {
    pub(super) fn from_name(name: &str) -> Option<Func> {
        Some(match name {
            "len" => Func::Len,
            "contains" => Func::Contains,
            "starts_with" => Func::StartsWith,
            "lower" => Func::Lower,
            "upper" => Func::Upper,
            _ => return None,
        })
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Func::Len => "len",
            Func::Contains => "contains",
            Func::StartsWith => "starts_with",
            Func::Lower => "lower",
            Func::Upper => "upper",
        }
    }

    pub(super) fn arity(self) -> usize {
        match self {
            Func::Len | Func::Lower | Func::Upper => 1,
            Func::Contains | Func::StartsWith => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BinOp {
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
    pub(super) fn symbol(self) -> &'static str {
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
pub(super) enum Kind {
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
pub(super) struct Expr {
    pub(super) kind: Kind,
    /// 1-based column of the node's operator, name or literal.
    pub(super) column: usize,
    pub(super) depth: usize,
}

impl Expr {
    pub(super) fn new(kind: Kind, column: usize) -> Result<Expr, RuleError> {
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

    pub(super) fn collect_variables(&self, out: &mut Vec<String>) {
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
