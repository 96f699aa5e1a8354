//! # flowtrace-store-postgres
//!
//! PostgreSQL for FlowTrace, so runs outgrow one process: every worker
//! shares one database for checkpoints, traces and the queue of runs.
//!
//! * [`connect`] opens a pool (optionally inside a schema of its own);
//!   [`migrate`] applies the embedded migrations. Connecting never
//!   migrates: call it once, from a deploy step or at start-up.
//! * [`lease`]: one owner per thread at a time, with fencing tokens.
//! * [`PostgresCheckpointer`]: durable checkpoints, a row per step the
//!   size of what changed, fenced by `seq` and optionally by a lease.
//! * `registry` (feature `queue`): JSON workflows, validated on the way in,
//!   versioned, soft-deleted, registered once by content; [`bindings`]:
//!   which model (and temperature) a workflow's nodes of a provider use.
//! * [`queue`] (feature `queue`): [`RunQueue`] and [`Worker`], runs
//!   queued in the database and executed by any number of worker
//!   processes, with halts, cancels and decisions from anywhere.
//! * [`trace`]: [`PostgresTraceSink`] persists every trace event, step and
//!   run total; [`TraceStore`] reads them back (paginated) and purges old runs.
//!
//! The tables: `workflows` (versioned), `workflow_runs` (also the run
//! queue), `run_steps`, `trace_events`, `provider_bindings`,
//! `thread_leases`, and the checkpoint tables.

#[cfg(feature = "queue")]
pub mod bindings;
mod checkpoint;
pub mod db;
pub mod error;
pub mod lease;
#[cfg(feature = "queue")]
pub mod queue;
#[cfg(feature = "queue")]
pub mod registry;
pub mod trace;

#[cfg(feature = "queue")]
pub use bindings::ProviderBinding;
pub use checkpoint::{LIST_THREADS_PAGE, MAX_COMBINED, PostgresCheckpointer};
pub use db::{MIGRATOR, PgConfig, connect, migrate};
pub use error::{StoreError, StoreErrorKind, WorkflowProblem, WorkflowProblems};
pub use lease::Lease;
#[cfg(feature = "queue")]
pub use queue::{
    IdlePolicy, RemoteSignal, RunQueue, RunRecord, RunState, Verdict, Worker, WorkerReport,
};
#[cfg(feature = "queue")]
pub use registry::{WorkflowRecord, WorkflowRegistry};
pub use sqlx::PgPool;
pub use trace::{PostgresTraceSink, TraceStore};
