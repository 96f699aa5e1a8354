//! Helpers shared by the queue's test binaries (`pg_queue`, `pg_restart`):
//! the command line in-process, worker processes, and checks of a run's
//! history and trace.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use flowtrace::Checkpointer;
use flowtrace::ThreadId;
use flowtrace_store_postgres::PostgresCheckpointer;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{cli, pg};

/// Runs the command line in-process; returns (exit code, stdout, stderr).
pub async fn pg_queue(db: &pg::TestDb, args: &[&str]) -> (u8, String, String) {
    let (console, out, err) = cli::Console::buffers();
    let mut full = vec!["--database-url", &db.url, "--schema", &db.schema];
    full.extend_from_slice(args);
    let code = cli::run(
        full.iter().map(|s| s.to_string()).collect(),
        &console,
        CancellationToken::new(),
    )
    .await;
    let out = String::from_utf8(out.lock().unwrap().clone()).unwrap();
    let err = String::from_utf8(err.lock().unwrap().clone()).unwrap();
    (code, out, err)
}

/// The JSON document a `--json` command printed.
pub async fn pg_queue_json(db: &pg::TestDb, args: &[&str]) -> (u8, Value) {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let (code, out, err) = pg_queue(db, &full).await;
    let doc = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e}): {out:?}; stderr {err:?}"));
    (code, doc)
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "flowtrace-pg-queue-{name}-{}-{}",
        std::process::id(),
        pg::unique_schema(name)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn write_json(dir: &Path, name: &str, value: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, value.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A chain of `n` simulated LLM steps of `latency_ms` each.
pub fn chain(n: usize, latency_ms: u64) -> Value {
    let nodes: Vec<Value> = (0..n)
        .map(|i| {
            json!({"id": format!("s{i}"), "type": "llm", "config": {
                "provider": "simulated", "model": "gpt-4o-mini",
                "simulated": {"response": format!("step {i} of {{{{input.topic}}}}"),
                              "latencyMs": latency_ms, "usage": {"input": 10, "output": 5}}}})
        })
        .collect();
    let edges: Vec<Value> = (1..n)
        .map(|i| json!({"from": format!("s{}", i - 1), "to": format!("s{i}")}))
        .collect();
    json!({"version": "1", "entry": "s0", "nodes": nodes, "edges": edges})
}

pub fn approval() -> Value {
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
    })
}

pub async fn enqueue(db: &pg::TestDb, file: &str, input: &str, count: usize) -> Vec<String> {
    let count = count.to_string();
    let (code, doc) =
        pg_queue_json(db, &["enqueue", file, "--input", input, "--count", &count]).await;
    assert_eq!(code, 0, "{doc}");
    doc["run_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

pub async fn status(db: &pg::TestDb, run_id: &str) -> (u8, Value) {
    pg_queue_json(db, &["status", run_id]).await
}

/// Every event of `run_id` read through `trace` pages of `limit`.
pub async fn trace(db: &pg::TestDb, run_id: &str, limit: usize) -> Vec<Value> {
    let mut events = Vec::new();
    let mut after: Option<String> = None;
    let limit = limit.to_string();
    loop {
        let mut args = vec!["trace", run_id, "--limit", &limit];
        if let Some(a) = &after {
            args.extend_from_slice(&["--after", a]);
        }
        let (code, out, err) = pg_queue(db, &args).await;
        assert_eq!(code, 0, "{err}");
        for line in out.lines() {
            events.push(serde_json::from_str::<Value>(line).unwrap());
        }
        match err.trim().strip_prefix("more: --after ") {
            Some(next) => after = Some(next.to_owned()),
            None => return events,
        }
    }
}

/// Checks a finished run's trace: numbered 0.. without gaps, ending with
/// its `run.finished`, every node's `step.finished` present.
pub fn check_trace(events: &[Value], nodes: usize) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], json!(i), "events numbered without gaps");
    }
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"]["kind"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(kinds.last().copied(), Some("run.finished"), "{kinds:?}");
    let finished = kinds.iter().filter(|k| **k == "step.finished").count();
    assert!(
        finished >= nodes,
        "{finished} step.finished for {nodes} nodes: {kinds:?}"
    );
}

/// Waits until `check` holds for the run's status document.
pub async fn wait_for(
    db: &pg::TestDb,
    run_id: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, doc) = status(db, run_id).await;
        if check(&doc) {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id}: timed out waiting for {what}: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts this test binary again as a `pg_queue` worker process.
pub fn spawn_worker(db: &pg::TestDb, args: &[&str]) -> tokio::process::Child {
    let mut full = vec![
        "--database-url",
        &db.url,
        "--schema",
        &db.schema,
        "--json",
        "worker",
    ];
    full.extend_from_slice(args);
    tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "harness::worker_process_entry",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(
            "FLOWTRACE_PG_QUEUE_ARGS",
            serde_json::to_string(&full).unwrap(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// The entry point of the worker processes the tests start: runs the
/// command line in `FLOWTRACE_PG_QUEUE_ARGS` and exits with its code.
#[test]
#[ignore = "entry point of the worker processes the other tests start"]
fn worker_process_entry() {
    let Ok(args) = std::env::var("FLOWTRACE_PG_QUEUE_ARGS") else {
        return;
    };
    let args: Vec<String> = serde_json::from_str(&args).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let code = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            term.recv().await;
            stop.cancel();
        });
        cli::run(args, &cli::Console::stdio(), shutdown).await
    });
    std::process::exit(i32::from(code));
}

/// The checkpoints of `run_id`'s thread, oldest first.
pub async fn history(db: &pg::TestDb, run_id: &str) -> Vec<flowtrace::checkpoint::Checkpoint> {
    let store = PostgresCheckpointer::new(db.pool.clone());
    let mut cps = store
        .list(&ThreadId::new(run_id), None, 100_000)
        .await
        .unwrap();
    cps.reverse();
    cps
}

/// Each node of the run's committed history ran exactly once.
pub fn committed_once(summary: &Value, nodes: usize) {
    let mut runs: BTreeMap<String, usize> = BTreeMap::new();
    for s in summary["steps"].as_array().unwrap() {
        if s["status"] == "succeeded" {
            *runs
                .entry(s["node_id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    assert_eq!(runs.len(), nodes, "{runs:?}");
    assert!(
        runs.values().all(|n| *n == 1),
        "a committed step ran twice: {runs:?}"
    );
}

/// Checks a run that should have succeeded: its status, each node of its
/// committed history run once, and that history one line (consecutive
/// checkpoints, each the child of the one before: no fork).
pub async fn succeeded_once(db: &pg::TestDb, run_id: &str, nodes: usize) -> Value {
    let (code, doc) = status(db, run_id).await;
    assert_eq!(
        (code, doc["status"].as_str()),
        (0, Some("succeeded")),
        "{doc}"
    );
    committed_once(&doc, nodes);
    let cps = history(db, run_id).await;
    for (i, cp) in cps.iter().enumerate() {
        assert_eq!(cp.seq, i as u64, "one line of history");
        if i > 0 {
            assert_eq!(cp.parent_seq, Some(i as u64 - 1));
        }
    }
    doc
}
