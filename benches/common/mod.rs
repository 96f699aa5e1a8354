//! Fixtures shared by the benches: a sink that drops events and a
//! conversation-shaped state.

use std::hint::black_box;

use async_trait::async_trait;
use flowtrace::trace::{SinkError, TraceEvent, TraceSink};
use flowtrace::{State, reducer};
use serde::{Deserialize, Serialize};

/// Receives every event and drops it: measures event production, not I/O.
pub struct VoidSink;

#[async_trait]
impl TraceSink for VoidSink {
    fn record(&self, event: &TraceEvent) {
        black_box(event);
    }
    async fn flush(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A state holding messages and a counter.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct Conversation {
    pub messages: Vec<String>,
    pub counter: u64,
}

/// Messages to append and an amount to add.
#[derive(Default, Serialize, Deserialize)]
pub struct Delta {
    pub messages: Vec<String>,
    pub counter: u64,
}

impl State for Conversation {
    type Update = Delta;
    fn apply(&mut self, u: Delta) {
        reducer::append(&mut self.messages, u.messages);
        reducer::add(&mut self.counter, u.counter);
    }
}
