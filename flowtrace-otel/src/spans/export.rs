//! Counting what the exporter loses: a [`SpanExporter`] wrapper.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::resource::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use super::OtelError;

/// Counters of a [`CountingExporter`], shared: clone it before handing the
/// exporter to the SDK and read it (or hand it to
/// [`OtelSinkBuilder::export_stats`](super::OtelSinkBuilder::export_stats))
/// any time. Loads are relaxed atomics.
#[derive(Clone, Debug, Default)]
pub struct ExportStats(Arc<ExportCounters>);

#[derive(Debug, Default)]
struct ExportCounters {
    exported: AtomicU64,
    failed: AtomicU64,
    failed_batches: AtomicU64,
}

impl ExportStats {
    /// New counters, all zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Spans the wrapped exporter accepted.
    pub fn exported_spans(&self) -> u64 {
        self.0.exported.load(Ordering::Relaxed)
    }

    /// Spans in batches the wrapped exporter failed to send (the collector
    /// down, a timeout, a rejected request): lost.
    pub fn failed_spans(&self) -> u64 {
        self.0.failed.load(Ordering::Relaxed)
    }

    /// Batches that failed.
    pub fn failed_batches(&self) -> u64 {
        self.0.failed_batches.load(Ordering::Relaxed)
    }
}

/// Wraps a [`SpanExporter`] and counts the spans it exports and the spans
/// it loses, so a collector that is down shows up as a number instead of a
/// silent gap (the SDK only logs it).
///
/// Exporters built on Tokio (OTLP over reqwest or tonic) need a runtime
/// around each export, and the SDK's [`BatchSpanProcessor`] calls them on
/// its own thread: [`with_own_runtime`](Self::with_own_runtime) gives the
/// wrapper a single-threaded runtime that the batch thread drives for each
/// export, off the application's runtime.
///
/// [`BatchSpanProcessor`]: opentelemetry_sdk::trace::BatchSpanProcessor
///
/// ```
/// use flowtrace_otel::{CountingExporter, OtelSink};
/// use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
///
/// let exporter = CountingExporter::new(InMemorySpanExporter::default());
/// let stats = exporter.stats();
/// let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).build();
/// let sink = OtelSink::builder(provider).export_stats(stats).build();
/// assert_eq!(sink.stats().export_failed_spans, 0);
/// ```
pub struct CountingExporter<E> {
    inner: E,
    stats: ExportStats,
    runtime: Option<tokio::runtime::Runtime>,
}

impl<E: fmt::Debug> fmt::Debug for CountingExporter<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingExporter")
            .field("inner", &self.inner)
            .field("stats", &self.stats)
            .field("own_runtime", &self.runtime.is_some())
            .finish()
    }
}

impl<E: SpanExporter> CountingExporter<E> {
    /// Wraps `inner`, with fresh counters.
    pub fn new(inner: E) -> Self {
        Self {
            inner,
            stats: ExportStats::new(),
            runtime: None,
        }
    }

    /// The counters (shared with this exporter).
    pub fn stats(&self) -> ExportStats {
        self.stats.clone()
    }

    /// Counts into `stats` instead of fresh counters (to share them between
    /// exporters).
    #[must_use]
    pub fn with_stats(mut self, stats: ExportStats) -> Self {
        self.stats = stats;
        self
    }

    /// Runs each export on a single-threaded Tokio runtime owned by this
    /// wrapper, for Tokio-based exporters under the (thread-based)
    /// `BatchSpanProcessor`. Do not combine with a `SimpleSpanProcessor`
    /// called from async code: that exports on the caller's thread, where
    /// a nested runtime cannot run.
    pub fn with_own_runtime(mut self) -> Result<Self, OtelError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(OtelError::Runtime)?;
        self.runtime = Some(rt);
        Ok(self)
    }

    /// The wrapped exporter.
    pub fn get_ref(&self) -> &E {
        &self.inner
    }

    fn count(&self, spans: u64, result: &OTelSdkResult) {
        match result {
            Ok(()) => {
                self.stats.0.exported.fetch_add(spans, Ordering::Relaxed);
            }
            Err(_) => {
                self.stats.0.failed.fetch_add(spans, Ordering::Relaxed);
                self.stats.0.failed_batches.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = match &self.runtime {
            // Only reached on the batch thread (see `with_own_runtime`);
            // refuse rather than panic if called inside a runtime anyway.
            Some(rt) if tokio::runtime::Handle::try_current().is_err() => {
                rt.block_on(self.inner.export(batch))
            }
            Some(_) => Err(OTelSdkError::InternalFailure(
                "CountingExporter::with_own_runtime called from inside a Tokio runtime".into(),
            )),
            None => self.inner.export(batch).await,
        };
        self.count(spans, &result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
