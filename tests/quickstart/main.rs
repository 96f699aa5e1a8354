//! The README's first command, as a test: the quickstart runs offline, its
//! first run retries and falls back, its second run is all cache hits at
//! zero cost, and it writes the HTML report.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../examples/quickstart/demo.rs"]
#[allow(dead_code)]
mod demo;

use flowtrace::{Cost, RunStatus, StepStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_runs_and_its_second_run_costs_nothing() {
    let dir = std::env::temp_dir().join(format!("flowtrace-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("flowtrace-report.html");
    let mut out = Vec::new();
    let started = std::time::Instant::now();
    let result = demo::run(&report, &mut out).await.unwrap();
    let elapsed = started.elapsed();
    let text = String::from_utf8(out).unwrap();

    // The README promises under 10 seconds; it takes about 2.
    assert!(elapsed.as_secs() < 10, "took {elapsed:?}");
    assert_eq!(result.runs.len(), 2);
    let (cold, warm) = (&result.runs[0].summary, &result.runs[1].summary);
    assert_eq!(cold.status, RunStatus::Succeeded);
    assert_eq!(warm.status, RunStatus::Succeeded);

    // Run 1: summarize retried twice with back-off, then fell back.
    let summarize = cold.steps_of("summarize").next().unwrap();
    assert_eq!((summarize.retries, summarize.fallbacks), (2, 1));
    assert_eq!(summarize.model.as_deref(), Some("claude-3-5-haiku"));
    assert!(cold.totals.cost_usd > Cost::ZERO);
    // The router branched on the summary's length.
    let decide = cold.steps_of("decide").next().unwrap();
    let summary_len = cold.outputs["summarize"].as_str().unwrap().chars().count();
    let expected = if summary_len > 120 { "deep" } else { "shallow" };
    assert_eq!(decide.branch.as_ref().unwrap(), expected);
    let other = if expected == "deep" {
        "shallow"
    } else {
        "deep"
    };
    assert_eq!(
        cold.steps_of(other).next().unwrap().status,
        StepStatus::Skipped
    );

    // Run 2: every llm step a cache hit, zero cost, same outputs.
    let llm_steps: Vec<_> = warm
        .steps
        .iter()
        .filter(|s| s.node_type.as_deref() == Some("llm") && s.status == StepStatus::Succeeded)
        .collect();
    assert_eq!(llm_steps.len(), 2);
    assert!(
        llm_steps
            .iter()
            .all(|s| s.cache_hit && s.cost_usd == Cost::ZERO)
    );
    assert_eq!(warm.totals.cost_usd, Cost::ZERO);
    assert_eq!(warm.outputs, cold.outputs);

    // The terminal shows the live timeline, the markers and the totals.
    for needle in [
        "━━ Run 1: cold cache ━━",
        "↻ summarize attempt 1 failed",
        "fallback",
        "cache hit",
        "━━ Totals, side by side ━━",
        "router branch",
        "HTML trace report:",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    let cost_line = text
        .lines()
        .find(|l| l.trim_start().starts_with("cost "))
        .unwrap();
    assert!(cost_line.trim_end().ends_with("$0.00"), "{cost_line}");

    // The report holds both runs and every step.
    let html = std::fs::read_to_string(&result.report).unwrap();
    assert_eq!(html.matches("class=\"step ").count(), 10);
    assert!(html.contains("Runs side by side"));
    let _ = std::fs::remove_dir_all(&dir);
}
