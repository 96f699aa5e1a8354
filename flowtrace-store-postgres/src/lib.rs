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
//!
//! The tables: `workflows` (versioned), `workflow_runs` (also the run
//! queue), `run_steps`, `trace_events`, `provider_bindings`,
//! `thread_leases`, and the checkpoint tables.

mod checkpoint;
pub mod db;
pub mod error;
pub mod lease;

pub use checkpoint::{LIST_THREADS_PAGE, MAX_COMBINED, PostgresCheckpointer};
pub use db::{MIGRATOR, PgConfig, connect, migrate};
pub use error::{StoreError, StoreErrorKind, WorkflowProblem, WorkflowProblems};
pub use lease::Lease;
pub use sqlx::PgPool;
