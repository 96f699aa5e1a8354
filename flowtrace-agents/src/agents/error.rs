//! [`AgentError`]: why an agent stopped without an answer.

use flowtrace_core::{ErrorClass, NodeError};

/// Why an agent stopped without an answer.
///
/// An agent's [`run`](flowtrace_core::Agent::run) returns a
/// [`NodeError`]; these errors travel inside it (made with
/// [`NodeError::from_error`], so the message is this error's and
/// [`source()`](std::error::Error::source) continues with this error's
/// cause). [`AgentError::find`] takes them back out. Failures of the model
/// call itself (a provider error, an exhausted budget, a cancellation) are
/// not wrapped: they reach the caller unchanged.
///
/// ```
/// use flowtrace_agents::agents::AgentError;
/// use flowtrace_core::NodeError;
///
/// let err: NodeError = AgentError::MaxIterations { agent: "react".into(), limit: 4 }.into();
/// assert!(!err.is_retryable());
/// assert!(matches!(AgentError::find(&err), Some(AgentError::MaxIterations { limit: 4, .. })));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The model was still calling tools when the iteration limit was
    /// reached.
    #[error("agent {agent:?} did not answer within {limit} iterations")]
    MaxIterations {
        /// The agent.
        agent: String,
        /// The limit.
        limit: u32,
    },
    /// The model asked for the same tool call (same tool, equal arguments)
    /// `repeats` times.
    #[error(
        "agent {agent:?} is looping: tool {tool:?} was asked for {repeats} times with the same arguments {arguments}"
    )]
    Loop {
        /// The agent.
        agent: String,
        /// The tool.
        tool: String,
        /// The repeated arguments.
        arguments: serde_json::Value,
        /// How many times the call was asked for.
        repeats: u32,
    },
    /// The model asked for more tool calls in one turn than an agent runs.
    #[error("agent {agent:?}: the model asked for {count} tool calls in one turn (limit {limit})")]
    TooManyToolCalls {
        /// The agent.
        agent: String,
        /// How many it asked for.
        count: usize,
        /// The limit ([`MAX_TOOL_CALLS_PER_TURN`](super::MAX_TOOL_CALLS_PER_TURN)).
        limit: usize,
    },
    /// The reply still did not match the output schema after the allowed
    /// re-asks.
    #[error("agent {agent:?}: the reply did not match the output schema after {attempts} attempt(s): {}", .problems.join("; "))]
    InvalidStructuredOutput {
        /// The agent.
        agent: String,
        /// Model calls made.
        attempts: u32,
        /// What was wrong with the last reply (at most
        /// [`MAX_OUTPUT_PROBLEMS`](super::MAX_OUTPUT_PROBLEMS)).
        problems: Vec<String>,
    },
    /// The output schema given to an agent is not a valid JSON Schema.
    #[error("agent {agent:?}: the output schema is not a valid JSON Schema: {message}")]
    InvalidSchema {
        /// The agent.
        agent: String,
        /// What is wrong with it.
        message: String,
    },
    /// The prompt template could not be compiled or rendered.
    #[error("agent {agent:?}: prompt template {template:?}")]
    Template {
        /// The agent.
        agent: String,
        /// The template's name.
        template: String,
        /// The template engine's error.
        #[source]
        source: super::TemplateError,
    },
    /// The model's last plan could not be used.
    #[error("agent {agent:?}: no usable plan after {attempts} attempt(s)")]
    InvalidPlan {
        /// The agent.
        agent: String,
        /// Planning attempts made.
        attempts: u32,
        /// What was wrong with the last plan.
        #[source]
        source: super::PlanError,
    },
    /// Every plan failed (a critical step failed, or the reflection judged
    /// the goal not reached) and no re-plan was left.
    #[error("agent {agent:?}: the goal was not reached after {attempts} plan(s): {reason}")]
    PlanFailed {
        /// The agent.
        agent: String,
        /// Plans executed.
        attempts: u32,
        /// Why the last plan failed.
        reason: String,
    },
    /// No agent with the capability is healthy, or every healthy one
    /// failed.
    #[error("no healthy agent with capability {capability:?} answered (tried: {})", if .tried.is_empty() { "none".to_string() } else { .tried.join(", ") })]
    NoHealthyAgent {
        /// The capability asked for.
        capability: String,
        /// The agents tried, in order.
        tried: Vec<String>,
        /// The last agent's error.
        #[source]
        source: Option<NodeError>,
    },
    /// No agent of that name is registered.
    #[error("no agent named {name:?} is registered")]
    UnknownAgent {
        /// The name.
        name: String,
    },
    /// Two agents of a registry share a name.
    #[error("agent {name:?} is registered twice")]
    DuplicateAgent {
        /// The name.
        name: String,
    },
    /// The agent's input could not be read from the graph state.
    #[error("agent node: field {field:?} {problem}")]
    InvalidInput {
        /// The state field.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A memory store failed.
    #[error("agent {agent:?}: memory store failed")]
    Memory {
        /// The agent.
        agent: String,
        /// The store's error.
        #[source]
        source: crate::memory::MemoryError,
    },
}

impl AgentError {
    /// The agent error carried by `error` (an agent's failure), if any.
    pub fn find(error: &NodeError) -> Option<&AgentError> {
        error.get_ref().and_then(|e| e.downcast_ref::<AgentError>())
    }

    /// A short, stable name of the variant (`max_iterations`, `loop`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MaxIterations { .. } => "max_iterations",
            Self::Loop { .. } => "loop",
            Self::TooManyToolCalls { .. } => "too_many_tool_calls",
            Self::InvalidStructuredOutput { .. } => "invalid_structured_output",
            Self::InvalidSchema { .. } => "invalid_schema",
            Self::Template { .. } => "template",
            Self::InvalidPlan { .. } => "invalid_plan",
            Self::PlanFailed { .. } => "plan_failed",
            Self::NoHealthyAgent { .. } => "no_healthy_agent",
            Self::UnknownAgent { .. } => "unknown_agent",
            Self::DuplicateAgent { .. } => "duplicate_agent",
            Self::InvalidInput { .. } => "invalid_input",
            Self::Memory { .. } => "memory",
        }
    }
}

/// Every agent error is permanent: running the same agent on the same
/// conversation again would fail the same way (a memory store's transient
/// failure excepted, which keeps its class).
impl From<AgentError> for NodeError {
    fn from(e: AgentError) -> Self {
        let class = match &e {
            AgentError::Memory { source, .. } if source.is_retryable() => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        };
        NodeError::from_error(class, e)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::error::Error as _;

    use super::*;

    #[test]
    fn messages_name_the_agent_and_limit() {
        let e = AgentError::Loop {
            agent: "a".into(),
            tool: "t".into(),
            arguments: serde_json::json!({"x": 1}),
            repeats: 3,
        };
        assert_eq!(
            e.to_string(),
            r#"agent "a" is looping: tool "t" was asked for 3 times with the same arguments {"x":1}"#
        );
        let e = AgentError::NoHealthyAgent {
            capability: "search".into(),
            tried: vec![],
            source: None,
        };
        assert_eq!(
            e.to_string(),
            r#"no healthy agent with capability "search" answered (tried: none)"#
        );
    }

    #[test]
    fn the_node_error_keeps_the_cause() {
        let cause = NodeError::permanent("model said no");
        let e = AgentError::NoHealthyAgent {
            capability: "search".into(),
            tried: vec!["a".into(), "b".into()],
            source: Some(cause),
        };
        let node: NodeError = e.into();
        assert!(
            node.to_string()
                .starts_with(r#"no healthy agent with capability "search" answered (tried: a, b)"#)
        );
        assert_eq!(
            node.source().unwrap().to_string(),
            "model said no (permanent)"
        );
        assert_eq!(AgentError::find(&node).unwrap().kind(), "no_healthy_agent");
        assert!(AgentError::find(&NodeError::permanent("x")).is_none());
    }
}
