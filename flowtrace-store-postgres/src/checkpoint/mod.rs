//! [`PostgresCheckpointer`]: checkpoints in PostgreSQL, shared by every
//! worker.
//!
//! Three tables (migration `0002_checkpoints.sql`):
//!
//! * `checkpoints`: one row per checkpoint, `(thread_id, seq)`, with
//!   `parent_seq`, `is_full`, `created_at`, `run_id` and the body (the
//!   checkpoint's compact JSON as core encodes it, without its thread id).
//!   A step writes one row the size of what changed (core sends deltas
//!   between periodic full snapshots).
//! * `checkpoint_threads`: one summary row per thread (latest and oldest
//!   `seq`, status, step, creation and update times, metadata, fork
//!   origin), updated in the same statement or transaction as each write.
//!   It answers [`list_threads`](Checkpointer::list_threads) and fences
//!   appends: checkpoint `seq` updates it only where `latest_seq = seq - 1`.
//! * `checkpoint_writes`: pending writes by `(thread_id, seq, task)`.
//!
//! What each call costs: an [`append`](Checkpointer::append) is one
//! statement and one commit; an [`append_batch`](Checkpointer::append_batch)
//! is one transaction with multi-row inserts and one commit;
//! [`get`](Checkpointer::get) of the latest and
//! [`writes`](Checkpointer::writes) are index lookups; a
//! [`chain`](Checkpointer::chain) is one range query from the last full
//! state. None of them depends on the length of the thread's history.
//! Concurrent [`put_write`](Checkpointer::put_write)s (the tasks of a wide
//! super-step finishing together) are combined into one multi-row
//! statement and one commit (at most [`MAX_COMBINED`] writes each), which
//! by default does not wait for the disk (see
//! [`PostgresCheckpointer::synchronous_pending_writes`]).

mod combine;
mod read;
mod threads;
mod write;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use flowtrace_core::checkpoint::{
    Checkpoint, CheckpointBatch, CheckpointError, Checkpointer, PendingWrite, PruneOutcome,
    Retention, ThreadFilter, ThreadInfo, ThreadStatus,
};
use flowtrace_core::ids::ThreadId;
use flowtrace_core::trace::Timestamp;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::lease::{self, Lease};

pub use combine::MAX_COMBINED;
pub use threads::LIST_THREADS_PAGE;

/// Checkpoints in PostgreSQL: a [`Checkpointer`] every worker of a
/// deployment shares.
///
/// Cheap to clone (clones share the pool). Never touches the schema:
/// apply the migrations first with [`migrate`](crate::migrate).
///
/// Appends are fenced by `seq` (two writers of one thread never fork its
/// history: the slower gets [`CheckpointError::Conflict`]); a handle made
/// with [`fenced`](Self::fenced) is also fenced by the thread's
/// [lease](crate::lease).
///
/// # Cancel safety
///
/// As the [`Checkpointer`] contract asks: every write is one statement or
/// one transaction, committed whole or not at all. A dropped
/// [`put_write`](Checkpointer::put_write) may still be saved: once queued,
/// it is written with the others queued alongside it.
///
/// ```no_run
/// use std::sync::Arc;
/// use flowtrace_core::RunConfig;
/// use flowtrace_store_postgres::{PgConfig, PostgresCheckpointer, connect, migrate};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = connect(&PgConfig::new("postgres://postgres@127.0.0.1:5432/app")).await?;
/// migrate(&pool).await?;
/// let store = PostgresCheckpointer::new(pool);
/// let config = RunConfig::new().checkpointer(Arc::new(store)).thread("t-1");
/// # let _ = config;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresCheckpointer {
    pool: PgPool,
    lease: Option<Arc<Lease>>,
    sync_writes: bool,
    combiners: Arc<Combiners>,
}

/// The write combiners a handle and its clones share: one for
/// asynchronous pending writes, one for synchronous ones.
#[derive(Default)]
struct Combiners {
    asynchronous: Arc<combine::Combiner>,
    synchronous: Arc<combine::Combiner>,
}

impl Combiners {
    fn get(&self, sync: bool) -> &Arc<combine::Combiner> {
        if sync {
            &self.synchronous
        } else {
            &self.asynchronous
        }
    }
}

impl fmt::Debug for PostgresCheckpointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresCheckpointer")
            .field("lease", &self.lease)
            .field("sync_writes", &self.sync_writes)
            .finish_non_exhaustive()
    }
}

impl PostgresCheckpointer {
    /// A checkpointer over `pool` (whose schema is migrated).
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            lease: None,
            sync_writes: false,
            combiners: Arc::default(),
        }
    }

    /// Whether [`put_write`](Checkpointer::put_write) waits for its commit
    /// to reach the disk (default `false`).
    ///
    /// By default a pending write commits asynchronously
    /// (`synchronous_commit = off` for its own transaction): it is visible
    /// to every worker at once and survives the worker's crash, and it is
    /// on disk once the next checkpoint of any thread commits (PostgreSQL
    /// flushes its log in order) or within the WAL writer's delay. Only a
    /// crash of the database server itself can lose the pending writes of
    /// an unfinished super-step, and then its tasks run again on resume,
    /// as if the crash had come before they finished; committed
    /// checkpoints are never lost. This keeps a wide super-step at one
    /// synchronous commit instead of one per task. Pass `true` to make
    /// every pending write wait for the disk.
    #[must_use]
    pub fn synchronous_pending_writes(mut self, on: bool) -> Self {
        self.sync_writes = on;
        self
    }

    /// A handle whose writes to `lease.thread` (append, append_batch,
    /// put_write, prune, delete_thread, and copy_thread into it) first
    /// check, in the same transaction, that the lease is still the
    /// thread's ([`lease::verify`]): once another worker took the thread
    /// over, they fail with [`CheckpointError::Fenced`] and store nothing.
    /// Other threads are written as by an unfenced handle.
    #[must_use]
    pub fn fenced(&self, lease: Lease) -> Self {
        Self {
            pool: self.pool.clone(),
            lease: Some(Arc::new(lease)),
            sync_writes: self.sync_writes,
            combiners: self.combiners.clone(),
        }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The lease this handle's writes are fenced by, if any.
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_deref()
    }

    /// The lease that fences writes to `thread`, if any.
    fn lease_for(&self, thread: &ThreadId) -> Option<&Lease> {
        self.lease.as_deref().filter(|l| &l.thread == thread)
    }

    /// A connection for a write to `thread` made of one statement: a plain
    /// (autocommit) connection, or a transaction that verified the lease.
    async fn writer(&self, thread: &ThreadId) -> Result<Writer, CheckpointError> {
        match self.lease_for(thread) {
            None => self
                .pool
                .acquire()
                .await
                .map(Writer::Plain)
                .map_err(db("acquiring a connection")),
            Some(_) => self.transaction(thread).await.map(Writer::Tx),
        }
    }

    /// A transaction for a write to `thread`, the lease verified first
    /// when this handle is fenced for it.
    async fn transaction(
        &self,
        thread: &ThreadId,
    ) -> Result<Transaction<'static, Postgres>, CheckpointError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db("starting a transaction"))?;
        if let Some(lease) = self.lease_for(thread) {
            lease::verify(&mut tx, lease).await?;
        }
        Ok(tx)
    }
}

/// A connection to write with: autocommit, or a fenced transaction that
/// [`finish`](Writer::finish) commits.
enum Writer {
    Plain(PoolConnection<Postgres>),
    Tx(Transaction<'static, Postgres>),
}

impl Writer {
    fn conn(&mut self) -> &mut PgConnection {
        match self {
            Writer::Plain(c) => c,
            Writer::Tx(t) => t,
        }
    }

    async fn finish(self) -> Result<(), CheckpointError> {
        match self {
            Writer::Plain(_) => Ok(()),
            Writer::Tx(t) => t.commit().await.map_err(db("committing")),
        }
    }
}

// ===== Conversions shared by the submodules =====

/// Maps a driver error to [`CheckpointError::Backend`], keeping it as the
/// source.
pub(crate) fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> CheckpointError {
    move |e| CheckpointError::backend(format!("PostgreSQL failed while {context}"), e)
}

/// Whether `e` is a unique violation (a racing writer inserted first).
fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}

/// A `seq` as stored (`bigint`), saturating: `seq`s past `i64::MAX` can't
/// be stored, so a lookup of one finds nothing.
fn to_db(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// A stored `seq` (never negative: only [`to_db`] values are written).
fn from_db(seq: i64) -> u64 {
    u64::try_from(seq).unwrap_or(0)
}

fn to_time(
    thread: &ThreadId,
    seq: u64,
    t: Timestamp,
) -> Result<chrono::DateTime<chrono::Utc>, CheckpointError> {
    chrono::DateTime::from_timestamp_micros(t.unix_micros()).ok_or_else(|| {
        CheckpointError::Corrupt {
            thread: thread.clone(),
            seq,
            message: format!("timestamp {} is out of PostgreSQL's range", t.unix_micros()),
        }
    })
}

fn from_time(t: chrono::DateTime<chrono::Utc>) -> Timestamp {
    Timestamp::from_unix_micros(t.timestamp_micros())
}

/// A status as stored (`running`, `completed`, ...).
fn status_str(thread: &ThreadId, status: ThreadStatus) -> Result<String, CheckpointError> {
    match serde_json::to_value(status) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        _ => Err(CheckpointError::Corrupt {
            thread: thread.clone(),
            seq: 0,
            message: format!("status {status:?} has no name"),
        }),
    }
}

fn parse_status(thread: &ThreadId, s: String) -> Result<ThreadStatus, CheckpointError> {
    serde_json::from_value(serde_json::Value::String(s)).map_err(|e| CheckpointError::Corrupt {
        thread: thread.clone(),
        seq: 0,
        message: format!("stored thread status is unknown: {e}"),
    })
}

// ===== impl Checkpointer =====

#[async_trait]
impl Checkpointer for PostgresCheckpointer {
    async fn append(&self, checkpoint: Checkpoint) -> Result<(), CheckpointError> {
        write::append(self, checkpoint).await
    }

    async fn get(
        &self,
        thread: &ThreadId,
        seq: Option<u64>,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        read::get(&self.pool, thread, seq).await
    }

    async fn list(
        &self,
        thread: &ThreadId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Checkpoint>, CheckpointError> {
        read::list(&self.pool, thread, before, limit).await
    }

    async fn put_write(
        &self,
        thread: &ThreadId,
        seq: u64,
        write: PendingWrite,
    ) -> Result<(), CheckpointError> {
        write::put_write(self, thread, seq, write).await
    }

    async fn writes(
        &self,
        thread: &ThreadId,
        seq: u64,
    ) -> Result<Vec<PendingWrite>, CheckpointError> {
        read::writes(&self.pool, thread, seq).await
    }

    async fn append_batch(
        &self,
        thread: &ThreadId,
        batch: CheckpointBatch,
    ) -> Result<(), CheckpointError> {
        write::append_batch(self, thread, batch).await
    }

    async fn chain(&self, thread: &ThreadId, seq: u64) -> Result<Vec<Checkpoint>, CheckpointError> {
        read::chain(&self.pool, thread, seq).await
    }

    async fn delete_thread(&self, thread: &ThreadId) -> Result<bool, CheckpointError> {
        threads::delete_thread(self, thread).await
    }

    async fn prune(
        &self,
        thread: &ThreadId,
        keep: Retention,
    ) -> Result<PruneOutcome, CheckpointError> {
        threads::prune(self, thread, keep).await
    }

    async fn list_threads(
        &self,
        filter: &ThreadFilter,
    ) -> Result<Vec<ThreadInfo>, CheckpointError> {
        threads::list_threads(&self.pool, filter).await
    }

    async fn copy_thread(&self, from: &ThreadId, to: &ThreadId) -> Result<(), CheckpointError> {
        threads::copy_thread(self, from, to).await
    }
}
