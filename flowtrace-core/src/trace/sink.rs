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
    /// The underlying error (I/O, a database driver), when there is one.
    #[source]
    pub source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl SinkError {
    /// A new error for the sink named `sink`.
    pub fn new(sink: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            sink: sink.into(),
            message: message.into(),
            source: None,
        }
    }

    /// Records the underlying error as this error's `source()`.
    pub fn with_source(mut self, source: Arc<dyn std::error::Error + Send + Sync>) -> Self {
        self.source = Some(source);
        self
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

    /// Back-pressure: `None` when the sink has room (the common case, and
    /// the default), or a future that resolves once its buffer is back
    /// under its bound. The executor checks it at every safe point (between
    /// super-steps) and waits, so a slow sink slows the run instead of
    /// dropping events or growing without bound. Must be cheap when there
    /// is room (an atomic load).
    fn backpressure(&self) -> Option<futures::future::BoxFuture<'_, ()>> {
        None
    }

    /// Makes every recorded event durable.
    ///
    /// # Cancel safety
    /// Dropping the future may leave events unflushed; calling `flush` again
    /// completes the work.
    async fn flush(&self) -> Result<(), SinkError>;
}

/// The default bound of a [`JsonLinesSink`]'s queue: 8 MiB of encoded
/// lines waiting for the writer thread.
pub const JSON_LINES_QUEUE_BYTES: usize = 8 << 20;

/// Writes each event as one JSON line to a writer (a file, stdout), off the
/// runtime: [`record`](TraceSink::record) encodes the event and queues the
/// line; one writer thread per sink (not per event) does the I/O through a
/// `BufWriter`. The queue is bounded ([`JSON_LINES_QUEUE_BYTES`] by
/// default): while it is over its bound, [`backpressure`](TraceSink::backpressure)
/// makes the executor wait at its next safe point until the writer catches
/// up, so nothing is dropped and memory stays bounded. [`flush`](TraceSink::flush)
/// waits (asynchronously) until every queued line is written and the writer
/// flushed.
///
/// ```
/// use flowtrace_core::trace::{JsonLinesSink, TraceSink};
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let sink = JsonLinesSink::new(Vec::<u8>::new());
/// sink.flush().await.unwrap();
/// assert!(sink.into_inner().unwrap().is_empty());
/// # });
/// ```
pub struct JsonLinesSink<W: Write + Send + 'static> {
    queue: std::sync::mpsc::Sender<Message<W>>,
    shared: Arc<Backlog>,
}

enum Message<W> {
    Line(Vec<u8>),
    Flush(tokio::sync::oneshot::Sender<Result<(), Arc<std::io::Error>>>),
    Finish(std::sync::mpsc::Sender<Result<W, Arc<std::io::Error>>>),
}

/// What the writer thread and the sink share: queued bytes, the bound, the
/// first write error, and a wake-up for waiting runs.
struct Backlog {
    queued: std::sync::atomic::AtomicUsize,
    bound: usize,
    error: Mutex<Option<Arc<std::io::Error>>>,
    drained: tokio::sync::Notify,
}

impl Backlog {
    fn over(&self) -> bool {
        self.queued.load(std::sync::atomic::Ordering::Acquire) > self.bound
    }

    fn fail(&self, e: std::io::Error) {
        if let Ok(mut slot) = self.error.lock() {
            slot.get_or_insert_with(|| Arc::new(e));
        }
    }

    fn take_error(&self) -> Option<Arc<std::io::Error>> {
        self.error.lock().ok().and_then(|mut s| s.take())
    }
}

impl<W: Write + Send + 'static> fmt::Debug for JsonLinesSink<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLinesSink")
            .field(
                "queued_bytes",
                &self
                    .shared
                    .queued
                    .load(std::sync::atomic::Ordering::Relaxed),
            )
            .field("bound", &self.shared.bound)
            .finish_non_exhaustive()
    }
}

const SINK_NAME: &str = "json lines";

fn sink_error(message: &str, e: Arc<std::io::Error>) -> SinkError {
    SinkError::new(SINK_NAME, message).with_source(e)
}

impl<W: Write + Send + 'static> JsonLinesSink<W> {
    /// A sink writing to `out`, with a queue of [`JSON_LINES_QUEUE_BYTES`].
    pub fn new(out: W) -> Self {
        Self::with_queue_bytes(out, JSON_LINES_QUEUE_BYTES)
    }

    /// A sink writing to `out` whose queue holds up to `bound` bytes of
    /// encoded lines before runs wait for the writer.
    pub fn with_queue_bytes(out: W, bound: usize) -> Self {
        let shared = Arc::new(Backlog {
            queued: std::sync::atomic::AtomicUsize::new(0),
            bound,
            error: Mutex::new(None),
            drained: tokio::sync::Notify::new(),
        });
        let (queue, rx) = std::sync::mpsc::channel::<Message<W>>();
        let thread_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("flowtrace-jsonl".into())
            .spawn(move || write_lines(out, rx, &thread_shared));
        if let Err(e) = spawned {
            // No thread: every record is refused and flush reports why.
            shared.fail(e);
        }
        Self { queue, shared }
    }

    /// Writes everything queued, flushes, and returns the writer. Blocks
    /// until the writer thread is done: call it outside async code (or in
    /// `spawn_blocking`).
    pub fn into_inner(self) -> Result<W, SinkError> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.queue
            .send(Message::Finish(tx))
            .map_err(|_| SinkError::new(SINK_NAME, "the writer thread is gone"))?;
        match rx.recv() {
            Ok(Ok(w)) => Ok(w),
            Ok(Err(e)) => Err(sink_error("cannot write trace lines", e)),
            Err(_) => Err(SinkError::new(SINK_NAME, "the writer thread is gone")),
        }
    }
}

/// The writer thread: writes lines as they come, answers flushes, stops
/// when the sink is dropped (after writing what was queued).
fn write_lines<W: Write>(out: W, rx: std::sync::mpsc::Receiver<Message<W>>, shared: &Backlog) {
    let mut out = std::io::BufWriter::new(out);
    let mut failed: Option<Arc<std::io::Error>> = None;
    while let Ok(message) = rx.recv() {
        match message {
            Message::Line(line) => {
                if failed.is_none()
                    && let Err(e) = out.write_all(&line)
                {
                    let e = Arc::new(e);
                    failed = Some(e.clone());
                    if let Ok(mut slot) = shared.error.lock() {
                        slot.get_or_insert(e);
                    }
                }
                let before = shared
                    .queued
                    .fetch_sub(line.len(), std::sync::atomic::Ordering::AcqRel);
                if before > shared.bound && before - line.len() <= shared.bound {
                    shared.drained.notify_waiters();
                }
            }
            Message::Flush(reply) => {
                let result = match &failed {
                    Some(e) => Err(e.clone()),
                    None => out.flush().map_err(Arc::new),
                };
                let _ = reply.send(result);
            }
            Message::Finish(reply) => {
                let result = match failed.take() {
                    Some(e) => Err(e),
                    None => out.into_inner().map_err(|e| Arc::new(e.into_error())),
                };
                let _ = reply.send(result);
                return;
            }
        }
    }
    let _ = out.flush();
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
                SinkError::new(SINK_NAME, format!("cannot open {}", path.display()))
                    .with_source(Arc::new(e))
            })
    }
}

#[async_trait]
impl<W: Write + Send + 'static> TraceSink for JsonLinesSink<W> {
    fn name(&self) -> &str {
        SINK_NAME
    }

    fn record(&self, event: &TraceEvent) {
        let mut line = Vec::with_capacity(256);
        if let Err(e) = serde_json::to_writer(&mut line, event) {
            self.shared.fail(std::io::Error::other(e));
            return;
        }
        line.push(b'\n');
        self.shared
            .queued
            .fetch_add(line.len(), std::sync::atomic::Ordering::AcqRel);
        if self.queue.send(Message::Line(line)).is_err() {
            self.shared.fail(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the writer thread is gone",
            ));
        }
    }

    fn backpressure(&self) -> Option<futures::future::BoxFuture<'_, ()>> {
        if !self.shared.over() {
            return None;
        }
        Some(Box::pin(async move {
            loop {
                let drained = self.shared.drained.notified();
                tokio::pin!(drained);
                // Register before checking, so a wake-up in between is not lost.
                drained.as_mut().enable();
                if !self.shared.over() || self.shared.error.lock().map_or(true, |e| e.is_some()) {
                    return;
                }
                drained.await;
            }
        }))
    }

    async fn flush(&self) -> Result<(), SinkError> {
        if let Some(e) = self.shared.take_error() {
            return Err(sink_error("cannot write trace lines", e));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queue
            .send(Message::Flush(tx))
            .map_err(|_| SinkError::new(SINK_NAME, "the writer thread is gone"))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(sink_error("cannot write trace lines", e)),
            Err(_) => Err(SinkError::new(SINK_NAME, "the writer thread is gone")),
        }
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
    fn backpressure(&self) -> Option<futures::future::BoxFuture<'_, ()>> {
        (**self).backpressure()
    }
    async fn flush(&self) -> Result<(), SinkError> {
        (**self).flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RunId;
    use crate::trace::{EventKind, LogLevel, Timestamp};

    fn event(i: usize) -> TraceEvent {
        TraceEvent {
            ts: Timestamp::now(),
            run_id: RunId::new("r"),
            step_id: None,
            parent_step_id: None,
            node: None,
            attempt: 0,
            kind: EventKind::Log {
                level: LogLevel::Info,
                message: format!("event {i}"),
            },
        }
    }

    /// A writer that blocks until the test opens its gate.
    #[derive(Clone)]
    struct Gated {
        open: Arc<(Mutex<bool>, std::sync::Condvar)>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gated {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (lock, cv) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_slow_writer_applies_backpressure_and_loses_nothing() {
        let gated = Gated {
            open: Arc::new((Mutex::new(false), std::sync::Condvar::new())),
            written: Arc::default(),
        };
        // A tiny queue and no BufWriter slack: BufWriter passes writes of
        // its capacity or more straight through, so fill past 8 KiB.
        let sink = Arc::new(JsonLinesSink::with_queue_bytes(gated.clone(), 1024));
        assert!(sink.backpressure().is_none());
        for i in 0..400 {
            sink.record(&event(i));
        }
        let wait = sink.backpressure().expect("over its bound");
        let waiting = tokio::spawn({
            let sink = sink.clone();
            async move {
                if let Some(w) = sink.backpressure() {
                    w.await;
                }
            }
        });
        drop(wait);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "waits while the writer is stuck");
        {
            let (lock, cv) = &*gated.open;
            *lock.lock().unwrap() = true;
            cv.notify_all();
        }
        tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("released once the writer catches up")
            .unwrap();
        sink.flush().await.unwrap();
        let text = String::from_utf8(gated.written.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 400);
        assert!(lines[399].contains("event 399"));
    }

    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "disk full",
            ))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_write_error_fails_flush_with_the_io_error_as_source() {
        let sink = JsonLinesSink::with_queue_bytes(Broken, 1 << 20);
        for i in 0..3000 {
            sink.record(&event(i));
        }
        let err = sink.flush().await.unwrap_err();
        let source = std::error::Error::source(&err).expect("the I/O error");
        assert_eq!(source.to_string(), "disk full");
        assert!(
            !err.to_string().contains("disk full"),
            "printed once: {err}"
        );
    }

    #[tokio::test]
    async fn flush_writes_everything_before_it_returns() {
        let written: Arc<Mutex<Vec<u8>>> = Arc::default();
        #[derive(Clone)]
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                std::thread::sleep(std::time::Duration::from_micros(50));
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = JsonLinesSink::new(Shared(written.clone()));
        for i in 0..100 {
            sink.record(&event(i));
        }
        sink.flush().await.unwrap();
        assert_eq!(
            written
                .lock()
                .unwrap()
                .iter()
                .filter(|&&b| b == b'\n')
                .count(),
            100
        );
        let total = written.lock().unwrap().len();
        let out = sink.into_inner().unwrap();
        assert!(Arc::ptr_eq(&out.0, &written));
        assert_eq!(out.0.lock().unwrap().len(), total);
    }
}
