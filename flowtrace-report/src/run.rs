//! One run's part of the page: its header, waterfall and step details.

use super::*;

pub(super) fn run_label(index: usize, run: &ReportRun) -> String {
    run.label
        .clone()
        .unwrap_or_else(|| format!("Run {}", index + 1))
}

/// Counts over a run's steps.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) cache_hits: u64,
    pub(super) retries: u64,
    pub(super) fallbacks: u64,
}

impl Tally {
    pub(super) fn of(summary: &RunSummary) -> Self {
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
pub(super) struct RunView<'a> {
    pub(super) index: usize,
    pub(super) run: &'a ReportRun,
    pub(super) by_step: BTreeMap<StepId, Vec<&'a TraceEvent>>,
    pub(super) run_events: Vec<&'a TraceEvent>,
    pub(super) start: i64,
    pub(super) span: i64,
    /// Each node's last succeeded step (whose output the state holds).
    pub(super) last_success: HashMap<&'a str, StepId>,
}

impl<'a> RunView<'a> {
    pub(super) fn new(index: usize, run: &'a ReportRun) -> Self {
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

    pub(super) fn pct(&self, micros_from_start: i64) -> f64 {
        (micros_from_start.clamp(0, self.span) as f64) * 100.0 / self.span as f64
    }

    pub(super) fn render(&self, out: &mut String) {
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

    pub(super) fn render_waterfall(&self, out: &mut String) {
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

    pub(super) fn events_of(&self, step: StepId) -> Vec<&'a TraceEvent> {
        self.by_step.get(&step).cloned().unwrap_or_default()
    }

    pub(super) fn render_details(&self, out: &mut String) {
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
                        cache,
                    } => {
                        let from_cache = if matches!(cache, Some(CacheOutcome::Hit)) {
                            " · from cache"
                        } else {
                            ""
                        };
                        let label = format!(
                            "{tool} result · {}{from_cache}",
                            duration(to_i64(*latency_us))
                        );
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
                    EventKind::ToolDenied { tool, reason } => {
                        block(out, &format!("{tool} denied"), reason)
                    }
                    EventKind::Handover {
                        reason, context, ..
                    } => block(
                        out,
                        &format!("handed over to a human: {reason}"),
                        &pretty(context),
                    ),
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
    pub(super) fn last_success_of(&self, node: &str) -> Option<StepId> {
        self.last_success.get(node).copied()
    }
}
