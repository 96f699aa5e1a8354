//! FlowTrace guardrails: budgets, retries, timeouts, cancellation and the
//! recursion limit, each in a short run that shows what happened.
//!
//! ```text
//! cargo run --example guardrails
//! ```
//!
//! 1. A fan-out of six nodes, each estimated at $0.02, under a $0.05 cost cap:
//!    refused before anything is dispatched.
//! 2. A model call whose worst case (prompt estimate + `max_tokens`) does not
//!    fit what is left of a token budget: refused before it is sent.
//! 3. A flaky node failing transiently twice, retried with backoff, then
//!    succeeding.
//! 4. A node running past its timeout.
//! 5. A long-running node canceled from another task through its `RunHandle`.
//! 6. An agent loop with no exit, stopped by the recursion limit.
//!
//! Everything runs offline on scripted models, in well under a second.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use flowtrace::testing::ScriptedModel;
use flowtrace::trace::{LogLevel, MemorySink};
use flowtrace::{
    Budget, BudgetBreach, BudgetExceeded, ChatModel, ChatRequest, END, Error, EventKind,
    GraphBuilder, NodeConfig, NodeContext, NodeError, NodeOutput, RetryPolicy, RunConfig,
    RunFailure, RunStatus, StepStatus, StreamItem, TokenUsage, node_fn, reducer,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// A small state shared by every section: a log of what the nodes did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Notes {
    lines: Vec<String>,
}

impl flowtrace::State for Notes {
    type Update = Vec<String>;
    fn apply(&mut self, u: Vec<String>) {
        reducer::append(&mut self.lines, u);
    }
}

fn note(text: impl Into<String>) -> NodeOutput<Vec<String>> {
    NodeOutput::update(vec![text.into()])
}

/// Unwraps the failure of a run that must fail.
fn expect_failure<T>(result: Result<T, RunFailure>) -> RunFailure {
    result.err().expect("the run should have failed")
}

/// The budget breach a run failed with.
fn budget_breach(failure: &RunFailure) -> &BudgetExceeded {
    assert_eq!(
        failure.error.kind(),
        "budget_exceeded",
        "unexpected error: {}",
        failure.error
    );
    match &failure.error {
        Error::BudgetExceeded(b) => Some(b),
        _ => None,
    }
    .expect("a budget error")
}

/// 1. Six parallel nodes whose estimates do not fit the cost cap.
async fn fan_out_over_budget() {
    println!("== 1. cost budget: a fan-out refused before dispatch ==");
    let ran = Arc::new(AtomicUsize::new(0));
    let mut builder = GraphBuilder::<Notes>::new("fan_out");
    for i in 1..=6 {
        let ran = ran.clone();
        let id = format!("worker_{i}");
        builder = builder
            .add_node_with(
                id.as_str(),
                node_fn(move |_s: Arc<Notes>, _ctx| {
                    let ran = ran.clone();
                    async move {
                        ran.fetch_add(1, Ordering::SeqCst);
                        Ok(note(format!("worker {i} done")))
                    }
                }),
                NodeConfig::new().estimated_cost("0.02".parse().unwrap()),
            )
            .set_entry(id.as_str())
            .set_finish(id.as_str());
    }
    let graph = builder.compile().expect("valid graph");
    let config = RunConfig::new()
        .parallel(6)
        .budget(Budget::default().max_cost("0.05".parse().unwrap()));
    let failure = expect_failure(graph.invoke(Notes::default(), config).await);

    println!("error: {}", failure.error);
    println!(
        "nodes that ran: {} (node executions in summary: {}, spent {})",
        ran.load(Ordering::SeqCst),
        failure.summary.node_executions,
        failure.summary.cost
    );
    let b = budget_breach(&failure);
    assert!(b.refused_before_run);
    assert!(
        matches!(b.breach, BudgetBreach::Cost { .. }),
        "{:?}",
        b.breach
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0, "no node may run");
    assert_eq!(failure.summary.node_executions, 0);
    assert!(failure.summary.cost.is_zero());
    assert_eq!(failure.summary.status, RunStatus::Failed);
}

/// 2. A model call refused before it is sent: its worst case does not fit.
async fn model_call_over_token_budget() {
    println!("\n== 2. token budget: a model call refused before it is sent ==");
    let model = Arc::new(
        ScriptedModel::new("openai").then_always("Short answer.", TokenUsage::new(180, 60)),
    );
    let node_model: Arc<dyn ChatModel> = model.clone();
    let graph = GraphBuilder::<Notes>::new("token_budget")
        .add_node(
            "writer",
            node_fn(move |_s: Arc<Notes>, ctx: NodeContext| {
                let model = node_model.clone();
                async move {
                    // Fits: ~20 prompt tokens + 300 max output, well under 1,000.
                    let outline = ctx
                        .chat(
                            model.as_ref(),
                            ChatRequest::new("gpt-4o-mini")
                                .user("Outline a post on agent budgets.")
                                .max_tokens(300),
                        )
                        .await?;
                    // 240 tokens spent so far; this call could use ~20 + 900 more.
                    let post = ctx
                        .chat(
                            model.as_ref(),
                            ChatRequest::new("gpt-4o-mini")
                                .user(format!("Write the post: {}", outline.text))
                                .max_tokens(900),
                        )
                        .await?;
                    Ok(note(post.text))
                }
            }),
        )
        .set_entry("writer")
        .set_finish("writer")
        .compile()
        .expect("valid graph");
    let config = RunConfig::new().budget(Budget::default().max_tokens(1_000));
    let failure = expect_failure(graph.invoke(Notes::default(), config).await);

    println!("error: {}", failure.error);
    println!(
        "model calls sent: {} (tokens spent: {} in / {} out)",
        model.calls(),
        failure.summary.usage.input_tokens,
        failure.summary.usage.output_tokens
    );
    let b = budget_breach(&failure);
    assert!(b.refused_before_run);
    assert!(
        matches!(b.breach, BudgetBreach::Tokens { limit: 1_000, .. }),
        "{:?}",
        b.breach
    );
    assert_eq!(
        model.calls(),
        1,
        "the second call must never reach the model"
    );
    assert_eq!(failure.summary.usage.total(), 240);
}

/// 3. A node that fails transiently twice, then succeeds on its third attempt.
async fn flaky_node_retried() {
    println!("\n== 3. retries: a flaky node succeeds on attempt 3 ==");
    let graph = GraphBuilder::<Notes>::new("flaky")
        .add_node_with(
            "fetch",
            node_fn(|_s: Arc<Notes>, ctx: NodeContext| async move {
                if ctx.attempt() < 3 {
                    return Err(NodeError::transient(format!(
                        "upstream returned 503 (attempt {})",
                        ctx.attempt()
                    )));
                }
                Ok(note(format!("fetched on attempt {}", ctx.attempt())))
            }),
            NodeConfig::new().retry(
                RetryPolicy::new(4)
                    .initial_delay(Duration::from_millis(40))
                    .multiplier(2.0)
                    .max_delay(Duration::from_millis(200))
                    .jitter(false),
            ),
        )
        .set_entry("fetch")
        .set_finish("fetch")
        .compile()
        .expect("valid graph");
    let sink = MemorySink::new();
    let out = graph
        .invoke(Notes::default(), RunConfig::new().sink(sink.clone()))
        .await
        .expect("the third attempt succeeds");

    let mut retries = 0;
    for ev in sink.events() {
        if let EventKind::Retry {
            failed_attempt,
            delay_ms,
            error,
        } = &ev.kind
        {
            retries += 1;
            println!("retry: attempt {failed_attempt} failed ({error}); next in {delay_ms} ms");
        }
    }
    let step = out.summary.steps_of("fetch").next().expect("fetch ran");
    println!(
        "result: {:?} after {} attempts in {:.0?}",
        out.state.lines, step.attempts, step.latency
    );
    assert_eq!(retries, 2);
    assert_eq!(step.attempts, 3);
    assert_eq!(step.status, StepStatus::Succeeded);
    assert_eq!(out.state.lines, ["fetched on attempt 3"]);
}

/// 4. A node that runs past its timeout.
async fn node_timeout() {
    println!("\n== 4. timeout: a slow node is stopped ==");
    let graph = GraphBuilder::<Notes>::new("timeout")
        .add_node_with(
            "slow",
            node_fn(|_s: Arc<Notes>, _ctx| async move {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(note("never printed"))
            }),
            NodeConfig::new().timeout(Duration::from_millis(100)),
        )
        .set_entry("slow")
        .set_finish("slow")
        .compile()
        .expect("valid graph");
    let failure = expect_failure(graph.invoke(Notes::default(), RunConfig::new()).await);

    println!("error: {}", failure.error);
    println!("run took {:.0?}", failure.summary.elapsed);
    assert_eq!(failure.error.kind(), "timeout");
    assert!(matches!(
        failure.error,
        Error::Timeout { ref node, attempts: 1, .. } if node.as_str() == "slow"
    ));
    assert!(failure.summary.elapsed < Duration::from_secs(1));
}

/// 5. A long-running node canceled by a watchdog task through the run handle.
async fn canceled_from_another_task() {
    println!("\n== 5. cancellation: a watchdog task cancels a long run ==");
    let graph = GraphBuilder::<Notes>::new("long")
        .add_node(
            "crawl",
            node_fn(|_s: Arc<Notes>, ctx: NodeContext| async move {
                for page in 1..=100 {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    ctx.log(LogLevel::Info, format!("crawled page {page}"));
                }
                Ok(note("crawled everything"))
            }),
        )
        .set_entry("crawl")
        .set_finish("crawl")
        .compile()
        .expect("valid graph");

    let mut handle = graph.stream(Notes::default(), RunConfig::new());
    let mut events = handle.events();
    // The watchdog owns the handle: it follows the live events and cancels
    // the run once it has seen enough, then waits for the run to end.
    let watchdog = tokio::spawn(async move {
        while let Some(item) = events.next().await {
            if let StreamItem::Event(ev) = item
                && let EventKind::Log { message, .. } = &ev.kind
            {
                println!("watchdog saw: {message}");
                if message == "crawled page 3" {
                    println!("watchdog: that is enough, canceling");
                    handle.cancel();
                    break;
                }
            }
        }
        handle.wait().await
    });
    let failure = expect_failure(watchdog.await.expect("the watchdog task ran"));

    println!("error: {}", failure.error);
    let step = failure.summary.steps_of("crawl").next().expect("crawl ran");
    println!(
        "run status: {:?}, step status: {:?} after {:.0?}",
        failure.summary.status, step.status, step.latency
    );
    assert_eq!(failure.error.kind(), "canceled");
    assert_eq!(failure.summary.status, RunStatus::Canceled);
    assert_eq!(step.status, StepStatus::Canceled);
    assert!(step.latency < Duration::from_secs(1));
}

/// 6. An agent that always wants another tool call, stopped by the recursion limit.
async fn runaway_agent_loop() {
    println!("\n== 6. recursion limit: an agent loop with no exit ==");
    let model: Arc<dyn ChatModel> = Arc::new(
        ScriptedModel::new("openai")
            .then_always("I should search once more.", TokenUsage::new(400, 20)),
    );
    let graph = GraphBuilder::<Notes>::new("agent_loop")
        .add_node(
            "agent",
            node_fn(move |s: Arc<Notes>, ctx: NodeContext| {
                let model = model.clone();
                async move {
                    let request = ChatRequest::new("gpt-4o-mini")
                        .user(s.lines.join("\n"))
                        .max_tokens(100);
                    let reply = ctx.chat(model.as_ref(), request).await?;
                    Ok(note(reply.text))
                }
            }),
        )
        .add_node(
            "search",
            node_fn(|s: Arc<Notes>, _ctx| async move {
                Ok(note(format!("search result #{}", s.lines.len() / 2 + 1)))
            }),
        )
        .set_entry("agent")
        // The model never says it is done, so the loop never exits.
        .add_conditional_edges(
            "agent",
            |s: &Notes| {
                if s.lines.last().is_some_and(|l| l.starts_with("FINAL")) {
                    "done"
                } else {
                    "search"
                }
            },
            [("search", "search"), ("done", END)],
        )
        .add_edge("search", "agent")
        .compile()
        .expect("valid graph");
    let failure = expect_failure(
        graph
            .invoke(Notes::default(), RunConfig::new().recursion_limit(8))
            .await,
    );

    println!("error: {}", failure.error);
    println!(
        "executions: {}, model calls: {}, spent {}",
        failure.summary.node_executions,
        failure.summary.steps_of("agent").count(),
        failure.summary.cost
    );
    assert!(matches!(
        failure.error,
        Error::RecursionLimit { limit: 8, ref node } if node.as_str() == "agent"
    ));
    assert_eq!(failure.summary.node_executions, 8);
}

#[tokio::main]
async fn main() {
    let started = std::time::Instant::now();
    fan_out_over_budget().await;
    model_call_over_token_budget().await;
    flaky_node_retried().await;
    node_timeout().await;
    canceled_from_another_task().await;
    runaway_agent_loop().await;
    println!("\nall guardrails held ({:.0?} in all)", started.elapsed());
}
