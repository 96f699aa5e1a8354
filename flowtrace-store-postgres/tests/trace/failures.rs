//! Back-pressure and a failing database: events wait, flush reports the
//! failure, nothing is dropped while it can still be written.

use std::sync::Arc;
use std::time::Duration;

use flowtrace_core::trace::TraceSink;
use flowtrace_store_postgres::trace::{PostgresTraceSink, TraceSinkOptions, TraceStore};

use crate::graphs;
use crate::support;

#[tokio::test]
async fn a_failing_database_fails_flush_and_loses_nothing() {
    let Some(db) = support::empty("trace_db_down").await else {
        return;
    };
    // No tables yet: every write fails until the migrations run.
    let options = TraceSinkOptions::new().retry_for(Duration::from_millis(200));
    let sink = PostgresTraceSink::with_options(db.pool.clone(), options);
    for i in 0..10 {
        sink.record(&graphs::log_event("down", &format!("event {i}")));
    }
    let err = tokio::time::timeout(Duration::from_secs(20), sink.flush())
        .await
        .expect("flush reports the failure within its retry window")
        .unwrap_err();
    let source = std::error::Error::source(&err).expect("the database error");
    assert!(source.to_string().contains("trace_events"), "{source}");
    flowtrace_store_postgres::migrate(&db.pool).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), sink.flush())
        .await
        .expect("written once the database is back")
        .unwrap();
    let store = TraceStore::new(db.pool.clone());
    let events = crate::all_events(&store, "down", 3).await;
    assert_eq!(events.len(), 10);
    db.cleanup().await;
}

#[tokio::test]
async fn runs_wait_while_the_buffer_is_full_and_resume_once_written() {
    let Some(db) = support::empty("trace_bp_stuck").await else {
        return;
    };
    // No tables yet: the writer cannot commit, so the buffer stays full.
    let options = TraceSinkOptions::new().buffer_events(2);
    let sink = Arc::new(PostgresTraceSink::with_options(db.pool.clone(), options));
    assert!(sink.backpressure().is_none());
    for i in 0..10 {
        sink.record(&graphs::log_event("stuck", &format!("event {i}")));
    }
    assert!(sink.backpressure().is_some());
    let waiting = tokio::spawn({
        let sink = sink.clone();
        async move {
            if let Some(wait) = sink.backpressure() {
                wait.await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "waits while nothing can be written");
    flowtrace_store_postgres::migrate(&db.pool).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("released once the writer catches up")
        .unwrap();
    sink.flush().await.unwrap();
    let page = TraceStore::new(db.pool.clone())
        .events("stuck", None, 100)
        .await
        .unwrap();
    assert_eq!(page.events.len(), 10);
    db.cleanup().await;
}

#[tokio::test]
async fn a_closed_pool_makes_every_later_flush_fail() {
    let Some(db) = support::empty("trace_pool_closed").await else {
        return;
    };
    let options = TraceSinkOptions::new().retry_for(Duration::from_millis(100));
    let sink = PostgresTraceSink::with_options(db.pool.clone(), options);
    sink.record(&graphs::log_event("closed", "lost"));
    db.pool.close().await;
    for _ in 0..2 {
        let err = tokio::time::timeout(Duration::from_secs(20), sink.flush())
            .await
            .expect("flush answers")
            .unwrap_err();
        assert!(std::error::Error::source(&err).is_some(), "{err}");
    }
    // The writer gave up on the event (nothing could ever write it).
    tokio::time::timeout(Duration::from_secs(20), async {
        while sink.queued_events() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the buffer is released");
    let err = sink.flush().await.unwrap_err();
    assert!(
        err.to_string().contains("1 event(s) were not written"),
        "{err}"
    );
    db.cleanup().await;
}
