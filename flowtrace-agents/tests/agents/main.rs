//! Agents: SimpleAgent, ReasoningAgent, PlanExecuteAgent, the agent
//! registry, memory, agent nodes, and a ReAct loop against LiteLLM's proxy
//! (skipped without `FLOWTRACE_LITELLM_URL` unless `FLOWTRACE_REQUIRE_PEERS=1`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod litellm;
mod memory;
mod node;
mod plan_execute;
mod reasoning;
mod registry;
mod simple;
mod support;
