//! Tests against real model servers (see `scripts/peers.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

mod llama;
