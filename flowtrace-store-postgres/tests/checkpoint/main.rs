//! `PostgresCheckpointer` against the real PostgreSQL: the core
//! conformance kit, lease fencing with two writers, a durable run resumed
//! through another pool, a long thread, and bad input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flowtrace_core::checkpoint::conformance::{self, sample_checkpoint, sample_write};
use flowtrace_core::checkpoint::{
    CheckpointBatch, CheckpointError, CheckpointErrorKind, Checkpointer, StateRecord,
};
use flowtrace_core::exec::Command;
use flowtrace_core::{GraphBuilder, RunConfig, RunStatus, State, ThreadId, node_fn};
use flowtrace_store_postgres::{PostgresCheckpointer, connect, lease};
use serde::{Deserialize, Serialize};
use serde_json::json;

fn state(seq: u64, full_every: u64) -> StateRecord {
    if seq.is_multiple_of(full_every) {
        StateRecord::Full(json!({ "snapshot": seq }))
    } else {
        StateRecord::Delta(vec![json!({ "seq": seq })])
    }
}

async fn count(pool: &sqlx::PgPool, table: &str, thread: &str) -> i64 {
    let sql = format!("select count(*) from {table} where thread_id = $1");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(thread)
        .fetch_one(pool)
        .await
        .unwrap()
}

// ===== The conformance kit =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_kit_passes() {
    let Some(db) = support::fresh("cp_conformance").await else {
        return;
    };
    // Three pools on one schema: each `open` is a new handle on another
    // pool, as a restarted process (or another worker) would have.
    let mut pools = vec![db.pool.clone()];
    for _ in 0..2 {
        pools.push(connect(&db.config().max_connections(8)).await.unwrap());
    }
    let next = AtomicUsize::new(0);
    let result = conformance::run(|| -> Arc<dyn Checkpointer> {
        let i = next.fetch_add(1, Ordering::Relaxed) % pools.len();
        Arc::new(PostgresCheckpointer::new(pools[i].clone()))
    })
    .await;
    assert!(result.is_ok(), "{}", result.unwrap_err());
    for p in pools.iter().skip(1) {
        p.close().await;
    }
    db.cleanup().await;
}
