//! Retention: deleting the traces of runs finished long ago, in short
//! batches that never wait for a lock.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;

use super::TraceStore;
use super::batch::to_chrono;
use super::records::{PurgeReport, RunRows};
use crate::error::StoreError;

/// The most rows one purge batch deletes; larger batches are clamped to it.
pub const MAX_PURGE_BATCH: usize = 50_000;

/// Deletes, one short transaction at a time, at most `batch` rows per
/// statement until none is left; returns how many were deleted.
async fn drain(
    pool: &PgPool,
    sql: &'static str,
    cutoff: DateTime<Utc>,
    batch: i64,
    context: &'static str,
) -> Result<u64, StoreError> {
    let mut total = 0u64;
    loop {
        let done = sqlx::query(sql)
            .bind(cutoff)
            .bind(batch)
            .execute(pool)
            .await
            .map_err(StoreError::db(context))?;
        total += done.rows_affected();
        if done.rows_affected() < batch as u64 {
            return Ok(total);
        }
    }
}

impl TraceStore {
    /// Deletes the trace events and steps of runs that finished
    /// (`succeeded`, `failed`, `canceled` or `halted`; not `interrupted`)
    /// more than `older_than` ago, keeping their `workflow_runs` rows.
    /// Same as [`purge_finished_with`](Self::purge_finished_with) with
    /// [`RunRows::Keep`].
    ///
    /// # Errors
    /// See [`purge_finished_with`](Self::purge_finished_with).
    pub async fn purge_finished(
        &self,
        older_than: Duration,
        batch: usize,
    ) -> Result<PurgeReport, StoreError> {
        self.purge_finished_with(older_than, batch, RunRows::Keep)
            .await
    }

    /// Deletes the trace events and steps (and, with [`RunRows::Delete`],
    /// the `workflow_runs` rows) of runs that finished more than
    /// `older_than` ago (by their `finished_at`), and the checkpoints,
    /// pending writes, summary rows and leases of their threads when no
    /// other run on the same thread is newer or unfinished. (Runs the
    /// queue did not start record no thread here: prune or delete their
    /// threads through the [`Checkpointer`](flowtrace_core::checkpoint::Checkpointer).)
    ///
    /// Works in batches of at most `batch` rows (clamped to
    /// [`MAX_PURGE_BATCH`]), each its own short transaction that skips
    /// rows another transaction holds (`for update skip locked`), so
    /// workers are never blocked; rows skipped that way are left for the
    /// next purge.
    ///
    /// # Cancel safety
    /// Each batch commits on its own: dropping the future keeps what was
    /// deleted so far, and the next call continues.
    ///
    /// # Errors
    /// [`StoreError::InvalidRequest`] for a zero `batch`;
    /// [`StoreError::Database`] (batches already committed stay deleted).
    pub async fn purge_finished_with(
        &self,
        older_than: Duration,
        batch: usize,
        run_rows: RunRows,
    ) -> Result<PurgeReport, StoreError> {
        if batch == 0 {
            return Err(StoreError::InvalidRequest("a purge batch of 0".into()));
        }
        let batch = batch.min(MAX_PURGE_BATCH) as i64;
        // `finished_at` comes from the events' clock, this process's.
        let earliest = to_chrono(flowtrace_core::trace::Timestamp::from_unix_micros(i64::MIN));
        let cutoff = TimeDelta::from_std(older_than)
            .ok()
            .and_then(|age| Utc::now().checked_sub_signed(age))
            .map_or(earliest, |c| c.max(earliest));
        let events = drain(
            &self.pool,
            EVENTS_SQL,
            cutoff,
            batch,
            "purging trace events",
        )
        .await?;
        let steps = drain(&self.pool, STEPS_SQL, cutoff, batch, "purging run steps").await?;
        let checkpoints = drain(
            &self.pool,
            WRITES_SQL,
            cutoff,
            batch,
            "purging pending writes",
        )
        .await?
            + drain(
                &self.pool,
                CHECKPOINTS_SQL,
                cutoff,
                batch,
                "purging checkpoints",
            )
            .await?;
        let threads = drain(&self.pool, THREADS_SQL, cutoff, batch, "purging threads").await?;
        drain(
            &self.pool,
            LEASES_SQL,
            cutoff,
            batch,
            "purging thread leases",
        )
        .await?;
        let runs = match run_rows {
            RunRows::Keep => 0,
            RunRows::Delete => drain(&self.pool, RUNS_SQL, cutoff, batch, "purging runs").await?,
        };
        Ok(PurgeReport {
            events,
            steps,
            runs,
            checkpoints,
            threads,
        })
    }
}

/// The runs finished before `$1`. `interrupted` runs are not finished:
/// they wait for a decision and resume.
macro_rules! finished_runs {
    () => {
        "select r.id from workflow_runs r
         where r.finished_at < $1
           and r.status in ('succeeded', 'failed', 'canceled', 'halted')"
    };
}

const EVENTS_SQL: &str = concat!(
    "delete from trace_events where id in (
         select e.id from trace_events e
         where e.run_id in (",
    finished_runs!(),
    ")
         limit $2 for update skip locked)"
);

const STEPS_SQL: &str = concat!(
    "delete from run_steps where id in (
         select s.id from run_steps s
         where s.run_id in (",
    finished_runs!(),
    ")
         limit $2 for update skip locked)"
);

/// The threads of runs finished before `$1` that no other run still needs
/// (one newer, or not finished).
macro_rules! old_threads {
    () => {
        "select r.thread_id collate \"C\" from workflow_runs r
         where r.finished_at < $1 and r.thread_id is not null
           and r.status in ('succeeded', 'failed', 'canceled', 'halted')
           and not exists (
               select 1 from workflow_runs o
               where o.thread_id = r.thread_id
                 and (o.finished_at is null or o.finished_at >= $1
                      or o.status not in ('succeeded', 'failed', 'canceled', 'halted')))"
    };
}

const WRITES_SQL: &str = concat!(
    "delete from checkpoint_writes where (thread_id, seq, task) in (
         select w.thread_id, w.seq, w.task from checkpoint_writes w
         where w.thread_id in (",
    old_threads!(),
    ")
         limit $2 for update skip locked)"
);

const CHECKPOINTS_SQL: &str = concat!(
    "delete from checkpoints where (thread_id, seq) in (
         select c.thread_id, c.seq from checkpoints c
         where c.thread_id in (",
    old_threads!(),
    ")
         limit $2 for update skip locked)"
);

const THREADS_SQL: &str = concat!(
    "delete from checkpoint_threads where thread_id in (
         select t.thread_id from checkpoint_threads t
         where t.thread_id in (",
    old_threads!(),
    ")
           and not exists (select 1 from checkpoints c where c.thread_id = t.thread_id)
         limit $2 for update skip locked)"
);

const LEASES_SQL: &str = concat!(
    "delete from thread_leases where thread_id in (
         select l.thread_id from thread_leases l
         where l.thread_id in (",
    old_threads!(),
    ")
           and l.expires_at < now()
         limit $2 for update skip locked)"
);

const RUNS_SQL: &str = concat!(
    "delete from workflow_runs where id in (",
    finished_runs!(),
    " limit $2 for update of r skip locked)"
);
