//! [`ReasoningAgent`]: ReAct with native tool calling, through the tool
//! registry and its permissions.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use flowtrace_core::model::Messages;
use flowtrace_core::trace::EventKind;
use flowtrace_core::{
    Agent, AgentOutput, ChatModel, ChatRequest, Message, NodeContext, NodeError, ToolError,
};
use serde_json::Value;

use super::AgentError;
use super::loop_guard::{DEFAULT_LOOP_THRESHOLD, LoopGuard};
use crate::tools::{ToolGrants, ToolRegistry};

/// The most tool calls an agent runs from one model turn; a turn asking for
/// more fails with [`AgentError::TooManyToolCalls`].
pub const MAX_TOOL_CALLS_PER_TURN: usize = 16;

/// The iteration limit of a [`ReasoningAgent`] unless configured otherwise.
pub const DEFAULT_MAX_ITERATIONS: u32 = 10;

/// Reason, act, observe: the model sees the tools its
/// [`ToolGrants`] allow (native tool calling: `ChatRequest::tools`), each
/// tool call it asks for runs through the [`ToolRegistry`] (input checked
/// against the tool's schema, permissions enforced, `tool.request` /
/// `tool.response` / `tool.denied` events), the results go back to the model,
/// and the loop ends when the model answers without calling a tool.
///
/// - A failed call — including a refused one: an unknown tool, or a
///   dangerous tool the grants do not cover, which is never executed — is
///   reported to the model as the tool's result
///   (`{"error": {"kind": "permission_denied", "message": …}}`), so it can
///   recover.
/// - Loop detection: when the model asks for the same tool with equal
///   arguments (JSON equality, key order ignored) for the
///   [`loop_threshold`](Self::loop_threshold)-th time, the agent emits an
///   `agent.loop` event and stops with [`AgentError::Loop`]; that call is not
///   executed.
/// - At most [`max_iterations`](Self::max_iterations) model calls
///   ([`AgentError::MaxIterations`]), each running at most
///   [`MAX_TOOL_CALLS_PER_TURN`] tool calls.
///
/// Model calls go through [`NodeContext::chat`], so their tokens, cost and
/// latency count in the run like any other.
///
/// ```
/// use std::sync::Arc;
/// use flowtrace_agents::agents::{ReasoningAgent, run_agent};
/// use flowtrace_agents::tools::{ToolGrants, ToolRegistry};
/// use flowtrace_core::testing::ScriptedModel;
/// use flowtrace_core::{Message, RunConfig, TokenUsage};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let model = Arc::new(ScriptedModel::new("openai").reply("Hello!", TokenUsage::new(10, 2)));
/// let agent = ReasoningAgent::new("greeter", model, "gpt-4o-mini", ToolRegistry::builder().build().unwrap())
///     .grants(ToolGrants::safe_only())
///     .max_iterations(4);
/// let run = run_agent(Arc::new(agent), vec![Message::user("hi")], RunConfig::new()).await.unwrap();
/// assert_eq!(run.output.text, "Hello!");
/// assert_eq!(run.usage, TokenUsage::new(10, 2));
/// # });
/// ```
pub struct ReasoningAgent {
    name: String,
    model: Arc<dyn ChatModel>,
    model_name: String,
    system: Option<String>,
    tools: ToolRegistry,
    grants: ToolGrants,
    max_iterations: u32,
    loop_threshold: u32,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
}

impl fmt::Debug for ReasoningAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReasoningAgent")
            .field("name", &self.name)
            .field("model", &self.model_name)
            .field("tools", &self.tools)
            .field("grants", &self.grants)
            .field("max_iterations", &self.max_iterations)
            .field("loop_threshold", &self.loop_threshold)
            .finish_non_exhaustive()
    }
}

impl ReasoningAgent {
    /// An agent named `name` calling `model_name` on `model`, with the tools
    /// of `tools` that [`ToolGrants::safe_only`] allows, at most
    /// [`DEFAULT_MAX_ITERATIONS`] model calls, and loop detection at
    /// [`DEFAULT_LOOP_THRESHOLD`] identical calls.
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
            max_iterations: DEFAULT_MAX_ITERATIONS,
            loop_threshold: DEFAULT_LOOP_THRESHOLD,
            max_tokens: None,
            temperature: None,
        }
    }

    /// Sets the system prompt.
    #[must_use]
    pub fn system(mut self, system: impl Into<String>) -> Self {
        self.system = Some(system.into());
        self
    }

    /// Sets which tools the agent may use (dangerous ones only when granted).
    #[must_use]
    pub fn grants(mut self, grants: ToolGrants) -> Self {
        self.grants = grants;
        self
    }

    /// Sets the most model calls (at least 1).
    #[must_use]
    pub fn max_iterations(mut self, limit: u32) -> Self {
        self.max_iterations = limit.max(1);
        self
    }

    /// Sets how many identical tool calls stop the agent (at least 2).
    #[must_use]
    pub fn loop_threshold(mut self, repeats: u32) -> Self {
        self.loop_threshold = repeats.max(2);
        self
    }

    /// Sets `max_tokens` of every model call.
    #[must_use]
    pub fn max_tokens(mut self, tokens: u32) -> Self {
        self.max_tokens = Some(tokens);
        self
    }

    /// Sets the sampling temperature of every model call.
    #[must_use]
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// The iteration limit.
    pub fn get_max_iterations(&self) -> u32 {
        self.max_iterations
    }

    /// The loop-detection threshold.
    pub fn get_loop_threshold(&self) -> u32 {
        self.loop_threshold
    }

    /// The grants the agent's tool calls run with.
    pub fn get_grants(&self) -> &ToolGrants {
        &self.grants
    }
}

#[async_trait]
impl Agent for ReasoningAgent {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(
        &self,
        conversation: Vec<Message>,
        ctx: &NodeContext,
    ) -> Result<AgentOutput, NodeError> {
        let first_new = conversation.len();
        let mut history = Messages::from(conversation);
        let mut base = ChatRequest::new(self.model_name.clone());
        base.system.clone_from(&self.system);
        base.tools = self.tools.specs(&self.grants);
        base.max_tokens = self.max_tokens;
        base.temperature = self.temperature;
        let mut guard = LoopGuard::new(self.loop_threshold);
        for turn in 1..=self.max_iterations {
            let mut request = base.clone();
            request.messages = history.clone();
            let response = ctx.chat(self.model.as_ref(), request).await?;
            history.push(response.to_message());
            if response.tool_calls.is_empty() {
                return Ok(AgentOutput {
                    messages: history.tail(first_new),
                    text: response.text,
                    turns: turn,
                });
            }
            if response.tool_calls.len() > MAX_TOOL_CALLS_PER_TURN {
                return Err(AgentError::TooManyToolCalls {
                    agent: self.name.clone(),
                    count: response.tool_calls.len(),
                    limit: MAX_TOOL_CALLS_PER_TURN,
                }
                .into());
            }
            for call in &response.tool_calls {
                if let Some(repeats) = guard.record(&call.name, &call.arguments) {
                    ctx.emit(EventKind::AgentLoop {
                        agent: self.name.clone(),
                        tool: call.name.clone(),
                        arguments: call.arguments.clone(),
                        repeats,
                    });
                    return Err(AgentError::Loop {
                        agent: self.name.clone(),
                        tool: call.name.clone(),
                        arguments: call.arguments.clone(),
                        repeats,
                    }
                    .into());
                }
                let result = self
                    .tools
                    .call(ctx, &self.grants, &call.name, call.arguments.clone())
                    .await;
                history.push(Message::tool_result(
                    call.id.clone(),
                    tool_result_text(&result),
                ));
            }
        }
        Err(AgentError::MaxIterations {
            agent: self.name.clone(),
            limit: self.max_iterations,
        }
        .into())
    }
}

/// A tool call's outcome as the text of its tool result: the output as
/// JSON, or `{"error": {"kind": …, "message": …}}`.
pub(crate) fn tool_result_text(result: &Result<Value, ToolError>) -> String {
    match result {
        Ok(Value::String(s)) => s.clone(),
        Ok(v) => v.to_string(),
        Err(e) => tool_error_json(e).to_string(),
    }
}

/// A tool error as JSON for a model: its kind and message.
pub(crate) fn tool_error_json(e: &ToolError) -> Value {
    serde_json::json!({"error": {"kind": e.kind().as_str(), "message": e.message}})
}

#[cfg(test)]
mod tests {
    use flowtrace_core::ToolErrorKind;
    use serde_json::json;

    use super::*;

    #[test]
    fn results_are_text_for_the_model() {
        assert_eq!(tool_result_text(&Ok(json!("plain"))), "plain");
        assert_eq!(tool_result_text(&Ok(json!({"a": 1}))), r#"{"a":1}"#);
        let denied = ToolError::new("rm", ToolErrorKind::PermissionDenied, "not granted");
        assert_eq!(
            tool_result_text(&Err(denied)),
            r#"{"error":{"kind":"permission_denied","message":"not granted"}}"#
        );
    }
}
