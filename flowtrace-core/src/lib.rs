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
//! let out = graph.invoke(Doc::default(), RunConfig::new()).await.unwrap();
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
pub use cache::{Cache, CacheKey, Lookup, MemoryCache};
pub use checkpoint::{CheckpointError, CheckpointErrorKind, Checkpointer};
pub use error::{
    BudgetBreach, BudgetExceeded, BuildError, Error, ErrorClass, GraphProblem, NodeError,
};
pub use exec::{Budget, RunConfig, RunFailure, RunHandle, RunInput, RunOutput, StateSnapshot};
pub use graph::{BranchLabel, CompiledGraph, END, GraphBuilder, START, Subgraph};
pub use ids::{NodeId, RunId, StepId, ThreadId};
pub use model::{
    CallObserver, ChatModel, ChatRequest, ChatResponse, ChatStream, FinishReason, Message,
    ModelError, ModelErrorKind, ModelWrapper, ObservedModel, RemainingBudget, Role, StreamEvent,
};
pub use node::{Dispatch, Node, NodeConfig, NodeContext, NodeFn, NodeOutput, NodeResult, node_fn};
pub use pricing::{Cost, MissingPrice, ModelPrice, PriceTable, Pricing, TokenUsage};
pub use retry::RetryPolicy;
pub use state::{JsonState, State, reducer};
pub use tool::{Tool, ToolError, ToolErrorKind, ToolSafety};
pub use trace::{
    CacheOutcome, EventKind, EventRedactor, EventStream, RunStatus, RunSummary, StepRecord,
    StepStatus, StreamItem, TraceEvent, TraceSink,
};

/// Re-exported so users can name the cancellation token type.
pub use tokio_util::sync::CancellationToken;

#[cfg(test)]
mod layering {
    //! The contracts (everything adapters implement or name: ids, state,
    //! nodes and their context, models, tools, caches, checkpoints, traces,
    //! pricing, retries, errors) must not import the engine (`exec`,
    //! `graph`), directly or through the crate root's re-exports. This test
    //! reads the sources and fails on the first such import.
    use std::path::{Path, PathBuf};

    const ENGINE: &[&str] = &["exec", "graph"];
    const CONTRACTS: &[&str] = &[
        "agent",
        "cache",
        "checkpoint",
        "error",
        "ids.rs",
        "model",
        "node",
        "pricing",
        "retry.rs",
        "state.rs",
        "testing",
        "tool",
        "trace",
    ];

    fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
        if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            for p in entries {
                rust_files(&p, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.to_path_buf());
        }
    }

    /// The names the crate root re-exports from the engine modules.
    fn engine_reexports(lib: &str) -> Vec<String> {
        let mut names = Vec::new();
        for module in ENGINE {
            let head = format!("pub use {module}::{{");
            if let Some(start) = lib.find(&head) {
                let rest = &lib[start + head.len()..];
                let end = rest.find('}').unwrap();
                names.extend(
                    rest[..end]
                        .split(',')
                        .map(|n| n.trim().to_string())
                        .filter(|n| !n.is_empty()),
                );
            }
        }
        names
    }

    #[test]
    fn contracts_never_import_the_engine() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
        let reexports = engine_reexports(&lib);
        assert!(reexports.iter().any(|n| n == "RunConfig"), "{reexports:?}");
        let mut forbidden: Vec<String> = ENGINE
            .iter()
            .flat_map(|m| [format!("crate::{m}"), format!("super::{m}")])
            .collect();
        forbidden.extend(reexports.iter().map(|n| format!("crate::{n}")));
        let mut files = Vec::new();
        for c in CONTRACTS {
            rust_files(&src.join(c), &mut files);
        }
        assert!(files.len() > 20, "found only {files:?}");
        let mut offences = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.trim_start();
                if code.starts_with("//") {
                    continue;
                }
                for f in &forbidden {
                    let hit = code.match_indices(f.as_str()).any(|(i, _)| {
                        // A whole path segment: `crate::exec` but not `crate::execution`.
                        !code[i + f.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
                    });
                    if hit {
                        offences.push(format!("{}:{}: {f}", file.display(), n + 1));
                    }
                }
                if code.starts_with("use crate::{") && ENGINE.iter().any(|m| code.contains(m)) {
                    offences.push(format!(
                        "{}:{}: grouped engine import",
                        file.display(),
                        n + 1
                    ));
                }
            }
        }
        assert!(
            offences.is_empty(),
            "contract modules import the engine:\n{}",
            offences.join("\n")
        );
    }

    #[test]
    fn the_check_catches_an_engine_import() {
        let line = "use crate::exec::RunConfig;";
        assert!(line.contains("crate::exec"));
        let reexports = engine_reexports(
            "pub use exec::{\n    Budget, RunConfig,\n};\npub use graph::{CompiledGraph, END};",
        );
        assert_eq!(reexports, ["Budget", "RunConfig", "CompiledGraph", "END"]);
    }
}

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
