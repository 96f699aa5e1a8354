//! The trace store: [`PostgresTraceSink`] writes every event of a run into
//! `trace_events`, its steps into `run_steps` and its totals into
//! `workflow_runs`; [`TraceStore`] reads them back, page by page, and
//! purges old runs.
//!
//! ```no_run
//! use std::sync::Arc;
//! use flowtrace_core::RunConfig;
//! use flowtrace_core::trace::TraceSink;
//! use flowtrace_store_postgres::trace::{PostgresTraceSink, TraceStore};
//!
//! # async fn demo(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! // One sink for every run of the process.
//! let sink: Arc<dyn TraceSink> = Arc::new(PostgresTraceSink::new(pool.clone()));
//! let config = RunConfig::new().run_id("run-1").shared_sink(sink.clone());
//! // ... graph.invoke(input, config).await: its events are committed when it returns.
//! # drop(config);
//! let store = TraceStore::new(pool);
//! let mut after = None;
//! loop {
//!     let page = store.events("run-1", after, 100).await?;
//!     for e in &page.events {
//!         println!("{} {}", e.seq, e.kind);
//!     }
//!     match page.next {
//!         Some(cursor) => after = Some(cursor),
//!         None => break,
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod batch;
mod purge;
mod queued;
mod records;
mod sink;
mod store;
mod writer;

pub use purge::MAX_PURGE_BATCH;
pub use records::{EventPage, PurgeReport, RunRow, RunRows, StepRow, StoredEvent};
pub use sink::{
    DEFAULT_BATCH_EVENTS, DEFAULT_BUFFER_BYTES, DEFAULT_BUFFER_EVENTS, DEFAULT_RETRY_FOR,
    MAX_BATCH_EVENTS, MAX_RETRY_DELAY, PostgresTraceSink, TraceSinkOptions,
};
pub use store::{MAX_PAGE, MAX_STEPS, TraceStore};
pub use writer::IDLE_RUN_TTL;
