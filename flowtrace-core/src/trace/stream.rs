//! Live event streams.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use futures::Stream;
use futures::stream::BoxStream;
use tokio::sync::broadcast;

use super::{EventKind, TraceEvent};

/// One item of a live [`EventStream`].
#[derive(Clone, Debug, PartialEq)]
pub enum StreamItem {
    /// The next event.
    Event(Arc<TraceEvent>),
    /// The subscriber fell behind and `missed` events were dropped for it.
    /// The run was not slowed down; the stream continues with newer events.
    Lagged {
        /// How many events were skipped.
        missed: u64,
    },
}

impl StreamItem {
    /// The event, if this item is one.
    pub fn event(&self) -> Option<&TraceEvent> {
        match self {
            StreamItem::Event(e) => Some(e),
            StreamItem::Lagged { .. } => None,
        }
    }
}

/// A live stream of a run's events, beginning with the run's `run.started`
/// and ending after its `run.finished`.
///
/// The run never waits for a subscriber: events go into a bounded ring
/// buffer, and a subscriber that falls more than its capacity behind gets a
/// [`StreamItem::Lagged`] telling exactly how many events it missed, then
/// the newer events.
///
/// However far behind the subscriber is (or however late it subscribed),
/// the first item is always the run's `run.started` event, kept aside by
/// the run for that purpose; a `Lagged` for what was missed comes right
/// after it. Likewise a stream that subscribed after the run ended still
/// gets `run.finished` and ends.
pub struct EventStream {
    inner: BoxStream<'static, StreamItem>,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

/// An event with its position among every event of the run (numbered from
/// 0 whether or not anyone listened), so a stream can tell exactly which
/// events it missed.
#[derive(Clone, Debug)]
pub(crate) struct Sequenced {
    pub(crate) seq: u64,
    pub(crate) event: Arc<TraceEvent>,
}

/// The top-level run's first and last events, kept for streams that missed
/// them.
#[derive(Debug, Default)]
pub(crate) struct Bookends {
    started: OnceLock<Sequenced>,
    finished: OnceLock<Sequenced>,
}

impl Bookends {
    /// Keeps `event` if it is the top-level run's `run.started` or
    /// `run.finished` (the first of each).
    pub(crate) fn keep(&self, event: &Sequenced) {
        if event.event.parent_step_id.is_some() {
            return;
        }
        let slot = match event.event.kind {
            EventKind::RunStarted { .. } => &self.started,
            EventKind::RunFinished { .. } => &self.finished,
            _ => return,
        };
        // Only the first one counts; a second would be a bug elsewhere.
        let _ = slot.set(event.clone());
    }

    /// Whether `event` is one the bookends keep (so the bus builds a
    /// [`Sequenced`] for it even when nobody listens).
    pub(crate) fn wants(event: &TraceEvent) -> bool {
        event.parent_step_id.is_none()
            && matches!(
                event.kind,
                EventKind::RunStarted { .. } | EventKind::RunFinished { .. }
            )
    }
}

/// Decrements the subscriber count when the stream is dropped.
pub(crate) struct SubscriberGuard(pub(crate) Arc<AtomicUsize>);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct StreamState {
    rx: broadcast::Receiver<Sequenced>,
    bookends: Arc<Bookends>,
    /// The sequence number of the first event emitted after subscribing.
    first_seq: u64,
    /// Every event before this one was yielded or reported missed.
    next: u64,
    /// Whether `run.started` was yielded.
    began: bool,
    done: bool,
    pending: VecDeque<StreamItem>,
    _guard: SubscriberGuard,
}

impl StreamState {
    /// Queues `s` unless it was already accounted for, with a `Lagged`
    /// before it for any events skipped since the last one.
    fn deliver(&mut self, s: Sequenced) {
        if s.seq < self.next {
            // The replayed `run.started`, met again in the channel.
            return;
        }
        if s.seq > self.next {
            self.pending.push_back(StreamItem::Lagged {
                missed: s.seq - self.next,
            });
        }
        self.next = s.seq + 1;
        // The top-level run's end closes the stream.
        if matches!(s.event.kind, EventKind::RunFinished { .. }) && s.event.parent_step_id.is_none()
        {
            self.done = true;
        }
        self.pending.push_back(StreamItem::Event(s.event));
    }

    /// Starts with the kept `run.started` once there is one.
    fn begin(&mut self) {
        if self.began {
            return;
        }
        if let Some(started) = self.bookends.started.get().cloned() {
            self.began = true;
            if started.seq < self.next {
                // Subscribed after it: replay it, and count what came
                // between it and the subscription as missed.
                self.next = started.seq;
            }
            self.deliver(started);
        }
    }

    async fn next_item(&mut self) -> Option<StreamItem> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            self.begin();
            if self.began
                && let Some(finished) = self.bookends.finished.get().cloned()
                && finished.seq < self.first_seq
            {
                // The run ended before this stream subscribed: nothing more
                // will come through the channel.
                self.deliver(finished);
                self.done = true;
                continue;
            }
            match self.rx.recv().await {
                Ok(s) => {
                    self.begin();
                    self.deliver(s);
                }
                // The next event's sequence number tells how many were missed.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => {
                    self.begin();
                    if let Some(finished) = self.bookends.finished.get().cloned() {
                        self.deliver(finished);
                    }
                    self.done = true;
                }
            }
        }
    }
}

impl EventStream {
    /// A stream over `rx`, subscribed when `first_seq` was the next event's
    /// sequence number, and counted in the bus's subscribers by `guard`.
    pub(crate) fn new(
        rx: broadcast::Receiver<Sequenced>,
        bookends: Arc<Bookends>,
        first_seq: u64,
        guard: SubscriberGuard,
    ) -> Self {
        let state = StreamState {
            rx,
            bookends,
            first_seq,
            next: first_seq,
            began: false,
            done: false,
            pending: VecDeque::new(),
            _guard: guard,
        };
        let inner = futures::stream::unfold(state, |mut st| async move {
            let item = st.next_item().await?;
            Some((item, st))
        });
        Self {
            inner: Box::pin(inner),
        }
    }
}

impl Stream for EventStream {
    type Item = StreamItem;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StreamItem>> {
        self.inner.as_mut().poll_next(cx)
    }
}
