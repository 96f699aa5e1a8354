//! # flowtrace-providers
//!
//! Chat model clients for FlowTrace, implementing
//! [`flowtrace_core::ChatModel`], and one resilience stack to put around
//! them.
//!
//! ## Models
//!
//! * `openai::OpenAi` (feature `openai`) — OpenAI Chat Completions, and any
//!   OpenAI-compatible server (vLLM, llama.cpp `llama-server`, Ollama,
//!   LiteLLM) through a base URL;
//! * `anthropic::Anthropic` (feature `anthropic`) — Anthropic Messages;
//! * [`simulated::SimulatedModel`] — an offline, deterministic model for
//!   demos and tests;
//! * [`router::ModelRouter`] — per-call routing among candidate models;
//! * [`tokens`] — prompt token estimates; [`tools`] — built-in tools
//!   ([`tools::ReadFile`], [`tools::TransformJson`], and `tools::HttpRequest`
//!   with feature `openai` or `anthropic`: an HTTP client tool whose host
//!   allowlist is empty until the user fills it).
//!
//! The HTTP clients support tools, structured output, streaming (SSE,
//! parsed by the `eventsource-stream` crate) with usage, and classify
//! failures into [`flowtrace_core::ModelErrorKind`]s: rate limits (with
//! `Retry-After`), overload, timeouts and transport errors are retryable;
//! invalid requests, auth, not-found, context-length, content-filter and
//! redirect errors are not. API keys come from the environment or per
//! client (`ApiKey`) and never appear in traces, logs or errors.
//!
//! Credentials never leave their origin: the clients never follow an HTTP
//! redirect (a 3xx answer is a non-retryable
//! [`ModelErrorKind::Redirect`](flowtrace_core::ModelErrorKind::Redirect)
//! naming only the target's origin), and any text built from a response —
//! error messages, reply text, tool call arguments, streamed deltas — has the
//! client's credentials replaced by `[redacted]`, should a server echo them.
//!
//! ## The resilience stack
//!
//! Caching, circuit breaking and fallback are [`layer::Layer`]s over any
//! [`ChatModel`](flowtrace_core::ChatModel), composed with a
//! [`layer::ModelStack`]; the layer added last sees each call first:
//!
//! | layer | what it does |
//! |---|---|
//! | [`cache::CacheLayer`] | answers repeated requests from a [`flowtrace_core::Cache`] (core's `MemoryCache`, or the bounded, TTL'd [`cache::MemoryResponseCache`]) |
//! | [`breaker::BreakerLayer`] | fails fast while a model keeps failing |
//! | [`fallback::FallbackLayer`] | retries on core's [`RetryPolicy`](flowtrace_core::RetryPolicy), then falls back to other models |
//!
//! Each wrapper is a [`ModelWrapper`](flowtrace_core::model::ModelWrapper):
//! it implements only the calls it changes and forwards the rest. Side
//! events (cache hits, retries, fallbacks, open circuits) reach the run's
//! trace through [`CallObserver`](flowtrace_core::CallObserver) when the
//! stack is called from a node.
//!
//! ```
//! use std::sync::Arc;
//! use flowtrace_core::{ChatModel, ChatRequest, MemoryCache, RetryPolicy};
//! use flowtrace_providers::breaker::{BreakerConfig, BreakerLayer};
//! use flowtrace_providers::cache::CacheLayer;
//! use flowtrace_providers::fallback::{Candidate, FallbackLayer};
//! use flowtrace_providers::layer::ModelStack;
//! use flowtrace_providers::simulated::{SimulatedConfig, SimulatedFailure, SimulatedModel};
//! # tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap().block_on(async {
//! // A primary that fails its first two calls, and a backup.
//! let primary = SimulatedModel::new(
//!     SimulatedConfig::new().response("primary").fail_first(2, SimulatedFailure::ServerError),
//! );
//! let backup = Arc::new(SimulatedModel::new(SimulatedConfig::new().response("backup")));
//! let model = ModelStack::new(primary)
//!     .layer(BreakerLayer::new(BreakerConfig::default().failure_threshold(2)))
//!     .layer(FallbackLayer::new(Candidate::new(backup)).retry(RetryPolicy::new(2)))
//!     .layer(CacheLayer::new(Arc::new(MemoryCache::new(1_000))));
//!
//! let request = ChatRequest::new("gpt-4o-mini").user("hello");
//! // Two failures (one retry), so the backup answers and the breaker opens.
//! let first = model.chat(request.clone()).await.unwrap();
//! assert_eq!(first.text, "backup");
//! // The same request again: a cache hit, no model called.
//! let again = model.chat(request).await.unwrap();
//! assert!(again.cached);
//! // The primary's circuit is open: a new request is refused by its breaker
//! // (the primary is not called) and goes to the backup.
//! let other = model.chat(ChatRequest::new("gpt-4o-mini").user("other")).await.unwrap();
//! assert_eq!(other.text, "backup");
//! # });
//! ```
//!
//! ## Feature flags
//!
//! | feature | default | enables |
//! |---|---|---|
//! | `openai` | yes | the `openai` module (reqwest, rustls) |
//! | `anthropic` | yes | the `anthropic` module (reqwest, rustls) |
//!
//! The simulated model, the router, the tools, token estimates and the
//! resilience layers are always built.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "openai", feature = "anthropic"))]
mod http;
#[cfg(any(feature = "openai", feature = "anthropic"))]
mod redact;

#[cfg(feature = "anthropic")]
#[cfg_attr(docsrs, doc(cfg(feature = "anthropic")))]
pub mod anthropic;
pub mod breaker;
pub mod cache;
pub mod fallback;
pub mod layer;
#[cfg(feature = "openai")]
#[cfg_attr(docsrs, doc(cfg(feature = "openai")))]
pub mod openai;
pub mod router;
pub mod simulated;
pub mod tokens;
pub mod tools;

#[cfg(any(feature = "openai", feature = "anthropic"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "openai", feature = "anthropic"))))]
pub use http::{ApiKey, MissingApiKey};
