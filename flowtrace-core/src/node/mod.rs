//! Nodes: the units of work of a graph.
//!
//! A node receives the current state (shared, read-only) and a
//! [`NodeContext`], and returns a [`NodeOutput`]: an optional state update
//! plus optional [`Dispatch`]es (map-reduce instances of another node).
//! Write one as an async closure with [`node_fn`], or implement [`Node`].

mod context;
mod model_call;
mod run;

pub use context::NodeContext;
pub(crate) use context::{StepMeter, StepShared};
pub(crate) use run::{RunServices, Scope};

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::error::NodeError;
use crate::ids::NodeId;
use crate::pricing::Cost;
use crate::retry::RetryPolicy;
use crate::state::State;

/// What a node returns: a state update and dispatched instances.
#[derive(Debug)]
pub struct NodeOutput<U> {
    pub(crate) update: Option<U>,
    pub(crate) dispatches: Vec<Dispatch>,
}

impl<U> NodeOutput<U> {
    /// No change to the state.
    pub fn none() -> Self {
        Self {
            update: None,
            dispatches: Vec::new(),
        }
    }

    /// One update.
    pub fn update(update: U) -> Self {
        Self {
            update: Some(update),
            dispatches: Vec::new(),
        }
    }

    /// Adds a dispatched instance (see [`Dispatch`]).
    pub fn dispatch(mut self, dispatch: Dispatch) -> Self {
        self.dispatches.push(dispatch);
        self
    }

    /// Adds several dispatched instances.
    pub fn dispatch_all(mut self, dispatches: impl IntoIterator<Item = Dispatch>) -> Self {
        self.dispatches.extend(dispatches);
        self
    }

    /// The update, if any.
    pub fn get_update(&self) -> Option<&U> {
        self.update.as_ref()
    }
}

impl<U> From<U> for NodeOutput<U> {
    fn from(update: U) -> Self {
        NodeOutput::update(update)
    }
}

/// One instance of a node to run with its own input, like LangGraph's `Send`.
///
/// A node declared with
/// [`GraphBuilder::add_dispatch`](crate::GraphBuilder::add_dispatch) may
/// return any number of dispatches to that target; the target then runs once
/// per dispatch, in the next super-step, each instance reading its input
/// through [`NodeContext::input`]. The target's successors wait for all
/// instances, and their updates are merged in dispatch order.
#[derive(Clone, Debug, PartialEq)]
pub struct Dispatch {
    pub(crate) target: NodeId,
    pub(crate) input: serde_json::Value,
}

impl Dispatch {
    /// An instance of `target` with `input`.
    pub fn new(target: impl Into<NodeId>, input: impl Serialize) -> Result<Self, NodeError> {
        Ok(Self {
            target: target.into(),
            input: serde_json::to_value(input)?,
        })
    }

    /// An instance of `target` with a JSON input.
    pub fn json(target: impl Into<NodeId>, input: serde_json::Value) -> Self {
        Self {
            target: target.into(),
            input,
        }
    }
}

/// The result of a node.
pub type NodeResult<U> = Result<NodeOutput<U>, NodeError>;

/// A unit of work over state `S`.
///
/// ```
/// use std::sync::Arc;
/// use async_trait::async_trait;
/// use flowtrace_core::{Node, NodeContext, NodeError, NodeOutput, JsonState};
///
/// struct Greet;
///
/// #[async_trait]
/// impl Node<JsonState> for Greet {
///     async fn run(&self, state: Arc<JsonState>, _ctx: NodeContext) -> Result<NodeOutput<serde_json::Map<String, serde_json::Value>>, NodeError> {
///         let name = state.get("name").and_then(|v| v.as_str()).unwrap_or("world");
///         let mut update = serde_json::Map::new();
///         update.insert("greeting".into(), format!("hello {name}").into());
///         Ok(update.into())
///     }
/// }
/// ```
#[async_trait]
pub trait Node<S: State>: Send + Sync + 'static {
    /// Runs the node once (one attempt).
    ///
    /// # Cancel safety
    /// The executor drops this future when the attempt times out, the run is
    /// canceled or its deadline passes; the attempt's update is then
    /// discarded. Side effects already made stay made: use the context's ids
    /// to make them idempotent.
    async fn run(&self, state: Arc<S>, ctx: NodeContext) -> NodeResult<S::Update>;
}

/// A node made from an async closure; see [`node_fn`].
pub struct NodeFn<F, S> {
    f: F,
    _state: PhantomData<fn() -> S>,
}

impl<F, S> fmt::Debug for NodeFn<F, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeFn")
    }
}

/// Makes a node from an async closure taking the state and the context.
///
/// ```
/// use flowtrace_core::{node_fn, JsonState, NodeOutput};
/// let node = node_fn(|_state: std::sync::Arc<JsonState>, _ctx| async move {
///     Ok(NodeOutput::none())
/// });
/// # let _ = node;
/// ```
pub fn node_fn<S, F, Fut>(f: F) -> NodeFn<F, S>
where
    S: State,
    F: Fn(Arc<S>, NodeContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = NodeResult<S::Update>> + Send + 'static,
{
    NodeFn {
        f,
        _state: PhantomData,
    }
}

#[async_trait]
impl<S, F, Fut> Node<S> for NodeFn<F, S>
where
    S: State,
    F: Fn(Arc<S>, NodeContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = NodeResult<S::Update>> + Send + 'static,
{
    async fn run(&self, state: Arc<S>, ctx: NodeContext) -> NodeResult<S::Update> {
        (self.f)(state, ctx).await
    }
}

#[async_trait]
impl<S: State, N: Node<S> + ?Sized> Node<S> for Arc<N> {
    async fn run(&self, state: Arc<S>, ctx: NodeContext) -> NodeResult<S::Update> {
        (**self).run(state, ctx).await
    }
}

/// Per-node settings: retries, timeout and budget estimate.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeConfig {
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) estimated_cost: Cost,
    pub(crate) estimated_tokens: u64,
}

impl NodeConfig {
    /// Default settings: the run's retry policy and timeout, no estimate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Retries transient failures with `policy` (overrides the run default).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Fails (or retries) an attempt that runs longer than `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The worst-case cost of one execution, reserved against the run's cost
    /// budget before the node is dispatched (and settled when it ends).
    pub fn estimated_cost(mut self, cost: Cost) -> Self {
        self.estimated_cost = cost;
        self
    }

    /// The worst-case tokens of one execution, reserved like the cost.
    pub fn estimated_tokens(mut self, tokens: u64) -> Self {
        self.estimated_tokens = tokens;
        self
    }

    /// The retry policy, if set.
    pub fn get_retry(&self) -> Option<&RetryPolicy> {
        self.retry.as_ref()
    }

    /// The timeout, if set.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }
}
