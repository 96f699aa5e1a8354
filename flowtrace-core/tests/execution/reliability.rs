//! Reliability guarantees of the executor: retries and their delays,
//! timeouts, the run deadline, cancellation, budgets and missing prices.
//!
//! Everything time-based runs on Tokio's paused clock, so delays are exact
//! and the tests take no real time.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowtrace_core::pricing::PerMillion;
use flowtrace_core::testing::ScriptedModel;
use flowtrace_core::trace::{LogLevel, MemorySink};
use flowtrace_core::{
    Budget, BudgetBreach, CancellationToken, ChatRequest, CompiledGraph, Cost, Error, ErrorClass,
    EventKind, GraphBuilder, MissingPrice, ModelPrice, NodeConfig, NodeContext, NodeError,
    NodeOutput, PriceTable, RetryPolicy, RunConfig, RunFailure, RunStatus, StepStatus, TokenUsage,
    TraceEvent, node_fn,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::support::{Items, cost, run_with_sink};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn failure<T: std::fmt::Debug>(r: Result<T, RunFailure>) -> RunFailure {
    match r {
        Ok(out) => panic!("expected the run to fail, it succeeded: {out:?}"),
        Err(f) => f,
    }
}

fn events_of<'a>(sink: &'a MemorySink, name: &'a str) -> impl Iterator<Item = TraceEvent> + 'a {
    sink.events()
        .into_iter()
        .filter(move |e| e.kind.name() == name)
}

fn retry_delays(sink: &MemorySink) -> Vec<u64> {
    events_of(sink, "retry")
        .map(|e| match e.kind {
            EventKind::Retry { delay_ms, .. } => delay_ms,
            other => panic!("not a retry event: {other:?}"),
        })
        .collect()
}

/// Differences between consecutive instants.
fn gaps(instants: &[Instant]) -> Vec<Duration> {
    instants.windows(2).map(|w| w[1] - w[0]).collect()
}

/// A chain `n1 -> n2 -> ... -> n{len}` of nodes that each sleep `each` and
/// record that they ran (started and finished).
fn sleepy_chain(
    len: usize,
    each: Duration,
    started: Arc<Mutex<Vec<String>>>,
) -> CompiledGraph<Items> {
    let mut b = GraphBuilder::<Items>::new("sleepy");
    for i in 1..=len {
        let name = format!("n{i}");
        let started = started.clone();
        let node_name = name.clone();
        b = b.add_node(
            name.as_str(),
            node_fn(move |_s: Arc<Items>, _ctx: NodeContext| {
                let started = started.clone();
                let name = node_name.clone();
                async move {
                    started.lock().unwrap().push(name.clone());
                    tokio::time::sleep(each).await;
                    Ok(NodeOutput::update(vec![name]))
                }
            }),
        );
        if i > 1 {
            b = b.add_edge(format!("n{}", i - 1).as_str(), name.as_str());
        }
    }
    b.set_entry("n1")
        .set_finish(format!("n{len}").as_str())
        .compile()
        .unwrap()
}

/// A one-node graph running `node` with `config`.
fn single<N>(node: N, config: NodeConfig) -> CompiledGraph<Items>
where
    N: flowtrace_core::Node<Items>,
{
    GraphBuilder::<Items>::new("single")
        .add_node_with("flaky", node, config)
        .set_entry("flaky")
        .set_finish("flaky")
        .compile()
        .unwrap()
}

/// A price table pricing openai/gpt-4o-mini at `input` / `output`
/// microdollars per million tokens.
fn prices(input: u64, output: u64) -> Arc<PriceTable> {
    Arc::new(PriceTable::new().with_price(
        "openai",
        "gpt-4o-mini",
        ModelPrice::new(
            PerMillion::from_microdollars(input),
            PerMillion::from_microdollars(output),
        ),
    ))
}

/// A node calling `model` once with `request`.
fn chat_node(model: Arc<ScriptedModel>, request: ChatRequest) -> impl flowtrace_core::Node<Items> {
    node_fn(move |_s: Arc<Items>, ctx: NodeContext| {
        let model = model.clone();
        let request = request.clone();
        async move {
            let r = ctx.chat(model.as_ref(), request).await?;
            Ok(NodeOutput::update(vec![r.text]))
        }
    })
}

// ---------------------------------------------------------------------------
// 1. Retry counts and delays
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_with_exponential_delays() {
    let seen: Arc<Mutex<Vec<(u32, Instant)>>> = Arc::default();
    let node = {
        let seen = seen.clone();
        node_fn(move |_s: Arc<Items>, ctx: NodeContext| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push((ctx.attempt(), Instant::now()));
                if ctx.attempt() < 3 {
                    Err(NodeError::transient(format!(
                        "flaky attempt {}",
                        ctx.attempt()
                    )))
                } else {
                    Ok(NodeOutput::update(vec!["done".to_string()]))
                }
            }
        })
    };
    let policy = RetryPolicy::new(4)
        .initial_delay(ms(100))
        .multiplier(2.0)
        .max_delay(secs(1));
    let graph = single(node, NodeConfig::new().retry(policy));
    let sink = MemorySink::new();
    let t0 = Instant::now();
    let out = graph
        .invoke(Items::default(), RunConfig::new().sink(sink.clone()))
        .await
        .unwrap();

    assert_eq!(out.state.items, ["done"]);
    let seen = seen.lock().unwrap().clone();
    let attempts: Vec<u32> = seen.iter().map(|(a, _)| *a).collect();
    assert_eq!(
        attempts,
        [1, 2, 3],
        "ctx.attempt() must count attempts from 1"
    );
    let instants: Vec<Instant> = seen.iter().map(|(_, t)| *t).collect();
    assert_eq!(instants[0], t0, "the first attempt starts at once");
    assert_eq!(gaps(&instants), [ms(100), ms(200)]);

    assert_eq!(retry_delays(&sink), [100, 200]);
    let failed: Vec<(u32, u32)> = events_of(&sink, "retry")
        .map(|e| match e.kind {
            EventKind::Retry { failed_attempt, .. } => (e.attempt, failed_attempt),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(failed, [(1, 1), (2, 2)]);

    let step = out.summary.steps_of("flaky").next().unwrap();
    assert_eq!(step.attempts, 3);
    assert_eq!(step.status, StepStatus::Succeeded);
    assert_eq!(step.latency, ms(300), "latency includes the retry delays");
    assert_eq!(
        out.summary.node_executions, 1,
        "retries are not extra executions"
    );
    let finished: Vec<u32> = events_of(&sink, "step.finished")
        .map(|e| e.attempt)
        .collect();
    assert_eq!(finished, [3]);
    assert_eq!(Instant::now() - t0, ms(300));
}

// ---------------------------------------------------------------------------
// 2. Max delay cap and retry_after
// ---------------------------------------------------------------------------

/// A node failing transiently (with `retry_after` when given) until attempt
/// `succeed_at`, recording when each attempt started.
fn failing_until(
    succeed_at: u32,
    retry_after: Option<Duration>,
    seen: Arc<Mutex<Vec<Instant>>>,
) -> impl flowtrace_core::Node<Items> {
    node_fn(move |_s: Arc<Items>, ctx: NodeContext| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(Instant::now());
            if ctx.attempt() < succeed_at {
                let mut e = NodeError::transient("busy");
                if let Some(d) = retry_after {
                    e = e.with_retry_after(d);
                }
                Err(e)
            } else {
                Ok(NodeOutput::none())
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn retry_delays_are_capped_at_max_delay() {
    let seen: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let policy = RetryPolicy::new(5)
        .initial_delay(ms(400))
        .multiplier(2.0)
        .max_delay(secs(1));
    let graph = single(
        failing_until(5, None, seen.clone()),
        NodeConfig::new().retry(policy),
    );
    let (out, sink) = run_with_sink(&graph, Items::default()).await;

    assert_eq!(retry_delays(&sink), [400, 800, 1000, 1000]);
    assert_eq!(
        gaps(&seen.lock().unwrap()),
        [ms(400), ms(800), secs(1), secs(1)]
    );
    assert_eq!(out.summary.steps[0].attempts, 5);
}

#[tokio::test(start_paused = true)]
async fn retry_after_raises_the_next_delay() {
    // retry_after (5 s) is longer than the policy's delay and even its cap.
    let seen: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let policy = RetryPolicy::new(3)
        .initial_delay(ms(100))
        .max_delay(secs(1));
    let graph = single(
        failing_until(2, Some(secs(5)), seen.clone()),
        NodeConfig::new().retry(policy),
    );
    let (out, sink) = run_with_sink(&graph, Items::default()).await;
    assert_eq!(retry_delays(&sink), [5000]);
    assert_eq!(gaps(&seen.lock().unwrap()), [secs(5)]);
    assert_eq!(out.summary.steps[0].attempts, 2);

    // A retry_after shorter than the policy's delay does not shorten it.
    let seen: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let policy = RetryPolicy::new(3)
        .initial_delay(ms(100))
        .max_delay(secs(1));
    let graph = single(
        failing_until(2, Some(ms(10)), seen.clone()),
        NodeConfig::new().retry(policy),
    );
    let sink = MemorySink::new();
    graph
        .invoke(Items::default(), RunConfig::new().sink(sink.clone()))
        .await
        .unwrap();
    assert_eq!(retry_delays(&sink), [100]);
    assert_eq!(gaps(&seen.lock().unwrap()), [ms(100)]);
}

// ---------------------------------------------------------------------------
// 3. Permanent errors vs exhausted retries
// ---------------------------------------------------------------------------

/// A node failing with `error()` on every attempt, counting its calls.
fn always_failing(
    error: fn() -> NodeError,
    calls: Arc<AtomicU32>,
) -> impl flowtrace_core::Node<Items> {
    node_fn(move |_s: Arc<Items>, _ctx: NodeContext| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<NodeOutput<Vec<String>>, _>(error())
        }
    })
}

/// Runs `graph`, which must fail, with a memory sink attached.
async fn fail_with_sink(graph: &CompiledGraph<Items>) -> (RunFailure, MemorySink) {
    let sink = MemorySink::new();
    let f = failure(
        graph
            .invoke(Items::default(), RunConfig::new().sink(sink.clone()))
            .await,
    );
    (f, sink)
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_are_not_retried() {
    let calls = Arc::new(AtomicU32::new(0));
    let node = always_failing(|| NodeError::permanent("bad input"), calls.clone());
    let graph = single(
        node,
        NodeConfig::new().retry(RetryPolicy::new(5).initial_delay(ms(10))),
    );
    let t0 = Instant::now();
    let (f, sink) = fail_with_sink(&graph).await;

    match &f.error {
        Error::Node {
            node,
            attempts,
            error,
        } => {
            assert_eq!(node.as_str(), "flaky");
            assert_eq!(*attempts, 1);
            assert_eq!(error.class(), ErrorClass::Permanent);
            assert!(error.to_string().contains("bad input"), "{error}");
        }
        other => panic!("expected Error::Node, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(retry_delays(&sink).is_empty());
    assert_eq!(f.summary.status, RunStatus::Failed);
    assert_eq!(f.summary.steps[0].status, StepStatus::Failed);
    assert_eq!(f.summary.steps[0].attempts, 1);
    assert_eq!(Instant::now(), t0, "no retry delay was waited");
}

#[tokio::test(start_paused = true)]
async fn transient_errors_exhaust_max_attempts() {
    let calls = Arc::new(AtomicU32::new(0));
    let node = always_failing(|| NodeError::transient("still down"), calls.clone());
    let policy = RetryPolicy::new(3).initial_delay(ms(10)).multiplier(3.0);
    let graph = single(node, NodeConfig::new().retry(policy));
    let t0 = Instant::now();
    let (f, sink) = fail_with_sink(&graph).await;

    match &f.error {
        Error::Node {
            node,
            attempts,
            error,
        } => {
            assert_eq!(node.as_str(), "flaky");
            assert_eq!(*attempts, 3);
            assert!(error.is_retryable());
        }
        other => panic!("expected Error::Node, got {other:?}"),
    }
    assert_eq!(f.error.kind(), "node");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(retry_delays(&sink), [10, 30]);
    assert_eq!(f.summary.steps[0].attempts, 3);
    assert_eq!(f.summary.steps[0].status, StepStatus::Failed);
    assert_eq!(Instant::now() - t0, ms(40));
}

#[tokio::test(start_paused = true)]
async fn run_default_retry_policy_applies_to_nodes_without_one() {
    let seen: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let graph = single(failing_until(3, None, seen.clone()), NodeConfig::new());
    let config = RunConfig::new().retry(RetryPolicy::new(3).initial_delay(ms(50)));
    let out = graph.invoke(Items::default(), config).await.unwrap();
    assert_eq!(out.summary.steps[0].attempts, 3);
    assert_eq!(gaps(&seen.lock().unwrap()), [ms(50), ms(100)]);

    // Without any policy, a transient failure is not retried.
    let seen: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let graph = single(failing_until(3, None, seen.clone()), NodeConfig::new());
    let f = failure(graph.invoke(Items::default(), RunConfig::new()).await);
    assert!(
        matches!(f.error, Error::Node { attempts: 1, .. }),
        "{:?}",
        f.error
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------
// 4. Per-node timeouts
// ---------------------------------------------------------------------------

/// A node that sleeps `sleep` on attempts below `fast_from`, and returns at
/// once from then on.
fn slow_until(
    fast_from: u32,
    sleep: Duration,
    calls: Arc<AtomicU32>,
) -> impl flowtrace_core::Node<Items> {
    node_fn(move |_s: Arc<Items>, ctx: NodeContext| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            if ctx.attempt() < fast_from {
                tokio::time::sleep(sleep).await;
            }
            Ok(NodeOutput::update(vec![format!(
                "attempt {}",
                ctx.attempt()
            )]))
        }
    })
}

#[tokio::test(start_paused = true)]
async fn node_timeout_fails_the_attempt() {
    let calls = Arc::new(AtomicU32::new(0));
    let graph = single(
        slow_until(u32::MAX, secs(10), calls.clone()),
        NodeConfig::new().timeout(secs(1)),
    );
    let t0 = Instant::now();
    let f = failure(graph.invoke(Items::default(), RunConfig::new()).await);
    match &f.error {
        Error::Timeout {
            node,
            after,
            attempts,
        } => {
            assert_eq!(node.as_str(), "flaky");
            assert_eq!(*after, secs(1));
            assert_eq!(*attempts, 1);
        }
        other => panic!("expected Error::Timeout, got {other:?}"),
    }
    assert_eq!(
        Instant::now() - t0,
        secs(1),
        "the attempt was stopped at its timeout, not after 10s"
    );
    assert_eq!(f.summary.steps[0].status, StepStatus::Failed);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn run_default_node_timeout_applies() {
    let calls = Arc::new(AtomicU32::new(0));
    let graph = single(
        slow_until(u32::MAX, secs(10), calls.clone()),
        NodeConfig::new(),
    );
    let t0 = Instant::now();
    let f = failure(
        graph
            .invoke(Items::default(), RunConfig::new().node_timeout(ms(250)))
            .await,
    );
    assert!(
        matches!(&f.error, Error::Timeout { after, attempts: 1, .. } if *after == ms(250)),
        "{:?}",
        f.error
    );
    assert_eq!(Instant::now() - t0, ms(250));
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_retried_by_the_retry_policy() {
    // Always too slow: three attempts, each cut at 1 s, with 100 + 200 ms between.
    let calls = Arc::new(AtomicU32::new(0));
    let policy = RetryPolicy::new(3).initial_delay(ms(100));
    let graph = single(
        slow_until(u32::MAX, secs(10), calls.clone()),
        NodeConfig::new().timeout(secs(1)).retry(policy.clone()),
    );
    let t0 = Instant::now();
    let (f, sink) = fail_with_sink(&graph).await;
    assert!(
        matches!(&f.error, Error::Timeout { after, attempts: 3, .. } if *after == secs(1)),
        "{:?}",
        f.error
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(retry_delays(&sink), [100, 200]);
    assert_eq!(Instant::now() - t0, ms(3300));

    // Slow only the first time: the retry succeeds.
    let calls = Arc::new(AtomicU32::new(0));
    let graph = single(
        slow_until(2, secs(10), calls.clone()),
        NodeConfig::new().timeout(secs(1)).retry(policy.clone()),
    );
    let t0 = Instant::now();
    let out = graph
        .invoke(Items::default(), RunConfig::new())
        .await
        .unwrap();
    assert_eq!(out.state.items, ["attempt 2"]);
    assert_eq!(out.summary.steps[0].attempts, 2);
    assert_eq!(Instant::now() - t0, ms(1100));

    // retry_timeouts(false): the first timeout is final.
    let calls = Arc::new(AtomicU32::new(0));
    let graph = single(
        slow_until(2, secs(10), calls.clone()),
        NodeConfig::new()
            .timeout(secs(1))
            .retry(policy.retry_timeouts(false)),
    );
    let t0 = Instant::now();
    let f = failure(graph.invoke(Items::default(), RunConfig::new()).await);
    assert!(
        matches!(f.error, Error::Timeout { attempts: 1, .. }),
        "{:?}",
        f.error
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(Instant::now() - t0, secs(1));
}

// ---------------------------------------------------------------------------
// 5. Run deadline
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn run_deadline_stops_a_long_chain() {
    let started: Arc<Mutex<Vec<String>>> = Arc::default();
    let graph = sleepy_chain(10, secs(1), started.clone());
    let sink = MemorySink::new();
    let t0 = Instant::now();
    let config = RunConfig::new().timeout(ms(3500)).sink(sink.clone());
    let f = failure(graph.invoke(Items::default(), config).await);

    match &f.error {
        Error::DeadlineExceeded { elapsed, node } => {
            assert_eq!(*elapsed, ms(3500));
            assert_eq!(node.as_ref().map(|n| n.as_str()), Some("n4"));
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert_eq!(
        Instant::now() - t0,
        ms(3500),
        "the run stopped at its deadline, not after 10s"
    );
    assert_eq!(*started.lock().unwrap(), ["n1", "n2", "n3", "n4"]);
    let statuses: Vec<(String, StepStatus)> = f
        .summary
        .steps
        .iter()
        .map(|s| (s.node.to_string(), s.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("n1".to_string(), StepStatus::Succeeded),
            ("n2".to_string(), StepStatus::Succeeded),
            ("n3".to_string(), StepStatus::Succeeded),
            ("n4".to_string(), StepStatus::Canceled),
        ]
    );
    assert_eq!(f.summary.status, RunStatus::Failed);
    assert_eq!(f.error.kind(), "deadline_exceeded");
    assert_eq!(sink.kinds().last(), Some(&"run.finished"));
}

#[tokio::test(start_paused = true)]
async fn run_deadline_interrupts_a_retry_backoff() {
    let seen: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let policy = RetryPolicy::new(5)
        .initial_delay(secs(10))
        .max_delay(secs(60));
    let graph = single(
        failing_until(u32::MAX, None, seen.clone()),
        NodeConfig::new().retry(policy),
    );
    let sink = MemorySink::new();
    let t0 = Instant::now();
    let f = failure(
        graph
            .invoke(
                Items::default(),
                RunConfig::new().timeout(secs(2)).sink(sink.clone()),
            )
            .await,
    );

    match &f.error {
        Error::DeadlineExceeded { elapsed, node } => {
            assert_eq!(*elapsed, secs(2));
            assert_eq!(node.as_ref().map(|n| n.as_str()), Some("flaky"));
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert_eq!(
        Instant::now() - t0,
        secs(2),
        "the 10s backoff was cut at the deadline"
    );
    assert_eq!(seen.lock().unwrap().len(), 1, "no second attempt");
    assert_eq!(retry_delays(&sink), [10_000]);
    assert_eq!(f.summary.steps[0].attempts, 1);
}

/// One node sleeping `nap`.
fn napper(nap: Duration) -> CompiledGraph<Items> {
    GraphBuilder::<Items>::new("nap")
        .add_node(
            "nap",
            node_fn(move |_s: Arc<Items>, _ctx: NodeContext| async move {
                tokio::time::sleep(nap).await;
                Ok(NodeOutput::update(vec!["nap".to_string()]))
            }),
        )
        .set_entry("nap")
        .set_finish("nap")
        .compile()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn run_timeout_counts_from_each_run_start_not_from_the_config() {
    let config = RunConfig::new().timeout(secs(1));
    // The config sits unused for longer than its timeout.
    tokio::time::advance(secs(5)).await;

    let out = napper(ms(500))
        .invoke(Items::default(), config.clone())
        .await
        .expect("a 500ms run fits a 1s timeout that starts with the run");
    assert_eq!(out.summary.status, RunStatus::Succeeded);

    let t0 = Instant::now();
    let f = failure(napper(secs(2)).invoke(Items::default(), config).await);
    match &f.error {
        Error::DeadlineExceeded { elapsed, node } => {
            assert_eq!(*elapsed, secs(1));
            assert_eq!(node.as_ref().map(|n| n.as_str()), Some("nap"));
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert_eq!(Instant::now() - t0, secs(1), "stopped one second in");
}

#[tokio::test(start_paused = true)]
async fn run_deadline_and_timeout_the_earlier_wins() {
    // An absolute deadline earlier than the timeout.
    let t0 = Instant::now();
    let config = RunConfig::new().timeout(secs(10)).deadline(t0 + secs(1));
    let f = failure(napper(secs(5)).invoke(Items::default(), config).await);
    assert_eq!(f.error.kind(), "deadline_exceeded");
    assert_eq!(Instant::now() - t0, secs(1));

    // A timeout earlier than the absolute deadline.
    let t1 = Instant::now();
    let config = RunConfig::new().deadline(t1 + secs(10)).timeout(secs(2));
    let f = failure(napper(secs(5)).invoke(Items::default(), config).await);
    assert_eq!(f.error.kind(), "deadline_exceeded");
    assert_eq!(Instant::now() - t1, secs(2));

    // An absolute deadline keeps its instant: once passed, runs fail at once.
    let config = RunConfig::new().deadline(Instant::now() + secs(1));
    tokio::time::advance(secs(5)).await;
    let f = failure(napper(ms(1)).invoke(Items::default(), config).await);
    assert_eq!(f.error.kind(), "deadline_exceeded");

    // A timeout too long for an instant means no deadline.
    let out = napper(secs(5))
        .invoke(Items::default(), RunConfig::new().timeout(Duration::MAX))
        .await
        .unwrap();
    assert_eq!(out.summary.status, RunStatus::Succeeded);
}

#[tokio::test(start_paused = true)]
async fn a_started_run_counts_its_timeout_from_start() {
    let config = RunConfig::new().timeout(secs(1));
    tokio::time::advance(secs(5)).await;
    let handle = napper(ms(500)).stream(Items::default(), config.clone());
    let out = handle
        .wait()
        .await
        .expect("the timeout starts with the run");
    assert_eq!(out.summary.status, RunStatus::Succeeded);
    let handle = napper(secs(2)).stream(Items::default(), config);
    assert_eq!(
        failure(handle.wait().await).error.kind(),
        "deadline_exceeded"
    );
}

// ---------------------------------------------------------------------------
// 6. Cancellation
// ---------------------------------------------------------------------------

/// `a` (signals `began`, then sleeps an hour) -> `b` (sets `b_ran`).
fn cancelable_graph(began: Arc<Notify>, b_ran: Arc<AtomicBool>) -> CompiledGraph<Items> {
    GraphBuilder::<Items>::new("cancelable")
        .add_node(
            "a",
            node_fn(move |_s: Arc<Items>, _ctx: NodeContext| {
                let began = began.clone();
                async move {
                    began.notify_one();
                    tokio::time::sleep(secs(3600)).await;
                    Ok(NodeOutput::update(vec!["a".to_string()]))
                }
            }),
        )
        .add_node(
            "b",
            node_fn(move |_s: Arc<Items>, _ctx: NodeContext| {
                let b_ran = b_ran.clone();
                async move {
                    b_ran.store(true, Ordering::SeqCst);
                    Ok(NodeOutput::update(vec!["b".to_string()]))
                }
            }),
        )
        .set_entry("a")
        .add_edge("a", "b")
        .set_finish("b")
        .compile()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn cancel_through_the_handle_stops_the_running_node() {
    let began = Arc::new(Notify::new());
    let b_ran = Arc::new(AtomicBool::new(false));
    let graph = cancelable_graph(began.clone(), b_ran.clone());
    let sink = MemorySink::new();
    let t0 = Instant::now();
    let handle = graph.stream(Items::default(), RunConfig::new().sink(sink.clone()));
    began.notified().await;
    assert!(!handle.is_canceled());
    handle.cancel();
    assert!(handle.is_canceled());
    let f = failure(handle.wait().await);

    match &f.error {
        Error::Canceled { node } => assert_eq!(node.as_ref().map(|n| n.as_str()), Some("a")),
        other => panic!("expected Error::Canceled, got {other:?}"),
    }
    assert_eq!(f.summary.status, RunStatus::Canceled);
    assert_eq!(f.summary.steps.len(), 1);
    assert_eq!(f.summary.steps[0].node.as_str(), "a");
    assert_eq!(f.summary.steps[0].status, StepStatus::Canceled);
    assert!(!b_ran.load(Ordering::SeqCst), "b must never run");
    assert!(
        Instant::now() - t0 < secs(1),
        "the hour-long sleep was abandoned"
    );

    let finished = events_of(&sink, "run.finished").next().unwrap();
    assert!(
        matches!(
            finished.kind,
            EventKind::RunFinished {
                status: RunStatus::Canceled,
                ..
            }
        ),
        "{finished:?}"
    );
    let step_finished = events_of(&sink, "step.finished").next().unwrap();
    assert!(
        matches!(
            step_finished.kind,
            EventKind::StepFinished {
                status: StepStatus::Canceled,
                ..
            }
        ),
        "{step_finished:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn cancel_through_a_config_token() {
    let began = Arc::new(Notify::new());
    let b_ran = Arc::new(AtomicBool::new(false));
    let graph = cancelable_graph(began, b_ran.clone());
    let token = CancellationToken::new();
    let canceler = {
        let token = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(secs(5)).await;
            token.cancel();
        })
    };
    let t0 = Instant::now();
    let f = failure(
        graph
            .invoke(Items::default(), RunConfig::new().cancellation_token(token))
            .await,
    );
    canceler.await.unwrap();

    assert!(
        matches!(&f.error, Error::Canceled { node: Some(n) } if n.as_str() == "a"),
        "{:?}",
        f.error
    );
    assert_eq!(f.error.kind(), "canceled");
    assert_eq!(f.summary.status, RunStatus::Canceled);
    assert_eq!(f.summary.steps[0].status, StepStatus::Canceled);
    assert!(!b_ran.load(Ordering::SeqCst));
    assert_eq!(Instant::now() - t0, secs(5));
}

#[tokio::test(start_paused = true)]
async fn a_token_canceled_before_the_run_runs_nothing() {
    let began = Arc::new(Notify::new());
    let b_ran = Arc::new(AtomicBool::new(false));
    let graph = cancelable_graph(began, b_ran.clone());
    let token = CancellationToken::new();
    token.cancel();
    let f = failure(
        graph
            .invoke(Items::default(), RunConfig::new().cancellation_token(token))
            .await,
    );
    assert!(
        matches!(f.error, Error::Canceled { node: None }),
        "{:?}",
        f.error
    );
    assert_eq!(f.summary.status, RunStatus::Canceled);
    assert!(f.summary.steps.is_empty());
    assert!(!b_ran.load(Ordering::SeqCst));
}

// ---------------------------------------------------------------------------
// 7. Budgets
// ---------------------------------------------------------------------------

fn budget_event(sink: &MemorySink) -> (TraceEvent, String, String, String, bool) {
    let mut found = events_of(sink, "budget.exceeded");
    let e = found.next().expect("a budget.exceeded event");
    assert!(found.next().is_none(), "exactly one budget.exceeded event");
    match e.kind.clone() {
        EventKind::BudgetExceeded {
            limit,
            limit_value,
            observed,
            refused_before_run,
        } => (e, limit, limit_value, observed, refused_before_run),
        other => panic!("not a budget event: {other:?}"),
    }
}

fn budget_error(f: &RunFailure) -> &flowtrace_core::BudgetExceeded {
    match &f.error {
        Error::BudgetExceeded(b) => b,
        other => panic!("expected BudgetExceeded, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn max_node_executions_is_enforced_before_running() {
    let started: Arc<Mutex<Vec<String>>> = Arc::default();
    let graph = sleepy_chain(5, ms(1), started.clone());
    let sink = MemorySink::new();
    let config = RunConfig::new()
        .budget(Budget::default().max_node_executions(3))
        .sink(sink.clone());
    let f = failure(graph.invoke(Items::default(), config).await);

    let b = budget_error(&f);
    assert_eq!(
        b.breach,
        BudgetBreach::NodeExecutions {
            limit: 3,
            observed: 4
        }
    );
    assert_eq!(b.node.as_ref().map(|n| n.as_str()), Some("n4"));
    assert!(b.refused_before_run);
    assert_eq!(f.error.kind(), "budget_exceeded");
    assert_eq!(*started.lock().unwrap(), ["n1", "n2", "n3"]);
    assert_eq!(f.summary.node_executions, 3);
    assert_eq!(f.summary.status, RunStatus::Failed);

    let (event, limit, value, observed, refused) = budget_event(&sink);
    assert_eq!(limit, "max_node_executions");
    assert_eq!(value, "3");
    assert_eq!(observed, "4");
    assert!(refused);
    assert_eq!(event.node.as_ref().map(|n| n.as_str()), Some("n4"));
    assert_eq!(sink.kinds().last(), Some(&"run.finished"));
}

#[tokio::test(start_paused = true)]
async fn max_node_executions_counts_a_fan_out_before_it_runs() {
    let ran = Arc::new(AtomicU32::new(0));
    let mut b = GraphBuilder::<Items>::new("fan")
        .add_node(
            "start",
            node_fn(|_s: Arc<Items>, _ctx| async { Ok(NodeOutput::none()) }),
        )
        .set_entry("start");
    for i in 0..5 {
        let ran = ran.clone();
        let id = format!("w{i}");
        b = b
            .add_node(
                id.as_str(),
                node_fn(move |_s: Arc<Items>, _ctx| {
                    let ran = ran.clone();
                    async move {
                        ran.fetch_add(1, Ordering::SeqCst);
                        Ok(NodeOutput::none())
                    }
                }),
            )
            .add_edge("start", id.as_str())
            .set_finish(id.as_str());
    }
    let graph = b.compile().unwrap();
    let config = RunConfig::new()
        .parallel(8)
        .budget(Budget::default().max_node_executions(3));
    let f = failure(graph.invoke(Items::default(), config).await);
    let b = budget_error(&f);
    assert_eq!(
        b.breach,
        BudgetBreach::NodeExecutions {
            limit: 3,
            observed: 6
        }
    );
    // start is execution 1, w0 is 2, w1 is 3: w2 is the first one over.
    assert_eq!(b.node.as_ref().map(|n| n.as_str()), Some("w2"));
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "the whole super-step was refused"
    );
}

#[tokio::test(start_paused = true)]
async fn max_tokens_refuses_a_call_whose_estimate_does_not_fit() {
    let model = Arc::new(
        ScriptedModel::new("openai")
            .reply("first", TokenUsage::new(600, 100))
            .reply("second", TokenUsage::new(1, 1)),
    );
    let first = ChatRequest::new("gpt-4o-mini").user("hi").max_tokens(100);
    let second = ChatRequest::new("gpt-4o-mini").user("hi").max_tokens(400);
    let estimate = second.approx_input_tokens() + 400;
    assert!(estimate < 1000, "the call would fit an empty budget");
    let graph = GraphBuilder::<Items>::new("tokens")
        .add_node("a", chat_node(model.clone(), first))
        .add_node("b", chat_node(model.clone(), second))
        .set_entry("a")
        .add_edge("a", "b")
        .set_finish("b")
        .compile()
        .unwrap();
    let sink = MemorySink::new();
    let config = RunConfig::new()
        .budget(Budget::default().max_tokens(1000))
        .sink(sink.clone());
    let f = failure(graph.invoke(Items::default(), config).await);

    let b = budget_error(&f);
    assert_eq!(
        b.breach,
        BudgetBreach::Tokens {
            limit: 1000,
            observed: 700 + estimate
        }
    );
    assert_eq!(b.node.as_ref().map(|n| n.as_str()), Some("b"));
    assert!(b.refused_before_run);
    assert_eq!(model.calls(), 1, "the second call was never sent");
    assert_eq!(events_of(&sink, "llm.request").count(), 1);
    assert_eq!(f.summary.usage, TokenUsage::new(600, 100));
    assert_eq!(
        f.summary.steps_of("b").next().unwrap().status,
        StepStatus::Failed
    );
    assert_eq!(
        f.summary.steps_of("b").next().unwrap().attempts,
        1,
        "budget errors are not retried"
    );

    let (_, limit, value, observed, refused) = budget_event(&sink);
    assert_eq!(limit, "max_tokens");
    assert_eq!(value, "1000");
    assert_eq!(observed, (700 + estimate).to_string());
    assert!(refused);
}

#[tokio::test(start_paused = true)]
async fn max_tokens_overspend_is_detected_after_the_call() {
    // The estimate (prompt + 100) fits, but the model reports 700 tokens.
    let model = Arc::new(ScriptedModel::new("openai").reply("long", TokenUsage::new(600, 100)));
    let request = ChatRequest::new("gpt-4o-mini").user("hi").max_tokens(100);
    let graph = GraphBuilder::<Items>::new("overspend")
        .add_node("a", chat_node(model.clone(), request))
        .set_entry("a")
        .set_finish("a")
        .compile()
        .unwrap();
    let sink = MemorySink::new();
    let config = RunConfig::new()
        .budget(Budget::default().max_tokens(500))
        .sink(sink.clone())
        .retry(RetryPolicy::new(3));
    let f = failure(graph.invoke(Items::default(), config).await);
    let b = budget_error(&f);
    assert_eq!(
        b.breach,
        BudgetBreach::Tokens {
            limit: 500,
            observed: 700
        }
    );
    assert!(!b.refused_before_run);
    assert_eq!(model.calls(), 1);
    assert_eq!(
        f.summary.usage,
        TokenUsage::new(600, 100),
        "the spend is still reported"
    );
    assert_eq!(events_of(&sink, "llm.response").count(), 1);
}

#[tokio::test(start_paused = true)]
async fn max_cost_refuses_a_call_whose_worst_case_does_not_fit() {
    // $1 / $2 per million tokens: 1 µ$ per input token, 2 µ$ per output token.
    let pricing = prices(1_000_000, 2_000_000);
    let model = Arc::new(
        ScriptedModel::new("openai")
            .reply("first", TokenUsage::new(300, 100))
            .reply("second", TokenUsage::new(1, 1)),
    );
    let first = ChatRequest::new("gpt-4o-mini").user("hi").max_tokens(100);
    let second = ChatRequest::new("gpt-4o-mini").user("hi").max_tokens(300);
    let first_cost = Cost::from_microdollars(300 + 2 * 100);
    let second_worst = Cost::from_microdollars(second.approx_input_tokens() + 2 * 300);
    let cap = cost("0.001");
    assert!(second_worst < cap, "the call would fit an empty budget");
    assert!(first_cost + second_worst > cap);

    let graph = GraphBuilder::<Items>::new("cost")
        .add_node("a", chat_node(model.clone(), first))
        .add_node("b", chat_node(model.clone(), second))
        .set_entry("a")
        .add_edge("a", "b")
        .set_finish("b")
        .compile()
        .unwrap();
    let sink = MemorySink::new();
    let config = RunConfig::new()
        .pricing(pricing)
        .budget(Budget::default().max_cost(cap))
        .sink(sink.clone());
    let f = failure(graph.invoke(Items::default(), config).await);

    let b = budget_error(&f);
    assert_eq!(
        b.breach,
        BudgetBreach::Cost {
            limit: cap,
            observed: first_cost + second_worst
        }
    );
    assert_eq!(b.node.as_ref().map(|n| n.as_str()), Some("b"));
    assert!(b.refused_before_run);
    assert_eq!(model.calls(), 1, "the refused call was never sent");
    assert_eq!(f.summary.cost, first_cost);
    assert!(f.summary.cost <= cap);

    let (_, limit, value, observed, refused) = budget_event(&sink);
    assert_eq!(limit, "max_cost");
    assert_eq!(value, "0.001");
    assert_eq!(observed, (first_cost + second_worst).to_decimal_string());
    assert!(refused);
}

#[tokio::test(start_paused = true)]
async fn max_duration_stops_the_run() {
    let started: Arc<Mutex<Vec<String>>> = Arc::default();
    let graph = sleepy_chain(5, secs(1), started.clone());
    let sink = MemorySink::new();
    let t0 = Instant::now();
    let config = RunConfig::new()
        .budget(Budget::default().max_duration(ms(2500)))
        .sink(sink.clone());
    let f = failure(graph.invoke(Items::default(), config).await);

    let b = budget_error(&f);
    assert_eq!(
        b.breach,
        BudgetBreach::Duration {
            limit: ms(2500),
            observed: ms(2500)
        }
    );
    assert_eq!(b.node.as_ref().map(|n| n.as_str()), Some("n3"));
    assert_eq!(Instant::now() - t0, ms(2500));
    assert_eq!(*started.lock().unwrap(), ["n1", "n2", "n3"]);
    assert_eq!(
        f.summary.steps_of("n3").next().unwrap().status,
        StepStatus::Canceled
    );
    let (_, limit, _, _, _) = budget_event(&sink);
    assert_eq!(limit, "max_duration");
}

// ---------------------------------------------------------------------------
// 8. Parallel fan-out never overshoots a cost cap
// ---------------------------------------------------------------------------

/// `start` -> w0..w9 (each with `config`, running `worker`) -> `join`.
fn fan_out<F>(config: NodeConfig, worker: F) -> CompiledGraph<Items>
where
    F: Fn(usize) -> Arc<dyn flowtrace_core::Node<Items>>,
{
    let mut b = GraphBuilder::<Items>::new("fan-out")
        .add_node(
            "start",
            node_fn(|_s: Arc<Items>, _ctx| async { Ok(NodeOutput::none()) }),
        )
        .add_node(
            "join",
            node_fn(|_s: Arc<Items>, _ctx| async { Ok(NodeOutput::none()) }),
        )
        .set_entry("start")
        .set_finish("join");
    for i in 0..10 {
        let id = format!("w{i}");
        b = b
            .add_shared_node(id.as_str(), worker(i), config.clone())
            .add_edge("start", id.as_str())
            .add_edge(id.as_str(), "join");
    }
    b.compile().unwrap()
}

/// A fan-out of workers estimated at $0.10 each that count their runs.
fn counting_fan_out(ran: Arc<AtomicU32>) -> CompiledGraph<Items> {
    fan_out(NodeConfig::new().estimated_cost(cost("0.10")), move |_| {
        let ran = ran.clone();
        Arc::new(node_fn(move |_s: Arc<Items>, _ctx| {
            let ran = ran.clone();
            async move {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok(NodeOutput::none())
            }
        }))
    })
}

#[tokio::test(start_paused = true)]
async fn node_estimates_are_reserved_before_a_fan_out_is_dispatched() {
    let ran = Arc::new(AtomicU32::new(0));
    let graph = counting_fan_out(ran.clone());
    let sink = MemorySink::new();
    let config = RunConfig::new()
        .parallel(10)
        .budget(Budget::default().max_cost(cost("0.35")))
        .sink(sink.clone());
    let f = failure(graph.invoke(Items::default(), config).await);

    let b = budget_error(&f);
    assert_eq!(
        b.breach,
        BudgetBreach::Cost {
            limit: cost("0.35"),
            observed: cost("0.40")
        }
    );
    assert_eq!(b.node.as_ref().map(|n| n.as_str()), Some("w3"));
    assert!(b.refused_before_run);
    assert_eq!(ran.load(Ordering::SeqCst), 0, "no worker ran");
    assert!(f.summary.steps.iter().all(|s| s.node.as_str() == "start"));
    assert_eq!(events_of(&sink, "step.started").count(), 1);
    let (_, limit, value, observed, refused) = budget_event(&sink);
    assert_eq!(
        (limit.as_str(), value.as_str(), observed.as_str(), refused),
        ("max_cost", "0.35", "0.4", true)
    );
}

#[tokio::test(start_paused = true)]
async fn node_estimates_within_the_cap_let_the_fan_out_run() {
    // Control for the test above: with room for all ten estimates, all run.
    let ran = Arc::new(AtomicU32::new(0));
    let graph = counting_fan_out(ran.clone());
    let config = RunConfig::new()
        .parallel(10)
        .budget(Budget::default().max_cost(cost("1.00")));
    let out = graph.invoke(Items::default(), config).await.unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 10);
    assert_eq!(out.summary.node_executions, 12);
}

/// Ten parallel workers each calling `model` once with a request whose worst
/// case is 100 µ$ (at 1 µ$ per token), under a cap of 350 µ$.
async fn fan_out_chats(model: Arc<ScriptedModel>) -> (RunFailure, MemorySink, Cost) {
    let request = ChatRequest::new("gpt-4o-mini").user("w");
    let max_tokens = 100 - request.approx_input_tokens();
    let request = request.max_tokens(max_tokens as u32);
    let graph = fan_out(NodeConfig::new(), move |_| {
        Arc::new(chat_node(model.clone(), request.clone()))
    });
    let cap = Cost::from_microdollars(350);
    let sink = MemorySink::new();
    let config = RunConfig::new()
        .parallel(10)
        .pricing(prices(1_000_000, 1_000_000))
        .budget(Budget::default().max_cost(cap))
        .sink(sink.clone());
    let f = failure(graph.invoke(Items::default(), config).await);
    (f, sink, cap)
}

fn settled_costs(sink: &MemorySink) -> Cost {
    events_of(sink, "llm.response")
        .map(|e| match e.kind {
            EventKind::LlmResponse { cost, .. } => cost,
            _ => unreachable!(),
        })
        .sum()
}

#[tokio::test(start_paused = true)]
async fn concurrent_model_calls_never_overshoot_the_cost_cap() {
    // Every call is in flight (1 s latency) when the next one asks for room:
    // only three worst cases (300 µ$) fit under 350 µ$.
    let model = Arc::new(
        ScriptedModel::new("openai")
            .then_always("ok", TokenUsage::new(9, 80))
            .with_latency(secs(1)),
    );
    let (f, sink, cap) = fan_out_chats(model.clone()).await;
    let b = budget_error(&f);
    assert!(
        matches!(b.breach, BudgetBreach::Cost { limit, .. } if limit == cap),
        "{b:?}"
    );
    assert!(b.refused_before_run);
    assert_eq!(
        model.calls(),
        3,
        "only calls whose worst case fits are sent"
    );
    assert!(
        f.summary.cost <= cap,
        "summary cost {} over cap {}",
        f.summary.cost,
        cap
    );
    assert!(settled_costs(&sink) <= cap);
    assert_eq!(
        f.summary.cost,
        f.summary.steps.iter().map(|s| s.cost).sum::<Cost>()
    );
}

#[tokio::test(start_paused = true)]
async fn settled_model_calls_never_overshoot_the_cost_cap() {
    // Calls answer at once and cost 89 µ$ each: three settle (267 µ$), and the
    // fourth's 100 µ$ worst case would pass the 350 µ$ cap.
    let model = Arc::new(ScriptedModel::new("openai").then_always("ok", TokenUsage::new(9, 80)));
    let (f, sink, cap) = fan_out_chats(model.clone()).await;
    let b = budget_error(&f);
    assert!(
        matches!(b.breach, BudgetBreach::Cost { limit, .. } if limit == cap),
        "{b:?}"
    );
    assert!(b.refused_before_run);
    assert_eq!(model.calls(), 3);
    assert_eq!(f.summary.cost, Cost::from_microdollars(3 * 89));
    assert!(f.summary.cost <= cap);
    assert_eq!(settled_costs(&sink), f.summary.cost);
}

// ---------------------------------------------------------------------------
// 9. Missing prices
// ---------------------------------------------------------------------------

fn unpriced_graph(model: Arc<ScriptedModel>) -> CompiledGraph<Items> {
    GraphBuilder::<Items>::new("unpriced")
        .add_node(
            "ask",
            chat_node(model, ChatRequest::new("mystery-1").user("hello")),
        )
        .set_entry("ask")
        .set_finish("ask")
        .compile()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn missing_price_error_policy_fails_before_calling() {
    let model = Arc::new(ScriptedModel::new("acme").reply("hi", TokenUsage::new(10, 5)));
    let graph = unpriced_graph(model.clone());
    let config = RunConfig::new()
        .missing_price(MissingPrice::Error)
        .retry(RetryPolicy::new(3));
    let f = failure(graph.invoke(Items::default(), config).await);
    match &f.error {
        Error::MissingPrice {
            node,
            provider,
            model,
        } => {
            assert_eq!(node.as_str(), "ask");
            assert_eq!(provider, "acme");
            assert_eq!(model, "mystery-1");
        }
        other => panic!("expected MissingPrice, got {other:?}"),
    }
    assert_eq!(f.error.kind(), "missing_price");
    assert_eq!(model.calls(), 0, "the unpriced call was not sent");
    assert_eq!(f.summary.steps[0].attempts, 1, "not retried");
}

#[tokio::test(start_paused = true)]
async fn missing_price_default_policy_counts_zero_and_warns() {
    let model = Arc::new(ScriptedModel::new("acme").reply("hi", TokenUsage::new(10, 5)));
    let graph = unpriced_graph(model.clone());
    let (out, sink) = run_with_sink(&graph, Items::default()).await;
    assert_eq!(model.calls(), 1);
    assert_eq!(out.summary.cost, Cost::ZERO);
    assert_eq!(
        out.summary.usage,
        TokenUsage::new(10, 5),
        "tokens are still counted"
    );
    assert_eq!(out.summary.steps[0].cost, Cost::ZERO);

    let warnings: Vec<String> = events_of(&sink, "log")
        .filter_map(|e| match e.kind {
            EventKind::Log {
                level: LogLevel::Warn,
                message,
            } => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("acme/mystery-1"), "{}", warnings[0]);
    let response = events_of(&sink, "llm.response").next().unwrap();
    assert!(matches!(response.kind, EventKind::LlmResponse { cost, .. } if cost.is_zero()));
}

// ---------------------------------------------------------------------------
// 6b. Cancellation is a tree
// ---------------------------------------------------------------------------

/// Canceling one run (through its handle) never cancels another run that
/// shares the caller's token, nor the caller's token itself.
#[tokio::test(start_paused = true)]
async fn canceling_one_run_leaves_its_siblings_and_the_caller_alone() {
    let caller = CancellationToken::new();
    let (began_1, began_2) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let b1 = Arc::new(AtomicBool::new(false));
    let g1 = cancelable_graph(began_1.clone(), b1.clone());
    let g2 = GraphBuilder::<Items>::new("other")
        .add_node(
            "wait",
            node_fn(move |_s: Arc<Items>, _ctx: NodeContext| {
                let began = began_2.clone();
                async move {
                    began.notify_one();
                    tokio::time::sleep(secs(5)).await;
                    Ok(NodeOutput::update(vec!["done".to_string()]))
                }
            }),
        )
        .set_entry("wait")
        .set_finish("wait")
        .compile()
        .unwrap();
    let h1 = g1.stream(
        Items::default(),
        RunConfig::new().cancellation_token(caller.clone()),
    );
    let h2 = g2.stream(
        Items::default(),
        RunConfig::new().cancellation_token(caller.clone()),
    );
    began_1.notified().await;
    h1.cancel();
    let f = h1.wait().await.unwrap_err();
    assert_eq!(f.error.kind(), "canceled");
    assert!(!caller.is_cancelled(), "the caller's token is untouched");
    let out = h2.wait().await.unwrap();
    assert_eq!(out.summary.status, RunStatus::Succeeded);
    assert_eq!(out.state.items, ["done"]);
    assert!(!b1.load(Ordering::SeqCst));
}

/// A node's token is its attempt's: canceling it does not cancel the run or
/// the caller; an attempt timeout cancels it so spawned work can clean up.
#[tokio::test(start_paused = true)]
async fn an_attempt_token_is_a_child_canceled_on_timeout() {
    let caller = CancellationToken::new();
    let cleaned = Arc::new(AtomicBool::new(false));
    let c = cleaned.clone();
    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    let graph = GraphBuilder::<Items>::new("attempts")
        .add_node(
            "self_cancel",
            node_fn(|_s: Arc<Items>, ctx: NodeContext| async move {
                // A node may cancel its own attempt's token...
                let t = ctx.cancellation_token();
                t.cancel();
                assert!(t.is_cancelled());
                Ok(NodeOutput::update(vec!["self_cancel".to_string()]))
            }),
        )
        .add_node_with(
            "slow",
            node_fn(move |_s: Arc<Items>, ctx: NodeContext| {
                let c = c.clone();
                let a = a.clone();
                async move {
                    let n = a.fetch_add(1, Ordering::SeqCst);
                    let token = ctx.cancellation_token();
                    if n == 0 {
                        // Work the node spawned watches the attempt's token.
                        tokio::spawn(async move {
                            token.cancelled().await;
                            c.store(true, Ordering::SeqCst);
                        });
                        tokio::time::sleep(secs(60)).await;
                    }
                    Ok(NodeOutput::update(vec!["slow".to_string()]))
                }
            }),
            NodeConfig::default()
                .timeout(secs(1))
                .retry(RetryPolicy::new(2).retry_timeouts(true)),
        )
        .set_entry("self_cancel")
        .add_edge("self_cancel", "slow")
        .set_finish("slow")
        .compile()
        .unwrap();
    let out = graph
        .invoke(
            Items::default(),
            RunConfig::new().cancellation_token(caller.clone()),
        )
        .await
        .unwrap();
    // ...and the run goes on.
    assert_eq!(out.state.items, ["self_cancel", "slow"]);
    assert!(!caller.is_cancelled());
    tokio::task::yield_now().await;
    assert!(
        cleaned.load(Ordering::SeqCst),
        "the timed-out attempt's token was canceled"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
}
