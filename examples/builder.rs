//! A research workflow built with the Rust builder API, on scripted models.
//!
//! ```text
//! cargo run --example builder
//! ```
//!
//! (The README's quickstart runs the JSON version of a research workflow;
//! this one shows the same ideas with typed state, reducers and closures.)
//!
//! Research → Summarize → (router) Deep | Shallow → Critique ∥ Fact-check → Report,
//! run offline on scripted models priced like the real ones. The live trace is
//! printed as the run goes: the summarizer is rate limited once and retried
//! with backoff, the router picks a branch, two reviewers run in parallel, and
//! every step's tokens, cost and latency are shown. The same input is then run
//! again: every model call is answered from the cache and costs nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flowtrace::model::ModelErrorKind;
use flowtrace::testing::ScriptedModel;
use flowtrace::trace::{JsonLinesSink, Timeline};
use flowtrace::{
    Budget, ChatModel, ChatRequest, GraphBuilder, MemoryCache, NodeConfig, NodeContext, NodeError,
    NodeOutput, RetryPolicy, RunConfig, RunSummary, State, TokenUsage, Tool, ToolError, node_fn,
    reducer,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The workflow's state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Research {
    question: String,
    documents: Vec<String>,
    summary: String,
    analysis: String,
    reviews: Vec<String>,
    report: String,
}

/// A partial change to [`Research`]; each field has its reducer.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Change {
    documents: Vec<String>,
    summary: Option<String>,
    analysis: Option<String>,
    reviews: Vec<String>,
    report: Option<String>,
}

impl State for Research {
    type Update = Change;
    fn apply(&mut self, c: Change) {
        reducer::append(&mut self.documents, c.documents);
        reducer::replace(&mut self.summary, c.summary);
        reducer::replace(&mut self.analysis, c.analysis);
        reducer::append(&mut self.reviews, c.reviews);
        reducer::replace(&mut self.report, c.report);
    }
}

/// A local document search tool (the "research" step).
struct SearchDocs;

#[async_trait]
impl Tool for SearchDocs {
    fn name(&self) -> &str {
        "search_docs"
    }
    fn description(&self) -> &str {
        "Finds documents about a topic"
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]})
    }
    async fn call(&self, args: Value) -> Result<Value, ToolError> {
        let query = args["query"]
            .as_str()
            .ok_or_else(|| ToolError::permanent("search_docs", "query must be a string"))?;
        tokio::time::sleep(Duration::from_millis(40)).await;
        Ok(json!([
            format!(
                "Field report on {query}: adoption grew 40% year over year, driven by agent workflows."
            ),
            format!(
                "Survey on {query}: 62% of teams cannot explain why a run failed or what it cost."
            ),
            format!("Postmortem on {query}: an unbounded agent loop spent $1,900 over a weekend."),
        ]))
    }
}

struct Models {
    openai: Arc<dyn ChatModel>,
    anthropic: Arc<dyn ChatModel>,
    critic: Arc<dyn ChatModel>,
    checker: Arc<dyn ChatModel>,
}

fn models() -> Models {
    Models {
        // The summarizer is rate limited once, then answers.
        openai: Arc::new(
            ScriptedModel::new("openai")
                .fail(ModelErrorKind::RateLimited { retry_after: None })
                .then_always(
                    "Teams adopt agent workflows fast, but most cannot see why runs fail or what they cost; \
                     one unbounded loop burned $1,900. Observability and hard budgets are the gap, \
                     and both must work per step, live, with exact accounting of tokens and money.",
                    TokenUsage::new(1_240, 96),
                )
                .with_latency(Duration::from_millis(120)),
        ),
        anthropic: Arc::new(
            ScriptedModel::new("anthropic")
                .then_always(
                    "Deep analysis: failures cluster in tool calls and provider timeouts; costs concentrate in \
                     retries of long prompts. Recommend per-step budgets and cached repeats.",
                    TokenUsage::new(2_310, 180),
                )
                .with_latency(Duration::from_millis(180)),
        ),
        critic: Arc::new(
            ScriptedModel::new("anthropic")
                .then_always(
                    "The analysis under-weights provider outages; add a fallback provider.",
                    TokenUsage::new(420, 38),
                )
                .with_latency(Duration::from_millis(150)),
        ),
        checker: Arc::new(
            ScriptedModel::new("anthropic")
                .then_always(
                    "Facts check out against all three documents.",
                    TokenUsage::new(910, 22),
                )
                .with_latency(Duration::from_millis(170)),
        ),
    }
}

fn build(models: Models) -> flowtrace::CompiledGraph<Research> {
    let Models {
        openai,
        anthropic,
        critic,
        checker,
    } = models;

    GraphBuilder::<Research>::new("research")
        .add_node(
            "research",
            node_fn(|s: Arc<Research>, ctx: NodeContext| async move {
                let docs = ctx
                    .call_tool(&SearchDocs, json!({ "query": s.question }))
                    .await?;
                let documents: Vec<String> = serde_json::from_value(docs)?;
                Ok(Change {
                    documents,
                    ..Change::default()
                }
                .into())
            }),
        )
        .add_node_with(
            "summarize",
            node_fn(move |s: Arc<Research>, ctx: NodeContext| {
                let model = openai.clone();
                async move {
                    let request = ChatRequest::new("gpt-4o-mini")
                        .system("Summarize the documents in three sentences.")
                        .user(s.documents.join("\n"))
                        .max_tokens(200);
                    let reply = ctx.chat(model.as_ref(), request).await?;
                    Ok(Change {
                        summary: Some(reply.text),
                        ..Change::default()
                    }
                    .into())
                }
            }),
            NodeConfig::new()
                .retry(RetryPolicy::new(3).initial_delay(Duration::from_millis(250)))
                .timeout(Duration::from_secs(5)),
        )
        .add_node(
            "deep",
            node_fn(move |s: Arc<Research>, ctx: NodeContext| {
                let model = anthropic.clone();
                async move {
                    let request = ChatRequest::new("claude-sonnet-4")
                        .system("Analyse the summary in depth.")
                        .user(s.summary.clone())
                        .max_tokens(400);
                    let reply = ctx.chat(model.as_ref(), request).await?;
                    Ok(Change {
                        analysis: Some(reply.text),
                        ..Change::default()
                    }
                    .into())
                }
            }),
        )
        .add_node(
            "shallow",
            node_fn(|s: Arc<Research>, _ctx| async move {
                Ok(Change {
                    analysis: Some(format!("Brief: {}", s.summary)),
                    ..Change::default()
                }
                .into())
            }),
        )
        .add_node("critique", reviewer(critic, "Criticise the analysis."))
        .add_node(
            "fact_check",
            reviewer(checker, "Check the analysis against the documents."),
        )
        .add_node(
            "report",
            node_fn(|s: Arc<Research>, _ctx| async move {
                let report = format!("{}\n\nReviews:\n- {}", s.analysis, s.reviews.join("\n- "));
                Ok(Change {
                    report: Some(report),
                    ..Change::default()
                }
                .into())
            }),
        )
        .set_entry("research")
        .add_edge("research", "summarize")
        .add_conditional_edges(
            "summarize",
            |s: &Research| {
                if s.summary.len() > 200 {
                    "deep"
                } else {
                    "shallow"
                }
            },
            [("deep", "deep"), ("shallow", "shallow")],
        )
        .add_edge("deep", "critique")
        .add_edge("deep", "fact_check")
        .add_edge("shallow", "report")
        .add_edge("critique", "report")
        .add_edge("fact_check", "report")
        .set_finish("report")
        .compile()
        .expect("the workflow is valid")
}

/// A node asking a model to review the analysis.
fn reviewer(
    model: Arc<dyn ChatModel>,
    instruction: &'static str,
) -> impl flowtrace::Node<Research> {
    node_fn(move |s: Arc<Research>, ctx: NodeContext| {
        let model = model.clone();
        async move {
            let request = ChatRequest::new("claude-3-5-haiku")
                .system(instruction)
                .user(s.analysis.clone())
                .max_tokens(150);
            let reply = ctx
                .chat(model.as_ref(), request)
                .await
                .map_err(|e| NodeError::permanent(format!("review failed: {e}")))?;
            Ok(NodeOutput::update(Change {
                reviews: vec![reply.text],
                ..Change::default()
            }))
        }
    })
}

async fn run_once(
    graph: &flowtrace::CompiledGraph<Research>,
    cache: Arc<MemoryCache>,
    trace_file: &std::path::Path,
) -> RunSummary {
    let config = RunConfig::new()
        .parallel(4)
        .budget(
            Budget::default()
                .max_cost("0.05".parse().unwrap())
                .max_node_executions(20),
        )
        .cache(cache)
        .sink(JsonLinesSink::create(trace_file).expect("trace file"));
    let input = Research {
        question: "LLM agent observability".into(),
        ..Research::default()
    };
    let mut handle = graph.stream(input, config);
    let mut lines = Timeline::new().follow(handle.events());
    while let Some(line) = lines.next().await {
        println!("{line}");
    }
    match handle.wait().await {
        Ok(out) => {
            println!("\nreport:\n{}\n", out.state.report);
            out.summary
        }
        Err(failure) => {
            println!("run failed: {}", failure.error);
            *failure.summary
        }
    }
}

#[tokio::main]
async fn main() {
    let graph = build(models());
    let cache = Arc::new(MemoryCache::new(1_000));
    let trace_file = std::env::temp_dir().join("flowtrace-builder.jsonl");
    let _ = std::fs::remove_file(&trace_file);

    println!("== run 1: cold cache ==");
    let first = run_once(&graph, cache.clone(), &trace_file).await;
    println!("{first}\n");

    println!("== run 2: same input, warm cache ==");
    let second = run_once(&graph, cache, &trace_file).await;
    println!("{second}\n");

    println!("== totals ==");
    println!(
        "{:<8} {:>10} {:>10} {:>12} {:>10}",
        "run", "in tok", "out tok", "cost", "elapsed"
    );
    for (name, s) in [("cold", &first), ("cached", &second)] {
        println!(
            "{name:<8} {:>10} {:>10} {:>12} {:>10}",
            s.usage.input_tokens,
            s.usage.output_tokens,
            s.cost.to_string(),
            format!("{:.0?}", s.elapsed)
        );
    }
    println!(
        "\nevery event of both runs, as JSON lines: {}",
        trace_file.display()
    );
}
