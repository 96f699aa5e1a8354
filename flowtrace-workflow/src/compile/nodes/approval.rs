//! `approval` nodes: a human decision through the executor's interrupts.

use super::*;

pub(in crate::compile) struct ApprovalNode {
    pub(in crate::compile) id: String,
    pub(in crate::compile) inputs: Inputs,
    pub(in crate::compile) message: Option<Template>,
    /// Rendering limits and the per-run totals.
    pub(in crate::compile) ledger: Arc<RunLedger>,
}

impl ApprovalNode {
    pub(in crate::compile) fn run(
        &self,
        state: &JsonState,
        ctx: NodeContext,
    ) -> Result<NodeOutput<Map<String, Value>>, NodeError> {
        let run = ctx.run_id().to_string();
        let mut budget = RenderBudget::new(&self.id, &run, &self.ledger);
        let inputs = render_inputs(&self.inputs, state, &mut budget)?;
        if let Some(message) = &self.message {
            let scope = StateScope::with_vars(state, &inputs);
            let text = budget.render(message, &scope, "message")?;
            ctx.log(LogLevel::Info, text);
        }
        let payload = ctx.approval().cloned().unwrap_or(Value::Null);
        Ok(NodeOutput::update(output_update(&self.id, payload)))
    }
}
