//! Handover to a human: the sink nodes in real graph runs, and the
//! conversation state machine.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod conversation;
mod graph;
