//! A self-contained HTML trace report of one or more runs.
//!
//! [`HtmlReport`] renders runs — each a [`RunSummary`] with the
//! [`TraceEvent`]s it emitted — into a single HTML file that opens in any
//! browser without network access (no external scripts, styles or fonts; a
//! Content-Security-Policy forbids fetching anything). Each run gets:
//!
//! * a summary header: status, elapsed time, steps, tokens, exact cost,
//!   cache hits, retries and fallbacks, and the error when it failed;
//! * a waterfall of its steps on a time axis, with retries (`↻`), provider
//!   fallbacks (`⇄`) and cache hits (`⚡`) marked on the bars;
//! * a detail panel per step, shown by clicking the step: inputs (the
//!   step's input, model requests, tool arguments), outputs (model replies,
//!   tool results, the router's branch), tokens, cost, latency, the step's
//!   event list and its raw events as JSON.
//!
//! With several runs (say a cold and a warm run of the same workflow), a
//! table at the top puts their totals side by side.
//!
//! Every piece of run data is HTML-escaped: a prompt containing `<script>`
//! shows as text and never runs. Control characters show as visible
//! symbols (`␀` for NUL) and bidirectional overrides and isolates as
//! `\u{202e}`-style text, so they cannot hide or reorder what is shown. The only script is the report's own,
//! static, which switches detail panels.
//!
//! ```
//! use flowtrace_report::{HtmlReport, ReportRun};
//! use flowtrace_core::trace::MemorySink;
//! use flowtrace_core::{GraphBuilder, JsonState, NodeOutput, RunConfig, node_fn};
//! use serde_json::{Map, json};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let graph = GraphBuilder::<JsonState>::new("hello")
//!     .add_node("greet", node_fn(|_s, _ctx| async {
//!         let mut update = Map::new();
//!         update.insert("greeting".into(), json!("<b>hi</b>"));
//!         Ok(NodeOutput::update(update))
//!     }))
//!     .set_entry("greet")
//!     .set_finish("greet")
//!     .compile()
//!     .unwrap();
//! let sink = MemorySink::new();
//! let out = graph.invoke(JsonState::new(), RunConfig::new().sink(sink.clone())).await.unwrap();
//!
//! let html = HtmlReport::new("Hello report")
//!     .run(ReportRun::new(out.summary, sink.events()).output("greet", json!("<b>hi</b>")))
//!     .render();
//! assert!(html.contains(r#"data-node="greet""#));
//! assert!(html.contains("&lt;b&gt;hi&lt;/b&gt;"));
//! assert!(!html.contains("<b>hi</b>"));
//! # });
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use flowtrace_core::trace::{CacheOutcome, EventKind, RunStatus, StepStatus, TraceEvent};
use flowtrace_core::{Cost, RunSummary, StepId, TokenUsage};
use serde_json::Value;

/// Longest text shown for one value; longer ones are cut with a note.
pub const MAX_TEXT: usize = 64 * 1024;

mod html;
mod recorder;
mod run;
pub mod size;

use html::*;
use run::*;

pub use recorder::{ReportRecorder, clip_value};

/// One run in a report: its summary and the events it emitted.
#[derive(Debug, Clone)]
pub struct ReportRun {
    label: Option<String>,
    summary: RunSummary,
    events: Vec<TraceEvent>,
    node_labels: HashMap<String, String>,
    outputs: HashMap<String, Value>,
    branches: HashMap<String, String>,
}

impl ReportRun {
    /// A run from its summary and its events (events of other runs are
    /// ignored; subgraphs share their parent's run id, so theirs are kept).
    pub fn new(summary: RunSummary, events: Vec<TraceEvent>) -> Self {
        Self {
            label: None,
            summary,
            events,
            node_labels: HashMap::new(),
            outputs: HashMap::new(),
            branches: HashMap::new(),
        }
    }

    /// Names the run in the report (default: `Run <n>`).
    #[must_use]
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// A description shown next to node `node` (for example its type and
    /// display name).
    #[must_use]
    pub fn node_label(mut self, node: impl Into<String>, label: impl Into<String>) -> Self {
        self.node_labels.insert(node.into(), label.into());
        self
    }

    /// The output node `node` produced, shown in its steps' details in
    /// addition to what the events show.
    #[must_use]
    pub fn output(mut self, node: impl Into<String>, output: Value) -> Self {
        self.outputs.insert(node.into(), output);
        self
    }

    /// The branch router `node` chose, in the router's own terms (shown
    /// for its last succeeded step instead of the executor's edge label).
    #[must_use]
    pub fn branch(mut self, node: impl Into<String>, branch: impl Into<String>) -> Self {
        self.branches.insert(node.into(), branch.into());
        self
    }

    /// The run's summary.
    pub fn summary(&self) -> &RunSummary {
        &self.summary
    }
}

/// A self-contained HTML report of runs. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct HtmlReport {
    title: String,
    runs: Vec<ReportRun>,
}

impl HtmlReport {
    /// An empty report with a title.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            runs: Vec::new(),
        }
    }

    /// Adds a run.
    #[must_use]
    pub fn run(mut self, run: ReportRun) -> Self {
        self.runs.push(run);
        self
    }

    /// The runs, in order.
    pub fn runs(&self) -> &[ReportRun] {
        &self.runs
    }

    /// Writes the report to `path`.
    pub fn write_to(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.render())
    }

    /// The HTML document.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(32 * 1024);
        out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
        out.push_str(
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
             script-src 'sha256-",
        );
        out.push_str(SCRIPT_SHA256);
        // Style attributes (bar positions) cannot run code; the style
        // element is pinned by its hash where browsers know style-src-elem.
        out.push_str("'; style-src 'unsafe-inline'; style-src-elem 'sha256-");
        out.push_str(STYLE_SHA256);
        out.push_str("'; style-src-attr 'unsafe-inline'\">\n");
        out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
        let _ = writeln!(out, "<title>{}</title>", esc(&self.title));
        out.push_str("<style>");
        out.push_str(STYLE);
        out.push_str("</style>\n</head>\n<body>\n<header class=\"report-header\">");
        let _ = write!(
            out,
            "<h1>{}</h1><p class=\"generated\">FlowTrace report · {} run{}</p></header>\n<main>\n",
            esc(&self.title),
            self.runs.len(),
            if self.runs.len() == 1 { "" } else { "s" }
        );
        if self.runs.len() > 1 {
            self.render_comparison(&mut out);
        }
        for (index, run) in self.runs.iter().enumerate() {
            RunView::new(index, run).render(&mut out);
        }
        if self.runs.is_empty() {
            out.push_str("<p class=\"empty\">No runs.</p>");
        }
        out.push_str("</main>\n<script>");
        out.push_str(SCRIPT);
        out.push_str("</script>\n</body>\n</html>\n");
        out
    }

    fn render_comparison(&self, out: &mut String) {
        out.push_str(
            "<section class=\"comparison\"><h2>Runs side by side</h2><table>\
             <thead><tr><th>run</th><th>status</th><th>elapsed</th><th>steps</th>\
             <th>input tokens</th><th>output tokens</th><th>cost</th><th>cache hits</th>\
             <th>retries</th><th>fallbacks</th></tr></thead><tbody>",
        );
        for (index, run) in self.runs.iter().enumerate() {
            let s = &run.summary;
            let t = Tally::of(s);
            let _ = write!(
                out,
                "<tr data-run=\"{index}\"><td><a href=\"#run-{index}\">{}</a></td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td class=\"cost\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&run_label(index, run)),
                status_badge(run_status(s.status)),
                duration(micros(s.elapsed)),
                s.node_executions,
                s.usage.input_tokens,
                s.usage.output_tokens,
                esc(&s.cost.to_string()),
                t.cache_hits,
                t.retries,
                t.fallbacks,
            );
        }
        out.push_str("</tbody></table></section>\n");
    }
}

/// Base64 SHA-256 of [`SCRIPT`] and [`STYLE`], for the Content-Security-
/// Policy: only the report's own script may run, even if run data ever
/// slipped through unescaped. A unit test recomputes them.
const SCRIPT_SHA256: &str = "a0i3S0Q65UKCYaPc6W4P57aO1RZZQi8+xE/JrFq7XFM=";
const STYLE_SHA256: &str = "Fd9Ce/iI62H38udKPeZzOmYo3RJidRJcud+mC+Olp1Y=";

const STYLE: &str = r#"
:root{--bg:#f7f7f9;--fg:#1d1f23;--muted:#6b7280;--line:#e3e5ea;--card:#fff;--ok:#1a7f37;--fail:#c62828;--skip:#9aa0a6;--warn:#b26a00;--int:#6f42c1;--bar:#3b6fd8;--cache:#0f8a8a;--mono:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--fg)}
.report-header{padding:16px 24px;border-bottom:1px solid var(--line);background:var(--card)}h1{margin:0;font-size:20px}.generated{margin:2px 0 0;color:var(--muted)}
main{padding:16px 24px}h2{font-size:17px;margin:0 0 8px}h3{font-size:15px;margin:0 0 6px}h4{margin:14px 0 4px;font-size:13px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
.comparison,.run{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:14px 16px;margin-bottom:18px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);white-space:nowrap}th{color:var(--muted);font-weight:600}
.totals{display:flex;flex-wrap:wrap;gap:6px 22px;margin:0}.totals div{min-width:90px}dt{color:var(--muted);font-size:12px}dd{margin:0}.mono,pre{font-family:var(--mono)}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;background:var(--skip);vertical-align:middle}
.badge.succeeded{background:var(--ok)}.badge.failed{background:var(--fail)}.badge.interrupted{background:var(--int)}.badge.halted,.badge.canceled{background:var(--warn)}
.run-error{color:var(--fail);margin:8px 0 0}
.run-body{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:16px;margin-top:12px}@media (max-width:900px){.run-body{grid-template-columns:1fr}}
.axis{display:grid;grid-template-columns:34% 1fr 150px;gap:8px;padding:0 4px;color:var(--muted);font-size:11px;border-bottom:1px solid var(--line)}.axis-labels{display:flex;justify-content:space-between}
.step{display:grid;grid-template-columns:34% 1fr 150px;align-items:center;gap:8px;width:100%;padding:5px 4px;border:0;border-bottom:1px solid var(--line);background:none;text-align:left;font:inherit;color:inherit;cursor:pointer}
.step:hover,.step[aria-expanded=true]{background:#eef2fb}.step.skipped{color:var(--skip)}
.step-name{overflow-wrap:anywhere;line-height:1.3}.node{font-weight:600;font-family:var(--mono)}.node-label{color:var(--muted);margin-left:6px;font-size:12px}
.track{position:relative;height:16px;background-image:linear-gradient(to right,var(--line) 1px,transparent 1px);background-size:25% 100%;border-right:1px solid var(--line)}
.bar{position:absolute;top:3px;height:10px;border-radius:3px;background:var(--bar)}.bar.failed{background:var(--fail)}.bar.interrupted{background:var(--int)}.bar.canceled{background:var(--warn)}.step.cache .bar{background:var(--cache)}
.tick{position:absolute;top:0;width:2px;height:16px;background:var(--warn)}.tick.fallback{background:var(--int)}.tick.cache{background:var(--cache)}
.step-meta{color:var(--muted);font-size:12px;white-space:nowrap;text-align:right;overflow:hidden;text-overflow:ellipsis}
.mark{display:inline-block;margin-left:6px;padding:0 5px;border-radius:4px;font-size:11px;font-weight:600}.mark.retry{background:#fff1d6;color:var(--warn)}.mark.fallback{background:#efe6fb;color:var(--int)}.mark.cache{background:#dcf3f3;color:var(--cache)}
.legend{color:var(--muted);font-size:12px}.details{border-left:1px solid var(--line);padding-left:16px;min-width:0;position:sticky;top:8px;align-self:start;max-height:calc(100vh - 16px);overflow:auto}.detail-hint{color:var(--muted)}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0}.facts div{display:contents}
.block{margin:6px 0}.block figcaption{font-size:12px;color:var(--muted)}pre{margin:2px 0;padding:8px;background:#f3f4f6;border-radius:6px;white-space:pre-wrap;word-break:break-word;max-height:360px;overflow:auto;font-size:12px}
.events{padding-left:18px;margin:4px 0;font-size:12px}.ev .at{color:var(--muted);font-family:var(--mono)}.ev .kind{font-weight:600}.ev.retry .kind{color:var(--warn)}.ev.fallback .kind{color:var(--int)}.ev.cache .kind{color:var(--cache)}.ev.error .kind{color:var(--fail)}
.none{color:var(--muted);margin:2px 0}.step-id{color:var(--muted);font-weight:400;font-size:12px}
"#;

const SCRIPT: &str = r#"
(function () {
  function show(button) {
    var run = button.closest('.run');
    var target = button.getAttribute('aria-controls');
    run.querySelectorAll('.detail').forEach(function (d) { d.hidden = d.id !== target; });
    run.querySelectorAll('.step').forEach(function (b) {
      b.setAttribute('aria-expanded', b === button ? 'true' : 'false');
    });
    var hint = run.querySelector('.detail-hint');
    if (hint) { hint.hidden = true; }
  }
  document.querySelectorAll('.step').forEach(function (b) {
    b.addEventListener('click', function () { show(b); });
  });
})();
"#;

#[cfg(test)]
mod tests;
