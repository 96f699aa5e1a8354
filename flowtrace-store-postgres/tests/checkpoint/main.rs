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
        // Handles alternate between asynchronous and synchronous pending
        // writes: both conform.
        let n = next.fetch_add(1, Ordering::Relaxed);
        Arc::new(
            PostgresCheckpointer::new(pools[n % pools.len()].clone())
                .synchronous_pending_writes(n % 2 == 1),
        )
    })
    .await;
    assert!(result.is_ok(), "{}", result.unwrap_err());
    for p in pools.iter().skip(1) {
        p.close().await;
    }
    db.cleanup().await;
}

// ===== Fencing by lease =====

#[tokio::test]
async fn a_stale_worker_is_fenced_and_the_history_never_forks() {
    let Some(db) = support::fresh("cp_fencing").await else {
        return;
    };
    let store = PostgresCheckpointer::new(db.pool.clone());
    let thread = ThreadId::new("fenced");

    // Worker A holds the thread and writes seq 0; its lease then expires.
    let lease_a = lease::acquire(&db.pool, &thread, "A", Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    let a = store.fenced(lease_a.clone());
    let a0 = sample_checkpoint(&thread, 0, state(0, 10));
    a.append(a0.clone()).await.unwrap();
    a.put_write(&thread, 0, sample_write(0, json!("A's task")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Worker B (another pool, as another process) takes it over and goes on.
    let pool_b = connect(&db.config()).await.unwrap();
    let lease_b = lease::acquire(&pool_b, &thread, "B", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease_b.epoch, lease_a.epoch + 1);
    let b = PostgresCheckpointer::new(pool_b.clone()).fenced(lease_b.clone());
    let b1 = sample_checkpoint(&thread, 1, StateRecord::Delta(vec![json!({ "by": "B" })]));
    b.append(b1.clone()).await.unwrap();

    // A comes back: every write to the thread is refused, whatever its seq.
    let fenced = |what: &str, r: Result<(), CheckpointError>| match r {
        Err(e @ CheckpointError::Fenced { .. }) => {
            assert_eq!(e.kind(), CheckpointErrorKind::Conflict, "{what}");
            let CheckpointError::Fenced {
                epoch,
                current_epoch,
                owner,
                ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!((epoch, current_epoch), (lease_a.epoch, lease_b.epoch));
            assert_eq!(owner, "A");
        }
        other => panic!("{what}: expected Fenced, got {other:?}"),
    };
    let stale1 = sample_checkpoint(&thread, 1, StateRecord::Delta(vec![json!({ "by": "A" })]));
    fenced("append of seq 1", a.append(stale1.clone()).await);
    let stale2 = sample_checkpoint(&thread, 2, StateRecord::Delta(vec![json!({ "by": "A" })]));
    fenced("append of seq 2", a.append(stale2.clone()).await);
    fenced(
        "append_batch",
        a.append_batch(
            &thread,
            CheckpointBatch {
                checkpoints: vec![stale2.clone()],
                writes: vec![(2, sample_write(0, json!("A")))],
            },
        )
        .await,
    );
    fenced(
        "put_write",
        a.put_write(&thread, 1, sample_write(0, json!("A"))).await,
    );
    fenced(
        "prune",
        a.prune(&thread, flowtrace_core::checkpoint::Retention::Latest(1))
            .await
            .map(|_| ()),
    );
    fenced("delete_thread", a.delete_thread(&thread).await.map(|_| ()));
    let other = ThreadId::new("fenced-source");
    store
        .append(sample_checkpoint(&other, 0, state(0, 10)))
        .await
        .unwrap();
    fenced("copy_thread into it", a.copy_thread(&other, &thread).await);

    // The history is exactly A's seq 0 then B's seq 1: no fork.
    let history = store.list(&thread, None, 100).await.unwrap();
    assert_eq!(history, vec![b1.clone(), a0.clone()]);
    assert!(store.writes(&thread, 1).await.unwrap().is_empty());
    assert_eq!(store.writes(&thread, 0).await.unwrap().len(), 1);
    assert_eq!(count(&db.pool, "checkpoints", "fenced").await, 2);

    // A's handle still writes other threads; B carries on.
    let free = ThreadId::new("not-leased");
    a.append(sample_checkpoint(&free, 0, state(0, 10)))
        .await
        .unwrap();
    b.append(sample_checkpoint(
        &thread,
        2,
        StateRecord::Delta(vec![json!(2)]),
    ))
    .await
    .unwrap();
    assert_eq!(store.get(&thread, None).await.unwrap().unwrap().seq, 2);

    pool_b.close().await;
    db.cleanup().await;
}

#[tokio::test]
async fn an_expired_lease_nobody_took_over_still_writes() {
    let Some(db) = support::fresh("cp_expired_lease").await else {
        return;
    };
    let thread = ThreadId::new("t");
    let l = lease::acquire(&db.pool, &thread, "A", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let a = PostgresCheckpointer::new(db.pool.clone()).fenced(l);
    a.append(sample_checkpoint(&thread, 0, state(0, 10)))
        .await
        .unwrap();
    // Fencing by seq still applies under a lease.
    let err = a
        .append(sample_checkpoint(&thread, 0, state(0, 10)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::Conflict {
                seq: 0,
                expected: 1,
                ..
            }
        ),
        "{err}"
    );
    db.cleanup().await;
}

// ===== A durable run, resumed through another pool =====

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Trail {
    log: Vec<String>,
}

impl State for Trail {
    type Update = Vec<String>;
    fn apply(&mut self, update: Vec<String>) {
        self.log.extend(update);
    }
}

fn counted(name: &'static str, runs: Arc<AtomicUsize>) -> impl flowtrace_core::Node<Trail> {
    node_fn(move |_s: Arc<Trail>, _ctx| {
        let runs = runs.clone();
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(vec![name.to_string()].into())
        }
    })
}

#[tokio::test]
async fn a_durable_run_resumes_from_another_pool() {
    let Some(db) = support::fresh("cp_durable_run").await else {
        return;
    };
    let runs = Arc::new(AtomicUsize::new(0));
    let graph = GraphBuilder::<Trail>::new("approval")
        .add_node("intake", counted("intake", runs.clone()))
        .add_node("review", counted("review", runs.clone()))
        .add_node("charge", counted("charge", runs.clone()))
        .set_entry("intake")
        .add_edge("intake", "review")
        .add_edge("review", "charge")
        .set_finish("charge")
        .interrupt_before(["charge"])
        .compile()
        .unwrap();

    let first = PostgresCheckpointer::new(db.pool.clone());
    let out = graph
        .invoke(
            Trail::default(),
            RunConfig::new().checkpointer(Arc::new(first)).thread("t"),
        )
        .await
        .unwrap();
    assert_eq!(out.summary.status, RunStatus::Interrupted);
    let interrupt = out.interrupt().cloned().unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    db.pool.close().await;

    // Another process: a new pool on the same schema.
    let pool = connect(&db.config()).await.unwrap();
    let second = PostgresCheckpointer::new(pool.clone());
    let out = graph
        .invoke(
            Command::approve(interrupt.id, json!({ "ok": true })),
            RunConfig::new()
                .checkpointer(Arc::new(second.clone()))
                .thread("t"),
        )
        .await
        .unwrap();
    assert_eq!(out.summary.status, RunStatus::Succeeded);
    assert_eq!(out.state.log, ["intake", "review", "charge"]);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "no committed step ran twice"
    );

    let t = ThreadId::new("t");
    let history = second.list(&t, None, 100).await.unwrap();
    let seqs: Vec<u64> = history.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).rev().collect::<Vec<_>>());
    assert!(matches!(
        history.last().unwrap().state,
        StateRecord::Full(_)
    ));
    assert!(
        history[..history.len() - 1]
            .iter()
            .all(|c| matches!(c.state, StateRecord::Delta(_))),
        "steps are written as deltas"
    );
    let threads = second
        .list_threads(&flowtrace_core::checkpoint::ThreadFilter::new())
        .await
        .unwrap();
    assert_eq!(threads.len(), 1);
    assert_eq!(
        threads[0].status,
        flowtrace_core::checkpoint::ThreadStatus::Completed
    );
    assert_eq!(threads[0].latest_seq, history[0].seq);
    pool.close().await;
    // Closing a closed pool is a no-op: this drops the schema.
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_super_step_replays_its_saved_tasks_after_a_resume() {
    let Some(db) = support::fresh("cp_wide_replay").await else {
        return;
    };
    const WIDTH: usize = 20;
    let worker_runs = Arc::new(AtomicUsize::new(0));
    let mut b = GraphBuilder::<Trail>::new("wide")
        .add_node(
            "split",
            node_fn(|_s: Arc<Trail>, _c| async { Ok(Vec::new().into()) }),
        )
        .add_node(
            "join",
            node_fn(|_s: Arc<Trail>, _c| async { Ok(vec!["join".to_string()].into()) }),
        )
        .add_node(
            "ask",
            node_fn(
                |_s: Arc<Trail>, ctx: flowtrace_core::NodeContext| async move {
                    let answer = ctx.interrupt(json!({ "question": "go on?" }))?;
                    Ok(vec![format!("asked {answer}")].into())
                },
            ),
        )
        .set_entry("split")
        .add_edge("split", "ask")
        .add_edge("ask", "join")
        .set_finish("join");
    for i in 0..WIDTH {
        b = b
            .add_node(format!("w{i:02}"), counted("w", worker_runs.clone()))
            .add_edge("split", format!("w{i:02}"))
            .add_edge(format!("w{i:02}"), "join");
    }
    let graph = b.compile().unwrap();
    let store = PostgresCheckpointer::new(db.pool.clone());
    let out = graph
        .invoke(
            Trail::default(),
            RunConfig::new()
                .checkpointer(Arc::new(store.clone()))
                .thread("wide")
                .parallel(WIDTH + 1),
        )
        .await
        .unwrap();
    assert_eq!(out.summary.status, RunStatus::Interrupted);
    assert_eq!(worker_runs.load(Ordering::SeqCst), WIDTH);
    // Every finished task's result is in the database.
    let latest = store.get(&"wide".into(), None).await.unwrap().unwrap();
    let saved = store.writes(&"wide".into(), latest.seq).await.unwrap();
    assert_eq!(saved.len(), WIDTH, "{saved:?}");

    // Resumed by another process: the saved tasks are replayed, not run.
    let pool = connect(&db.config()).await.unwrap();
    let out = graph
        .invoke(
            Command::approve(out.interrupt().unwrap().id.clone(), json!("yes")),
            RunConfig::new()
                .checkpointer(Arc::new(PostgresCheckpointer::new(pool.clone())))
                .thread("wide")
                .parallel(WIDTH + 1),
        )
        .await
        .unwrap();
    assert_eq!(out.summary.status, RunStatus::Succeeded);
    assert_eq!(
        worker_runs.load(Ordering::SeqCst),
        WIDTH,
        "no task ran twice"
    );
    assert_eq!(out.state.log.len(), WIDTH + 2);
    pool.close().await;
    db.cleanup().await;
}

// ===== A long thread =====

#[tokio::test]
async fn a_long_thread_resumes_from_its_last_snapshot() {
    let Some(db) = support::fresh("cp_long_thread").await else {
        return;
    };
    const LEN: u64 = 10_000;
    const FULL_EVERY: u64 = 250;
    let store = PostgresCheckpointer::new(db.pool.clone());
    let thread = ThreadId::new("long");
    for start in (0..LEN).step_by(1_000) {
        let checkpoints = (start..start + 1_000)
            .map(|seq| sample_checkpoint(&thread, seq, state(seq, FULL_EVERY)))
            .collect();
        store
            .append_batch(
                &thread,
                CheckpointBatch {
                    checkpoints,
                    writes: Vec::new(),
                },
            )
            .await
            .unwrap();
    }
    store
        .put_write(&thread, LEN - 1, sample_write(0, json!("last")))
        .await
        .unwrap();
    assert_eq!(count(&db.pool, "checkpoints", "long").await, LEN as i64);

    let latest = LEN - 1;
    let tail = latest - latest % FULL_EVERY;
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let chain = store.chain(&thread, latest).await.unwrap();
        best = best.min(t.elapsed());
        // Only the tail since the last snapshot is read.
        assert_eq!(chain.len() as u64, latest - tail + 1);
        assert_eq!(chain[0].seq, tail);
        assert!(matches!(chain[0].state, StateRecord::Full(_)));
        assert_eq!(chain.last().unwrap().seq, latest);
    }
    println!("chain(latest) of a {LEN}-checkpoint thread: {best:?}");
    assert!(best < Duration::from_millis(20), "chain took {best:?}");

    let mut best = Duration::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let cp = store.get(&thread, None).await.unwrap().unwrap();
        let writes = store.writes(&thread, latest).await.unwrap();
        best = best.min(t.elapsed());
        assert_eq!((cp.seq, writes.len()), (latest, 1));
    }
    println!("get(latest) + writes of a {LEN}-checkpoint thread: {best:?}");
    assert!(
        best < Duration::from_millis(10),
        "get + writes took {best:?}"
    );

    // The next append still costs one row.
    store
        .append(sample_checkpoint(&thread, LEN, state(LEN, FULL_EVERY)))
        .await
        .unwrap();
    db.cleanup().await;
}

// ===== Bad input =====

#[tokio::test]
async fn bad_input_gets_typed_errors_and_writes_nothing() {
    let Some(db) = support::fresh("cp_bad_input").await else {
        return;
    };
    let store = PostgresCheckpointer::new(db.pool.clone());
    let nobody = ThreadId::new("nobody");
    let kind = |e: CheckpointError| e.kind();

    // An unknown thread.
    assert!(store.get(&nobody, None).await.unwrap().is_none());
    assert!(store.writes(&nobody, 0).await.unwrap().is_empty());
    let e = store.chain(&nobody, 0).await.unwrap_err();
    assert!(matches!(e, CheckpointError::ThreadNotFound { .. }), "{e}");
    assert_eq!(kind(e), CheckpointErrorKind::NotFound);
    let e = store
        .prune(&nobody, flowtrace_core::checkpoint::Retention::Latest(1))
        .await
        .unwrap_err();
    assert!(matches!(e, CheckpointError::ThreadNotFound { .. }), "{e}");
    let e = store
        .copy_thread(&nobody, &ThreadId::new("copy"))
        .await
        .unwrap_err();
    assert!(matches!(e, CheckpointError::ThreadNotFound { .. }), "{e}");
    assert!(!store.delete_thread(&nobody).await.unwrap());

    // Too deep, an unknown format: refused before anything is stored.
    let deep = ThreadId::new("deep");
    let mut nested = json!("leaf");
    for _ in 0..200 {
        nested = json!([nested]);
    }
    let e = store
        .append(sample_checkpoint(
            &deep,
            0,
            StateRecord::Full(nested.clone()),
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, CheckpointError::TooDeep { seq: 0, .. }), "{e}");
    assert_eq!(kind(e), CheckpointErrorKind::LimitExceeded);
    let e = store
        .put_write(&deep, 0, sample_write(0, nested.clone()))
        .await
        .unwrap_err();
    assert!(matches!(e, CheckpointError::TooDeep { .. }), "{e}");
    let e = store
        .append_batch(
            &deep,
            CheckpointBatch {
                checkpoints: vec![
                    sample_checkpoint(&deep, 0, state(0, 10)),
                    sample_checkpoint(&deep, 1, StateRecord::Delta(vec![nested])),
                ],
                writes: vec![(0, sample_write(0, json!(1)))],
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, CheckpointError::TooDeep { seq: 1, .. }), "{e}");
    let mut old = sample_checkpoint(&deep, 0, state(0, 10));
    old.format_version = 99;
    let e = store.append(old).await.unwrap_err();
    assert!(
        matches!(e, CheckpointError::UnsupportedVersion { found: 99, .. }),
        "{e}"
    );
    for table in ["checkpoints", "checkpoint_writes", "checkpoint_threads"] {
        assert_eq!(count(&db.pool, table, "deep").await, 0, "{table}");
    }

    // A seq past the latest, a copy onto an existing thread.
    store
        .append(sample_checkpoint(&deep, 0, state(0, 10)))
        .await
        .unwrap();
    let e = store.chain(&deep, 7).await.unwrap_err();
    assert!(
        matches!(
            e,
            CheckpointError::CheckpointNotFound {
                seq: 7,
                latest: 0,
                ..
            }
        ),
        "{e}"
    );
    let e = store.get(&deep, Some(u64::MAX)).await.unwrap();
    assert!(e.is_none());
    store
        .append(sample_checkpoint(&nobody, 0, state(0, 10)))
        .await
        .unwrap();
    let e = store.copy_thread(&deep, &nobody).await.unwrap_err();
    assert!(matches!(e, CheckpointError::ThreadExists { .. }), "{e}");
    assert_eq!(kind(e), CheckpointErrorKind::Conflict);
    db.cleanup().await;
}
