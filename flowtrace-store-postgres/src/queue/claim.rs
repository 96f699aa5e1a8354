//! The queue's SQL: claiming runs, renewing leases, and recording how a
//! run stopped, each fenced by the claim it was made under.

use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;

use super::{RunState, StoredDecision};
use crate::error::StoreError;

/// A run a worker claimed.
#[derive(Clone, Debug)]
pub(crate) struct Claim {
    pub(crate) run_id: String,
    pub(crate) workflow_id: String,
    pub(crate) workflow_version: i32,
    pub(crate) thread_id: String,
    pub(crate) input: Value,
    /// The claim's number: the run's fencing token in `workflow_runs`.
    pub(crate) claims: i32,
    pub(crate) decisions: Vec<StoredDecision>,
    pub(crate) requested: Option<String>,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

type ClaimRow = (
    String,
    Option<String>,
    Option<i32>,
    Option<String>,
    Option<Value>,
    i32,
    Option<Value>,
    Option<String>,
);

/// Claims up to `n` runs for `owner`: queued ones, and running ones whose
/// lease expired (their worker died), oldest first, skipping rows other
/// workers are claiming.
pub(crate) async fn claim(
    pool: &PgPool,
    owner: &str,
    n: usize,
    ttl: Duration,
) -> Result<Vec<Claim>, StoreError> {
    let rows: Vec<ClaimRow> = sqlx::query_as(
        "with c as (
            select id from workflow_runs
            where status = 'queued' or (status = 'running' and lease_expires_at < now())
            order by enqueued_at, id
            limit $2
            for update skip locked
         )
         update workflow_runs r
            set status = 'running', claimed_by = $1, claims = r.claims + 1,
                lease_expires_at = now() + $3 * interval '1 millisecond',
                started_at = coalesce(r.started_at, now()), updated_at = now()
         from c where r.id = c.id
         returning r.id, r.workflow_id, r.workflow_version, r.thread_id, r.input, r.claims,
                   r.decisions, r.requested",
    )
    .bind(owner)
    .bind(i64::try_from(n).unwrap_or(i64::MAX))
    .bind(millis(ttl))
    .fetch_all(pool)
    .await
    .map_err(StoreError::db("claiming runs"))?;
    let mut out = Vec::with_capacity(rows.len());
    for (run_id, workflow_id, version, thread, input, claims, decisions, requested) in rows {
        let (Some(workflow_id), Some(workflow_version)) = (workflow_id, version) else {
            // Not a queue run (a trace row of a run executed elsewhere):
            // nothing to execute. Give it back as it was found.
            mark_failed_unrunnable(pool, &run_id, claims).await?;
            continue;
        };
        let decisions = match decisions {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => serde_json::from_value(v).map_err(|e| StoreError::Corrupt {
                message: format!("run {run_id:?}: its stored decisions"),
                source: Some(Box::new(e)),
            })?,
        };
        out.push(Claim {
            thread_id: thread.unwrap_or_else(|| run_id.clone()),
            run_id,
            workflow_id,
            workflow_version,
            input: input.unwrap_or(Value::Null),
            claims,
            decisions,
            requested,
        });
    }
    Ok(out)
}

async fn mark_failed_unrunnable(
    pool: &PgPool,
    run_id: &str,
    claims: i32,
) -> Result<(), StoreError> {
    sqlx::query(
        "update workflow_runs set status = 'failed', finished_at = now(), claimed_by = null,
            lease_expires_at = null,
            error_summary = jsonb_build_object('kind', 'unrunnable', 'message',
                'the run names no workflow version')
         where id = $1 and claims = $2",
    )
    .bind(run_id)
    .bind(claims)
    .execute(pool)
    .await
    .map_err(StoreError::db("failing an unrunnable run"))?;
    Ok(())
}

/// A held run's lease, as the heartbeat found it.
#[derive(Clone, Debug)]
pub(crate) struct Beat {
    pub(crate) run_id: String,
    pub(crate) requested: Option<String>,
}

/// Extends the leases of the runs `owner` holds (`(run id, claim)` pairs)
/// and of their threads; returns those still held, with what was asked of
/// them. A run missing from the answer was taken over.
pub(crate) async fn heartbeat(
    pool: &PgPool,
    owner: &str,
    held: &[(String, i32, String, u64)],
    ttl: Duration,
) -> Result<Vec<Beat>, StoreError> {
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<&str> = held.iter().map(|h| h.0.as_str()).collect();
    let claims: Vec<i32> = held.iter().map(|h| h.1).collect();
    let threads: Vec<&str> = held.iter().map(|h| h.2.as_str()).collect();
    let epochs: Vec<i64> = held.iter().map(|h| h.3 as i64).collect();
    let mut tx = pool
        .begin()
        .await
        .map_err(StoreError::db("starting a heartbeat"))?;
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "update workflow_runs r set lease_expires_at = now() + $4 * interval '1 millisecond'
         from unnest($2::text[], $3::int[]) as h(id, claims)
         where r.id = h.id and r.claims = h.claims and r.claimed_by = $1 and r.status = 'running'
         returning r.id, r.requested",
    )
    .bind(owner)
    .bind(&ids)
    .bind(&claims)
    .bind(millis(ttl))
    .fetch_all(&mut *tx)
    .await
    .map_err(StoreError::db("renewing run leases"))?;
    sqlx::query(
        "update thread_leases l set expires_at = now() + $3 * interval '1 millisecond'
         from unnest($1::text[], $2::bigint[]) as h(thread_id, epoch)
         where l.thread_id = h.thread_id and l.epoch = h.epoch",
    )
    .bind(&threads)
    .bind(&epochs)
    .bind(millis(ttl))
    .execute(&mut *tx)
    .await
    .map_err(StoreError::db("renewing thread leases"))?;
    tx.commit()
        .await
        .map_err(StoreError::db("committing a heartbeat"))?;
    Ok(rows
        .into_iter()
        .map(|(run_id, requested)| Beat { run_id, requested })
        .collect())
}

/// How a claimed run stopped, to record.
#[derive(Clone, Debug)]
pub(crate) struct Stopped {
    pub(crate) status: RunState,
    pub(crate) summary: Value,
    pub(crate) interrupts: Value,
    pub(crate) error: Option<Value>,
}

/// Records how the run stopped and lets it go, if `owner` still holds
/// claim `claims`. `false` when another worker took it over (nothing
/// written).
pub(crate) async fn finish(
    pool: &PgPool,
    run_id: &str,
    owner: &str,
    claims: i32,
    stopped: &Stopped,
) -> Result<bool, StoreError> {
    // The thread's totals (every claim of the run), from the summary.
    let totals = &stopped.summary["totals"];
    let number = |key: &str| totals[key].as_i64().unwrap_or(0);
    let cost = totals["cost_usd"].as_str().unwrap_or("0").to_owned();
    let done = sqlx::query(
        "update workflow_runs set status = $4, summary = $5, interrupts = $6,
            error_summary = $7, decisions = null,
            total_tokens_input = $8, total_tokens_output = $9,
            total_cost = $10::text::numeric, total_latency_ms = $11,
            requested = case when $4 = 'running' then requested else null end,
            claimed_by = null, lease_expires_at = null, updated_at = now(),
            finished_at = case when $4 in ('succeeded', 'failed', 'canceled') then now()
                               else finished_at end
         where id = $1 and claimed_by = $2 and claims = $3",
    )
    .bind(run_id)
    .bind(owner)
    .bind(claims)
    .bind(stopped.status.as_str())
    .bind(&stopped.summary)
    .bind(&stopped.interrupts)
    .bind(&stopped.error)
    .bind(number("tokens_input"))
    .bind(number("tokens_output"))
    .bind(cost)
    .bind(number("latency_ms"))
    .execute(pool)
    .await
    .map_err(StoreError::db("recording how a run stopped"))?;
    Ok(done.rows_affected() == 1)
}

/// Puts a claimed run back in the queue (its worker is shutting down, or
/// the database failed under it), if `owner` still holds claim `claims`.
/// It resumes from its last checkpoint on the next claim.
pub(crate) async fn release(
    pool: &PgPool,
    run_id: &str,
    owner: &str,
    claims: i32,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "update workflow_runs set status = 'queued', claimed_by = null, lease_expires_at = null,
            updated_at = now()
         where id = $1 and claimed_by = $2 and claims = $3",
    )
    .bind(run_id)
    .bind(owner)
    .bind(claims)
    .execute(pool)
    .await
    .map_err(StoreError::db("releasing a run"))?;
    Ok(done.rows_affected() == 1)
}

/// Whether any run is queued or running (held by anyone): a worker told to
/// exit when idle waits while one is, since its holder may die.
pub(crate) async fn pending(pool: &PgPool) -> Result<bool, StoreError> {
    sqlx::query_scalar(
        // Rows the trace sink wrote for runs outside the queue (no
        // workflow) are not the queue's to wait for.
        "select exists(select 1 from workflow_runs
                       where status in ('queued', 'running') and workflow_id is not null)",
    )
    .fetch_one(pool)
    .await
    .map_err(StoreError::db("looking for pending runs"))
}
