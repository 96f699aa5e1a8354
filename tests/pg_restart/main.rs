//! PostgreSQL restarted under a running worker: the worker reconnects and
//! the run completes, with no committed step run twice.
//!
//! Restarting the server disturbs every other connection, so this is a
//! test binary of its own (cargo runs test binaries one at a time). It runs
//! the command in `FLOWTRACE_PG_RESTART_CMD` (CI sets it to
//! `pg_ctlcluster --skip-systemctl-redirect <version> main restart`); when
//! that is unset it skips loudly, or fails under `FLOWTRACE_REQUIRE_DB=1`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../examples/pg_queue/cli.rs"]
#[allow(dead_code)]
mod cli;
#[path = "../pg_queue/harness.rs"]
mod harness;
#[path = "../../flowtrace-store-postgres/tests/support/mod.rs"]
mod pg;

use std::time::{Duration, Instant};

use harness::*;

#[tokio::test]
async fn a_database_restart_under_a_running_worker_does_not_lose_the_run() {
    let Some(db) = pg::fresh("queue_db_restart").await else {
        return;
    };
    let Ok(restart) = std::env::var("FLOWTRACE_PG_RESTART_CMD") else {
        if std::env::var("FLOWTRACE_REQUIRE_DB").as_deref() == Ok("1") {
            panic!("FLOWTRACE_PG_RESTART_CMD is not set and FLOWTRACE_REQUIRE_DB=1");
        }
        eprintln!(
            "SKIPPED a_database_restart_under_a_running_worker: set FLOWTRACE_PG_RESTART_CMD to a command that restarts the server"
        );
        db.cleanup().await;
        return;
    };
    let dir = temp_dir("restart");
    let nodes = 30;
    let file = write_json(&dir, "slow.json", &chain(nodes, 100));
    let ids = enqueue(&db, &file, r#"{"topic": "fog"}"#, 2).await;
    let mut worker = spawn_worker(
        &db,
        &[
            "--id",
            "w-restart",
            "--lease-ms",
            "3000",
            "--poll-ms",
            "100",
            "--exit-when-idle",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while history(&db, &ids[0]).await.len() < 5 {
        assert!(Instant::now() < deadline, "the worker never got going");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let restarted = std::process::Command::new("sh")
        .args(["-c", &restart])
        .status()
        .unwrap();
    assert!(restarted.success(), "{restart}: {restarted}");
    // The test's own pool reconnects too.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sqlx::query("select 1").execute(&db.pool).await.is_err() {
        assert!(Instant::now() < deadline, "the database did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = tokio::time::timeout(Duration::from_secs(120), worker.wait())
        .await
        .expect("the worker finishes every run")
        .unwrap();
    assert!(out.success());
    for id in &ids {
        succeeded_once(&db, id, nodes).await;
    }
    let _ = worker.kill().await;
    db.cleanup().await;
}
