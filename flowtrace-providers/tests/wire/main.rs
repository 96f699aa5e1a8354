//! The provider clients on the wire: requests and replies against mock
//! servers answering with each vendor's documented bodies, and credentials
//! (keys never leak, redirects are refused).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

#[cfg(feature = "anthropic")]
mod anthropic;
#[cfg(all(feature = "openai", feature = "anthropic"))]
mod credentials;
#[cfg(feature = "openai")]
mod openai;
#[cfg(any(feature = "openai", feature = "anthropic"))]
mod recorded;
