//! Streamed replies and what a call reports besides its answer.

use super::{ChatResponse, ModelError};

/// One event of a streamed reply.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// The next piece of text, as it arrives.
    Delta(String),
    /// The end: the whole reply with its usage and finish reason.
    Done(ChatResponse),
}

/// A streamed reply: deltas, then exactly one [`StreamEvent::Done`], or an
/// error (a stream cut midway is an error, never a silent end).
pub type ChatStream<'a> = futures::stream::BoxStream<'a, Result<StreamEvent, ModelError>>;

/// Receives what a model call does besides answering — fallbacks, cache
/// hits, warnings — so wrappers (fallback chains, caches, breakers) can put
/// them in the run's trace. [`NodeContext`](crate::NodeContext) implements
/// it; [`NoopObserver`] drops everything.
pub trait CallObserver: Send + Sync {
    /// Records an event in the step's trace (`fallback`, `cache.hit`, `log`, …).
    fn event(&self, kind: crate::trace::EventKind);

    /// The price of a provider's model, to value a cache hit or a decision.
    fn price(&self, provider: &str, model: &str) -> Option<crate::pricing::ModelPrice> {
        let _ = (provider, model);
        None
    }

    /// What the run may still spend, for routers that skip candidates the
    /// budget cannot afford. Defaults to unlimited.
    fn remaining_budget(&self) -> RemainingBudget {
        RemainingBudget::default()
    }
}

/// What a run may still spend (`None` = no limit), as seen by a model call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemainingBudget {
    /// Tokens left under `max_tokens`.
    pub tokens: Option<u64>,
    /// Money left under `max_cost`.
    pub cost: Option<crate::pricing::Cost>,
}

/// A [`CallObserver`] that ignores everything (for calls outside a run).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopObserver;

impl CallObserver for NoopObserver {
    fn event(&self, _kind: crate::trace::EventKind) {}
}
