//! # flowtrace-providers
//!
//! Chat model clients for FlowTrace, implementing
//! [`flowtrace_core::ChatModel`] over HTTP with reqwest (rustls, no default
//! features):
//!
//! * [`openai::OpenAi`] — OpenAI Chat Completions, and any OpenAI-compatible
//!   server (vLLM, llama.cpp `llama-server`, Ollama, LiteLLM) through a base URL;
//! * [`anthropic::Anthropic`] — Anthropic Messages.
//! * [`router::ModelRouter`] — per-call model routing; [`tokens`] — prompt token estimates.
//! * [`simulated::SimulatedModel`] — an offline, deterministic model for demos and tests;
//!   [`tools`] — built-in tools ([`tools::ReadFile`], [`tools::TransformJson`]).
//!
//! Both support tools, structured output, streaming (SSE, parsed by the
//! `eventsource-stream` crate) with usage, and classify failures into
//! [`flowtrace_core::ModelErrorKind`]s: rate limits (with `Retry-After`),
//! overload, timeouts and transport errors are retryable; invalid requests,
//! auth, not-found, context-length, content-filter and redirect errors are
//! not. API keys come from the environment or per client ([`ApiKey`]) and
//! never appear in traces, logs or errors.
//!
//! Credentials never leave their origin: the clients never follow an HTTP
//! redirect (a 3xx answer is a non-retryable
//! [`ModelErrorKind::Redirect`](flowtrace_core::ModelErrorKind::Redirect)
//! naming only the target's origin), and any text built from a response —
//! error messages, reply text, tool call arguments, streamed deltas — has the
//! client's credentials replaced by `[redacted]`, should a server echo them.

mod http;
mod redact;

pub mod anthropic;
pub mod breaker;
pub mod cache;
pub mod fallback;
pub mod openai;
pub mod router;
pub mod simulated;
pub mod tokens;
pub mod tools;

pub use http::{ApiKey, MissingApiKey};
