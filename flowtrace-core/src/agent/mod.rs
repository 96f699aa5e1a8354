//! Agents: a model that reasons in turns and calls tools until it answers.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::NodeError;
use crate::model::{ChatModel, ChatRequest, Message, Messages};
use crate::node::NodeContext;
use crate::tool::Tool;

/// What an agent produced.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentOutput {
    /// The messages the agent added (assistant turns and tool results).
    pub messages: Vec<Message>,
    /// The final answer's text.
    pub text: String,
    /// Model calls made.
    pub turns: u32,
}

/// Something that turns a conversation into an answer, possibly over several
/// model and tool calls. Calls go through the [`NodeContext`], so they are
/// traced, priced and budgeted like any other.
#[async_trait]
pub trait Agent: Send + Sync {
    /// The agent's name.
    fn name(&self) -> &str;

    /// Continues `conversation` until the agent has an answer.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the current model or tool call.
    async fn run(
        &self,
        conversation: Vec<Message>,
        ctx: &NodeContext,
    ) -> Result<AgentOutput, NodeError>;
}

/// The classic tool-calling loop: call the model; if it asks for tools, run
/// them (through [`NodeContext::call_tool`]) and feed the results back;
/// repeat until it answers without tool calls or `max_turns` is reached.
///
/// A tool failure is reported to the model as the tool's result (so it can
/// recover), and recorded in the trace as a failed `tool.response`.
pub struct ToolLoopAgent {
    name: String,
    model: Arc<dyn ChatModel>,
    model_name: String,
    system: Option<String>,
    tools: Vec<Arc<dyn Tool>>,
    max_turns: u32,
    max_tokens: Option<u32>,
}

impl fmt::Debug for ToolLoopAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolLoopAgent")
            .field("name", &self.name)
            .field("model", &self.model_name)
            .field(
                "tools",
                &self
                    .tools
                    .iter()
                    .map(|t| t.name().to_string())
                    .collect::<Vec<_>>(),
            )
            .field("max_turns", &self.max_turns)
            .finish()
    }
}

impl ToolLoopAgent {
    /// An agent named `name` using `model_name` on `model`, with no tools,
    /// at most 8 turns.
    pub fn new(
        name: impl Into<String>,
        model: Arc<dyn ChatModel>,
        model_name: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            model,
            model_name: model_name.into(),
            system: None,
            tools: Vec::new(),
            max_turns: 8,
            max_tokens: None,
        }
    }

    /// Sets the system prompt.
    pub fn system(mut self, system: impl Into<String>) -> Self {
        self.system = Some(system.into());
        self
    }

    /// Adds a tool.
    pub fn tool(mut self, tool: Arc<dyn Tool>) -> Self {
        self.tools.push(tool);
        self
    }

    /// Sets the most model calls.
    pub fn max_turns(mut self, turns: u32) -> Self {
        self.max_turns = turns;
        self
    }

    /// Sets `max_tokens` of every model call.
    pub fn max_tokens(mut self, tokens: u32) -> Self {
        self.max_tokens = Some(tokens);
        self
    }
}

#[async_trait]
impl Agent for ToolLoopAgent {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(
        &self,
        conversation: Vec<Message>,
        ctx: &NodeContext,
    ) -> Result<AgentOutput, NodeError> {
        // The history is shared with each turn's request, not copied into
        // it: once the model has answered and let the request go, appending
        // the turn touches only the new messages, so a run costs what its
        // conversation holds, not that times the number of turns.
        let first_new = conversation.len();
        let mut history = Messages::from(conversation);
        let mut base = ChatRequest::new(self.model_name.clone());
        base.system.clone_from(&self.system);
        base.tools = self.tools.iter().map(|t| t.spec()).collect();
        base.max_tokens = self.max_tokens;
        for turn in 1..=self.max_turns {
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
            for call in &response.tool_calls {
                let content = match self.tools.iter().find(|t| t.name() == call.name) {
                    Some(tool) => {
                        match ctx.call_tool(tool.as_ref(), call.arguments.clone()).await {
                            Ok(v) => v.to_string(),
                            Err(e) => format!("error: {e}"),
                        }
                    }
                    None => format!("error: unknown tool {:?}", call.name),
                };
                history.push(Message::tool_result(call.id.clone(), content));
            }
        }
        Err(NodeError::permanent(format!(
            "agent {:?} did not finish within {} turns",
            self.name, self.max_turns
        )))
    }
}
