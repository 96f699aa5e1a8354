//! Model calls through the node context: streaming, wrappers reporting
//! through the call observer, fallback pricing and wrapper cache hits.

use std::sync::Arc;

use async_trait::async_trait;
use flowtrace_core::testing::ScriptedModel;
use flowtrace_core::{
    CallObserver, ChatModel, ChatRequest, ChatResponse, Cost, EventKind, GraphBuilder, JsonState,
    ModelError, NodeContext, NodeOutput, RunConfig, TokenUsage, node_fn,
};

use crate::support::run_with_sink;

fn one_call<F>(call: F) -> flowtrace_core::CompiledGraph<JsonState>
where
    F: Fn(
            NodeContext,
        )
            -> futures::future::BoxFuture<'static, Result<ChatResponse, flowtrace_core::NodeError>>
        + Send
        + Sync
        + 'static,
{
    let call = Arc::new(call);
    GraphBuilder::<JsonState>::new("one")
        .add_node(
            "ask",
            node_fn(move |_s, ctx: NodeContext| {
                let call = call.clone();
                async move {
                    call(ctx).await?;
                    Ok(NodeOutput::none())
                }
            }),
        )
        .set_entry("ask")
        .set_finish("ask")
        .compile()
        .unwrap()
}

#[tokio::test]
async fn streamed_replies_emit_deltas_then_the_whole_response() {
    let model =
        Arc::new(ScriptedModel::new("openai").reply("one two three", TokenUsage::new(1_000, 3)));
    let m = model.clone();
    let graph = one_call(move |ctx| {
        let m = m.clone();
        Box::pin(async move {
            ctx.chat_stream(m.as_ref(), ChatRequest::new("gpt-4o-mini").user("count"))
                .await
        })
    });
    let (out, sink) = run_with_sink(&graph, JsonState::new()).await;
    let deltas: Vec<String> = sink
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::LlmDelta { text } => Some(text),
            _ => None,
        })
        .collect();
    assert_eq!(deltas, ["one ", "two ", "three"]);
    let kinds = sink.kinds();
    let first_delta = kinds.iter().position(|k| *k == "llm.delta").unwrap();
    let response = kinds.iter().position(|k| *k == "llm.response").unwrap();
    assert!(kinds.iter().position(|k| *k == "llm.request").unwrap() < first_delta);
    assert!(first_delta < response);
    // gpt-4o-mini: 1000 × $0.15/M + 3 × $0.60/M
    assert_eq!(out.summary.cost, "0.0001518".parse::<Cost>().unwrap());
}

/// A wrapper that answers from a different provider and says so.
struct Failover {
    primary: &'static str,
    backup: ScriptedModel,
}

#[async_trait]
impl ChatModel for Failover {
    fn provider(&self) -> &str {
        self.primary
    }
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ModelError> {
        self.chat_observed(request, &flowtrace_core::model::NoopObserver)
            .await
    }
    async fn chat_observed(
        &self,
        mut request: ChatRequest,
        observer: &dyn CallObserver,
    ) -> Result<ChatResponse, ModelError> {
        observer.event(EventKind::Fallback {
            from_provider: self.primary.into(),
            from_model: request.model.clone(),
            to_provider: "anthropic".into(),
            to_model: "claude-3-5-haiku".into(),
            reason: "overloaded".into(),
        });
        request.model = "claude-3-5-haiku".into();
        let mut r = self.backup.chat(request).await?;
        r.provider = Some("anthropic".into());
        Ok(r)
    }
}

#[tokio::test]
async fn wrappers_report_through_the_context_and_are_priced_as_the_answering_provider() {
    let model = Arc::new(Failover {
        primary: "openai",
        backup: ScriptedModel::new("anthropic").reply("ok", TokenUsage::new(1_000_000, 0)),
    });
    let graph = one_call(move |ctx| {
        let m = model.clone();
        Box::pin(async move {
            ctx.chat(m.as_ref(), ChatRequest::new("gpt-4o").user("hi"))
                .await
        })
    });
    let (out, sink) = run_with_sink(&graph, JsonState::new()).await;
    assert!(sink.kinds().contains(&"fallback"));
    let fallback = sink
        .events()
        .into_iter()
        .find(|e| e.kind.name() == "fallback")
        .unwrap();
    assert_eq!(fallback.node.as_ref().map(|n| n.as_str()), Some("ask"));
    // Priced as anthropic/claude-3-5-haiku ($0.80 per M input), not gpt-4o ($2.50).
    assert_eq!(out.summary.cost, "0.8".parse::<Cost>().unwrap());
    assert_eq!(out.summary.steps[0].provider.as_deref(), Some("anthropic"));
}

/// A wrapper with its own cache: answers with `cached: true`.
struct Remembering;

#[async_trait]
impl ChatModel for Remembering {
    fn provider(&self) -> &str {
        "openai"
    }
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ModelError> {
        let mut r = ChatResponse::text(request.model, "from cache", TokenUsage::new(500, 50));
        r.cached = true;
        Ok(r)
    }
}

#[tokio::test]
async fn a_wrapper_cache_hit_costs_nothing() {
    let graph = one_call(move |ctx| {
        Box::pin(async move {
            ctx.chat(&Remembering, ChatRequest::new("gpt-4o").user("hi"))
                .await
        })
    });
    let out = graph
        .invoke(JsonState::new(), RunConfig::new())
        .await
        .unwrap();
    assert_eq!(out.summary.cost, Cost::ZERO);
    assert_eq!(out.summary.usage.total(), 0);
    assert_eq!(out.summary.steps[0].cache_hits, 1);
}

/// Records what the context reports as the remaining budget.
struct BudgetProbe(std::sync::Mutex<Option<flowtrace_core::RemainingBudget>>);

#[async_trait]
impl ChatModel for BudgetProbe {
    fn provider(&self) -> &str {
        "openai"
    }
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ModelError> {
        Ok(ChatResponse::text(
            request.model,
            "ok",
            TokenUsage::new(10, 10),
        ))
    }
    async fn chat_observed(
        &self,
        request: ChatRequest,
        observer: &dyn CallObserver,
    ) -> Result<ChatResponse, ModelError> {
        *self.0.lock().unwrap() = Some(observer.remaining_budget());
        self.chat(request).await
    }
}

#[tokio::test]
async fn model_wrappers_see_the_remaining_budget() {
    let probe = Arc::new(BudgetProbe(std::sync::Mutex::new(None)));
    let p = probe.clone();
    let graph = one_call(move |ctx| {
        let p = p.clone();
        Box::pin(async move {
            ctx.chat(
                p.as_ref(),
                ChatRequest::new("gpt-4o-mini").user("hi").max_tokens(100),
            )
            .await
        })
    });
    graph
        .invoke(
            JsonState::new(),
            RunConfig::new().budget(flowtrace_core::Budget::default().max_tokens(1_000)),
        )
        .await
        .unwrap();
    let seen = probe.0.lock().unwrap().unwrap();
    // The call's own reservation is given back: the wrapper sees the whole
    // budget that this call may use.
    assert_eq!(seen.tokens, Some(1_000));
    assert_eq!(seen.cost, None);
}
