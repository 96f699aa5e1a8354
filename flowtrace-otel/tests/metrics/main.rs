//! Metrics of real runs: graphs run through core's executor with the
//! [`OtelMetrics`] sink attached (scripted models), read back from the
//! Prometheus exposition, linted by `promtool check metrics`, scraped by a
//! real Prometheus server, and checked against the shipped dashboard and
//! alert rules.
//!
//! Tests needing Debian's `prometheus` package (`promtool`, `prometheus`;
//! `FLOWTRACE_PROMETHEUS` names the server binary) skip loudly when it is
//! missing, and fail instead when `FLOWTRACE_REQUIRE_PEERS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use flowtrace_core::pricing::PerMillion;
use flowtrace_core::{
    Budget, ChatModel, ChatRequest, CompiledGraph, Cost, GraphBuilder, MemoryCache, ModelPrice,
    NodeConfig, NodeContext, NodeError, NodeOutput, PriceTable, RetryPolicy, RunConfig, RunSummary,
    State, TokenUsage, node_fn, reducer,
};
use flowtrace_core::{ModelErrorKind, testing::ScriptedModel};
use flowtrace_otel::metrics::names;
use flowtrace_otel::{OtelMetrics, serve_metrics};
use flowtrace_providers::breaker::BreakerConfig;
use flowtrace_providers::fallback::{Candidate, FallbackChain};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

// ===== Fixtures =====

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Items {
    items: Vec<String>,
}

impl State for Items {
    type Update = Vec<String>;
    fn apply(&mut self, u: Vec<String>) {
        reducer::append(&mut self.items, u);
    }
}

/// Dollars per token, as a per-million price: powers of two keep every
/// cost and sum exact in `f64`, so Prometheus' sums equal the summary's.
fn per_token(dollars_per_token_times_4: u64) -> PerMillion {
    PerMillion::from_microdollars(dollars_per_token_times_4 * 250_000 * 1_000_000)
}

/// openai/gpt-4o-mini at $0.25 (input) and $0.50 (output) per token;
/// anthropic/claude-sonnet-4 at $0.50 and $1.
fn prices() -> Arc<PriceTable> {
    Arc::new(
        PriceTable::new()
            .with_price(
                "openai",
                "gpt-4o-mini",
                ModelPrice::new(per_token(1), per_token(2)),
            )
            .with_price(
                "anthropic",
                "claude-sonnet-4",
                ModelPrice::new(per_token(2), per_token(4)),
            ),
    )
}

/// A node making one model call per request.
fn chat_node(
    model: Arc<dyn ChatModel>,
    requests: Vec<ChatRequest>,
) -> impl flowtrace_core::Node<Items> {
    node_fn(move |_s: Arc<Items>, ctx: NodeContext| {
        let model = model.clone();
        let requests = requests.clone();
        async move {
            let mut texts = Vec::new();
            for r in requests {
                texts.push(ctx.chat(model.as_ref(), r).await?.text);
            }
            Ok(NodeOutput::update(texts))
        }
    })
}

/// A node failing its first attempt (transiently), then succeeding.
fn flaky() -> impl flowtrace_core::Node<Items> {
    node_fn(|_s: Arc<Items>, ctx: NodeContext| async move {
        if ctx.attempt() < 2 {
            Err(NodeError::transient("flaky first attempt"))
        } else {
            Ok(NodeOutput::update(vec!["ok".to_string()]))
        }
    })
}

fn mini(q: &str) -> ChatRequest {
    ChatRequest::new("gpt-4o-mini").user(q)
}

/// `plan` (a model call) -> `flaky` (one retry) -> `write` (a model call).
fn demo_graph(model: Arc<ScriptedModel>) -> CompiledGraph<Items> {
    let retry = RetryPolicy::new(3).initial_delay(Duration::from_millis(1));
    GraphBuilder::<Items>::new("metrics-demo")
        .add_node("plan", chat_node(model.clone(), vec![mini("plan")]))
        .add_node_with("flaky", flaky(), NodeConfig::new().retry(retry))
        .add_node("write", chat_node(model, vec![mini("write")]))
        .set_entry("plan")
        .add_edge("plan", "flaky")
        .add_edge("flaky", "write")
        .set_finish("write")
        .compile()
        .unwrap()
}

fn demo_model() -> Arc<ScriptedModel> {
    Arc::new(
        ScriptedModel::new("openai")
            .reply("a plan", TokenUsage::new(10, 4))
            .reply("a text", TokenUsage::new(20, 6)),
    )
}

/// A successful run of [`demo_graph`] with `metrics` attached.
async fn run_demo(metrics: &OtelMetrics) -> RunSummary {
    let config = RunConfig::new().pricing(prices()).sink(metrics.clone());
    let out = demo_graph(demo_model())
        .invoke(Items::default(), config)
        .await;
    out.unwrap().summary
}

/// A run whose only node fails permanently.
async fn run_failing(metrics: &OtelMetrics) -> RunSummary {
    let graph = GraphBuilder::<Items>::new("metrics-broken")
        .add_node(
            "boom",
            node_fn(|_s: Arc<Items>, _ctx| async { Err(NodeError::permanent("boom")) }),
        )
        .set_entry("boom")
        .set_finish("boom")
        .compile()
        .unwrap();
    let config = RunConfig::new().sink(metrics.clone());
    *graph
        .invoke(Items::default(), config)
        .await
        .unwrap_err()
        .summary
}

/// A run with a fallback on an overloaded primary (which opens its
/// breaker), a fallback on the open breaker, and a cache hit.
async fn run_resilient(metrics: &OtelMetrics) -> RunSummary {
    let primary = Arc::new(ScriptedModel::new("openai").fail(ModelErrorKind::Overloaded));
    let secondary =
        Arc::new(ScriptedModel::new("anthropic").then_always("from claude", TokenUsage::new(3, 1)));
    let chain: Arc<dyn ChatModel> = Arc::new(
        FallbackChain::new(
            Candidate::new(primary)
                .model("gpt-4o")
                .with_breaker(BreakerConfig::default().failure_threshold(1)),
        )
        .or(Candidate::new(secondary).model("claude-sonnet-4"))
        .retries(0),
    );
    let q = |text: &str| ChatRequest::new("gpt-4o").user(text);
    let graph = GraphBuilder::<Items>::new("metrics-resilient")
        .add_node("a", chat_node(chain.clone(), vec![q("one")]))
        .add_node("b", chat_node(chain.clone(), vec![q("two")]))
        .add_node("c", chat_node(chain, vec![q("one")]))
        .set_entry("a")
        .add_edge("a", "b")
        .add_edge("b", "c")
        .set_finish("c")
        .compile()
        .unwrap();
    let config = RunConfig::new()
        .pricing(prices())
        .cache(Arc::new(MemoryCache::new(16)))
        .sink(metrics.clone());
    graph
        .invoke(Items::default(), config)
        .await
        .unwrap()
        .summary
}

/// A run stopped by its token budget.
async fn run_over_budget(metrics: &OtelMetrics) -> RunSummary {
    let model =
        Arc::new(ScriptedModel::new("openai").then_always("words", TokenUsage::new(50, 50)));
    let graph = GraphBuilder::<Items>::new("metrics-budget")
        .add_node("a", chat_node(model.clone(), vec![mini("a")]))
        .add_node("b", chat_node(model, vec![mini("b")]))
        .set_entry("a")
        .add_edge("a", "b")
        .set_finish("b")
        .compile()
        .unwrap();
    let config = RunConfig::new()
        .pricing(prices())
        .budget(Budget::default().max_tokens(120))
        .sink(metrics.clone());
    *graph
        .invoke(Items::default(), config)
        .await
        .unwrap_err()
        .summary
}

// ===== Reading the exposition =====

/// One sample of an exposition: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Parses `name{k="v",...} value` lines.
fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        out.push((name.to_string(), labels, value.parse().unwrap()));
    }
    out
}

/// The sum of the samples of `name` having every label of `want`.
fn value(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    samples(text)
        .into_iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

fn render(metrics: &OtelMetrics) -> String {
    metrics.endpoint().unwrap().render().unwrap()
}

// ===== Peers =====

fn require_peers() -> bool {
    std::env::var("FLOWTRACE_REQUIRE_PEERS").as_deref() == Ok("1")
}

/// A binary from `env` or PATH, or a loud skip (a failure when peers are
/// required).
fn peer_binary(env: &str, name: &str, what: &str) -> Option<PathBuf> {
    let found = std::env::var_os(env)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
        });
    if found.is_none() {
        let msg = format!("no {name} (apt-get install prometheus, or set {env})");
        assert!(!require_peers(), "FLOWTRACE_REQUIRE_PEERS=1 but {msg}");
        // Straight to stderr: the test harness would swallow `eprintln!`.
        let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {what}: {msg} ***\n");
    }
    found
}

async fn promtool(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let bin = std::env::var_os("FLOWTRACE_PROMTOOL")
        .map_or_else(|| PathBuf::from("promtool"), PathBuf::from);
    let mut child = tokio::process::Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .await
        .unwrap();
    drop(input);
    child.wait_with_output().await.unwrap()
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

mod counting;
mod deploy;
#[path = "../support/prometheus.rs"]
mod prom;
mod prometheus;

#[tokio::test]
async fn an_endpoint_keeps_serving_after_its_metrics_sink_is_dropped() {
    let metrics = OtelMetrics::builder().build().unwrap();
    let endpoint = metrics.endpoint().unwrap();
    let summary = run_demo(&metrics).await;
    assert!(summary.usage.total() > 0);
    drop(metrics);
    let text = endpoint.render().unwrap();
    assert!(text.contains("flowtrace_llm_tokens_total"), "{text}");
}
