//! Trace sinks: where every event of a run is persisted.

use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::TraceEvent;

/// A sink could not persist or flush events.
#[derive(Debug, Clone, thiserror::Error)]
#[error("trace sink {sink:?} failed: {message}")]
#[non_exhaustive]
pub struct SinkError {
    /// The sink's name.
    pub sink: String,
    /// What went wrong.
    pub message: String,
}

impl SinkError {
    /// A new error for the sink named `sink`.
    pub fn new(sink: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            sink: sink.into(),
            message: message.into(),
        }
    }
}

/// Receives every event of every run it is attached to, for persistence.
///
/// [`record`](TraceSink::record) is called on the executor's hot path, once
/// per event, in order: it must not block (buffer the event and write it in
/// the background, or write to an in-memory buffer). The executor calls
/// [`flush`](TraceSink::flush) after the `run.finished` event and before the
/// run reports its result, so a finished run's events are durable; a failed
/// flush fails the run with [`Error::Sink`](crate::Error::Sink).
#[async_trait]
pub trait TraceSink: Send + Sync {
    /// A short name for error messages.
    fn name(&self) -> &str {
        "trace sink"
    }

    /// Takes one event. Must not block.
    fn record(&self, event: &TraceEvent);

    /// Makes every recorded event durable.
    ///
    /// # Cancel safety
    /// Dropping the future may leave events unflushed; calling `flush` again
    /// completes the work.
    async fn flush(&self) -> Result<(), SinkError>;
}

/// Writes each event as one JSON line to a writer (a file, stdout).
///
/// Lines go through a `BufWriter`; `flush` pushes them to the writer.
///
/// ```
/// use flowtrace_core::trace::JsonLinesSink;
/// let sink = JsonLinesSink::new(Vec::<u8>::new());
/// # let _ = sink;
/// ```
pub struct JsonLinesSink<W: Write + Send> {
    out: Mutex<std::io::BufWriter<W>>,
    error: Mutex<Option<String>>,
}

impl<W: Write + Send> fmt::Debug for JsonLinesSink<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLinesSink").finish_non_exhaustive()
    }
}

impl<W: Write + Send> JsonLinesSink<W> {
    /// A sink writing to `out`.
    pub fn new(out: W) -> Self {
        Self {
            out: Mutex::new(std::io::BufWriter::new(out)),
            error: Mutex::new(None),
        }
    }

    /// Flushes and returns the writer.
    pub fn into_inner(self) -> Result<W, SinkError> {
        let buf = self
            .out
            .into_inner()
            .map_err(|_| SinkError::new("json lines", "writer lock poisoned"))?;
        buf.into_inner()
            .map_err(|e| SinkError::new("json lines", e.error().to_string()))
    }

    fn remember(&self, e: std::io::Error) {
        if let Ok(mut slot) = self.error.lock() {
            slot.get_or_insert_with(|| e.to_string());
        }
    }
}

impl JsonLinesSink<std::fs::File> {
    /// A sink appending to the file at `path` (created if missing).
    pub fn create(path: impl AsRef<std::path::Path>) -> Result<Self, SinkError> {
        let path = path.as_ref();
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(Self::new)
            .map_err(|e| {
                SinkError::new("json lines", format!("cannot open {}: {e}", path.display()))
            })
    }
}

#[async_trait]
impl<W: Write + Send> TraceSink for JsonLinesSink<W> {
    fn name(&self) -> &str {
        "json lines"
    }

    fn record(&self, event: &TraceEvent) {
        let Ok(mut out) = self.out.lock() else {
            return;
        };
        let res = serde_json::to_writer(&mut *out, event)
            .map_err(std::io::Error::other)
            .and_then(|()| out.write_all(b"\n"));
        drop(out);
        if let Err(e) = res {
            self.remember(e);
        }
    }

    async fn flush(&self) -> Result<(), SinkError> {
        if let Some(e) = self.error.lock().ok().and_then(|mut s| s.take()) {
            return Err(SinkError::new("json lines", e));
        }
        let mut out = self
            .out
            .lock()
            .map_err(|_| SinkError::new("json lines", "writer lock poisoned"))?;
        out.flush()
            .map_err(|e| SinkError::new("json lines", e.to_string()))
    }
}

/// Keeps every event in memory; for tests, reports and small tools.
#[derive(Debug, Default, Clone)]
pub struct MemorySink {
    events: Arc<Mutex<Vec<TraceEvent>>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the events recorded so far.
    pub fn events(&self) -> Vec<TraceEvent> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// The `kind` names of the events recorded so far, in order.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.events
            .lock()
            .map(|e| e.iter().map(|ev| ev.kind.name()).collect())
            .unwrap_or_default()
    }

    /// Forgets every event.
    pub fn clear(&self) {
        if let Ok(mut e) = self.events.lock() {
            e.clear();
        }
    }
}

#[async_trait]
impl TraceSink for MemorySink {
    fn name(&self) -> &str {
        "memory"
    }
    fn record(&self, event: &TraceEvent) {
        if let Ok(mut e) = self.events.lock() {
            e.push(event.clone());
        }
    }
    async fn flush(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

#[async_trait]
impl<T: TraceSink + ?Sized> TraceSink for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn record(&self, event: &TraceEvent) {
        (**self).record(event)
    }
    async fn flush(&self) -> Result<(), SinkError> {
        (**self).flush().await
    }
}
