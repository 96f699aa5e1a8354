//! The model router, driven by scripted models and a recording observer,
//! and once end to end through a run with a cost budget.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowtrace_core::model::{RemainingBudget, ToolSpec};
use flowtrace_core::pricing::{ModelPrice, PerMillion};
use flowtrace_core::testing::ScriptedModel;
use flowtrace_core::trace::MemorySink;
use flowtrace_core::{
    Budget, CallObserver, ChatModel, ChatRequest, Cost, EventKind, JsonState, ModelErrorKind,
    NodeContext, NodeOutput, PriceTable, Pricing, RunConfig, StreamEvent, TokenUsage, node_fn,
};
use flowtrace_providers::breaker::{BreakerConfig, CircuitBreaker};
use flowtrace_providers::router::{
    Capabilities, ModelRouter, Profile, ROUTER_PROVIDER, RouteCandidate, SkipReason, Weights,
};
use futures::StreamExt;
use serde_json::json;

// ---------------------------------------------------------------- helpers

fn per_million(micros: u64) -> PerMillion {
    PerMillion::from_microdollars(micros)
}

/// mini: $0.15 / $0.60; mid: $2 / $8; big: $15 / $75 per million tokens.
fn prices() -> PriceTable {
    PriceTable::new()
        .with_price(
            "openai",
            "gpt-4o-mini",
            ModelPrice::new(per_million(150_000), per_million(600_000)),
        )
        .with_price(
            "openai",
            "gpt-4.1",
            ModelPrice::new(per_million(2_000_000), per_million(8_000_000)),
        )
        .with_price(
            "anthropic",
            "claude-opus-4",
            ModelPrice::new(per_million(15_000_000), per_million(75_000_000)),
        )
}

/// Records events; prices from [`prices`]; a fixed remaining budget.
struct Recorder {
    events: Mutex<Vec<EventKind>>,
    prices: PriceTable,
    remaining: RemainingBudget,
}

impl Recorder {
    fn new() -> Self {
        Self {
            events: Mutex::new(Vec::new()),
            prices: prices(),
            remaining: RemainingBudget::default(),
        }
    }

    fn remaining(mut self, tokens: Option<u64>, cost: Option<Cost>) -> Self {
        self.remaining = RemainingBudget { tokens, cost };
        self
    }

    /// (profile, provider, model, reason, skipped) of every `model.route`.
    fn routes(&self) -> Vec<(String, String, String, String, Vec<String>)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                EventKind::ModelRoute {
                    profile,
                    provider,
                    model,
                    reason,
                    skipped,
                } => Some((
                    profile.clone(),
                    provider.clone(),
                    model.clone(),
                    reason.clone(),
                    skipped.clone(),
                )),
                _ => None,
            })
            .collect()
    }

    fn only_route(&self) -> (String, String, String, String, Vec<String>) {
        let mut routes = self.routes();
        assert_eq!(routes.len(), 1, "{routes:?}");
        routes.remove(0)
    }
}

impl CallObserver for Recorder {
    fn event(&self, kind: EventKind) {
        self.events.lock().unwrap().push(kind);
    }

    fn price(&self, provider: &str, model: &str) -> Option<ModelPrice> {
        self.prices.price(provider, model)
    }

    fn remaining_budget(&self) -> RemainingBudget {
        self.remaining
    }
}

/// Three scripted models: a quick cheap one, a middling one and a slow,
/// expensive, strong one.
struct Fixture {
    mini: Arc<ScriptedModel>,
    mid: Arc<ScriptedModel>,
    big: Arc<ScriptedModel>,
}

impl Fixture {
    fn new() -> Self {
        let model = |provider: &str, text: &str| {
            Arc::new(ScriptedModel::new(provider).then_always(text, TokenUsage::new(10, 20)))
        };
        Self {
            mini: model("openai", "from mini"),
            mid: model("openai", "from mid"),
            big: model("anthropic", "from big"),
        }
    }

    fn mini(&self) -> RouteCandidate {
        RouteCandidate::new(self.mini.clone(), "gpt-4o-mini")
            .expected_latency(Duration::from_millis(300))
            .quality(0.5)
    }

    fn mid(&self) -> RouteCandidate {
        RouteCandidate::new(self.mid.clone(), "gpt-4.1")
            .expected_latency(Duration::from_millis(800))
            .quality(0.8)
    }

    fn big(&self) -> RouteCandidate {
        RouteCandidate::new(self.big.clone(), "claude-opus-4")
            .expected_latency(Duration::from_millis(2_500))
            .quality(0.95)
    }

    fn all(&self) -> [RouteCandidate; 3] {
        [self.mini(), self.mid(), self.big()]
    }

    fn router(&self) -> ModelRouter {
        ModelRouter::new()
            .profile(Profile::fast(self.all()))
            .profile(Profile::balanced(self.all()))
            .profile(Profile::powerful(self.all()))
    }

    fn calls(&self) -> [usize; 3] {
        [self.mini.calls(), self.mid.calls(), self.big.calls()]
    }
}

fn request() -> ChatRequest {
    ChatRequest::new("auto")
        .user("Summarise this paragraph.")
        .max_tokens(100)
}

fn open_breaker(provider: &str, model: &str) -> Arc<CircuitBreaker> {
    let breaker = Arc::new(CircuitBreaker::new(
        provider,
        model,
        BreakerConfig::default().failure_threshold(1),
    ));
    breaker
        .try_acquire()
        .unwrap()
        .failure(&ModelErrorKind::Overloaded);
    breaker
}

// ---------------------------------------------------------------- profiles

#[tokio::test]
async fn fast_picks_the_low_latency_candidate() {
    let fx = Fixture::new();
    let obs = Recorder::new();
    let reply = fx.router().chat_observed(request(), &obs).await.unwrap();
    assert_eq!(reply.text, "from mini");
    assert_eq!(reply.model, "gpt-4o-mini");
    assert_eq!(reply.provider.as_deref(), Some("openai"));
    assert_eq!(fx.calls(), [1, 0, 0]);
    // The candidate got its own model name, and the rest of the request.
    let sent = &fx.mini.requests()[0];
    assert_eq!(sent.model, "gpt-4o-mini");
    assert_eq!(sent.max_tokens, Some(100));
    let (profile, provider, model, reason, skipped) = obs.only_route();
    assert_eq!(
        (profile.as_str(), provider.as_str(), model.as_str()),
        ("fast", "openai", "gpt-4o-mini")
    );
    assert!(reason.contains("of 3 qualifying"), "{reason}");
    assert!(skipped.is_empty());
}

#[tokio::test]
async fn powerful_picks_the_high_quality_candidate() {
    let fx = Fixture::new();
    let obs = Recorder::new();
    let router = fx.router().with_profile("powerful").unwrap();
    let reply = router.chat_observed(request(), &obs).await.unwrap();
    assert_eq!(reply.model, "claude-opus-4");
    assert_eq!(reply.provider.as_deref(), Some("anthropic"));
    assert_eq!(fx.calls(), [0, 0, 1]);
    assert_eq!(obs.only_route().0, "powerful");
}

#[tokio::test]
async fn balanced_weighs_latency_cost_and_quality() {
    let fx = Fixture::new();
    let obs = Recorder::new();
    let router = fx.router().use_profile("balanced").unwrap();
    // mini: fastest and cheapest but weakest; big: strongest but slow and
    // dear; mid wins on the weighted mix.
    let decision = router.route(&request(), false, &obs).unwrap();
    assert_eq!(decision.model, "gpt-4.1");
    assert_eq!(decision.index, 1);
    assert!(decision.score > 0.7 && decision.score < 0.8, "{decision:?}");
    // mid: 2 $/M over ~12 prompt tokens and 8 $/M over 100 output tokens.
    let cost = decision.estimated_cost.unwrap();
    let price = prices().price("openai", "gpt-4.1").unwrap();
    assert_eq!(
        cost,
        price
            .cost(&TokenUsage::new(decision.estimated_input_tokens, 100))
            .unwrap()
    );
    assert!(obs.routes().is_empty(), "route() is a dry run");
    assert_eq!(fx.calls(), [0, 0, 0]);

    let reply = router.chat_observed(request(), &obs).await.unwrap();
    assert_eq!(reply.text, "from mid");
    assert_eq!(fx.calls(), [0, 1, 0]);
}

#[tokio::test]
async fn a_user_defined_profile_routes_by_its_own_weights() {
    let fx = Fixture::new();
    let obs = Recorder::new();
    // Cheapest only, listed dearest first.
    let cheapest = Profile::new("cheapest")
        .weights(Weights::new(0.0, 1.0, 0.0))
        .candidates([fx.big(), fx.mid(), fx.mini()]);
    // No preference at all: list order decides.
    let first = Profile::new("first")
        .weights(Weights::new(0.0, 0.0, 0.0))
        .candidates([fx.big(), fx.mini()]);
    let router = fx
        .router()
        .profile(cheapest)
        .profile(first)
        .use_profile("cheapest")
        .unwrap();
    assert_eq!(router.active_profile().unwrap().name(), "cheapest");
    let reply = router.chat_observed(request(), &obs).await.unwrap();
    assert_eq!(reply.model, "gpt-4o-mini");
    let reply = router
        .with_profile("first")
        .unwrap()
        .chat_observed(request(), &obs)
        .await
        .unwrap();
    assert_eq!(reply.model, "claude-opus-4");
    let profiles: Vec<_> = obs.routes().into_iter().map(|r| r.0).collect();
    assert_eq!(profiles, ["cheapest", "first"]);
    assert!(router.with_profile("nope").is_err());
}

// ---------------------------------------------------------------- skipping

#[tokio::test]
async fn an_open_breaker_skips_its_candidate() {
    let fx = Fixture::new();
    let obs = Recorder::new();
    let breaker = open_breaker("openai", "gpt-4o-mini");
    let router = ModelRouter::new().profile(Profile::fast([
        fx.mini().breaker(breaker.clone()),
        fx.mid(),
        fx.big(),
    ]));
    let reply = router.chat_observed(request(), &obs).await.unwrap();
    assert_eq!(reply.model, "gpt-4.1");
    assert_eq!(fx.calls(), [0, 1, 0]);
    let (_, _, model, _, skipped) = obs.only_route();
    assert_eq!(model, "gpt-4.1");
    assert_eq!(skipped, ["openai/gpt-4o-mini: circuit open"]);
    assert_eq!(breaker.counters().rejected, 0, "state is read, not probed");
}

#[tokio::test]
async fn the_chosen_candidates_breaker_hears_the_outcome() {
    let mini = Arc::new(
        ScriptedModel::new("openai")
            .reply("ok", TokenUsage::new(1, 1))
            .fail(ModelErrorKind::Overloaded),
    );
    let breaker = Arc::new(CircuitBreaker::new(
        "openai",
        "gpt-4o-mini",
        BreakerConfig::default().failure_threshold(1),
    ));
    let router = ModelRouter::new().profile(Profile::fast([RouteCandidate::new(
        mini.clone(),
        "gpt-4o-mini",
    )
    .breaker(breaker.clone())]));
    router.chat(request()).await.unwrap();
    assert_eq!(breaker.counters().successes, 1);
    let error = router.chat(request()).await.unwrap_err();
    assert_eq!(error.kind, ModelErrorKind::Overloaded);
    assert_eq!(breaker.counters().failures, 1);
    // Now open: the only candidate is skipped and nothing is called.
    let error = router.chat(request()).await.unwrap_err();
    assert_eq!(error.kind, ModelErrorKind::InvalidRequest);
    assert!(error.message.contains("circuit open"), "{}", error.message);
    assert_eq!(mini.calls(), 2);
}

#[tokio::test]
async fn a_candidate_over_the_max_cost_per_call_is_skipped() {
    let fx = Fixture::new();
    let obs = Recorder::new();
    let cap: Cost = "0.001".parse().unwrap();
    let router = ModelRouter::new().profile(Profile::powerful(fx.all()).max_cost_per_call(cap));
    let reply = router.chat_observed(request(), &obs).await.unwrap();
    assert_eq!(reply.model, "gpt-4.1");
    let (_, _, _, _, skipped) = obs.only_route();
    assert_eq!(skipped.len(), 1);
    assert!(
        skipped[0].starts_with("anthropic/claude-opus-4: estimated cost $0.007")
            && skipped[0].ends_with("exceeds the profile's max $0.001 per call"),
        "{skipped:?}"
    );
}

#[tokio::test]
async fn a_candidate_the_remaining_budget_cannot_afford_is_skipped() {
    let fx = Fixture::new();
    let left: Cost = "0.002".parse().unwrap();
    let obs = Recorder::new().remaining(None, Some(left));
    let router = fx.router().use_profile("powerful").unwrap();
    let decision = router.route(&request(), false, &obs).unwrap();
    assert_eq!(decision.model, "gpt-4.1");
    assert_eq!(decision.skipped.len(), 1);
    assert!(matches!(
        decision.skipped[0].reason,
        SkipReason::OverBudgetCost { remaining, .. } if remaining == left
    ));
    router.chat_observed(request(), &obs).await.unwrap();
    let (_, _, model, _, skipped) = obs.only_route();
    assert_eq!(model, "gpt-4.1");
    assert!(
        skipped[0].ends_with("exceeds the run's remaining budget $0.002"),
        "{skipped:?}"
    );

    // Tokens: 100 output tokens alone exceed 50 left.
    let obs = Recorder::new().remaining(Some(50), None);
    let error = router.chat_observed(request(), &obs).await.unwrap_err();
    assert_eq!(error.kind, ModelErrorKind::InvalidRequest);
    assert_eq!(
        error
            .message
            .matches("the run's budget has 50 left")
            .count(),
        3
    );
}

#[tokio::test]
async fn tools_need_candidates_that_support_them() {
    let fx = Fixture::new();
    let obs = Recorder::new();
    let router = ModelRouter::new().profile(Profile::fast([
        fx.mini()
            .capabilities(Capabilities::ALL.tools(false).json_output(false)),
        fx.mid(),
    ]));
    let with_tool = request().tool(ToolSpec {
        name: "lookup".into(),
        description: "Looks things up.".into(),
        parameters: json!({"type": "object"}),
    });
    let reply = router.chat_observed(with_tool, &obs).await.unwrap();
    assert_eq!(reply.model, "gpt-4.1");
    assert_eq!(obs.only_route().4, ["openai/gpt-4o-mini: no tools support"]);
    // A plain request still goes to the quick one.
    let reply = router.chat(request()).await.unwrap();
    assert_eq!(reply.model, "gpt-4o-mini");
    // And JSON output is a capability too.
    let mut json_request = request();
    json_request.response_format = Some(flowtrace_core::model::ResponseFormat::JsonObject);
    let decision = router.route(&json_request, false, &obs).unwrap();
    assert_eq!(decision.model, "gpt-4.1");
}

#[tokio::test]
async fn a_context_window_too_small_is_skipped() {
    let fx = Fixture::new();
    let obs = Recorder::new();
    // ~12 prompt + 100 output tokens do not fit 100 × 0.9 usable.
    let router =
        ModelRouter::new().profile(Profile::fast([fx.mini().context_window(100), fx.mid()]));
    let reply = router.chat_observed(request(), &obs).await.unwrap();
    assert_eq!(reply.model, "gpt-4.1");
    let skipped = obs.only_route().4;
    assert_eq!(skipped.len(), 1);
    assert!(
        skipped[0].starts_with("openai/gpt-4o-mini: context too small: needs ~1")
            && skipped[0].ends_with("90 usable of 100"),
        "{skipped:?}"
    );
    // The headroom is the profile's to set: 200 tokens with none is enough.
    let roomy = ModelRouter::new()
        .profile(Profile::fast([fx.mini().context_window(120), fx.mid()]).context_headroom(0.0));
    assert_eq!(
        roomy.route(&request(), false, &obs).unwrap().model,
        "gpt-4o-mini"
    );
}

#[tokio::test]
async fn no_qualifying_candidate_is_an_invalid_request_listing_why() {
    let fx = Fixture::new();
    let obs = Recorder::new();
    let router = ModelRouter::new().profile(
        Profile::new("strict")
            .candidates([
                fx.mini().breaker(open_breaker("openai", "gpt-4o-mini")),
                fx.mid().context_window(64),
                fx.big(),
            ])
            .max_cost_per_call("0.0001".parse().unwrap()),
    );
    let error = router.chat_observed(request(), &obs).await.unwrap_err();
    assert_eq!(error.kind, ModelErrorKind::InvalidRequest);
    assert!(!error.is_retryable());
    assert_eq!(error.provider, ROUTER_PROVIDER);
    let message = &error.message;
    assert!(message.contains("routing profile \"strict\""), "{message}");
    assert!(
        message.contains("openai/gpt-4o-mini: circuit open"),
        "{message}"
    );
    assert!(
        message.contains("openai/gpt-4.1: context too small"),
        "{message}"
    );
    assert!(
        message.contains("anthropic/claude-opus-4: estimated cost"),
        "{message}"
    );
    assert_eq!(fx.calls(), [0, 0, 0]);
    assert!(obs.routes().is_empty());

    let empty = ModelRouter::new().chat(request()).await.unwrap_err();
    assert_eq!(empty.kind, ModelErrorKind::InvalidRequest);
    let no_candidates = ModelRouter::new().profile(Profile::new("none"));
    let error = no_candidates.chat(request()).await.unwrap_err();
    assert!(error.message.contains("no candidates"), "{}", error.message);
}

// ---------------------------------------------------------------- streams

#[tokio::test]
async fn streams_are_routed_too() {
    let fx = Fixture::new();
    let obs = Recorder::new();
    // The quick model cannot stream: a streamed call skips it.
    let router = ModelRouter::new().profile(Profile::fast([
        fx.mini().capabilities(Capabilities::ALL.streaming(false)),
        fx.mid(),
        fx.big(),
    ]));
    let mut stream = router.chat_stream_observed(request(), &obs);
    let mut text = String::new();
    let mut done = None;
    while let Some(item) = stream.next().await {
        match item.unwrap() {
            StreamEvent::Delta(delta) => text.push_str(&delta),
            StreamEvent::Done(response) => done = Some(response),
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(stream);
    let done = done.unwrap();
    assert_eq!(text, "from mid");
    assert_eq!(done.model, "gpt-4.1");
    assert_eq!(done.provider.as_deref(), Some("openai"));
    assert_eq!(fx.mid.requests()[0].model, "gpt-4.1");
    assert_eq!(
        obs.only_route().4,
        ["openai/gpt-4o-mini: no streaming support"]
    );
    // The same router still sends whole replies to the quick model.
    assert_eq!(router.chat(request()).await.unwrap().model, "gpt-4o-mini");

    // A stream that cannot be routed yields the error.
    let none = ModelRouter::new().profile(Profile::fast([fx
        .mini()
        .capabilities(Capabilities::TEXT_ONLY)]));
    let items: Vec<_> = none.chat_stream(request()).collect().await;
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0].as_ref().unwrap_err().kind,
        ModelErrorKind::InvalidRequest
    );
}

// ---------------------------------------------------------------- estimates

#[tokio::test]
async fn the_routers_estimate_covers_every_candidate() {
    let fx = Fixture::new();
    let router = fx.router();
    let r = request();
    let estimate = router.estimate_input_tokens(&r);
    assert_eq!(
        estimate,
        flowtrace_providers::tokens::estimate_for("anthropic", "claude-opus-4", &r)
    );
    assert!(estimate >= flowtrace_providers::tokens::estimate_for("openai", "gpt-4.1", &r));
    assert_eq!(router.provider(), ROUTER_PROVIDER);
}

// ---------------------------------------------------------------- end to end

#[tokio::test]
async fn a_run_routes_within_its_remaining_cost_budget() {
    // big answers with 100 prompt tokens: $0.0015 spent of $0.0085, leaving
    // $0.007 — less than big's ~$0.0077 estimate for the second call.
    let mini = Arc::new(ScriptedModel::new("openai").then_always("m", TokenUsage::new(10, 20)));
    let mid = Arc::new(ScriptedModel::new("openai").then_always("d", TokenUsage::new(10, 20)));
    let big = Arc::new(ScriptedModel::new("anthropic").then_always("b", TokenUsage::new(100, 0)));
    let fx = Fixture { mini, mid, big };
    let router = Arc::new(fx.router().use_profile("powerful").unwrap());
    let graph = crate::support::ask_graph(
        "routed",
        node_fn(move |_s, ctx: NodeContext| {
            let router = router.clone();
            async move {
                let first = ctx.chat(router.as_ref(), request()).await?;
                assert_eq!(first.text, "b");
                let second = ctx.chat(router.as_ref(), request()).await?;
                assert_eq!(second.text, "d");
                Ok(NodeOutput::none())
            }
        }),
    );
    let sink = MemorySink::new();
    let budget: Cost = "0.0085".parse().unwrap();
    let out = graph
        .invoke(
            JsonState::new(),
            RunConfig::new()
                .sink(sink.clone())
                .pricing(Arc::new(prices()))
                .budget(Budget::default().max_cost(budget)),
        )
        .await
        .unwrap();

    let kinds = sink.kinds();
    assert_eq!(
        kinds.iter().filter(|k| **k == "model.route").count(),
        2,
        "{kinds:?}"
    );
    let first_route = kinds.iter().position(|k| *k == "model.route").unwrap();
    let first_request = kinds.iter().position(|k| *k == "llm.request").unwrap();
    let first_response = kinds.iter().position(|k| *k == "llm.response").unwrap();
    assert!(first_request < first_route && first_route < first_response);

    let routes: Vec<_> = sink
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ModelRoute {
                profile,
                model,
                skipped,
                ..
            } => {
                assert_eq!(e.node.as_ref().map(|n| n.as_str()), Some("ask"));
                Some((profile, model, skipped))
            }
            _ => None,
        })
        .collect();
    assert_eq!(routes[0].0, "powerful");
    assert_eq!(routes[0].1, "claude-opus-4");
    assert!(routes[0].2.is_empty());
    assert_eq!(routes[1].1, "gpt-4.1");
    assert_eq!(routes[1].2.len(), 1);
    assert!(
        routes[1].2[0].starts_with("anthropic/claude-opus-4: estimated cost")
            && routes[1].2[0].ends_with("exceeds the run's remaining budget $0.007"),
        "{:?}",
        routes[1].2
    );

    // Each reply was priced as the model that answered.
    let big_cost: Cost = "0.0015".parse().unwrap();
    let mid_cost = prices()
        .price("openai", "gpt-4.1")
        .unwrap()
        .cost(&TokenUsage::new(10, 20))
        .unwrap();
    assert_eq!(out.summary.cost, big_cost + mid_cost);
    assert_eq!(out.summary.steps[0].model.as_deref(), Some("gpt-4.1"));
    assert_eq!(out.summary.steps[0].provider.as_deref(), Some("openai"));
}

#[tokio::test]
async fn a_token_budget_is_not_counted_twice_for_a_routed_call() {
    use flowtrace_core::{JsonState, NodeContext, NodeOutput, RunConfig, node_fn};
    use flowtrace_providers::router::{ModelRouter, Profile, RouteCandidate};

    let cheap = Arc::new(
        flowtrace_core::testing::ScriptedModel::new("openai")
            .then_always("ok", TokenUsage::new(20, 5)),
    );
    let router = Arc::new(ModelRouter::new().profile(Profile::fast([
        RouteCandidate::new(cheap.clone(), "gpt-4o-mini").context_window(128_000),
    ])));
    let graph = crate::support::ask_graph(
        "routed",
        node_fn(move |_s, ctx: NodeContext| {
            let router = router.clone();
            async move {
                let request = ChatRequest::new("auto").user("hi").max_tokens(100);
                ctx.chat(router.as_ref(), request).await?;
                Ok(NodeOutput::none())
            }
        }),
    );
    // The call needs a little over 100 tokens: it fits a budget of 200 once.
    let out = graph
        .invoke(
            JsonState::new(),
            RunConfig::new().budget(flowtrace_core::Budget::default().max_tokens(200)),
        )
        .await
        .unwrap_or_else(|f| panic!("{}", f.error));
    assert_eq!(out.summary.usage.total(), 25);
    assert_eq!(cheap.calls(), 1);
}
