//! Building and running graphs: chains, branches, fan-out and dispatch,
//! loops, subgraphs, compile errors, and wide and long graphs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

mod run;
mod wide;
