//! Live event streams.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// A live stream of a run's events, ending after the run's `run.finished`.
///
/// The run never waits for a subscriber: events go into a bounded ring
/// buffer, and a subscriber that falls more than its capacity behind gets a
/// [`StreamItem::Lagged`] telling how many events it missed.
pub struct EventStream {
    inner: BoxStream<'static, StreamItem>,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

/// Decrements the subscriber count when the stream is dropped.
struct SubscriberGuard(Arc<AtomicUsize>);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct StreamState {
    rx: broadcast::Receiver<Arc<TraceEvent>>,
    done: bool,
    _guard: SubscriberGuard,
}

impl EventStream {
    pub(crate) fn new(
        rx: broadcast::Receiver<Arc<TraceEvent>>,
        subscribers: Arc<AtomicUsize>,
    ) -> Self {
        subscribers.fetch_add(1, Ordering::AcqRel);
        let state = StreamState {
            rx,
            done: false,
            _guard: SubscriberGuard(subscribers),
        };
        let inner = futures::stream::unfold(state, |mut st| async move {
            if st.done {
                return None;
            }
            match st.rx.recv().await {
                Ok(ev) => {
                    // The top-level run's end closes the stream.
                    if matches!(ev.kind, EventKind::RunFinished { .. })
                        && ev.parent_step_id.is_none()
                    {
                        st.done = true;
                    }
                    Some((StreamItem::Event(ev), st))
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    Some((StreamItem::Lagged { missed }, st))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
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
