//! Shared helpers for the PostgreSQL tests: a fresh schema per test.
//!
//! Tests read `DATABASE_URL`. When it is unset they print a loud SKIPPED
//! line and pass, unless `FLOWTRACE_REQUIRE_DB=1` (CI), where a missing
//! database fails the test.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use flowtrace_store_postgres::{PgConfig, PgPool, connect, migrate};

/// A schema of its own, migrated, for one test.
pub struct TestDb {
    /// The database URL.
    pub url: String,
    /// The schema every table of this test lives in.
    pub schema: String,
    /// A pool whose connections use the schema.
    pub pool: PgPool,
}

impl TestDb {
    /// The config that opens the same schema again (another handle, as a
    /// second process would).
    pub fn config(&self) -> PgConfig {
        PgConfig::new(&self.url).schema(&self.schema)
    }

    /// Drops the schema and everything in it.
    pub async fn cleanup(self) {
        self.pool.close().await;
        let admin = connect(&PgConfig::new(&self.url).max_connections(1))
            .await
            .unwrap();
        let ddl = format!("drop schema if exists \"{}\" cascade", self.schema);
        sqlx::query(sqlx::AssertSqlSafe(ddl))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
    }
}

/// The database URL, or `None` (after a loud SKIPPED line) when the test
/// should be skipped. Panics when `FLOWTRACE_REQUIRE_DB=1` and it is unset.
pub fn database_url(test: &str) -> Option<String> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("FLOWTRACE_REQUIRE_DB").as_deref() == Ok("1") {
                panic!("{test}: DATABASE_URL is not set and FLOWTRACE_REQUIRE_DB=1");
            }
            eprintln!(
                "SKIPPED {test}: set DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/test) to run the PostgreSQL tests"
            );
            None
        }
    }
}

/// A unique schema name: test name, process, counter and clock.
pub fn unique_schema(test: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let tag: String = test
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(24)
        .collect();
    format!(
        "ft_{}_{}_{}_{:x}",
        tag.to_ascii_lowercase(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// A fresh, migrated schema for `test`, or `None` when the database tests
/// are skipped.
pub async fn fresh(test: &str) -> Option<TestDb> {
    let url = database_url(test)?;
    let schema = unique_schema(test);
    let pool = connect(&PgConfig::new(&url).schema(&schema).max_connections(8))
        .await
        .unwrap_or_else(|e| panic!("{test}: connecting to {url}: {e}"));
    migrate(&pool).await.unwrap();
    Some(TestDb { url, schema, pool })
}

/// A fresh schema without the migrations applied.
pub async fn empty(test: &str) -> Option<TestDb> {
    let url = database_url(test)?;
    let schema = unique_schema(test);
    let pool = connect(&PgConfig::new(&url).schema(&schema).max_connections(4))
        .await
        .unwrap_or_else(|e| panic!("{test}: connecting to {url}: {e}"));
    Some(TestDb { url, schema, pool })
}
