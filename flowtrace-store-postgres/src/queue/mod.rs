//! The run queue: runs of registered workflows, waiting in `workflow_runs`
//! for any number of [`Worker`]s in any number of processes.
//!
//! [`RunQueue::enqueue`] adds a run (status `queued`). Workers claim
//! queued runs with `FOR UPDATE SKIP LOCKED`, hold a lease on each
//! (renewed by a heartbeat) and run them durably on the run's own thread,
//! with a [`PostgresCheckpointer`](crate::PostgresCheckpointer) fenced by
//! the thread's lease. If a worker dies, its leases expire and another
//! worker claims the run again and resumes it from its last checkpoint: no
//! committed step runs twice.
//!
//! Humans reach a run wherever it is: [`RunQueue::halt`] and
//! [`RunQueue::cancel`] are delivered to the worker holding the run by
//! `LISTEN/NOTIFY` (and, should a notification be missed, by the next
//! heartbeat); an interrupted run waits in the database until
//! [`RunQueue::decide`] answers it, and then any worker resumes it.
//!
//! | status | meaning | leaves it |
//! |---|---|---|
//! | `queued` | waiting for a worker | a claim |
//! | `running` | held by `claimed_by` until `lease_expires_at` | the run stopping, or the lease expiring (then claimable again) |
//! | `interrupted` | waiting for a decision | [`decide`](RunQueue::decide) (back to `queued`), [`cancel`](RunQueue::cancel) |
//! | `halted` | stopped on request at a safe point | [`resume`](RunQueue::resume) (back to `queued`), [`cancel`](RunQueue::cancel) |
//! | `succeeded`, `failed`, `canceled` | finished | — |

mod claim;
mod signal;
mod worker;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use flowtrace_core::ids::RunId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;

pub use signal::RemoteSignal;
pub use worker::{IdlePolicy, Worker, WorkerReport};

use crate::error::StoreError;

/// The channel workers `LISTEN` on. Payloads are `queue` (a run became
/// claimable), `halt:<run id>` and `cancel:<run id>`.
pub const NOTIFY_CHANNEL: &str = "flowtrace_runs";

/// The largest run input [`RunQueue::enqueue`] accepts, in bytes of JSON.
pub const MAX_INPUT_BYTES: usize = 1 << 20;

/// The most runs one [`RunQueue::enqueue_many`] call adds.
pub const MAX_ENQUEUE_BATCH: usize = 10_000;

/// A run's status in `workflow_runs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunState {
    /// Waiting for a worker.
    Queued,
    /// Held by a worker.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Canceled on request.
    Canceled,
    /// Waiting for a human decision.
    Interrupted,
    /// Stopped on request at a safe point; can be resumed.
    Halted,
}

impl RunState {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Canceled => "canceled",
            RunState::Interrupted => "interrupted",
            RunState::Halted => "halted",
        }
    }

    /// The state named `s`, if any.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => RunState::Queued,
            "running" => RunState::Running,
            "succeeded" => RunState::Succeeded,
            "failed" => RunState::Failed,
            "canceled" => RunState::Canceled,
            "interrupted" => RunState::Interrupted,
            "halted" => RunState::Halted,
            _ => return None,
        })
    }

    /// Whether the run is over for good.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Canceled
        )
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A question an interrupted run waits on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PendingInterrupt {
    /// The interrupt's id (what a decision answers).
    pub id: String,
    /// The node waiting.
    pub node: String,
    /// What the node shows the human.
    pub payload: Value,
}

/// A human's answer to an interrupted run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verdict {
    /// Continue, handing the node this payload.
    Approve(Value),
    /// Do not run the interrupted node.
    Reject,
}

/// A decision stored for a worker: which interrupt, what, and who.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StoredDecision {
    /// The interrupt it answers.
    pub interrupt: String,
    /// The answer.
    pub verdict: Verdict,
    /// Who decided.
    pub by: String,
}

/// A run of the queue, as stored.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RunRecord {
    /// The run id (also the run id of every event it emits).
    pub id: String,
    /// The workflow it runs.
    pub workflow_id: Option<String>,
    /// The workflow's version.
    pub workflow_version: Option<i32>,
    /// Its durable thread.
    pub thread_id: Option<String>,
    /// Its status.
    pub status: RunState,
    /// Its input.
    pub input: Option<Value>,
    /// The worker holding it, while running.
    pub claimed_by: Option<String>,
    /// How many times a worker claimed it.
    pub claims: i32,
    /// What has been asked of it and not yet acted on.
    pub requested: Option<String>,
    /// The questions it waits on, when interrupted.
    pub interrupts: Vec<PendingInterrupt>,
    /// The summary of its last stop (the same JSON shape as
    /// `run_workflow --json`).
    pub summary: Option<Value>,
    /// When it was queued (or re-queued by a decision).
    pub enqueued_at: DateTime<Utc>,
    /// When a worker first started it.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Enqueues runs and delivers human requests to them.
#[derive(Clone, Debug)]
pub struct RunQueue {
    pool: PgPool,
}

const RUN_COLUMNS: &str = "id, workflow_id, workflow_version, thread_id, status, input, \
    claimed_by, claims, requested, interrupts, summary, enqueued_at, started_at, finished_at";

type RunRow = (
    String,
    Option<String>,
    Option<i32>,
    Option<String>,
    String,
    Option<Value>,
    Option<String>,
    i32,
    Option<String>,
    Option<Value>,
    Option<Value>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

fn run_record(row: RunRow) -> Result<RunRecord, StoreError> {
    let status = RunState::parse(&row.4).ok_or_else(|| StoreError::Corrupt {
        message: format!("run {:?} has the unknown status {:?}", row.0, row.4),
        source: None,
    })?;
    let interrupts = match row.9 {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v).map_err(|e| StoreError::Corrupt {
            message: format!("run {:?}: its pending interrupts", row.0),
            source: Some(Box::new(e)),
        })?,
    };
    Ok(RunRecord {
        id: row.0,
        workflow_id: row.1,
        workflow_version: row.2,
        thread_id: row.3,
        status,
        input: row.5,
        claimed_by: row.6,
        claims: row.7,
        requested: row.8,
        interrupts,
        summary: row.10,
        enqueued_at: row.11,
        started_at: row.12,
        finished_at: row.13,
    })
}

impl RunQueue {
    /// A queue over `pool` (migrated with [`migrate`](crate::migrate)).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Queues a run of version `version` of workflow `workflow_id` with
    /// `input`; returns its run id (its thread has the same id).
    ///
    /// # Errors
    ///
    /// [`StoreError::WorkflowNotFound`] when there is no such (undeleted)
    /// version; [`StoreError::LimitExceeded`] for an input over
    /// [`MAX_INPUT_BYTES`]. Nothing is written then.
    pub async fn enqueue(
        &self,
        workflow_id: &str,
        version: i32,
        input: Value,
    ) -> Result<String, StoreError> {
        let mut ids = self
            .enqueue_many(workflow_id, version, std::iter::once(input))
            .await?;
        ids.pop()
            .ok_or_else(|| StoreError::InvalidRequest("no run was queued".into()))
    }

    /// Queues one run per input, in one statement; returns their ids in
    /// input order. All or nothing.
    ///
    /// # Errors
    ///
    /// As [`enqueue`](Self::enqueue), and [`StoreError::LimitExceeded`] for
    /// more than [`MAX_ENQUEUE_BATCH`] inputs.
    pub async fn enqueue_many(
        &self,
        workflow_id: &str,
        version: i32,
        inputs: impl IntoIterator<Item = Value>,
    ) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        let mut texts = Vec::new();
        for input in inputs {
            if texts.len() == MAX_ENQUEUE_BATCH {
                return Err(StoreError::LimitExceeded {
                    what: "runs queued in one call",
                    limit: MAX_ENQUEUE_BATCH as u64,
                });
            }
            let text = serde_json::to_string(&input).map_err(|e| StoreError::Corrupt {
                message: "serializing a run input".into(),
                source: Some(Box::new(e)),
            })?;
            if text.len() > MAX_INPUT_BYTES {
                return Err(StoreError::LimitExceeded {
                    what: "run input bytes",
                    limit: MAX_INPUT_BYTES as u64,
                });
            }
            ids.push(RunId::generate().as_str().to_owned());
            texts.push(text);
        }
        if ids.is_empty() {
            return Ok(ids);
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::db("starting to enqueue"))?;
        let exists: Option<i32> = sqlx::query_scalar(
            "select version from workflows where id = $1 and version = $2 and not deleted",
        )
        .bind(workflow_id)
        .bind(version)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db("looking the workflow up"))?;
        if exists.is_none() {
            return Err(StoreError::WorkflowNotFound {
                id: workflow_id.to_owned(),
                version: Some(version),
            });
        }
        sqlx::query(
            "insert into workflow_runs (id, workflow_id, workflow_version, thread_id, status, input, triggered_by)
             select id, $3, $4, id, 'queued', input::jsonb, 'queue'
             from unnest($1::text[], $2::text[]) as t(id, input)",
        )
        .bind(&ids)
        .bind(&texts)
        .bind(workflow_id)
        .bind(version)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db("queuing runs"))?;
        notify(&mut tx, "queue").await?;
        tx.commit()
            .await
            .map_err(StoreError::db("committing the queued runs"))?;
        Ok(ids)
    }

    /// The run `run_id`.
    ///
    /// # Errors
    ///
    /// [`StoreError::RunNotFound`] when there is no such run.
    pub async fn get(&self, run_id: &str) -> Result<RunRecord, StoreError> {
        let row: Option<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "select {RUN_COLUMNS} from workflow_runs where id = $1"
        )))
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("reading a run"))?;
        match row {
            Some(row) => run_record(row),
            None => Err(StoreError::RunNotFound {
                run_id: run_id.to_owned(),
            }),
        }
    }

    /// How many runs are in each status.
    pub async fn counts(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("select status, count(*) from workflow_runs group by status")
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::db("counting runs"))?;
        Ok(rows.into_iter().collect())
    }

    /// Answers an interrupted run: `verdict` for `interrupt` (or, when
    /// `None`, for every question it waits on), recorded as decided `by`.
    /// The run goes back to the queue and the next free worker resumes it.
    /// Returns the interrupts answered.
    ///
    /// # Errors
    ///
    /// [`StoreError::RunNotFound`]; [`StoreError::WrongState`] when the run
    /// is not interrupted, was already answered, or does not wait on
    /// `interrupt`. Nothing is written then.
    pub async fn decide(
        &self,
        run_id: &str,
        interrupt: Option<&str>,
        verdict: Verdict,
        by: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::db("starting a decision"))?;
        let row: Option<(String, Option<Value>, Option<Value>)> = sqlx::query_as(
            "select status, interrupts, decisions from workflow_runs where id = $1 for update",
        )
        .bind(run_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::db("reading the run to decide"))?;
        let Some((status, interrupts, decisions)) = row else {
            return Err(StoreError::RunNotFound {
                run_id: run_id.to_owned(),
            });
        };
        let wrong = |message: String| StoreError::WrongState {
            run_id: run_id.to_owned(),
            status: status.clone(),
            message,
        };
        if status != RunState::Interrupted.as_str() {
            return Err(wrong("only an interrupted run takes a decision".into()));
        }
        if decisions.is_some_and(|d| !d.is_null()) {
            return Err(wrong("it was already answered".into()));
        }
        let pending: Vec<PendingInterrupt> = match interrupts {
            Some(v) if !v.is_null() => {
                serde_json::from_value(v).map_err(|e| StoreError::Corrupt {
                    message: format!("run {run_id:?}: its pending interrupts"),
                    source: Some(Box::new(e)),
                })?
            }
            _ => Vec::new(),
        };
        let answered: Vec<String> = match interrupt {
            Some(id) => {
                if !pending.iter().any(|p| p.id == id) {
                    return Err(wrong(format!("it does not wait on interrupt {id:?}")));
                }
                vec![id.to_owned()]
            }
            None => pending.iter().map(|p| p.id.clone()).collect(),
        };
        if answered.is_empty() {
            return Err(wrong("it waits on no question".into()));
        }
        let stored: Vec<StoredDecision> = answered
            .iter()
            .map(|id| StoredDecision {
                interrupt: id.clone(),
                verdict: verdict.clone(),
                by: by.to_owned(),
            })
            .collect();
        let stored = serde_json::to_value(&stored).map_err(|e| StoreError::Corrupt {
            message: "serializing a decision".into(),
            source: Some(Box::new(e)),
        })?;
        sqlx::query(
            "update workflow_runs set decisions = $2, status = 'queued', enqueued_at = now(),
                updated_at = now()
             where id = $1",
        )
        .bind(run_id)
        .bind(stored)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::db("storing a decision"))?;
        notify(&mut tx, "queue").await?;
        tx.commit()
            .await
            .map_err(StoreError::db("committing a decision"))?;
        Ok(answered)
    }

    /// Asks the run to halt at its next safe point: at once when it waits
    /// in the queue, otherwise through the worker holding it.
    ///
    /// # Errors
    ///
    /// [`StoreError::RunNotFound`]; [`StoreError::WrongState`] for a run
    /// that is finished, halted or interrupted.
    pub async fn halt(&self, run_id: &str) -> Result<RunState, StoreError> {
        self.request(run_id, "halt").await
    }

    /// Cancels the run: at once when it is not running, otherwise through
    /// the worker holding it (it stops at once, keeping what it committed).
    ///
    /// # Errors
    ///
    /// [`StoreError::RunNotFound`]; [`StoreError::WrongState`] for a
    /// finished run.
    pub async fn cancel(&self, run_id: &str) -> Result<RunState, StoreError> {
        self.request(run_id, "cancel").await
    }

    /// Puts a halted run back in the queue, to be resumed from its last
    /// checkpoint by the next free worker.
    ///
    /// # Errors
    ///
    /// [`StoreError::RunNotFound`]; [`StoreError::WrongState`] when it is
    /// not halted.
    pub async fn resume(&self, run_id: &str) -> Result<RunState, StoreError> {
        self.request(run_id, "resume").await
    }

    /// Applies `what` (halt, cancel, resume); returns the run's status
    /// afterwards (`running` when a worker has yet to act on it).
    async fn request(&self, run_id: &str, what: &str) -> Result<RunState, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(StoreError::db("starting a request"))?;
        let status: Option<String> =
            sqlx::query_scalar("select status from workflow_runs where id = $1 for update")
                .bind(run_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::db("reading the run"))?;
        let Some(status) = status else {
            return Err(StoreError::RunNotFound {
                run_id: run_id.to_owned(),
            });
        };
        let state = RunState::parse(&status).ok_or_else(|| StoreError::Corrupt {
            message: format!("run {run_id:?} has the unknown status {status:?}"),
            source: None,
        })?;
        let wrong = |message: &str| StoreError::WrongState {
            run_id: run_id.to_owned(),
            status: status.clone(),
            message: message.to_owned(),
        };
        // What to set: a new status now, or a request for the holder.
        let (set_status, ask): (Option<RunState>, bool) = match (what, state) {
            (_, s) if s.is_finished() => return Err(wrong("the run is finished")),
            ("halt", RunState::Queued) => (Some(RunState::Halted), false),
            ("halt", RunState::Running) => (None, true),
            ("halt", _) => return Err(wrong("only a queued or running run can halt")),
            ("cancel", RunState::Running) => (None, true),
            ("cancel", _) => (Some(RunState::Canceled), false),
            ("resume", RunState::Halted) => (Some(RunState::Queued), false),
            ("resume", _) => return Err(wrong("only a halted run can resume")),
            _ => {
                return Err(StoreError::InvalidRequest(format!(
                    "unknown request {what:?}"
                )));
            }
        };
        if let Some(new) = set_status {
            let finished = new.is_finished();
            sqlx::query(
                "update workflow_runs set status = $2, requested = null, updated_at = now(),
                    enqueued_at = case when $2 = 'queued' then now() else enqueued_at end,
                    finished_at = case when $3 then now() else finished_at end
                 where id = $1",
            )
            .bind(run_id)
            .bind(new.as_str())
            .bind(finished)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("updating the run"))?;
            if new == RunState::Queued {
                notify(&mut tx, "queue").await?;
            }
        }
        if ask {
            sqlx::query(
                "update workflow_runs set requested = $2, updated_at = now() where id = $1",
            )
            .bind(run_id)
            .bind(what)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::db("asking the run's worker"))?;
            notify(&mut tx, &format!("{what}:{run_id}")).await?;
        }
        tx.commit()
            .await
            .map_err(StoreError::db("committing a request"))?;
        Ok(set_status.unwrap_or(state))
    }
}

/// Sends `payload` on [`NOTIFY_CHANNEL`] when the transaction commits.
async fn notify(conn: &mut sqlx::PgConnection, payload: &str) -> Result<(), StoreError> {
    sqlx::query("select pg_notify($1, $2)")
        .bind(NOTIFY_CHANNEL)
        .bind(payload)
        .execute(conn)
        .await
        .map_err(StoreError::db("notifying workers"))?;
    Ok(())
}
