//! Thread leases: one owner per thread at a time, with fencing.
//!
//! A worker that runs a thread first [`acquire`]s its lease; every
//! acquisition increases the thread's `epoch`. Writes made under a lease
//! ([`PostgresCheckpointer::fenced`](crate::PostgresCheckpointer::fenced))
//! [`verify`] in their own transaction that the epoch is still theirs, so a
//! stale worker whose lease expired and was taken over gets
//! [`CheckpointError::Fenced`] and writes nothing. A lease that expired but
//! that nobody took over is still its holder's: fencing is by epoch, not by
//! clock.

use std::time::Duration;

use flowtrace_core::checkpoint::CheckpointError;
use flowtrace_core::ids::ThreadId;
use sqlx::{PgConnection, PgExecutor};

/// A held lease on a thread.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// The thread.
    pub thread: ThreadId,
    /// Who holds it (a worker's name).
    pub owner: String,
    /// The fencing token: grows with every takeover.
    pub epoch: u64,
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Takes the lease of `thread` for `owner` for `ttl` if nobody else holds
/// an unexpired one (a holder may take it again, getting a new epoch).
/// `None` when another owner holds it.
pub async fn acquire<'e, E: PgExecutor<'e>>(
    exec: E,
    thread: &ThreadId,
    owner: &str,
    ttl: Duration,
) -> Result<Option<Lease>, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as(
        "insert into thread_leases as l (thread_id, owner, epoch, expires_at)
         values ($1, $2, 1, now() + $3 * interval '1 millisecond')
         on conflict (thread_id) do update
            set owner = excluded.owner,
                epoch = l.epoch + 1,
                expires_at = excluded.expires_at
            where l.owner = excluded.owner or l.expires_at < now()
         returning epoch",
    )
    .bind(thread.as_str())
    .bind(owner)
    .bind(ttl_ms(ttl))
    .fetch_optional(exec)
    .await?;
    Ok(row.map(|(epoch,)| Lease {
        thread: thread.clone(),
        owner: owner.to_owned(),
        epoch: epoch as u64,
    }))
}

/// Extends a held lease by `ttl` from now. `false` when it was taken over
/// (then stop working on the thread).
pub async fn renew<'e, E: PgExecutor<'e>>(
    exec: E,
    lease: &Lease,
    ttl: Duration,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update thread_leases set expires_at = now() + $3 * interval '1 millisecond'
         where thread_id = $1 and epoch = $2",
    )
    .bind(lease.thread.as_str())
    .bind(lease.epoch as i64)
    .bind(ttl_ms(ttl))
    .execute(exec)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives a held lease up (it expires now; the epoch stays, so a later
/// owner gets a higher one). `false` when it had been taken over already.
pub async fn release<'e, E: PgExecutor<'e>>(exec: E, lease: &Lease) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update thread_leases set expires_at = now() - interval '1 millisecond'
         where thread_id = $1 and epoch = $2",
    )
    .bind(lease.thread.as_str())
    .bind(lease.epoch as i64)
    .execute(exec)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Checks, inside the caller's transaction, that `lease` is still the
/// thread's; locks the lease row (shared) until the transaction ends, so a
/// takeover waits for this write to commit or roll back.
///
/// # Errors
///
/// [`CheckpointError::Fenced`] when another owner took the thread over;
/// [`CheckpointError::Backend`] when the query fails.
pub async fn verify(conn: &mut PgConnection, lease: &Lease) -> Result<(), CheckpointError> {
    let row: Option<(i64,)> =
        sqlx::query_as("select epoch from thread_leases where thread_id = $1 for share")
            .bind(lease.thread.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| CheckpointError::backend("checking the thread's lease", e))?;
    match row {
        Some((epoch,)) if epoch as u64 == lease.epoch => Ok(()),
        other => Err(CheckpointError::Fenced {
            thread: lease.thread.clone(),
            owner: lease.owner.clone(),
            epoch: lease.epoch,
            current_epoch: other.map_or(0, |(e,)| e as u64),
        }),
    }
}
