//! The HTML trace report in a real headless browser (Debian's Chromium):
//! every step is in the rendered DOM, clicking a step with a real mouse
//! click shows its details, hostile run data stays text, nothing is
//! fetched, and a screenshot is saved under `target/tmp/`.
//!
//! Enabled when Chromium is found (`FLOWTRACE_CHROMIUM`, set by `.ci/run`,
//! or `/usr/bin/chromium`); otherwise skipped with a loud message, and a
//! failure when `FLOWTRACE_REQUIRE_PEERS=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};

use flowtrace::report::HtmlReport;
use flowtrace::trace::MemorySink;
use flowtrace::workflow::compile::{Runtime, compile};
use flowtrace::workflow::spec::load;
use flowtrace::workflow::summary::{WorkflowSummary, report_run};
use serde_json::{Value, json};
use support::browser::Browser;

const RESEARCH: &str = include_str!("../../examples/workflows/research.json");

/// A topic that would run script if it were inserted as HTML.
const HOSTILE: &str =
    "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">";

fn chromium() -> Option<PathBuf> {
    std::env::var_os("FLOWTRACE_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/usr/bin/chromium")])
        .find(|p| p.exists())
}

/// Two runs of research.json (cold, then from the cache) with a hostile
/// topic, rendered to `path`; returns their summaries.
async fn write_report(path: &Path) -> Vec<WorkflowSummary> {
    let dir = path.parent().unwrap();
    std::fs::write(dir.join("notes.md"), "Notes with </pre><b>markup</b>.").unwrap();
    let runtime = Runtime::offline(dir);
    let spec = load(RESEARCH, &runtime.known()).unwrap();
    let workflow = compile(&spec, &runtime).unwrap();
    let input = json!({"notes_path": "notes.md", "topic": HOSTILE});
    let mut report = HtmlReport::new(format!("browser test {HOSTILE}"));
    let mut summaries = Vec::new();
    for label in ["cold", "warm"] {
        let sink = MemorySink::new();
        let outcome = workflow.run(input.clone(), |c| c.sink(sink.clone())).await;
        summaries.push(WorkflowSummary::new(&spec, &outcome));
        report = report.run(report_run(&spec, &outcome, sink.events()).label(label));
    }
    report.write_to(path).unwrap();
    summaries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_renders_every_step_and_clicking_shows_its_details() {
    let Some(chromium) = chromium() else {
        let msg = "no Chromium (apt-get install chromium, or set FLOWTRACE_CHROMIUM)";
        assert!(
            std::env::var("FLOWTRACE_REQUIRE_PEERS").as_deref() != Ok("1"),
            "FLOWTRACE_REQUIRE_PEERS=1 but {msg}"
        );
        eprintln!("\n*** SKIPPED the headless-browser report test: {msg} ***\n");
        return;
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-browser");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("flowtrace-report.html");
    let summaries = write_report(&path).await;

    let browser = Browser::launch(&chromium).await.unwrap();
    let page = browser
        .open(&format!("file://{}", path.display()))
        .await
        .unwrap();

    // Every step of both runs is in the DOM, in order.
    for (run, summary) in summaries.iter().enumerate() {
        let nodes: Vec<String> = page
            .eval(&format!(
                "[...document.querySelectorAll('.run[data-run=\"{run}\"] .waterfall .step')].map(b => b.dataset.node)"
            ))
            .await
            .unwrap();
        let expected: Vec<&str> = summary.steps.iter().map(|s| s.node_id.as_str()).collect();
        assert_eq!(nodes, expected, "run {run}");
    }
    let hidden: bool = page
        .eval("[...document.querySelectorAll('.detail')].every(d => d.hidden && d.offsetParent === null)")
        .await
        .unwrap();
    assert!(hidden, "every detail panel starts hidden");

    // The hostile topic is shown as text and never ran.
    let pwned: Value = page.eval("window.__pwned ?? null").await.unwrap();
    assert_eq!(pwned, Value::Null, "run data was executed as HTML");
    let scripts: u64 = page
        .eval("document.querySelectorAll('script').length")
        .await
        .unwrap();
    assert_eq!(scripts, 1, "only the report's own script");
    let images: u64 = page.eval("document.images.length").await.unwrap();
    assert_eq!(images, 0);
    let title: String = page.eval("document.title").await.unwrap();
    assert!(title.contains("<script>"), "{title}");
    // Nothing was fetched.
    let fetched: u64 = page
        .eval("performance.getEntriesByType('resource').length")
        .await
        .unwrap();
    assert_eq!(fetched, 0);

    // The Content-Security-Policy lets the report's own style and bar
    // positions apply (the script's working is shown by the clicks below).
    let styled: Value = page
        .eval(
            "(() => { const bar = document.querySelector('.step[data-node=\"summarize\"] .bar');
                      const css = getComputedStyle(bar);
                      return { position: css.position, width: bar.getBoundingClientRect().width,
                               color: css.backgroundColor }; })()",
        )
        .await
        .unwrap();
    assert_eq!(styled["position"], "absolute", "{styled}");
    assert!(styled["width"].as_f64().unwrap() > 10.0, "{styled}");
    assert_ne!(styled["color"], "rgba(0, 0, 0, 0)", "{styled}");

    // Click every step (real mouse events); its panel shows its details.
    for (run, summary) in summaries.iter().enumerate() {
        let ids: Vec<String> = page
            .eval(&format!(
                "[...document.querySelectorAll('.run[data-run=\"{run}\"] .step')].map(b => b.getAttribute('aria-controls'))"
            ))
            .await
            .unwrap();
        assert_eq!(ids.len(), summary.steps.len());
        for (id, step) in ids.iter().zip(&summary.steps) {
            page.click(&format!(".step[aria-controls='{id}']"))
                .await
                .unwrap();
            let state: Value = page
                .eval(&format!(
                    "(() => {{ const el = document.getElementById('{id}');
                      const run = el.closest('.run');
                      const fact = k => el.querySelector(`dd[data-fact=\"${{k}}\"]`)?.textContent;
                      return {{ visible: !el.hidden && el.offsetParent !== null,
                               others_hidden: [...run.querySelectorAll('.detail')].filter(d => d !== el).every(d => d.hidden),
                               expanded: run.querySelector(`.step[aria-controls='{id}']`).getAttribute('aria-expanded'),
                               node: el.dataset.node, text: el.textContent,
                               status: fact('status'), cost: fact('cost'), tokens: fact('tokens'),
                               latency: fact('latency'), raw: el.querySelector('pre.json')?.textContent }}; }})()"
                ))
                .await
                .unwrap();
            let node = step.node_id.as_str();
            assert_eq!(state["visible"], true, "{node} (run {run}): {state}");
            assert_eq!(state["others_hidden"], true, "{node}: {state}");
            assert_eq!(state["expanded"], "true");
            assert_eq!(state["node"], node);
            let status = serde_json::to_value(step.status).unwrap();
            assert_eq!(state["status"], status, "{node}");
            assert_eq!(state["cost"], step.cost_usd.to_string(), "{node}");
            assert_eq!(
                state["tokens"],
                format!("{} in · {} out", step.tokens_input, step.tokens_output),
                "{node}"
            );
            assert!(state["latency"].is_string(), "{node}: {state}");
            let raw = state["raw"].as_str().unwrap_or_default();
            if step.status != flowtrace::StepStatus::Skipped {
                assert!(raw.contains("\"step.started\""), "{node}: raw events {raw}");
            }
            let text = state["text"].as_str().unwrap();
            if node == "summarize" {
                // Its inputs show the hostile topic as text, its output the reply.
                assert!(text.contains(HOSTILE), "{text}");
                assert!(text.contains("Inputs") && text.contains("Outputs"));
                if run == 0 {
                    assert!(text.contains("retry"), "{text}");
                    assert!(text.contains("fallback"), "{text}");
                } else {
                    assert!(text.contains("cache.hit"), "{text}");
                }
            }
        }
    }

    // A screenshot of the cold run with summarize's details open.
    page.click(".run[data-run=\"0\"] .step[data-node='summarize']")
        .await
        .unwrap();
    page.eval::<Value>("window.scrollTo(0, 0)").await.unwrap();
    let png = page.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("report-screenshot.png");
    std::fs::write(&shot, &png).unwrap();
    eprintln!("report: {}\nscreenshot: {}", path.display(), shot.display());
    browser.close().await;
}
