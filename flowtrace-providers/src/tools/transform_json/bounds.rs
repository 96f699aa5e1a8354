//! Bounds on what a JMESPath evaluation builds and does, computed before
//! it runs, and the bounded conversion of its result to JSON.

use jmespath::ast::Ast;
use serde_json::Value;

/// The nesting of `value`'s arrays and objects (a scalar is 0), measured
/// without recursion.
pub(super) fn value_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, depth + 1))),
            _ => {}
        }
    }
    deepest
}

/// The nesting of a JMESPath value's arrays and objects (a scalar is 0),
/// measured without recursion.
fn variable_depth(value: &jmespath::Variable) -> usize {
    use jmespath::Variable;
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        match value {
            Variable::Array(items) => stack.extend(items.iter().map(|v| (&**v, depth + 1))),
            Variable::Object(map) => stack.extend(map.values().map(|v| (&**v, depth + 1))),
            _ => {}
        }
    }
    deepest
}

/// The height of `ast` (a leaf is 1; a literal adds its nesting), measured
/// without recursion.
pub(super) fn ast_depth(ast: &Ast) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(ast, 1usize)];
    while let Some((node, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        let below = depth + 1;
        match node {
            Ast::Comparison { lhs, rhs, .. }
            | Ast::Subexpr { lhs, rhs, .. }
            | Ast::Projection { lhs, rhs, .. }
            | Ast::And { lhs, rhs, .. }
            | Ast::Or { lhs, rhs, .. } => {
                stack.push((lhs, below));
                stack.push((rhs, below));
            }
            Ast::Condition {
                predicate, then, ..
            } => {
                stack.push((predicate, below));
                stack.push((then, below));
            }
            Ast::Expref { ast: node, .. }
            | Ast::Flatten { node, .. }
            | Ast::Not { node, .. }
            | Ast::ObjectValues { node, .. } => stack.push((node, below)),
            Ast::Function { args: nodes, .. }
            | Ast::MultiList {
                elements: nodes, ..
            } => stack.extend(nodes.iter().map(|n| (n, below))),
            Ast::MultiHash { elements, .. } => {
                stack.extend(elements.iter().map(|pair| (&pair.value, below)));
            }
            Ast::Literal { value, .. } => {
                deepest = deepest.max(depth.saturating_add(variable_depth(value)));
            }
            Ast::Identity { .. } | Ast::Field { .. } | Ast::Index { .. } | Ast::Slice { .. } => {}
        }
    }
    deepest
}

/// Counts the characters that can open a nesting level, outside quoted
/// identifiers, raw strings and literals.
pub(super) fn count_operators(expression: &str) -> usize {
    let mut count = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in expression.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' | '`' => quote = Some(c),
                '.' | '|' | '[' | '(' | '{' | '!' | '&' | '<' | '>' | '=' | '?' | '*' | '@' => {
                    count += 1
                }
                _ => {}
            },
        }
    }
    count
}

/// Bytes of `value` as compact JSON.
pub(super) fn json_bytes(value: &impl serde::Serialize) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len() as u64);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => u64::MAX,
    }
}

// ------------------------------------------------------ cost of evaluation

/// Size of `null`, `true` and `false` as JSON (an upper bound for every
/// boolean or null result).
const SCALAR_BYTES: u64 = 5;
/// An upper bound on a number as JSON (`-1.2345678901234567e-308`).
const NUMBER_BYTES: u64 = 32;

/// Upper bounds on what evaluating an expression builds and does.
#[derive(Clone, Copy, Debug)]
pub(super) struct Cost {
    /// Bytes of the value it yields, as compact JSON.
    pub(super) size: u64,
    /// Work units: AST nodes visited plus bytes of the values they take and
    /// yield.
    pub(super) work: u64,
    /// Whether the value is `null` or no larger than the input (a part of
    /// it, a filtered or reordered copy): then a projection's results
    /// together are no larger than the elements they come from.
    shrinks: bool,
}

impl Cost {
    fn new(size: u64, work: u64) -> Self {
        Self {
            size,
            work,
            shrinks: false,
        }
    }

    fn shrinking(size: u64, work: u64) -> Self {
        Self {
            size,
            work,
            shrinks: true,
        }
    }
}

/// Computes [`Cost`]s of an expression's nodes from an upper bound on the
/// size of their input, remembering the largest intermediate value.
///
/// Every bound only grows with the input's size and is convex in it, so
/// over `k` elements of sizes `n_i ≥ 1` summing to at most `m`, the sum of
/// `f(n_i)` is largest when all but one element are one byte long:
/// `max(f(m), f(m - k + 1) + (k - 1)·f(1))` for the largest `k`.
#[derive(Debug, Default)]
pub(super) struct Analysis {
    pub(super) largest: u64,
    /// Costs already computed, by node address and input bound (a chain of
    /// projections asks for each node at a handful of input bounds only).
    known: std::collections::HashMap<(usize, u64), Cost>,
}

/// Most node evaluations [`Analysis`] computes for one expression.
const MAX_ANALYSIS_STEPS: usize = 1 << 20;

/// Most elements an array or object of `size` bytes can hold (`[1,1,1]`:
/// one byte and one comma each).
fn elements(size: u64) -> u64 {
    (size.saturating_sub(1) / 2).max(1)
}

/// `1 + log2(n)`, the factor of sorting `n` bytes.
fn log_factor(n: u64) -> u64 {
    u64::from(65 - n.leading_zeros())
}

impl Analysis {
    pub(super) fn cost(&mut self, ast: &Ast, n: u64) -> Result<Cost, String> {
        let key = (std::ptr::from_ref(ast) as usize, n);
        if let Some(cost) = self.known.get(&key) {
            return Ok(*cost);
        }
        if self.known.len() >= MAX_ANALYSIS_STEPS {
            return Err(format!(
                "the expression is too complex to bound (over {MAX_ANALYSIS_STEPS} analysis steps)"
            ));
        }
        let cost = self.node(ast, n)?;
        self.largest = self.largest.max(cost.size);
        self.known.insert(key, cost);
        Ok(cost)
    }

    /// The cost of evaluating `ast` once per element of a value of at most
    /// `m` bytes, and the size of the array of the results (`keep_nulls`:
    /// `map` keeps them, projections drop them).
    fn each(&mut self, ast: &Ast, m: u64, keep_nulls: bool) -> Result<Cost, String> {
        let k = elements(m);
        let whole = self.cost(ast, m)?;
        let rest = self.cost(ast, m.saturating_sub(k - 1).max(1))?;
        let one = self.cost(ast, 1)?;
        let spread = |f_rest: u64, f_one: u64| {
            f_rest.saturating_add((k - 1).saturating_mul(f_one.saturating_add(1)))
        };
        let results = whole.size.max(spread(rest.size, one.size));
        let size = if whole.shrinks && !keep_nulls {
            // Non-null results are no larger than their elements.
            m.max(2)
        } else {
            results.saturating_add(2).saturating_add(k)
        };
        let work = whole
            .work
            .max(spread(rest.work, one.work))
            .saturating_add(m);
        Ok(Cost {
            size,
            work,
            shrinks: whole.shrinks && !keep_nulls,
        })
    }

    fn node(&mut self, ast: &Ast, n: u64) -> Result<Cost, String> {
        Ok(match ast {
            Ast::Identity { .. } => Cost::shrinking(n, 1),
            Ast::Field { .. } | Ast::Index { .. } => Cost::shrinking(n.max(SCALAR_BYTES), 1),
            Ast::Slice { .. } => {
                let size = n.max(SCALAR_BYTES);
                Cost::shrinking(size, size)
            }
            Ast::Literal { value, .. } => {
                let size = json_bytes(&**value);
                Cost::new(size, size.saturating_add(1))
            }
            Ast::Expref { .. } => {
                return Err(
                    "expression references (&…) are only supported as arguments of \
                     map, sort_by, min_by and max_by"
                        .to_string(),
                );
            }
            Ast::Subexpr { lhs, rhs, .. } => {
                let l = self.cost(lhs, n)?;
                let r = self.cost(rhs, l.size)?;
                Cost {
                    size: r.size,
                    work: l.work.saturating_add(r.work),
                    shrinks: l.shrinks && r.shrinks,
                }
            }
            Ast::Projection { lhs, rhs, .. } => {
                let l = self.cost(lhs, n)?;
                let r = self.each(rhs, l.size, false)?;
                Cost {
                    size: r.size,
                    work: l.work.saturating_add(r.work),
                    shrinks: l.shrinks && r.shrinks,
                }
            }
            Ast::ObjectValues { node, .. } | Ast::Flatten { node, .. } => {
                let c = self.cost(node, n)?;
                Cost {
                    size: c.size.max(SCALAR_BYTES),
                    work: c.work.saturating_add(c.size),
                    shrinks: c.shrinks,
                }
            }
            Ast::MultiList { elements, .. } => {
                let mut total = Cost::new(2, 1);
                for element in elements {
                    let c = self.cost(element, n)?;
                    total.size = total.size.saturating_add(c.size).saturating_add(1);
                    total.work = total.work.saturating_add(c.work).saturating_add(1);
                }
                total
            }
            Ast::MultiHash { elements, .. } => {
                let mut total = Cost::new(2, 1);
                for pair in elements {
                    let c = self.cost(&pair.value, n)?;
                    let key = json_string_bytes(&pair.key).saturating_add(2);
                    total.size = total.size.saturating_add(c.size).saturating_add(key);
                    total.work = total.work.saturating_add(c.work).saturating_add(key);
                }
                total
            }
            Ast::Not { node, .. } => {
                let c = self.cost(node, n)?;
                Cost::new(SCALAR_BYTES, c.work.saturating_add(1))
            }
            Ast::And { lhs, rhs, .. } | Ast::Or { lhs, rhs, .. } => {
                let l = self.cost(lhs, n)?;
                let r = self.cost(rhs, n)?;
                Cost {
                    size: l.size.max(r.size),
                    work: l.work.saturating_add(r.work).saturating_add(1),
                    shrinks: l.shrinks && r.shrinks,
                }
            }
            Ast::Comparison { lhs, rhs, .. } => {
                let l = self.cost(lhs, n)?;
                let r = self.cost(rhs, n)?;
                let work = l
                    .work
                    .saturating_add(r.work)
                    .saturating_add(l.size.min(r.size))
                    .saturating_add(1);
                Cost::new(SCALAR_BYTES, work)
            }
            Ast::Condition {
                predicate, then, ..
            } => {
                let p = self.cost(predicate, n)?;
                let t = self.cost(then, n)?;
                Cost {
                    size: t.size.max(SCALAR_BYTES),
                    work: p.work.saturating_add(t.work).saturating_add(1),
                    shrinks: t.shrinks,
                }
            }
            Ast::Function { name, args, .. } => self.function(name, args, n)?,
        })
    }

    fn function(&mut self, name: &str, args: &[Ast], n: u64) -> Result<Cost, String> {
        // Functions taking an expression apply it to each element of their
        // array argument.
        if matches!(name, "map" | "sort_by" | "min_by" | "max_by") {
            let mut array = Cost::shrinking(0, 1);
            for arg in args {
                if !matches!(arg, Ast::Expref { .. }) {
                    let c = self.cost(arg, n)?;
                    array.size = array.size.max(c.size);
                    array.work = array.work.saturating_add(c.work);
                    array.shrinks &= c.shrinks;
                }
            }
            let mut applied = Cost::new(2, 0);
            for arg in args {
                if let Ast::Expref { ast, .. } = arg {
                    let c = self.each(ast, array.size, true)?;
                    applied.size = applied.size.max(c.size);
                    applied.work = applied.work.saturating_add(c.work);
                }
            }
            let (size, shrinks) = if name == "map" {
                (applied.size, false)
            } else {
                (array.size.max(SCALAR_BYTES), array.shrinks)
            };
            // Sorting compares about k·log2(k) pairs of keys.
            let sort = applied.size.saturating_mul(log_factor(array.size));
            return Ok(Cost {
                size,
                work: array
                    .work
                    .saturating_add(applied.work)
                    .saturating_add(sort)
                    .saturating_add(size),
                shrinks,
            });
        }
        let mut costs = Vec::with_capacity(args.len());
        let mut work: u64 = 1;
        for arg in args {
            let c = self.cost(arg, n)?;
            work = work.saturating_add(c.work).saturating_add(c.size);
            costs.push(c);
        }
        let first = costs.first().map_or(0, |c| c.size);
        let second = costs.get(1).map_or(0, |c| c.size);
        let largest = costs.iter().map(|c| c.size).max().unwrap_or(0);
        let sum = costs.iter().fold(0u64, |a, c| a.saturating_add(c.size));
        let all_shrink = !costs.is_empty() && costs.iter().all(|c| c.shrinks);
        let (size, shrinks) = match name {
            "abs" | "avg" | "ceil" | "floor" | "sum" | "to_number" | "length" => {
                (NUMBER_BYTES, false)
            }
            "type" => (16, false),
            "contains" | "ends_with" | "starts_with" => (SCALAR_BYTES, false),
            "max" | "min" | "not_null" => (largest.max(NUMBER_BYTES), all_shrink),
            "values" | "reverse" => (first.saturating_add(2), all_shrink),
            "keys" | "to_array" => (first.saturating_add(2), false),
            "sort" => {
                work = work.saturating_add(first.saturating_mul(log_factor(first)));
                (first.saturating_add(2), all_shrink)
            }
            "merge" => (sum.saturating_add(2), false),
            // Separators between the strings of the array.
            "join" => (
                first
                    .saturating_mul(elements(second))
                    .saturating_add(second)
                    .saturating_add(2),
                false,
            ),
            // The text of the JSON, with `"` and `\` escaped once more.
            "to_string" => (first.saturating_mul(2).saturating_add(2), false),
            // Unknown functions fail before they run.
            _ => (sum.saturating_add(NUMBER_BYTES), false),
        };
        Ok(Cost {
            size,
            work: work.saturating_add(size),
            shrinks,
        })
    }
}

// ------------------------------------------------- bounded JSON conversion

/// Bytes of `s` as a JSON string.
fn json_string_bytes(s: &str) -> u64 {
    let extra: u64 = s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
            0..=0x1f => 5,
            _ => 0,
        })
        .sum();
    (s.len() as u64).saturating_add(extra).saturating_add(2)
}

/// Converts a JMESPath result to JSON, counting its compact JSON bytes and
/// stopping as soon as they pass `max` (shared values count once per
/// occurrence, as they would be written).
pub(super) struct Converter {
    pub(super) max: u64,
    pub(super) bytes: u64,
}

impl Converter {
    fn add(&mut self, n: u64) -> Result<(), u64> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.max {
            Err(self.bytes)
        } else {
            Ok(())
        }
    }

    pub(super) fn convert(&mut self, value: &jmespath::Variable) -> Result<Value, u64> {
        use jmespath::Variable;
        Ok(match value {
            Variable::Null => {
                self.add(4)?;
                Value::Null
            }
            Variable::Bool(b) => {
                self.add(if *b { 4 } else { 5 })?;
                Value::Bool(*b)
            }
            Variable::Number(n) => {
                self.add(n.to_string().len() as u64)?;
                Value::Number(n.clone())
            }
            Variable::String(s) => {
                self.add(json_string_bytes(s))?;
                Value::String(s.clone())
            }
            Variable::Array(items) => {
                self.add(2)?;
                let mut out = Vec::with_capacity(items.len().min(1024));
                for item in items {
                    self.add(1)?;
                    out.push(self.convert(item)?);
                }
                Value::Array(out)
            }
            Variable::Object(map) => {
                self.add(2)?;
                let mut out = serde_json::Map::new();
                for (key, item) in map {
                    self.add(json_string_bytes(key).saturating_add(2))?;
                    out.insert(key.clone(), self.convert(item)?);
                }
                Value::Object(out)
            }
            Variable::Expref(ast) => {
                let text = format!("<expression: {ast:?}>");
                self.add(json_string_bytes(&text))?;
                Value::String(text)
            }
        })
    }
}
