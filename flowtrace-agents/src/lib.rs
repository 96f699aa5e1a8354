//! Agents and tools for FlowTrace.
//!
//! - [`tools`]: a [`ToolRegistry`] that runs tools with
//!   their input validated against a JSON Schema, a timeout, retries, a
//!   result cache, a rate limit and permissions (safe tools by default,
//!   dangerous ones only when granted), emitting `tool.request`,
//!   `tool.response` and `tool.denied` events.
//! - [`agents`]: single-shot, ReAct and plan-execute-reflect agents, usable
//!   as graph nodes and on their own, and an agent registry with health.
//! - [`memory`]: conversation memory and an episodic store of past runs.
//! - [`handover`]: handing a conversation over to a human, and the
//!   conversation state machine a host application drives.
//! - [`pii`]: redaction of personal data and credentials from events before
//!   they reach any sink.
//! - `mcp` (feature `mcp`, on by default): tools from Model Context Protocol
//!   servers.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod agents;
pub mod handover;
#[cfg(feature = "mcp")]
#[cfg_attr(docsrs, doc(cfg(feature = "mcp")))]
pub mod mcp;
pub mod memory;
pub mod pii;
pub mod tools;

pub use agents::{
    AgentError, AgentNode, AgentRegistry, PlanExecuteAgent, ReasoningAgent, SimpleAgent,
    agent_node, run_agent,
};
pub use handover::{HandoverPolicy, HandoverRecord};
pub use pii::{PiiRedactor, RedactionMode};
pub use tools::{ToolGrants, ToolOptions, ToolRegistry};
