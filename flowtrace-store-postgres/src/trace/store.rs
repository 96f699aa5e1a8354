//! [`TraceStore`]: reading a run's events, steps and totals back.

use chrono::{DateTime, Utc};
use flowtrace_core::Cost;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::batch::from_chrono;
use super::records::{EventPage, RunRow, StepRow, StoredEvent};
use crate::error::StoreError;

/// The most events one [`TraceStore::events`] page holds; larger limits
/// are clamped to it.
pub const MAX_PAGE: usize = 1_000;

/// The most steps [`TraceStore::steps`] returns; a run with more gives
/// [`StoreError::LimitExceeded`].
pub const MAX_STEPS: usize = 100_000;

/// Reads what [`PostgresTraceSink`](super::PostgresTraceSink) wrote, and
/// purges old runs ([`purge_finished`](Self::purge_finished)).
///
/// Cheap to clone (it holds the pool).
///
/// # Cancel safety
/// The reads have no effect: dropping their futures loses nothing. For
/// purges see [`purge_finished_with`](Self::purge_finished_with).
#[derive(Clone, Debug)]
pub struct TraceStore {
    pub(super) pool: PgPool,
}

fn get<'r, T>(row: &'r PgRow, col: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(col).map_err(|e| StoreError::Corrupt {
        message: format!("column {col}"),
        source: Some(Box::new(e)),
    })
}

fn json(text: Option<String>, what: &str) -> Result<Option<serde_json::Value>, StoreError> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Corrupt {
            message: format!("{what} is not JSON"),
            source: Some(Box::new(e)),
        })
    })
    .transpose()
}

fn cost(text: &str, what: &str) -> Result<Cost, StoreError> {
    text.parse().map_err(|e| StoreError::Corrupt {
        message: format!("{what} {text:?} is not an amount"),
        source: Some(Box::new(e)),
    })
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn ts(t: Option<DateTime<Utc>>) -> Option<flowtrace_core::trace::Timestamp> {
    t.map(from_chrono)
}

impl TraceStore {
    /// A store reading through `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Whether anything is stored of run `run_id`.
    async fn known(&self, run_id: &str) -> Result<bool, StoreError> {
        sqlx::query_scalar(
            "select exists(select 1 from workflow_runs where id = $1)
                 or exists(select 1 from trace_events where run_id = $1)",
        )
        .bind(run_id)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::db("looking the run up"))
    }

    /// The events of run `run_id` after `after` (a `seq`; `None` for the
    /// first page), at most `limit` of them (clamped to [`MAX_PAGE`]), by
    /// `seq`. Follow [`EventPage::next`] until it is `None` to read every
    /// stored event exactly once.
    ///
    /// # Errors
    /// [`StoreError::InvalidRequest`] for a zero `limit`;
    /// [`StoreError::RunNotFound`] when nothing is stored of the run;
    /// [`StoreError::Database`].
    pub async fn events(
        &self,
        run_id: &str,
        after: Option<i64>,
        limit: usize,
    ) -> Result<EventPage, StoreError> {
        if limit == 0 {
            return Err(StoreError::InvalidRequest("a page limit of 0".into()));
        }
        let limit = limit.min(MAX_PAGE);
        let rows = sqlx::query(
            "select seq, ts, kind, step_id, payload::text as payload from trace_events
             where run_id = $1 and seq > $2 order by seq limit $3",
        )
        .bind(run_id)
        .bind(after.unwrap_or(-1))
        .bind(limit as i64 + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("reading trace events"))?;
        if rows.is_empty() && !self.known(run_id).await? {
            return Err(StoreError::RunNotFound {
                run_id: run_id.to_owned(),
            });
        }
        let more = rows.len() > limit;
        let mut events = Vec::with_capacity(rows.len().min(limit));
        for row in rows.iter().take(limit) {
            let payload: String = get(row, "payload")?;
            let step_id: Option<i64> = get(row, "step_id")?;
            events.push(StoredEvent {
                seq: get(row, "seq")?,
                ts: from_chrono(get(row, "ts")?),
                kind: get(row, "kind")?,
                step_id: step_id.map(count),
                payload: json(Some(payload), "a trace event")?.unwrap_or_default(),
            });
        }
        let next = if more {
            events.last().map(|e| e.seq)
        } else {
            None
        };
        Ok(EventPage { events, next })
    }

    /// The run's `workflow_runs` row: status, totals, summary.
    ///
    /// # Errors
    /// [`StoreError::RunNotFound`] when there is no such row;
    /// [`StoreError::Database`]; [`StoreError::Corrupt`].
    pub async fn run(&self, run_id: &str) -> Result<RunRow, StoreError> {
        let row = sqlx::query(
            "select id, workflow_id, workflow_version, thread_id, triggered_by, status,
                    input::text as input, enqueued_at, started_at, finished_at,
                    total_tokens_input, total_tokens_output, total_cost::text as total_cost,
                    total_latency_ms, error_summary::text as error_summary,
                    summary::text as summary, claimed_by, updated_at
             from workflow_runs where id = $1",
        )
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("reading the run"))?
        .ok_or_else(|| StoreError::RunNotFound {
            run_id: run_id.to_owned(),
        })?;
        let total_cost: String = get(&row, "total_cost")?;
        Ok(RunRow {
            id: get(&row, "id")?,
            workflow_id: get(&row, "workflow_id")?,
            workflow_version: get(&row, "workflow_version")?,
            thread_id: get(&row, "thread_id")?,
            triggered_by: get(&row, "triggered_by")?,
            status: get(&row, "status")?,
            input: json(get(&row, "input")?, "the run's input")?,
            enqueued_at: from_chrono(get(&row, "enqueued_at")?),
            started_at: ts(get(&row, "started_at")?),
            finished_at: ts(get(&row, "finished_at")?),
            total_tokens_input: count(get(&row, "total_tokens_input")?),
            total_tokens_output: count(get(&row, "total_tokens_output")?),
            total_cost: cost(&total_cost, "the run's total cost")?,
            total_latency_ms: count(get(&row, "total_latency_ms")?),
            error_summary: json(get(&row, "error_summary")?, "the run's error summary")?,
            summary: json(get(&row, "summary")?, "the run's summary")?,
            claimed_by: get(&row, "claimed_by")?,
            updated_at: from_chrono(get(&row, "updated_at")?),
        })
    }

    /// The run's steps, by step id (subgraph steps included), at most
    /// [`MAX_STEPS`].
    ///
    /// # Errors
    /// [`StoreError::RunNotFound`] when nothing is stored of the run;
    /// [`StoreError::LimitExceeded`] for a run of more than [`MAX_STEPS`]
    /// steps; [`StoreError::Database`]; [`StoreError::Corrupt`].
    pub async fn steps(&self, run_id: &str) -> Result<Vec<StepRow>, StoreError> {
        let rows = sqlx::query(
            "select step_id, node_id, node_type, status, attempt, started_at, finished_at,
                    latency_ms, tokens_input, tokens_output, cost::text as cost, cache_hit,
                    provider, model, error
             from run_steps where run_id = $1 order by step_id limit $2",
        )
        .bind(run_id)
        .bind(MAX_STEPS as i64 + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("reading the run's steps"))?;
        if rows.len() > MAX_STEPS {
            return Err(StoreError::LimitExceeded {
                what: "the steps of a run",
                limit: MAX_STEPS as u64,
            });
        }
        if rows.is_empty() && !self.known(run_id).await? {
            return Err(StoreError::RunNotFound {
                run_id: run_id.to_owned(),
            });
        }
        rows.iter().map(step_row).collect()
    }
}

fn step_row(row: &PgRow) -> Result<StepRow, StoreError> {
    let step_cost: String = get(row, "cost")?;
    let attempt: i32 = get(row, "attempt")?;
    Ok(StepRow {
        step_id: count(get(row, "step_id")?),
        node_id: get(row, "node_id")?,
        node_type: get(row, "node_type")?,
        status: get(row, "status")?,
        attempt: u32::try_from(attempt).unwrap_or(0),
        started_at: ts(get(row, "started_at")?),
        finished_at: ts(get(row, "finished_at")?),
        latency_ms: get(row, "latency_ms")?,
        tokens_input: count(get(row, "tokens_input")?),
        tokens_output: count(get(row, "tokens_output")?),
        cost: cost(&step_cost, "a step's cost")?,
        cache_hit: get(row, "cache_hit")?,
        provider: get(row, "provider")?,
        model: get(row, "model")?,
        error: get(row, "error")?,
    })
}
