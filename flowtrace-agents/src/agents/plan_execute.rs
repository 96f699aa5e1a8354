//! [`PlanExecuteAgent`]: plan, execute, reflect, re-plan.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use flowtrace_core::model::{ResponseFormat, Role, ToolSpec};
use flowtrace_core::trace::LogLevel;
use flowtrace_core::{Agent, AgentOutput, ChatModel, ChatRequest, Message, NodeContext, NodeError};
use serde::Deserialize;
use serde_json::{Value, json};

use super::reasoning::tool_error_json;
use super::simple::strip_fence;
use super::{AgentError, Plan, PlanError};
use crate::memory::{Episode, EpisodeOutcome, EpisodicStore};
use crate::tools::{ToolGrants, ToolRegistry};

/// How many times a [`PlanExecuteAgent`] plans again after a failed plan,
/// unless configured otherwise.
pub const DEFAULT_MAX_REPLANS: u32 = 2;

/// The most steps of a [`PlanExecuteAgent`]'s plans unless configured
/// otherwise (never more than [`MAX_PLAN_STEPS`](super::MAX_PLAN_STEPS)).
pub const DEFAULT_PLAN_STEPS: usize = 8;

/// How many similar past episodes a [`PlanExecuteAgent`] shows the planner.
pub const SIMILAR_EPISODES: usize = 3;

/// The most characters of one step's result shown to the model when it
/// reflects (the rest is cut and marked `…`).
pub const MAX_STEP_RESULT_CHARS: usize = 4_000;

const PLANNER: &str = "You plan how to reach a goal with tools. Reply with only a JSON object \
of the form {\"steps\": [{\"tool\": \"<tool name>\", \"input\": {<the tool's arguments>}, \
\"critical\": true}]}. Steps run in order. Mark a step \"critical\": false when the goal can \
still be reached if it fails.";

const REFLECTOR: &str = "You check whether the results of a plan reach a goal. Reply with only \
a JSON object {\"success\": true|false, \"answer\": \"<the final answer to the goal, when \
success>\", \"reason\": \"<what is missing or wrong, when not>\"}.";

/// The result of one executed step, as shown to the reflecting model.
#[derive(Debug)]
struct StepResult {
    tool: String,
    critical: bool,
    result: Result<Value, Value>,
}

/// What the reflecting model answered.
#[derive(Debug, Deserialize)]
struct Reflection {
    success: bool,
    #[serde(default)]
    answer: String,
    #[serde(default)]
    reason: String,
}

/// Why one round failed.
enum RoundFailure {
    Invalid(PlanError),
    Failed(String),
}

/// Plan, execute, reflect: the model writes a JSON [`Plan`] (steps naming a
/// tool, its input, and whether the step is critical), the agent runs the
/// steps through the [`ToolRegistry`] with its [`ToolGrants`], then asks the
/// model whether the results reach the goal and for the answer.
///
/// - The goal is the conversation's last user message.
/// - A plan that does not parse, is empty, has more than
///   [`max_steps`](Self::max_steps) steps or names a tool the agent cannot
///   use is rejected; the model plans again with the reason.
/// - A critical step that fails stops the plan; a non-critical one is
///   reported and the plan goes on.
/// - When a critical step failed or the reflection says the goal is not
///   reached, the model plans again, seeing the previous plan and why it
///   failed — at most [`max_replans`](Self::max_replans) times, then the
///   agent fails with [`AgentError::PlanFailed`] (or
///   [`AgentError::InvalidPlan`] when the last plan was unusable).
/// - With an [episodic store](Self::episodes), the planner first sees up to
///   [`SIMILAR_EPISODES`] similar past goals with their plans and outcomes,
///   and every executed plan is recorded with its outcome (a failure to
///   record is logged as a warning, the answer is kept).
///
/// The agent's output holds one message, the answer.
pub struct PlanExecuteAgent {
    name: String,
    model: Arc<dyn ChatModel>,
    model_name: String,
    system: Option<String>,
    tools: ToolRegistry,
    grants: ToolGrants,
    max_replans: u32,
    max_steps: usize,
    episodes: Option<Arc<dyn EpisodicStore>>,
    max_tokens: Option<u32>,
}

impl fmt::Debug for PlanExecuteAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlanExecuteAgent")
            .field("name", &self.name)
            .field("model", &self.model_name)
            .field("tools", &self.tools)
            .field("grants", &self.grants)
            .field("max_replans", &self.max_replans)
            .field("max_steps", &self.max_steps)
            .field("episodes", &self.episodes.is_some())
            .finish_non_exhaustive()
    }
}

impl PlanExecuteAgent {
    /// An agent named `name` calling `model_name` on `model`, with the tools
    /// of `tools` that [`ToolGrants::safe_only`] allows, plans of at most
    /// [`DEFAULT_PLAN_STEPS`] steps, [`DEFAULT_MAX_REPLANS`] re-plans, and no
    /// episodic store.
    pub fn new(
        name: impl Into<String>,
        model: Arc<dyn ChatModel>,
        model_name: impl Into<String>,
        tools: ToolRegistry,
    ) -> Self {
        Self {
            name: name.into(),
            model,
            model_name: model_name.into(),
            system: None,
            tools,
            grants: ToolGrants::safe_only(),
            max_replans: DEFAULT_MAX_REPLANS,
            max_steps: DEFAULT_PLAN_STEPS,
            episodes: None,
            max_tokens: None,
        }
    }

    /// Adds instructions in front of the planner's and reflector's own.
    #[must_use]
    pub fn system(mut self, system: impl Into<String>) -> Self {
        self.system = Some(system.into());
        self
    }

    /// Sets which tools the agent may use.
    #[must_use]
    pub fn grants(mut self, grants: ToolGrants) -> Self {
        self.grants = grants;
        self
    }

    /// Sets how many times the agent plans again after a failure.
    #[must_use]
    pub fn max_replans(mut self, replans: u32) -> Self {
        self.max_replans = replans;
        self
    }

    /// Sets the most steps of a plan (1 to
    /// [`MAX_PLAN_STEPS`](super::MAX_PLAN_STEPS)).
    #[must_use]
    pub fn max_steps(mut self, steps: usize) -> Self {
        self.max_steps = steps.clamp(1, super::MAX_PLAN_STEPS);
        self
    }

    /// Consults and records past episodes in `store`.
    #[must_use]
    pub fn episodes(mut self, store: Arc<dyn EpisodicStore>) -> Self {
        self.episodes = Some(store);
        self
    }

    /// Sets `max_tokens` of every model call.
    #[must_use]
    pub fn max_tokens(mut self, tokens: u32) -> Self {
        self.max_tokens = Some(tokens);
        self
    }

    /// The re-plan limit.
    pub fn get_max_replans(&self) -> u32 {
        self.max_replans
    }

    /// The step limit.
    pub fn get_max_steps(&self) -> usize {
        self.max_steps
    }

    fn request(&self, instructions: &str, prompt: String) -> ChatRequest {
        let system = match &self.system {
            Some(s) => format!("{s}\n\n{instructions}"),
            None => instructions.to_string(),
        };
        let mut request = ChatRequest::new(self.model_name.clone())
            .system(system)
            .user(prompt);
        request.response_format = Some(ResponseFormat::JsonObject);
        request.max_tokens = self.max_tokens;
        request
    }

    fn planner_prompt(
        &self,
        goal: &str,
        tools: &[ToolSpec],
        past: &[Episode],
        previous: Option<&(Value, String)>,
    ) -> String {
        let tools: Vec<Value> = tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "parameters": t.parameters}))
            .collect();
        let mut prompt = format!(
            "Goal: {goal}\n\nAvailable tools (use at most {} steps, only these tools):\n{}\n",
            self.max_steps,
            Value::Array(tools)
        );
        if !past.is_empty() {
            prompt.push_str("\nSimilar goals tried before:\n");
            for e in past {
                let outcome = match &e.outcome {
                    EpisodeOutcome::Succeeded { answer } => format!("succeeded: {answer}"),
                    EpisodeOutcome::Failed { reason } => format!("failed: {reason}"),
                };
                prompt.push_str(&format!(
                    "- goal: {}\n  plan: {}\n  outcome: {outcome}\n",
                    e.goal, e.plan
                ));
            }
        }
        if let Some((plan, reason)) = previous {
            prompt.push_str(&format!(
                "\nThe previous plan failed.\nPlan: {plan}\nReason: {reason}\nMake a new plan that avoids this failure.\n"
            ));
        }
        prompt
    }

    async fn execute(&self, plan: &Plan, ctx: &NodeContext) -> (Vec<StepResult>, Option<String>) {
        let mut results = Vec::with_capacity(plan.steps.len());
        for (i, step) in plan.steps.iter().enumerate() {
            let outcome = self
                .tools
                .call(ctx, &self.grants, &step.tool, step.input.clone())
                .await;
            let failure = match &outcome {
                Err(e) if step.critical => Some(format!(
                    "critical step {} ({}) failed: {} ({})",
                    i + 1,
                    step.tool,
                    e.message,
                    e.kind()
                )),
                _ => None,
            };
            results.push(StepResult {
                tool: step.tool.clone(),
                critical: step.critical,
                result: outcome.map_err(|e| tool_error_json(&e)),
            });
            if failure.is_some() {
                return (results, failure);
            }
        }
        (results, None)
    }

    async fn record(&self, ctx: &NodeContext, goal: &str, plan: &Plan, outcome: EpisodeOutcome) {
        if let Some(store) = &self.episodes {
            let episode = Episode::new(goal, plan.to_json(), outcome);
            if let Err(e) = store.record(episode).await {
                ctx.log(
                    LogLevel::Warn,
                    format!("agent {:?}: could not record the episode: {e}", self.name),
                );
            }
        }
    }
}

/// The results as JSON for the reflecting model, each cut to
/// [`MAX_STEP_RESULT_CHARS`].
fn results_json(results: &[StepResult]) -> Value {
    Value::Array(
        results
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (key, value) = match &r.result {
                    Ok(v) => ("output", v),
                    Err(e) => ("error", e),
                };
                let text = match value {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                };
                json!({
                    "step": i + 1,
                    "tool": r.tool,
                    "critical": r.critical,
                    (key): cut(&text, MAX_STEP_RESULT_CHARS),
                })
            })
            .collect(),
    )
}

/// `text` cut to `limit` characters, marked with `…` when cut.
fn cut(text: &str, limit: usize) -> String {
    match text.char_indices().nth(limit) {
        Some((at, _)) => format!("{}…", text.get(..at).unwrap_or(text)),
        None => text.to_string(),
    }
}

#[async_trait]
impl Agent for PlanExecuteAgent {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(
        &self,
        conversation: Vec<Message>,
        ctx: &NodeContext,
    ) -> Result<AgentOutput, NodeError> {
        let goal = conversation
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.clone())
            .ok_or_else(|| AgentError::InvalidInput {
                field: "conversation".into(),
                problem: "has no user message to take the goal from".into(),
            })?;
        let past = match &self.episodes {
            Some(store) => store
                .similar(&goal, SIMILAR_EPISODES)
                .await
                .map_err(|source| AgentError::Memory {
                    agent: self.name.clone(),
                    source,
                })?,
            None => Vec::new(),
        };
        let tools = self.tools.specs(&self.grants);
        let rounds = self.max_replans.saturating_add(1);
        let mut turns = 0u32;
        let mut executed = 0u32;
        let mut previous: Option<(Value, String)> = None;
        let mut last = RoundFailure::Failed(String::new());
        for _ in 0..rounds {
            let prompt = self.planner_prompt(&goal, &tools, &past, previous.as_ref());
            let reply = ctx
                .chat(self.model.as_ref(), self.request(PLANNER, prompt))
                .await?;
            turns = turns.saturating_add(1);
            let plan = match Plan::parse(&reply.text, self.max_steps)
                .and_then(|p| p.check_tools(&tools).map(|()| p))
            {
                Ok(plan) => plan,
                Err(e) => {
                    previous = Some((
                        Value::String(cut(&reply.text, MAX_STEP_RESULT_CHARS)),
                        format!("the plan was rejected: {e}"),
                    ));
                    last = RoundFailure::Invalid(e);
                    continue;
                }
            };
            executed = executed.saturating_add(1);
            let (results, failure) = self.execute(&plan, ctx).await;
            let reason = match failure {
                Some(reason) => reason,
                None => {
                    let prompt = format!(
                        "Goal: {goal}\n\nPlan: {}\n\nResults: {}",
                        plan.to_json(),
                        results_json(&results)
                    );
                    let reply = ctx
                        .chat(self.model.as_ref(), self.request(REFLECTOR, prompt))
                        .await?;
                    turns = turns.saturating_add(1);
                    match serde_json::from_str::<Reflection>(strip_fence(&reply.text)) {
                        Ok(r) if r.success => {
                            self.record(
                                ctx,
                                &goal,
                                &plan,
                                EpisodeOutcome::Succeeded {
                                    answer: r.answer.clone(),
                                },
                            )
                            .await;
                            return Ok(AgentOutput {
                                messages: vec![Message::assistant(r.answer.clone())],
                                text: r.answer,
                                turns,
                            });
                        }
                        Ok(r) if r.reason.is_empty() => {
                            "the reflection judged the goal not reached".to_string()
                        }
                        Ok(r) => format!("the goal was not reached: {}", r.reason),
                        Err(e) => format!("the reflection was not valid JSON: {e}"),
                    }
                }
            };
            self.record(
                ctx,
                &goal,
                &plan,
                EpisodeOutcome::Failed {
                    reason: reason.clone(),
                },
            )
            .await;
            previous = Some((plan.to_json(), reason.clone()));
            last = RoundFailure::Failed(reason);
        }
        Err(match last {
            RoundFailure::Invalid(source) => AgentError::InvalidPlan {
                agent: self.name.clone(),
                attempts: rounds,
                source,
            },
            RoundFailure::Failed(reason) => AgentError::PlanFailed {
                agent: self.name.clone(),
                attempts: executed,
                reason,
            },
        }
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_marks_long_text() {
        assert_eq!(cut("héllo", 10), "héllo");
        assert_eq!(cut("héllo", 2), "hé…");
        assert_eq!(cut("", 0), "");
    }

    #[test]
    fn results_show_outputs_and_errors() {
        let r = results_json(&[
            StepResult {
                tool: "a".into(),
                critical: true,
                result: Ok(json!({"x": 1})),
            },
            StepResult {
                tool: "b".into(),
                critical: false,
                result: Err(json!("boom")),
            },
        ]);
        assert_eq!(
            r,
            json!([
                {"step": 1, "tool": "a", "critical": true, "output": "{\"x\":1}"},
                {"step": 2, "tool": "b", "critical": false, "error": "boom"}
            ])
        );
    }
}
