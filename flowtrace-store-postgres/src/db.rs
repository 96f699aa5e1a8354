//! Connecting, schemas and migrations.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::error::StoreError;

/// The embedded migrations (`migrations/*.sql`), applied by [`migrate`].
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How to connect: the URL, an optional schema every table lives in, and
/// the pool size.
///
/// ```
/// use flowtrace_store_postgres::PgConfig;
///
/// let cfg = PgConfig::new("postgres://postgres@127.0.0.1:5432/test")
///     .schema("tenant_a")
///     .max_connections(16);
/// assert_eq!(cfg.get_schema(), Some("tenant_a"));
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct PgConfig {
    url: String,
    schema: Option<String>,
    max_connections: u32,
    acquire_timeout: Duration,
}

/// The longest schema name PostgreSQL keeps (`NAMEDATALEN - 1`).
pub const MAX_SCHEMA_NAME: usize = 63;

impl PgConfig {
    /// Connects to `url` (`postgres://user@host:port/db`), 10 connections.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: None,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(30),
        }
    }

    /// Keeps every table in `schema` (created by [`connect`] if missing):
    /// one database can then hold several independent FlowTrace stores.
    /// The name is letters, digits and `_`, at most [`MAX_SCHEMA_NAME`]
    /// bytes, starting with a letter or `_`.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The pool's size (at least 1).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long to wait for a free connection before failing.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// The schema, if one was set.
    pub fn get_schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }
}

fn valid_schema(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= MAX_SCHEMA_NAME
}

/// Opens a pool. With a schema, creates it if missing and sets every
/// connection's `search_path` to it. Never applies migrations: call
/// [`migrate`] for that.
pub async fn connect(config: &PgConfig) -> Result<PgPool, StoreError> {
    let mut options = PgConnectOptions::from_str(&config.url)
        .map_err(StoreError::db("parsing the database URL"))?;
    if let Some(schema) = &config.schema {
        if !valid_schema(schema) {
            return Err(StoreError::InvalidRequest(format!(
                "schema name {schema:?}: use letters, digits and _ (at most {MAX_SCHEMA_NAME} bytes)"
            )));
        }
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options.clone())
            .await
            .map_err(StoreError::db("connecting"))?;
        // The name was checked above: letters, digits and `_` only.
        let ddl = format!("create schema if not exists \"{schema}\"");
        sqlx::query(sqlx::AssertSqlSafe(ddl))
            .execute(&admin)
            .await
            .map_err(StoreError::db("creating the schema"))?;
        admin.close().await;
        options = options.options([("search_path", schema.as_str())]);
    }
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .connect_with(options)
        .await
        .map_err(StoreError::db("connecting"))
}

/// Applies the embedded migrations that are not applied yet (idempotent;
/// concurrent callers are serialized by an advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    MIGRATOR.run(pool).await.map_err(StoreError::Migrate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        assert!(valid_schema("tenant_a"));
        assert!(valid_schema("_x1"));
        assert!(!valid_schema("1abc"));
        assert!(!valid_schema("a\"; drop table x; --"));
        assert!(!valid_schema(""));
        assert!(!valid_schema(&"a".repeat(MAX_SCHEMA_NAME + 1)));
    }
}
