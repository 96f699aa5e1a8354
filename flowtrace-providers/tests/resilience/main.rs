//! The resilience layers over `ChatModel` (fallback, circuit breaker,
//! response cache), the model router and the simulated provider.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

mod layers;
mod router;
mod simulated;
