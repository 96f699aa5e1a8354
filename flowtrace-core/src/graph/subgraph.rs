//! A compiled graph used as a node of another graph.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::NodeError;
use crate::exec::shared::RunShared;
use crate::exec::{Executor, Nested};
use crate::graph::CompiledGraph;
use crate::node::{Node, NodeContext, NodeOutput, NodeResult};
use crate::state::State;

type InputFn<P, C> = Box<dyn Fn(&P) -> C + Send + Sync>;
type OutputFn<P, C> = Box<dyn Fn(C) -> <P as State>::Update + Send + Sync>;

/// A node that runs a whole graph over state `C` inside a graph over `P`.
/// Made by [`CompiledGraph::as_node`].
pub struct Subgraph<P: State, C: State> {
    graph: CompiledGraph<C>,
    input: InputFn<P, C>,
    output: OutputFn<P, C>,
}

impl<P: State, C: State> fmt::Debug for Subgraph<P, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subgraph")
            .field("graph", &self.graph)
            .finish_non_exhaustive()
    }
}

impl<P: State, C: State> Subgraph<P, C> {
    pub(crate) fn new(
        graph: CompiledGraph<C>,
        input: impl Fn(&P) -> C + Send + Sync + 'static,
        output: impl Fn(C) -> P::Update + Send + Sync + 'static,
    ) -> Self {
        Self {
            graph,
            input: Box::new(input),
            output: Box::new(output),
        }
    }
}

#[async_trait]
impl<P: State, C: State> Node<P> for Subgraph<P, C> {
    async fn run(&self, state: Arc<P>, ctx: NodeContext) -> NodeResult<P::Update> {
        // Continue where the subgraph paused for a human, or start afresh.
        let resume = ctx.take_subgraph_state();
        let child = match &resume {
            Some(saved) => <C as serde::Deserialize>::deserialize(&saved.state).map_err(|e| {
                NodeError::permanent(format!(
                    "the saved state of subgraph {:?} does not match its state type: {e}",
                    ctx.node_id()
                ))
            })?,
            None => (self.input)(&state),
        };
        drop(state);
        let run = ctx
            .engine_state()
            .clone()
            .downcast::<RunShared>()
            .map_err(|_| NodeError::permanent("a subgraph node ran outside a FlowTrace run"))?;
        let mut exec = Executor::new(
            &self.graph.inner,
            run,
            Some(ctx.step_id()),
            ctx.cancellation_token(),
            Arc::new(child),
        );
        exec.scope = Arc::new(ctx.child_scope());
        match exec.execute_nested(resume).await {
            Ok(Nested::Finished(final_state)) => Ok(NodeOutput::update((self.output)(final_state))),
            Ok(Nested::Paused(pause)) => Err(NodeError::subgraph_paused(pause)),
            Err(e) => Err(NodeError::run_error(e)),
        }
    }
}
