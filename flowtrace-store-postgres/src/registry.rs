//! The workflow registry: JSON workflows, validated on the way in and
//! versioned in the `workflows` table.
//!
//! Every document is checked by the JSON workflow engine
//! ([`flowtrace_workflow::spec::load`]) before anything is written: an
//! invalid one gives [`StoreError::InvalidWorkflow`] with every problem and
//! its JSON pointer, and the tables are left as they were. Updating a
//! workflow adds a version (the old ones stay readable); deleting one is a
//! soft delete, since runs refer to its versions.
//!
//! ```no_run
//! use flowtrace_store_postgres::registry::WorkflowRegistry;
//!
//! # async fn demo(pool: sqlx::PgPool) -> Result<(), flowtrace_store_postgres::StoreError> {
//! let registry = WorkflowRegistry::new(pool);
//! let doc = r#"{"version": "1", "entry": "hello", "nodes": [{"id": "hello", "type": "llm",
//!   "config": {"provider": "simulated", "model": "gpt-4o-mini", "maxTokens": 64,
//!              "simulated": {"response": "Hi!", "latencyMs": 0}}}]}"#;
//! let created = registry.create(Some("alice"), doc).await?;
//! let again = registry.register_by_content(Some("alice"), doc).await?;
//! assert_eq!((again.id.as_str(), again.version), (created.id.as_str(), 1));
//! # Ok(())
//! # }
//! ```

use chrono::{DateTime, Utc};
use flowtrace_core::trace::Timestamp;
use flowtrace_workflow::spec::{Known, WorkflowSpec, load};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};

use crate::error::{StoreError, WorkflowProblem, WorkflowProblems};

/// The largest workflow document accepted, in bytes (the JSON workflow
/// engine's own limit).
pub const MAX_WORKFLOW_BYTES: usize = flowtrace_workflow::spec::MAX_WORKFLOW_BYTES;

/// The most workflows one [`WorkflowRegistry::list`] call returns; larger
/// limits are clamped to it.
pub const MAX_LIST: usize = 1_000;

/// The longest name derived from a document, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// One version of a stored workflow.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct WorkflowRecord {
    /// The workflow's id (a UUID in text form).
    pub id: String,
    /// This version's number, from 1.
    pub version: i32,
    /// Who owns it, if anyone.
    pub owner_id: Option<String>,
    /// Its name: the first line of the document's `description`, or its
    /// `entry` node's id when it has none (at most [`MAX_NAME_CHARS`]).
    pub name: String,
    /// The document's `description`.
    pub description: Option<String>,
    /// The document.
    pub graph_json: Value,
    /// The sha-256 (hex) of the document's canonical JSON.
    pub content_hash: String,
    /// When the workflow's first version was created.
    pub created_at: Timestamp,
    /// When this version was created (or the workflow deleted).
    pub updated_at: Timestamp,
}

/// Creates, reads, versions and deletes JSON workflows in PostgreSQL.
///
/// Documents are validated against the providers and tools of a
/// [`Known`] ([`Known::default`] unless set with
/// [`with_known`](Self::with_known)): register the ones your workers have.
#[derive(Clone, Debug)]
pub struct WorkflowRegistry {
    pool: PgPool,
    known: Known,
}

/// A document that passed validation, ready to store.
struct Checked {
    document: Value,
    hash: String,
    name: String,
    description: Option<String>,
}

/// The document as canonical JSON: object keys sorted, no whitespace.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn name_of(spec: &WorkflowSpec) -> String {
    let line = spec
        .description
        .as_deref()
        .and_then(|d| d.lines().map(str::trim).find(|l| !l.is_empty()));
    line.unwrap_or(&spec.entry)
        .chars()
        .take(MAX_NAME_CHARS)
        .collect()
}

fn get<'r, T>(row: &'r PgRow, col: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(col).map_err(|e| StoreError::Corrupt {
        message: format!("workflows column {col}"),
        source: Some(Box::new(e)),
    })
}

fn record(row: &PgRow) -> Result<WorkflowRecord, StoreError> {
    let graph: String = get(row, "graph_json")?;
    let graph_json = serde_json::from_str(&graph).map_err(|e| StoreError::Corrupt {
        message: "a stored workflow is not JSON".into(),
        source: Some(Box::new(e)),
    })?;
    let created: DateTime<Utc> = get(row, "created_at")?;
    let updated: DateTime<Utc> = get(row, "updated_at")?;
    Ok(WorkflowRecord {
        id: get(row, "id")?,
        version: get(row, "version")?,
        owner_id: get(row, "owner_id")?,
        name: get(row, "name")?,
        description: get(row, "description")?,
        graph_json,
        content_hash: get(row, "content_hash")?,
        created_at: Timestamp::from_unix_micros(created.timestamp_micros()),
        updated_at: Timestamp::from_unix_micros(updated.timestamp_micros()),
    })
}

const COLUMNS: &str = "id, version, owner_id, name, description, graph_json::text as graph_json,
     content_hash, created_at, updated_at";

/// Inserts a version of a workflow (`id` `None`: a new workflow with a
/// generated id, version 1).
async fn insert(
    conn: &mut PgConnection,
    id: Option<&str>,
    version: i32,
    owner: Option<&str>,
    created_at: Option<DateTime<Utc>>,
    doc: &Checked,
) -> Result<WorkflowRecord, StoreError> {
    let row = sqlx::query(
        "insert into workflows (id, version, owner_id, name, description, graph_json,
             content_hash, created_at, updated_at)
         values (coalesce($1, gen_random_uuid()::text), $2, $3, $4, $5, $6::jsonb, $7,
             coalesce($8, now()), now())
         returning id, version, owner_id, name, description, graph_json::text as graph_json,
             content_hash, created_at, updated_at",
    )
    .bind(id)
    .bind(version)
    .bind(owner)
    .bind(&doc.name)
    .bind(&doc.description)
    .bind(doc.document.to_string())
    .bind(&doc.hash)
    .bind(created_at)
    .fetch_one(&mut *conn)
    .await
    .map_err(StoreError::db("storing the workflow"))?;
    record(&row)
}

impl WorkflowRegistry {
    /// A registry on `pool`, validating against [`Known::default`].
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            known: Known::default(),
        }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Validates documents against `known` (the providers and tools your
    /// workers register, e.g. `Runtime::known()`).
    #[must_use]
    pub fn with_known(mut self, known: Known) -> Self {
        self.known = known;
        self
    }

    /// Checks `json` with the workflow engine; nothing is written.
    fn check(&self, json: &str) -> Result<Checked, StoreError> {
        if json.len() > MAX_WORKFLOW_BYTES {
            return Err(StoreError::LimitExceeded {
                what: "a workflow document",
                limit: MAX_WORKFLOW_BYTES as u64,
            });
        }
        let spec = load(json, &self.known).map_err(|errors| StoreError::InvalidWorkflow {
            problems: WorkflowProblems(
                errors
                    .iter()
                    .map(|p| WorkflowProblem::new(p.pointer.clone(), p.message.clone()))
                    .collect(),
            ),
        })?;
        let document: Value =
            serde_json::from_str(json).map_err(|e| StoreError::InvalidWorkflow {
                problems: WorkflowProblems(vec![WorkflowProblem::new("", e.to_string())]),
            })?;
        let hash = format!("{:x}", Sha256::digest(canonical_json(&document).as_bytes()));
        Ok(Checked {
            name: name_of(&spec),
            description: spec.description.clone(),
            document,
            hash,
        })
    }

    /// Validates `json` and stores it as a new workflow (version 1) owned
    /// by `owner`, with a generated id.
    ///
    /// # Errors
    /// [`StoreError::InvalidWorkflow`] with every problem (nothing
    /// written); [`StoreError::LimitExceeded`] for a document over
    /// [`MAX_WORKFLOW_BYTES`]; [`StoreError::Database`].
    ///
    /// # Cancel safety
    /// One statement: dropping the future either stored the workflow or
    /// did not (the same holds for [`update`](Self::update),
    /// [`delete`](Self::delete) and
    /// [`register_by_content`](Self::register_by_content), each one
    /// transaction). Reads have no effect to lose.
    pub async fn create(
        &self,
        owner: Option<&str>,
        json: &str,
    ) -> Result<WorkflowRecord, StoreError> {
        let doc = self.check(json)?;
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(StoreError::db("connecting"))?;
        insert(&mut conn, None, 1, owner, None, &doc).await
    }

    /// Version `version` of workflow `id`, or its latest version when
    /// `version` is `None`.
    ///
    /// # Errors
    /// [`StoreError::WorkflowNotFound`] when there is no such workflow or
    /// version, or the workflow was deleted; [`StoreError::Database`].
    pub async fn get(&self, id: &str, version: Option<i32>) -> Result<WorkflowRecord, StoreError> {
        let sql = format!(
            "select {COLUMNS} from workflows
             where id = $1 and not deleted and ($2::int4 is null or version = $2)
             order by version desc limit 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(version)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("reading the workflow"))?;
        match row {
            Some(row) => record(&row),
            None => Err(StoreError::WorkflowNotFound {
                id: id.to_owned(),
                version,
            }),
        }
    }

    /// Version `version` of workflow `id` even if the workflow was
    /// deleted: for runs that refer to it.
    ///
    /// # Errors
    /// [`StoreError::WorkflowNotFound`] when there is no such version;
    /// [`StoreError::Database`].
    pub async fn get_archived(&self, id: &str, version: i32) -> Result<WorkflowRecord, StoreError> {
        let sql = format!("select {COLUMNS} from workflows where id = $1 and version = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(version)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("reading the workflow"))?;
        match row {
            Some(row) => record(&row),
            None => Err(StoreError::WorkflowNotFound {
                id: id.to_owned(),
                version: Some(version),
            }),
        }
    }

    /// The latest version of each workflow (not deleted), by id, owned by
    /// `owner` (every owner when `None`), after the id `after` (the last
    /// id of the previous page), at most `limit` (clamped to [`MAX_LIST`]).
    ///
    /// # Errors
    /// [`StoreError::InvalidRequest`] for a zero `limit`;
    /// [`StoreError::Database`].
    pub async fn list(
        &self,
        owner: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<WorkflowRecord>, StoreError> {
        if limit == 0 {
            return Err(StoreError::InvalidRequest("a list limit of 0".into()));
        }
        let sql = format!(
            "select distinct on (id) {COLUMNS} from workflows
             where not deleted and ($1::text is null or owner_id = $1)
               and ($2::text is null or id > $2)
             order by id, version desc limit $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(owner)
            .bind(after)
            .bind(limit.min(MAX_LIST) as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("listing workflows"))?;
        rows.iter().map(record).collect()
    }

    /// Validates `json` and stores it as the next version of workflow `id`
    /// (same owner); the earlier versions stay readable.
    ///
    /// # Errors
    /// [`StoreError::InvalidWorkflow`] (nothing written);
    /// [`StoreError::WorkflowNotFound`] when there is no such workflow or
    /// it was deleted; [`StoreError::LimitExceeded`];
    /// [`StoreError::Database`].
    pub async fn update(&self, id: &str, json: &str) -> Result<WorkflowRecord, StoreError> {
        let doc = self.check(json)?;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::db("starting a transaction"))?;
        // Concurrent updates of one workflow take turns.
        sqlx::query(
            "select pg_advisory_xact_lock(hashtextextended('flowtrace.workflow:' || $1, 0))",
        )
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db("locking the workflow"))?;
        let latest: Option<(i32, Option<String>, DateTime<Utc>)> = sqlx::query_as(
            "select version, owner_id, created_at from workflows
             where id = $1 and not deleted order by version desc limit 1",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db("reading the workflow"))?;
        let Some((version, owner, created_at)) = latest else {
            return Err(StoreError::WorkflowNotFound {
                id: id.to_owned(),
                version: None,
            });
        };
        let stored = insert(
            &mut tx,
            Some(id),
            version.saturating_add(1),
            owner.as_deref(),
            Some(created_at),
            &doc,
        )
        .await?;
        tx.commit()
            .await
            .map_err(StoreError::db("committing the workflow"))?;
        Ok(stored)
    }

    /// Soft-deletes workflow `id`, every version: it is no longer listed
    /// or returned by [`get`](Self::get), and runs that refer to it keep
    /// their reference.
    ///
    /// # Errors
    /// [`StoreError::WorkflowNotFound`] when there is no such workflow or
    /// it was already deleted; [`StoreError::Database`].
    pub async fn delete(&self, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query(
            "update workflows set deleted = true, updated_at = now()
             where id = $1 and not deleted",
        )
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(StoreError::db("deleting the workflow"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::WorkflowNotFound {
                id: id.to_owned(),
                version: None,
            });
        }
        Ok(())
    }

    /// The stored workflow version of `owner` whose document has the same
    /// canonical JSON as `json` (key order and whitespace aside), or, when
    /// there is none, a new workflow created from it. Concurrent calls
    /// with the same document create it once.
    ///
    /// # Errors
    /// As [`create`](Self::create).
    pub async fn register_by_content(
        &self,
        owner: Option<&str>,
        json: &str,
    ) -> Result<WorkflowRecord, StoreError> {
        let doc = self.check(json)?;
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::db("starting a transaction"))?;
        sqlx::query(
            "select pg_advisory_xact_lock(hashtextextended('flowtrace.content:' || $1, 0))",
        )
        .bind(&doc.hash)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db("locking the content hash"))?;
        let sql = format!(
            "select {COLUMNS} from workflows
             where content_hash = $1 and not deleted and owner_id is not distinct from $2
             order by created_at, id, version limit 1"
        );
        let existing = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&doc.hash)
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::db("looking the workflow up by content"))?;
        let stored = match existing {
            Some(row) => record(&row)?,
            None => insert(&mut tx, None, 1, owner, None, &doc).await?,
        };
        tx.commit()
            .await
            .map_err(StoreError::db("committing the workflow"))?;
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_drops_whitespace() {
        let a: Value = serde_json::from_str(r#"{ "b": [1, {"d": 2, "c": "x"}], "a": null }"#)
            .unwrap_or_default();
        assert_eq!(canonical_json(&a), r#"{"a":null,"b":[1,{"c":"x","d":2}]}"#);
    }
}
