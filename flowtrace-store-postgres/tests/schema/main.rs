//! Migrations and connecting.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

use flowtrace_store_postgres::{MIGRATOR, PgConfig, StoreErrorKind, connect, migrate};

async fn tables(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "select table_name::text from information_schema.tables
         where table_schema = current_schema() order by 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn connecting_does_not_migrate() {
    let Some(db) = support::empty("connecting_does_not_migrate").await else {
        return;
    };
    assert!(tables(&db.pool).await.is_empty());
    db.cleanup().await;
}

#[tokio::test]
async fn migrations_apply_from_empty_and_rerun_idempotently() {
    let Some(db) = support::empty("migrations_from_empty").await else {
        return;
    };
    migrate(&db.pool).await.unwrap();
    let first = tables(&db.pool).await;
    for t in [
        "workflows",
        "workflow_runs",
        "run_steps",
        "trace_events",
        "provider_bindings",
        "thread_leases",
    ] {
        assert!(first.contains(&t.to_string()), "{t} missing from {first:?}");
    }
    // A second run, and one from another handle, change nothing.
    migrate(&db.pool).await.unwrap();
    let other = connect(&db.config()).await.unwrap();
    migrate(&other).await.unwrap();
    assert_eq!(tables(&db.pool).await, first);
    let applied: i64 = sqlx::query_scalar("select count(*) from _sqlx_migrations")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(applied as usize, MIGRATOR.iter().count());
    other.close().await;
    db.cleanup().await;
}

#[tokio::test]
async fn concurrent_migrations_are_serialized() {
    let Some(db) = support::empty("concurrent_migrations").await else {
        return;
    };
    let a = connect(&db.config()).await.unwrap();
    let b = connect(&db.config()).await.unwrap();
    let (ra, rb) = tokio::join!(migrate(&a), migrate(&b));
    ra.unwrap();
    rb.unwrap();
    assert!(!tables(&db.pool).await.is_empty());
    a.close().await;
    b.close().await;
    db.cleanup().await;
}

#[tokio::test]
async fn a_bad_schema_name_is_refused_before_connecting() {
    let err = connect(&PgConfig::new("postgres://nobody@127.0.0.1:1/x").schema("x; drop"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), StoreErrorKind::Invalid);
}
