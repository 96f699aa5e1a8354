//! The quickstart itself, shared by the example's `main` and the
//! integration test `tests/quickstart.rs`.

use std::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flowtrace::Cost;
use flowtrace::report::HtmlReport;
use flowtrace::trace::{EventKind, MemorySink, Timeline, TraceEvent};
use flowtrace::workflow::compile::{CompiledWorkflow, Runtime, compile};
use flowtrace::workflow::spec::{WorkflowSpec, load};
use flowtrace::workflow::summary::{WorkflowOutcome, WorkflowSummary, report_run};
use futures::StreamExt;
use serde_json::{Value, json};

/// The workflow the quickstart runs.
pub const WORKFLOW: &str = include_str!("../workflows/research.json");

/// Where the workflow's files (the research notes) live.
pub fn workflow_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/workflows")
}

/// The input both runs use.
pub fn input() -> Value {
    json!({"notes_path": "research-notes.md", "topic": "agent observability"})
}

/// One finished run.
#[derive(Debug)]
pub struct RunResult {
    /// The run summary (what `run_workflow --json` prints).
    pub summary: WorkflowSummary,
    /// Every event the run emitted.
    pub events: Vec<TraceEvent>,
    /// Its wall time.
    pub elapsed: Duration,
}

/// What the quickstart did.
#[derive(Debug)]
pub struct Quickstart {
    /// The cold run, then the warm run.
    pub runs: Vec<RunResult>,
    /// The HTML report written.
    pub report: PathBuf,
}

/// Runs the quickstart, printing to `out`, writing the HTML report to
/// `report_path`.
pub async fn run(report_path: &Path, out: &mut dyn Write) -> Result<Quickstart, Box<dyn Error>> {
    let runtime = Runtime::offline(workflow_dir());
    let spec = load(WORKFLOW, &runtime.known()).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!("research.json is invalid:\n{}", lines.join("\n"))
    })?;
    let workflow = compile(&spec, &runtime)?;

    writeln!(
        out,
        "FlowTrace quickstart: Research → Summarize → Decide → Deep | Shallow\n\
         workflow examples/workflows/research.json ({} nodes) on the simulated provider, offline.\n\
         Summarize's primary model is rate limited: watch it retry with back-off, then fall back.",
        spec.nodes.len()
    )?;

    let mut report = HtmlReport::new("FlowTrace quickstart: research.json");
    let mut runs = Vec::new();
    for (title, label) in [
        ("Run 1: cold cache", "Run 1 (cold cache)"),
        (
            "Run 2: the same input again, warm cache",
            "Run 2 (warm cache)",
        ),
    ] {
        writeln!(out, "\n━━ {title} ━━")?;
        let (outcome, events, elapsed) = run_live(&workflow, out).await?;
        let summary = WorkflowSummary::new(&spec, &outcome);
        report = report.run(report_run(&spec, &outcome, events.clone()).label(label));
        runs.push(RunResult {
            summary,
            events,
            elapsed,
        });
    }

    print_side_by_side(&runs, out)?;
    explain(&spec, &runs, out)?;

    report.write_to(report_path)?;
    let shown = std::fs::canonicalize(report_path).unwrap_or_else(|_| report_path.to_path_buf());
    writeln!(
        out,
        "\nHTML trace report: {} (open it in a browser; click a step for its details)",
        shown.display()
    )?;
    writeln!(
        out,
        "Next: cargo run --example run_workflow -- examples/workflows/research.json \
         --input '{}' --json",
        input()
    )?;
    Ok(Quickstart {
        runs,
        report: shown,
    })
}

/// One run with its timeline printed live.
async fn run_live(
    workflow: &CompiledWorkflow,
    out: &mut dyn Write,
) -> Result<(WorkflowOutcome, Vec<TraceEvent>, Duration), Box<dyn Error>> {
    let recorder = MemorySink::new();
    let started = std::time::Instant::now();
    let mut handle = workflow.graph().stream(
        CompiledWorkflow::initial_state(input()),
        workflow.config().sink(recorder.clone()),
    );
    let mut lines = Timeline::new().follow(handle.events());
    while let Some(line) = lines.next().await {
        writeln!(out, "{line}")?;
    }
    let outcome = handle.wait().await;
    Ok((outcome, recorder.events(), started.elapsed()))
}

fn print_side_by_side(runs: &[RunResult], out: &mut dyn Write) -> std::io::Result<()> {
    let (a, b) = (&runs[0].summary, &runs[1].summary);
    let row = |name: &str, x: String, y: String| format!("  {name:<18} {x:>16} {y:>16}");
    let count = |s: &WorkflowSummary,
                 f: &dyn Fn(&flowtrace::workflow::summary::StepSummary) -> u64| {
        s.steps.iter().map(f).sum::<u64>().to_string()
    };
    let status = |s: &WorkflowSummary| {
        serde_json::to_value(s.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let branch = |s: &WorkflowSummary| {
        s.steps
            .iter()
            .find_map(|st| st.branch.as_ref())
            .map(|b| b.as_str().map_or_else(|| b.to_string(), str::to_string))
            .unwrap_or_else(|| "-".into())
    };
    writeln!(out, "\n━━ Totals, side by side ━━")?;
    writeln!(
        out,
        "{}",
        row("", "run 1 (cold)".into(), "run 2 (warm)".into())
    )?;
    let lines = [
        row("status", status(a), status(b)),
        row(
            "elapsed",
            format!("{:.1?}", runs[0].elapsed),
            format!("{:.1?}", runs[1].elapsed),
        ),
        row(
            "llm calls cached",
            count(a, &|s| u64::from(s.cache_hit)),
            count(b, &|s| u64::from(s.cache_hit)),
        ),
        row(
            "retries",
            count(a, &|s| u64::from(s.retries)),
            count(b, &|s| u64::from(s.retries)),
        ),
        row(
            "fallbacks",
            count(a, &|s| u64::from(s.fallbacks)),
            count(b, &|s| u64::from(s.fallbacks)),
        ),
        row(
            "input tokens",
            a.totals.tokens_input.to_string(),
            b.totals.tokens_input.to_string(),
        ),
        row(
            "output tokens",
            a.totals.tokens_output.to_string(),
            b.totals.tokens_output.to_string(),
        ),
        row(
            "cost",
            a.totals.cost_usd.to_string(),
            b.totals.cost_usd.to_string(),
        ),
        row("router branch", branch(a), branch(b)),
    ];
    for line in lines {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// Says what happened, from the runs' own events and outputs.
fn explain(spec: &WorkflowSpec, runs: &[RunResult], out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "\n━━ What happened ━━")?;
    let cold = &runs[0];
    for ev in &cold.events {
        let node = ev.node.as_ref().map(|n| n.as_ref()).unwrap_or("?");
        match &ev.kind {
            EventKind::Retry {
                failed_attempt,
                delay_ms,
                error,
            } => writeln!(
                out,
                "  • {node}: attempt {failed_attempt} failed ({error}); retried after {delay_ms} ms"
            )?,
            EventKind::Fallback {
                from_provider,
                from_model,
                to_provider,
                to_model,
                reason,
            } => writeln!(
                out,
                "  • {node}: fell back from {from_provider}/{from_model} to {to_provider}/{to_model} ({reason})"
            )?,
            _ => {}
        }
    }
    for step in &cold.summary.steps {
        let is_router = spec
            .node(&step.node_id)
            .is_some_and(|n| n.node_type().as_str() == "router");
        if let (true, Some(branch)) = (is_router, &step.branch) {
            let rule = spec
                .node(&step.node_id)
                .and_then(|n| match &n.kind {
                    flowtrace::workflow::spec::NodeKind::Router(r) => Some(r.rule.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            let length = cold
                .summary
                .outputs
                .get("summarize")
                .and_then(Value::as_str)
                .map(|s| s.chars().count());
            let branch = branch
                .as_str()
                .map_or_else(|| branch.to_string(), str::to_string);
            writeln!(
                out,
                "  • {}: rule `{rule}` chose `{branch}`{}",
                step.node_id,
                length
                    .map(|n| format!(" (the summary is {n} characters long)"))
                    .unwrap_or_default()
            )?;
        }
    }
    let warm = &runs[1];
    let saved: Cost = warm
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::CacheHit { saved_cost, .. } => Some(*saved_cost),
            _ => None,
        })
        .sum();
    let hits = warm.summary.steps.iter().filter(|s| s.cache_hit).count();
    writeln!(
        out,
        "  • run 2: {hits} llm steps answered from the cache; it cost {} (saved {saved})",
        warm.summary.totals.cost_usd
    )?;
    Ok(())
}
