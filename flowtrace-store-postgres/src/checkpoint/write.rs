//! Writes: `append`, `put_write`, `append_batch`.

use flowtrace_core::checkpoint::{
    Checkpoint, CheckpointBatch, CheckpointError, PendingWrite, StateRecord, ThreadInfo, encode,
};
use flowtrace_core::ids::ThreadId;
use sqlx::PgConnection;

use super::combine;
use super::read::{bounds, encode_checkpoint};
use super::{PostgresCheckpointer, db, from_db, is_unique_violation, status_str, to_db, to_time};

/// The thread's metadata as stored, `None` when the checkpoint has none
/// (the thread then keeps what it had).
fn metadata_text(checkpoint: &Checkpoint) -> Result<Option<String>, CheckpointError> {
    if checkpoint.metadata.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(&checkpoint.metadata)
        .map(Some)
        .map_err(|e| CheckpointError::Corrupt {
            thread: checkpoint.thread_id.clone(),
            seq: checkpoint.seq,
            message: format!("metadata cannot be serialized: {e}"),
        })
}

/// The [`CheckpointError::Conflict`] for checkpoint `seq` of `thread`,
/// naming the `seq` the store expects now (error path only).
async fn conflict(store: &PostgresCheckpointer, thread: &ThreadId, seq: u64) -> CheckpointError {
    match bounds(&store.pool, thread).await {
        Ok(found) => CheckpointError::Conflict {
            thread: thread.clone(),
            seq,
            expected: found.map_or(0, |(latest, _)| latest.saturating_add(1)),
        },
        Err(e) => e,
    }
}

// ===== append =====

pub(super) async fn append(
    store: &PostgresCheckpointer,
    checkpoint: Checkpoint,
) -> Result<(), CheckpointError> {
    checkpoint.check_format_version()?;
    let body = encode_checkpoint(&checkpoint)?;
    let thread = &checkpoint.thread_id;
    if i64::try_from(checkpoint.seq).is_err() {
        return Err(conflict(store, thread, checkpoint.seq).await);
    }
    let fields = Fields {
        created: to_time(thread, checkpoint.seq, checkpoint.created_at)?,
        status: status_str(thread, checkpoint.status)?,
        meta: metadata_text(&checkpoint)?,
    };
    let mut w = store.writer(thread).await?;
    let stored = insert_one(w.conn(), &checkpoint, fields, body).await;
    match stored {
        Ok(true) => w.finish().await,
        Ok(false) => Err(conflict(store, thread, checkpoint.seq).await),
        Err(e) if is_unique_violation(&e) => Err(conflict(store, thread, checkpoint.seq).await),
        Err(e) => Err(db("appending a checkpoint")(e)),
    }
}

/// The converted columns of a checkpoint's summary update.
struct Fields {
    created: chrono::DateTime<chrono::Utc>,
    status: String,
    meta: Option<String>,
}

/// One statement: moves the thread's summary from `seq - 1` to `seq` (or
/// creates it for seq 0) and inserts the row; `false` when the summary was
/// not at `seq - 1` (nothing stored).
async fn insert_one(
    conn: &mut PgConnection,
    cp: &Checkpoint,
    fields: Fields,
    body: Vec<u8>,
) -> Result<bool, sqlx::Error> {
    let thread = &cp.thread_id;
    let Fields {
        created,
        status,
        meta,
    } = fields;
    let is_full = matches!(cp.state, StateRecord::Full(_));
    let done = if cp.seq == 0 {
        sqlx::query(
            "with t as (
                insert into checkpoint_threads (thread_id, latest_seq, oldest_seq, status, step,
                    created_at, updated_at, metadata_json, metadata, forked_from_thread, forked_from_seq)
                values ($1, 0, 0, $2, $3, $4, $4, coalesce($5::text, '{}')::json,
                    coalesce($5::text, '{}')::jsonb, $6, $7)
                on conflict (thread_id) do nothing
                returning 1)
             insert into checkpoints (thread_id, seq, parent_seq, is_full, created_at, run_id, body)
             select $1, 0, $8, $9, $4, $10, $11 from t",
        )
        .bind(thread.as_str())
        .bind(status)
        .bind(to_db(cp.step))
        .bind(created)
        .bind(meta)
        .bind(cp.forked_from.as_ref().map(|(t, _)| t.as_str().to_owned()))
        .bind(cp.forked_from.as_ref().map(|(_, s)| to_db(*s)))
        .bind(cp.parent_seq.map(to_db))
        .bind(is_full)
        .bind(cp.run_id.as_str())
        .bind(body)
        .execute(&mut *conn)
        .await?
    } else {
        sqlx::query(
            "with t as (
                update checkpoint_threads
                set latest_seq = $2, status = $3, step = $4, updated_at = $5,
                    metadata_json = coalesce($6::text::json, metadata_json),
                    metadata = coalesce($6::text::jsonb, metadata)
                where thread_id = $1 and latest_seq = $2 - 1
                returning 1)
             insert into checkpoints (thread_id, seq, parent_seq, is_full, created_at, run_id, body)
             select $1, $2, $7, $8, $5, $9, $10 from t",
        )
        .bind(thread.as_str())
        .bind(to_db(cp.seq))
        .bind(status)
        .bind(to_db(cp.step))
        .bind(created)
        .bind(meta)
        .bind(cp.parent_seq.map(to_db))
        .bind(is_full)
        .bind(cp.run_id.as_str())
        .bind(body)
        .execute(&mut *conn)
        .await?
    };
    Ok(done.rows_affected() == 1)
}

// ===== put_write =====

pub(super) async fn put_write(
    store: &PostgresCheckpointer,
    thread: &ThreadId,
    seq: u64,
    write: PendingWrite,
) -> Result<(), CheckpointError> {
    let body = encode::write(thread, seq, &write)?;
    let Ok(db_seq) = i64::try_from(seq) else {
        return Err(CheckpointError::CheckpointNotFound {
            thread: thread.clone(),
            seq,
            latest: bounds(&store.pool, thread)
                .await?
                .map_or(0, |(latest, _)| latest),
        });
    };
    let runtime = tokio::runtime::Handle::try_current();
    if let (None, Ok(runtime)) = (store.lease_for(thread), runtime) {
        // Unfenced: combined with the other writes in flight.
        let (done, answer) = tokio::sync::oneshot::channel();
        let entry = combine::Entry {
            thread: thread.clone(),
            seq: db_seq,
            task: i64::from(write.task),
            node: write.node.as_str().to_owned(),
            body,
            done,
        };
        let combiner = store.combiners.get(store.sync_writes);
        combine::put(combiner, &runtime, &store.pool, store.sync_writes, entry);
        let oldest = answer.await.map_err(|_| CheckpointError::Backend {
            message: "the pending-write flush stopped before answering".into(),
            source: None,
        })??;
        return match oldest.map(from_db) {
            Some(oldest) if oldest > seq => Err(CheckpointError::Pruned {
                thread: thread.clone(),
                seq,
                oldest,
            }),
            _ => Ok(()),
        };
    }
    let mut w = store.writer(thread).await?;
    // One statement: refused for a pruned checkpoint; a task written
    // already keeps its first write.
    // With asynchronous pending writes, the statement's own transaction
    // commits without waiting for the disk (see `synchronous_pending_writes`).
    let sql = if store.sync_writes {
        "with t as (select oldest_seq from checkpoint_threads where thread_id = $1),
         ins as (
            insert into checkpoint_writes (thread_id, seq, task, node, body)
            select $1, $2, $3, $4, $5
            where not exists (select 1 from t where oldest_seq > $2)
            on conflict do nothing)
         select (select oldest_seq from t)"
    } else {
        "with cfg as (select set_config('synchronous_commit', 'off', true)),
         t as (select oldest_seq from checkpoint_threads where thread_id = $1),
         ins as (
            insert into checkpoint_writes (thread_id, seq, task, node, body)
            select $1, $2, $3, $4, $5
            where not exists (select 1 from t where oldest_seq > $2)
            on conflict do nothing)
         select (select oldest_seq from t) from cfg"
    };
    let oldest: Option<i64> = sqlx::query_scalar(sql)
        .bind(thread.as_str())
        .bind(db_seq)
        .bind(i64::from(write.task))
        .bind(write.node.as_str())
        .bind(body)
        .fetch_one(w.conn())
        .await
        .map_err(db("saving a pending write"))?;
    match oldest.map(from_db) {
        Some(oldest) if oldest > seq => Err(CheckpointError::Pruned {
            thread: thread.clone(),
            seq,
            oldest,
        }),
        _ => w.finish().await,
    }
}

// ===== append_batch =====

/// A batch's rows, as the multi-row inserts bind them (one array per
/// column).
#[derive(Default)]
struct Rows {
    seq: Vec<i64>,
    parent: Vec<Option<i64>>,
    full: Vec<bool>,
    created: Vec<chrono::DateTime<chrono::Utc>>,
    run: Vec<String>,
    body: Vec<Vec<u8>>,
}

#[derive(Default)]
struct WriteRows {
    seq: Vec<i64>,
    task: Vec<i64>,
    node: Vec<String>,
    body: Vec<Vec<u8>>,
}

pub(super) async fn append_batch(
    store: &PostgresCheckpointer,
    thread: &ThreadId,
    batch: CheckpointBatch,
) -> Result<(), CheckpointError> {
    if batch.checkpoints.is_empty() && batch.writes.is_empty() {
        return Ok(());
    }
    // Everything is encoded (and depth-checked) before the transaction.
    let mut rows = Rows::default();
    for cp in &batch.checkpoints {
        cp.check_format_version()?;
        rows.seq.push(to_db(cp.seq));
        rows.parent.push(cp.parent_seq.map(to_db));
        rows.full.push(matches!(cp.state, StateRecord::Full(_)));
        rows.created.push(to_time(thread, cp.seq, cp.created_at)?);
        rows.run.push(cp.run_id.as_str().to_owned());
        // A checkpoint of another thread is refused by `check` below.
        rows.body.push(if &cp.thread_id == thread {
            encode_checkpoint(cp)?
        } else {
            Vec::new()
        });
    }
    let mut writes = WriteRows::default();
    for (seq, w) in &batch.writes {
        writes.body.push(encode::write(thread, *seq, w)?);
        writes.seq.push(to_db(*seq));
        writes.task.push(i64::from(w.task));
        writes.node.push(w.node.as_str().to_owned());
    }

    let mut tx = store.transaction(thread).await?;
    let latest: Option<i64> = sqlx::query_scalar(
        "select latest_seq from checkpoint_threads where thread_id = $1 for update",
    )
    .bind(thread.as_str())
    .fetch_optional(&mut *tx)
    .await
    .map_err(db("locking a thread's summary"))?;
    let latest = latest.map(from_db);
    batch.check(thread, latest)?;

    if let Some((first, rest)) = batch.checkpoints.split_first() {
        let mut info = ThreadInfo::from_first(first);
        let mut meta = metadata_text(first)?;
        for cp in rest {
            info.observe(cp);
            if let Some(m) = metadata_text(cp)? {
                meta = Some(m);
            }
        }
        let fields = Fields {
            created: to_time(thread, first.seq, info.created_at)?,
            status: status_str(thread, info.status)?,
            meta,
        };
        let updated = to_time(thread, info.latest_seq, info.updated_at)?;
        let summary =
            write_summary(&mut tx, &info, latest.is_none(), fields, updated, first.seq).await;
        let inserted = match summary {
            Ok(true) => insert_rows(&mut tx, thread, rows).await,
            Ok(false) => return Err(conflict(store, thread, first.seq).await),
            Err(e) => Err(e),
        };
        match inserted {
            Ok(()) => {}
            Err(e) if is_unique_violation(&e) => {
                return Err(conflict(store, thread, first.seq).await);
            }
            Err(e) => return Err(db("appending a batch of checkpoints")(e)),
        }
    }
    if !writes.seq.is_empty() {
        sqlx::query(
            "insert into checkpoint_writes (thread_id, seq, task, node, body)
             select $1, * from unnest($2::bigint[], $3::bigint[], $4::text[], $5::bytea[])
             on conflict do nothing",
        )
        .bind(thread.as_str())
        .bind(writes.seq)
        .bind(writes.task)
        .bind(writes.node)
        .bind(writes.body)
        .execute(&mut *tx)
        .await
        .map_err(db("saving a batch's pending writes"))?;
    }
    tx.commit().await.map_err(db("committing a batch"))
}

/// Creates (`new`) or moves forward the thread's summary to `info`;
/// `false` when a new thread's summary exists already (a racing writer).
async fn write_summary(
    conn: &mut PgConnection,
    info: &ThreadInfo,
    new: bool,
    fields: Fields,
    updated: chrono::DateTime<chrono::Utc>,
    first: u64,
) -> Result<bool, sqlx::Error> {
    let thread = &info.thread_id;
    let Fields {
        created,
        status,
        meta,
    } = fields;
    let done = if new {
        sqlx::query(
            "insert into checkpoint_threads (thread_id, latest_seq, oldest_seq, status, step,
                created_at, updated_at, metadata_json, metadata, forked_from_thread, forked_from_seq)
             values ($1, $2, $3, $4, $5, $6, $7, coalesce($8::text, '{}')::json,
                coalesce($8::text, '{}')::jsonb, $9, $10)
             on conflict (thread_id) do nothing",
        )
        .bind(thread.as_str())
        .bind(to_db(info.latest_seq))
        .bind(to_db(first))
        .bind(status)
        .bind(to_db(info.step))
        .bind(created)
        .bind(updated)
        .bind(meta)
        .bind(info.forked_from.as_ref().map(|(t, _)| t.as_str().to_owned()))
        .bind(info.forked_from.as_ref().map(|(_, s)| to_db(*s)))
        .execute(&mut *conn)
        .await?
    } else {
        let _ = created;
        sqlx::query(
            "update checkpoint_threads
             set latest_seq = $2, status = $3, step = $4, updated_at = $5,
                 metadata_json = coalesce($6::text::json, metadata_json),
                 metadata = coalesce($6::text::jsonb, metadata)
             where thread_id = $1",
        )
        .bind(thread.as_str())
        .bind(to_db(info.latest_seq))
        .bind(status)
        .bind(to_db(info.step))
        .bind(updated)
        .bind(meta)
        .execute(&mut *conn)
        .await?
    };
    Ok(done.rows_affected() == 1)
}

/// The batch's checkpoints, one multi-row insert.
async fn insert_rows(
    conn: &mut PgConnection,
    thread: &ThreadId,
    rows: Rows,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into checkpoints (thread_id, seq, parent_seq, is_full, created_at, run_id, body)
         select $1, * from unnest($2::bigint[], $3::bigint[], $4::boolean[],
                                  $5::timestamptz[], $6::text[], $7::bytea[])",
    )
    .bind(thread.as_str())
    .bind(rows.seq)
    .bind(rows.parent)
    .bind(rows.full)
    .bind(rows.created)
    .bind(rows.run)
    .bind(rows.body)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}
