//! `tool` nodes: rendered arguments checked against the tool's schema, output capped.

use super::*;

/// Most schema problems reported for one tool call.
pub(in crate::compile) const MAX_ARGUMENT_PROBLEMS: usize = 16;

pub(in crate::compile) struct ToolNode {
    pub(in crate::compile) id: String,
    pub(in crate::compile) inputs: Inputs,
    pub(in crate::compile) tool: Arc<dyn Tool>,
    pub(in crate::compile) args: ArgTemplate,
    /// The tool's argument schema, checked against the rendered arguments.
    pub(in crate::compile) schema: jsonschema::Validator,
    /// Rendering and tool output limits, and the per-run totals.
    pub(in crate::compile) ledger: Arc<RunLedger>,
}

impl ToolNode {
    pub(in crate::compile) async fn run(
        &self,
        state: &JsonState,
        ctx: NodeContext,
    ) -> Result<NodeOutput<Map<String, Value>>, NodeError> {
        let run = ctx.run_id().to_string();
        let mut budget = RenderBudget::new(&self.id, &run, &self.ledger);
        let inputs = render_inputs(&self.inputs, state, &mut budget)?;
        let scope = StateScope::with_vars(state, &inputs);
        let args = render_args(&self.args, &scope, &mut budget, "config")?;
        let problems: Vec<String> = self
            .schema
            .iter_errors(&args)
            .take(MAX_ARGUMENT_PROBLEMS)
            .map(|e| {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() { "/".to_string() } else { at };
                format!("{at}: {}", e.masked_with("value"))
            })
            .collect();
        if !problems.is_empty() {
            return Err(NodeError::permanent(format!(
                "node `{}`: the arguments for tool `{}` do not fit its schema: {}",
                self.id,
                self.tool.name(),
                problems.join("; ")
            )));
        }
        let (max, kind, reported_max) = budget.tool_cap();
        let guarded = LimitedTool::new(self.tool.clone(), max, kind, reported_max);
        let field = format!("tool `{}`", self.tool.name());
        let output = match ctx.call_tool(&guarded, args).await {
            Ok(output) => {
                budget.count_tool_output(guarded.output_len(), &field)?;
                output
            }
            Err(e) => {
                return Err(match guarded.breach() {
                    Some(limit) => NodeFailure::Limit {
                        node: self.id.clone(),
                        field,
                        error: limit,
                    }
                    .into(),
                    None => e,
                });
            }
        };
        Ok(NodeOutput::update(output_update(&self.id, output)))
    }
}

/// A tool whose results larger than `max` bytes (as compact JSON) fail the
/// call, so they are neither traced nor stored; the breach is kept for the
/// node to report as a typed [`NodeFailure::Limit`].
pub(in crate::compile) struct LimitedTool {
    inner: Arc<dyn Tool>,
    max: usize,
    kind: LimitKind,
    reported_max: usize,
    breach: Mutex<Option<LimitExceeded>>,
    output_len: Mutex<usize>,
}

impl LimitedTool {
    /// `inner` with results capped at `max` bytes, a breach reported as
    /// `kind` with maximum `reported_max`.
    pub(in crate::compile) fn new(
        inner: Arc<dyn Tool>,
        max: usize,
        kind: LimitKind,
        reported_max: usize,
    ) -> Self {
        Self {
            inner,
            max,
            kind,
            reported_max,
            breach: Mutex::new(None),
            output_len: Mutex::new(0),
        }
    }

    /// The size of the last result, as compact JSON.
    pub(in crate::compile) fn output_len(&self) -> usize {
        *self.output_len.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The limit the last call exceeded, if any.
    pub(in crate::compile) fn breach(&self) -> Option<LimitExceeded> {
        *self.breach.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl Tool for LimitedTool {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn description(&self) -> &str {
        self.inner.description()
    }

    fn parameters(&self) -> Value {
        self.inner.parameters()
    }

    async fn call(&self, args: Value) -> Result<Value, flowtrace_core::ToolError> {
        let output = self.inner.call(args).await?;
        match rendered_len(&output, self.max) {
            Ok(len) => {
                *self.output_len.lock().unwrap_or_else(|p| p.into_inner()) = len;
                Ok(output)
            }
            Err(seen) => {
                let already = self.reported_max.saturating_sub(self.max);
                let limit = LimitExceeded::of_at_least(
                    self.kind,
                    self.reported_max,
                    already.saturating_add(seen),
                );
                *self.breach.lock().unwrap_or_else(|p| p.into_inner()) = Some(limit);
                Err(flowtrace_core::ToolError::permanent(
                    self.inner.name(),
                    format!("result too large: {limit}"),
                ))
            }
        }
    }
}
