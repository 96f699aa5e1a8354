//! The handle a node uses to talk to its run.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cache::CacheKey;
use crate::error::{Error, NodeError};
use crate::ids::{NodeId, RunId, StepId, ThreadId};
use crate::model::{
    CallObserver, ChatModel, ChatRequest, ChatResponse, ModelError, ModelErrorKind, StreamEvent,
};
use crate::node::{RunServices, Scope};
use crate::pricing::{Amount, Ledger};
use crate::pricing::{Cost, MissingPrice, TokenUsage};
use crate::tool::Tool;
use crate::trace::{EventKind, LogLevel};
use futures::StreamExt;

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
    step: Arc<StepShared>,
    attempt: u32,
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

/// Releases a model call's budget reservation if the call never settles
/// (error, timeout, cancellation).
struct Reservation<'a> {
    ledger: &'a Ledger,
    amount: Amount,
}

impl Reservation<'_> {
    /// The reserved amount, now owned by the caller (who settles it).
    fn take(mut self) -> Amount {
        std::mem::replace(&mut self.amount, Amount::ZERO)
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.ledger.release(self.amount);
    }
}

/// A model call between its budget reservation and its reply.
struct PendingCall<'a> {
    provider: String,
    model: String,
    cache_key: Option<CacheKey>,
    reservation: Reservation<'a>,
}

/// The outcome of preparing a model call.
enum Prepared<'a> {
    /// The run's cache answered.
    Hit(ChatResponse),
    /// The call must be made.
    Call(PendingCall<'a>),
}

/// The observer a model sees during one call: the step's context, with the
/// call's own reservation given back in [`remaining_budget`], so a router
/// judging whether a candidate fits does not count this call twice.
///
/// [`remaining_budget`]: CallObserver::remaining_budget
struct CallView<'a> {
    ctx: &'a NodeContext,
    reserved: Amount,
}

impl CallObserver for CallView<'_> {
    fn event(&self, kind: EventKind) {
        self.ctx.emit(kind);
    }

    fn price(&self, provider: &str, model: &str) -> Option<crate::pricing::ModelPrice> {
        self.ctx.step.run.pricing.price(provider, model)
    }

    fn remaining_budget(&self) -> crate::model::RemainingBudget {
        let mut left = self.ctx.step.run.ledger.remaining();
        left.tokens = left.tokens.map(|t| t.saturating_add(self.reserved.tokens));
        left.cost = left.cost.map(|c| c + self.reserved.cost);
        left
    }
}

impl CallObserver for NodeContext {
    fn event(&self, kind: EventKind) {
        self.emit(kind);
    }

    fn price(&self, provider: &str, model: &str) -> Option<crate::pricing::ModelPrice> {
        self.step.run.pricing.price(provider, model)
    }

    fn remaining_budget(&self) -> crate::model::RemainingBudget {
        self.step.run.ledger.remaining()
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

    fn emit_at(&self, at: Instant, kind: EventKind) {
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

    /// Calls a chat model with tracing, pricing, caching and budget checks.
    ///
    /// In order: the request's worst-case tokens (estimated prompt plus
    /// `max_tokens`, or the run's assumed output size) and cost are checked
    /// against the run's budget and reserved — a call that would not fit is
    /// refused before it is sent, failing the run with
    /// [`Error::BudgetExceeded`]; the run's cache is consulted (a hit emits
    /// `cache.hit` with the saved cost, and costs nothing); `llm.request` is
    /// emitted; the model is called (wrappers such as fallback chains report
    /// their own events through this context); the actual usage is priced
    /// exactly, added to the step and settled against the budget;
    /// `llm.response` is emitted.
    ///
    /// # Cancel safety
    /// If the future is dropped midway the reservation is released and
    /// nothing is charged.
    pub async fn chat(
        &self,
        model: &dyn ChatModel,
        request: ChatRequest,
    ) -> Result<ChatResponse, NodeError> {
        let call = match self.prepare_call(model, &request).await? {
            Prepared::Hit(response) => return Ok(response),
            Prepared::Call(call) => call,
        };
        let started = Instant::now();
        let span = tracing::debug_span!(
            "flowtrace.model_call",
            provider = %call.provider,
            model = %request.model
        );
        let view = CallView {
            ctx: self,
            reserved: call.reservation.amount,
        };
        let result = model.chat_observed(request, &view).instrument(span).await;
        self.finish_call(call, result, started).await
    }

    /// Like [`chat`](Self::chat), streaming the reply: every piece of text is
    /// emitted as an `llm.delta` event as it arrives, and the final
    /// `llm.response` carries the whole text and the usage. Returns the whole
    /// reply. A stream cut midway is an error.
    ///
    /// # Cancel safety
    /// As for [`chat`](Self::chat).
    pub async fn chat_stream(
        &self,
        model: &dyn ChatModel,
        request: ChatRequest,
    ) -> Result<ChatResponse, NodeError> {
        let call = match self.prepare_call(model, &request).await? {
            Prepared::Hit(response) => {
                self.emit(EventKind::LlmDelta {
                    text: response.text.clone(),
                });
                return Ok(response);
            }
            Prepared::Call(call) => call,
        };
        let started = Instant::now();
        let result = {
            let view = CallView {
                ctx: self,
                reserved: call.reservation.amount,
            };
            let mut stream = model.chat_stream_observed(request, &view);
            let mut done = None;
            let mut failure = None;
            while let Some(item) = stream.next().await {
                match item {
                    Ok(StreamEvent::Delta(text)) => {
                        if !text.is_empty() {
                            self.emit(EventKind::LlmDelta { text });
                        }
                    }
                    Ok(StreamEvent::Done(response)) => {
                        done = Some(response);
                        break;
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            match (done, failure) {
                (Some(r), _) => Ok(r),
                (None, Some(e)) => Err(e),
                (None, None) => Err(ModelError::new(
                    ModelErrorKind::MalformedResponse,
                    call.provider.clone(),
                    call.model.clone(),
                    "the stream ended without a final message",
                )),
            }
        };
        self.finish_call(call, result, started).await
    }

    /// Checks pricing, consults the cache, reserves the budget and emits
    /// `llm.request`.
    async fn prepare_call(
        &self,
        model: &dyn ChatModel,
        request: &ChatRequest,
    ) -> Result<Prepared<'_>, NodeError> {
        let run = &self.step.run;
        let provider = model.provider().to_string();
        let price = run.pricing.price(&provider, &request.model);
        if price.is_none() && run.missing_price == MissingPrice::Error {
            return Err(NodeError::run_error(Error::MissingPrice {
                node: self.step.node.clone(),
                provider,
                model: request.model.clone(),
            }));
        }
        let estimated_input = model.estimate_input_tokens(request);
        let estimated_output =
            u64::from(request.max_tokens.unwrap_or(run.default_max_output_tokens));
        let estimated_cost = price
            .map(|p| p.cost(&TokenUsage::new(estimated_input, estimated_output)))
            .transpose()?
            .unwrap_or_default();

        let cache_key = run
            .cache
            .as_ref()
            .map(|_| CacheKey::for_request(&provider, request));
        if let (Some(cache), Some(key)) = (&run.cache, &cache_key)
            && let Some(mut hit) = cache.get(key).await
        {
            let saved_cost = price
                .map(|p| p.cost(&hit.usage))
                .transpose()?
                .unwrap_or_default();
            {
                let mut m = self.step.meter();
                m.cache_hits += 1;
                m.provider = Some(provider.clone());
                m.model = Some(request.model.clone());
            }
            self.emit(EventKind::CacheHit {
                provider,
                model: request.model.clone(),
                saved_cost,
                saved_usage: hit.usage,
            });
            hit.cached = true;
            return Ok(Prepared::Hit(hit));
        }

        let need = Amount {
            tokens: estimated_input.saturating_add(estimated_output),
            cost: estimated_cost,
        };
        let reservation = self.reserve(need)?;

        self.emit(EventKind::LlmRequest {
            provider: provider.clone(),
            model: request.model.clone(),
            request: Box::new(request.clone()),
            estimated_input_tokens: estimated_input,
            estimated_cost,
        });
        Ok(Prepared::Call(PendingCall {
            provider,
            model: request.model.clone(),
            cache_key,
            reservation,
        }))
    }

    /// Prices the reply, meters the step, settles the budget, emits
    /// `llm.response` and fills the cache.
    async fn finish_call(
        &self,
        call: PendingCall<'_>,
        result: Result<ChatResponse, ModelError>,
        started: Instant,
    ) -> Result<ChatResponse, NodeError> {
        let run = &self.step.run;
        let finished = Instant::now();
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                self.emit_at(
                    finished,
                    EventKind::Error {
                        error_kind: format!("model.{}", e.kind),
                        message: e.to_string(),
                    },
                );
                return Err(e.into());
            }
        };
        // Who answered: a fallback chain may have moved to another provider.
        let provider = response
            .provider
            .clone()
            .unwrap_or_else(|| call.provider.clone());
        let priced_model = if response.model.is_empty() {
            call.model.as_str()
        } else {
            response.model.as_str()
        };
        let (usage, cost) = if response.cached {
            // A wrapper's cache answered (and emitted `cache.hit`): free.
            (TokenUsage::default(), Cost::ZERO)
        } else {
            let price = run
                .pricing
                .price(&provider, priced_model)
                .or_else(|| run.pricing.price(&provider, &call.model));
            match price {
                Some(p) => (response.usage, p.cost(&response.usage)?),
                None if run.missing_price == MissingPrice::Error => {
                    return Err(NodeError::run_error(Error::MissingPrice {
                        node: self.step.node.clone(),
                        provider,
                        model: priced_model.to_string(),
                    }));
                }
                None => {
                    tracing::warn!(provider = %provider, model = %priced_model, "no price for model; call counted as free");
                    self.emit_at(
                        finished,
                        EventKind::Log {
                            level: LogLevel::Warn,
                            message: format!(
                                "no price for model {provider}/{priced_model}; the call is counted as free"
                            ),
                        },
                    );
                    (response.usage, Cost::ZERO)
                }
            }
        };
        {
            let mut m = self.step.meter();
            m.usage += usage;
            m.cost += cost;
            m.model_calls += 1;
            if response.cached {
                m.cache_hits += 1;
            }
            m.provider = Some(provider.clone());
            m.model = Some(priced_model.to_string());
        }
        let settled = run.ledger.settle(
            call.reservation.take(),
            Amount {
                tokens: usage.total(),
                cost,
            },
            &self.step.node,
        );
        self.emit_at(
            finished,
            EventKind::LlmResponse {
                provider,
                model: response.model.clone(),
                text: response.text.clone(),
                tool_calls: response.tool_calls.clone(),
                usage: response.usage,
                cost,
                latency_us: finished.saturating_duration_since(started).as_micros() as u64,
                finish_reason: response.finish_reason.clone(),
            },
        );
        settled.map_err(|b| NodeError::run_error(Error::BudgetExceeded(b)))?;
        if let (Some(cache), Some(key)) = (&run.cache, call.cache_key)
            && !response.cached
        {
            cache.put(key, response.clone()).await;
        }
        Ok(response)
    }

    /// Reserves `need` for one model call, drawing first on what is left of
    /// the step's own reservation.
    fn reserve(&self, need: Amount) -> Result<Reservation<'_>, NodeError> {
        let ledger = &self.step.run.ledger;
        if !ledger.is_limited() {
            return Ok(Reservation {
                ledger,
                amount: Amount::ZERO,
            });
        }
        let covered = {
            let mut m = self.step.meter();
            let covered = Amount {
                tokens: need.tokens.min(m.reserved.tokens),
                cost: need.cost.min(m.reserved.cost),
            };
            m.reserved.tokens -= covered.tokens;
            m.reserved.cost = m.reserved.cost.saturating_sub(covered.cost);
            covered
        };
        let extra = Amount {
            tokens: need.tokens - covered.tokens,
            cost: need.cost.saturating_sub(covered.cost),
        };
        if let Err(breach) = ledger.reserve(extra, &self.step.node) {
            ledger.release(covered);
            return Err(NodeError::run_error(Error::BudgetExceeded(breach)));
        }
        Ok(Reservation {
            ledger,
            amount: need,
        })
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
                    },
                );
                Err(e.into())
            }
        }
    }
}
