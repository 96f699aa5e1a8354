//! Handover to a human: the sink nodes in real graph runs, and the
//! conversation state machine.

mod conversation;
mod graph;
