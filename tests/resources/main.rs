//! Resource tests: each amplification pattern a small workflow (or command
//! line) could use runs in a child process of its own, which reports its
//! resident-memory growth (`VmHWM` minus the `VmRSS` it started with, from
//! `/proc/self/status`) and its time. Each must stay under 256 MB and 5 s.
//!
//! The child is this test binary again, running only the `child` test with
//! `FLOWTRACE_RESOURCE_PATTERN` set, under `ulimit -v` so that a pattern
//! that does explode fails its test instead of exhausting the machine.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flowtrace::Tool;
use flowtrace::providers::tools::TransformJson;
use flowtrace::workflow::rules::Rule;
use flowtrace::workflow::spec::{Known, ProblemKind, load};
use serde_json::{Value, json};
use support::{Ran, run_workflow};

const PATTERN_ENV: &str = "FLOWTRACE_RESOURCE_PATTERN";
const MAX_GROWTH_BYTES: u64 = 256 * 1024 * 1024;
const MAX_TIME: Duration = Duration::from_secs(5);
/// Address-space limit of the child, in KiB (a runaway pattern fails
/// there rather than taking the machine's memory).
const CHILD_ADDRESS_SPACE_KIB: u64 = 8 * 1024 * 1024;

// ------------------------------------------------------------- parent --

struct Measured {
    growth: u64,
    elapsed: Duration,
}

/// One child at a time, so that the children's times do not include each
/// other's work.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `pattern` in a child process and returns what it measured.
fn measure(pattern: &str) -> Measured {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let exe = std::env::current_exe().unwrap();
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {CHILD_ADDRESS_SPACE_KIB} 2>/dev/null; exec \"$0\" \"$@\""
        ))
        .arg(&exe)
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(PATTERN_ENV, pattern)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "pattern `{pattern}` failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // (libtest may print `test child ... ` before it on the same line.)
    let line = stdout
        .lines()
        .find_map(|l| l.find("RESOURCE ").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no RESOURCE line from `{pattern}`:\n{stdout}\n{stderr}"));
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    let measured = Measured {
        growth: field("peak_kib").saturating_sub(field("baseline_kib")) * 1024,
        elapsed: Duration::from_millis(field("elapsed_ms")),
    };
    eprintln!(
        "{pattern}: +{:.1} MB, {:?}",
        measured.growth as f64 / 1e6,
        measured.elapsed
    );
    measured
}

fn assert_bounded(pattern: &str) {
    let m = measure(pattern);
    assert!(
        m.growth < MAX_GROWTH_BYTES,
        "`{pattern}` grew resident memory by {} bytes",
        m.growth
    );
    assert!(m.elapsed < MAX_TIME, "`{pattern}` took {:?}", m.elapsed);
}

#[test]
fn tool_arguments_referencing_a_large_output_1000_times() {
    assert_bounded("tool_argument_references");
}

#[test]
fn inputs_referencing_a_large_output_256_times() {
    assert_bounded("input_references");
}

#[test]
fn simulated_responses_and_fallbacks_referencing_a_large_output() {
    assert_bounded("response_references");
}

#[test]
fn two_hundred_parallel_nodes_rendering_a_large_output() {
    assert_bounded("parallel_fanout");
}

#[test]
fn a_hundred_sequential_reads_of_a_large_file() {
    assert_bounded("sequential_reads");
}

#[test]
fn repeat_with_huge_counts() {
    assert_bounded("repeat");
}

#[test]
fn endless_workflow_and_pricing_files() {
    assert_bounded("dev_zero");
}

#[test]
fn a_4_mb_document_of_repeated_keys() {
    assert_bounded("duplicate_keys");
}

#[test]
fn a_4_mb_document_of_nesting() {
    assert_bounded("deep_nesting");
}

#[test]
fn rules_doing_too_much_work() {
    assert_bounded("rule_work");
}

/// Issue #2: `transform_json` must bound its output and its evaluation
/// work, not only the expression's size and stack.
#[test]
fn transform_json_doubling_bomb() {
    assert_bounded("transform_json_bomb");
}

/// Issue #2, the `to_string` variant.
#[test]
fn transform_json_to_string_bomb() {
    assert_bounded("transform_json_to_string_bomb");
}

// -------------------------------------------------------------- child --

/// Resident memory figures of this process, in KiB.
fn status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/self/status"))
}

/// The child's entry point (a no-op in the ordinary test run).
#[test]
fn child() {
    let Ok(pattern) = std::env::var(PATTERN_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Warm up what every pattern shares (the schema, the runtime), so the
    // baseline is the process ready to work.
    let _ = load("{}", &Known::default());
    let baseline = status_kib("VmRSS:");
    let started = Instant::now();
    let outcome = runtime.block_on(run_pattern(&pattern));
    let elapsed = started.elapsed();
    let peak = status_kib("VmHWM:");
    println!(
        "RESOURCE pattern={pattern} baseline_kib={baseline} peak_kib={peak} elapsed_ms={} outcome={}",
        elapsed.as_millis(),
        outcome.replace(char::is_whitespace, "_")
    );
    runtime.shutdown_timeout(Duration::from_millis(100));
}

fn temp_dir(name: &str) -> PathBuf {
    support::temp_dir("resources", name)
}

/// Writes `workflow` as `dir/workflow.json` next to a `size`-byte
/// `big.txt`, runs it with `--json --html` (so the whole trace is
/// recorded), and returns the run's exit code and stderr.
async fn run_workflow_file(dir: &Path, workflow: Value, size: usize) -> Ran {
    std::fs::write(dir.join("big.txt"), "x".repeat(size)).unwrap();
    let path = dir.join("workflow.json");
    std::fs::write(&path, workflow.to_string()).unwrap();
    let html = dir.join("report.html");
    run_workflow(&[
        path.to_str().unwrap(),
        "--json",
        "--html",
        html.to_str().unwrap(),
    ])
    .await
}

const CONTENT: &str = "{{node.read.output.content}}";

fn read_node() -> Value {
    json!({ "id": "read", "type": "tool", "config": {"tool": "read_file", "path": "big.txt"} })
}

async fn run_pattern(pattern: &str) -> String {
    let dir = temp_dir(pattern);
    let outcome = match pattern {
        "tool_argument_references" => {
            let workflow = json!({
                "version": "1", "entry": "read",
                "nodes": [ read_node(),
                    { "id": "amplify", "type": "tool",
                      "config": {"tool": "transform_json", "expression": "length(@)",
                                 "input": vec![CONTENT; 1000]} } ],
                "edges": [ {"from": "read", "to": "amplify"} ]
            });
            let mut outcomes = Vec::new();
            // 4 MB: over the per-template limit; 900 KB: over the node's.
            for size in [4 * 1024 * 1024, 900 * 1024] {
                let ran = run_workflow_file(&dir, workflow.clone(), size).await;
                assert_eq!(ran.code, 1, "{}", ran.stderr);
                outcomes.push(ran.code.to_string());
            }
            outcomes.join(",")
        }
        "input_references" => {
            let inputs: serde_json::Map<String, Value> = (0..256)
                .map(|i| (format!("i{i}"), json!(CONTENT)))
                .collect();
            let workflow = json!({
                "version": "1", "entry": "read",
                "nodes": [ read_node(),
                    { "id": "ask", "type": "llm", "inputs": inputs,
                      "config": {"provider": "simulated", "model": "gpt-4o-mini", "simulated": {"response": "ok"}} } ],
                "edges": [ {"from": "read", "to": "ask"} ]
            });
            let ran = run_workflow_file(&dir, workflow, 4 * 1024 * 1024).await;
            assert_eq!(ran.code, 1, "{}", ran.stderr);
            "failed".into()
        }
        "response_references" => {
            let fallbacks: Vec<Value> = (0..16)
                .map(|_| {
                    json!({"provider": "simulated", "model": "gpt-4o-mini",
                                "simulated": {"response": format!("{{{{t}}}}{}", "{{t}}".repeat(1000))}})
                })
                .collect();
            let workflow = json!({
                "version": "1", "entry": "read",
                "nodes": [ read_node(),
                    { "id": "ask", "type": "llm", "inputs": {"t": CONTENT},
                      "config": {"provider": "simulated", "model": "gpt-4o-mini",
                                 "prompt": "{{t}}".repeat(1000), "system": "{{t}}".repeat(1000),
                                 "simulated": {"response": "{{t}}".repeat(1000)}, "fallbacks": fallbacks} } ],
                "edges": [ {"from": "read", "to": "ask"} ]
            });
            let ran = run_workflow_file(&dir, workflow, 900 * 1024).await;
            assert_eq!(ran.code, 1, "{}", ran.stderr);
            "failed".into()
        }
        "parallel_fanout" => {
            let mut nodes = vec![
                read_node(),
                json!({"id": "fan", "type": "router", "config": {"rule": "'all'", "fanout": true}}),
            ];
            let mut edges = vec![json!({"from": "read", "to": "fan"})];
            for i in 0..200 {
                nodes.push(json!({"id": format!("n{i}"), "type": "tool",
                    "config": {"tool": "transform_json", "input": CONTENT, "expression": "length(@)"}}));
                edges.push(json!({"from": "fan", "to": format!("n{i}")}));
            }
            let workflow = json!({"version": "1", "entry": "read", "nodes": nodes, "edges": edges,
                                  "parallel": true, "maxConcurrency": 1024});
            let ran = run_workflow_file(&dir, workflow, 900 * 1024).await;
            assert_eq!(ran.code, 1, "{}", ran.stderr);
            "failed".into()
        }
        "sequential_reads" => {
            let nodes: Vec<Value> = (0..100)
                .map(|i| {
                    json!({"id": format!("r{i}"), "type": "tool",
                                "config": {"tool": "read_file", "path": "big.txt"}})
                })
                .collect();
            let edges: Vec<Value> = (1..100)
                .map(|i| json!({"from": format!("r{}", i - 1), "to": format!("r{i}")}))
                .collect();
            let workflow = json!({"version": "1", "entry": "r0", "nodes": nodes, "edges": edges});
            let ran = run_workflow_file(&dir, workflow, 4 * 1024 * 1024).await;
            assert_eq!(ran.code, 1, "{}", ran.stderr);
            "failed".into()
        }
        "repeat" => {
            let workflow = dir.join("w.json");
            std::fs::write(
                &workflow,
                json!({"version": "1", "entry": "a", "nodes": [{"id": "a", "type": "llm",
                       "config": {"provider": "simulated", "model": "gpt-4o-mini", "simulated": {"response": "ok"}}}]})
                .to_string(),
            )
            .unwrap();
            for n in ["18446744073709551615", "100000000000"] {
                let ran =
                    run_workflow(&[workflow.to_str().unwrap(), "--repeat", n, "--json"]).await;
                assert_eq!(ran.code, 2, "{}", ran.stderr);
            }
            "usage-errors".into()
        }
        "dev_zero" => {
            let ran = run_workflow(&["/dev/zero"]).await;
            assert_eq!(ran.code, 2, "{}", ran.stderr);
            let workflow = dir.join("w.json");
            std::fs::write(
                &workflow,
                json!({"version": "1", "entry": "a", "nodes": [{"id": "a", "type": "llm",
                       "config": {"provider": "simulated", "model": "gpt-4o-mini", "simulated": {"response": "ok"}}}]})
                .to_string(),
            )
            .unwrap();
            let ran = run_workflow(&[workflow.to_str().unwrap(), "--pricing", "/dev/zero"]).await;
            assert_eq!(ran.code, 2, "{}", ran.stderr);
            "refused".into()
        }
        "duplicate_keys" => {
            let body = vec!["\"k\":1"; 4 * 1024 * 1024 / 6 - 1].join(",");
            let text = format!("{{{body}}}");
            assert!(text.len() <= 4 * 1024 * 1024);
            let errors = load(&text, &Known::default()).unwrap_err();
            assert!(errors.iter().any(|p| p.kind == ProblemKind::DuplicateKey));
            format!("{}-problems", errors.len())
        }
        "deep_nesting" => {
            let text = "[".repeat(4 * 1024 * 1024);
            let errors = load(&text, &Known::default()).unwrap_err();
            assert_eq!(errors.problems()[0].kind, ProblemKind::TooLarge);
            "too-deep".into()
        }
        "rule_work" => {
            let vars = json!({"t": "x".repeat(8 * 1024 * 1024)});
            let group = format!("({})", ["len(t)"; 10].join("+"));
            let src = vec![group; 50].join("+");
            let e = Rule::parse(&src).unwrap().eval(&vars).unwrap_err();
            assert!(e.limit_exceeded().is_some(), "{e}");
            let concat = format!("({})", ["t"; 10].join("+"));
            let src = vec![concat; 30].join("+");
            let e = Rule::parse(&src).unwrap().eval(&vars).unwrap_err();
            assert!(e.limit_exceeded().is_some(), "{e}");
            "limited".into()
        }
        "transform_json_bomb" | "transform_json_to_string_bomb" => {
            let step = if pattern == "transform_json_bomb" {
                "[@,@]"
            } else {
                "to_string([@,@])"
            };
            let expression = vec![step; 20].join(" | ");
            let result = TransformJson::new()
                .call(json!({"input": {"a": [1, 2, 3]}, "expression": expression}))
                .await;
            match result {
                Ok(_) => "ok".into(),
                Err(e) => format!("refused:{}", e.message),
            }
        }
        other => panic!("unknown pattern {other}"),
    };
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}
