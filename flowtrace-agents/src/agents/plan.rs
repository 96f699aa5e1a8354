//! [`Plan`]: the steps a [`PlanExecuteAgent`](super::PlanExecuteAgent)
//! asks a model for, parsed and checked.

use flowtrace_core::model::ToolSpec;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::simple::strip_fence;

/// The most steps any plan may have, whatever an agent is configured with.
pub const MAX_PLAN_STEPS: usize = 32;

/// The longest plan text parsed, in bytes.
pub const MAX_PLAN_BYTES: usize = 64 * 1024;

/// One step of a [`Plan`]: a tool call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PlanStep {
    /// The tool to call.
    pub tool: String,
    /// Its input (`{}` when absent).
    #[serde(default = "empty_object")]
    pub input: Value,
    /// Whether the goal cannot be reached if this step fails (the default):
    /// a failed critical step stops the plan.
    #[serde(default = "yes")]
    pub critical: bool,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

fn yes() -> bool {
    true
}

impl PlanStep {
    /// A critical step calling `tool` with `input`.
    pub fn new(tool: impl Into<String>, input: Value) -> Self {
        Self {
            tool: tool.into(),
            input,
            critical: true,
        }
    }

    /// Sets whether the step is critical.
    #[must_use]
    pub fn critical(mut self, critical: bool) -> Self {
        self.critical = critical;
        self
    }
}

/// A plan: tool calls to make in order.
///
/// ```
/// use flowtrace_agents::agents::Plan;
/// let plan = Plan::parse(r#"{"steps": [{"tool": "search", "input": {"q": "x"}}, {"tool": "notify", "critical": false}]}"#, 8).unwrap();
/// assert_eq!(plan.steps.len(), 2);
/// assert!(plan.steps[0].critical);
/// assert!(!plan.steps[1].critical);
/// assert!(Plan::parse(r#"{"steps": []}"#, 8).is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Plan {
    /// The steps, in order.
    pub steps: Vec<PlanStep>,
}

/// Why a plan could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The text is over [`MAX_PLAN_BYTES`].
    #[error("the plan is {bytes} bytes long (limit {limit})")]
    TooLarge {
        /// Its length.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The text is not a plan in JSON.
    #[error(
        "the plan is not JSON of the form {{\"steps\": [{{\"tool\": …, \"input\": {{…}}, \"critical\": true}}]}}: {message}"
    )]
    Malformed {
        /// The parser's message.
        message: String,
    },
    /// The plan has no steps.
    #[error("the plan has no steps")]
    Empty,
    /// The plan has more steps than allowed.
    #[error("the plan has {steps} steps (limit {limit})")]
    TooManySteps {
        /// How many.
        steps: usize,
        /// The limit.
        limit: usize,
    },
    /// A step names a tool the agent cannot use.
    #[error("step {step} uses tool {tool:?}, which is not one of the available tools")]
    UnknownTool {
        /// The step (1-based).
        step: usize,
        /// The tool.
        tool: String,
    },
}

/// The shapes a plan is accepted in: `{"steps": [...]}` or a bare array.
#[derive(Deserialize)]
#[serde(untagged)]
enum PlanShape {
    Object { steps: Vec<PlanStep> },
    Steps(Vec<PlanStep>),
}

impl Plan {
    /// A plan of `steps`.
    pub fn new(steps: Vec<PlanStep>) -> Self {
        Self { steps }
    }

    /// Parses a model's plan: JSON `{"steps": [...]}` (or a bare array of
    /// steps), optionally in a Markdown code fence, with 1 to
    /// `max_steps` steps (and never more than [`MAX_PLAN_STEPS`]).
    ///
    /// # Errors
    /// A [`PlanError`] saying what is wrong.
    pub fn parse(text: &str, max_steps: usize) -> Result<Self, PlanError> {
        if text.len() > MAX_PLAN_BYTES {
            return Err(PlanError::TooLarge {
                bytes: text.len(),
                limit: MAX_PLAN_BYTES,
            });
        }
        let shape: PlanShape =
            serde_json::from_str(strip_fence(text)).map_err(|e| PlanError::Malformed {
                message: e.to_string(),
            })?;
        let steps = match shape {
            PlanShape::Object { steps } | PlanShape::Steps(steps) => steps,
        };
        let limit = max_steps.clamp(1, MAX_PLAN_STEPS);
        if steps.is_empty() {
            return Err(PlanError::Empty);
        }
        if steps.len() > limit {
            return Err(PlanError::TooManySteps {
                steps: steps.len(),
                limit,
            });
        }
        Ok(Self { steps })
    }

    /// Checks that every step names one of `tools`.
    ///
    /// # Errors
    /// [`PlanError::UnknownTool`] for the first step that does not.
    pub fn check_tools(&self, tools: &[ToolSpec]) -> Result<(), PlanError> {
        for (i, step) in self.steps.iter().enumerate() {
            if !tools.iter().any(|t| t.name == step.tool) {
                return Err(PlanError::UnknownTool {
                    step: i + 1,
                    tool: step.tool.clone(),
                });
            }
        }
        Ok(())
    }

    /// The plan as JSON (`{"steps": [...]}`).
    pub fn to_json(&self) -> Value {
        serde_json::json!({ "steps": self.steps })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn shapes_and_limits() {
        let p = Plan::parse("```json\n[{\"tool\": \"a\"}]\n```", 4).unwrap();
        assert_eq!(p.steps, vec![PlanStep::new("a", json!({}))]);
        assert_eq!(
            Plan::parse(r#"{"steps": [{"tool": "a"}, {"tool": "b"}]}"#, 1).unwrap_err(),
            PlanError::TooManySteps { steps: 2, limit: 1 }
        );
        assert!(matches!(
            Plan::parse(r#"{"steps": [{"input": {}}]}"#, 4),
            Err(PlanError::Malformed { .. })
        ));
        let big = format!("[{}]", " ".repeat(MAX_PLAN_BYTES));
        assert!(matches!(
            Plan::parse(&big, 4),
            Err(PlanError::TooLarge { .. })
        ));
        let many: Vec<Value> = (0..40).map(|_| json!({"tool": "a"})).collect();
        assert_eq!(
            Plan::parse(&Value::Array(many).to_string(), 1000).unwrap_err(),
            PlanError::TooManySteps {
                steps: 40,
                limit: MAX_PLAN_STEPS
            }
        );
    }

    #[test]
    fn tools_are_checked() {
        let spec = ToolSpec {
            name: "search".into(),
            description: String::new(),
            parameters: json!({}),
        };
        let p = Plan::new(vec![
            PlanStep::new("search", json!({})),
            PlanStep::new("rm", json!({})),
        ]);
        assert_eq!(
            p.check_tools(&[spec]).unwrap_err(),
            PlanError::UnknownTool {
                step: 2,
                tool: "rm".into()
            }
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_respects_the_limit(text in ".{0,200}", max in 0usize..50) {
            if let Ok(plan) = Plan::parse(&text, max) {
                prop_assert!(!plan.steps.is_empty());
                prop_assert!(plan.steps.len() <= max.clamp(1, MAX_PLAN_STEPS));
            }
        }

        #[test]
        fn a_serialized_plan_parses_back(tools in proptest::collection::vec("[a-z_]{1,12}", 1..10), critical in any::<bool>()) {
            let plan = Plan::new(tools.iter().map(|t| PlanStep::new(t.clone(), json!({"x": 1})).critical(critical)).collect());
            let back = Plan::parse(&plan.to_json().to_string(), MAX_PLAN_STEPS).unwrap();
            prop_assert_eq!(back, plan);
        }
    }
}
