//! What the executor guarantees around each node: retries, timeouts,
//! deadlines, cancellation and budgets; model calls through the node
//! context; trace events, sinks and exact costs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

mod model_calls;
mod reliability;
mod tracing_and_cost;
