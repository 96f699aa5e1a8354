//! A counter state and a one-node loop over it, shared by the durable
//! benches (`resume`, `postgres`): one super-step, so one checkpoint, per
//! tick.

use flowtrace::{END, GraphBuilder, NodeOutput, State, node_fn};
use serde::{Deserialize, Serialize};

/// How far the loop has counted, and whether it finished.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Counter {
    pub n: u64,
    pub done: bool,
}

/// One tick (or the finishing update).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Tick {
    pub n: u64,
    pub done: bool,
}

impl State for Counter {
    type Update = Tick;
    fn apply(&mut self, u: Tick) {
        self.n += u.n;
        self.done |= u.done;
    }
}

/// A one-node loop counting to `target`, then a finishing node.
pub fn counting_loop(target: u64) -> flowtrace::CompiledGraph<Counter> {
    GraphBuilder::<Counter>::new("loop")
        .add_node(
            "tick",
            node_fn(|_s, _c| async { Ok(NodeOutput::update(Tick { n: 1, done: false })) }),
        )
        .add_node(
            "finish",
            node_fn(|_s, _c| async { Ok(NodeOutput::update(Tick { n: 0, done: true })) }),
        )
        .set_entry("tick")
        .add_conditional_edges(
            "tick",
            move |s: &Counter| if s.n < target { "again" } else { "stop" },
            [("again", "tick"), ("stop", "finish")],
        )
        .add_edge("finish", END)
        .compile()
        .unwrap()
}
