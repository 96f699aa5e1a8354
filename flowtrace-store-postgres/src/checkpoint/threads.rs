//! Managing threads: `delete_thread`, `prune`, `list_threads`,
//! `copy_thread`.

use std::cell::Cell;

use flowtrace_core::checkpoint::{
    CheckpointError, PruneOutcome, Retention, ThreadFilter, ThreadInfo, encode,
};
use flowtrace_core::ids::ThreadId;
use sqlx::PgPool;

use super::{
    PostgresCheckpointer, db, from_db, from_time, is_unique_violation, parse_status, status_str,
    to_db,
};

/// The most summary rows [`list_threads`](flowtrace_core::checkpoint::Checkpointer::list_threads)
/// of a [`PostgresCheckpointer`] reads per query while filling a
/// page (a filter that matches few threads reads several such pages).
pub const LIST_THREADS_PAGE: usize = 1_000;

pub(super) async fn delete_thread(
    store: &PostgresCheckpointer,
    thread: &ThreadId,
) -> Result<bool, CheckpointError> {
    let mut w = store.writer(thread).await?;
    // One statement: the thread's rows in all three tables, or none.
    let removed: i64 = sqlx::query_scalar(
        "with c as (delete from checkpoints where thread_id = $1 returning 1),
              w as (delete from checkpoint_writes where thread_id = $1 returning 1),
              t as (delete from checkpoint_threads where thread_id = $1 returning 1)
         select (select count(*) from c) + (select count(*) from w) + (select count(*) from t)",
    )
    .bind(thread.as_str())
    .fetch_one(w.conn())
    .await
    .map_err(db("deleting a thread"))?;
    w.finish().await?;
    Ok(removed > 0)
}

pub(super) async fn prune(
    store: &PostgresCheckpointer,
    thread: &ThreadId,
    keep: Retention,
) -> Result<PruneOutcome, CheckpointError> {
    let mut tx = store.transaction(thread).await?;
    // Locks the summary: appends to the thread wait for the prune.
    let bounds: Option<(i64, i64)> = sqlx::query_as(
        "select latest_seq, oldest_seq from checkpoint_threads where thread_id = $1 for update",
    )
    .bind(thread.as_str())
    .fetch_optional(&mut *tx)
    .await
    .map_err(db("locking a thread's summary"))?;
    let Some((latest, oldest)) = bounds.map(|(l, o)| (from_db(l), from_db(o))) else {
        return Err(CheckpointError::ThreadNotFound {
            thread: thread.clone(),
        });
    };
    // Core's rule asks for the last full state at or before one `seq`:
    // learn which, look it up, then apply the rule with the answer.
    let asked = Cell::new(None);
    encode::first_kept(oldest, latest, keep, |s| {
        asked.set(Some(s));
        None
    });
    let full: Option<i64> = match asked.get() {
        None => None,
        Some(s) => sqlx::query_scalar(
            "select max(seq) from checkpoints where thread_id = $1 and is_full and seq <= $2",
        )
        .bind(thread.as_str())
        .bind(to_db(s))
        .fetch_one(&mut *tx)
        .await
        .map_err(db("finding the last full state"))?,
    };
    let start = encode::first_kept(oldest, latest, keep, |_| full.map(from_db));
    if start > oldest {
        sqlx::query(
            "with c as (delete from checkpoints where thread_id = $1 and seq < $2),
                  w as (delete from checkpoint_writes where thread_id = $1 and seq < $2)
             update checkpoint_threads set oldest_seq = $2 where thread_id = $1",
        )
        .bind(thread.as_str())
        .bind(to_db(start))
        .execute(&mut *tx)
        .await
        .map_err(db("pruning a thread"))?;
    }
    tx.commit().await.map_err(db("committing a prune"))?;
    Ok(PruneOutcome::new(start - oldest, start))
}

type SummaryRow = (
    String,
    i64,
    String,
    i64,
    chrono::DateTime<chrono::Utc>,
    chrono::DateTime<chrono::Utc>,
    String,
    Option<String>,
    Option<i64>,
);

fn summary(row: SummaryRow) -> Result<ThreadInfo, CheckpointError> {
    let (id, latest, status, step, created, updated, meta, fork_thread, fork_seq) = row;
    let thread = ThreadId::new(id);
    let mut info = ThreadInfo::new(
        thread.clone(),
        from_db(latest),
        parse_status(&thread, status)?,
        from_db(step),
        from_time(created),
        from_time(updated),
    );
    info.metadata = serde_json::from_str(&meta).map_err(|e| CheckpointError::Corrupt {
        thread: thread.clone(),
        seq: info.latest_seq,
        message: format!("stored thread metadata cannot be read: {e}"),
    })?;
    info.forked_from = fork_thread
        .zip(fork_seq.map(from_db))
        .map(|(t, s)| (ThreadId::new(t), s));
    Ok(info)
}

pub(super) async fn list_threads(
    pool: &PgPool,
    filter: &ThreadFilter,
) -> Result<Vec<ThreadInfo>, CheckpointError> {
    let mut out = Vec::new();
    if filter.limit == 0 {
        return Ok(out);
    }
    let statuses = filter
        .status
        .iter()
        .map(|s| status_str(&ThreadId::new(""), *s))
        .collect::<Result<Vec<_>, _>>()?;
    // The database narrows by status and metadata containment (a superset
    // of exact equality); `ThreadFilter::matches` decides exactly.
    let contains =
        serde_json::to_string(&filter.metadata).map_err(|e| CheckpointError::Misconfigured {
            message: format!("the filter's metadata cannot be serialized: {e}"),
        })?;
    let page = filter.limit.min(LIST_THREADS_PAGE);
    let mut after = filter.after.as_ref().map(|t| t.as_str().to_owned());
    loop {
        let rows: Vec<SummaryRow> = sqlx::query_as(
            "select thread_id, latest_seq, status, step, created_at, updated_at,
                    metadata_json::text, forked_from_thread, forked_from_seq
             from checkpoint_threads
             where ($1::text is null or thread_id > $1)
               and (cardinality($2::text[]) = 0 or status = any($2))
               and metadata @> $3::jsonb
             order by thread_id
             limit $4",
        )
        .bind(after.as_deref())
        .bind(&statuses)
        .bind(&contains)
        .bind(i64::try_from(page).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await
        .map_err(db("listing threads"))?;
        let full_page = rows.len() == page;
        after = rows.last().map(|r| r.0.clone());
        for row in rows {
            let info = summary(row)?;
            if filter.matches(&info) {
                out.push(info);
                if out.len() == filter.limit {
                    return Ok(out);
                }
            }
        }
        if !full_page {
            return Ok(out);
        }
    }
}

pub(super) async fn copy_thread(
    store: &PostgresCheckpointer,
    from: &ThreadId,
    to: &ThreadId,
) -> Result<(), CheckpointError> {
    let mut tx = store.transaction(to).await?;
    // Locks the source's summary: its appends, prunes and deletes wait,
    // so the copy is of one state of the thread.
    let source: Option<i32> =
        sqlx::query_scalar("select 1 from checkpoint_threads where thread_id = $1 for share")
            .bind(from.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("locking the source thread"))?;
    if source.is_none() {
        return Err(CheckpointError::ThreadNotFound {
            thread: from.clone(),
        });
    }
    let exists = || CheckpointError::ThreadExists { thread: to.clone() };
    if super::read::bounds(&mut *tx, to).await?.is_some() {
        return Err(exists());
    }
    // The target's stray pending writes go; then the summary, the
    // checkpoints (bodies don't hold their thread id) and the writes.
    let copied = sqlx::query(
        "with stray as (delete from checkpoint_writes where thread_id = $2)
         insert into checkpoint_threads (thread_id, latest_seq, oldest_seq, status, step,
             created_at, updated_at, metadata_json, metadata, forked_from_thread, forked_from_seq)
         select $2, latest_seq, oldest_seq, status, step, created_at, updated_at,
             metadata_json, metadata, forked_from_thread, forked_from_seq
         from checkpoint_threads where thread_id = $1",
    )
    .bind(from.as_str())
    .bind(to.as_str())
    .execute(&mut *tx)
    .await;
    match copied {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => return Err(exists()),
        Err(e) => return Err(db("copying a thread's summary")(e)),
    }
    sqlx::query(
        "with w as (
            insert into checkpoint_writes (thread_id, seq, task, node, body)
            select $2, seq, task, node, body from checkpoint_writes where thread_id = $1)
         insert into checkpoints (thread_id, seq, parent_seq, is_full, created_at, run_id, body)
         select $2, seq, parent_seq, is_full, created_at, run_id, body
         from checkpoints where thread_id = $1",
    )
    .bind(from.as_str())
    .bind(to.as_str())
    .execute(&mut *tx)
    .await
    .map_err(db("copying a thread"))?;
    tx.commit().await.map_err(db("committing a copy"))
}
