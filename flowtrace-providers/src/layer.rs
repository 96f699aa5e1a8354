//! One resilience stack: layers over [`ChatModel`].
//!
//! Every resilience feature of this crate is a [`Layer`] (the `tower-layer`
//! trait: a function from one model to a wrapped model) whose wrapper is a
//! [`ModelWrapper`] — it implements only the calls it changes and forwards
//! the rest to the model inside it:
//!
//! | layer | wrapper | what it adds |
//! |---|---|---|
//! | [`CacheLayer`](crate::cache::CacheLayer) | [`Cached`](crate::cache::Cached) | exact-match replies from a [`flowtrace_core::Cache`] |
//! | [`BreakerLayer`](crate::breaker::BreakerLayer) | [`Breakered`](crate::breaker::Breakered) | a circuit breaker per model name |
//! | [`FallbackLayer`](crate::fallback::FallbackLayer) | [`FallbackChain`](crate::fallback::FallbackChain) | retries ([`flowtrace_core::RetryPolicy`]) and fallback to other models |
//!
//! A [`ModelRouter`](crate::router::ModelRouter) is a model of its own (it
//! chooses among candidates, each of which may be a stack), so it sits at
//! the bottom of a stack or inside a candidate.
//!
//! [`ModelStack`] composes them at the edge:
//!
//! ```
//! use std::sync::Arc;
//! use flowtrace_core::{ChatModel, ChatRequest, MemoryCache};
//! use flowtrace_providers::breaker::{BreakerConfig, BreakerLayer};
//! use flowtrace_providers::cache::CacheLayer;
//! use flowtrace_providers::layer::ModelStack;
//! use flowtrace_providers::simulated::{SimulatedConfig, SimulatedModel};
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let model = ModelStack::new(SimulatedModel::new(SimulatedConfig::new().response("hi")))
//!     .layer(BreakerLayer::new(BreakerConfig::default()))
//!     .layer(CacheLayer::new(Arc::new(MemoryCache::new(100))));
//! let request = ChatRequest::new("sim").user("hello");
//! assert!(!model.chat(request.clone()).await.unwrap().cached);
//! assert!(model.chat(request).await.unwrap().cached);
//! # });
//! ```
//!
//! # Order
//!
//! Each [`layer`](ModelStack::layer) wraps everything added before it, so
//! **the layer added last sees the call first**. Above, a cache hit is
//! answered before the breaker is consulted, and only misses count towards
//! the breaker. (This reads bottom-up, the opposite of tower's
//! `ServiceBuilder`, which lists the outermost layer first.)

use std::sync::Arc;

use flowtrace_core::ChatModel;
use flowtrace_core::model::ModelWrapper;

pub use tower_layer::{Identity, Layer, Stack};

/// A model and the layers around it. See the [module docs](self).
///
/// A `ModelStack` is itself a [`ChatModel`] (it forwards every call to the
/// outermost layer), so it can be used as it is, put in an
/// `Arc<dyn ChatModel>` with [`into_arc`](Self::into_arc), or unwrapped with
/// [`into_inner`](Self::into_inner).
#[derive(Clone, Debug, Default)]
#[must_use]
pub struct ModelStack<M> {
    model: M,
}

impl<M> ModelStack<M> {
    /// A stack with `model` at its bottom and no layer yet.
    pub fn new(model: M) -> Self {
        Self { model }
    }

    /// Wraps the stack in `layer`, which then sees each call first (see
    /// [Order](self#order)).
    pub fn layer<L: Layer<M>>(self, layer: L) -> ModelStack<L::Service> {
        ModelStack {
            model: layer.layer(self.model),
        }
    }

    /// The outermost model.
    pub fn get_ref(&self) -> &M {
        &self.model
    }

    /// The outermost model, by value.
    pub fn into_inner(self) -> M {
        self.model
    }

    /// The outermost model, shared.
    pub fn into_arc(self) -> Arc<dyn ChatModel>
    where
        M: ChatModel + 'static,
    {
        Arc::new(self.model)
    }
}

impl<M: ChatModel> ModelWrapper for ModelStack<M> {
    type Inner = M;

    fn inner(&self) -> &M {
        &self.model
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::breaker::{BreakerConfig, BreakerLayer};
    use crate::cache::CacheLayer;
    use flowtrace_core::testing::ScriptedModel;
    use flowtrace_core::{ChatRequest, MemoryCache, ModelErrorKind, TokenUsage};

    #[tokio::test]
    async fn the_last_layer_sees_the_call_first() {
        // Cache outside the breaker: the hit never reaches the breaker, so
        // an open breaker does not stop cached replies.
        let scripted = ScriptedModel::new("openai")
            .reply("hi", TokenUsage::new(1, 1))
            .fail(ModelErrorKind::Overloaded);
        let model = ModelStack::new(scripted)
            .layer(BreakerLayer::new(
                BreakerConfig::default().failure_threshold(1),
            ))
            .layer(CacheLayer::new(Arc::new(MemoryCache::new(10))));
        let hello = ChatRequest::new("m").user("hello");
        assert!(!model.chat(hello.clone()).await.unwrap().cached);
        let other = ChatRequest::new("m").user("other");
        assert!(model.chat(other.clone()).await.is_err());
        let refused = model.chat(other).await.unwrap_err();
        assert!(refused.message.contains("circuit open"), "{refused}");
        assert!(model.chat(hello).await.unwrap().cached);
        assert_eq!(model.get_ref().inner().inner().calls(), 2);
        assert_eq!(ChatModel::provider(&model), "openai");
    }

    #[tokio::test]
    async fn identity_changes_nothing() {
        let model = ModelStack::new(ScriptedModel::new("p").reply("x", TokenUsage::new(1, 1)))
            .layer(Identity::new())
            .into_arc();
        assert_eq!(model.chat(ChatRequest::new("m")).await.unwrap().text, "x");
    }
}
