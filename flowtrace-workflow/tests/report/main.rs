//! The HTML report of JSON workflow runs: what `summary::report_run` hands
//! to `flowtrace-report`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use flowtrace_core::trace::MemorySink;
use flowtrace_report::HtmlReport;
use flowtrace_workflow::compile::{Runtime, compile};
use flowtrace_workflow::spec::load;
use flowtrace_workflow::summary::report_run;
use serde_json::json;

const RESEARCH: &str = include_str!("../../../examples/workflows/research.json");

#[tokio::test]
async fn research_runs_show_retries_fallbacks_cache_hits_and_side_by_side_totals() {
    let dir = std::env::temp_dir().join(format!("flowtrace-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.md"), "notes <script>x</script>").unwrap();
    let runtime = Runtime::offline(&dir);
    let spec = load(RESEARCH, &runtime.known()).unwrap();
    let workflow = compile(&spec, &runtime).unwrap();
    let input = json!({"notes_path": "notes.md", "topic": "<i>agents</i>"});

    let mut report = HtmlReport::new("research");
    for label in ["cold", "warm"] {
        let sink = MemorySink::new();
        let outcome = workflow.run(input.clone(), |c| c.sink(sink.clone())).await;
        report = report.run(report_run(&spec, &outcome, sink.events()).label(label));
    }
    let html = report.render();
    let _ = std::fs::remove_dir_all(&dir);

    // Both runs, every step of each (the skipped branch included).
    for run in 0..2 {
        for node in ["research", "summarize", "decide", "deep", "shallow"] {
            assert!(
                html.contains(&format!("data-run=\"{run}\" data-step=")),
                "run {run}"
            );
            assert!(html.contains(&format!("data-node=\"{node}\"")), "{node}");
        }
    }
    assert_eq!(html.matches("class=\"step ").count(), 10);
    assert_eq!(html.matches("class=\"detail\"").count(), 10);
    assert!(html.contains("class=\"step skipped\""));
    // The cold run's retries and fallback, the warm run's cache hits.
    assert!(html.contains("title=\"2 retries\">↻2</span>"));
    assert!(html.contains("title=\"provider fallback\">⇄1</span>"));
    assert_eq!(html.matches("⚡cached</span>").count(), 2);
    assert!(html.contains("class=\"tick retry\""));
    assert!(html.contains("class=\"tick fallback\""));
    // Node labels, the comparison table and escaped inputs.
    assert!(html.contains("llm · Summarize"));
    assert!(html.contains("Runs side by side"));
    assert!(html.contains("&lt;i&gt;agents&lt;/i&gt;"));
    assert!(!html.contains("<i>agents</i>"));
    assert!(html.contains("notes &lt;script&gt;x&lt;/script&gt;"));
    assert_eq!(html.matches("<script").count(), 1);
    // The warm run costs nothing.
    assert!(html.contains("<td class=\"cost\">$0.00</td>"));
}
