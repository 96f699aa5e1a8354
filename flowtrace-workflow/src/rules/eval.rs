//! The evaluator: an expression over a JSON scope, bounded in work and bytes.

use super::*;

pub(super) fn type_name(v: &Value) -> &'static str {
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
pub(super) enum Num {
    Int(i128),
    Float(f64),
}

/// The smallest integer (−2⁶³).
pub(super) const INT_MIN: i128 = i64::MIN as i128;
/// The largest integer (2⁶⁴−1).
pub(super) const INT_MAX: i128 = u64::MAX as i128;
/// 2⁶⁴ as a float: every float at or above it is above every integer.
pub(super) const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
/// −2⁶³ as a float (exact).
pub(super) const MINUS_TWO_POW_63: f64 = -9_223_372_036_854_775_808.0;

impl Num {
    pub(super) fn of(n: &Number) -> Num {
        if let Some(i) = n.as_i64() {
            Num::Int(i128::from(i))
        } else if let Some(u) = n.as_u64() {
            Num::Int(i128::from(u))
        } else {
            Num::Float(n.as_f64().unwrap_or(f64::NAN))
        }
    }

    /// The nearest float (for float arithmetic).
    pub(super) fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    /// Exact comparison, across types; `None` only for NaN.
    pub(super) fn cmp(self, other: Num) -> Option<Ordering> {
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
pub(super) fn cmp_int_float(i: i128, f: f64) -> Option<Ordering> {
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
pub(super) fn int_value(i: i128, column: usize) -> Result<Value, RuleError> {
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

pub(super) fn float_value(f: f64, column: usize) -> Result<Value, RuleError> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| RuleError::arith("result is not a finite number", column))
}

pub(super) struct Evaluator<'a> {
    pub(super) vars: &'a Value,
    pub(super) bytes_left: usize,
    pub(super) work_left: usize,
}

impl<'a> Evaluator<'a> {
    pub(super) fn charge(&mut self, bytes: usize, column: usize) -> Result<(), RuleError> {
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

    pub(super) fn work(&mut self, units: usize, column: usize) -> Result<(), RuleError> {
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
    pub(super) fn values_equal(
        &mut self,
        a: &Value,
        b: &Value,
        column: usize,
    ) -> Result<bool, RuleError> {
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

    pub(super) fn eval_bool_operand(&mut self, e: &'a Expr, op: &str) -> Result<bool, RuleError> {
        match self.eval(e)?.as_ref() {
            Value::Bool(b) => Ok(*b),
            other => Err(RuleError::type_err(
                format!("`{op}` needs a boolean, got {}", type_name(other)),
                e.column,
            )),
        }
    }

    pub(super) fn eval(&mut self, e: &'a Expr) -> Result<Cow<'a, Value>, RuleError> {
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

    pub(super) fn binary(
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

    pub(super) fn call(
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

pub(super) fn arithmetic(op: BinOp, x: Num, y: Num, column: usize) -> Result<Value, RuleError> {
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
pub(super) fn path_of(e: &Expr) -> String {
    match &e.kind {
        Kind::Var(name) => name.clone(),
        Kind::Field(inner, field) => format!("{}.{field}", path_of(inner)),
        _ => "(expression)".into(),
    }
}
