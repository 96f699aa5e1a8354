//! Reads: `get`, `list`, `writes`, `chain`, and the stored body format.

use flowtrace_core::checkpoint::{Checkpoint, CheckpointError, PendingWrite, encode};
use flowtrace_core::ids::ThreadId;
use sqlx::{PgExecutor, PgPool};

use super::{db, from_db, to_db};

// ===== The stored body =====

/// The prefix every checkpoint of `thread` starts with as JSON:
/// `{"thread_id":<id>,` (`thread_id` is `Checkpoint`'s first field).
fn thread_prefix(thread: &ThreadId) -> Vec<u8> {
    let mut prefix = b"{\"thread_id\":".to_vec();
    // Serializing a string into a Vec can't fail.
    if serde_json::to_writer(&mut prefix, thread.as_str()).is_err() {
        prefix.clear();
    }
    prefix.push(b',');
    prefix
}

/// Checkpoint `checkpoint` as stored: core's encoding (depth-checked),
/// without the thread prefix (the row's `thread_id` holds it, so copying a
/// thread copies the bytes as they are).
pub(super) fn encode_checkpoint(checkpoint: &Checkpoint) -> Result<Vec<u8>, CheckpointError> {
    let mut json = encode::checkpoint(checkpoint)?;
    let prefix = thread_prefix(&checkpoint.thread_id);
    if !json.starts_with(&prefix) {
        return Err(CheckpointError::Corrupt {
            thread: checkpoint.thread_id.clone(),
            seq: checkpoint.seq,
            message: "serialized without its thread id first".into(),
        });
    }
    json.drain(..prefix.len());
    Ok(json)
}

/// Reads back checkpoints `(seq, body)` of `thread`.
fn decode_all(
    thread: &ThreadId,
    rows: Vec<(i64, Vec<u8>)>,
) -> Result<Vec<Checkpoint>, CheckpointError> {
    let prefix = thread_prefix(thread);
    let mut json = Vec::new();
    rows.into_iter()
        .map(|(seq, body)| {
            json.clear();
            json.extend_from_slice(&prefix);
            json.extend_from_slice(&body);
            encode::read_checkpoint(thread, from_db(seq), &json)
        })
        .collect()
}

// ===== Reads =====

pub(super) async fn get(
    pool: &PgPool,
    thread: &ThreadId,
    seq: Option<u64>,
) -> Result<Option<Checkpoint>, CheckpointError> {
    let row: Option<(i64, Vec<u8>)> = match seq {
        None => sqlx::query_as(
            "select seq, body from checkpoints where thread_id = $1 order by seq desc limit 1",
        )
        .bind(thread.as_str())
        .fetch_optional(pool)
        .await
        .map_err(db("reading the latest checkpoint"))?,
        Some(seq) if i64::try_from(seq).is_err() => None,
        Some(seq) => {
            sqlx::query_as("select seq, body from checkpoints where thread_id = $1 and seq = $2")
                .bind(thread.as_str())
                .bind(to_db(seq))
                .fetch_optional(pool)
                .await
                .map_err(db("reading a checkpoint"))?
        }
    };
    Ok(decode_all(thread, row.into_iter().collect())?.pop())
}

pub(super) async fn list(
    pool: &PgPool,
    thread: &ThreadId,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<Checkpoint>, CheckpointError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
        "select seq, body from checkpoints where thread_id = $1 and seq < $2
         order by seq desc limit $3",
    )
    .bind(thread.as_str())
    .bind(before.map_or(i64::MAX, to_db))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await
    .map_err(db("listing checkpoints"))?;
    decode_all(thread, rows)
}

pub(super) async fn writes(
    pool: &PgPool,
    thread: &ThreadId,
    seq: u64,
) -> Result<Vec<PendingWrite>, CheckpointError> {
    if i64::try_from(seq).is_err() {
        return Ok(Vec::new());
    }
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as(
        "select body from checkpoint_writes where thread_id = $1 and seq = $2 order by task",
    )
    .bind(thread.as_str())
    .bind(to_db(seq))
    .fetch_all(pool)
    .await
    .map_err(db("reading pending writes"))?;
    rows.iter()
        .map(|(body,)| encode::read_write(thread, seq, body))
        .collect()
}

pub(super) async fn chain(
    pool: &PgPool,
    thread: &ThreadId,
    seq: u64,
) -> Result<Vec<Checkpoint>, CheckpointError> {
    // One range query: from the last full state at or before `seq` (found
    // through the partial index on full states) up to `seq`.
    let rows: Vec<(i64, Vec<u8>)> = if i64::try_from(seq).is_ok() {
        sqlx::query_as(
            "select seq, body from checkpoints
             where thread_id = $1 and seq <= $2
               and seq >= (select max(seq) from checkpoints
                           where thread_id = $1 and is_full and seq <= $2)
             order by seq",
        )
        .bind(thread.as_str())
        .bind(to_db(seq))
        .fetch_all(pool)
        .await
        .map_err(db("reading a chain of checkpoints"))?
    } else {
        Vec::new()
    };
    let whole = match (rows.first(), rows.last()) {
        (Some((first, _)), Some((last, _))) => {
            from_db(*last) == seq && from_db(*last) - from_db(*first) + 1 == rows.len() as u64
        }
        _ => false,
    };
    if !whole {
        return Err(missing(pool, thread, seq).await);
    }
    decode_all(thread, rows)
}

/// The thread's latest and oldest `seq`, from its summary.
pub(super) async fn bounds<'e, E: PgExecutor<'e>>(
    exec: E,
    thread: &ThreadId,
) -> Result<Option<(u64, u64)>, CheckpointError> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "select latest_seq, oldest_seq from checkpoint_threads where thread_id = $1",
    )
    .bind(thread.as_str())
    .fetch_optional(exec)
    .await
    .map_err(db("reading a thread's summary"))?;
    Ok(row.map(|(l, o)| (from_db(l), from_db(o))))
}

/// Why `chain(thread, seq)` found no whole chain (error path only).
async fn missing(pool: &PgPool, thread: &ThreadId, seq: u64) -> CheckpointError {
    match bounds(pool, thread).await {
        Err(e) => e,
        Ok(None) => CheckpointError::ThreadNotFound {
            thread: thread.clone(),
        },
        Ok(Some((latest, _))) if seq > latest => CheckpointError::CheckpointNotFound {
            thread: thread.clone(),
            seq,
            latest,
        },
        Ok(Some((_, oldest))) if seq < oldest => CheckpointError::Pruned {
            thread: thread.clone(),
            seq,
            oldest,
        },
        Ok(Some(_)) => CheckpointError::Corrupt {
            thread: thread.clone(),
            seq,
            message: "no full state before this checkpoint, or a gap in the history".into(),
        },
    }
}
