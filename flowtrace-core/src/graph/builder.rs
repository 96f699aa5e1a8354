//! The graph builder.

use std::fmt;
use std::sync::Arc;

use crate::error::BuildError;
use crate::graph::route::{self, BranchLabel, RouterFn};
use crate::graph::{CompiledGraph, compile};
use crate::ids::NodeId;
use crate::node::{Node, NodeConfig};
use crate::state::State;

/// The virtual node before the entry: `add_edge(START, "a")` is `set_entry("a")`.
pub const START: &str = "__start__";
/// The virtual node after the finish: `add_edge("z", END)` is `set_finish("z")`.
pub const END: &str = "__end__";

/// What a router can know about its run besides the state.
pub struct RouteContext<'a> {
    pub(crate) run: &'a crate::exec::shared::RunShared,
}

impl fmt::Debug for RouteContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteContext")
            .field("run_id", &self.run.run_id)
            .finish()
    }
}

impl RouteContext<'_> {
    /// Whether the run's halt signal fired. When a router sees `true`, the
    /// run does not stop at the next safe point: it goes on along the branch
    /// the router chose (typically a clean-up node) and then ends as halted.
    pub fn halt_requested(&self) -> bool {
        let halted = self.run.halt_requested();
        if halted {
            self.run.observe_halt();
        }
        halted
    }

    /// The run's id.
    pub fn run_id(&self) -> &crate::ids::RunId {
        &self.run.run_id
    }
}

pub(crate) struct NodeDef<S: State> {
    pub(crate) id: NodeId,
    pub(crate) node: Arc<dyn Node<S>>,
    pub(crate) config: NodeConfig,
}

pub(crate) struct RouterDef<S: State> {
    pub(crate) from: NodeId,
    pub(crate) route: RouterFn<S>,
    /// `(name, targets)` by branch position.
    pub(crate) branches: Vec<(String, Vec<NodeId>)>,
    /// Values of a closed label type with no branch.
    pub(crate) unmapped: Vec<String>,
}

/// Builds a graph of nodes over state `S`, then [`compile`](Self::compile)s it.
///
/// ```
/// use flowtrace_core::{GraphBuilder, JsonState, NodeOutput, node_fn, END};
///
/// let graph = GraphBuilder::<JsonState>::new("hello")
///     .add_node("greet", node_fn(|_s, _ctx| async move { Ok(NodeOutput::none()) }))
///     .add_node("shout", node_fn(|_s, _ctx| async move { Ok(NodeOutput::none()) }))
///     .add_node("whisper", node_fn(|_s, _ctx| async move { Ok(NodeOutput::none()) }))
///     .set_entry("greet")
///     .add_conditional_edges("greet", |s: &JsonState| if s.get("loud").is_some() { "loud" } else { "quiet" },
///         [("loud", "shout"), ("quiet", "whisper")])
///     .set_finish("shout")
///     .add_edge("whisper", END)
///     .compile()
///     .unwrap();
/// assert_eq!(graph.node_ids().count(), 3);
/// ```
#[must_use = "a GraphBuilder does nothing until it is compiled"]
pub struct GraphBuilder<S: State> {
    pub(crate) name: String,
    pub(crate) nodes: Vec<NodeDef<S>>,
    pub(crate) edges: Vec<(NodeId, NodeId)>,
    pub(crate) routers: Vec<RouterDef<S>>,
    pub(crate) dispatches: Vec<(NodeId, NodeId)>,
    pub(crate) interrupt_before: Vec<NodeId>,
    pub(crate) interrupt_after: Vec<NodeId>,
}

impl<S: State> fmt::Debug for GraphBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphBuilder")
            .field("name", &self.name)
            .field(
                "nodes",
                &self.nodes.iter().map(|n| &n.id).collect::<Vec<_>>(),
            )
            .field("edges", &self.edges)
            .field("dispatches", &self.dispatches)
            .finish_non_exhaustive()
    }
}

impl<S: State> GraphBuilder<S> {
    /// An empty graph named `name` (the name appears in `run.started`).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            nodes: Vec::new(),
            edges: Vec::new(),
            routers: Vec::new(),
            dispatches: Vec::new(),
            interrupt_before: Vec::new(),
            interrupt_after: Vec::new(),
        }
    }

    /// Adds a node with default settings.
    pub fn add_node(self, id: impl Into<NodeId>, node: impl Node<S>) -> Self {
        self.add_node_with(id, node, NodeConfig::default())
    }

    /// Adds a node with retry, timeout or budget-estimate settings.
    pub fn add_node_with(
        mut self,
        id: impl Into<NodeId>,
        node: impl Node<S>,
        config: NodeConfig,
    ) -> Self {
        self.nodes.push(NodeDef {
            id: id.into(),
            node: Arc::new(node),
            config,
        });
        self
    }

    /// Adds a shared node (`Arc<dyn Node<S>>`).
    pub fn add_shared_node(
        mut self,
        id: impl Into<NodeId>,
        node: Arc<dyn Node<S>>,
        config: NodeConfig,
    ) -> Self {
        self.nodes.push(NodeDef {
            id: id.into(),
            node,
            config,
        });
        self
    }

    /// Adds an edge: `to` may run once `from` has finished. `from` may be
    /// [`START`] and `to` may be [`END`].
    ///
    /// A node with several incoming edges is a join: it runs once every
    /// predecessor that is active in the run has finished (predecessors on
    /// branches that were not taken count as done).
    pub fn add_edge(mut self, from: impl Into<NodeId>, to: impl Into<NodeId>) -> Self {
        self.edges.push((from.into(), to.into()));
        self
    }

    /// Sets the entry node (may be called several times for several entries).
    pub fn set_entry(self, id: impl Into<NodeId>) -> Self {
        self.add_edge(START, id)
    }

    /// Marks `id` as a finish node (an edge to [`END`]).
    pub fn set_finish(self, id: impl Into<NodeId>) -> Self {
        self.add_edge(id, END)
    }

    /// Adds a conditional edge: after `from`'s super-step, `router` reads the
    /// merged state and returns a label; only the nodes of that label's
    /// branch run, and every other branch target is recorded as skipped
    /// (unless another active edge leads to it). A label may appear several
    /// times to fan out to several nodes; a target may be [`END`].
    ///
    /// Labels are any [`BranchLabel`]: strings, `bool`, integers, or your
    /// own enum (see [`branch_label!`](crate::branch_label)), mapped to
    /// branches here; a variant of an enum with no branch fails
    /// [`compile`](Self::compile). Branch keys convert into the router's
    /// label type (`"billing"` keys for a router returning `String`).
    pub fn add_conditional_edges<F, L, B, K, T>(
        self,
        from: impl Into<NodeId>,
        router: F,
        branches: B,
    ) -> Self
    where
        F: Fn(&S) -> L + Send + Sync + 'static,
        L: BranchLabel,
        B: IntoIterator<Item = (K, T)>,
        K: Into<L>,
        T: Into<NodeId>,
    {
        self.add_conditional_edges_with_context(
            from,
            move |s: &S, _: &RouteContext<'_>| router(s),
            branches,
        )
    }

    /// Like [`add_conditional_edges`](Self::add_conditional_edges), with a
    /// router that also reads the [`RouteContext`] — for example to route to
    /// a clean-up node when a halt is requested.
    pub fn add_conditional_edges_with_context<F, L, B, K, T>(
        self,
        from: impl Into<NodeId>,
        router: F,
        branches: B,
    ) -> Self
    where
        F: Fn(&S, &RouteContext<'_>) -> L + Send + Sync + 'static,
        L: BranchLabel,
        B: IntoIterator<Item = (K, T)>,
        K: Into<L>,
        T: Into<NodeId>,
    {
        let declared = route::declare(branches.into_iter().map(|(k, t)| (k.into(), t)));
        let map = declared.map;
        self.push_router(
            from.into(),
            Arc::new(move |s: &S, ctx: &RouteContext<'_>| map.route(&router(s, ctx))),
            declared.branches,
            declared.unmapped,
        )
    }

    /// Adds conditional edges that may fan out: after `from`'s super-step,
    /// `router` returns any number of labels and the nodes of **every**
    /// returned label's branch run (in parallel when the run is parallel);
    /// the other branch targets are recorded as skipped. No label runs
    /// none of them. Like LangGraph's conditional edges returning a list.
    ///
    /// ```
    /// use flowtrace_core::{GraphBuilder, JsonState, NodeOutput, RunConfig, node_fn};
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let noop = || node_fn(|_s, _ctx| async { Ok(NodeOutput::none()) });
    /// let graph = GraphBuilder::<JsonState>::new("fanout")
    ///     .add_node("triage", noop())
    ///     .add_node("billing", noop())
    ///     .add_node("legal", noop())
    ///     .add_node("support", noop())
    ///     .set_entry("triage")
    ///     .add_conditional_fanout(
    ///         "triage",
    ///         |_state: &JsonState, _ctx| vec!["billing", "legal"],
    ///         [("billing", "billing"), ("legal", "legal"), ("support", "support")],
    ///     )
    ///     .set_finish("billing")
    ///     .set_finish("legal")
    ///     .set_finish("support")
    ///     .compile()
    ///     .unwrap();
    /// let out = graph.invoke(JsonState::new(), RunConfig::new()).await.unwrap();
    /// assert_eq!(out.summary.node_executions, 3);
    /// assert_eq!(out.summary.steps_of("triage").next().unwrap().branch.as_deref(), Some("billing,legal"));
    /// # });
    /// ```
    pub fn add_conditional_fanout<F, I, L, B, K, T>(
        self,
        from: impl Into<NodeId>,
        router: F,
        branches: B,
    ) -> Self
    where
        F: Fn(&S, &RouteContext<'_>) -> I + Send + Sync + 'static,
        I: IntoIterator<Item = L>,
        L: BranchLabel,
        B: IntoIterator<Item = (K, T)>,
        K: Into<L>,
        T: Into<NodeId>,
    {
        let declared = route::declare(branches.into_iter().map(|(k, t)| (k.into(), t)));
        let map = declared.map;
        self.push_router(
            from.into(),
            Arc::new(move |s: &S, ctx: &RouteContext<'_>| map.route_many(router(s, ctx))),
            declared.branches,
            declared.unmapped,
        )
    }

    fn push_router(
        mut self,
        from: NodeId,
        route: RouterFn<S>,
        branches: Vec<(String, Vec<NodeId>)>,
        unmapped: Vec<String>,
    ) -> Self {
        self.routers.push(RouterDef {
            from,
            route,
            branches,
            unmapped,
        });
        self
    }

    /// Stops every run before these nodes, for a human decision.
    pub fn interrupt_before<I, N>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<NodeId>,
    {
        self.interrupt_before
            .extend(nodes.into_iter().map(Into::into));
        self
    }

    /// Stops every run after these nodes, for a human decision.
    pub fn interrupt_after<I, N>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = N>,
        N: Into<NodeId>,
    {
        self.interrupt_after
            .extend(nodes.into_iter().map(Into::into));
        self
    }

    /// Declares that `from` may dispatch instances of `target` (map-reduce;
    /// see [`Dispatch`](crate::Dispatch)). If `from` dispatches nothing to
    /// `target`, `target` is skipped.
    pub fn add_dispatch(mut self, from: impl Into<NodeId>, target: impl Into<NodeId>) -> Self {
        self.dispatches.push((from.into(), target.into()));
        self
    }

    /// Validates the graph and prepares it for running. Every problem is
    /// reported at once.
    pub fn compile(self) -> Result<CompiledGraph<S>, BuildError> {
        compile::compile(self)
    }
}
