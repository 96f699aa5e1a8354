//! `router` nodes: the rules evaluated over the node's inputs.

use super::*;

pub(in crate::compile) struct RouterNode {
    pub(in crate::compile) id: String,
    pub(in crate::compile) inputs: Inputs,
    pub(in crate::compile) rule: Rule,
    /// Outgoing edges in document order: target and condition.
    pub(in crate::compile) edges: Vec<(String, Option<Rule>)>,
    /// Take every edge whose condition holds (else the first one).
    pub(in crate::compile) fanout: bool,
    /// Rendering limits and the per-run totals.
    pub(in crate::compile) ledger: Arc<RunLedger>,
}

impl RouterNode {
    pub(in crate::compile) fn run(
        &self,
        state: &JsonState,
        ctx: NodeContext,
    ) -> Result<NodeOutput<Map<String, Value>>, NodeError> {
        let run = ctx.run_id().to_string();
        let mut budget = RenderBudget::new(&self.id, &run, &self.ledger);
        let inputs = render_inputs(&self.inputs, state, &mut budget)?;
        let rule_error = |field: String, error: RuleError| NodeFailure::Rule {
            node: self.id.clone(),
            field,
            error,
        };
        let mut vars = Value::Object(inputs);
        let result = self
            .rule
            .eval(&vars)
            .map_err(|e| rule_error("rule".into(), e))?;
        let branch = as_text(&result);
        budget.charge(branch.len(), "rule")?;
        if let Value::Object(map) = &mut vars {
            map.insert("branch".into(), Value::String(branch.clone()));
        }
        let mut next: Vec<String> = Vec::new();
        for (target, when) in &self.edges {
            let holds = match when {
                Some(rule) => rule
                    .eval_bool(&vars)
                    .map_err(|e| rule_error(format!("edge to `{target}`"), e))?,
                None => true,
            };
            if holds && !next.contains(target) {
                next.push(target.clone());
                if !self.fanout {
                    break;
                }
            }
        }
        ctx.log(
            LogLevel::Info,
            format!(
                "branch `{branch}` → {}",
                if next.is_empty() {
                    "(end)".to_string()
                } else {
                    next.join(", ")
                }
            ),
        );
        let mut update = output_update(&self.id, Value::String(branch.clone()));
        let mut record = Map::new();
        record.insert("branch".into(), Value::String(branch));
        record.insert(
            "next".into(),
            Value::Array(next.into_iter().map(Value::String).collect()),
        );
        update.insert(router_key(&self.id), Value::Object(record));
        Ok(NodeOutput::update(update))
    }
}
