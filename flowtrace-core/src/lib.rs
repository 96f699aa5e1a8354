//! # flowtrace-core
//!
//! The core of FlowTrace: build multi-step LLM agent workflows as graphs,
//! run them with retries, timeouts, budgets and cancellation, and see every
//! step's inputs, outputs, tokens, cost and latency as typed trace events.
//!
//! This crate holds the contracts other crates implement — [`Node`],
//! [`Tool`], [`Agent`], [`ChatModel`], [`Checkpointer`], [`TraceSink`],
//! [`Pricing`], [`Cache`] — plus the graph builder, the executor and
//! in-memory defaults. It depends on no HTTP client, database driver or
//! vendor SDK: providers live in `flowtrace-providers`, the PostgreSQL store
//! in `flowtrace-store-postgres`, OpenTelemetry export in `flowtrace-otel`.
//!
//! ## Quick start
//!
//! ```
//! use std::sync::Arc;
//! use flowtrace_core::{node_fn, reducer, GraphBuilder, NodeOutput, RunConfig, State};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone, Default, Serialize, Deserialize)]
//! struct Doc { steps: Vec<String> }
//!
//! impl State for Doc {
//!     type Update = Vec<String>;
//!     fn apply(&mut self, u: Vec<String>) { reducer::append(&mut self.steps, u) }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let graph = GraphBuilder::<Doc>::new("demo")
//!     .add_node("fetch", node_fn(|_s, _ctx| async { Ok(vec!["fetched".to_string()].into()) }))
//!     .add_node("summarize", node_fn(|s: Arc<Doc>, _ctx| async move {
//!         Ok(NodeOutput::update(vec![format!("summarized {} item(s)", s.steps.len())]))
//!     }))
//!     .set_entry("fetch")
//!     .add_edge("fetch", "summarize")
//!     .set_finish("summarize")
//!     .compile()
//!     .unwrap();
//!
//! let out = graph.run(Doc::default(), RunConfig::new()).await.unwrap();
//! assert_eq!(out.state.steps, ["fetched", "summarized 1 item(s)"]);
//! assert_eq!(out.summary.node_executions, 2);
//! # });
//! ```
//!
//! ## Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `testing` | no | `testing::ScriptedModel`, a deterministic [`ChatModel`] for tests and demos |

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod agent;
pub mod cache;
pub mod checkpoint;
pub mod error;
pub mod exec;
pub mod graph;
pub mod ids;
pub mod model;
pub mod node;
pub mod pricing;
pub mod retry;
pub mod state;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tool;
pub mod trace;

pub use agent::{Agent, AgentOutput, ToolLoopAgent};
pub use cache::{Cache, CacheKey, MemoryCache};
pub use checkpoint::Checkpointer;
pub use error::{
    BudgetBreach, BudgetExceeded, BuildError, Error, ErrorClass, GraphProblem, NodeError,
};
pub use exec::{
    Budget, RetryPolicy, RunConfig, RunFailure, RunHandle, RunOutput, RunSummary, StepRecord,
};
pub use graph::{CompiledGraph, END, GraphBuilder, START, Subgraph};
pub use ids::{NodeId, RunId, StepId, ThreadId};
pub use model::{
    CallObserver, ChatModel, ChatRequest, ChatResponse, ChatStream, FinishReason, Message,
    ModelError, ModelErrorKind, RemainingBudget, Role, StreamEvent,
};
pub use node::{Dispatch, Node, NodeConfig, NodeContext, NodeFn, NodeOutput, NodeResult, node_fn};
pub use pricing::{Cost, MissingPrice, ModelPrice, PriceTable, Pricing, TokenUsage};
pub use state::{JsonState, State, reducer};
pub use tool::{Tool, ToolError};
pub use trace::{EventKind, EventStream, RunStatus, StepStatus, StreamItem, TraceEvent, TraceSink};

/// Re-exported so users can name the cancellation token type.
pub use tokio_util::sync::CancellationToken;

#[cfg(test)]
mod object_safety {
    //! Every contract users hold as a trait object must stay object-safe.
    use super::*;

    #[allow(dead_code, clippy::too_many_arguments)]
    fn assert_object_safe(
        _: &dyn Node<JsonState>,
        _: &dyn Tool,
        _: &dyn Agent,
        _: &dyn ChatModel,
        _: &dyn Checkpointer,
        _: &dyn TraceSink,
        _: &dyn Pricing,
        _: &dyn Cache,
    ) {
    }

    #[test]
    fn shared_defaults_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<CompiledGraph<JsonState>>();
        check::<RunConfig>();
        check::<PriceTable>();
        check::<MemoryCache>();
        check::<checkpoint::MemoryCheckpointer>();
        check::<trace::MemorySink>();
    }
}
