//! # flowtrace-otel
//!
//! OpenTelemetry export for FlowTrace: a [`flowtrace_core::TraceSink`] that
//! turns runs, steps and model calls into spans with `gen_ai.*` attributes.
//!
//! This release contains no exporter yet: the crate exists so the workspace
//! layout is final. The events it will map live in [`flowtrace_core::trace`].

pub use flowtrace_core::trace;

pub mod metrics;
pub use metrics::{
    MetricsError, MetricsServer, OtelMetrics, OtelMetricsBuilder, PrometheusEndpoint, serve_metrics,
};
