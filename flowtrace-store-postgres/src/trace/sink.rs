//! [`PostgresTraceSink`]: the executor-facing half (record, back-pressure,
//! flush) and its options.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flowtrace_core::trace::{SinkError, TraceEvent, TraceSink};
use futures::future::BoxFuture;
use sqlx::PgPool;
use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::queued::{Message, encode};
use super::writer::Writer;

/// Events per write transaction, by default.
pub const DEFAULT_BATCH_EVENTS: usize = 2_000;
/// The most events [`TraceSinkOptions::batch_events`] accepts.
pub const MAX_BATCH_EVENTS: usize = 20_000;
/// Events waiting to be committed before runs wait, by default.
pub const DEFAULT_BUFFER_EVENTS: usize = 50_000;
/// Bytes of encoded events waiting to be committed before runs wait, by
/// default (32 MiB).
pub const DEFAULT_BUFFER_BYTES: usize = 32 << 20;
/// How long the writer retries a failing database before
/// [`flush`](TraceSink::flush) reports the failure, by default.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(30);
/// The longest wait between two attempts of a failing write.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

const SINK_NAME: &str = "postgres";

/// How a [`PostgresTraceSink`] batches and bounds its buffer.
///
/// ```
/// use std::time::Duration;
/// use flowtrace_store_postgres::trace::TraceSinkOptions;
///
/// let options = TraceSinkOptions::new()
///     .batch_events(500)
///     .buffer_events(10_000)
///     .buffer_bytes(8 << 20)
///     .retry_for(Duration::from_secs(5));
/// assert_eq!(options.get_batch_events(), 500);
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct TraceSinkOptions {
    batch_events: usize,
    buffer_events: usize,
    buffer_bytes: usize,
    retry_for: Duration,
}

impl Default for TraceSinkOptions {
    fn default() -> Self {
        Self {
            batch_events: DEFAULT_BATCH_EVENTS,
            buffer_events: DEFAULT_BUFFER_EVENTS,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            retry_for: DEFAULT_RETRY_FOR,
        }
    }
}

impl TraceSinkOptions {
    /// The defaults: [`DEFAULT_BATCH_EVENTS`], [`DEFAULT_BUFFER_EVENTS`],
    /// [`DEFAULT_BUFFER_BYTES`], [`DEFAULT_RETRY_FOR`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Most events written per transaction (1 to [`MAX_BATCH_EVENTS`];
    /// values outside are clamped). The writer takes whatever is queued up
    /// to this many, so batches grow under load and stay small when idle.
    pub fn batch_events(mut self, n: usize) -> Self {
        self.batch_events = n.clamp(1, MAX_BATCH_EVENTS);
        self
    }

    /// Events queued but not yet committed above which
    /// [`backpressure`](TraceSink::backpressure) makes runs wait (at least 1).
    pub fn buffer_events(mut self, n: usize) -> Self {
        self.buffer_events = n.max(1);
        self
    }

    /// Bytes of encoded events queued but not yet committed above which
    /// runs wait (at least 1).
    pub fn buffer_bytes(mut self, n: usize) -> Self {
        self.buffer_bytes = n.max(1);
        self
    }

    /// How long a failing write is retried before
    /// [`flush`](TraceSink::flush) reports the failure (the writer keeps
    /// retrying after that: events are never dropped).
    pub fn retry_for(mut self, d: Duration) -> Self {
        self.retry_for = d;
        self
    }

    /// Events per transaction.
    pub fn get_batch_events(&self) -> usize {
        self.batch_events
    }

    /// The buffer's bound in events.
    pub fn get_buffer_events(&self) -> usize {
        self.buffer_events
    }

    /// The buffer's bound in bytes.
    pub fn get_buffer_bytes(&self) -> usize {
        self.buffer_bytes
    }

    /// How long failures are retried before flush reports them.
    pub fn get_retry_for(&self) -> Duration {
        self.retry_for
    }
}

/// A write that kept failing for longer than the retry window.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) context: &'static str,
    pub(super) source: Arc<sqlx::Error>,
}

/// What the sink and its writer share.
pub(super) struct Shared {
    pub(super) events: AtomicUsize,
    pub(super) bytes: AtomicUsize,
    max_events: usize,
    max_bytes: usize,
    /// Woken whenever committed events leave the buffer.
    pub(super) drained: Notify,
    /// `Some` while the writer has been failing for longer than the retry
    /// window; `None` again once a write succeeds.
    pub(super) health: watch::Sender<Option<Arc<Failure>>>,
    /// Events never written: not queued (the writer had stopped) or given
    /// up on (the pool was closed, or the sink dropped, while the
    /// database kept failing). Once non-zero, every flush fails.
    pub(super) lost: AtomicU64,
    /// The failure events were given up on, if any.
    pub(super) given_up: Mutex<Option<Arc<Failure>>>,
    /// An event that could not be encoded, reported by the next flush.
    unencodable: Mutex<Option<Arc<serde_json::Error>>>,
}

impl Shared {
    fn over(&self) -> bool {
        self.events.load(Ordering::Acquire) > self.max_events
            || self.bytes.load(Ordering::Acquire) > self.max_bytes
    }

    /// `count` events of `bytes` bytes were committed.
    pub(super) fn release(&self, count: usize, bytes: usize) {
        self.events.fetch_sub(count, Ordering::AcqRel);
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.drained.notify_waiters();
    }
}

/// A [`TraceSink`] that writes every event of the runs it is attached to
/// into PostgreSQL: `trace_events` (one row per event, numbered `seq` from
/// 0 within its run), `run_steps` (one row per finished or skipped step)
/// and the run's row in `workflow_runs` (status and totals).
///
/// One sink serves any number of concurrent runs: create it once, wrap it
/// in an `Arc` and attach it to each run with
/// [`RunConfig::shared_sink`](flowtrace_core::RunConfig::shared_sink).
///
/// # How it writes
/// [`record`](TraceSink::record) encodes the event and queues it; it never
/// blocks and does no I/O. A background task (spawned by
/// [`new`](Self::new) on the current tokio runtime) takes whatever is
/// queued, up to [`TraceSinkOptions::batch_events`], and writes it in one
/// transaction with multi-row `unnest` inserts.
///
/// # Bounds and back-pressure
/// Events queued but not yet committed are bounded
/// ([`DEFAULT_BUFFER_EVENTS`] events and [`DEFAULT_BUFFER_BYTES`] bytes by
/// default). Over either bound, [`backpressure`](TraceSink::backpressure)
/// makes runs wait at their next safe point until the writer catches up:
/// nothing is dropped.
///
/// # Failures
/// A failing write (the database is down) is retried with exponential
/// backoff (up to [`MAX_RETRY_DELAY`] between attempts) and never dropped.
/// Once it has failed for longer than [`TraceSinkOptions::retry_for`],
/// every failed attempt makes the pending [`flush`](TraceSink::flush)es
/// return a [`SinkError`] whose `source()` is the database error (so the run fails with `Error::Sink`) while the
/// writer keeps retrying; when the database is back everything queued is
/// written. Events stay queued meanwhile, and runs wait on back-pressure
/// once the buffer is full.
///
/// # Run rows
/// The top-level `run.started` inserts or updates the run's
/// `workflow_runs` row (status `running`, `started_at`), leaving the
/// columns other components set (workflow, thread, input, queue columns)
/// alone; the top-level `run.finished` sets its status, `finished_at`,
/// token and cost totals, `total_latency_ms` (the run's wall time) and
/// `error_summary`. A subgraph's `run.started`/`run.finished` (events with
/// a `parent_step_id`) do not touch the row. A run id seen again later
/// (a resumed run) continues its `seq` numbering after its last stored
/// event. Two sinks writing the same run at the same time (two processes
/// running one run id) would number its events twice: an event whose
/// `(run_id, seq)` is already stored is not inserted again (which also
/// makes a retried batch idempotent). Fence such runs with a lease.
pub struct PostgresTraceSink {
    tx: mpsc::UnboundedSender<Message>,
    shared: Arc<Shared>,
}

impl fmt::Debug for PostgresTraceSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresTraceSink")
            .field("queued_events", &self.shared.events.load(Ordering::Relaxed))
            .field("queued_bytes", &self.shared.bytes.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl PostgresTraceSink {
    /// A sink writing through `pool` with the default options.
    ///
    /// Spawns the writer task on the current tokio runtime: call it from
    /// inside one. Outside a runtime the sink queues nothing and every
    /// [`flush`](TraceSink::flush) reports that it has no writer. The task
    /// ends once the sink is dropped and what it queued is written.
    pub fn new(pool: PgPool) -> Self {
        Self::with_options(pool, TraceSinkOptions::default())
    }

    /// A sink writing through `pool` with `options` (see [`new`](Self::new)).
    pub fn with_options(pool: PgPool, options: TraceSinkOptions) -> Self {
        let (health, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            events: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            max_events: options.buffer_events,
            max_bytes: options.buffer_bytes,
            drained: Notify::new(),
            health,
            lost: AtomicU64::new(0),
            given_up: Mutex::new(None),
            unencodable: Mutex::new(None),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let writer = Writer::new(pool, rx, shared.clone(), &options);
            runtime.spawn(writer.run());
        }
        // Without a runtime `rx` is dropped here: sends fail and flush says so.
        Self { tx, shared }
    }

    /// Events queued but not yet committed.
    pub fn queued_events(&self) -> usize {
        self.shared.events.load(Ordering::Acquire)
    }

    fn writer_gone(&self) -> SinkError {
        let lost = self.shared.lost.load(Ordering::Acquire);
        SinkError::new(
            SINK_NAME,
            format!(
                "the writer task is not running (no tokio runtime, or it shut down); {lost} event(s) could not be queued"
            ),
        )
    }

    /// The sticky error once events were lost.
    fn lost_error(&self) -> Option<SinkError> {
        let lost = self.shared.lost.load(Ordering::Acquire);
        if lost == 0 {
            return None;
        }
        let cause = self.shared.given_up.lock().ok().and_then(|g| g.clone());
        Some(match cause {
            Some(f) => SinkError::new(
                SINK_NAME,
                format!(
                    "{lost} event(s) were not written: {} failed after the pool was closed",
                    f.context
                ),
            )
            .with_source(f.source.clone()),
            None => self.writer_gone(),
        })
    }
}

fn failure_error(f: &Failure) -> SinkError {
    SinkError::new(
        SINK_NAME,
        format!(
            "{} keeps failing; events stay queued and are retried",
            f.context
        ),
    )
    .with_source(f.source.clone())
}

#[async_trait]
impl TraceSink for PostgresTraceSink {
    fn name(&self) -> &str {
        SINK_NAME
    }

    fn record(&self, event: &TraceEvent) {
        let queued = match encode(event) {
            Ok(q) => q,
            Err(e) => {
                if let Ok(mut slot) = self.shared.unencodable.lock() {
                    slot.get_or_insert(Arc::new(e));
                }
                return;
            }
        };
        let weight = queued.weight();
        // Counted before sending, so the writer never releases more than
        // was added.
        self.shared.events.fetch_add(1, Ordering::AcqRel);
        self.shared.bytes.fetch_add(weight, Ordering::AcqRel);
        if self.tx.send(Message::Event(queued)).is_err() {
            self.shared.release(1, weight);
            self.shared.lost.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn backpressure(&self) -> Option<BoxFuture<'_, ()>> {
        if !self.shared.over() {
            return None;
        }
        Some(Box::pin(async move {
            loop {
                let drained = self.shared.drained.notified();
                tokio::pin!(drained);
                // Registered before checking, so a wake-up in between is kept.
                drained.as_mut().enable();
                if !self.shared.over() || self.tx.is_closed() {
                    return;
                }
                drained.await;
            }
        }))
    }

    async fn flush(&self) -> Result<(), SinkError> {
        let unencodable = self
            .shared
            .unencodable
            .lock()
            .ok()
            .and_then(|mut s| s.take());
        if let Some(e) = unencodable {
            return Err(
                SinkError::new(SINK_NAME, "an event could not be encoded as JSON").with_source(e),
            );
        }
        if let Some(e) = self.lost_error() {
            return Err(e);
        }
        let mut health = self.shared.health.subscribe();
        let (reply, done) = oneshot::channel();
        if self.tx.send(Message::Flush(reply)).is_err() {
            return Err(self.writer_gone());
        }
        tokio::pin!(done);
        // A failure reported before this flush may be over: wait for the
        // writer's next attempt, which either succeeds (and answers) or
        // reports the failure again.
        health.mark_unchanged();
        loop {
            tokio::select! {
                biased;
                answer = &mut done => {
                    return match answer {
                        Ok(result) => result.map_err(|e| self.lost_error().unwrap_or(e)),
                        Err(_) => Err(self.writer_gone()),
                    };
                }
                changed = health.changed() => {
                    if let Some(failure) = health.borrow_and_update().clone() {
                        return Err(failure_error(&failure));
                    }
                    if changed.is_err() {
                        // The writer is gone; its reply (or its absence) tells.
                        return match done.await {
                            Ok(result) => result,
                            Err(_) => Err(self.writer_gone()),
                        };
                    }
                }
            }
        }
    }
}
