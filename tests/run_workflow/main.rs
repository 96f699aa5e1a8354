//! The `run_workflow` runner, run in-process on the shipped workflows:
//! its JSON summaries, exit codes, durable/approval flags, pricing
//! override and HTML report.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};

use flowtrace::Cost;
use serde_json::{Value, json};
use support::{cli, run_workflow as run, workflows};

fn temp_dir(name: &str) -> PathBuf {
    support::temp_dir("run-workflow", name)
}

/// Writes `value` as `dir/name`; returns the path.
fn write_json(dir: &Path, name: &str, value: Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, value.to_string()).unwrap();
    path
}

fn research() -> String {
    workflows().join("research.json").display().to_string()
}

fn csv_report() -> String {
    workflows().join("csv_report.json").display().to_string()
}

const RESEARCH_INPUT: &str = r#"{"notes_path":"research-notes.md","topic":"agent observability"}"#;
const CSV_INPUT: &str = r#"{"csv_path":"sales-q3.csv","quarter":"2026-Q3"}"#;

fn cost(v: &Value) -> Cost {
    v.as_str()
        .unwrap_or_else(|| panic!("cost_usd must be a decimal string, got {v}"))
        .parse()
        .unwrap()
}

fn step<'a>(summary: &'a Value, node: &str) -> &'a Value {
    summary["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["node_id"] == node)
        .unwrap_or_else(|| panic!("no step for {node}"))
}

/// Every documented field is present with its type; costs add up exactly.
fn check_shape(summary: &Value) {
    for key in ["run_id", "status", "steps", "totals", "outputs"] {
        assert!(summary.get(key).is_some(), "missing {key}");
    }
    let mut total = Cost::ZERO;
    for s in summary["steps"].as_array().unwrap() {
        for key in [
            "node_id",
            "node_type",
            "status",
            "attempts",
            "provider",
            "model",
            "branch",
            "cache_hit",
            "tokens_input",
            "tokens_output",
            "cost_usd",
            "latency_ms",
            "error",
        ] {
            assert!(s.get(key).is_some(), "step {} misses {key}", s["node_id"]);
        }
        assert!(s["attempts"].is_u64() && s["latency_ms"].is_u64());
        assert!(s["cache_hit"].is_boolean());
        total += cost(&s["cost_usd"]);
    }
    assert_eq!(total, cost(&summary["totals"]["cost_usd"]));
    let tokens: u64 = summary["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tokens_input"].as_u64().unwrap())
        .sum();
    assert_eq!(tokens, summary["totals"]["tokens_input"].as_u64().unwrap());
    assert!(summary["totals"]["latency_ms"].is_u64());
}

#[tokio::test]
async fn research_json_summary() {
    let ran = run(&[&research(), "--input", RESEARCH_INPUT, "--json"]).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(ran.stderr.is_empty(), "{}", ran.stderr);
    let s = ran.json();
    check_shape(&s);
    assert_eq!(s["status"], "succeeded");
    assert!(s.get("error").is_none());
    let statuses: Vec<(&str, &str)> = s["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| {
            (
                st["node_id"].as_str().unwrap(),
                st["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("research", "succeeded"),
            ("summarize", "succeeded"),
            ("decide", "succeeded"),
            ("shallow", "skipped"),
            ("deep", "succeeded"),
        ]
    );
    let summarize = step(&s, "summarize");
    assert_eq!(summarize["node_type"], "llm");
    // Three rate-limited calls to the primary, then the fallback answers.
    assert_eq!(summarize["attempts"], 4);
    assert_eq!(summarize["retries"], 2);
    assert_eq!(summarize["fallbacks"], 1);
    assert_eq!(summarize["provider"], "simulated");
    assert_eq!(summarize["model"], "claude-3-5-haiku");
    assert_eq!(summarize["tokens_input"], 1900);
    assert_eq!(summarize["tokens_output"], 180);
    assert_eq!(summarize["cost_usd"], "0.00224");
    assert!(
        summarize["latency_ms"].as_u64().unwrap() >= 600,
        "back-off waited"
    );
    assert_eq!(step(&s, "decide")["branch"], "deep");
    assert_eq!(step(&s, "decide")["node_type"], "router");
    assert_eq!(step(&s, "research")["node_type"], "tool");
    assert_eq!(step(&s, "shallow")["attempts"], 0);
    assert!(
        step(&s, "shallow")["error"]
            .as_str()
            .unwrap()
            .contains("deep")
    );
    assert_eq!(s["outputs"]["decide"], "deep");
    assert!(
        s["outputs"]["research"]["content"]
            .as_str()
            .unwrap()
            .starts_with("# Field notes")
    );
    assert!(s["outputs"].get("shallow").is_none());
}

#[tokio::test]
async fn repeat_shares_the_cache_and_the_second_run_is_free() {
    let ran = run(&[
        &research(),
        "--input",
        RESEARCH_INPUT,
        "--json",
        "--repeat",
        "2",
    ])
    .await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let runs = ran.json();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    check_shape(&runs[0]);
    check_shape(&runs[1]);
    assert_ne!(runs[0]["run_id"], runs[1]["run_id"]);
    assert!(cost(&runs[0]["totals"]["cost_usd"]) > Cost::ZERO);
    assert_eq!(cost(&runs[1]["totals"]["cost_usd"]), Cost::ZERO);
    for node in ["summarize", "deep"] {
        assert_eq!(step(&runs[1], node)["cache_hit"], true, "{node}");
        assert_eq!(step(&runs[0], node)["cache_hit"], false, "{node}");
    }
    assert_eq!(step(&runs[1], "summarize")["retries"], 0);
    assert_eq!(runs[0]["outputs"], runs[1]["outputs"]);
}

#[tokio::test]
async fn csv_report_computes_the_figures_and_takes_the_risk_branch() {
    let ran = run(&[&csv_report(), "--input", CSV_INPUT, "--json"]).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let s = ran.json();
    check_shape(&s);
    assert_eq!(s["status"], "succeeded");
    let figures = &s["outputs"]["figures"];
    assert_eq!(figures["regions"], 4);
    assert_eq!(figures["revenue_total"].as_f64(), Some(4_828_600.0));
    assert_eq!(figures["top_region"], "North America");
    assert_eq!(figures["weakest_region"], "APAC");
    assert_eq!(figures["worst_growth_pct"].as_f64(), Some(-13.0));
    assert_eq!(s["outputs"]["load"]["rows"].as_array().unwrap().len(), 4);
    assert_eq!(step(&s, "gate")["branch"], "risk");
    assert_eq!(step(&s, "risk_memo")["status"], "succeeded");
    assert_eq!(step(&s, "writeup")["status"], "skipped");
    let memo = s["outputs"]["risk_memo"].as_str().unwrap();
    assert!(memo.contains("APAC fell -13.0%"), "{memo}");
    // gpt-4o 1200/160 + claude-3-5-sonnet 700/240 at the built-in prices.
    let table = flowtrace::PriceTable::builtin();
    use flowtrace::Pricing;
    let expected = table
        .price("simulated", "gpt-4o")
        .unwrap()
        .cost(&flowtrace::TokenUsage::new(1200, 160))
        .unwrap()
        + table
            .price("simulated", "claude-3-5-sonnet")
            .unwrap()
            .cost(&flowtrace::TokenUsage::new(700, 240))
            .unwrap();
    assert_eq!(cost(&s["totals"]["cost_usd"]), expected);
}

#[tokio::test]
async fn a_quarter_without_a_large_decline_gets_the_standard_write_up() {
    let dir = temp_dir("csv-ok");
    std::fs::write(
        dir.join("sales.csv"),
        "region,quarter,revenue,revenue_prev,growth_pct\nEMEA,Q4,110,100,10.0\nAPAC,Q4,95,100,-5.0\n",
    )
    .unwrap();
    let workflow = dir.join("csv_report.json");
    std::fs::copy(workflows().join("csv_report.json"), &workflow).unwrap();
    let ran = run(&[
        workflow.to_str().unwrap(),
        "--input",
        r#"{"csv_path":"sales.csv","quarter":"Q4"}"#,
        "--json",
    ])
    .await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let s = ran.json();
    assert_eq!(step(&s, "gate")["branch"], "ok");
    assert_eq!(step(&s, "writeup")["status"], "succeeded");
    assert_eq!(step(&s, "risk_memo")["status"], "skipped");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_invalid_workflow_exits_2_with_every_problem_on_stderr() {
    let dir = temp_dir("invalid");
    let path = write_json(
        &dir,
        "bad.json",
        json!({
            "version": "1",
            "entry": "a",
            "nodes": [
                {"id": "a", "type": "llm", "config": {"provider": "nope", "model": "m"}},
                {"id": "b", "type": "router", "config": {"rule": "len(x) >"}},
                {"id": "c", "type": "tool", "config": {"tool": "no_such_tool"}}
            ],
            "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "zzz"}]
        }),
    );
    let ran = run(&[path.to_str().unwrap(), "--json"]).await;
    assert_eq!(ran.code, 2);
    assert!(ran.stdout.is_empty(), "{}", ran.stdout);
    for pointer in [
        "/nodes/0/config/provider",
        "/nodes/1/config/rule",
        "/nodes/2/config/tool",
        "/edges/1/to",
    ] {
        assert!(
            ran.stderr.contains(pointer),
            "{pointer} not in:\n{}",
            ran.stderr
        );
    }
    assert!(ran.stderr.lines().count() >= 4, "{}", ran.stderr);

    // Bad arguments are exit code 2 too.
    let ran = run(&[&research(), "--repeat", "0"]).await;
    assert_eq!(ran.code, 2);
    assert!(ran.stderr.contains("--repeat"), "{}", ran.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_failing_run_exits_1_with_the_error_in_the_summary() {
    let dir = temp_dir("failing");
    let path = write_json(
        &dir,
        "failing.json",
        json!({
            "version": "1",
            "entry": "draft",
            "nodes": [
                {"id": "draft", "type": "llm", "config": {
                    "provider": "simulated", "model": "gpt-4o-mini", "simulated": {"response": "a draft"}}},
                {"id": "gate", "type": "router", "config": {"rule": "'go'"}},
                {"id": "ask", "type": "llm", "config": {
                    "provider": "simulated", "model": "gpt-4o-mini", "simulated": {"response": "never",
                                  "failFirst": 5, "failKind": "invalidRequest"}}}
            ],
            "edges": [
                {"from": "draft", "to": "gate"},
                {"from": "gate", "to": "ask", "when": "branch == 'go'"}
            ]
        }),
    );
    let ran = run(&[path.to_str().unwrap(), "--json"]).await;
    assert_eq!(ran.code, 1);
    let s = ran.json();
    assert_eq!(s["status"], "failed");
    assert_eq!(step(&s, "ask")["status"], "failed");
    assert!(step(&s, "ask")["error"].is_string());
    assert!(s["error"]["kind"].is_string());
    assert!(
        s["error"]["message"].as_str().unwrap().contains("ask"),
        "{}",
        s["error"]
    );
    // What finished before the failure is kept: outputs and the router's
    // branch in the rule's terms.
    assert_eq!(s["outputs"]["draft"], "a draft");
    assert_eq!(step(&s, "gate")["branch"], "go");
    assert_eq!(step(&s, "draft")["status"], "succeeded");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn approval_threads_pause_and_resume_across_invocations() {
    let dir = temp_dir("approval");
    let path = write_json(
        &dir,
        "refund.json",
        json!({
            "version": "1",
            "entry": "draft",
            "nodes": [
                {"id": "draft", "type": "llm", "config": {"provider": "simulated", "model": "gpt-4o-mini",
                    "simulated": {"response": "Refund {{input.amount}} dollars", "usage": {"input": 10, "output": 5}}}},
                {"id": "approve", "type": "approval", "config": {"message": "Approve: {{node.draft.output}}"}},
                {"id": "send", "type": "tool", "config": {"tool": "transform_json",
                    "input": "{{node.approve.output}}", "expression": "amount"}}
            ],
            "edges": [{"from": "draft", "to": "approve"}, {"from": "approve", "to": "send"}]
        }),
    );
    let store = dir.join("checkpoints");
    let (wf, store) = (path.to_str().unwrap(), store.to_str().unwrap());
    let base = [
        wf,
        "--checkpoint-dir",
        store,
        "--thread",
        "refund-1",
        "--json",
    ];

    let mut args = base.to_vec();
    args.extend(["--input", r#"{"amount": 42}"#]);
    let paused = run(&args).await;
    assert_eq!(
        paused.code, 0,
        "interrupted is not a failure: {}",
        paused.stderr
    );
    let p = paused.json();
    assert_eq!(p["status"], "interrupted");
    assert_eq!(p["interrupt"]["node"], "approve");
    assert_eq!(p["thread"], "refund-1");
    assert!(p["outputs"].get("send").is_none());

    let mut args = base.to_vec();
    args.extend(["--approve", r#"{"amount": 40}"#]);
    let done = run(&args).await;
    assert_eq!(done.code, 0, "{}", done.stderr);
    let d = done.json();
    assert_eq!(d["status"], "succeeded");
    assert_eq!(d["outputs"]["send"], 40);
    // The draft ran once, in the first invocation.
    assert_eq!(d["outputs"]["draft"], "Refund 42 dollars");

    // Without --json a decision's run is shown live like a fresh one.
    let again = run(&[
        wf,
        "--checkpoint-dir",
        store,
        "--thread",
        "refund-2",
        "--input",
        r#"{"amount": 7}"#,
    ])
    .await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    let decided = run(&[
        wf,
        "--checkpoint-dir",
        store,
        "--thread",
        "refund-2",
        "--approve",
        r#"{"amount": 7}"#,
    ])
    .await;
    assert_eq!(decided.code, 0, "{}", decided.stderr);
    for needle in [
        "▶ run",
        "┌ approve started",
        "┌ send started",
        "■ run succeeded",
    ] {
        assert!(
            decided.stdout.contains(needle),
            "{needle:?} not in:\n{}",
            decided.stdout
        );
    }

    // Deciding again: the thread no longer waits.
    let mut args = base.to_vec();
    args.push("--reject");
    let again = run(&args).await;
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("not waiting"), "{}", again.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn pricing_file_replaces_the_table_and_html_report_is_written() {
    let dir = temp_dir("pricing");
    let prices = write_json(
        &dir,
        "prices.json",
        json!({
            "simulated/gpt-4o": {"input_per_million": 1, "output_per_million": 2},
            "simulated/claude-3-5-sonnet": {"input_per_million": 10, "output_per_million": 20}
        }),
    );
    let html = dir.join("report.html");
    let ran = run(&[
        &csv_report(),
        "--input",
        CSV_INPUT,
        "--pricing",
        prices.to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
        "--json",
    ])
    .await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    let s = ran.json();
    // 1200 * $1/M + 160 * $2/M = $0.00152; 700 * $10/M + 240 * $20/M = $0.0118.
    assert_eq!(step(&s, "analyze")["cost_usd"], "0.00152");
    assert_eq!(step(&s, "risk_memo")["cost_usd"], "0.0118");
    assert_eq!(s["totals"]["cost_usd"], "0.01332");
    let report = std::fs::read_to_string(&html).unwrap();
    for node in ["load", "figures", "analyze", "gate", "risk_memo", "writeup"] {
        assert!(report.contains(&format!("data-node=\"{node}\"")), "{node}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn without_json_the_timeline_and_summary_table_are_printed() {
    let ran = run(&[&research(), "--input", RESEARCH_INPUT]).await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    for needle in [
        "▶ run",
        "┌ summarize started",
        "↻ summarize attempt 1 failed",
        "fallback simulated/gpt-4o-mini → simulated/claude-3-5-haiku",
        "⤼ shallow skipped",
        "■ run succeeded",
        "step  node",
        "outputs:",
    ] {
        assert!(
            ran.stdout.contains(needle),
            "{needle:?} not in:\n{}",
            ran.stdout
        );
    }
}

#[tokio::test]
async fn a_halted_thread_resumes_and_the_summary_covers_the_whole_run() {
    let dir = temp_dir("halt");
    let store = dir.join("checkpoints");
    let (wf, store) = (research(), store.display().to_string());
    let base = [
        wf.as_str(),
        "--checkpoint-dir",
        store.as_str(),
        "--thread",
        "research-1",
        "--json",
    ];

    // Halt while summarize is backing off (its retries take ~600 ms).
    let mut args = base.to_vec();
    args.extend(["--input", RESEARCH_INPUT, "--halt-after-ms", "300"]);
    let halted = run(&args).await;
    assert_eq!(
        halted.code, 0,
        "a requested halt is not a failure: {}",
        halted.stderr
    );
    let h = halted.json();
    assert_eq!(h["status"], "halted");
    assert_eq!(step(&h, "research")["status"], "succeeded");
    assert!(h["outputs"].get("deep").is_none());

    let mut args = base.to_vec();
    args.push("--resume");
    let resumed = run(&args).await;
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let r = resumed.json();
    assert_eq!(r["status"], "succeeded");
    // The summary covers the whole run: research ran before the halt and
    // is not run again.
    let research_steps: Vec<_> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["node_id"] == "research")
        .collect();
    assert_eq!(research_steps.len(), 1, "{}", r["steps"]);
    assert_eq!(step(&r, "deep")["status"], "succeeded");
    assert!(r["outputs"]["research"]["content"].is_string());
    assert_eq!(r["outputs"]["decide"], "deep");
    // Every model call of the thread is counted once: the same cost as an
    // uninterrupted run (gpt-4o-mini's failures are free, haiku + sonnet).
    assert_eq!(r["totals"]["cost_usd"], "0.01469");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn json_stays_on_stdout_when_the_report_cannot_be_written() {
    let dir = temp_dir("bad-html");
    let html = dir.join("no-such-dir").join("report.html");
    let ran = run(&[
        &research(),
        "--input",
        RESEARCH_INPUT,
        "--json",
        "--html",
        html.to_str().unwrap(),
    ])
    .await;
    assert_eq!(ran.code, 1);
    assert_eq!(ran.json()["status"], "succeeded");
    assert!(ran.stderr.contains("cannot write"), "{}", ran.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------ hardening --

#[tokio::test]
async fn repeat_is_bounded_and_a_usage_error() {
    for huge in ["18446744073709551615", "100000000000", "1001"] {
        let started = std::time::Instant::now();
        let ran = run(&[&research(), "--repeat", huge, "--json"]).await;
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(ran.code, 2, "{huge}: {}", ran.stderr);
        assert!(
            ran.stderr.contains("over the `repeat` limit of 1000 runs"),
            "{}",
            ran.stderr
        );
        assert!(ran.stderr.contains("usage:"), "{}", ran.stderr);
        assert!(ran.stdout.is_empty());
    }
    let ran = run(&[&research(), "--repeat", "99999999999999999999999"]).await;
    assert_eq!(ran.code, 2);
    assert!(
        ran.stderr.contains("expected a positive integer"),
        "{}",
        ran.stderr
    );
}

#[tokio::test]
async fn workflow_and_pricing_files_are_read_up_to_their_limit_only() {
    // `/dev/zero` never ends: it is refused after 4 MiB + 1 byte.
    let started = std::time::Instant::now();
    let ran = run(&["/dev/zero"]).await;
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("at least 4194305 bytes is over the `workflow_bytes` limit of 4194304 bytes"),
        "{}",
        ran.stderr
    );
    let ran = run(&[
        &research(),
        "--input",
        RESEARCH_INPUT,
        "--pricing",
        "/dev/zero",
    ])
    .await;
    assert_eq!(ran.code, 2, "{}", ran.stderr);
    assert!(
        ran.stderr.contains("`pricing_bytes` limit"),
        "{}",
        ran.stderr
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test]
async fn pricing_errors_name_the_field_and_the_expected_shape() {
    let dir = temp_dir("bad-pricing");
    std::fs::write(
        dir.join("prices.json"),
        r#"{"simulated/gpt-4o": {"input_per_million": 1, "output": 2},
            "simulated/gpt-4o": {"input_per_million": "one", "output_per_million": 2},
            "gpt-4o": {"input_per_million": 1, "output_per_million": 2}}"#,
    )
    .unwrap();
    let prices = dir.join("prices.json");
    let ran = run(&[
        &research(),
        "--input",
        RESEARCH_INPUT,
        "--pricing",
        prices.to_str().unwrap(),
    ])
    .await;
    assert_eq!(ran.code, 2);
    assert!(!ran.stderr.contains("untagged"), "{}", ran.stderr);
    for needle in [
        "/simulated~1gpt-4o: duplicate key `simulated/gpt-4o`",
        "/simulated~1gpt-4o/input_per_million: not a dollar amount per million tokens",
        "/gpt-4o: invalid key `gpt-4o`: expected \"provider/model\"",
    ] {
        assert!(
            ran.stderr.contains(needle),
            "`{needle}` not in:\n{}",
            ran.stderr
        );
    }
    // A wrong field name: the missing one is named, with the shape.
    std::fs::write(
        &prices,
        r#"{"simulated/gpt-4o": {"input_per_million": 1, "output": 2}}"#,
    )
    .unwrap();
    let ran = run(&[
        &research(),
        "--input",
        RESEARCH_INPUT,
        "--pricing",
        prices.to_str().unwrap(),
    ])
    .await;
    assert_eq!(ran.code, 2);
    for needle in [
        "/simulated~1gpt-4o: missing `output_per_million`; a price is {\"input_per_million\"",
        "/simulated~1gpt-4o/output: unknown field `output`",
    ] {
        assert!(
            ran.stderr.contains(needle),
            "`{needle}` not in:\n{}",
            ran.stderr
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn approval_workflows_need_a_checkpoint_dir() {
    let dir = temp_dir("approval-no-store");
    let path = write_json(
        &dir,
        "approval.json",
        json!({
            "version": "1", "entry": "draft",
            "nodes": [
                {"id": "draft", "type": "llm", "config": {"provider": "simulated", "model": "gpt-4o-mini", "simulated": {"response": "ok"}}},
                {"id": "approve", "type": "approval"}
            ],
            "edges": [{"from": "draft", "to": "approve"}]
        }),
    );
    let ran = run(&[path.to_str().unwrap(), "--json"]).await;
    assert_eq!(ran.code, 2, "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.is_empty(), "nothing ran: {}", ran.stdout);
    assert!(
        ran.stderr.contains("approval node(s) `approve`")
            && ran.stderr.contains("--checkpoint-dir DIR --thread ID"),
        "{}",
        ran.stderr
    );
    // Durable, it pauses and can be continued.
    let store = dir.join("store");
    let ran = run(&[
        path.to_str().unwrap(),
        "--json",
        "--checkpoint-dir",
        store.to_str().unwrap(),
        "--thread",
        "t1",
    ])
    .await;
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert_eq!(ran.json()["status"], "interrupted");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `read_file` pointed at a FIFO: the node fails (refused up front, or
/// timed out), and the runner exits (nothing blocked keeps it alive).
#[test]
fn a_timed_out_tool_call_does_not_keep_the_runner_alive() {
    let dir = temp_dir("fifo");
    let fifo = dir.join("pipe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("mkfifo is not available; skipped");
        return;
    }
    let path = write_json(
        &dir,
        "fifo.json",
        json!({
            "version": "1", "entry": "read",
            "nodes": [{"id": "read", "type": "tool", "timeoutMs": 300,
                       "config": {"tool": "read_file", "path": "pipe"}}]
        }),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let args = vec![path.display().to_string(), "--json".to_string()];
    std::thread::spawn(move || {
        let (console, out, _err) = cli::Console::buffers();
        let code = cli::run_blocking(args, &console);
        let out = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        let _ = tx.send((code, out));
    });
    let outcome = rx.recv_timeout(std::time::Duration::from_secs(20));
    // Unblock the stuck reader, whatever happened.
    let fifo_writer = fifo.clone();
    std::thread::spawn(move || {
        let _ = std::fs::OpenOptions::new().write(true).open(fifo_writer);
    });
    let (code, out) = outcome.expect("the runner did not return after the tool timed out");
    assert_eq!(code, 1, "{out}");
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["status"], "failed");
    // `read_file` refuses a FIFO before opening it; were anything else to
    // block, the node's timeout fires and the runner still returns.
    let message = summary["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("not a regular file") || message.contains("timed out"),
        "{summary}"
    );
}
