//! The shipped Grafana dashboard and Prometheus alert rules use only
//! metrics the sink exports, and the rules pass `promtool check rules`.

use super::*;

/// Every `flowtrace_*` metric name in `expr`, histogram series
/// (`_bucket`, `_count`, `_sum`) reduced to their family.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("flowtrace_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| f.ends_with("_seconds")))
            .unwrap_or(name);
        found.insert(family.to_string());
        rest = &tail[end..];
    }
    found
}

/// Every panel's target expressions (rows' nested panels included).
fn panel_exprs(panels: &[serde_json::Value], out: &mut Vec<(String, String)>) {
    for p in panels {
        let title = p["title"].as_str().unwrap_or_default().to_string();
        if let Some(nested) = p["panels"].as_array() {
            panel_exprs(nested, out);
        }
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel {title:?} has no targets"));
        assert!(!targets.is_empty(), "panel {title:?} has no targets");
        for t in targets {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
            out.push((title.clone(), expr.to_string()));
        }
    }
}

/// The metric families in an exposition that exercised every metric.
async fn exported_families() -> BTreeSet<String> {
    let metrics = OtelMetrics::builder().build().unwrap();
    run_demo(&metrics).await;
    run_failing(&metrics).await;
    run_resilient(&metrics).await;
    run_over_budget(&metrics).await;
    render(&metrics)
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn every_dashboard_panel_queries_exported_metrics() {
    let path = repo_file("deploy/grafana/flowtrace-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(dashboard["title"].is_string());
    assert!(dashboard["uid"].is_string());
    assert!(dashboard["schemaVersion"].is_u64());
    let mut exprs = Vec::new();
    panel_exprs(dashboard["panels"].as_array().unwrap(), &mut exprs);
    assert!(exprs.len() >= 8, "{exprs:?}");

    let exported = exported_families().await;
    let declared: BTreeSet<String> = names::ALL.iter().map(|s| s.to_string()).collect();
    assert_eq!(exported, declared, "the sink exports exactly names::ALL");
    let mut used = BTreeSet::new();
    for (title, expr) in &exprs {
        let referenced = metric_names(expr);
        assert!(
            !referenced.is_empty(),
            "panel {title:?} queries no FlowTrace metric: {expr}"
        );
        for name in referenced {
            assert!(
                exported.contains(&name),
                "panel {title:?} queries {name}, which is not exported"
            );
            used.insert(name);
        }
    }
    // The panels the issue asks for.
    let titles: Vec<&str> = exprs.iter().map(|(t, _)| t.as_str()).collect();
    for want in [
        "Run rate",
        "Success rate",
        "p95 node latency",
        "Token burn rate",
        "Cost per run",
        "Cost per day",
        "Cache hit rate",
        "Circuit breakers",
    ] {
        assert!(
            titles.iter().any(|t| t.starts_with(want)),
            "no panel {want:?} in {titles:?}"
        );
    }
    eprintln!(
        "dashboard: {} queries over {} metrics",
        exprs.len(),
        used.len()
    );
}

#[tokio::test]
async fn the_alert_rules_pass_promtool_and_use_exported_metrics() {
    let path = repo_file("deploy/prometheus/alerts.yml");
    let rules = std::fs::read_to_string(&path).unwrap();
    let exported = exported_families().await;
    let referenced = metric_names(&rules);
    for alert in [
        "FlowTraceHighErrorRate",
        "FlowTraceDailyCostOverBudget",
        "FlowTraceSlowNodes",
        "FlowTraceCircuitBreakerOpen",
    ] {
        assert!(
            rules.contains(&format!("alert: {alert}")),
            "no alert {alert}"
        );
    }
    assert!(!referenced.is_empty());
    for name in &referenced {
        assert!(
            exported.contains(name),
            "alerts.yml uses {name}, which is not exported"
        );
    }
    if peer_binary("FLOWTRACE_PROMTOOL", "promtool", "promtool check rules").is_none() {
        return;
    }
    let out = promtool(&["check", "rules", path.to_str().unwrap()], None).await;
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `promtool test rules` input: synthetic series that must (and must not)
/// fire each alert; `{rules}` is the path of alerts.yml.
const RULE_TESTS: &str = r#"
rule_files:
  - "{rules}"
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'flowtrace_circuit_breaker_open{provider="openai",model="gpt-4o"}'
        values: '0 0 1x10'
      - series: 'flowtrace_circuit_breaker_open{provider="anthropic",model="claude"}'
        values: '0x12'
      # Workflow w: 20% of runs fail; workflow ok: 5%.
      - series: 'flowtrace_run_duration_seconds_count{workflow="w",status="failed"}'
        values: '0+2x20'
      - series: 'flowtrace_run_duration_seconds_count{workflow="w",status="succeeded"}'
        values: '0+8x20'
      - series: 'flowtrace_run_duration_seconds_count{workflow="ok",status="failed"}'
        values: '0+1x20'
      - series: 'flowtrace_run_duration_seconds_count{workflow="ok",status="succeeded"}'
        values: '0+19x20'
      # USD 10 a minute: over USD 100 after 10 minutes.
      - series: 'flowtrace_llm_cost_usd_total{provider="openai",model="m"}'
        values: '0+10x30'
      # Node n takes 30-60 s, node fast under 1 s.
      - series: 'flowtrace_node_duration_seconds_bucket{workflow="w",node="n",le="30"}'
        values: '0x20'
      - series: 'flowtrace_node_duration_seconds_bucket{workflow="w",node="n",le="60"}'
        values: '0+5x20'
      - series: 'flowtrace_node_duration_seconds_bucket{workflow="w",node="n",le="+Inf"}'
        values: '0+5x20'
      - series: 'flowtrace_node_duration_seconds_bucket{workflow="w",node="fast",le="1"}'
        values: '0+5x20'
      - series: 'flowtrace_node_duration_seconds_bucket{workflow="w",node="fast",le="+Inf"}'
        values: '0+5x20'
    alert_rule_test:
      - eval_time: 3m
        alertname: FlowTraceCircuitBreakerOpen
        exp_alerts: []
      - eval_time: 5m
        alertname: FlowTraceCircuitBreakerOpen
        exp_alerts:
          - exp_labels: {severity: warning, provider: openai, model: gpt-4o}
            exp_annotations:
              summary: "FlowTrace circuit breaker open for openai/gpt-4o"
              description: "Calls to openai/gpt-4o have been skipped (breaker open) for 2 minutes; traffic goes to fallbacks."
      - eval_time: 12m
        alertname: FlowTraceHighErrorRate
        exp_alerts:
          - exp_labels: {severity: warning, workflow: w}
            exp_annotations:
              summary: "FlowTrace workflow w: 20% of runs fail"
              description: "More than 10% of the runs of w failed over the last 5 minutes."
      - eval_time: 5m
        alertname: FlowTraceDailyCostOverBudget
        exp_alerts: []
      - eval_time: 20m
        alertname: FlowTraceDailyCostOverBudget
        exp_alerts:
          - exp_labels: {severity: critical}
            exp_annotations:
              summary: "FlowTrace spent 200.00 USD on models in the last 24h"
              description: "Model spend over the last 24 hours is above the daily budget of 100 USD."
      - eval_time: 12m
        alertname: FlowTraceSlowNodes
        exp_alerts:
          - exp_labels: {severity: warning, workflow: w, node: n}
            exp_annotations:
              summary: "FlowTrace node w/n: p95 latency 58.5s"
              description: "The 95th percentile latency of this node has been over 30 s for 5 minutes."
"#;

#[tokio::test]
async fn the_alerts_fire_on_synthetic_series_and_only_then() {
    if peer_binary("FLOWTRACE_PROMTOOL", "promtool", "promtool test rules").is_none() {
        return;
    }
    let rules = repo_file("deploy/prometheus/alerts.yml")
        .canonicalize()
        .unwrap();
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("rule-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tests = dir.join("alerts.test.yml");
    std::fs::write(
        &tests,
        RULE_TESTS.replace("{rules}", rules.to_str().unwrap()),
    )
    .unwrap();
    let out = promtool(&["test", "rules", tests.to_str().unwrap()], None).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
