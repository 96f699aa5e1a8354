//! The tool registry, end to end inside a graph node: permissions, input
//! checks, timeouts, retries, the result cache, rate limits, output limits,
//! credential scrubbing and tools made from typed functions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod access;
mod cache;
mod function;
mod reliability;
mod support;
