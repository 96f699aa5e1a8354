//! Trace events, sinks and live streams.
//!
//! Every run emits typed [`TraceEvent`]s. Each event goes, in order, to every
//! [`TraceSink`] attached to the run (for persistence) and, when someone is
//! subscribed, to a bounded broadcast buffer behind each [`EventStream`].

mod event;
mod record;
mod redact;
mod sink;
mod stream;
mod timeline;

pub use event::{CacheOutcome, EventKind, LogLevel, RunStatus, StepStatus, Timestamp, TraceEvent};
pub use record::{ErrorSummary, RunSummary, StepRecord};
pub use redact::EventRedactor;
pub use sink::{JSON_LINES_QUEUE_BYTES, JsonLinesSink, MemorySink, SinkError, TraceSink};
pub use stream::{EventStream, StreamItem};
pub use timeline::Timeline;

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::broadcast;

use stream::{Bookends, Sequenced, SubscriberGuard};

/// Set in [`EventBus::next_seq`] once anyone subscribed.
const LIVE: u64 = 1 << 63;

/// Fans events out to sinks and live subscribers.
pub(crate) struct EventBus {
    sinks: Vec<Arc<dyn TraceSink>>,
    redactor: Option<Arc<dyn EventRedactor>>,
    live: OnceLock<broadcast::Sender<Sequenced>>,
    subscribers: Arc<AtomicUsize>,
    capacity: usize,
    /// The next event's sequence number, with [`LIVE`] set once anyone
    /// subscribed. Until then events are numbered without a lock.
    next_seq: AtomicU64,
    /// Held while a subscriber joins and, once anyone subscribed, while an
    /// event is numbered and sent, so numbers follow the order of the
    /// channel and a subscriber knows exactly where it came in.
    sending: Mutex<()>,
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
            redactor: None,
            live: OnceLock::new(),
            subscribers: Arc::new(AtomicUsize::new(0)),
            capacity: capacity.max(1),
            next_seq: AtomicU64::new(0),
            sending: Mutex::new(()),
            bookends: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // Guards no data: a poisoned lock is still a lock.
        self.sending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Numbers an event without the lock if nobody ever subscribed (then
    /// nobody can be waiting for it); `false` once someone did.
    fn number_unheard(&self) -> bool {
        let mut current = self.next_seq.load(Ordering::Acquire);
        loop {
            if current & LIVE != 0 {
                return false;
            }
            match self.next_seq.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }

    /// Numbers the next event (call with the lock held).
    fn number(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::AcqRel) & !LIVE
    }

    /// A new live subscription. It begins with the run's `run.started`
    /// (replayed if it was emitted before), then every event emitted from
    /// now on, with a `Lagged` for the ones in between.
    pub(crate) fn subscribe(&self) -> EventStream {
        let tx = self
            .live
            .get_or_init(|| broadcast::channel(self.capacity).0);
        let held = self.lock();
        let rx = tx.subscribe();
        self.subscribers.fetch_add(1, Ordering::AcqRel);
        let guard = SubscriberGuard(self.subscribers.clone());
        // From now on every event is numbered under the lock.
        let first_seq = self.next_seq.fetch_or(LIVE, Ordering::AcqRel) & !LIVE;
        drop(held);
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
        if self.number_unheard() {
            return false;
        }
        // Checked under the lock, as `subscribe` joins under it.
        let _held = self.lock();
        if self.subscribers.load(Ordering::Acquire) > 0 {
            return true;
        }
        self.number();
        false
    }

    /// Delivers one event to every sink and, if anyone listens, to the
    /// live subscribers. Never blocks on a subscriber.
    /// Sets the hook that rewrites every event before it is delivered.
    pub(crate) fn with_redactor(mut self, redactor: Option<Arc<dyn EventRedactor>>) -> Self {
        self.redactor = redactor;
        self
    }

    #[inline]
    pub(crate) fn emit(&self, mut event: TraceEvent) {
        if let Some(redactor) = &self.redactor {
            redactor.redact(&mut event);
        }
        for sink in &self.sinks {
            sink.record(&event);
        }
        let bookend = Bookends::wants(&event);
        if !bookend && self.number_unheard() {
            return;
        }
        self.send(event, bookend);
    }

    /// Numbers `event` under the lock and sends it to the live subscribers
    /// (keeping it if it is a bookend).
    fn send(&self, event: TraceEvent, bookend: bool) {
        let _held = self.lock();
        let seq = self.number();
        let live = self.subscribers.load(Ordering::Acquire) > 0;
        if !live && !bookend {
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

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::ids::RunId;

    fn event(kind: EventKind) -> TraceEvent {
        TraceEvent {
            ts: event::Timestamp::now(),
            run_id: RunId::new("r"),
            step_id: None,
            parent_step_id: None,
            node: None,
            attempt: 0,
            kind,
        }
    }

    fn log(message: &str) -> EventKind {
        EventKind::Log {
            level: LogLevel::Info,
            message: message.into(),
        }
    }

    #[tokio::test]
    async fn events_nobody_hears_are_not_built_but_still_counted() {
        let bus = EventBus::new(Vec::new(), 16);
        bus.emit(event(EventKind::RunStarted { graph: "g".into() }));
        // Nobody listens: the caller is told not to build the next two.
        assert!(!bus.wants_event());
        assert!(!bus.wants_event());
        let mut stream = bus.subscribe();
        assert!(bus.wants_event());
        bus.emit(event(log("heard")));
        drop(bus);
        let items: Vec<StreamItem> = stream.by_ref().collect().await;
        assert!(matches!(
            items[0].event().map(|e| &e.kind),
            Some(EventKind::RunStarted { .. })
        ));
        // The two unbuilt events are reported missed, as if emitted.
        assert_eq!(items[1], StreamItem::Lagged { missed: 2 });
        assert!(matches!(
            items[2].event().map(|e| &e.kind),
            Some(EventKind::Log { message, .. }) if message == "heard"
        ));
        assert_eq!(items.len(), 3);
    }

    #[test]
    fn a_sink_wants_every_event() {
        let bus = EventBus::new(vec![Arc::new(MemorySink::new())], 16);
        assert!(bus.wants_event());
    }
}
