//! One write transaction's rows, as columns for `unnest`, and the SQL.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use flowtrace_core::trace::Timestamp;
use sqlx::PgPool;

use super::queued::{RunEnd, StepEnd};
use super::writer::StepTrack;

/// The earliest instant stored (0001-01-01T00:00:00Z): PostgreSQL and
/// chrono both hold it.
const MIN_MICROS: i64 = -62_135_596_800_000_000;
/// The latest instant stored (9999-12-31T23:59:59.999999Z).
const MAX_MICROS: i64 = 253_402_300_799_999_999;

/// A core timestamp as a `timestamptz` (clamped to years 1–9999).
pub(super) fn to_chrono(ts: Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(ts.unix_micros().clamp(MIN_MICROS, MAX_MICROS))
        .unwrap_or_default()
}

/// A `timestamptz` as a core timestamp.
pub(crate) fn from_chrono(ts: DateTime<Utc>) -> Timestamp {
    Timestamp::from_unix_micros(ts.timestamp_micros())
}

fn int8(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// What a batch does to a run's row: its last top-level bookend.
pub(super) enum RunOp {
    Started { at: Timestamp },
    Finished { at: Timestamp, end: Box<RunEnd> },
}

/// One `run_steps` row.
pub(super) struct StepWrite {
    run_id: String,
    step_id: i64,
    node: String,
    status: &'static str,
    attempt: i32,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    latency_ms: f64,
    tokens_in: i64,
    tokens_out: i64,
    cost: String,
    cache_hit: bool,
    provider: Option<String>,
    model: Option<String>,
    error: Option<String>,
}

impl StepWrite {
    /// A step that ran, from its `step.finished` and what came before it.
    pub(super) fn finished(
        run_id: &str,
        step: u64,
        at: Timestamp,
        end: StepEnd,
        seen: StepTrack,
    ) -> Self {
        let started = seen.started.unwrap_or_else(|| {
            Timestamp::from_unix_micros(at.unix_micros().saturating_sub(int8(end.latency_us)))
        });
        Self {
            run_id: run_id.to_owned(),
            step_id: int8(step),
            node: end.node,
            status: end.status,
            attempt: i32::try_from(end.attempts).unwrap_or(i32::MAX),
            started_at: to_chrono(started),
            finished_at: to_chrono(at),
            latency_ms: end.latency_us as f64 / 1000.0,
            tokens_in: int8(end.usage.input_tokens),
            tokens_out: int8(end.usage.output_tokens),
            cost: end.cost.to_decimal_string(),
            cache_hit: seen.cache_hit,
            provider: seen.provider,
            model: seen.model,
            error: end.error,
        }
    }

    /// A step that did not run.
    pub(super) fn skipped(
        run_id: &str,
        step: u64,
        at: Timestamp,
        node: String,
        reason: String,
    ) -> Self {
        Self {
            run_id: run_id.to_owned(),
            step_id: int8(step),
            node,
            status: "skipped",
            attempt: 0,
            started_at: to_chrono(at),
            finished_at: to_chrono(at),
            latency_ms: 0.0,
            tokens_in: 0,
            tokens_out: 0,
            cost: "0".into(),
            cache_hit: false,
            provider: None,
            model: None,
            error: Some(reason),
        }
    }
}

/// The rows of one transaction.
#[derive(Default)]
pub(super) struct Batch {
    run_ids: Vec<String>,
    seqs: Vec<i64>,
    step_ids: Vec<Option<i64>>,
    ts: Vec<DateTime<Utc>>,
    kinds: Vec<&'static str>,
    payloads: Vec<String>,
    /// One row per step (a later row for the same step replaces it:
    /// an upsert may not touch a row twice).
    steps: Vec<StepWrite>,
    step_index: HashMap<(String, i64), usize>,
    /// One operation per run, the last one.
    runs: Vec<(String, RunOp)>,
    run_index: HashMap<String, usize>,
}

impl Batch {
    pub(super) fn with_capacity(n: usize) -> Self {
        Self {
            run_ids: Vec::with_capacity(n),
            seqs: Vec::with_capacity(n),
            step_ids: Vec::with_capacity(n),
            ts: Vec::with_capacity(n),
            kinds: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            ..Self::default()
        }
    }

    pub(super) fn event(
        &mut self,
        run_id: String,
        seq: i64,
        step_id: Option<u64>,
        ts: Timestamp,
        kind: &'static str,
        payload: String,
    ) {
        self.run_ids.push(run_id);
        self.seqs.push(seq);
        self.step_ids.push(step_id.map(int8));
        self.ts.push(to_chrono(ts));
        self.kinds.push(kind);
        self.payloads.push(payload);
    }

    pub(super) fn step(&mut self, row: StepWrite) {
        let key = (row.run_id.clone(), row.step_id);
        match self.step_index.get(&key) {
            Some(&i) => {
                if let Some(slot) = self.steps.get_mut(i) {
                    *slot = row;
                }
            }
            None => {
                self.step_index.insert(key, self.steps.len());
                self.steps.push(row);
            }
        }
    }

    /// Records `op` as the run's (replacing an earlier one of this batch:
    /// only the last bookend decides the row).
    pub(super) fn run_op(&mut self, run_id: &str, op: RunOp) {
        match self.run_index.get(run_id) {
            Some(&i) => {
                if let Some(slot) = self.runs.get_mut(i) {
                    slot.1 = op;
                }
            }
            None => {
                self.run_index.insert(run_id.to_owned(), self.runs.len());
                self.runs.push((run_id.to_owned(), op));
            }
        }
    }

    /// Writes the batch in one transaction.
    pub(super) async fn commit(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "insert into trace_events (run_id, seq, step_id, ts, kind, payload)
             select r, s, st, t, k, p::jsonb
             from unnest($1::text[], $2::int8[], $3::int8[], $4::timestamptz[], $5::text[], $6::text[])
                  as u(r, s, st, t, k, p)
             on conflict (run_id, seq) do nothing",
        )
        .bind(&self.run_ids)
        .bind(&self.seqs)
        .bind(&self.step_ids)
        .bind(&self.ts)
        .bind(&self.kinds)
        .bind(&self.payloads)
        .execute(&mut *tx)
        .await?;
        if !self.steps.is_empty() {
            self.commit_steps(&mut tx).await?;
        }
        if !self.runs.is_empty() {
            self.commit_runs(&mut tx).await?;
        }
        tx.commit().await
    }

    async fn commit_steps(&self, tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
        let s = &self.steps;
        let run_ids: Vec<&str> = s.iter().map(|r| r.run_id.as_str()).collect();
        let step_ids: Vec<i64> = s.iter().map(|r| r.step_id).collect();
        let nodes: Vec<&str> = s.iter().map(|r| r.node.as_str()).collect();
        let statuses: Vec<&str> = s.iter().map(|r| r.status).collect();
        let attempts: Vec<i32> = s.iter().map(|r| r.attempt).collect();
        let started: Vec<DateTime<Utc>> = s.iter().map(|r| r.started_at).collect();
        let finished: Vec<DateTime<Utc>> = s.iter().map(|r| r.finished_at).collect();
        let latency: Vec<f64> = s.iter().map(|r| r.latency_ms).collect();
        let tokens_in: Vec<i64> = s.iter().map(|r| r.tokens_in).collect();
        let tokens_out: Vec<i64> = s.iter().map(|r| r.tokens_out).collect();
        let costs: Vec<&str> = s.iter().map(|r| r.cost.as_str()).collect();
        let cache: Vec<bool> = s.iter().map(|r| r.cache_hit).collect();
        let providers: Vec<Option<&str>> = s.iter().map(|r| r.provider.as_deref()).collect();
        let models: Vec<Option<&str>> = s.iter().map(|r| r.model.as_deref()).collect();
        let errors: Vec<Option<&str>> = s.iter().map(|r| r.error.as_deref()).collect();
        sqlx::query(
            "insert into run_steps (run_id, step_id, node_id, status, attempt, started_at,
                 finished_at, latency_ms, tokens_input, tokens_output, cost, cache_hit,
                 provider, model, error)
             select r, s, n, st, a, sa, fa, l, ti, tou, c::numeric, ch, p, m, e
             from unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::int4[],
                  $6::timestamptz[], $7::timestamptz[], $8::float8[], $9::int8[], $10::int8[],
                  $11::text[], $12::bool[], $13::text[], $14::text[], $15::text[])
                  as u(r, s, n, st, a, sa, fa, l, ti, tou, c, ch, p, m, e)
             on conflict (run_id, step_id) do update set
                 node_id = excluded.node_id, status = excluded.status,
                 attempt = excluded.attempt, started_at = excluded.started_at,
                 finished_at = excluded.finished_at, latency_ms = excluded.latency_ms,
                 tokens_input = excluded.tokens_input, tokens_output = excluded.tokens_output,
                 cost = excluded.cost, cache_hit = excluded.cache_hit,
                 provider = excluded.provider, model = excluded.model, error = excluded.error",
        )
        .bind(run_ids)
        .bind(step_ids)
        .bind(nodes)
        .bind(statuses)
        .bind(attempts)
        .bind(started)
        .bind(finished)
        .bind(latency)
        .bind(tokens_in)
        .bind(tokens_out)
        .bind(costs)
        .bind(cache)
        .bind(providers)
        .bind(models)
        .bind(errors)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }

    async fn commit_runs(&self, tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
        let mut started_ids = Vec::new();
        let mut started_at = Vec::new();
        let mut f = FinishedColumns::default();
        for (run_id, op) in &self.runs {
            match op {
                RunOp::Started { at } => {
                    started_ids.push(run_id.as_str());
                    started_at.push(to_chrono(*at));
                }
                RunOp::Finished { at, end } => f.push(run_id, *at, end),
            }
        }
        if !started_ids.is_empty() {
            sqlx::query(
                "insert into workflow_runs as w (id, status, started_at)
                 select id, 'running', t from unnest($1::text[], $2::timestamptz[]) as u(id, t)
                 on conflict (id) do update set
                     -- A queued run's status and totals belong to the queue
                     -- (its worker records them for the whole thread).
                     status = case when w.claims > 0 then w.status else 'running' end,
                     started_at = coalesce(w.started_at, excluded.started_at),
                     finished_at = case when w.claims > 0 then w.finished_at else null end,
                     updated_at = now()",
            )
            .bind(started_ids)
            .bind(started_at)
            .execute(&mut *tx)
            .await?;
        }
        if !f.ids.is_empty() {
            sqlx::query(
                "insert into workflow_runs as w (id, status, started_at, finished_at,
                     total_tokens_input, total_tokens_output, total_cost, total_latency_ms,
                     error_summary)
                 select id, st, sa, fa, ti, tou, c::numeric, l, e::jsonb
                 from unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[],
                      $5::int8[], $6::int8[], $7::text[], $8::int8[], $9::text[])
                      as u(id, st, sa, fa, ti, tou, c, l, e)
                 on conflict (id) do update set
                     status = excluded.status,
                     started_at = coalesce(w.started_at, excluded.started_at),
                     finished_at = excluded.finished_at,
                     total_tokens_input = excluded.total_tokens_input,
                     total_tokens_output = excluded.total_tokens_output,
                     total_cost = excluded.total_cost,
                     total_latency_ms = excluded.total_latency_ms,
                     error_summary = excluded.error_summary,
                     updated_at = now()
                 -- A queued run is recorded by its worker, for its whole
                 -- thread (every claim), not by one invocation's events.
                 where w.claims = 0",
            )
            .bind(f.ids)
            .bind(f.statuses)
            .bind(f.started)
            .bind(f.finished)
            .bind(f.tokens_in)
            .bind(f.tokens_out)
            .bind(f.costs)
            .bind(f.latency_ms)
            .bind(f.errors)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}

/// The columns of the finished runs' upsert.
#[derive(Default)]
struct FinishedColumns<'a> {
    ids: Vec<&'a str>,
    statuses: Vec<&'static str>,
    started: Vec<DateTime<Utc>>,
    finished: Vec<DateTime<Utc>>,
    tokens_in: Vec<i64>,
    tokens_out: Vec<i64>,
    costs: Vec<String>,
    latency_ms: Vec<i64>,
    errors: Vec<Option<String>>,
}

impl<'a> FinishedColumns<'a> {
    fn push(&mut self, run_id: &'a str, at: Timestamp, end: &RunEnd) {
        self.ids.push(run_id);
        self.statuses.push(end.status);
        // Used only when the row has no start time yet.
        self.started.push(to_chrono(Timestamp::from_unix_micros(
            at.unix_micros().saturating_sub(int8(end.elapsed_us)),
        )));
        self.finished.push(to_chrono(at));
        self.tokens_in.push(int8(end.usage.input_tokens));
        self.tokens_out.push(int8(end.usage.output_tokens));
        self.costs.push(end.cost.to_decimal_string());
        self.latency_ms.push(int8(end.elapsed_us / 1000));
        self.errors.push(
            end.error
                .as_deref()
                .map(|m| serde_json::json!({ "message": super::queued::pg_text(m) }).to_string()),
        );
    }
}

/// The last stored `seq` of each of `run_ids` that has events.
pub(super) async fn last_seqs(
    pool: &PgPool,
    run_ids: &[String],
) -> Result<HashMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "select run_id, max(seq) from trace_events where run_id = any($1) group by run_id",
    )
    .bind(run_ids)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}
