//! The sink's background writer: numbers events within their runs, follows
//! each step and run for their rows, and commits batches, retrying failures.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use flowtrace_core::trace::SinkError;
use flowtrace_core::trace::Timestamp;
use sqlx::PgPool;
use tokio::sync::mpsc;

use super::batch::{Batch, RunOp, StepWrite, last_seqs};
use super::queued::{Fact, Message, Queued};
use super::sink::{Failure, MAX_RETRY_DELAY, Shared, TraceSinkOptions};

/// A run the writer has not heard from for this long is forgotten (its
/// events are committed; should it continue, its numbering is read back
/// from the table). Bounds the writer's memory when runs stop without a
/// `run.finished` (a dropped run future).
pub const IDLE_RUN_TTL: Duration = Duration::from_secs(600);

/// The first wait after a failed write; doubled up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(50);

/// What the writer follows of a run between batches.
struct RunTrack {
    /// The next event's `seq`.
    next_seq: i64,
    /// Steps started and not finished.
    steps: HashMap<u64, StepTrack>,
    /// Its top-level `run.finished` was seen: forget it once committed.
    finished: bool,
    last_seen: Instant,
}

/// What the writer follows of a step until it finishes.
#[derive(Default)]
pub(super) struct StepTrack {
    pub(super) started: Option<Timestamp>,
    pub(super) provider: Option<String>,
    pub(super) model: Option<String>,
    pub(super) cache_hit: bool,
}

pub(super) struct Writer {
    pool: PgPool,
    rx: mpsc::UnboundedReceiver<Message>,
    shared: Arc<Shared>,
    batch_events: usize,
    retry_for: Duration,
    runs: HashMap<String, RunTrack>,
    last_sweep: Instant,
}

impl Writer {
    pub(super) fn new(
        pool: PgPool,
        rx: mpsc::UnboundedReceiver<Message>,
        shared: Arc<Shared>,
        options: &TraceSinkOptions,
    ) -> Self {
        Self {
            pool,
            rx,
            shared,
            batch_events: options.get_batch_events(),
            retry_for: options.get_retry_for(),
            runs: HashMap::new(),
            last_sweep: Instant::now(),
        }
    }

    /// Writes until the sink is dropped and everything it queued is written.
    pub(super) async fn run(mut self) {
        let mut messages = Vec::with_capacity(self.batch_events);
        loop {
            messages.clear();
            if self.rx.recv_many(&mut messages, self.batch_events).await == 0 {
                return;
            }
            let mut flushes = Vec::new();
            let mut events = Vec::with_capacity(messages.len());
            for message in messages.drain(..) {
                match message {
                    Message::Event(q) => events.push(q),
                    Message::Flush(reply) => flushes.push(reply),
                }
            }
            let mut failed = None;
            if !events.is_empty() {
                let count = events.len();
                let bytes: usize = events.iter().map(Queued::weight).sum();
                if let Err(failure) = self.write(events).await {
                    tracing::error!(
                        events = count,
                        context = failure.context,
                        error = %failure.source,
                        "trace sink: giving up on events (the pool is closed or the sink dropped)"
                    );
                    self.shared.lost.fetch_add(count as u64, Ordering::AcqRel);
                    if let Ok(mut slot) = self.shared.given_up.lock() {
                        *slot = Some(failure.clone());
                    }
                    failed = Some(failure);
                }
                self.shared.release(count, bytes);
            }
            // Every event queued before these flushes is committed now
            // (or was given up on).
            for reply in flushes {
                let _ = reply.send(match &failed {
                    None => Ok(()),
                    Some(f) => Err(SinkError::new("postgres", "events were given up on")
                        .with_source(f.source.clone())),
                });
            }
            self.sweep();
        }
    }

    /// Commits `events`, retrying until it succeeds; gives up only when
    /// nothing can succeed any more (see [`retry`](Self::retry)).
    async fn write(&mut self, events: Vec<Queued>) -> Result<(), Arc<Failure>> {
        let mut unknown: Vec<String> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for q in &events {
            if !self.runs.contains_key(&q.run_id) && seen.insert(&q.run_id) {
                unknown.push(q.run_id.clone());
            }
        }
        drop(seen);
        if !unknown.is_empty() {
            let pool = self.pool.clone();
            let last = self
                .retry("reading the runs' last event numbers", || {
                    last_seqs(&pool, &unknown)
                })
                .await?;
            let now = Instant::now();
            for run_id in unknown {
                let next_seq = last.get(&run_id).map_or(0, |s| s.saturating_add(1));
                self.runs.insert(
                    run_id,
                    RunTrack {
                        next_seq,
                        steps: HashMap::new(),
                        finished: false,
                        last_seen: now,
                    },
                );
            }
        }
        let batch = self.assemble(events);
        let pool = self.pool.clone();
        let committed = self
            .retry("writing trace events", || batch.commit(&pool))
            .await;
        self.runs.retain(|_, r| !r.finished);
        committed
    }

    /// Numbers the events and builds their rows (no I/O).
    fn assemble(&mut self, events: Vec<Queued>) -> Batch {
        let now = Instant::now();
        let mut batch = Batch::with_capacity(events.len());
        for q in events {
            let Queued {
                run_id,
                step_id,
                nested,
                ts,
                kind,
                payload,
                fact,
            } = q;
            let track = self.runs.entry(run_id.clone()).or_insert_with(|| RunTrack {
                next_seq: 0,
                steps: HashMap::new(),
                finished: false,
                last_seen: now,
            });
            track.last_seen = now;
            track.finished = false;
            let seq = track.next_seq;
            track.next_seq = seq.saturating_add(1);
            match fact {
                Fact::None => {}
                Fact::RunStarted if !nested => batch.run_op(&run_id, RunOp::Started { at: ts }),
                Fact::RunFinished(end) if !nested => {
                    track.finished = true;
                    batch.run_op(&run_id, RunOp::Finished { at: ts, end });
                }
                Fact::RunStarted | Fact::RunFinished(_) => {}
                Fact::StepStarted => {
                    if let Some(step) = step_id {
                        track.steps.entry(step).or_default().started = Some(ts);
                    }
                }
                Fact::Call {
                    provider,
                    model,
                    cache_hit,
                } => {
                    if let Some(step) = step_id {
                        let s = track.steps.entry(step).or_default();
                        s.provider = Some(provider);
                        if !model.is_empty() {
                            s.model = Some(model);
                        }
                        s.cache_hit |= cache_hit;
                    }
                }
                Fact::StepFinished(end) => {
                    if let Some(step) = step_id {
                        let seen = track.steps.remove(&step).unwrap_or_default();
                        batch.step(StepWrite::finished(&run_id, step, ts, *end, seen));
                    }
                }
                Fact::StepSkipped { node, reason } => {
                    if let Some(step) = step_id {
                        track.steps.remove(&step);
                        batch.step(StepWrite::skipped(&run_id, step, ts, node, reason));
                    }
                }
            }
            batch.event(run_id, seq, step_id, ts, kind, payload);
        }
        batch
    }

    /// Runs `attempt` until it succeeds, waiting longer after each failure
    /// (up to [`MAX_RETRY_DELAY`]); once it has failed for longer than the
    /// retry window, flushes report the failure until a write succeeds.
    /// Gives up (`Err`) only past the retry window once the pool is closed
    /// or the sink dropped: then nothing could ever succeed or wait.
    async fn retry<T, F, Fut>(
        &self,
        context: &'static str,
        mut attempt: F,
    ) -> Result<T, Arc<Failure>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let mut first_failure: Option<Instant> = None;
        let mut delay = FIRST_RETRY_DELAY;
        loop {
            match attempt().await {
                Ok(value) => {
                    if first_failure.is_some() {
                        self.shared.health.send_replace(None);
                    }
                    return Ok(value);
                }
                Err(e) => {
                    let since = *first_failure.get_or_insert_with(Instant::now);
                    tracing::warn!(error = %e, context, "trace sink: write failed; retrying");
                    if since.elapsed() >= self.retry_for {
                        let failure = Arc::new(Failure {
                            context,
                            source: Arc::new(e),
                        });
                        self.shared.health.send_replace(Some(failure.clone()));
                        if self.pool.is_closed() || self.rx.is_closed() {
                            return Err(failure);
                        }
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
            }
        }
    }

    /// Forgets runs not heard from for [`IDLE_RUN_TTL`] (checked once a
    /// minute at most).
    fn sweep(&mut self) {
        let now = Instant::now();
        if now.saturating_duration_since(self.last_sweep) < Duration::from_secs(60) {
            return;
        }
        self.last_sweep = now;
        self.runs
            .retain(|_, r| now.saturating_duration_since(r.last_seen) < IDLE_RUN_TTL);
    }
}
