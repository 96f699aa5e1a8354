//! # FlowTrace
//!
//! Build, run and debug multi-step LLM agent workflows as graphs — with live
//! traces, retries, budgets and exact cost accounting.
//!
//! This is the facade crate: it re-exports [`flowtrace_core`] (always) and
//! the adapter crates behind features.
//!
//! | feature | default | re-exports |
//! |---|---|---|
//! | `providers` | yes | `flowtrace_providers` as `providers` (OpenAI, Anthropic, OpenAI-compatible clients, fallbacks, breakers, cache, router) |
//! | `postgres` | no | `flowtrace_store_postgres` as `postgres` (PostgreSQL checkpointer and trace store) |
//! | `otel` | no | `flowtrace_otel` as `otel` (OpenTelemetry export) |
//! | `full` | no | all of the above |
//!
//! See the crate documentation of [`flowtrace_core`] for a quick start.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub use flowtrace_core::*;

#[cfg(feature = "providers")]
pub use flowtrace_providers as providers;

#[cfg(feature = "postgres")]
pub use flowtrace_store_postgres as postgres;

#[cfg(feature = "otel")]
pub use flowtrace_otel as otel;

pub mod report;

/// JSON-defined workflows: rules, templates, and the format with its validation.
pub mod workflow;
