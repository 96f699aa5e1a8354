//! The trace store: every event of a run lands in `trace_events`, steps in
//! `run_steps`, totals in `workflow_runs`; paginated reads; retention.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

mod failures;
mod graphs;

use std::sync::Arc;
use std::time::Duration;

use flowtrace_core::trace::{MemorySink, TraceEvent, TraceSink};
use flowtrace_core::{Cost, RunConfig, RunSummary, StepStatus};
use flowtrace_store_postgres::trace::{
    PostgresTraceSink, RunRows, StoredEvent, TraceSinkOptions, TraceStore,
};
use flowtrace_store_postgres::{PgPool, StoreError};

use graphs::{Items, chain, failing, model, with_subgraph};

/// Every stored event of `run_id`, read page by page.
async fn all_events(store: &TraceStore, run_id: &str, page: usize) -> Vec<StoredEvent> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let p = store.events(run_id, after, page).await.unwrap();
        assert!(p.events.len() <= page);
        out.extend(p.events);
        match p.next {
            Some(c) => after = Some(c),
            None => return out,
        }
    }
}

/// Asserts the stored events of `run_id` are exactly `expected`, in order,
/// numbered from 0.
async fn assert_same_events(store: &TraceStore, run_id: &str, expected: &[TraceEvent]) {
    let stored = all_events(store, run_id, 1000).await;
    assert_eq!(stored.len(), expected.len(), "run {run_id}");
    for (i, (s, e)) in stored.iter().zip(expected).enumerate() {
        assert_eq!(s.seq, i as i64);
        assert_eq!(s.kind, e.kind.name());
        assert_eq!(s.step_id, e.step_id.map(|id| id.0));
        assert_eq!(s.ts, e.ts);
        assert_eq!(&s.event().unwrap(), e, "event {i} of {run_id}");
    }
}

/// Asserts the stored steps and totals of the run equal its summary.
async fn assert_matches_summary(store: &TraceStore, summary: &RunSummary, status: &str) {
    let run_id = summary.run_id.as_str();
    let steps = store.steps(run_id).await.unwrap();
    assert_eq!(steps.len(), summary.steps.len(), "{run_id}: {steps:#?}");
    for (row, rec) in steps.iter().zip(&summary.steps) {
        assert_eq!(row.step_id, rec.step_id.0);
        assert_eq!(row.node_id, rec.node.as_str());
        assert_eq!(row.attempt, rec.attempts);
        assert_eq!(row.tokens_input, rec.usage.input_tokens);
        assert_eq!(row.tokens_output, rec.usage.output_tokens);
        assert_eq!(row.cost, rec.cost, "exact cost of step {}", rec.step_id);
        assert_eq!(row.provider, rec.provider);
        assert_eq!(row.model, rec.model);
        assert_eq!(row.cache_hit, rec.cache_hits > 0);
        assert_eq!(row.error, rec.error);
        let expected_status = match rec.status {
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Canceled => "canceled",
            _ => "interrupted",
        };
        assert_eq!(row.status, expected_status);
        assert!(row.started_at <= row.finished_at);
    }
    let run = store.run(run_id).await.unwrap();
    assert_eq!(run.status, status);
    assert_eq!(run.total_tokens_input, summary.usage.input_tokens);
    assert_eq!(run.total_tokens_output, summary.usage.output_tokens);
    assert_eq!(run.total_cost, summary.cost);
    // The summary's start and the `run.started` event's may differ by a
    // microsecond of rounding.
    let started = run.started_at.unwrap().unix_micros();
    assert!((started - summary.started_at.unix_micros()).abs() <= 1_000);
    assert!(run.finished_at.is_some());
    let sum: Cost = steps.iter().map(|s| s.cost).sum();
    assert_eq!(sum, summary.cost);
}

fn shared(sink: &Arc<PostgresTraceSink>) -> Arc<dyn TraceSink> {
    sink.clone()
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn every_event_lands_in_order_with_steps_and_exact_totals() {
    let Some(db) = support::fresh("trace_completeness").await else {
        return;
    };
    let sink = Arc::new(PostgresTraceSink::new(db.pool.clone()));
    let store = TraceStore::new(db.pool.clone());
    let graph = with_subgraph(model());
    let mem = MemorySink::new();
    let out = graph
        .invoke(
            Items::default(),
            RunConfig::new()
                .run_id("run-sub")
                .shared_sink(shared(&sink))
                .sink(mem.clone()),
        )
        .await
        .unwrap();
    // No explicit flush: the executor flushed before `invoke` returned.
    let events = mem.events();
    assert!(events.len() > 20, "{}", events.len());
    assert!(!out.summary.cost.is_zero());
    assert_same_events(&store, "run-sub", &events).await;
    // Totals are the top-level run's, not the subgraph's.
    assert_matches_summary(&store, &out.summary, "succeeded").await;
    let run = store.run("run-sub").await.unwrap();
    assert_eq!(run.total_latency_ms, out.summary.elapsed.as_millis() as u64);
    assert!(run.error_summary.is_none());
    db.cleanup().await;
}

#[tokio::test]
async fn a_failed_run_records_its_error_and_failed_step() {
    let Some(db) = support::fresh("trace_failed_run").await else {
        return;
    };
    let sink = Arc::new(PostgresTraceSink::new(db.pool.clone()));
    let store = TraceStore::new(db.pool.clone());
    let mem = MemorySink::new();
    let failure = failing(model())
        .invoke(
            Items::default(),
            RunConfig::new()
                .run_id("run-failed")
                .shared_sink(shared(&sink))
                .sink(mem.clone()),
        )
        .await
        .unwrap_err();
    assert_same_events(&store, "run-failed", &mem.events()).await;
    assert_matches_summary(&store, &failure.summary, "failed").await;
    let run = store.run("run-failed").await.unwrap();
    let message = run.error_summary.unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("bad input"), "{message}");
    db.cleanup().await;
}

#[tokio::test]
async fn concurrent_runs_share_one_sink() {
    let Some(db) = support::fresh("trace_concurrent").await else {
        return;
    };
    let sink = Arc::new(PostgresTraceSink::new(db.pool.clone()));
    let store = TraceStore::new(db.pool.clone());
    let mut runs = Vec::new();
    for i in 0..8 {
        let sink = shared(&sink);
        runs.push(tokio::spawn(async move {
            let mem = MemorySink::new();
            let graph = chain(5 + i, model());
            let out = graph
                .invoke(
                    Items::default(),
                    RunConfig::new()
                        .run_id(format!("run-{i}"))
                        .shared_sink(sink)
                        .sink(mem.clone()),
                )
                .await
                .unwrap();
            (out.summary, mem.events())
        }));
    }
    let mut total = 0;
    for run in runs {
        let (summary, events) = run.await.unwrap();
        total += events.len();
        assert_same_events(&store, summary.run_id.as_str(), &events).await;
        assert_matches_summary(&store, &summary, "succeeded").await;
    }
    assert_eq!(
        count(&db.pool, "select count(*) from trace_events").await,
        total as i64
    );
    db.cleanup().await;
}

#[tokio::test]
async fn pages_cover_every_event_exactly_once() {
    let Some(db) = support::fresh("trace_pages").await else {
        return;
    };
    let sink = Arc::new(PostgresTraceSink::new(db.pool.clone()));
    let store = TraceStore::new(db.pool.clone());
    let mem = MemorySink::new();
    chain(12, model())
        .invoke(
            Items::default(),
            RunConfig::new()
                .run_id("paged")
                .shared_sink(shared(&sink))
                .sink(mem.clone()),
        )
        .await
        .unwrap();
    let n = mem.events().len();
    for page in [1, 7, n - 1, n, n + 1, 5000] {
        let events = all_events(&store, "paged", page).await;
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (0..n as i64).collect::<Vec<_>>(), "page size {page}");
    }
    // A cursor past the end: an empty last page, not an error.
    let past = store
        .events("paged", Some(n as i64 + 10), 10)
        .await
        .unwrap();
    assert!(past.events.is_empty() && past.next.is_none());
    // A page of exactly the remaining events says there is no more.
    let last = store.events("paged", Some(n as i64 - 4), 3).await.unwrap();
    assert_eq!(last.events.len(), 3);
    assert_eq!(last.next, None);
    assert!(matches!(
        store.events("paged", None, 0).await,
        Err(StoreError::InvalidRequest(_))
    ));
    db.cleanup().await;
}

#[tokio::test]
async fn a_tiny_buffer_applies_backpressure_and_loses_nothing() {
    let Some(db) = support::fresh("trace_backpressure").await else {
        return;
    };
    let options = TraceSinkOptions::new()
        .buffer_events(2)
        .buffer_bytes(1024)
        .batch_events(3);
    let sink = Arc::new(PostgresTraceSink::with_options(db.pool.clone(), options));
    let store = TraceStore::new(db.pool.clone());
    let mem = MemorySink::new();
    let out = chain(60, model())
        .invoke(
            Items::default(),
            RunConfig::new()
                .run_id("pressed")
                .shared_sink(shared(&sink))
                .sink(mem.clone()),
        )
        .await
        .unwrap();
    let events = mem.events();
    assert!(events.len() >= 60 * 5);
    assert_same_events(&store, "pressed", &events).await;
    assert_matches_summary(&store, &out.summary, "succeeded").await;
    assert_eq!(sink.queued_events(), 0);
    db.cleanup().await;
}

#[tokio::test]
async fn an_unknown_run_is_not_found() {
    let Some(db) = support::fresh("trace_unknown").await else {
        return;
    };
    let store = TraceStore::new(db.pool.clone());
    assert!(matches!(
        store.events("nope", None, 10).await,
        Err(StoreError::RunNotFound { run_id }) if run_id == "nope"
    ));
    assert!(matches!(
        store.run("nope").await,
        Err(StoreError::RunNotFound { .. })
    ));
    assert!(matches!(
        store.steps("nope").await,
        Err(StoreError::RunNotFound { .. })
    ));
    db.cleanup().await;
}

#[tokio::test]
async fn the_run_row_keeps_what_other_components_set() {
    let Some(db) = support::fresh("trace_run_row").await else {
        return;
    };
    sqlx::query(
        "insert into workflow_runs (id, status, thread_id, input, claimed_by, triggered_by)
         values ('queued-1', 'queued', 'thread-9', '{\"q\": 1}', 'worker-a', 'alice')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let sink = Arc::new(PostgresTraceSink::new(db.pool.clone()));
    let store = TraceStore::new(db.pool.clone());
    let out = chain(2, model())
        .invoke(
            Items::default(),
            RunConfig::new()
                .run_id("queued-1")
                .shared_sink(shared(&sink)),
        )
        .await
        .unwrap();
    let run = store.run("queued-1").await.unwrap();
    assert_eq!(run.status, "succeeded");
    assert_eq!(run.thread_id.as_deref(), Some("thread-9"));
    assert_eq!(run.claimed_by.as_deref(), Some("worker-a"));
    assert_eq!(run.triggered_by.as_deref(), Some("alice"));
    assert_eq!(run.input, Some(serde_json::json!({"q": 1})));
    assert_eq!(run.total_cost, out.summary.cost);
    db.cleanup().await;
}

#[tokio::test]
async fn a_run_id_seen_again_continues_its_numbering() {
    let Some(db) = support::fresh("trace_seq_continues").await else {
        return;
    };
    let store = TraceStore::new(db.pool.clone());
    let mem = MemorySink::new();
    for _ in 0..2 {
        // A new sink each time, as a second worker process would have.
        let sink = Arc::new(PostgresTraceSink::new(db.pool.clone()));
        chain(3, model())
            .invoke(
                Items::default(),
                RunConfig::new()
                    .run_id("again")
                    .shared_sink(shared(&sink))
                    .sink(mem.clone()),
            )
            .await
            .unwrap();
    }
    assert_same_events(&store, "again", &mem.events()).await;
    db.cleanup().await;
}

#[tokio::test]
async fn nul_characters_are_stored_not_refused() {
    let Some(db) = support::fresh("trace_nul").await else {
        return;
    };
    let sink = PostgresTraceSink::new(db.pool.clone());
    let mut event = graphs::log_event("nul\0run", "a\0b \\u0000 c");
    sink.record(&event);
    sink.flush().await.unwrap();
    let store = TraceStore::new(db.pool.clone());
    let stored = store.events("nul\u{FFFD}run", None, 10).await.unwrap();
    assert_eq!(stored.events.len(), 1);
    let back = stored.events[0].event().unwrap();
    event.run_id = "nul\u{FFFD}run".into();
    if let flowtrace_core::EventKind::Log { message, .. } = &mut event.kind {
        *message = "a\u{FFFD}b \\u0000 c".into();
    }
    assert_eq!(back, event);
    db.cleanup().await;
}

#[tokio::test]
async fn retention_deletes_only_old_finished_runs() {
    let Some(db) = support::fresh("trace_retention").await else {
        return;
    };
    let sink = Arc::new(PostgresTraceSink::new(db.pool.clone()));
    let store = TraceStore::new(db.pool.clone());
    for id in [
        "old-ok",
        "old-failed",
        "old-interrupted",
        "old-running",
        "new-ok",
    ] {
        chain(3, model())
            .invoke(
                Items::default(),
                RunConfig::new().run_id(id).shared_sink(shared(&sink)),
            )
            .await
            .unwrap();
    }
    sqlx::query(
        "update workflow_runs set finished_at = now() - interval '2 days'
         where id like 'old-%'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "update workflow_runs set status = case id
             when 'old-failed' then 'failed'
             when 'old-interrupted' then 'interrupted'
             when 'old-running' then 'running' else status end",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let per_run = all_events(&store, "new-ok", 1000).await.len() as u64;
    let steps_per_run = store.steps("new-ok").await.unwrap().len() as u64;

    let report = store
        .purge_finished(Duration::from_secs(86_400), 7)
        .await
        .unwrap();
    assert_eq!(report.events, 2 * per_run);
    assert_eq!(report.steps, 2 * steps_per_run);
    assert_eq!(report.runs, 0);
    for gone in ["old-ok", "old-failed"] {
        assert!(
            store
                .events(gone, None, 10)
                .await
                .unwrap()
                .events
                .is_empty()
        );
        assert!(store.steps(gone).await.unwrap().is_empty());
        assert!(store.run(gone).await.is_ok(), "the row is kept");
    }
    for kept in ["old-interrupted", "old-running", "new-ok"] {
        assert_eq!(all_events(&store, kept, 1000).await.len() as u64, per_run);
    }

    let report = store
        .purge_finished_with(Duration::from_secs(86_400), 1, RunRows::Delete)
        .await
        .unwrap();
    assert_eq!((report.events, report.steps, report.runs), (0, 0, 2));
    assert!(matches!(
        store.run("old-ok").await,
        Err(StoreError::RunNotFound { .. })
    ));
    assert_eq!(
        count(&db.pool, "select count(*) from workflow_runs").await,
        3
    );
    assert!(matches!(
        store.purge_finished(Duration::ZERO, 0).await,
        Err(StoreError::InvalidRequest(_))
    ));
    db.cleanup().await;
}
