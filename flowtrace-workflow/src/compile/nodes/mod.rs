//! The node kinds of compiled workflows: templates for inputs and tool
//! arguments, and the `llm`, `tool`, `router` and `approval` nodes.

use super::*;
use std::fmt::Write as _;

use crate::limits::{LimitExceeded, LimitKind, Limits};
use crate::template::{Cap, Scope, rendered_len};

mod approval;
mod llm;
mod router;
mod tool;

pub(in crate::compile) use approval::*;
pub(in crate::compile) use llm::*;
pub(in crate::compile) use router::*;
pub(in crate::compile) use tool::*;

pub(super) fn parse_template(
    node: &NodeSpec,
    field: &str,
    source: &str,
) -> Result<Template, CompileError> {
    Template::parse(source).map_err(|source| CompileError::Template {
        node: node.id.clone(),
        field: field.to_string(),
        source,
    })
}

pub(super) fn parse_inputs(node: &NodeSpec) -> Result<Inputs, CompileError> {
    let templates = node
        .inputs
        .iter()
        .map(|(name, source)| {
            parse_template(node, &format!("inputs.{name}"), source).map(|t| (name.clone(), t))
        })
        .collect::<Result<_, _>>()?;
    Ok(Inputs { templates })
}

/// A node's named input templates.
#[derive(Debug, Clone)]
pub(super) struct Inputs {
    pub(super) templates: Vec<(String, Template)>,
}

/// A borrowed view of the run state that templates render against: the
/// run input, node outputs, and the node's own rendered inputs by name.
/// Nothing is copied out of the state: a template that reads a large
/// output copies only what it renders, within the rendering limits.
pub(super) struct StateScope<'a> {
    state: &'a JsonState,
    vars: Option<&'a Map<String, Value>>,
}

impl<'a> StateScope<'a> {
    pub(super) fn new(state: &'a JsonState) -> Self {
        Self { state, vars: None }
    }

    pub(super) fn with_vars(state: &'a JsonState, vars: &'a Map<String, Value>) -> Self {
        Self {
            state,
            vars: Some(vars),
        }
    }
}

impl Scope for StateScope<'_> {
    fn node_output(&self, id: &str) -> Option<&Value> {
        self.state.get(&node_key(id))
    }

    fn input(&self) -> Option<&Value> {
        self.state.get(INPUT_KEY)
    }

    fn var(&self, name: &str) -> Option<&Value> {
        self.vars.and_then(|v| v.get(name))
    }
}

/// Most runs whose totals a [`RunLedger`] tracks at once; past it the
/// totals start afresh (so the per-run bound only weakens with thousands of
/// concurrent runs of one compiled workflow).
const MAX_TRACKED_RUNS: usize = 4096;

/// The bytes each run of one compiled workflow has rendered and received
/// from tools, against [`Limits::run_bytes`]; shared by all its nodes.
#[derive(Debug)]
pub(super) struct RunLedger {
    pub(super) limits: Limits,
    runs: Mutex<HashMap<String, usize>>,
}

impl RunLedger {
    pub(super) fn new(limits: Limits) -> Self {
        Self {
            limits,
            runs: Mutex::new(HashMap::new()),
        }
    }

    /// What run `run` has used so far.
    fn used(&self, run: &str) -> usize {
        let runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.get(run).copied().unwrap_or(0)
    }

    /// Adds `bytes` to run `run`'s total, unless that passes the limit.
    pub(super) fn charge(&self, run: &str, bytes: usize) -> Result<(), LimitExceeded> {
        let max = self.limits.run_bytes;
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        if !runs.contains_key(run) && runs.len() >= MAX_TRACKED_RUNS {
            runs.clear();
        }
        let total = runs.entry(run.to_owned()).or_insert(0);
        let next = total.saturating_add(bytes);
        if next > max {
            return Err(LimitExceeded::of(LimitKind::RunBytes, max, next));
        }
        *total = next;
        Ok(())
    }
}

/// What one node execution may still render: every rendering is capped at
/// [`Limits::template_output_bytes`], all of one node execution together at
/// [`Limits::node_render_bytes`], and everything a run renders or receives
/// from tools at [`Limits::run_bytes`].
pub(super) struct RenderBudget<'n> {
    node: &'n str,
    run: &'n str,
    ledger: &'n RunLedger,
    used: usize,
}

impl<'n> RenderBudget<'n> {
    pub(super) fn new(node: &'n str, run: &'n str, ledger: &'n RunLedger) -> Self {
        Self {
            node,
            run,
            ledger,
            used: 0,
        }
    }

    /// The cap for the next rendering: the smallest of the per-template
    /// limit, what is left of the node's total and what is left of the
    /// run's.
    fn cap(&self) -> Cap {
        let limits = &self.ledger.limits;
        let mut cap = Cap::template(limits.template_output_bytes);
        let node_left = limits.node_render_bytes.saturating_sub(self.used);
        if node_left < cap.max {
            cap = Cap {
                max: node_left,
                kind: LimitKind::NodeRenderBytes,
                reported_max: limits.node_render_bytes,
                already: self.used,
            };
        }
        let run_used = self.ledger.used(self.run);
        let run_left = limits.run_bytes.saturating_sub(run_used);
        if run_left < cap.max {
            cap = Cap {
                max: run_left,
                kind: LimitKind::RunBytes,
                reported_max: limits.run_bytes,
                already: run_used,
            };
        }
        cap
    }

    fn error(&self, field: &str, error: TemplateError) -> NodeFailure {
        NodeFailure::Template {
            node: self.node.to_owned(),
            field: field.to_owned(),
            error,
        }
    }

    /// Counts `len` rendered bytes against the node and the run.
    fn count(&mut self, len: usize, field: &str) -> Result<(), NodeFailure> {
        self.used = self.used.saturating_add(len);
        self.ledger
            .charge(self.run, len)
            .map_err(|error| NodeFailure::Limit {
                node: self.node.to_owned(),
                field: field.to_owned(),
                error,
            })
    }

    /// Renders `template` as text, charging its size.
    pub(super) fn render(
        &mut self,
        template: &Template,
        scope: &impl Scope,
        field: &str,
    ) -> Result<String, NodeFailure> {
        let text = template
            .render_in(scope, self.cap())
            .map_err(|e| self.error(field, e))?;
        self.count(text.len(), field)?;
        Ok(text)
    }

    /// Renders `template` as a value, charging its size.
    pub(super) fn render_value(
        &mut self,
        template: &Template,
        scope: &impl Scope,
        field: &str,
    ) -> Result<Value, NodeFailure> {
        let (value, len) = template
            .render_value_in(scope, self.cap())
            .map_err(|e| self.error(field, e))?;
        self.count(len, field)?;
        Ok(value)
    }

    /// Charges `len` bytes built outside a template (a prompt assembled
    /// from the inputs) before they are built.
    pub(super) fn charge(&mut self, len: usize, field: &str) -> Result<(), NodeFailure> {
        let cap = self.cap();
        if len > cap.max {
            return Err(self.error(
                field,
                TemplateError::output_too_large(LimitExceeded::of(
                    cap.kind,
                    cap.reported_max,
                    cap.already.saturating_add(len),
                )),
            ));
        }
        self.count(len, field)
    }

    /// The most bytes a tool result may have: the tool output limit, or
    /// what is left of the run's total when smaller; and the limit to
    /// report.
    pub(super) fn tool_cap(&self) -> (usize, LimitKind, usize) {
        let limits = &self.ledger.limits;
        let run_left = limits.run_bytes.saturating_sub(self.ledger.used(self.run));
        if run_left < limits.tool_output_bytes {
            (run_left, LimitKind::RunBytes, limits.run_bytes)
        } else {
            (
                limits.tool_output_bytes,
                LimitKind::ToolOutputBytes,
                limits.tool_output_bytes,
            )
        }
    }

    /// Counts a tool result of `len` bytes against the run.
    pub(super) fn count_tool_output(&mut self, len: usize, field: &str) -> Result<(), NodeFailure> {
        self.ledger
            .charge(self.run, len)
            .map_err(|error| NodeFailure::Limit {
                node: self.node.to_owned(),
                field: field.to_owned(),
                error,
            })
    }
}

/// A JSON value whose strings are templates.
#[derive(Debug, Clone)]
pub(super) enum ArgTemplate {
    Template(Template),
    Array(Vec<ArgTemplate>),
    Object(Vec<(String, ArgTemplate)>),
    Literal(Value),
}

pub(super) fn parse_args(
    node: &NodeSpec,
    value: &Value,
    at: &str,
) -> Result<ArgTemplate, CompileError> {
    Ok(match value {
        Value::String(s) => ArgTemplate::Template(parse_template(node, at, s)?),
        Value::Array(items) => ArgTemplate::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| parse_args(node, v, &format!("{at}.{i}")))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => ArgTemplate::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), parse_args(node, v, &format!("{at}.{k}"))?)))
                .collect::<Result<_, CompileError>>()?,
        ),
        other => ArgTemplate::Literal(other.clone()),
    })
}

pub(super) fn render_args(
    args: &ArgTemplate,
    scope: &impl Scope,
    budget: &mut RenderBudget<'_>,
    at: &str,
) -> Result<Value, NodeFailure> {
    Ok(match args {
        ArgTemplate::Template(t) => budget.render_value(t, scope, at)?,
        ArgTemplate::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, a)| render_args(a, scope, budget, &format!("{at}.{i}")))
                .collect::<Result<_, _>>()?,
        ),
        ArgTemplate::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, a)| {
                    Ok((
                        k.clone(),
                        render_args(a, scope, budget, &format!("{at}.{k}"))?,
                    ))
                })
                .collect::<Result<_, NodeFailure>>()?,
        ),
        ArgTemplate::Literal(v) => v.clone(),
    })
}

/// Renders a node's inputs, in name order, within `budget`.
pub(super) fn render_inputs(
    inputs: &Inputs,
    state: &JsonState,
    budget: &mut RenderBudget<'_>,
) -> Result<Map<String, Value>, NodeFailure> {
    let scope = StateScope::new(state);
    let mut rendered = Map::new();
    for (name, template) in &inputs.templates {
        let value = budget.render_value(template, &scope, &format!("inputs.{name}"))?;
        rendered.insert(name.clone(), value);
    }
    Ok(rendered)
}

pub(super) fn output_update(node: &str, output: Value) -> Map<String, Value> {
    let mut update = Map::new();
    update.insert(node_key(node), output);
    update
}

/// A value as prompt text: strings as they are, other values as JSON.
pub(super) fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The prompt of an LLM node without a `prompt` template: its single
/// input's text, or one `name: value` line per input; charged to `budget`
/// (measured before it is built).
pub(super) fn inputs_prompt(
    inputs: &Map<String, Value>,
    budget: &mut RenderBudget<'_>,
) -> Result<String, NodeFailure> {
    let mut len = 0usize;
    for (i, (name, value)) in inputs.iter().enumerate() {
        // Each value was measured when rendered; its text is no larger
        // than the JSON that was counted.
        let value_len = match value {
            Value::String(s) => s.len(),
            other => rendered_len(other, usize::MAX).unwrap_or(usize::MAX),
        };
        if inputs.len() > 1 {
            len = len.saturating_add(name.len() + 2 + usize::from(i > 0));
        }
        len = len.saturating_add(value_len);
    }
    budget.charge(len, "prompt")?;
    Ok(if inputs.len() == 1 {
        inputs.values().map(as_text).collect()
    } else {
        inputs
            .iter()
            .map(|(k, v)| format!("{k}: {}", as_text(v)))
            .collect::<Vec<_>>()
            .join("\n")
    })
}
