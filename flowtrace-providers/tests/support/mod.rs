//! Helpers shared by the providers' test binaries.
//!
//! Each binary includes this module; a helper one binary does not use is
//! not dead code in the others.
#![allow(dead_code)]

use flowtrace_core::{CompiledGraph, GraphBuilder, JsonState, Node};

/// A graph of one node, `ask`, that is both entry and finish: the smallest
/// graph through which a model call runs with the run's pricing, budget,
/// cache and events.
pub fn ask_graph(name: &str, node: impl Node<JsonState>) -> CompiledGraph<JsonState> {
    GraphBuilder::<JsonState>::new(name)
        .add_node("ask", node)
        .set_entry("ask")
        .set_finish("ask")
        .compile()
        .unwrap()
}
