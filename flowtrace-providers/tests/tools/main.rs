//! The built-in tools, directly and through a FlowTrace run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

mod builtin;
#[cfg(any(feature = "openai", feature = "anthropic"))]
mod http;
