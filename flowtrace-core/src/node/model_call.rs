//! Model calls through a node's context: priced, budgeted (a reservation
//! per call, settled with the actual usage), cached and traced.

use tokio::time::Instant;
use tracing::Instrument;

use crate::cache::CacheKey;
use crate::error::{Error, NodeError};
use crate::model::{
    CallObserver, ChatModel, ChatRequest, ChatResponse, ModelError, ModelErrorKind, StreamEvent,
};
use crate::node::NodeContext;
use crate::pricing::{Amount, Cost, Ledger, MissingPrice, TokenUsage};
use crate::trace::{EventKind, LogLevel};
use futures::StreamExt;

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
}
