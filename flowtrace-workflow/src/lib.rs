//! # flowtrace-workflow
//!
//! JSON-defined workflows for FlowTrace: a document names nodes (`llm`,
//! `tool`, `router`, `approval`), edges and run limits; this crate loads
//! it, checks it (every problem at once, each with its JSON pointer),
//! compiles it onto the `flowtrace-core` executor and summarises its runs.
//!
//! | module | what it holds |
//! |---|---|
//! | [`spec`] | the format (camelCase JSON, version `"1"`): typed spec, JSON Schema, [`spec::load`] and its checks |
//! | [`rules`] | the router rule language (bounded size, depth and evaluation cost) |
//! | [`template`] | substitution-only `{{ … }}` templates |
//! | [`limits`] | the bounds on everything a document controls |
//! | [`pricing`] | price tables read from JSON |
//! | [`compile`] | the [`compile::Runtime`] (provider factories, tools, cache) and [`compile::compile`] |
//! | [`tools`] | the `filter_list` tool: items filtered by a rule of the router's language |
//! | [`summary`] | a run's JSON summary, and its entry in an HTML report (`flowtrace-report`) |
//!
//! The facade crate `flowtrace` re-exports this crate as
//! `flowtrace::workflow` (feature `workflow`, on by default).
//!
//! ```
//! use flowtrace_workflow::compile::{CompiledWorkflow, Runtime, compile};
//! use flowtrace_workflow::spec::load;
//! use serde_json::json;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let runtime = Runtime::offline(std::env::temp_dir());
//! let spec = load(r#"{
//!   "version": "1", "entry": "hello",
//!   "nodes": [ { "id": "hello", "type": "llm",
//!     "config": { "provider": "simulated", "model": "gpt-4o-mini", "maxTokens": 64,
//!                 "simulated": { "response": "Hi, {{input.name}}!", "latencyMs": 0 } } } ]
//! }"#, &runtime.known()).unwrap();
//! let out = compile(&spec, &runtime).unwrap().run(json!({"name": "Ada"}), |c| c).await.unwrap();
//! assert_eq!(CompiledWorkflow::output(&out.state, "hello"), Some(&json!("Hi, Ada!")));
//! # });
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod compile;
pub mod limits;
pub mod pricing;
pub mod rules;
pub mod spec;
pub mod summary;
pub mod template;
pub mod tools;
