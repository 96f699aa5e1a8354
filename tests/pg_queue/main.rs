//! The PostgreSQL run queue end to end, through the `pg_queue` example's
//! command line: in-process, and as real worker processes (this test binary
//! started again with `--exact worker_process_entry`), one of them killed
//! with SIGKILL mid-run.
//!
//! Needs `DATABASE_URL`; skips loudly without it (fails with
//! `FLOWTRACE_REQUIRE_DB=1`). Each test works in a schema of its own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../examples/pg_queue/cli.rs"]
#[allow(dead_code)]
mod cli;
#[path = "../../flowtrace-store-postgres/tests/support/mod.rs"]
mod pg;

mod harness;

use std::time::{Duration, Instant};

use harness::*;
use serde_json::json;

#[tokio::test]
async fn runs_queued_are_run_by_a_worker_with_summaries_and_traces() {
    let Some(db) = pg::fresh("queue_basic").await else {
        return;
    };
    let dir = temp_dir("basic");
    let file = write_json(&dir, "chain.json", &chain(3, 0));
    let ids = enqueue(&db, &file, r#"{"topic": "tides"}"#, 4).await;
    assert_eq!(ids.len(), 4);
    // Enqueuing the same document again reuses the registered workflow.
    let input = r#"{"topic": "tides"}"#;
    let (_, again) = pg_queue_json(&db, &["enqueue", &file, "--input", input]).await;
    let (_, first) =
        pg_queue_json(&db, &["enqueue", &file, "--input", input, "--count", "1"]).await;
    assert_eq!(again["workflow_id"], first["workflow_id"]);
    let (code, queued) = status(&db, &ids[0]).await;
    assert_eq!((code, queued["status"].as_str()), (0, Some("queued")));

    let (code, report) =
        pg_queue_json(&db, &["worker", "--concurrency", "3", "--exit-when-idle"]).await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["claimed"], json!(6), "{report}");
    assert_eq!(report["outcomes"]["succeeded"], json!(6), "{report}");

    for id in &ids {
        let (code, doc) = status(&db, id).await;
        assert_eq!(code, 0, "{doc}");
        assert_eq!(doc["status"], "succeeded", "{doc}");
        assert_eq!(doc["run_id"], json!(id));
        assert_eq!(doc["outputs"]["s2"], json!("step 2 of tides"));
        // The worker's runtime caches responses, so later runs may cost
        // less; the totals always add up the steps.
        let steps: u64 = doc["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["tokens_input"].as_u64().unwrap())
            .sum();
        assert_eq!(doc["totals"]["tokens_input"], json!(steps), "{doc}");
        let row: i64 =
            sqlx::query_scalar("select total_tokens_input from workflow_runs where id = $1")
                .bind(id)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(row as u64, steps, "the run row holds the summary's totals");
        committed_once(&doc, 3);
        check_trace(&trace(&db, id, 4).await, 3);
    }

    // Retention: everything of the finished runs goes, in small batches.
    let purged = flowtrace_store_postgres::TraceStore::new(db.pool.clone())
        .purge_finished_with(
            Duration::ZERO,
            5,
            flowtrace_store_postgres::trace::RunRows::Delete,
        )
        .await
        .unwrap();
    assert_eq!((purged.runs, purged.threads), (6, 6), "{purged:?}");
    assert!(
        purged.checkpoints >= 6 * 4 && purged.events > 0,
        "{purged:?}"
    );
    for table in [
        "workflow_runs",
        "trace_events",
        "run_steps",
        "checkpoints",
        "checkpoint_threads",
        "thread_leases",
    ] {
        let left: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("select count(*) from {table}")))
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(left, 0, "{table}");
    }
    db.cleanup().await;
}

#[tokio::test]
async fn bad_input_gives_typed_errors_and_writes_nothing() {
    let Some(db) = pg::fresh("queue_bad_input").await else {
        return;
    };
    let dir = temp_dir("bad");
    let bad = write_json(
        &dir,
        "bad.json",
        &json!({"version": "1", "entry": "nowhere", "nodes": [
            {"id": "a", "type": "llm", "config": {"provider": "simulated"}},
            {"id": "a", "type": "teleport"}
        ]}),
    );
    let (code, out, err) = pg_queue(&db, &["enqueue", &bad]).await;
    assert_eq!(code, 2, "{out} {err}");
    assert!(
        err.contains("/nodes/1"),
        "problems carry JSON pointers: {err}"
    );
    let workflows: i64 = sqlx::query_scalar("select count(*) from workflows")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let runs: i64 = sqlx::query_scalar("select count(*) from workflow_runs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!((workflows, runs), (0, 0));

    let (code, _, err) = pg_queue(&db, &["status", "no-such-run"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("no-such-run"), "{err}");
    let (code, _, _) = pg_queue(&db, &["halt", "no-such-run"]).await;
    assert_eq!(code, 2);
    let (code, _, _) = pg_queue(&db, &["decide", "no-such-run", "--reject"]).await;
    assert_eq!(code, 2);
    let (code, _, _) = pg_queue(&db, &["decide", "x", "--reject", "--approve", "{}"]).await;
    assert_eq!(code, 2, "exactly one verdict");
    let (code, _, _) = pg_queue(&db, &["launch"]).await;
    assert_eq!(code, 2, "unknown command");
    let (code, _, _) = pg_queue(&db, &["enqueue", "/definitely/not/here.json"]).await;
    assert_eq!(code, 2);
    db.cleanup().await;
}

#[tokio::test]
async fn a_decision_from_this_process_resumes_the_run_on_a_worker_process() {
    let Some(db) = pg::fresh("queue_decide").await else {
        return;
    };
    let dir = temp_dir("decide");
    let file = write_json(&dir, "refund.json", &approval());
    let ids = enqueue(&db, &file, r#"{"amount": 40}"#, 1).await;
    let id = &ids[0];
    let mut worker = spawn_worker(&db, &["--id", "w-decide", "--poll-ms", "50"]);
    let waiting = wait_for(&db, id, "the approval", |d| d["status"] == "interrupted").await;
    assert_eq!(waiting["interrupt"]["node"], "approve", "{waiting}");
    // A decision for a run that is not waiting is refused.
    let (code, _, _) = pg_queue(&db, &["decide", id, "--approve", r#"{"amount": 40}"#]).await;
    assert_eq!(code, 0);
    let (code, _, err) = pg_queue(&db, &["decide", id, "--reject"]).await;
    assert_eq!(code, 2, "a second decision: {err}");
    let done = wait_for(&db, id, "the end", |d| d["status"] == "succeeded").await;
    assert_eq!(done["outputs"]["send"], json!(40), "{done}");
    committed_once(&done, 3);
    worker.start_kill().unwrap();
    let _ = worker.wait().await;
    db.cleanup().await;
}

#[tokio::test]
async fn a_halt_reaches_the_run_in_a_worker_process_and_resume_finishes_it() {
    let Some(db) = pg::fresh("queue_halt").await else {
        return;
    };
    let dir = temp_dir("halt");
    let file = write_json(&dir, "slow.json", &chain(40, 50));
    let ids = enqueue(&db, &file, r#"{"topic": "wind"}"#, 1).await;
    let id = &ids[0];
    let mut worker = spawn_worker(&db, &["--id", "w-halt", "--poll-ms", "50"]);
    wait_for(&db, id, "the start", |d| d["status"] == "running").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, doc) = pg_queue_json(&db, &["halt", id]).await;
    assert_eq!(code, 0, "{doc}");
    let halted = wait_for(&db, id, "the halt", |d| d["status"] == "halted").await;
    let ran = halted["steps"].as_array().unwrap().len();
    assert!((1..40).contains(&ran), "halted part-way: {ran} steps");
    let queue = flowtrace_store_postgres::RunQueue::new(db.pool.clone());
    queue.resume(id).await.unwrap();
    let done = wait_for(&db, id, "the end", |d| d["status"] == "succeeded").await;
    committed_once(&done, 40);
    worker.start_kill().unwrap();
    let _ = worker.wait().await;
    db.cleanup().await;
}

#[tokio::test]
async fn a_worker_killed_mid_run_loses_nothing_and_reruns_no_committed_step() {
    let Some(db) = pg::fresh("queue_sigkill").await else {
        return;
    };
    let dir = temp_dir("kill");
    let nodes = 12;
    let file = write_json(&dir, "chain.json", &chain(nodes, 60));
    let ids = enqueue(&db, &file, r#"{"topic": "rain"}"#, 6).await;
    let lease = [
        "--lease-ms",
        "1500",
        "--poll-ms",
        "50",
        "--concurrency",
        "3",
    ];
    let mut doomed = spawn_worker(&db, &[&["--id", "doomed"][..], &lease[..]].concat());
    // Wait until the doomed worker has committed some steps of its runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held: i64 = sqlx::query_scalar(
            "select count(*) from workflow_runs where claimed_by = 'doomed' and status = 'running'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if held == 3 && history(&db, &ids[0]).await.len() >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the doomed worker never got going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.start_kill().unwrap(); // SIGKILL
    let killed = doomed.wait().await.unwrap();
    assert!(!killed.success());

    let survivor = spawn_worker(
        &db,
        &[&["--id", "survivor", "--exit-when-idle"][..], &lease[..]].concat(),
    );
    let out = tokio::time::timeout(Duration::from_secs(120), survivor.wait_with_output())
        .await
        .expect("the survivor finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut resumed = 0;
    for id in &ids {
        succeeded_once(&db, id, nodes).await;
        check_trace(&trace(&db, id, 500).await, nodes);
        let claims: i32 = sqlx::query_scalar("select claims from workflow_runs where id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        if claims > 1 {
            resumed += 1;
        }
    }
    assert!(
        resumed >= 3,
        "the doomed worker's runs were resumed by the survivor: {resumed}"
    );
    db.cleanup().await;
}

#[tokio::test]
async fn a_cancel_reaches_the_run_in_a_worker_process_at_once() {
    let Some(db) = pg::fresh("queue_cancel").await else {
        return;
    };
    let dir = temp_dir("cancel");
    let file = write_json(&dir, "slow.json", &chain(40, 100));
    let ids = enqueue(&db, &file, r#"{"topic": "hail"}"#, 2).await;
    let queue = flowtrace_store_postgres::RunQueue::new(db.pool.clone());
    // A queued run is canceled on the spot.
    let state = queue.cancel(&ids[1]).await.unwrap();
    assert_eq!(state, flowtrace_store_postgres::RunState::Canceled);
    let mut worker = spawn_worker(&db, &["--id", "w-cancel", "--poll-ms", "50"]);
    wait_for(&db, &ids[0], "the start", |d| d["status"] == "running").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = Instant::now();
    assert_eq!(
        queue.cancel(&ids[0]).await.unwrap(),
        flowtrace_store_postgres::RunState::Running,
        "a running run is canceled by its worker"
    );
    let done = wait_for(&db, &ids[0], "the cancel", |d| d["status"] == "canceled").await;
    // Delivered by NOTIFY, not by the next heartbeat (10 s away).
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    let ran = done["steps"].as_array().map_or(0, Vec::len);
    assert!(ran < 40, "stopped part-way: {ran} steps");
    let (code, _) = status(&db, &ids[0]).await;
    assert_eq!(code, 1, "a canceled run's status exits 1");
    // Finished runs refuse further requests.
    let err = queue.halt(&ids[0]).await.unwrap_err();
    assert_eq!(
        err.kind(),
        flowtrace_store_postgres::StoreErrorKind::Conflict
    );
    worker.start_kill().unwrap();
    let _ = worker.wait().await;
    db.cleanup().await;
}

#[tokio::test]
async fn provider_bindings_move_a_workflow_to_another_model() {
    let Some(db) = pg::fresh("queue_bindings").await else {
        return;
    };
    let dir = temp_dir("bindings");
    let file = write_json(&dir, "chain.json", &chain(2, 0));
    let (code, doc) =
        pg_queue_json(&db, &["enqueue", &file, "--input", r#"{"topic": "snow"}"#]).await;
    assert_eq!(code, 0, "{doc}");
    let workflow = doc["workflow_id"].as_str().unwrap().to_owned();
    let registry = flowtrace_store_postgres::WorkflowRegistry::new(db.pool.clone());
    registry
        .bind_provider(
            &workflow,
            Some("ops"),
            "simulated",
            "claude-3-5-haiku",
            Some(0.2),
        )
        .await
        .unwrap();
    // A second binding of the same provider replaces the first.
    let bound = registry
        .bind_provider(
            &workflow,
            Some("ops"),
            "simulated",
            "claude-3-5-haiku",
            Some(0.0),
        )
        .await
        .unwrap();
    assert_eq!(registry.bindings(&workflow).await.unwrap(), vec![bound]);
    // Bad bindings are refused, nothing written.
    use flowtrace_store_postgres::StoreErrorKind;
    let kind = |r: Result<
        flowtrace_store_postgres::ProviderBinding,
        flowtrace_store_postgres::StoreError,
    >| r.unwrap_err().kind();
    assert_eq!(
        kind(
            registry
                .bind_provider("nope", None, "simulated", "m", None)
                .await
        ),
        StoreErrorKind::NotFound
    );
    assert_eq!(
        kind(
            registry
                .bind_provider(&workflow, None, "simulated", "m", Some(3.0))
                .await
        ),
        StoreErrorKind::Invalid
    );
    assert_eq!(
        kind(registry.bind_provider(&workflow, None, "", "m", None).await),
        StoreErrorKind::Invalid
    );
    assert_eq!(registry.bindings(&workflow).await.unwrap().len(), 1);

    let (code, report) = pg_queue_json(&db, &["worker", "--exit-when-idle"]).await;
    assert_eq!(code, 0, "{report}");
    let run_id = doc["run_ids"][0].as_str().unwrap();
    let (_, done) = status(&db, run_id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    for step in done["steps"].as_array().unwrap() {
        assert_eq!(step["model"], "claude-3-5-haiku", "{done}");
    }
    assert!(
        registry
            .unbind_provider(&workflow, "simulated")
            .await
            .unwrap()
    );
    assert!(
        !registry
            .unbind_provider(&workflow, "simulated")
            .await
            .unwrap()
    );
    db.cleanup().await;
}

#[tokio::test]
async fn sigterm_releases_the_runs_a_worker_holds_and_another_finishes_them() {
    let Some(db) = pg::fresh("queue_sigterm").await else {
        return;
    };
    let dir = temp_dir("sigterm");
    let nodes = 40;
    let file = write_json(&dir, "slow.json", &chain(nodes, 50));
    let ids = enqueue(&db, &file, r#"{"topic": "dew"}"#, 1).await;
    let id = &ids[0];
    let worker = spawn_worker(
        &db,
        &["--id", "w-term", "--poll-ms", "50", "--grace-ms", "200"],
    );
    wait_for(&db, id, "the start", |d| d["status"] == "running").await;
    while history(&db, id).await.len() < 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = worker.id().unwrap().to_string();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    let out = tokio::time::timeout(Duration::from_secs(30), worker.wait_with_output())
        .await
        .expect("the worker stops after its grace period")
        .unwrap();
    // The child is this test binary: its stdout also holds the harness's
    // lines; the worker's report is the JSON one.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = stdout
        .lines()
        .find_map(|l| l.find('{').and_then(|i| serde_json::from_str(&l[i..]).ok()))
        .unwrap_or_else(|| panic!("no report in {stdout}"));
    assert!(out.status.success(), "{report}");
    assert_eq!(report["outcomes"]["released"], json!(1), "{report}");
    let (_, released) = status(&db, id).await;
    assert_eq!(
        released["status"], "queued",
        "given back to the queue: {released}"
    );

    let (code, report) =
        pg_queue_json(&db, &["worker", "--id", "w-next", "--exit-when-idle"]).await;
    assert_eq!(code, 0, "{report}");
    succeeded_once(&db, id, nodes).await;
    db.cleanup().await;
}
