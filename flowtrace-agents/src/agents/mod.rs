//! Agents: single-shot, ReAct and plan-execute-reflect, usable as graph
//! nodes and on their own, and a registry that picks a healthy agent for a
//! capability and falls back to the next.
//!
//! | agent | what it does |
//! |---|---|
//! | [`SimpleAgent`] | one model call from a [`PromptTemplate`]; optionally JSON checked against a schema, asking again on a mismatch |
//! | [`ReasoningAgent`] | ReAct with native tool calling through a [`ToolRegistry`](crate::tools::ToolRegistry) and its [`ToolGrants`](crate::tools::ToolGrants); iteration limit and loop detection |
//! | [`PlanExecuteAgent`] | a JSON [`Plan`] of tool calls, executed, reflected on, re-planned on failure; learns from an [`EpisodicStore`](crate::memory::EpisodicStore) |
//!
//! Every agent implements [`flowtrace_core::Agent`] and calls models through
//! [`NodeContext::chat`](flowtrace_core::NodeContext::chat), so tokens, cost
//! and latency count in the run. Use one in a graph with [`agent_node`]
//! (a [`JsonState`](flowtrace_core::JsonState) node), inside your own node
//! by calling [`Agent::run`](flowtrace_core::Agent::run), or on its own with
//! [`run_agent`]. Failures are [`AgentError`]s carried in the
//! [`NodeError`](flowtrace_core::NodeError) ([`AgentError::find`]).
//!
//! [`AgentRegistry`] holds agents with their [`AgentMeta`] (capabilities,
//! models, [`CostTier`]) and live [`Health`] under a [`HealthPolicy`].

mod error;
mod health;
mod loop_guard;
mod node;
mod plan;
mod plan_execute;
mod prompt;
mod reasoning;
mod registry;
mod simple;

pub use error::AgentError;
pub use health::{
    DEFAULT_HEALTH_MAX_AGE, DEFAULT_HEALTH_WINDOW, Health, HealthPolicy, MAX_HEALTH_WINDOW,
};
pub use loop_guard::DEFAULT_LOOP_THRESHOLD;
pub use node::{
    AgentNode, AgentRun, DEFAULT_INPUT_FIELD, DEFAULT_OUTPUT_FIELD, MAX_INPUT_MESSAGES,
    RunAgentError, agent_node, run_agent,
};
pub use plan::{MAX_PLAN_BYTES, MAX_PLAN_STEPS, Plan, PlanError, PlanStep};
pub use plan_execute::{
    DEFAULT_MAX_REPLANS, DEFAULT_PLAN_STEPS, MAX_STEP_RESULT_CHARS, PlanExecuteAgent,
    SIMILAR_EPISODES,
};
pub use prompt::{MAX_PROMPT_BYTES, PromptTemplate, TemplateError, TemplateErrorKind};
pub use reasoning::{DEFAULT_MAX_ITERATIONS, MAX_TOOL_CALLS_PER_TURN, ReasoningAgent};
pub use registry::{AgentMeta, AgentRegistry, AgentRegistryBuilder, CostTier, FallbackOutput};
pub use simple::{DEFAULT_MAX_REASKS, MAX_OUTPUT_PROBLEMS, SimpleAgent, SimpleOutput};
