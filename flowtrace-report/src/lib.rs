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
//! let out = graph.run(JsonState::new(), RunConfig::new().sink(sink.clone())).await.unwrap();
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

use flowtrace_core::trace::{EventKind, RunStatus, StepStatus, TraceEvent};
use flowtrace_core::{Cost, RunSummary, StepId, TokenUsage};
use serde_json::Value;

/// Longest text shown for one value; longer ones are cut with a note.
pub const MAX_TEXT: usize = 64 * 1024;

mod recorder;
pub mod size;

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
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// A description shown next to node `node` (for example its type and
    /// display name).
    pub fn node_label(mut self, node: impl Into<String>, label: impl Into<String>) -> Self {
        self.node_labels.insert(node.into(), label.into());
        self
    }

    /// The output node `node` produced, shown in its steps' details in
    /// addition to what the events show.
    pub fn output(mut self, node: impl Into<String>, output: Value) -> Self {
        self.outputs.insert(node.into(), output);
        self
    }

    /// The branch router `node` chose, in the router's own terms (shown
    /// for its last succeeded step instead of the executor's edge label).
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

fn run_label(index: usize, run: &ReportRun) -> String {
    run.label
        .clone()
        .unwrap_or_else(|| format!("Run {}", index + 1))
}

/// Counts over a run's steps.
#[derive(Default)]
struct Tally {
    cache_hits: u64,
    retries: u64,
    fallbacks: u64,
}

impl Tally {
    fn of(summary: &RunSummary) -> Self {
        let mut t = Tally::default();
        for s in &summary.steps {
            t.cache_hits += u64::from(s.cache_hits);
            t.retries += u64::from(s.retries());
            t.fallbacks += u64::from(s.fallbacks);
        }
        t
    }
}

/// One run, with its events grouped by step.
struct RunView<'a> {
    index: usize,
    run: &'a ReportRun,
    by_step: BTreeMap<StepId, Vec<&'a TraceEvent>>,
    run_events: Vec<&'a TraceEvent>,
    start: i64,
    span: i64,
    /// Each node's last succeeded step (whose output the state holds).
    last_success: HashMap<&'a str, StepId>,
}

impl<'a> RunView<'a> {
    fn new(index: usize, run: &'a ReportRun) -> Self {
        let summary = &run.summary;
        let mut by_step: BTreeMap<StepId, Vec<&TraceEvent>> = BTreeMap::new();
        let mut run_events = Vec::new();
        // Subgraphs run inside their parent's run (same run id), so events
        // of other run ids belong to other runs and are left out.
        for ev in run.events.iter().filter(|e| e.run_id == summary.run_id) {
            match ev.step_id {
                Some(step) => by_step.entry(step).or_default().push(ev),
                None => run_events.push(ev),
            }
        }
        // A resumed run's summary covers the whole thread: its first steps
        // may have started before this invocation.
        let run_start = summary.started_at.unix_micros();
        let start = summary
            .steps
            .iter()
            .map(|s| s.started_at.unix_micros())
            .fold(run_start, i64::min);
        let mut end = run_start.saturating_add(micros(summary.elapsed));
        for s in &summary.steps {
            end = end.max(s.started_at.unix_micros().saturating_add(micros(s.latency)));
        }
        let mut last_success = HashMap::new();
        for s in &summary.steps {
            if s.status == StepStatus::Succeeded {
                last_success.insert(s.node.as_ref(), s.step_id);
            }
        }
        Self {
            index,
            run,
            by_step,
            run_events,
            start,
            span: (end - start).max(1),
            last_success,
        }
    }

    fn pct(&self, micros_from_start: i64) -> f64 {
        (micros_from_start.clamp(0, self.span) as f64) * 100.0 / self.span as f64
    }

    fn render(&self, out: &mut String) {
        let s = &self.run.summary;
        let t = Tally::of(s);
        let i = self.index;
        let saved: Cost = self
            .by_step
            .values()
            .flatten()
            .filter_map(|e| match &e.kind {
                EventKind::CacheHit { saved_cost, .. } => Some(*saved_cost),
                _ => None,
            })
            .sum();
        let _ = write!(
            out,
            "<section class=\"run\" id=\"run-{i}\" data-run=\"{i}\">\
             <div class=\"run-summary\"><h2>{label} {badge}</h2>\
             <dl class=\"totals\">\
             <div><dt>run</dt><dd class=\"mono\">{run_id}</dd></div>\
             <div><dt>graph</dt><dd>{graph}</dd></div>\
             <div><dt>started</dt><dd class=\"mono\">{started}</dd></div>\
             <div><dt>elapsed</dt><dd>{elapsed}</dd></div>\
             <div><dt>steps</dt><dd>{executed} run · {skipped} skipped · {failed} failed</dd></div>\
             <div><dt>tokens</dt><dd>{tin} in · {tout} out</dd></div>\
             <div><dt>cost</dt><dd class=\"cost\">{cost}</dd></div>\
             <div><dt>cache hits</dt><dd>{hits}{saved}</dd></div>\
             <div><dt>retries</dt><dd>{retries}</dd></div>\
             <div><dt>fallbacks</dt><dd>{fallbacks}</dd></div>\
             </dl>",
            label = esc(&run_label(i, self.run)),
            badge = status_badge(run_status(s.status)),
            run_id = esc(s.run_id.as_ref()),
            graph = esc(&s.graph),
            started = esc(&s.started_at.to_string()),
            elapsed = duration(micros(s.elapsed)),
            executed = s.node_executions,
            skipped = s.count(StepStatus::Skipped),
            failed = s.count(StepStatus::Failed),
            tin = s.usage.input_tokens,
            tout = s.usage.output_tokens,
            cost = esc(&s.cost.to_string()),
            hits = t.cache_hits,
            saved = if saved > Cost::ZERO {
                format!(" (saved {})", esc(&saved.to_string()))
            } else {
                String::new()
            },
            retries = t.retries,
            fallbacks = t.fallbacks,
        );
        if let Some(error) = &s.error {
            let _ = write!(
                out,
                "<p class=\"run-error\"><strong>{}</strong>: {}</p>",
                esc(&error.kind),
                esc(&clip(&error.message))
            );
        }
        out.push_str("</div>\n<div class=\"run-body\">");
        self.render_waterfall(out);
        self.render_details(out);
        out.push_str("</div></section>\n");
    }

    fn render_waterfall(&self, out: &mut String) {
        let i = self.index;
        out.push_str("<div class=\"waterfall\">");
        let _ = write!(
            out,
            "<div class=\"axis\"><span></span><span class=\"axis-labels\"><span>0</span><span>{}</span><span>{}</span></span><span></span></div>",
            duration(self.span / 2),
            duration(self.span)
        );
        for step in &self.run.summary.steps {
            let id = step.step_id.0;
            let node = step.node.as_ref();
            let events = self.events_of(step.step_id);
            let left = self.pct(step.started_at.unix_micros() - self.start);
            let width = if step.status == StepStatus::Skipped {
                0.0
            } else {
                self.pct(micros(step.latency)).max(0.4).min(100.0 - left)
            };
            let status = step_status(step.status);
            let cached = if step.cache_hits > 0 { " cache" } else { "" };
            let mut marks = String::new();
            let retries = step.retries();
            if retries > 0 {
                let _ = write!(
                    marks,
                    "<span class=\"mark retry\" title=\"{retries} retr{}\">↻{retries}</span>",
                    if retries == 1 { "y" } else { "ies" }
                );
            }
            if step.fallbacks > 0 {
                let _ = write!(
                    marks,
                    "<span class=\"mark fallback\" title=\"provider fallback\">⇄{}</span>",
                    step.fallbacks
                );
            }
            if step.cache_hits > 0 {
                marks.push_str("<span class=\"mark cache\" title=\"cache hit\">⚡cached</span>");
            }
            let mut ticks = String::new();
            for ev in &events {
                let class = match ev.kind {
                    EventKind::Retry { .. } => "retry",
                    EventKind::Fallback { .. } => "fallback",
                    EventKind::CacheHit { .. } => "cache",
                    _ => continue,
                };
                let at = self.pct(ev.ts.unix_micros() - self.start);
                let _ = write!(
                    ticks,
                    "<span class=\"tick {class}\" style=\"left:{at:.3}%\" title=\"{} at {}\"></span>",
                    esc(ev.kind.name()),
                    duration(ev.ts.unix_micros() - self.start)
                );
            }
            let label = self.run.node_labels.get(node);
            let _ = write!(
                out,
                "<button type=\"button\" class=\"step {status}{cached}\" data-run=\"{i}\" \
                 data-step=\"{id}\" data-node=\"{node_attr}\" data-status=\"{status}\" \
                 aria-controls=\"detail-{i}-{id}\" aria-expanded=\"false\">\
                 <span class=\"step-name\"><span class=\"node\">{node_text}</span>{label}{marks}</span>\
                 <span class=\"track\"><span class=\"bar {status}\" style=\"left:{left:.3}%;width:{width:.3}%\"></span>{ticks}</span>\
                 <span class=\"step-meta\">{meta}</span></button>",
                node_attr = esc(node),
                node_text = esc(node),
                label = label
                    .map(|l| format!("<span class=\"node-label\">{}</span>", esc(l)))
                    .unwrap_or_default(),
                meta = if step.status == StepStatus::Skipped {
                    "skipped".to_string()
                } else {
                    format!(
                        "{} · {}",
                        duration(micros(step.latency)),
                        esc(&step.cost.to_string())
                    )
                },
            );
        }
        out.push_str(
            "<p class=\"legend\"><span class=\"mark retry\">↻ retry</span> \
             <span class=\"mark fallback\">⇄ fallback</span> \
             <span class=\"mark cache\">⚡ cache hit</span> · click a step for its details</p>",
        );
        if !self.run_events.is_empty() {
            out.push_str("<details class=\"run-events\"><summary>Run events</summary>");
            raw_events(out, &self.run_events);
            out.push_str("</details>");
        }
        out.push_str("</div>");
    }

    fn events_of(&self, step: StepId) -> Vec<&'a TraceEvent> {
        self.by_step.get(&step).cloned().unwrap_or_default()
    }

    fn render_details(&self, out: &mut String) {
        let i = self.index;
        out.push_str("<aside class=\"details\"><p class=\"detail-hint\">Click a step to see its inputs, outputs, tokens, cost, latency and raw events.</p>");
        for step in &self.run.summary.steps {
            let id = step.step_id.0;
            let node = step.node.as_ref();
            let events = self.events_of(step.step_id);
            let _ = write!(
                out,
                "<section class=\"detail\" id=\"detail-{i}-{id}\" data-step=\"{id}\" data-node=\"{}\" hidden>\
                 <h3>{} <span class=\"step-id\">step {id}</span> {}</h3>",
                esc(node),
                esc(node),
                status_badge(step_status(step.status)),
            );
            if let Some(label) = self.run.node_labels.get(node) {
                let _ = write!(out, "<p class=\"node-label\">{}</p>", esc(label));
            }
            out.push_str("<dl class=\"facts\">");
            fact(out, "status", step_status(step.status));
            // Calls tried: node executions plus retried and fallen-back
            // model calls (the JSON summary's `attempts`).
            let tried = step.calls_tried();
            fact(out, "attempts", &tried.to_string());
            let retries = step.retries();
            fact(out, "retries", &retries.to_string());
            fact(out, "fallbacks", &step.fallbacks.to_string());
            if let Some(p) = &step.provider {
                fact(out, "provider", p);
            }
            if let Some(m) = &step.model {
                fact(out, "model", m);
            }
            let rule_branch = self
                .run
                .branches
                .get(node)
                .filter(|_| self.last_success_of(node) == Some(step.step_id));
            if let Some(b) = rule_branch.or(step.branch.as_ref()) {
                fact(out, "branch", b);
            }
            fact(
                out,
                "cache hit",
                if step.cache_hits > 0 { "yes" } else { "no" },
            );
            fact(out, "tokens", &tokens(&step.usage));
            fact(out, "cost", &step.cost.to_string());
            fact(out, "latency", &duration(micros(step.latency)));
            fact(
                out,
                "started",
                &format!(
                    "+{} ({})",
                    duration(step.started_at.unix_micros() - self.start),
                    step.started_at
                ),
            );
            if let Some(e) = &step.error {
                fact(
                    out,
                    if step.status == StepStatus::Skipped {
                        "reason"
                    } else {
                        "error"
                    },
                    e,
                );
            }
            out.push_str("</dl>");

            out.push_str("<h4>Inputs</h4>");
            let mut inputs = 0;
            if let Some(input) = &step.input {
                block(out, "step input", &pretty(input));
                inputs += 1;
            }
            for ev in &events {
                match &ev.kind {
                    EventKind::StepStarted { input: Some(v) } if step.input.is_none() => {
                        block(out, "step input", &pretty(v));
                    }
                    EventKind::LlmRequest {
                        provider,
                        model,
                        request,
                        estimated_input_tokens,
                        ..
                    } => {
                        let mut text = String::new();
                        if let Some(system) = &request.system {
                            let _ = writeln!(text, "[system]\n{system}\n");
                        }
                        for m in &request.messages {
                            let role = serde_json::to_value(m.role)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default();
                            let _ = writeln!(text, "[{role}]\n{}\n", m.content);
                        }
                        block(
                            out,
                            &format!(
                                "request to {provider}/{model} (attempt {}, ~{estimated_input_tokens} input tokens)",
                                ev.attempt
                            ),
                            text.trim_end(),
                        );
                    }
                    EventKind::ToolRequest { tool, arguments } => {
                        block(out, &format!("{tool} arguments"), &pretty(arguments));
                    }
                    EventKind::Resume { payload } => {
                        block(out, "decision", &pretty(payload));
                    }
                    _ => continue,
                }
                inputs += 1;
            }
            if inputs == 0 {
                out.push_str("<p class=\"none\">none recorded</p>");
            }

            out.push_str("<h4>Outputs</h4>");
            let mut outputs = 0;
            for ev in &events {
                match &ev.kind {
                    EventKind::LlmResponse {
                        provider,
                        model,
                        text,
                        usage,
                        cost,
                        latency_us,
                        ..
                    } => block(
                        out,
                        &format!(
                            "reply from {provider}/{model} · {} · {} · {}",
                            tokens(usage),
                            cost,
                            duration(to_i64(*latency_us))
                        ),
                        text,
                    ),
                    EventKind::ToolResponse {
                        tool,
                        output,
                        error,
                        latency_us,
                    } => {
                        let label = format!("{tool} result · {}", duration(to_i64(*latency_us)));
                        match (output, error) {
                            (_, Some(e)) => block(out, &label, &format!("error: {e}")),
                            (Some(v), None) => block(out, &label, &pretty(v)),
                            (None, None) => block(out, &label, "(no output)"),
                        }
                    }
                    EventKind::Route { branch, targets } => block(
                        out,
                        "route",
                        &format!("branch `{branch}` → {}", targets.join(", ")),
                    ),
                    EventKind::Interrupt { payload } => {
                        block(out, "waiting for a decision", &pretty(payload))
                    }
                    _ => continue,
                }
                outputs += 1;
            }
            if let Some(v) = self.run.outputs.get(node).filter(|_| {
                matches!(step.status, StepStatus::Succeeded)
                    && self.last_success_of(node) == Some(step.step_id)
            }) {
                block(out, "node output", &text_or_json(v));
                outputs += 1;
            }
            if outputs == 0 {
                out.push_str("<p class=\"none\">none recorded</p>");
            }

            let _ = write!(out, "<h4>Events ({})</h4>", events.len());
            out.push_str("<ol class=\"events\">");
            for ev in &events {
                if matches!(ev.kind, EventKind::LlmDelta { .. }) {
                    continue;
                }
                let _ = write!(
                    out,
                    "<li class=\"ev {}\"><span class=\"at\">+{}</span> <span class=\"kind\">{}</span> {}</li>",
                    kind_class(&ev.kind),
                    duration(ev.ts.unix_micros() - self.start),
                    esc(ev.kind.name()),
                    esc(&clip(&describe(ev))),
                );
            }
            let deltas = events
                .iter()
                .filter(|e| matches!(e.kind, EventKind::LlmDelta { .. }))
                .count();
            if deltas > 0 {
                let _ = write!(
                    out,
                    "<li class=\"ev\"><span class=\"kind\">llm.delta</span> × {deltas} (streamed pieces, folded)</li>"
                );
            }
            out.push_str("</ol><details class=\"raw\"><summary>Raw events (JSON)</summary>");
            raw_events(out, &events);
            out.push_str("</details></section>");
        }
        out.push_str("</aside>");
    }

    /// The last succeeded step of `node` (the one whose output the state
    /// holds).
    fn last_success_of(&self, node: &str) -> Option<StepId> {
        self.last_success.get(node).copied()
    }
}

fn raw_events(out: &mut String, events: &[&TraceEvent]) {
    let mut text = String::new();
    let mut deltas = 0usize;
    for ev in events {
        if matches!(ev.kind, EventKind::LlmDelta { .. }) {
            deltas += 1;
            continue;
        }
        if text.len() > MAX_TEXT {
            break;
        }
        text.push_str(&serde_json::to_string_pretty(ev).unwrap_or_default());
        text.push('\n');
    }
    if deltas > 0 {
        let _ = writeln!(
            text,
            "({deltas} llm.delta events folded: the reply is in llm.response)"
        );
    }
    let _ = write!(out, "<pre class=\"json\">{}</pre>", esc(&clip(&text)));
}

fn describe(ev: &TraceEvent) -> String {
    match &ev.kind {
        EventKind::StepStarted { .. } => format!("attempt {}", ev.attempt.max(1)),
        EventKind::StepFinished {
            status,
            attempts,
            error,
            ..
        } => {
            let mut s = format!("{} after {attempts} attempt(s)", step_status(*status));
            if let Some(e) = error {
                let _ = write!(s, ": {e}");
            }
            s
        }
        EventKind::StepSkipped { reason } => reason.clone(),
        EventKind::Route { branch, targets } => format!("{branch} → {}", targets.join(", ")),
        EventKind::LlmRequest {
            provider, model, ..
        } => format!("{provider}/{model}"),
        EventKind::LlmResponse {
            provider,
            model,
            usage,
            cost,
            ..
        } => format!("{provider}/{model} · {} · {cost}", tokens(usage)),
        EventKind::ToolRequest { tool, .. } => tool.clone(),
        EventKind::ToolResponse { tool, error, .. } => match error {
            Some(e) => format!("{tool} failed: {e}"),
            None => format!("{tool} ok"),
        },
        EventKind::Log { level, message } => format!("{level:?}: {message}"),
        EventKind::Retry {
            failed_attempt,
            delay_ms,
            error,
        } => format!("attempt {failed_attempt} failed ({error}); retry in {delay_ms} ms"),
        EventKind::CacheHit {
            provider,
            model,
            saved_cost,
            ..
        } => format!("{provider}/{model}, saved {saved_cost}"),
        EventKind::ModelRoute {
            profile,
            provider,
            model,
            reason,
            ..
        } => format!("{profile} → {provider}/{model} ({reason})"),
        EventKind::Fallback {
            from_provider,
            from_model,
            to_provider,
            to_model,
            reason,
        } => format!("{from_provider}/{from_model} → {to_provider}/{to_model} ({reason})"),
        EventKind::BudgetExceeded {
            limit,
            limit_value,
            observed,
            ..
        } => format!("{limit}: {observed} over {limit_value}"),
        EventKind::Error {
            error_kind,
            message,
        } => format!("{error_kind}: {message}"),
        EventKind::RunFinished { status, .. } => run_status(*status).to_string(),
        _ => String::new(),
    }
}

fn kind_class(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Retry { .. } => "retry",
        EventKind::Fallback { .. } => "fallback",
        EventKind::CacheHit { .. } => "cache",
        EventKind::Error { .. } | EventKind::BudgetExceeded { .. } => "error",
        _ => "",
    }
}

fn fact(out: &mut String, name: &str, value: &str) {
    let _ = write!(
        out,
        "<div><dt>{}</dt><dd data-fact=\"{}\">{}</dd></div>",
        esc(name),
        esc(name),
        esc(&clip(value))
    );
}

fn block(out: &mut String, label: &str, text: &str) {
    let _ = write!(
        out,
        "<figure class=\"block\"><figcaption>{}</figcaption><pre>{}</pre></figure>",
        esc(label),
        esc(&clip(text))
    );
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn text_or_json(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => pretty(other),
    }
}

fn tokens(u: &TokenUsage) -> String {
    let mut s = format!("{} in · {} out", u.input_tokens, u.output_tokens);
    if u.cached_input_tokens > 0 {
        let _ = write!(s, " ({} cached)", u.cached_input_tokens);
    }
    s
}

fn clip(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_TEXT {
        return text.into();
    }
    let mut cut = MAX_TEXT;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}\n… ({} more bytes not shown)",
        &text[..cut],
        text.len() - cut
    )
    .into()
}

fn micros(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `850 µs`, `12.3 ms`, `1.25 s`.
fn duration(us: i64) -> String {
    let us = us.max(0);
    if us < 1_000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.1} ms", us as f64 / 1_000.0)
    } else {
        format!("{:.2} s", us as f64 / 1_000_000.0)
    }
}

fn run_status(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Canceled => "canceled",
        RunStatus::Interrupted => "interrupted",
        RunStatus::Halted => "halted",
        _ => "unknown",
    }
}

fn step_status(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
        StepStatus::Canceled => "canceled",
        StepStatus::Interrupted => "interrupted",
        _ => "unknown",
    }
}

fn status_badge(status: &str) -> String {
    format!("<span class=\"badge {status}\">{status}</span>")
}

/// Escapes text for HTML content and quoted attribute values, and makes
/// invisible characters visible: C0 controls other than tab, newline and
/// carriage return as their Unicode control pictures (`␀` for NUL), DEL as
/// `␡`, and C1 controls and the bidirectional formatting characters (which
/// could reorder what the reader sees, "Trojan Source" style) as `\u{…}`
/// text.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            '\0'..='\u{1f}' => {
                out.push(char::from_u32(0x2400 + u32::from(c)).unwrap_or('\u{fffd}'));
            }
            '\u{7f}' => out.push('\u{2421}'),
            c if is_invisible_control(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// C1 controls and the Unicode bidirectional formatting characters:
/// embeddings and overrides (U+202A–U+202E), isolates (U+2066–U+2069), and
/// the implicit marks (U+200E, U+200F, U+061C).
fn is_invisible_control(c: char) -> bool {
    matches!(
        c,
        '\u{80}'..='\u{9f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{61c}'
    )
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
