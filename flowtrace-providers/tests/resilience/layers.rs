//! The resilience layer: circuit breakers, fallback chains and the response
//! cache, driven by deterministic fake models (time-based logic under
//! Tokio's paused clock).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flowtrace_core::pricing::{ModelPrice, PerMillion};
use flowtrace_core::testing::ScriptedModel;
use flowtrace_core::trace::{LogLevel, MemorySink};
use flowtrace_core::{
    CallObserver, ChatModel, ChatRequest, ChatResponse, ChatStream, Cost, EventKind, JsonState,
    ModelError, ModelErrorKind, NodeContext, NodeOutput, RetryPolicy, RunConfig, StreamEvent,
    TokenUsage, node_fn,
};
use flowtrace_providers::breaker::{BreakerConfig, BreakerState, Breakered, CircuitBreaker};
use flowtrace_providers::cache::{Cached, MemoryResponseCache};
use flowtrace_providers::fallback::{Candidate, FallbackChain, FallbackLayer};
use flowtrace_providers::layer::ModelStack;
use futures::StreamExt;
use tokio::time::Instant;

// ---------------------------------------------------------------- helpers

/// Records every event; prices from a small table.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<EventKind>>,
    prices: HashMap<(String, String), ModelPrice>,
}

impl Recorder {
    fn with_price(mut self, provider: &str, model: &str, price: ModelPrice) -> Self {
        self.prices
            .insert((provider.to_string(), model.to_string()), price);
        self
    }

    fn events(&self) -> Vec<EventKind> {
        self.events.lock().unwrap().clone()
    }

    fn names(&self) -> Vec<&'static str> {
        self.events().iter().map(EventKind::name).collect()
    }

    fn fallbacks(&self) -> Vec<(String, String, String, String, String)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                EventKind::Fallback {
                    from_provider,
                    from_model,
                    to_provider,
                    to_model,
                    reason,
                } => Some((from_provider, from_model, to_provider, to_model, reason)),
                _ => None,
            })
            .collect()
    }

    fn warnings(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                EventKind::Log {
                    level: LogLevel::Warn,
                    message,
                } => Some(message),
                _ => None,
            })
            .collect()
    }
}

impl CallObserver for Recorder {
    fn event(&self, kind: EventKind) {
        self.events.lock().unwrap().push(kind);
    }

    fn price(&self, provider: &str, model: &str) -> Option<ModelPrice> {
        self.prices
            .get(&(provider.to_string(), model.to_string()))
            .copied()
    }
}

/// A model whose stream yields one delta and then fails.
struct CutStream {
    calls: AtomicUsize,
}

impl CutStream {
    fn new() -> Self {
        Self {
            calls: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl ChatModel for CutStream {
    fn provider(&self) -> &str {
        "openai"
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ModelError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(ModelError::new(
            ModelErrorKind::Overloaded,
            "openai",
            request.model,
            "down",
        ))
    }

    fn chat_stream(&self, request: ChatRequest) -> ChatStream<'_> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(futures::stream::iter([
            Ok(StreamEvent::Delta("partial ".to_string())),
            Err(ModelError::new(
                ModelErrorKind::Transport,
                "openai",
                request.model,
                "connection reset",
            )),
        ]))
    }
}

fn usage() -> TokenUsage {
    TokenUsage::new(1_000, 100)
}

fn request() -> ChatRequest {
    ChatRequest::new("gpt-4o").user("hello")
}

fn price(input_micros: u64, output_micros: u64) -> ModelPrice {
    ModelPrice::new(
        PerMillion::from_microdollars(input_micros),
        PerMillion::from_microdollars(output_micros),
    )
}

fn small_breaker(threshold: u32) -> BreakerConfig {
    BreakerConfig::default()
        .failure_threshold(threshold)
        .window(Duration::from_secs(10))
        .cool_down(Duration::from_secs(30))
}

async fn collect(stream: ChatStream<'_>) -> Vec<Result<StreamEvent, ModelError>> {
    stream.collect().await
}

fn deltas(events: &[Result<StreamEvent, ModelError>]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            Ok(StreamEvent::Delta(t)) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

fn done(events: &[Result<StreamEvent, ModelError>]) -> Option<ChatResponse> {
    events.iter().find_map(|e| match e {
        Ok(StreamEvent::Done(r)) => Some(r.clone()),
        _ => None,
    })
}

// ---------------------------------------------------------------- breaker

#[tokio::test(start_paused = true)]
async fn breaker_opens_after_n_failures_within_the_window() {
    let b = Arc::new(CircuitBreaker::new("openai", "gpt-4o", small_breaker(3)));
    assert_eq!(b.state(), BreakerState::Closed);

    b.try_acquire()
        .unwrap()
        .failure(&ModelErrorKind::Overloaded);
    b.try_acquire()
        .unwrap()
        .failure(&ModelErrorKind::RateLimited { retry_after: None });
    // Those two leave the window.
    tokio::time::advance(Duration::from_secs(11)).await;
    b.try_acquire().unwrap().failure(&ModelErrorKind::Timeout);
    b.try_acquire().unwrap().failure(&ModelErrorKind::Transport);
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.counters().recent_failures, 2);
    // Auth and invalid requests say nothing about the provider's health.
    b.try_acquire().unwrap().failure(&ModelErrorKind::Auth);
    b.try_acquire()
        .unwrap()
        .failure(&ModelErrorKind::InvalidRequest);
    // Successes do not reset the window.
    b.try_acquire().unwrap().success();
    assert_eq!(b.state(), BreakerState::Closed);

    let opened_at = Instant::now();
    b.try_acquire()
        .unwrap()
        .failure(&ModelErrorKind::Overloaded);
    assert_eq!(
        b.state(),
        BreakerState::Open {
            until: opened_at + Duration::from_secs(30)
        }
    );
    let refused = b.try_acquire().unwrap_err();
    assert_eq!(refused.until, Some(opened_at + Duration::from_secs(30)));

    let c = b.counters();
    assert_eq!(c.failures, 5);
    assert_eq!(c.ignored_failures, 2);
    assert_eq!(c.successes, 1);
    assert_eq!(c.opened, 1);
    assert_eq!(c.rejected, 1);
}

#[tokio::test(start_paused = true)]
async fn breaker_half_opens_after_cool_down_and_closes_on_success() {
    let b = Arc::new(CircuitBreaker::new("openai", "gpt-4o", small_breaker(1)));
    b.try_acquire()
        .unwrap()
        .failure(&ModelErrorKind::Overloaded);
    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(matches!(b.state(), BreakerState::Open { .. }));
    assert!(b.try_acquire().is_err());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(b.state(), BreakerState::HalfOpen);

    let trial = b.try_acquire().unwrap();
    assert!(trial.is_trial());
    // One trial at a time.
    assert!(b.try_acquire().is_err());
    trial.success();
    assert_eq!(b.state(), BreakerState::Closed);
    assert!(!b.try_acquire().unwrap().is_trial());
}

#[tokio::test(start_paused = true)]
async fn breaker_reopens_on_a_failed_trial() {
    let b = Arc::new(CircuitBreaker::new("openai", "gpt-4o", small_breaker(2)));
    for _ in 0..2 {
        b.try_acquire()
            .unwrap()
            .failure(&ModelErrorKind::Overloaded);
    }
    tokio::time::advance(Duration::from_secs(30)).await;
    let trial = b.try_acquire().unwrap();
    trial.failure(&ModelErrorKind::Timeout);
    let now = Instant::now();
    assert_eq!(
        b.state(),
        BreakerState::Open {
            until: now + Duration::from_secs(30)
        }
    );
    assert_eq!(b.counters().opened, 2);
}

#[tokio::test(start_paused = true)]
async fn breakered_model_fails_fast_while_open_and_reports_it() {
    let model = Breakered::with_config(
        ScriptedModel::new("openai")
            .fail(ModelErrorKind::Overloaded)
            .fail(ModelErrorKind::Overloaded)
            .then_always("back", usage()),
        small_breaker(2),
    );
    let rec = Recorder::default();
    for _ in 0..2 {
        let e = model.chat_observed(request(), &rec).await.unwrap_err();
        assert!(e.message.contains("scripted failure"));
    }
    assert!(matches!(
        model.breaker("gpt-4o").state(),
        BreakerState::Open { .. }
    ));

    let e = model.chat_observed(request(), &rec).await.unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::Overloaded);
    assert!(e.is_retryable());
    assert!(e.message.contains("circuit open"), "{}", e.message);
    assert_eq!(model.inner().calls(), 2, "an open breaker fails fast");
    assert_eq!(rec.warnings(), ["circuit open for openai/gpt-4o"]);

    // Streams fail fast too.
    let events = collect(model.chat_stream_observed(request(), &rec)).await;
    assert!(matches!(&events[..], [Err(e)] if e.message.contains("circuit open")));
    assert_eq!(model.inner().calls(), 2);

    // Other models of the same provider have their own breaker.
    let other = model
        .chat_observed(ChatRequest::new("gpt-4o-mini").user("hi"), &rec)
        .await
        .unwrap();
    assert_eq!(other.text, "back");

    tokio::time::advance(Duration::from_secs(30)).await;
    let r = model.chat_observed(request(), &rec).await.unwrap();
    assert_eq!(r.text, "back");
    assert_eq!(model.breaker("gpt-4o").state(), BreakerState::Closed);
    assert_eq!(model.breakers().len(), 2);
}

// ---------------------------------------------------------------- fallback

fn chain(primary: Arc<dyn ChatModel>, secondary: Arc<dyn ChatModel>) -> FallbackChain {
    FallbackChain::new(Candidate::new(primary).model("gpt-4o"))
        .or(Candidate::new(secondary).model("claude-sonnet-4"))
}

#[tokio::test(start_paused = true)]
async fn falls_back_on_rate_limit_after_honouring_retry_after() {
    let limited = ModelErrorKind::RateLimited {
        retry_after: Some(Duration::from_secs(2)),
    };
    let primary = Arc::new(
        ScriptedModel::new("openai")
            .fail(limited.clone())
            .fail(limited),
    );
    let secondary = Arc::new(ScriptedModel::new("anthropic").reply("from claude", usage()));
    let chain = chain(primary.clone(), secondary.clone());
    let rec = Recorder::default();

    let started = Instant::now();
    let r = chain.chat_observed(request(), &rec).await.unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "waited Retry-After once"
    );
    assert_eq!(primary.calls(), 2, "one retry by default");
    assert_eq!(secondary.calls(), 1);
    assert_eq!(r.text, "from claude");
    assert_eq!(r.provider.as_deref(), Some("anthropic"));
    assert_eq!(r.model, "claude-sonnet-4");
    assert_eq!(secondary.requests()[0].model, "claude-sonnet-4");
    assert_eq!(
        rec.fallbacks(),
        [(
            "openai".into(),
            "gpt-4o".into(),
            "anthropic".into(),
            "claude-sonnet-4".into(),
            "rate_limited".into()
        )]
    );
    assert_eq!(chain.provider(), "openai");
    // The retry is a trace event, before the fallback.
    assert_eq!(rec.names(), ["retry", "fallback"]);
    match &rec.events()[0] {
        EventKind::Retry {
            failed_attempt,
            delay_ms,
            error,
        } => {
            assert_eq!((*failed_attempt, *delay_ms), (1, 2000));
            assert!(
                error.starts_with("openai model \"gpt-4o\" failed (rate_limited)"),
                "{error}"
            );
        }
        other => panic!("expected a retry, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_longer_than_the_cap_falls_back_at_once() {
    let primary = Arc::new(
        ScriptedModel::new("openai").fail(ModelErrorKind::RateLimited {
            retry_after: Some(Duration::from_secs(120)),
        }),
    );
    let secondary = Arc::new(ScriptedModel::new("anthropic").reply("ok", usage()));
    let chain = chain(primary.clone(), secondary.clone());
    let started = Instant::now();
    chain.chat(request()).await.unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(primary.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_chain_retries_on_core_retry_policy_and_retry_after_only_raises_the_delay() {
    // Three attempts: 100 ms, then 200 ms; a 50 ms Retry-After does not
    // shorten the schedule, a 300 ms one lengthens it.
    let primary = Arc::new(
        ScriptedModel::new("openai")
            .fail(ModelErrorKind::RateLimited {
                retry_after: Some(Duration::from_millis(50)),
            })
            .fail(ModelErrorKind::RateLimited {
                retry_after: Some(Duration::from_millis(300)),
            })
            .reply("third time", usage()),
    );
    let secondary = Arc::new(ScriptedModel::new("anthropic").reply("unused", usage()));
    let policy = RetryPolicy::new(3)
        .initial_delay(Duration::from_millis(100))
        .max_delay(Duration::from_secs(1));
    let chain = chain(primary.clone(), secondary.clone()).retry(policy.clone());
    assert_eq!(chain.get_retry(), &policy);
    let rec = Recorder::default();
    let started = Instant::now();
    let r = chain.chat_observed(request(), &rec).await.unwrap();
    assert_eq!(r.text, "third time");
    assert_eq!(started.elapsed(), Duration::from_millis(400));
    let delays: Vec<u64> = rec
        .events()
        .iter()
        .filter_map(|e| match e {
            EventKind::Retry { delay_ms, .. } => Some(*delay_ms),
            _ => None,
        })
        .collect();
    assert_eq!(delays, [100, 300]);
    assert_eq!(secondary.calls(), 0);

    // The same policy through the layer: `retries` overrides the attempts
    // and keeps the delays.
    let primary = Arc::new(
        ScriptedModel::new("openai")
            .fail(ModelErrorKind::Overloaded)
            .fail(ModelErrorKind::Overloaded),
    );
    let secondary = Arc::new(ScriptedModel::new("anthropic").reply("backup", usage()));
    let model = ModelStack::new(primary.clone()).layer(
        FallbackLayer::new(Candidate::new(secondary.clone()).model("claude-sonnet-4"))
            .retry(policy.max_attempts(2)),
    );
    let started = Instant::now();
    let r = model.chat(request()).await.unwrap();
    assert_eq!(r.text, "backup");
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert_eq!(primary.calls(), 2);
    assert_eq!(ChatModel::provider(&model), "openai");
}

#[tokio::test(start_paused = true)]
async fn falls_back_on_server_errors_and_a_retry_can_still_succeed() {
    // 500 twice → fallback.
    let primary = Arc::new(
        ScriptedModel::new("openai")
            .fail(ModelErrorKind::Overloaded)
            .fail(ModelErrorKind::Overloaded),
    );
    let secondary = Arc::new(ScriptedModel::new("anthropic").reply("ok", usage()));
    let rec = Recorder::default();
    let r = chain(primary.clone(), secondary.clone())
        .chat_observed(request(), &rec)
        .await
        .unwrap();
    assert_eq!(r.provider.as_deref(), Some("anthropic"));
    assert_eq!(rec.fallbacks()[0].4, "overloaded");

    // 500 once → the retry answers, no fallback.
    let primary = Arc::new(
        ScriptedModel::new("openai")
            .fail(ModelErrorKind::Overloaded)
            .reply("openai ok", usage()),
    );
    let secondary = Arc::new(ScriptedModel::new("anthropic").reply("ok", usage()));
    let rec = Recorder::default();
    let started = Instant::now();
    let r = chain(primary.clone(), secondary.clone())
        .chat_observed(request(), &rec)
        .await
        .unwrap();
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(500),
        "default back-off"
    );
    assert_eq!(r.text, "openai ok");
    assert_eq!(r.provider.as_deref(), Some("openai"));
    assert_eq!(r.model, "gpt-4o");
    assert_eq!(secondary.calls(), 0);
    assert!(rec.fallbacks().is_empty());
}

#[tokio::test(start_paused = true)]
async fn falls_back_on_timeouts_without_retrying() {
    // The chain's own attempt timeout.
    let slow = Arc::new(
        ScriptedModel::new("openai")
            .then_always("too late", usage())
            .with_latency(Duration::from_secs(60)),
    );
    let secondary = Arc::new(ScriptedModel::new("anthropic").reply("ok", usage()));
    let rec = Recorder::default();
    let started = Instant::now();
    let r = FallbackChain::new(Candidate::new(slow.clone()).timeout(Duration::from_secs(5)))
        .or(Candidate::new(secondary.clone()).model("claude-sonnet-4"))
        .chat_observed(request(), &rec)
        .await
        .unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(slow.calls(), 1, "a timeout is not retried");
    assert_eq!(r.provider.as_deref(), Some("anthropic"));
    let fb = &rec.fallbacks()[0];
    assert_eq!((fb.0.as_str(), fb.1.as_str()), ("openai", "gpt-4o"));
    assert_eq!(fb.4, "timeout");

    // A provider-reported timeout.
    let primary = Arc::new(ScriptedModel::new("openai").fail(ModelErrorKind::Timeout));
    let secondary = Arc::new(ScriptedModel::new("anthropic").reply("ok", usage()));
    let rec = Recorder::default();
    chain(primary.clone(), secondary)
        .chat_observed(request(), &rec)
        .await
        .unwrap();
    assert_eq!(primary.calls(), 1);
    assert_eq!(rec.fallbacks()[0].4, "timeout");
}

#[tokio::test(start_paused = true)]
async fn never_falls_back_on_auth_or_invalid_requests() {
    for kind in [
        ModelErrorKind::Auth,
        ModelErrorKind::InvalidRequest,
        ModelErrorKind::NotFound,
        ModelErrorKind::ContextLengthExceeded,
        ModelErrorKind::ContentFiltered,
    ] {
        let primary = Arc::new(ScriptedModel::new("openai").fail(kind.clone()));
        let secondary = Arc::new(ScriptedModel::new("anthropic").reply("ok", usage()));
        let rec = Recorder::default();
        let e = chain(primary.clone(), secondary.clone())
            .chat_observed(request(), &rec)
            .await
            .unwrap_err();
        assert_eq!(e.kind, kind);
        assert_eq!(e.provider, "openai");
        assert_eq!(primary.calls(), 1, "{kind}: not retried");
        assert_eq!(secondary.calls(), 0, "{kind}: no fallback");
        assert!(rec.fallbacks().is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn when_every_candidate_fails_the_last_error_is_returned() {
    let a = Arc::new(ScriptedModel::new("openai").fail(ModelErrorKind::Transport));
    let b = Arc::new(ScriptedModel::new("anthropic").fail(ModelErrorKind::Overloaded));
    let c = Arc::new(
        ScriptedModel::new("local").fail(ModelErrorKind::RateLimited { retry_after: None }),
    );
    let rec = Recorder::default();
    let e = FallbackChain::new(Candidate::new(a))
        .or(Candidate::new(b).model("claude-sonnet-4"))
        .or(Candidate::new(c).model("llama"))
        .retries(0)
        .chat_observed(request(), &rec)
        .await
        .unwrap_err();
    assert_eq!(e.provider, "local");
    assert_eq!(e.model, "llama");
    let hops: Vec<_> = rec
        .fallbacks()
        .into_iter()
        .map(|f| format!("{}/{} -> {}/{} ({})", f.0, f.1, f.2, f.3, f.4))
        .collect();
    assert_eq!(
        hops,
        [
            "openai/gpt-4o -> anthropic/claude-sonnet-4 (transport)",
            "anthropic/claude-sonnet-4 -> local/llama (overloaded)",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_skips_straight_to_the_fallback() {
    let primary = Arc::new(
        ScriptedModel::new("openai")
            .fail(ModelErrorKind::Overloaded)
            .fail(ModelErrorKind::Overloaded)
            .then_always("openai again", usage()),
    );
    let secondary = Arc::new(ScriptedModel::new("anthropic").then_always("from claude", usage()));
    let chain = FallbackChain::new(
        Candidate::new(primary.clone())
            .model("gpt-4o")
            .with_breaker(small_breaker(2)),
    )
    .or(Candidate::new(secondary.clone()).model("claude-sonnet-4"));
    let breaker = chain.candidates()[0].circuit_breaker().unwrap().clone();
    assert_eq!((breaker.provider(), breaker.model()), ("openai", "gpt-4o"));

    // The first call fails twice on the primary (opening its breaker).
    let rec = Recorder::default();
    chain.chat_observed(request(), &rec).await.unwrap();
    assert_eq!(primary.calls(), 2);
    assert!(matches!(breaker.state(), BreakerState::Open { .. }));
    assert_eq!(rec.fallbacks()[0].4, "overloaded");

    // The next goes straight to the secondary, without waiting.
    let rec = Recorder::default();
    let started = Instant::now();
    let r = chain.chat_observed(request(), &rec).await.unwrap();
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(r.provider.as_deref(), Some("anthropic"));
    assert_eq!(primary.calls(), 2, "skipped while open");
    assert_eq!(rec.names(), ["log", "fallback"]);
    assert_eq!(rec.warnings(), ["circuit open for openai/gpt-4o"]);
    assert_eq!(
        rec.fallbacks()[0],
        (
            "openai".into(),
            "gpt-4o".into(),
            "anthropic".into(),
            "claude-sonnet-4".into(),
            "circuit_open".into()
        )
    );

    // After the cool-down a trial goes to the primary, which has recovered.
    tokio::time::advance(Duration::from_secs(30)).await;
    let r = chain.chat(request()).await.unwrap();
    assert_eq!(r.text, "openai again");
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn streams_fall_back_before_the_first_token() {
    let primary = Arc::new(
        ScriptedModel::new("openai")
            .fail(ModelErrorKind::Overloaded)
            .fail(ModelErrorKind::Overloaded),
    );
    let secondary = Arc::new(ScriptedModel::new("anthropic").reply("hello from claude", usage()));
    let chain = chain(primary.clone(), secondary.clone());
    let rec = Recorder::default();
    let events = collect(chain.chat_stream_observed(request(), &rec)).await;
    assert!(events.iter().all(Result::is_ok));
    assert_eq!(deltas(&events), "hello from claude");
    let last = done(&events).unwrap();
    assert_eq!(last.provider.as_deref(), Some("anthropic"));
    assert_eq!(last.model, "claude-sonnet-4");
    assert_eq!(primary.calls(), 2);
    assert_eq!(rec.fallbacks().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn streams_do_not_fall_back_after_the_first_token() {
    let primary = Arc::new(CutStream::new());
    let secondary = Arc::new(ScriptedModel::new("anthropic").reply("never", usage()));
    let chain = chain(primary.clone(), secondary.clone());
    let rec = Recorder::default();
    let events = collect(chain.chat_stream_observed(request(), &rec)).await;
    assert_eq!(events.len(), 2);
    assert_eq!(deltas(&events), "partial ");
    let Err(e) = &events[1] else {
        panic!("expected the cut")
    };
    assert_eq!(e.kind, ModelErrorKind::Transport);
    assert_eq!(primary.calls.load(Ordering::SeqCst), 1);
    assert_eq!(secondary.calls(), 0);
    assert!(rec.fallbacks().is_empty());
}

// ---------------------------------------------------------------- cache

#[tokio::test]
async fn a_cache_hit_is_free_and_reports_the_saved_cost() {
    let model = Cached::new(
        ScriptedModel::new("openai").reply("hi there", usage()),
        Arc::new(MemoryResponseCache::new(100, Duration::from_secs(60))),
    );
    // gpt-4o-mini: $0.15 in, $0.60 out per M.
    let p = price(150_000, 600_000);
    let rec = Recorder::default().with_price("openai", "gpt-4o-mini", p);
    let req = ChatRequest::new("gpt-4o-mini").user("hello");

    let first = model.chat_observed(req.clone(), &rec).await.unwrap();
    assert!(!first.cached);
    assert!(rec.events().is_empty());

    let second = model.chat_observed(req.clone(), &rec).await.unwrap();
    assert!(second.cached);
    assert_eq!(second.text, "hi there");
    assert_eq!(second.usage, usage());
    assert_eq!(model.inner().calls(), 1);
    // 1000 × 0.15 + 100 × 0.60 per M = $0.00021
    assert_eq!(
        rec.events(),
        [EventKind::CacheHit {
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            saved_cost: "0.00021".parse::<Cost>().unwrap(),
            saved_usage: usage(),
        }]
    );
    assert_eq!(p.cost(&usage()), Ok("0.00021".parse::<Cost>().unwrap()));

    // A different request misses (and the script is used up).
    assert!(
        model
            .chat(ChatRequest::new("gpt-4o-mini").user("other"))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_identical_misses_make_one_upstream_call() {
    let model = Arc::new(Cached::in_memory(
        ScriptedModel::new("openai")
            .then_always("shared", usage())
            .with_latency(Duration::from_millis(100)),
    ));
    let calls = (0..10).map(|_| {
        let model = model.clone();
        tokio::spawn(async move { model.chat(request()).await })
    });
    let results: Vec<ChatResponse> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    assert_eq!(model.inner().calls(), 1);
    assert!(results.iter().all(|r| r.text == "shared"));
    assert_eq!(results.iter().filter(|r| !r.cached).count(), 1);
    assert_eq!(results.iter().filter(|r| r.cached).count(), 9);
}

#[tokio::test]
async fn failures_are_not_cached() {
    let model = Cached::in_memory(
        ScriptedModel::new("openai")
            .fail(ModelErrorKind::Overloaded)
            .reply("ok", usage()),
    );
    let e = model.chat(request()).await.unwrap_err();
    assert_eq!(e.kind, ModelErrorKind::Overloaded);
    let r = model.chat(request()).await.unwrap();
    assert!(!r.cached, "the failure was not stored");
    assert!(model.chat(request()).await.unwrap().cached);
    assert_eq!(model.inner().calls(), 2);
}

#[tokio::test]
async fn callers_waiting_on_a_failed_call_get_its_error_and_nothing_is_stored() {
    let model = Arc::new(Cached::in_memory(
        ScriptedModel::new("openai")
            .fail(ModelErrorKind::Overloaded)
            .then_always("ok", usage())
            .with_latency(Duration::from_millis(50)),
    ));
    let results = futures::future::join_all((0..5).map(|_| model.chat(request()))).await;
    assert_eq!(model.inner().calls(), 1);
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(e) if e.kind == ModelErrorKind::Overloaded))
    );
    assert!(!model.chat(request()).await.unwrap().cached);
    assert_eq!(model.inner().calls(), 2);
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    // moka's TTL runs on the system clock, so this test sleeps for real.
    let store = Arc::new(MemoryResponseCache::new(100, Duration::from_millis(200)));
    let model = Cached::new(
        ScriptedModel::new("openai").then_always("ok", usage()),
        store.clone(),
    );
    assert!(!model.chat(request()).await.unwrap().cached);
    assert!(model.chat(request()).await.unwrap().cached);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!model.chat(request()).await.unwrap().cached, "expired");
    assert_eq!(model.inner().calls(), 2);
    store.run_pending_tasks().await;
    assert_eq!(store.entry_count(), 1);
    store.clear();
    store.run_pending_tasks().await;
    assert_eq!(store.entry_count(), 0);
}

#[tokio::test]
async fn streams_are_recorded_when_complete_and_replayed_on_a_hit() {
    let model = Cached::in_memory(ScriptedModel::new("openai").reply("one two three", usage()));
    let rec = Recorder::default().with_price("openai", "gpt-4o", price(2_500_000, 10_000_000));

    let miss = collect(model.chat_stream_observed(request(), &rec)).await;
    assert_eq!(
        miss.iter()
            .filter(|e| matches!(e, Ok(StreamEvent::Delta(_))))
            .count(),
        3
    );
    assert!(!done(&miss).unwrap().cached);
    assert!(rec.events().is_empty());

    let hit = collect(model.chat_stream_observed(request(), &rec)).await;
    assert_eq!(hit.len(), 2, "one delta and the final message");
    assert_eq!(deltas(&hit), "one two three");
    let last = done(&hit).unwrap();
    assert!(last.cached);
    assert_eq!(last.usage, usage());
    assert_eq!(rec.names(), ["cache.hit"]);
    // A plain call shares the entry.
    assert!(model.chat(request()).await.unwrap().cached);
    assert_eq!(model.inner().calls(), 1);
}

#[tokio::test]
async fn a_stream_cut_midway_is_not_cached() {
    let model = Cached::in_memory(CutStream::new());
    for _ in 0..2 {
        let events = collect(model.chat_stream(request())).await;
        assert!(events.last().unwrap().is_err());
    }
    assert_eq!(model.inner().calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_cache_in_front_of_a_chain_records_the_answering_provider() {
    let primary = Arc::new(
        ScriptedModel::new("openai")
            .fail(ModelErrorKind::Overloaded)
            .fail(ModelErrorKind::Overloaded),
    );
    let secondary = Arc::new(ScriptedModel::new("anthropic").reply("ok", usage()));
    let model = Cached::in_memory(chain(primary, secondary.clone()));
    let rec = Recorder::default().with_price(
        "anthropic",
        "claude-sonnet-4",
        price(3_000_000, 15_000_000),
    );
    model.chat_observed(request(), &rec).await.unwrap();
    let hit = model.chat_observed(request(), &rec).await.unwrap();
    assert!(hit.cached);
    assert_eq!(hit.provider.as_deref(), Some("anthropic"));
    let Some(EventKind::CacheHit {
        provider,
        model: m,
        saved_cost,
        ..
    }) = rec.events().pop()
    else {
        panic!("expected a cache hit")
    };
    assert_eq!(
        (provider.as_str(), m.as_str()),
        ("anthropic", "claude-sonnet-4")
    );
    // 1000 × $3/M + 100 × $15/M
    assert_eq!(saved_cost, "0.0045".parse::<Cost>().unwrap());
    assert_eq!(secondary.calls(), 1);
}

// ---------------------------------------------------------------- end to end

#[tokio::test(start_paused = true)]
async fn a_run_records_the_fallback_and_prices_the_secondary() {
    let primary = Arc::new(
        ScriptedModel::new("openai")
            .fail(ModelErrorKind::Overloaded)
            .fail(ModelErrorKind::Overloaded),
    );
    let secondary =
        Arc::new(ScriptedModel::new("anthropic").reply("answer", TokenUsage::new(1_000_000, 0)));
    let chain = Arc::new(chain(primary.clone(), secondary.clone()));
    let graph = crate::support::ask_graph(
        "fallback",
        node_fn(move |_s, ctx: NodeContext| {
            let chain = chain.clone();
            async move {
                let r = ctx.chat(chain.as_ref(), request()).await?;
                assert_eq!(r.text, "answer");
                Ok(NodeOutput::none())
            }
        }),
    );
    let sink = MemorySink::new();
    let out = graph
        .invoke(JsonState::new(), RunConfig::new().sink(sink.clone()))
        .await
        .unwrap();

    let kinds = sink.kinds();
    let at = |k: &str| kinds.iter().position(|x| *x == k).unwrap();
    assert!(at("llm.request") < at("fallback"));
    assert!(at("fallback") < at("llm.response"));
    let fallback = sink
        .events()
        .into_iter()
        .find(|e| e.kind.name() == "fallback")
        .unwrap();
    assert_eq!(fallback.node.as_ref().map(|n| n.as_str()), Some("ask"));
    let EventKind::Fallback {
        to_provider,
        to_model,
        ..
    } = fallback.kind
    else {
        unreachable!()
    };
    assert_eq!(
        (to_provider.as_str(), to_model.as_str()),
        ("anthropic", "claude-sonnet-4")
    );

    let step = &out.summary.steps[0];
    assert_eq!(step.provider.as_deref(), Some("anthropic"));
    assert_eq!(step.model.as_deref(), Some("claude-sonnet-4"));
    // claude-sonnet-4: $3 per M input, not gpt-4o's $2.50.
    assert_eq!(out.summary.cost, "3".parse::<Cost>().unwrap());
    assert_eq!(primary.calls(), 2);
}
