//! Runs as OpenTelemetry spans: [`OtelSink`].
//!
//! # The span tree
//!
//! | event(s) | span | parent |
//! |---|---|---|
//! | `run.started` → `run.finished` | [`SPAN_RUN`](crate::semconv::SPAN_RUN) | the host's context ([`OtelSinkBuilder::parent`]) |
//! | `step.started` → `step.finished` | [`SPAN_STEP`](crate::semconv::SPAN_STEP), one per attempt: a node `retry` ends an attempt's span (status error, the retry as an event) and starts the next after the delay | the run span |
//! | `llm.request` → `llm.response` | `chat {model}` (client) | the step span |
//! | `tool.request` → `tool.response` | `execute_tool {tool}` | the step span |
//! | `run.started` → `run.finished` with `parent_step_id` (a subgraph) | [`SPAN_RUN`](crate::semconv::SPAN_RUN) | the parent graph's step span |
//!
//! Each attempt of a step has its own span (`flowtrace.attempt` numbers
//! it; the failed ones end with status error and a `retry` event). A model
//! call's own retries inside a fallback chain are events on the call's span.
//! Retries, fallbacks, cache
//! hits, interrupts, budget stops and skipped steps are span events on the
//! innermost open span (a fallback or cache hit during a model call goes on
//! the call's span). A failure sets the span's status to error and records
//! an `exception` event (message and kind). Every span starts and ends at
//! its events' own timestamps, not when the sink saw them.
//!
//! # Cost on the hot path
//!
//! [`record`](TraceSink::record) builds and ends spans under one short lock
//! and hands ended spans to the provider's span processor; with the SDK's
//! [`BatchSpanProcessor`](opentelemetry_sdk::trace::BatchSpanProcessor) the
//! export runs on its own thread. No I/O happens in `record`.

mod calls;
mod content;
mod events;
mod export;
mod propagation;
mod runs;
mod steps;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flowtrace_core::trace::{SinkError, TraceEvent, TraceSink};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, InstrumentationScope};
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

pub use content::MAX_ERROR_BYTES;
pub use export::{CountingExporter, ExportStats};
pub use propagation::context_from_traceparent;
pub use runs::{MAX_OPEN_CALLS_PER_STEP, MAX_PARKED_STEPS};

/// The default bound on runs open at once in one sink. Beyond it the
/// oldest open run is ended (status error, counted in
/// [`OtelStats::runs_evicted`]): a run whose `run.finished` never came
/// cannot hold memory forever.
pub const MAX_OPEN_RUNS: usize = 1024;

/// The default bound on spans open at once in one run (steps, calls,
/// subgraph runs). Beyond it new spans are not created and are counted in
/// [`OtelStats::spans_refused`].
pub const MAX_OPEN_SPANS_PER_RUN: usize = 4096;

/// The default size limit of one captured content attribute (messages,
/// tool arguments and results), in bytes; longer content is cut and marked
/// with [`FLOWTRACE_CONTENT_TRUNCATED`](crate::semconv::FLOWTRACE_CONTENT_TRUNCATED).
pub const CONTENT_LIMIT_BYTES: usize = 16 * 1024;

/// Failures of this crate's span export helpers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtelError {
    /// The Tokio runtime for an exporter could not be started.
    #[error("cannot start a runtime for the span exporter")]
    Runtime(#[source] std::io::Error),
    /// A `traceparent` header is not a valid W3C trace context.
    #[error("invalid W3C traceparent header")]
    InvalidTraceparent,
    /// The provider could not flush its spans (the exporter failed or
    /// timed out).
    #[error("cannot flush spans")]
    Flush(#[source] OTelSdkError),
    /// The blocking flush task did not complete.
    #[error("the span flush task stopped")]
    FlushTask(#[source] tokio::task::JoinError),
}

/// Counts of an [`OtelSink`]; see [`OtelSink::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OtelStats {
    /// Spans started.
    pub spans_started: u64,
    /// Spans ended and handed to the span processor.
    pub spans_ended: u64,
    /// Spans not created because a limit was reached
    /// ([`MAX_OPEN_SPANS_PER_RUN`], [`MAX_OPEN_CALLS_PER_STEP`]).
    pub spans_refused: u64,
    /// Runs ended early because too many were open ([`MAX_OPEN_RUNS`]).
    pub runs_evicted: u64,
    /// Spans the exporter sent, when [`OtelSinkBuilder::export_stats`] was given.
    pub export_exported_spans: u64,
    /// Spans the exporter failed to send (lost), when
    /// [`OtelSinkBuilder::export_stats`] was given.
    pub export_failed_spans: u64,
}

impl OtelStats {
    /// Spans lost: refused at a limit or failed at export.
    pub fn lost_spans(&self) -> u64 {
        self.spans_refused.saturating_add(self.export_failed_spans)
    }

    /// Spans ended but not (yet) exported: failed ones, ones the batch
    /// processor dropped because its queue was full, and ones still queued.
    /// Exact after [`OtelSink::force_flush`]; needs
    /// [`OtelSinkBuilder::export_stats`].
    pub fn not_exported_spans(&self) -> u64 {
        self.spans_ended.saturating_sub(self.export_exported_spans)
    }
}

#[derive(Debug, Default)]
struct Counters {
    started: AtomicU64,
    ended: AtomicU64,
    refused: AtomicU64,
    evicted: AtomicU64,
}

impl Shared {
    /// Pushes captured content: redacted, then cut at the limit.
    fn push_content(
        &self,
        attrs: &mut Vec<opentelemetry::KeyValue>,
        key: &'static str,
        text: String,
    ) {
        let text = match &self.redactor {
            Some(r) => r(&text),
            None => text,
        };
        content::push_content(attrs, key, text, self.content_limit);
    }
}

impl Counters {
    fn started(&self, n: u64) {
        self.started.fetch_add(n, Ordering::Relaxed);
    }
    fn ended(&self, n: u64) {
        self.ended.fetch_add(n, Ordering::Relaxed);
    }
    fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }
    fn evicted(&self) {
        self.evicted.fetch_add(1, Ordering::Relaxed);
    }
}

/// Rewrites captured content before it is recorded (PII redaction).
pub type Redactor = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// Settings and counters the span mapping reads.
struct Shared {
    capture_content: bool,
    content_limit: usize,
    redactor: Option<Redactor>,
    parent: Context,
    max_open_runs: usize,
    max_open_spans_per_run: usize,
    counters: Counters,
}

/// Builds an [`OtelSink`]; see [`OtelSink::builder`].
#[must_use]
pub struct OtelSinkBuilder {
    provider: SdkTracerProvider,
    capture_content: bool,
    content_limit: usize,
    redactor: Option<Redactor>,
    parent: Context,
    max_open_runs: usize,
    max_open_spans_per_run: usize,
    export: Option<ExportStats>,
}

impl std::fmt::Debug for OtelSinkBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtelSinkBuilder")
            .field("capture_content", &self.capture_content)
            .field("content_limit", &self.content_limit)
            .field("redact", &self.redactor.is_some())
            .field("max_open_runs", &self.max_open_runs)
            .field("max_open_spans_per_run", &self.max_open_spans_per_run)
            .finish_non_exhaustive()
    }
}

impl OtelSinkBuilder {
    /// Records prompt and completion content (request messages, reply
    /// text, tool arguments and results, interrupt payloads) as span
    /// attributes, each cut at [`content_limit`](Self::content_limit).
    /// Off by default: content often holds personal data.
    pub fn capture_content(mut self, on: bool) -> Self {
        self.capture_content = on;
        self
    }

    /// The size limit of one content attribute, in bytes
    /// ([`CONTENT_LIMIT_BYTES`] by default).
    pub fn content_limit(mut self, bytes: usize) -> Self {
        self.content_limit = bytes;
        self
    }

    /// Passes every captured content string through `redact` (for example
    /// a PII scrubber) before it is cut and recorded. Applies only with
    /// [`capture_content`](Self::capture_content) on.
    pub fn redact(mut self, redact: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        self.redactor = Some(Arc::new(redact));
        self
    }

    /// The context run spans are children of: the host's current context
    /// (`Context::current()` inside an instrumented request handler), or
    /// one from [`context_from_traceparent`]. Without it each run starts a
    /// new trace.
    pub fn parent(mut self, cx: Context) -> Self {
        self.parent = cx;
        self
    }

    /// The bound on runs open at once ([`MAX_OPEN_RUNS`] by default).
    pub fn max_open_runs(mut self, n: usize) -> Self {
        self.max_open_runs = n;
        self
    }

    /// The bound on spans open at once in a run
    /// ([`MAX_OPEN_SPANS_PER_RUN`] by default).
    pub fn max_open_spans_per_run(mut self, n: usize) -> Self {
        self.max_open_spans_per_run = n;
        self
    }

    /// The counters of the [`CountingExporter`] behind the provider, so
    /// [`OtelSink::stats`] reports export losses too.
    pub fn export_stats(mut self, stats: ExportStats) -> Self {
        self.export = Some(stats);
        self
    }

    /// The sink.
    pub fn build(self) -> OtelSink {
        let scope = InstrumentationScope::builder("flowtrace")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        OtelSink {
            tracer: self.provider.tracer_with_scope(scope),
            provider: self.provider,
            shared: Shared {
                capture_content: self.capture_content,
                content_limit: self.content_limit,
                redactor: self.redactor,
                parent: self.parent,
                max_open_runs: self.max_open_runs,
                max_open_spans_per_run: self.max_open_spans_per_run,
                counters: Counters::default(),
            },
            runs: Mutex::new(runs::Runs::default()),
            export: self.export,
            flushing: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// A [`TraceSink`] that turns runs into OpenTelemetry spans with GenAI
/// attributes (see the [module docs](self) for the span tree).
///
/// ```
/// use flowtrace_core::RunConfig;
/// use flowtrace_otel::OtelSink;
/// use opentelemetry_sdk::trace::SdkTracerProvider;
///
/// // In a service: the provider your OTLP exporter is installed on.
/// let provider = SdkTracerProvider::builder().build();
/// let sink = OtelSink::builder(provider).capture_content(false).build();
/// let config = RunConfig::new().sink(sink);
/// # drop(config);
/// ```
pub struct OtelSink {
    tracer: SdkTracer,
    provider: SdkTracerProvider,
    shared: Shared,
    runs: Mutex<runs::Runs>,
    export: Option<ExportStats>,
    flushing: Arc<AtomicBool>,
}

impl std::fmt::Debug for OtelSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtelSink")
            .field("capture_content", &self.shared.capture_content)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl OtelSink {
    /// A sink over `provider` with the default settings (no content, new
    /// traces, default limits).
    pub fn new(provider: SdkTracerProvider) -> Self {
        Self::builder(provider).build()
    }

    /// A builder over `provider`.
    pub fn builder(provider: SdkTracerProvider) -> OtelSinkBuilder {
        OtelSinkBuilder {
            provider,
            capture_content: false,
            content_limit: CONTENT_LIMIT_BYTES,
            redactor: None,
            parent: Context::new(),
            max_open_runs: MAX_OPEN_RUNS,
            max_open_spans_per_run: MAX_OPEN_SPANS_PER_RUN,
            export: None,
        }
    }

    /// The provider spans go to.
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// Whether content is captured ([`OtelSinkBuilder::capture_content`]).
    pub fn get_capture_content(&self) -> bool {
        self.shared.capture_content
    }

    /// The counts so far: spans started, ended, refused, and (with
    /// [`OtelSinkBuilder::export_stats`]) exported and lost.
    pub fn stats(&self) -> OtelStats {
        let c = &self.shared.counters;
        OtelStats {
            spans_started: c.started.load(Ordering::Relaxed),
            spans_ended: c.ended.load(Ordering::Relaxed),
            spans_refused: c.refused.load(Ordering::Relaxed),
            runs_evicted: c.evicted.load(Ordering::Relaxed),
            export_exported_spans: self.export.as_ref().map_or(0, ExportStats::exported_spans),
            export_failed_spans: self.export.as_ref().map_or(0, ExportStats::failed_spans),
        }
    }

    /// Force-flushes the provider and waits for it: every ended span is
    /// exported (or counted as failed). For shutdown and tests; runs never
    /// wait for this (see [`TraceSink::flush`] below). The SDK call blocks,
    /// so it runs on Tokio's blocking pool.
    ///
    /// # Cancel safety
    /// Dropping the future does not stop the flush already under way.
    pub async fn force_flush(&self) -> Result<(), OtelError> {
        let provider = self.provider.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => rt
                .spawn_blocking(move || provider.force_flush())
                .await
                .map_err(OtelError::FlushTask)?
                .map_err(OtelError::Flush),
            // Not on a Tokio runtime: nothing async to keep unblocked.
            Err(_) => provider.force_flush().map_err(OtelError::Flush),
        }
    }
}

#[async_trait]
impl TraceSink for OtelSink {
    fn name(&self) -> &str {
        "opentelemetry"
    }

    fn record(&self, event: &TraceEvent) {
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.record(&self.tracer, &self.shared, event);
    }

    /// Starts a force flush of the provider in the background (at most one
    /// at a time) and returns at once, without error. The executor calls
    /// this at the end of every run: a collector that is down or slow must
    /// neither fail nor slow the run, so export failures are counted
    /// ([`OtelSink::stats`]) instead. Use [`OtelSink::force_flush`] to wait.
    async fn flush(&self) -> Result<(), SinkError> {
        // Off a Tokio runtime there is no blocking pool to hand the flush
        // to; the batch processor exports on its own schedule anyway.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return Ok(());
        };
        if self.flushing.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let provider = self.provider.clone();
        let flushing = self.flushing.clone();
        // The result is reflected in the exporter's counters.
        drop(rt.spawn_blocking(move || {
            let _ = provider.force_flush();
            flushing.store(false, Ordering::Release);
        }));
        Ok(())
    }
}
