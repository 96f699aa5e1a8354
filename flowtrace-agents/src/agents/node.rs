//! Agents in graphs ([`AgentNode`]) and on their own ([`run_agent`]).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use flowtrace_core::{
    Agent, AgentOutput, BuildError, Cost, GraphBuilder, JsonState, Message, Node, NodeContext,
    NodeOutput, NodeResult, RunConfig, RunFailure, RunSummary, State, TokenUsage, node_fn,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::AgentError;
use crate::memory::ConversationMemory;

/// The most messages an [`AgentNode`] reads from its input field.
pub const MAX_INPUT_MESSAGES: usize = 10_000;

/// The field an [`AgentNode`] reads its conversation from unless configured
/// otherwise.
pub const DEFAULT_INPUT_FIELD: &str = "messages";

/// The field an [`AgentNode`] writes its answer to unless configured
/// otherwise.
pub const DEFAULT_OUTPUT_FIELD: &str = "answer";

#[derive(Clone)]
struct MemoryBinding {
    memory: Arc<dyn ConversationMemory>,
    thread_field: String,
}

/// An agent as a node of a [`JsonState`] graph: it reads the conversation
/// from a field, runs the agent, and writes the answer's text to another.
///
/// - Input field ([`DEFAULT_INPUT_FIELD`]): a string (one user message — a
///   question, or a plan-execute agent's goal) or an array of messages
///   (`{"role": "user", "content": …}`), at most [`MAX_INPUT_MESSAGES`].
/// - Output field ([`DEFAULT_OUTPUT_FIELD`]): the answer's text.
/// - [`messages_field`](Self::messages_field), optionally: the messages the
///   agent added (declare it an append key of the state to accumulate).
/// - [`memory`](Self::memory), optionally: the thread's earlier messages
///   are loaded from a [`ConversationMemory`] and put before the input, and
///   the input and the agent's messages are appended to it after the run.
///
/// ```
/// use std::sync::Arc;
/// use flowtrace_agents::agents::{ReasoningAgent, agent_node};
/// use flowtrace_agents::tools::ToolRegistry;
/// use flowtrace_core::testing::ScriptedModel;
/// use flowtrace_core::{GraphBuilder, JsonState, RunConfig, TokenUsage};
/// use serde_json::json;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let model = Arc::new(ScriptedModel::new("openai").reply("Paris.", TokenUsage::new(9, 2)));
/// let agent = ReasoningAgent::new("geo", model, "gpt-4o-mini", ToolRegistry::builder().build().unwrap());
/// let graph = GraphBuilder::<JsonState>::new("qa")
///     .add_node("agent", agent_node(Arc::new(agent)).output_field("capital"))
///     .set_entry("agent")
///     .set_finish("agent")
///     .compile()
///     .unwrap();
/// let mut input = JsonState::new();
/// input.values.insert("messages".into(), json!("Capital of France?"));
/// let out = graph.invoke(input, RunConfig::new()).await.unwrap();
/// assert_eq!(out.state.get("capital"), Some(&json!("Paris.")));
/// # });
/// ```
#[must_use]
#[derive(Clone)]
pub struct AgentNode {
    agent: Arc<dyn Agent>,
    input: String,
    output: String,
    messages: Option<String>,
    memory: Option<MemoryBinding>,
}

impl fmt::Debug for AgentNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentNode")
            .field("agent", &self.agent.name())
            .field("input", &self.input)
            .field("output", &self.output)
            .field("messages", &self.messages)
            .field(
                "memory_thread_field",
                &self.memory.as_ref().map(|m| &m.thread_field),
            )
            .finish()
    }
}

/// `agent` as a [`JsonState`] node with the default fields; see
/// [`AgentNode`].
pub fn agent_node(agent: Arc<dyn Agent>) -> AgentNode {
    AgentNode::new(agent)
}

impl AgentNode {
    /// `agent` as a node reading [`DEFAULT_INPUT_FIELD`] and writing
    /// [`DEFAULT_OUTPUT_FIELD`].
    pub fn new(agent: Arc<dyn Agent>) -> Self {
        Self {
            agent,
            input: DEFAULT_INPUT_FIELD.to_string(),
            output: DEFAULT_OUTPUT_FIELD.to_string(),
            messages: None,
            memory: None,
        }
    }

    /// Reads the conversation from `field`.
    pub fn input_field(mut self, field: impl Into<String>) -> Self {
        self.input = field.into();
        self
    }

    /// Writes the answer's text to `field`.
    pub fn output_field(mut self, field: impl Into<String>) -> Self {
        self.output = field.into();
        self
    }

    /// Also writes the messages the agent added to `field`.
    pub fn messages_field(mut self, field: impl Into<String>) -> Self {
        self.messages = Some(field.into());
        self
    }

    /// Keeps the conversation in `memory`, under the thread named by the
    /// state's string field `thread_field`.
    pub fn memory(
        mut self,
        memory: Arc<dyn ConversationMemory>,
        thread_field: impl Into<String>,
    ) -> Self {
        self.memory = Some(MemoryBinding {
            memory,
            thread_field: thread_field.into(),
        });
        self
    }

    fn memory_error(&self, source: crate::memory::MemoryError) -> AgentError {
        AgentError::Memory {
            agent: self.agent.name().to_string(),
            source,
        }
    }
}

/// The conversation in `state`'s field `field`.
fn read_conversation(state: &JsonState, field: &str) -> Result<Vec<Message>, AgentError> {
    let invalid = |problem: String| AgentError::InvalidInput {
        field: field.to_string(),
        problem,
    };
    match state.get(field) {
        None => Err(invalid("is missing".into())),
        Some(Value::String(text)) => Ok(vec![Message::user(text.clone())]),
        Some(Value::Array(items)) if items.len() > MAX_INPUT_MESSAGES => Err(invalid(format!(
            "holds {} messages (MAX_INPUT_MESSAGES is {MAX_INPUT_MESSAGES})",
            items.len()
        ))),
        Some(v @ Value::Array(_)) => Vec::<Message>::deserialize(v)
            .map_err(|e| invalid(format!("is not an array of messages: {e}"))),
        Some(_) => Err(invalid(
            "must be a string or an array of messages".to_string(),
        )),
    }
}

#[async_trait]
impl Node<JsonState> for AgentNode {
    async fn run(
        &self,
        state: Arc<JsonState>,
        ctx: NodeContext,
    ) -> NodeResult<<JsonState as State>::Update> {
        let input = read_conversation(&state, &self.input)?;
        let thread = match &self.memory {
            Some(binding) => match state.get(&binding.thread_field) {
                Some(Value::String(t)) => Some((binding, t.clone())),
                _ => {
                    return Err(AgentError::InvalidInput {
                        field: binding.thread_field.clone(),
                        problem: "must be a string naming the conversation thread".into(),
                    }
                    .into());
                }
            },
            None => None,
        };
        let mut conversation = match &thread {
            Some((binding, t)) => binding
                .memory
                .messages(t)
                .await
                .map_err(|e| self.memory_error(e))?,
            None => Vec::new(),
        };
        conversation.extend(input.iter().cloned());
        let out = self.agent.run(conversation, &ctx).await?;
        if let Some((binding, t)) = &thread {
            let mut new = input;
            new.extend(out.messages.iter().cloned());
            binding
                .memory
                .append(t, &new)
                .await
                .map_err(|e| self.memory_error(e))?;
        }
        let mut update = Map::new();
        update.insert(self.output.clone(), Value::String(out.text));
        if let Some(field) = &self.messages {
            update.insert(field.clone(), serde_json::to_value(&out.messages)?);
        }
        Ok(NodeOutput::update(update))
    }
}

/// The state of [`run_agent`]'s one-node graph.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Solo {
    conversation: Vec<Message>,
    output: SoloOutput,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct SoloOutput {
    messages: Vec<Message>,
    text: String,
    turns: u32,
}

impl State for Solo {
    type Update = SoloOutput;

    fn apply(&mut self, update: SoloOutput) {
        self.output = update;
    }
}

/// What [`run_agent`] produced: the answer, and what the run consumed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AgentRun {
    /// The agent's output.
    pub output: AgentOutput,
    /// Tokens of every model call.
    pub usage: TokenUsage,
    /// Their exact cost.
    pub cost: Cost,
    /// The run's summary (steps, latency, status).
    pub summary: RunSummary,
}

/// Why [`run_agent`] produced no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunAgentError {
    /// The one-node graph could not be built (an agent name that is not a
    /// valid node id).
    #[error("the agent's one-node graph could not be built")]
    Build {
        /// Why.
        #[source]
        source: BuildError,
    },
    /// The run failed; the failure has the summary of what it consumed.
    #[error("the agent's run failed")]
    Failed {
        /// The failure.
        #[source]
        failure: Box<RunFailure>,
    },
}

impl RunAgentError {
    /// The failed run, when the run started.
    pub fn failure(&self) -> Option<&RunFailure> {
        match self {
            Self::Failed { failure } => Some(failure),
            Self::Build { .. } => None,
        }
    }

    /// The agent's own error, when the agent failed with one.
    pub fn agent_error(&self) -> Option<&AgentError> {
        match &self.failure()?.error {
            flowtrace_core::Error::Node { error, .. } => AgentError::find(error),
            _ => None,
        }
    }
}

/// Runs `agent` on `conversation` on its own: in a one-node graph under
/// `config` (its budget, sinks, pricing and cancellation apply), returning
/// the output with the run's tokens and exact cost.
///
/// # Errors
/// [`RunAgentError::Failed`] with the run's failure (see
/// [`RunAgentError::agent_error`] for the agent's own error).
///
/// # Cancel safety
/// Dropping the future abandons the run.
pub async fn run_agent(
    agent: Arc<dyn Agent>,
    conversation: Vec<Message>,
    config: RunConfig,
) -> Result<AgentRun, RunAgentError> {
    let name = agent.name().to_string();
    let node = node_fn(move |state: Arc<Solo>, ctx: NodeContext| {
        let agent = agent.clone();
        async move {
            let out = agent.run(state.conversation.clone(), &ctx).await?;
            Ok(NodeOutput::update(SoloOutput {
                messages: out.messages,
                text: out.text,
                turns: out.turns,
            }))
        }
    });
    let graph = GraphBuilder::<Solo>::new(format!("agent:{name}"))
        .add_node(name.as_str(), node)
        .set_entry(name.as_str())
        .set_finish(name.as_str())
        .compile()
        .map_err(|source| RunAgentError::Build { source })?;
    let input = Solo {
        conversation,
        output: SoloOutput::default(),
    };
    let out = graph
        .invoke(input, config)
        .await
        .map_err(|failure| RunAgentError::Failed {
            failure: Box::new(failure),
        })?;
    let SoloOutput {
        messages,
        text,
        turns,
    } = out.state.output;
    Ok(AgentRun {
        output: AgentOutput {
            messages,
            text,
            turns,
        },
        usage: out.summary.usage,
        cost: out.summary.cost,
        summary: out.summary,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    fn state(field: &str, value: Value) -> JsonState {
        let mut s = JsonState::new();
        s.values.insert(field.into(), value);
        s
    }

    #[test]
    fn reads_strings_and_message_arrays() {
        let s = state("m", json!("hi"));
        assert_eq!(
            read_conversation(&s, "m").unwrap(),
            vec![Message::user("hi")]
        );
        let s = state(
            "m",
            json!([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]),
        );
        assert_eq!(
            read_conversation(&s, "m").unwrap(),
            vec![Message::user("a"), Message::assistant("b")]
        );
        let e = read_conversation(&s, "other").unwrap_err();
        assert_eq!(e.to_string(), r#"agent node: field "other" is missing"#);
        let e = read_conversation(&state("m", json!(3)), "m").unwrap_err();
        assert!(e.to_string().contains("must be a string"), "{e}");
        let e = read_conversation(&state("m", json!([{"role": "robot"}])), "m").unwrap_err();
        assert!(e.to_string().contains("is not an array of messages"), "{e}");
        let many = Value::Array(vec![
            json!({"role": "user", "content": ""});
            MAX_INPUT_MESSAGES + 1
        ]);
        let e = read_conversation(&state("m", many), "m").unwrap_err();
        assert!(e.to_string().contains("MAX_INPUT_MESSAGES"), "{e}");
    }
}
