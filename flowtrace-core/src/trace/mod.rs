//! Trace events, sinks and live streams.
//!
//! Every run emits typed [`TraceEvent`]s. Each event goes, in order, to every
//! [`TraceSink`] attached to the run (for persistence) and, when someone is
//! subscribed, to a bounded broadcast buffer behind each [`EventStream`].

mod event;
mod record;
mod sink;
mod stream;
mod timeline;

pub use event::{EventKind, LogLevel, RunStatus, StepStatus, Timestamp, TraceEvent};
pub use record::{ErrorSummary, RunSummary, StepRecord};
pub use sink::{JSON_LINES_QUEUE_BYTES, JsonLinesSink, MemorySink, SinkError, TraceSink};
pub use stream::{EventStream, StreamItem};
pub use timeline::Timeline;

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::broadcast;

use stream::{Bookends, Sequenced, SubscriberGuard};

/// Fans events out to sinks and live subscribers.
pub(crate) struct EventBus {
    sinks: Vec<Arc<dyn TraceSink>>,
    live: OnceLock<broadcast::Sender<Sequenced>>,
    subscribers: Arc<AtomicUsize>,
    capacity: usize,
    /// The next event's sequence number. Held while an event is numbered
    /// and sent, and while a subscriber joins, so numbers follow the order
    /// of the channel and a subscriber knows exactly where it came in.
    next_seq: Mutex<u64>,
    /// The top-level run's `run.started` and `run.finished`.
    bookends: Arc<Bookends>,
}

impl fmt::Debug for EventBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventBus")
            .field("sinks", &self.sinks.len())
            .field("subscribers", &self.subscribers.load(Ordering::Relaxed))
            .finish()
    }
}

impl EventBus {
    pub(crate) fn new(sinks: Vec<Arc<dyn TraceSink>>, capacity: usize) -> Self {
        Self {
            sinks,
            live: OnceLock::new(),
            subscribers: Arc::new(AtomicUsize::new(0)),
            capacity: capacity.max(1),
            next_seq: Mutex::new(0),
            bookends: Arc::default(),
        }
    }

    fn lock_seq(&self) -> std::sync::MutexGuard<'_, u64> {
        // A plain counter: a poisoned lock still holds a valid number.
        self.next_seq.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new live subscription. It begins with the run's `run.started`
    /// (replayed if it was emitted before), then every event emitted from
    /// now on, with a `Lagged` for the ones in between.
    pub(crate) fn subscribe(&self) -> EventStream {
        let tx = self
            .live
            .get_or_init(|| broadcast::channel(self.capacity).0);
        let seq = self.lock_seq();
        let rx = tx.subscribe();
        self.subscribers.fetch_add(1, Ordering::AcqRel);
        let guard = SubscriberGuard(self.subscribers.clone());
        let first_seq = *seq;
        drop(seq);
        EventStream::new(rx, self.bookends.clone(), first_seq, guard)
    }

    /// Whether the next event (not one of the top-level run's bookends,
    /// which [`emit`](Self::emit) always keeps) has anyone to receive it.
    /// If not, it is numbered as if it had been emitted, so a stream that
    /// subscribes later counts exactly the events it missed, and the caller
    /// skips building it.
    pub(crate) fn wants_event(&self) -> bool {
        if !self.sinks.is_empty() {
            return true;
        }
        // Checked under the numbering lock, as `subscribe` joins under it.
        let mut next = self.lock_seq();
        if self.subscribers.load(Ordering::Acquire) > 0 {
            return true;
        }
        *next += 1;
        false
    }

    /// Delivers one event to every sink and, if anyone listens, to the
    /// live subscribers. Never blocks on a subscriber.
    pub(crate) fn emit(&self, event: TraceEvent) {
        for sink in &self.sinks {
            sink.record(&event);
        }
        let mut next = self.lock_seq();
        let seq = *next;
        *next += 1;
        let live = self.subscribers.load(Ordering::Acquire) > 0;
        if !live && !Bookends::wants(&event) {
            return;
        }
        let event = Sequenced {
            seq,
            event: Arc::new(event),
        };
        self.bookends.keep(&event);
        if live && let Some(tx) = self.live.get() {
            // An error only means every receiver is gone.
            let _ = tx.send(event);
        }
    }

    /// Waits while a sink is over its buffer bound (see
    /// [`TraceSink::backpressure`]), or until `cancel` fires. Allocation-free
    /// when every sink has room.
    pub(crate) async fn backpressure(&self, cancel: &tokio_util::sync::CancellationToken) {
        for sink in &self.sinks {
            if let Some(wait) = sink.backpressure() {
                tokio::select! {
                    () = wait => {}
                    () = cancel.cancelled() => return,
                }
            }
        }
    }

    /// Flushes every sink; reports the first failure after trying them all.
    pub(crate) async fn flush(&self) -> Result<(), SinkError> {
        let mut first = None;
        for sink in &self.sinks {
            if let Err(e) = sink.flush().await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}
