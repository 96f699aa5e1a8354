//! FlowTrace map-reduce: dynamic fan-out with `Dispatch`, a join, and a subgraph.
//!
//! ```text
//! cargo run --example map_reduce
//! ```
//!
//! Plan → Research ×5 (dispatched) → Combine → Editor (a subgraph: Draft → Polish).
//!
//! The `plan` node splits a question into five topics and dispatches one
//! `research` instance per topic; at most three run at a time. Each instance
//! reads its topic as its dispatch input and asks a scripted model (priced as
//! OpenAI gpt-4o-mini). The instances are made to finish in a different order
//! than they were dispatched, yet `combine` sees the findings in dispatch
//! order: updates are always merged deterministically. The digest is then
//! handed to an `editor` graph with its own state type, run as a single node
//! of the parent graph; its steps appear nested in the trace and in the
//! summary, and count toward the run's totals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use flowtrace::testing::ScriptedModel;
use flowtrace::trace::Timeline;
use flowtrace::{
    ChatModel, ChatRequest, CompiledGraph, Cost, Dispatch, EventKind, GraphBuilder, NodeContext,
    NodeOutput, PriceTable, Pricing, RunConfig, StepStatus, StreamItem, TokenUsage, node_fn,
    reducer,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// The parent workflow's state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Report {
    question: String,
    topics: Vec<String>,
    findings: Vec<Finding>,
    digest: String,
    article: String,
}

/// What one research instance found.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Finding {
    topic: String,
    text: String,
}

/// A partial change to [`Report`].
#[derive(Debug, Default, Serialize, Deserialize)]
struct ReportChange {
    topics: Option<Vec<String>>,
    findings: Vec<Finding>,
    digest: Option<String>,
    article: Option<String>,
}

impl flowtrace::State for Report {
    type Update = ReportChange;
    fn apply(&mut self, c: ReportChange) {
        reducer::replace(&mut self.topics, c.topics);
        reducer::append(&mut self.findings, c.findings);
        reducer::replace(&mut self.digest, c.digest);
        reducer::replace(&mut self.article, c.article);
    }
}

/// The editor subgraph's state: a different type from the parent's.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Draft {
    source: String,
    text: String,
    edits: Vec<String>,
}

/// A partial change to [`Draft`].
#[derive(Debug, Default, Serialize, Deserialize)]
struct DraftChange {
    text: Option<String>,
    edits: Vec<String>,
}

impl flowtrace::State for Draft {
    type Update = DraftChange;
    fn apply(&mut self, c: DraftChange) {
        reducer::replace(&mut self.text, c.text);
        reducer::append(&mut self.edits, c.edits);
    }
}

const RESEARCH_MODEL: &str = "gpt-4o-mini";
const RESEARCH_USAGE: TokenUsage = TokenUsage::new(820, 140);
const DRAFT_MODEL: &str = "claude-3-5-haiku";
const DRAFT_USAGE: TokenUsage = TokenUsage::new(1_150, 210);

/// The editor: Draft (a model call) → Polish (plain code).
fn editor(writer: Arc<dyn ChatModel>) -> CompiledGraph<Draft> {
    GraphBuilder::<Draft>::new("editor")
        .add_node(
            "draft",
            node_fn(move |d: Arc<Draft>, ctx: NodeContext| {
                let writer = writer.clone();
                async move {
                    let request = ChatRequest::new(DRAFT_MODEL)
                        .system("Turn these research notes into one paragraph.")
                        .user(d.source.clone())
                        .max_tokens(300);
                    let reply = ctx.chat(writer.as_ref(), request).await?;
                    Ok(DraftChange {
                        text: Some(reply.text),
                        edits: vec!["drafted from the digest".into()],
                    }
                    .into())
                }
            }),
        )
        .add_node(
            "polish",
            node_fn(|d: Arc<Draft>, _ctx| async move {
                let polished = d.text.trim().replace("  ", " ");
                Ok(DraftChange {
                    text: Some(format!("{polished} (Reviewed for style.)")),
                    edits: vec!["trimmed whitespace, added the review note".into()],
                }
                .into())
            }),
        )
        .set_entry("draft")
        .add_edge("draft", "polish")
        .set_finish("polish")
        .compile()
        .expect("the editor graph is valid")
}

fn build(researcher: Arc<dyn ChatModel>, writer: Arc<dyn ChatModel>) -> CompiledGraph<Report> {
    let editor = editor(writer).as_node(
        // The subgraph starts from the parent's digest...
        |r: &Report| Draft {
            source: r.digest.clone(),
            ..Draft::default()
        },
        // ...and its final text becomes the parent's article.
        |d: Draft| ReportChange {
            article: Some(d.text),
            ..ReportChange::default()
        },
    );

    GraphBuilder::<Report>::new("map_reduce")
        .add_node(
            "plan",
            node_fn(|r: Arc<Report>, _ctx| async move {
                let topics: Vec<String> = [
                    "pricing",
                    "latency",
                    "failure modes",
                    "observability",
                    "team adoption",
                ]
                .iter()
                .map(|t| format!("{t} of {}", r.question))
                .collect();
                let dispatches = topics
                    .iter()
                    .map(|t| Dispatch::new("research", t))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(NodeOutput::update(ReportChange {
                    topics: Some(topics),
                    ..ReportChange::default()
                })
                .dispatch_all(dispatches))
            }),
        )
        .add_node(
            "research",
            node_fn(move |r: Arc<Report>, ctx: NodeContext| {
                let model = researcher.clone();
                async move {
                    let topic: String = ctx.input()?.expect("research is only dispatched");
                    // Earlier topics take longer, so instances finish out of
                    // dispatch order.
                    let position = r.topics.iter().position(|t| *t == topic).unwrap_or(0);
                    let remaining = (r.topics.len() - position) as u64;
                    tokio::time::sleep(Duration::from_millis(25 * remaining)).await;
                    let request = ChatRequest::new(RESEARCH_MODEL)
                        .system("List the three most important facts, one line each.")
                        .user(topic.clone())
                        .max_tokens(200);
                    let reply = ctx.chat(model.as_ref(), request).await?;
                    Ok(ReportChange {
                        findings: vec![Finding {
                            text: format!("{topic}: {}", reply.text),
                            topic,
                        }],
                        ..ReportChange::default()
                    }
                    .into())
                }
            }),
        )
        .add_node(
            "combine",
            node_fn(|r: Arc<Report>, _ctx| async move {
                let digest = r
                    .findings
                    .iter()
                    .enumerate()
                    .map(|(i, f)| format!("{}. {}", i + 1, f.text))
                    .collect::<Vec<_>>()
                    .join("\n");
                Ok(ReportChange {
                    digest: Some(digest),
                    ..ReportChange::default()
                }
                .into())
            }),
        )
        .add_node("editor", editor)
        .set_entry("plan")
        .add_dispatch("plan", "research")
        .add_edge("research", "combine")
        .add_edge("combine", "editor")
        .set_finish("editor")
        .compile()
        .expect("the workflow is valid")
}

#[tokio::main]
async fn main() {
    let researcher = Arc::new(
        ScriptedModel::new("openai")
            .then_always(
                "usage is rising; teams want per-step visibility; budgets prevent surprises.",
                RESEARCH_USAGE,
            )
            .with_latency(Duration::from_millis(60)),
    );
    let writer = Arc::new(
        ScriptedModel::new("anthropic")
            .then_always(
                "Agent workflows are spreading  fast, and every topic points the same way: \
                 teams need to see each step, its latency and its cost, and to cap spend before it happens.",
                DRAFT_USAGE,
            )
            .with_latency(Duration::from_millis(80)),
    );
    let graph = build(researcher.clone(), writer.clone());

    let input = Report {
        question: "LLM agent workflows".into(),
        ..Report::default()
    };
    let mut handle = graph.stream(input, RunConfig::new().parallel(3));
    let mut events = handle.events();
    let mut timeline = Timeline::new();
    // The order in which research instances finished, by their input.
    let mut inputs_by_step = std::collections::HashMap::new();
    let mut finished_order: Vec<String> = Vec::new();
    println!("== live trace ==");
    while let Some(item) = events.next().await {
        match item {
            StreamItem::Event(ev) => {
                if let Some(line) = timeline.line(&ev) {
                    println!("{line}");
                }
                let is_research = ev.node.as_ref().is_some_and(|n| n.as_str() == "research");
                match (&ev.kind, ev.step_id) {
                    (EventKind::StepStarted { input: Some(i) }, Some(step)) if is_research => {
                        inputs_by_step.insert(step, i.as_str().unwrap_or_default().to_string());
                    }
                    (EventKind::StepFinished { .. }, Some(step)) if is_research => {
                        if let Some(topic) = inputs_by_step.get(&step) {
                            finished_order.push(topic.clone());
                        }
                    }
                    _ => {}
                }
            }
            StreamItem::Lagged { missed } => println!("(missed {missed} events)"),
        }
    }
    let out = match handle.wait().await {
        Ok(out) => out,
        Err(failure) => {
            eprintln!("the run failed: {}\n{}", failure.error, failure.summary);
            std::process::exit(1);
        }
    };
    let (state, summary) = (out.state, out.summary);

    println!("\n== final state ==");
    println!("topics (dispatch order):");
    for t in &state.topics {
        println!("  - {t}");
    }
    println!("research finished in this order:");
    for t in &finished_order {
        println!("  - {t}");
    }
    println!("digest (merged in dispatch order):\n{}", state.digest);
    println!("article (from the editor subgraph):\n  {}", state.article);

    println!("\n== summary ==\n{summary}");

    // Fail loudly if behaviour regresses.
    let merged: Vec<&str> = state.findings.iter().map(|f| f.topic.as_str()).collect();
    assert_eq!(
        merged, state.topics,
        "findings must be merged in dispatch order, whatever order the instances finished in"
    );
    assert_eq!(summary.steps_of("research").count(), 5);
    assert!(
        summary
            .steps_of("research")
            .all(|s| s.status == StepStatus::Succeeded && s.input.is_some())
    );
    assert_eq!(researcher.calls(), 5);
    assert_eq!(writer.calls(), 1);

    // The subgraph's steps are nested under the `editor` step.
    let editor_step = summary
        .steps_of("editor")
        .next()
        .expect("editor ran")
        .step_id;
    for child in ["draft", "polish"] {
        let s = summary.steps_of(child).next().expect("subgraph step ran");
        assert_eq!(s.parent_step_id, Some(editor_step), "{child} is nested");
    }
    assert_eq!(summary.node_executions, 1 + 5 + 1 + 1 + 2);

    // Totals are the exact sum of the steps, and match the price table.
    let step_sum: Cost = summary.steps.iter().map(|s| s.cost).sum();
    assert_eq!(summary.cost, step_sum, "summary cost = sum of step costs");
    let prices = PriceTable::builtin();
    let research_price = prices.price("openai", RESEARCH_MODEL).expect("priced");
    let draft_price = prices.price("anthropic", DRAFT_MODEL).expect("priced");
    let expected: Cost = (0..5)
        .map(|_| research_price.cost(&RESEARCH_USAGE))
        .chain([draft_price.cost(&DRAFT_USAGE)])
        .sum::<Result<Cost, _>>()
        .expect("these costs are far below Cost::MAX");
    assert_eq!(summary.cost, expected, "costs are priced exactly");
    println!(
        "\nchecks passed: findings in dispatch order, subgraph nested, total {} = sum of steps",
        summary.cost
    );
}
