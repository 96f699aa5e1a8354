#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use flowtrace_core::trace::MemorySink;
use flowtrace_core::trace::RunStatus;
use flowtrace_core::{GraphBuilder, JsonState, NodeOutput, RunConfig, node_fn};
use serde_json::{Map, json};

use super::*;

async fn hostile_run() -> ReportRun {
    let graph = GraphBuilder::<JsonState>::new("hostile</title><script>alert(1)</script>")
        .add_node(
            "evil",
            node_fn(|_s, ctx| async move {
                ctx.log(
                    flowtrace_core::trace::LogLevel::Info,
                    "<img src=x onerror=alert(2)>",
                );
                let mut update = Map::new();
                update.insert("x".into(), json!("</pre><script>alert(3)</script>"));
                Ok(NodeOutput::update(update))
            }),
        )
        .set_entry("evil")
        .set_finish("evil")
        .compile()
        .unwrap();
    let sink = MemorySink::new();
    let out = graph
        .invoke(JsonState::new(), RunConfig::new().sink(sink.clone()))
        .await
        .unwrap();
    ReportRun::new(out.summary, sink.events())
        .node_label("evil", "tool · <b>Evil</b> \"quoted\" 'single'")
        .output("evil", json!("</pre><script>alert(3)</script>"))
}

#[tokio::test]
async fn every_piece_of_run_data_is_escaped() {
    let html = HtmlReport::new("<script>alert('title')</script>")
        .run(hostile_run().await)
        .render();
    // Exactly one script element: the report's own.
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(!html.contains("<img"));
    assert!(!html.contains("<b>Evil</b>"));
    assert!(html.contains("&lt;script&gt;alert(&#39;title&#39;)&lt;/script&gt;"));
    assert!(html.contains("&lt;img src=x onerror=alert(2)&gt;"));
    assert!(html.contains("&lt;/pre&gt;&lt;script&gt;alert(3)&lt;/script&gt;"));
    assert!(html.contains("&quot;quoted&quot; &#39;single&#39;"));
}

#[tokio::test]
async fn the_report_is_self_contained() {
    let html = HtmlReport::new("r").run(hostile_run().await).render();
    assert!(html.contains("Content-Security-Policy"));
    assert!(html.contains("default-src 'none'"));
    for needle in ["http://", "https://", "<link", "@import", "url("] {
        assert!(!html.contains(needle), "found {needle}");
    }
}

#[tokio::test]
async fn each_step_has_a_button_and_a_hidden_detail_panel() {
    let run = hostile_run().await;
    let steps = run.summary().steps.len();
    let html = HtmlReport::new("r").run(run).render();
    assert_eq!(steps, 1);
    assert!(
        html.contains("class=\"step succeeded\" data-run=\"0\" data-step=\"1\" data-node=\"evil\"")
    );
    assert!(html.contains("id=\"detail-0-1\" data-step=\"1\" data-node=\"evil\" hidden"));
    assert!(html.contains("aria-controls=\"detail-0-1\""));
    // Details show the output and the raw events.
    assert!(html.contains("node output"));
    assert!(html.contains("Raw events (JSON)"));
    assert!(html.contains("&quot;kind&quot;: &quot;step.finished&quot;"));
    // No comparison table for one run.
    assert!(!html.contains("Runs side by side"));
}

#[test]
fn long_text_is_clipped_on_a_char_boundary() {
    let text = "é".repeat(MAX_TEXT); // two bytes each
    let clipped = clip(&text);
    assert!(clipped.len() < text.len());
    assert!(clipped.ends_with("more bytes not shown)"));
    assert_eq!(clip("short"), "short");
}

#[test]
fn durations_read_naturally() {
    assert_eq!(duration(850), "850 µs");
    assert_eq!(duration(12_340), "12.3 ms");
    assert_eq!(duration(1_250_000), "1.25 s");
    assert_eq!(duration(-5), "0 µs");
}

fn record(id: u64, node: &str, started: i64, latency_ms: u64) -> flowtrace_core::StepRecord {
    let mut step = flowtrace_core::StepRecord::new(
        StepId(id),
        node,
        StepStatus::Succeeded,
        flowtrace_core::trace::Timestamp::from_unix_micros(started),
    );
    step.latency = std::time::Duration::from_millis(latency_ms);
    step
}

#[test]
fn a_resumed_run_places_earlier_steps_on_the_axis() {
    // The thread's first step ran a second before this invocation started.
    let t0 = 1_800_000_000_000_000;
    let summary = RunSummary::new(
        flowtrace_core::RunId::new("r"),
        "g",
        RunStatus::Succeeded,
        vec![record(1, "a", t0 - 1_000_000, 250), record(2, "b", t0, 250)],
        flowtrace_core::trace::Timestamp::from_unix_micros(t0),
        std::time::Duration::from_millis(250),
    );
    let html = HtmlReport::new("r")
        .run(ReportRun::new(summary, Vec::new()))
        .render();
    // The axis spans 1.25 s from the first step: a at 0% (20% wide), b at 80%.
    assert!(html.contains("left:0.000%;width:20.000%"), "{html}");
    assert!(html.contains("left:80.000%;width:20.000%"), "{html}");
    assert!(html.contains("+1.00 s ("));
}

#[tokio::test]
async fn huge_errors_and_logs_are_clipped_everywhere() {
    let big = "x".repeat(400 * 1024);
    let message = big.clone();
    let graph = GraphBuilder::<JsonState>::new("big")
        .add_node(
            "boom",
            node_fn(move |_s, ctx| {
                let message = message.clone();
                async move {
                    ctx.log(flowtrace_core::trace::LogLevel::Warn, message.clone());
                    Err::<NodeOutput<Map<String, serde_json::Value>>, _>(
                        flowtrace_core::NodeError::permanent(message),
                    )
                }
            }),
        )
        .set_entry("boom")
        .set_finish("boom")
        .compile()
        .unwrap();
    let sink = MemorySink::new();
    let failure = graph
        .invoke(JsonState::new(), RunConfig::new().sink(sink.clone()))
        .await
        .unwrap_err();
    let html = HtmlReport::new("big")
        .run(ReportRun::new(*failure.summary, sink.events()))
        .render();
    // Unclipped, the message would appear five or more times (2 MB+).
    assert!(html.len() < 700 * 1024, "{} bytes", html.len());
    assert!(html.contains("more bytes not shown"));
}

#[test]
fn the_csp_hashes_match_the_script_and_style() {
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash = |text: &str| {
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(text.as_bytes()))
    };
    assert_eq!(SCRIPT_SHA256, hash(SCRIPT), "update SCRIPT_SHA256");
    assert_eq!(STYLE_SHA256, hash(STYLE), "update STYLE_SHA256");
    let html = HtmlReport::new("r").render();
    assert!(html.contains(&format!("script-src 'sha256-{SCRIPT_SHA256}'")));
    assert!(!html.contains("script-src 'unsafe-inline'"));
    // The script and style are embedded byte for byte.
    assert!(html.contains(&format!("<script>{SCRIPT}</script>")));
    assert!(html.contains(&format!("<style>{STYLE}</style>")));
}

#[tokio::test]
async fn control_and_bidi_characters_are_shown_not_obeyed() {
    let hostile =
        "a\u{0}b\u{202e}evil\u{202c}\u{2066}x\u{2069}\u{1b}[31m\u{7f}\u{85}\u{200f}\tok\n";
    let run = hostile_run()
        .await
        .output("evil", json!(hostile))
        .node_label("evil", "label\u{202e}txt.exe\u{0}");
    let html = HtmlReport::new("title\u{2067}x\u{0}").run(run).render();
    for raw in [
        '\u{0}', '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}', '\u{2066}',
        '\u{2067}', '\u{2068}', '\u{2069}', '\u{1b}', '\u{7f}', '\u{85}', '\u{200f}',
    ] {
        assert!(!html.contains(raw), "raw {:?} in the report", raw);
    }
    assert!(
        html.contains("a␀b\\u{202e}evil\\u{202c}\\u{2066}x\\u{2069}␛[31m␡\\u{85}\\u{200f}\tok")
    );
    assert!(html.contains("label\\u{202e}txt.exe␀"));
    assert!(html.contains("title\\u{2067}x␀"));
}
