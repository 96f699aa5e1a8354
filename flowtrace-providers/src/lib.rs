//! # flowtrace-providers
//!
//! Chat model clients for FlowTrace, implementing
//! [`flowtrace_core::ChatModel`] over HTTP: OpenAI Chat Completions,
//! Anthropic Messages and OpenAI-compatible servers (vLLM, llama.cpp,
//! Ollama, LiteLLM), with fallbacks, circuit breakers and response caching.
//!
//! This release contains no client yet: the crate exists so the workspace
//! layout is final. The provider-neutral types every client maps to — requests,
//! responses, usage, error classes — live in [`flowtrace_core::model`].

pub use flowtrace_core::model;
