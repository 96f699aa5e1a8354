//! Trace events, sinks and live streams.
//!
//! Every run emits typed [`TraceEvent`]s. Each event goes, in order, to every
//! [`TraceSink`] attached to the run (for persistence) and, when someone is
//! subscribed, to a bounded broadcast buffer behind each [`EventStream`].

mod event;
mod sink;
mod stream;
mod timeline;

pub use event::{EventKind, LogLevel, RunStatus, StepStatus, Timestamp, TraceEvent};
pub use sink::{JsonLinesSink, MemorySink, SinkError, TraceSink};
pub use stream::{EventStream, StreamItem};
pub use timeline::Timeline;

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::broadcast;

/// Fans events out to sinks and live subscribers.
pub(crate) struct EventBus {
    sinks: Vec<Arc<dyn TraceSink>>,
    live: OnceLock<broadcast::Sender<Arc<TraceEvent>>>,
    subscribers: Arc<AtomicUsize>,
    capacity: usize,
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
        }
    }

    /// A new live subscription, seeing every event emitted from now on.
    pub(crate) fn subscribe(&self) -> EventStream {
        let tx = self
            .live
            .get_or_init(|| broadcast::channel(self.capacity).0);
        EventStream::new(tx.subscribe(), self.subscribers.clone())
    }

    /// Delivers one event to every sink and, if anyone listens, to the
    /// live subscribers. Never blocks on a subscriber.
    pub(crate) fn emit(&self, event: TraceEvent) {
        for sink in &self.sinks {
            sink.record(&event);
        }
        if self.subscribers.load(Ordering::Acquire) > 0
            && let Some(tx) = self.live.get()
        {
            // An error only means every receiver is gone.
            let _ = tx.send(Arc::new(event));
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
