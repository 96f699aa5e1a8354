//! # FlowTrace
//!
//! Build, run and debug multi-step LLM agent workflows as graphs — with live
//! traces, retries, budgets and exact cost accounting.
//!
//! This is the facade crate: it re-exports [`flowtrace_core`] (always) and
//! the other crates of the family behind features.
//!
//! | feature | default | re-exports |
//! |---|---|---|
//! | `providers` | yes | `flowtrace_providers` as `providers` (OpenAI, Anthropic, OpenAI-compatible clients, fallbacks, breakers, cache, router) |
//! | `workflow` | yes | `flowtrace_workflow` as `workflow` (JSON workflows: format, checks, rules, templates, compile, summary); implies `providers` and `report` |
//! | `report` | yes | `flowtrace_report` as `report` (self-contained HTML trace reports, for builder-made graphs too) |
//! | `postgres` | no | `flowtrace_store_postgres` as `postgres` (PostgreSQL checkpointer and trace store) |
//! | `otel` | no | `flowtrace_otel` as `otel` (OpenTelemetry export) |
//! | `agents` | yes | `flowtrace_agents` as `agents` (tool registry, agents, handover, PII redaction) |
//! | `mcp` | yes | tools from MCP servers in `agents::mcp` (adds rmcp) |
//! | `full` | no | all of the above |
//!
//! See the crate documentation of [`flowtrace_core`] for a quick start.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub use flowtrace_core::*;

#[cfg(feature = "providers")]
pub use flowtrace_providers as providers;

#[cfg(feature = "workflow")]
pub use flowtrace_workflow as workflow;

#[cfg(feature = "report")]
pub use flowtrace_report as report;

#[cfg(feature = "postgres")]
pub use flowtrace_store_postgres as postgres;

#[cfg(feature = "otel")]
pub use flowtrace_otel as otel;

#[cfg(feature = "agents")]
pub use flowtrace_agents as agents;

/// Guides, compiled and tested with the crate (every example in them runs
/// as a doctest, so they cannot drift from the API).
pub mod guides {
    #[doc = include_str!("../guides/writing-a-node.md")]
    pub mod writing_a_node {}

    #[doc = include_str!("../guides/writing-a-checkpointer.md")]
    pub mod writing_a_checkpointer {}
}

/// The README's examples run as doctests too.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
