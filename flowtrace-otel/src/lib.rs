//! # flowtrace-otel
//!
//! OpenTelemetry export for FlowTrace: [`OtelSink`], a
//! [`flowtrace_core::TraceSink`] that turns runs, steps, model calls and
//! tool calls into spans with the OpenTelemetry GenAI attributes
//! (`gen_ai.*`) and FlowTrace's own (`flowtrace.*`). Every attribute name
//! lives in [`semconv`].
//!
//! ```
//! use flowtrace_core::RunConfig;
//! use flowtrace_otel::{CountingExporter, OtelSink};
//! use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
//!
//! // Any SpanExporter (OTLP in production); the counter makes losses visible.
//! let exporter = CountingExporter::new(InMemorySpanExporter::default());
//! let stats = exporter.stats();
//! let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).build();
//! let sink = OtelSink::builder(provider).export_stats(stats).build();
//! let config = RunConfig::new().sink(sink);
//! # drop(config);
//! ```
//!
//! Spans are ended in [`TraceSink::record`](flowtrace_core::TraceSink::record)
//! and exported by the provider's span processor; use the SDK's batch
//! processor so export stays off the run's path. If the collector is down
//! the run still succeeds, and the lost spans are counted
//! ([`OtelSink::stats`], [`ExportStats`]).
//!
//! [`OtelMetrics`] is the metrics half: a sink that counts tokens, cost,
//! node executions and durations, retries, fallbacks, cache hits, breaker
//! state and budget stops through OpenTelemetry metrics, rendered as
//! Prometheus text by [`PrometheusEndpoint`] and served by
//! [`serve_metrics`]. `deploy/` holds a Grafana dashboard and Prometheus
//! alert rules over these metrics.

pub mod semconv;
pub mod spans;

pub use flowtrace_core::trace;
pub use spans::{
    CONTENT_LIMIT_BYTES, CountingExporter, ExportStats, MAX_OPEN_RUNS, MAX_OPEN_SPANS_PER_RUN,
    OtelError, OtelSink, OtelSinkBuilder, OtelStats, Redactor, context_from_traceparent,
};
/// The OpenTelemetry crates this crate is built on, at the versions it
/// uses (build providers and exporters with these to match [`OtelSink`]).
pub use {opentelemetry, opentelemetry_otlp, opentelemetry_sdk};

pub mod metrics;
pub use metrics::{
    MetricsError, MetricsServer, OtelMetrics, OtelMetricsBuilder, PrometheusEndpoint, serve_metrics,
};
