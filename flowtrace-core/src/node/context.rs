//! The handle a node uses to talk to its run.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::NodeError;
use crate::ids::{NodeId, RunId, StepId, ThreadId};
use crate::node::{RunServices, Scope};
use crate::pricing::Amount;
use crate::pricing::{Cost, TokenUsage};
use crate::tool::Tool;
use crate::trace::{EventKind, LogLevel};

/// What a step has consumed so far (all attempts).
#[derive(Debug, Default)]
pub(crate) struct StepMeter {
    pub(crate) usage: TokenUsage,
    pub(crate) cost: Cost,
    /// What is left of the step's own reservation (its node estimate).
    pub(crate) reserved: Amount,
    pub(crate) provider: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) cache_hits: u32,
    pub(crate) model_calls: u32,
    /// `retry` events emitted from inside the node (a model wrapper
    /// retrying a call), as opposed to the executor's node-level retries.
    pub(crate) call_retries: u32,
    /// `fallback` events emitted from inside the node.
    pub(crate) fallbacks: u32,
}

/// Per-step data shared between the executor and the node's context.
pub(crate) struct StepShared {
    pub(crate) run: Arc<RunServices>,
    /// The engine's own per-run state, opaque here (a subgraph node takes
    /// it back to run its graph inside the same run).
    pub(crate) engine: Arc<dyn std::any::Any + Send + Sync>,
    pub(crate) step_id: StepId,
    pub(crate) parent_step: Option<StepId>,
    pub(crate) node: NodeId,
    pub(crate) input: Option<serde_json::Value>,
    /// The super-step's token when siblings run concurrently; otherwise the
    /// run's token applies.
    pub(crate) cancel: Option<CancellationToken>,
    pub(crate) meter: Mutex<StepMeter>,
    /// The answers to this task's `interrupt` calls so far, in call order.
    pub(crate) answers: Vec<serde_json::Value>,
    /// `interrupt` calls made in the current attempt (reset per attempt).
    pub(crate) calls: std::sync::atomic::AtomicU32,
    /// The approval's payload when this node was released from a static
    /// `interrupt_before`.
    pub(crate) approval: Option<serde_json::Value>,
    /// For a subgraph task that paused inside its subgraph: where it stands
    /// (taken by the subgraph node when it runs again).
    pub(crate) subgraph: Mutex<Option<Box<crate::checkpoint::SubgraphState>>>,
    /// The current attempt's token, a child of `cancel` (or the run's
    /// token), created when the node first asks for it.
    pub(crate) attempt_cancel: Mutex<Option<CancellationToken>>,
    /// Where the executor running this task sits (for interrupt ids and
    /// subgraph paths).
    pub(crate) scope: Arc<Scope>,
    /// The durable thread, super-step and task position (for idempotency keys).
    pub(crate) thread: Option<ThreadId>,
    pub(crate) superstep: u64,
    pub(crate) task_index: u32,
}

impl StepShared {
    pub(crate) fn meter(&self) -> MutexGuard<'_, StepMeter> {
        // The meter holds plain numbers: a poisoned lock still has valid data.
        self.meter.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The node's view of its run: ids, its dispatch input, trace events, and
/// metered model and tool calls.
///
/// Cheap to clone (one reference count).
#[derive(Clone)]
pub struct NodeContext {
    pub(super) step: Arc<StepShared>,
    pub(super) attempt: u32,
}

impl fmt::Debug for NodeContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeContext")
            .field("run_id", &self.step.run.run_id)
            .field("step_id", &self.step.step_id)
            .field("node", &self.step.node)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl NodeContext {
    pub(crate) fn new(step: Arc<StepShared>, attempt: u32) -> Self {
        Self { step, attempt }
    }

    /// The run's id.
    pub fn run_id(&self) -> &RunId {
        &self.step.run.run_id
    }

    /// This step's id (the same for every attempt).
    pub fn step_id(&self) -> StepId {
        self.step.step_id
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.step.node
    }

    /// The attempt, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// For a dispatched instance: its input, deserialized.
    pub fn input<T: DeserializeOwned>(&self) -> Result<Option<T>, NodeError> {
        match &self.step.input {
            None => Ok(None),
            Some(v) => T::deserialize(v).map(Some).map_err(|e| {
                NodeError::permanent(format!(
                    "node {:?}: dispatch input does not match the expected type: {e}",
                    self.step.node
                ))
            }),
        }
    }

    /// For a dispatched instance: its raw input.
    pub fn input_value(&self) -> Option<&serde_json::Value> {
        self.step.input.as_ref()
    }

    /// A key that identifies this step's work across attempts and across a
    /// crash and resume: `thread/super-step/node/task`. Tools with side
    /// effects (payments, emails) can use it to de-duplicate. Without a
    /// checkpointer the run id stands in for the thread.
    pub fn idempotency_key(&self) -> String {
        let thread = match &self.step.thread {
            Some(t) => t.as_str(),
            None => self.step.run.run_id.as_str(),
        };
        format!(
            "{thread}/{}/{}/{}",
            self.step.superstep, self.step.node, self.step.task_index
        )
    }

    /// Asks a human for a decision. The first time, this returns an error
    /// that pauses the run (propagate it with `?`): the run is checkpointed
    /// with status `interrupted` and `payload` as the question. When the
    /// thread is resumed with an approval, the node runs again from the
    /// start and this call returns the approval's payload instead.
    ///
    /// A node may ask several questions: each call is its own interrupt
    /// (numbered by its position among the task's calls). When the node runs
    /// again, calls already answered return their recorded answers in
    /// order, and the first unanswered one pauses the run again. The node's
    /// state update applies only once it returns.
    ///
    /// ```
    /// # use flowtrace_core::{NodeContext, NodeError};
    /// # fn demo(ctx: &NodeContext) -> Result<(), NodeError> {
    /// let answer = ctx.interrupt(serde_json::json!({"refund": 120}))?;
    /// let approved_amount = answer["amount"].as_u64().unwrap_or(0);
    /// # let _ = approved_amount; Ok(()) }
    /// ```
    pub fn interrupt(
        &self,
        payload: impl serde::Serialize,
    ) -> Result<serde_json::Value, NodeError> {
        let call = self
            .step
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if let Some(answer) = self.step.answers.get(call as usize) {
            return Ok(answer.clone());
        }
        let payload = serde_json::to_value(payload)?;
        Err(NodeError::interrupt(payload))
    }

    /// When this node runs because a human approved it (it was listed in
    /// `interrupt_before`), the approval's payload (for example a spending
    /// limit); `None` otherwise.
    pub fn approval(&self) -> Option<&serde_json::Value> {
        self.step.approval.as_ref()
    }

    /// This attempt's cancellation token: a child of the run's token (of
    /// the super-step's, when siblings run concurrently). It is canceled
    /// when the run is canceled, when a sibling fails, or when this attempt
    /// times out, so work the node spawned can clean up. Canceling it
    /// cancels only this attempt, never the run or the caller's token.
    pub fn cancellation_token(&self) -> CancellationToken {
        let mut slot = self
            .step
            .attempt_cancel
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert_with(|| {
            self.step
                .cancel
                .as_ref()
                .unwrap_or(&self.step.run.cancel)
                .child_token()
        })
        .clone()
    }

    /// The saved position of this subgraph task's paused subgraph, if any.
    pub(crate) fn take_subgraph_state(&self) -> Option<Box<crate::checkpoint::SubgraphState>> {
        self.step
            .subgraph
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// The scope of a subgraph run by this task.
    pub(crate) fn child_scope(&self) -> Scope {
        self.step
            .scope
            .child(self.step.superstep, &self.step.node, self.step.task_index)
    }

    /// The engine's per-run state, as the engine stored it.
    pub(crate) fn engine_state(&self) -> &Arc<dyn std::any::Any + Send + Sync> {
        &self.step.engine
    }

    /// Emits an event scoped to this step.
    pub fn emit(&self, kind: EventKind) {
        self.emit_at(Instant::now(), kind);
    }

    pub(super) fn emit_at(&self, at: Instant, kind: EventKind) {
        if matches!(kind, EventKind::Retry { .. } | EventKind::Fallback { .. }) {
            let mut m = self.step.meter();
            if matches!(kind, EventKind::Retry { .. }) {
                m.call_retries += 1;
            } else {
                m.fallbacks += 1;
            }
        }
        self.step.run.event(
            at,
            Some(self.step.step_id),
            self.step.parent_step,
            Some(&self.step.node),
            self.attempt,
            kind,
        );
    }

    /// Emits a `log` event.
    pub fn log(&self, level: LogLevel, message: impl Into<String>) {
        self.emit(EventKind::Log {
            level,
            message: message.into(),
        });
    }

    /// Calls a tool, emitting `tool.request` and `tool.response`.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the tool call midway.
    pub async fn call_tool(
        &self,
        tool: &dyn Tool,
        arguments: serde_json::Value,
    ) -> Result<serde_json::Value, NodeError> {
        let name = tool.name().to_string();
        self.emit(EventKind::ToolRequest {
            tool: name.clone(),
            arguments: arguments.clone(),
        });
        let started = Instant::now();
        let span = tracing::debug_span!("flowtrace.tool_call", tool = %name);
        let result = tool.call(arguments).instrument(span).await;
        let finished = Instant::now();
        let latency_us = finished.saturating_duration_since(started).as_micros() as u64;
        match result {
            Ok(output) => {
                self.emit_at(
                    finished,
                    EventKind::ToolResponse {
                        tool: name,
                        output: Some(output.clone()),
                        error: None,
                        latency_us,
                        cache: None,
                    },
                );
                Ok(output)
            }
            Err(e) => {
                self.emit_at(
                    finished,
                    EventKind::ToolResponse {
                        tool: name,
                        output: None,
                        error: Some(e.to_string()),
                        latency_us,
                        cache: None,
                    },
                );
                Err(e.into())
            }
        }
    }
}
