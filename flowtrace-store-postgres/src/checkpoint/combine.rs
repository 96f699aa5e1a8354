//! Write combining for pending writes: concurrent `put_write` calls (the
//! tasks of one wide super-step finishing together, or of many runs) go to
//! the database as one multi-row statement and one commit.
//!
//! The first call finding no flush under way spawns one; it takes every
//! write queued so far (at most [`MAX_COMBINED`] per statement), writes
//! them, answers each caller, and repeats until the queue is empty. The
//! queue holds only writes whose callers are waiting, so it never holds
//! more than the calls in flight.

use std::sync::{Arc, Mutex, MutexGuard};

use flowtrace_core::checkpoint::CheckpointError;
use flowtrace_core::ids::ThreadId;
use sqlx::PgPool;
use tokio::sync::oneshot;

use super::db;

/// The most pending writes one combined statement carries.
pub const MAX_COMBINED: usize = 1_000;

/// One queued write and where its answer goes: the thread's oldest kept
/// `seq` (`None` for a thread without checkpoints), or the error.
pub(super) struct Entry {
    pub(super) thread: ThreadId,
    pub(super) seq: i64,
    pub(super) task: i64,
    pub(super) node: String,
    pub(super) body: Vec<u8>,
    pub(super) done: oneshot::Sender<Result<Option<i64>, CheckpointError>>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<Entry>,
    flushing: bool,
}

/// The queue of one kind of pending writes (synchronous or not).
#[derive(Default)]
pub(super) struct Combiner {
    queue: Mutex<Queue>,
}

impl Combiner {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Plain data, never left half-updated: a poisoned lock is usable.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `entry`; returns whether the caller must start a flush.
    fn push(&self, entry: Entry) -> bool {
        let mut q = self.lock();
        q.pending.push(entry);
        !std::mem::replace(&mut q.flushing, true)
    }

    /// The next writes to flush, or `None` (and no flush under way) when
    /// the queue is empty.
    fn take(&self) -> Option<Vec<Entry>> {
        let mut q = self.lock();
        if q.pending.is_empty() {
            q.flushing = false;
            return None;
        }
        let n = q.pending.len().min(MAX_COMBINED);
        Some(q.pending.drain(..n).collect())
    }
}

/// Queues `entry` to be saved with the writes queued alongside it,
/// starting a flush on `runtime` if none is under way; the answer arrives
/// on the entry's channel.
pub(super) fn put(
    combiner: &Arc<Combiner>,
    runtime: &tokio::runtime::Handle,
    pool: &PgPool,
    sync: bool,
    entry: Entry,
) {
    if combiner.push(entry) {
        runtime.spawn(flush(combiner.clone(), pool.clone(), sync));
    }
}

async fn flush(combiner: Arc<Combiner>, pool: PgPool, sync: bool) {
    while let Some(batch) = combiner.take() {
        match write(&pool, &batch, sync).await {
            Ok(oldest) => {
                for (entry, oldest) in batch.into_iter().zip(oldest) {
                    // A caller that stopped waiting needs no answer.
                    let _ = entry.done.send(Ok(oldest));
                }
            }
            Err(e) => {
                let err = db("saving pending writes")(e);
                for entry in batch {
                    let _ = entry.done.send(Err(err.clone()));
                }
            }
        }
    }
}

/// One statement for the whole batch: each write is refused for a pruned
/// checkpoint, and the first write of a task is kept (batch order first).
async fn write(
    pool: &PgPool,
    batch: &[Entry],
    sync: bool,
) -> Result<Vec<Option<i64>>, sqlx::Error> {
    let threads: Vec<&str> = batch.iter().map(|e| e.thread.as_str()).collect();
    let seqs: Vec<i64> = batch.iter().map(|e| e.seq).collect();
    let tasks: Vec<i64> = batch.iter().map(|e| e.task).collect();
    let nodes: Vec<&str> = batch.iter().map(|e| e.node.as_str()).collect();
    let bodies: Vec<&[u8]> = batch.iter().map(|e| e.body.as_slice()).collect();
    let rows: Vec<(i64, Option<i64>)> = sqlx::query_as(
        "with cfg as (select set_config('synchronous_commit', case when $6 then 'on' else 'off' end, true)),
         input as (
            select * from unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::bytea[])
                with ordinality as i(thread_id, seq, task, node, body, n)),
         t as (
            select i.n, th.oldest_seq from input i
            left join checkpoint_threads th on th.thread_id = i.thread_id),
         ins as (
            insert into checkpoint_writes (thread_id, seq, task, node, body)
            select i.thread_id, i.seq, i.task, i.node, i.body
            from input i join t on t.n = i.n
            where t.oldest_seq is null or t.oldest_seq <= i.seq
            order by i.n
            on conflict do nothing)
         select t.n, t.oldest_seq from t, cfg order by t.n",
    )
    .bind(threads)
    .bind(seqs)
    .bind(tasks)
    .bind(nodes)
    .bind(bodies)
    .bind(sync)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(_, oldest)| oldest).collect())
}
