//! The handle a node uses to talk to its run.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cache::CacheKey;
use crate::error::{Error, NodeError};
use crate::exec::shared::{Amount, Ledger, RunShared};
use crate::ids::{NodeId, RunId, StepId, ThreadId};
use crate::model::{ChatModel, ChatRequest, ChatResponse};
use crate::pricing::{Cost, MissingPrice, TokenUsage};
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
}

/// Per-step data shared between the executor and the node's context.
pub(crate) struct StepShared {
    pub(crate) run: Arc<RunShared>,
    pub(crate) step_id: StepId,
    pub(crate) parent_step: Option<StepId>,
    pub(crate) node: NodeId,
    pub(crate) input: Option<serde_json::Value>,
    /// The super-step's token when siblings run concurrently; otherwise the
    /// run's token applies.
    pub(crate) cancel: Option<CancellationToken>,
    pub(crate) meter: Mutex<StepMeter>,
    /// The human's answer to this node's interrupt, when resuming one.
    pub(crate) resume: Mutex<Option<serde_json::Value>>,
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

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.ledger.release(self.amount);
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
        if let Some(answer) = self
            .step
            .resume
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            return Ok(answer);
        }
        let payload = serde_json::to_value(payload)?;
        Err(NodeError::interrupt(payload))
    }

    /// A token canceled when the run is canceled or this attempt is stopped.
    pub fn cancellation_token(&self) -> &CancellationToken {
        self.step.cancel.as_ref().unwrap_or(&self.step.run.cancel)
    }

    pub(crate) fn run_shared(&self) -> &Arc<RunShared> {
        &self.step.run
    }

    /// Emits an event scoped to this step.
    pub fn emit(&self, kind: EventKind) {
        self.emit_at(Instant::now(), kind);
    }

    fn emit_at(&self, at: Instant, kind: EventKind) {
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
    /// emitted; the model is called; the actual usage is priced exactly,
    /// added to the step and settled against the budget; `llm.response` is
    /// emitted.
    ///
    /// # Cancel safety
    /// If the future is dropped midway the reservation is released and
    /// nothing is charged.
    pub async fn chat(
        &self,
        model: &dyn ChatModel,
        request: ChatRequest,
    ) -> Result<ChatResponse, NodeError> {
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
        let estimated_input = model.estimate_input_tokens(&request);
        let estimated_output =
            u64::from(request.max_tokens.unwrap_or(run.default_max_output_tokens));
        let estimated_cost = price
            .map(|p| p.cost(&TokenUsage::new(estimated_input, estimated_output)))
            .unwrap_or_default();

        let cache_key = run
            .cache
            .as_ref()
            .map(|_| CacheKey::for_request(&provider, &request));
        if let (Some(cache), Some(key)) = (&run.cache, &cache_key)
            && let Some(hit) = cache.get(key).await
        {
            let saved_cost = price.map(|p| p.cost(&hit.usage)).unwrap_or_default();
            {
                let mut m = self.step.meter();
                m.cache_hits += 1;
                m.provider = Some(provider.clone());
                m.model = Some(request.model.clone());
            }
            self.emit(EventKind::CacheHit {
                provider,
                model: request.model,
                saved_cost,
                saved_usage: hit.usage,
            });
            return Ok(hit);
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
        let started = Instant::now();
        let span = tracing::debug_span!(
            "flowtrace.model_call",
            provider = %provider,
            model = %request.model
        );
        let result = model.chat(request).instrument(span).await;
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

        let cost = match price {
            Some(p) => p.cost(&response.usage),
            None => {
                self.emit_at(
                    finished,
                    EventKind::Log {
                        level: LogLevel::Warn,
                        message: format!(
                            "no price for model {provider}/{}; the call is counted as free",
                            response.model
                        ),
                    },
                );
                tracing::warn!(provider = %provider, model = %response.model, "no price for model; call counted as free");
                Cost::ZERO
            }
        };
        {
            let mut m = self.step.meter();
            m.usage += response.usage;
            m.cost += cost;
            m.model_calls += 1;
            m.provider = Some(provider.clone());
            m.model = Some(response.model.clone());
        }
        let settled = {
            let amount = reservation.amount;
            std::mem::forget(reservation);
            run.ledger.settle(
                amount,
                Amount {
                    tokens: response.usage.total(),
                    cost,
                },
                &self.step.node,
            )
        };
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
        if let (Some(cache), Some(key)) = (&run.cache, cache_key) {
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
