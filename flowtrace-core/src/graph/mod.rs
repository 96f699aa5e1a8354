//! Graphs: the builder, validation, and the compiled form that runs.

mod builder;
pub(crate) mod compile;
mod route;
mod subgraph;

pub use builder::{END, GraphBuilder, RouteContext, START};
pub use route::BranchLabel;
pub(crate) use route::Routes;
pub use subgraph::Subgraph;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::ids::NodeId;
use crate::state::State;
use compile::CompiledNode;

pub(crate) struct Inner<S: State> {
    pub(crate) name: String,
    pub(crate) nodes: Vec<CompiledNode<S>>,
    pub(crate) entries: Vec<usize>,
    pub(crate) index: HashMap<NodeId, usize>,
    pub(crate) interrupt_before: Vec<usize>,
    pub(crate) interrupt_after: Vec<usize>,
}

/// A validated graph, ready to run any number of times (concurrently too).
///
/// Cheap to clone. Run it with [`invoke`](Self::invoke) or
/// [`stream`](Self::stream); use it as a node of another graph with
/// [`as_node`](Self::as_node).
pub struct CompiledGraph<S: State> {
    pub(crate) inner: Arc<Inner<S>>,
}

impl<S: State> Clone for CompiledGraph<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S: State> fmt::Debug for CompiledGraph<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledGraph")
            .field("name", &self.inner.name)
            .field("nodes", &self.node_ids().collect::<Vec<_>>())
            .finish()
    }
}

impl<S: State> CompiledGraph<S> {
    /// The graph's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The node ids, in the order they were added.
    pub fn node_ids(&self) -> impl Iterator<Item = &NodeId> {
        self.inner.nodes.iter().map(|n| &n.id)
    }

    /// Uses this graph as a node of a graph over state `P`: `input` derives
    /// the subgraph's initial state from the parent's, and `output` turns its
    /// final state into an update of the parent's. The subgraph's events
    /// appear in the parent run's trace with `parent_step_id` set to the
    /// subgraph node's step; its steps count toward the parent's budgets,
    /// recursion limit and totals.
    pub fn as_node<P, I, O>(&self, input: I, output: O) -> Subgraph<P, S>
    where
        P: State,
        I: Fn(&P) -> S + Send + Sync + 'static,
        O: Fn(S) -> P::Update + Send + Sync + 'static,
    {
        Subgraph::new(self.clone(), input, output)
    }
}
