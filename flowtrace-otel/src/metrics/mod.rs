//! Metrics: counters and histograms of runs, steps and model calls through
//! the OpenTelemetry metrics API, with a Prometheus text endpoint.
//!
//! [`OtelMetrics`] is a [`TraceSink`]: attach it
//! to a run ([`RunConfig::sink`](flowtrace_core::RunConfig::sink)) and the
//! run's events update the instruments named in [`names`]. Render them as
//! Prometheus exposition text with [`PrometheusEndpoint::render`] (mount it
//! in the host's HTTP server) or serve them with [`serve_metrics`].
//!
//! ```
//! use flowtrace_otel::OtelMetrics;
//! # fn main() -> Result<(), flowtrace_otel::MetricsError> {
//! let metrics = OtelMetrics::builder().build()?;
//! // graph.invoke(input, RunConfig::new().sink(metrics.clone())).await?;
//! let text = metrics.endpoint().map(|e| e.render()).transpose()?;
//! assert!(text.is_some());
//! # Ok(())
//! # }
//! ```
//!
//! # Limits
//! - Each instrument keeps at most [`DEFAULT_MAX_SERIES_PER_METRIC`]
//!   distinct label sets (configurable); further ones are recorded under
//!   one series whose labels are all [`labels::OTHER`]. Label values longer
//!   than [`MAX_LABEL_VALUE_BYTES`] are `other` too.
//! - Per-run state (the workflow name, model calls in flight per step) is
//!   kept for at most [`DEFAULT_MAX_ACTIVE_RUNS`] runs at once, and dropped
//!   when the run finishes; a run over the bound is labelled
//!   `workflow="other"`.
//!
//! # Money
//! `flowtrace_llm_cost_usd_total` adds each call's exact [`Cost`] converted
//! once to `f64` dollars; no `f64` is accumulated here (the SDK's sum is
//! the only floating-point addition).
//!
//! # Circuit breakers
//! Breakers emit no events of their own. A `fallback` event whose reason is
//! `circuit_open` sets `flowtrace_circuit_breaker_open{provider,model}` of
//! the side given up on to 1; the next `llm.response` from that
//! provider/model sets it back to 0.

mod instruments;
mod server;
mod state;

use std::sync::Arc;

use async_trait::async_trait;
use flowtrace_core::trace::SinkError;
use flowtrace_core::{Cost, TraceEvent, TraceSink};
use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry_sdk::metrics::SdkMeterProvider;

pub use instruments::{DURATION_BUCKETS_SECONDS, MAX_LABEL_VALUE_BYTES, names};
pub use server::{
    MAX_CONNECTIONS, MAX_REQUEST_BYTES, MetricsServer, REQUEST_TIMEOUT, serve_metrics,
};

use instruments::Instruments;
use state::Runs;

/// Label names of the exported series, and the overflow value.
pub mod labels {
    /// The provider (`openai`, `anthropic`, …).
    pub const PROVIDER: &str = "provider";
    /// The model.
    pub const MODEL: &str = "model";
    /// Token type: [`INPUT`] or [`OUTPUT`].
    pub const TYPE: &str = "type";
    /// `type` of prompt tokens.
    pub const INPUT: &str = "input";
    /// `type` of completion tokens.
    pub const OUTPUT: &str = "output";
    /// The graph's name (`run.started`'s `graph`).
    pub const WORKFLOW: &str = "workflow";
    /// The node id.
    pub const NODE: &str = "node";
    /// How a step or run ended (`succeeded`, `failed`, …).
    pub const STATUS: &str = "status";
    /// Why a fallback happened (`rate_limited`, `timeout`, `circuit_open`, …).
    pub const REASON: &str = "reason";
    /// The budget limit reached (`max_cost`, …).
    pub const LIMIT: &str = "limit";
    /// The value of every label of the overflow series.
    pub const OTHER: &str = "other";
}

/// The default bound on distinct label sets per instrument.
pub const DEFAULT_MAX_SERIES_PER_METRIC: usize = 1000;

/// The default bound on runs tracked at once.
pub const DEFAULT_MAX_ACTIVE_RUNS: usize = 10_000;

/// The instrumentation scope name of FlowTrace's meter.
pub const METER_NAME: &str = "flowtrace";

/// Metrics could not be set up, rendered or served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The Prometheus exporter could not be built.
    #[error("prometheus exporter: {0}")]
    Exporter(#[source] opentelemetry_sdk::error::OTelSdkError),
    /// The metrics could not be encoded as exposition text.
    #[error("prometheus encoding: {0}")]
    Encode(#[source] prometheus::Error),
    /// The metrics server could not bind its address.
    #[error("metrics server cannot bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Builds an [`OtelMetrics`].
#[derive(Debug, Clone)]
#[must_use]
pub struct OtelMetricsBuilder {
    max_series: usize,
    max_runs: usize,
}

impl Default for OtelMetricsBuilder {
    fn default() -> Self {
        Self {
            max_series: DEFAULT_MAX_SERIES_PER_METRIC,
            max_runs: DEFAULT_MAX_ACTIVE_RUNS,
        }
    }
}

impl OtelMetricsBuilder {
    /// Bounds the distinct label sets of each instrument (default
    /// [`DEFAULT_MAX_SERIES_PER_METRIC`]); at least 1.
    pub fn max_series_per_metric(mut self, n: usize) -> Self {
        self.max_series = n.max(1);
        self
    }

    /// The bound on distinct label sets of each instrument.
    pub fn get_max_series_per_metric(&self) -> usize {
        self.max_series
    }

    /// Bounds the runs tracked at once (default [`DEFAULT_MAX_ACTIVE_RUNS`]).
    pub fn max_active_runs(mut self, n: usize) -> Self {
        self.max_runs = n;
        self
    }

    /// The bound on runs tracked at once.
    pub fn get_max_active_runs(&self) -> usize {
        self.max_runs
    }

    /// Metrics on a meter provider of their own, read by a Prometheus
    /// exporter: [`OtelMetrics::endpoint`] renders them.
    pub fn build(self) -> Result<OtelMetrics, MetricsError> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_units()
            .without_target_info()
            .build()
            .map_err(MetricsError::Exporter)?;
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        let meter = provider.meter(METER_NAME);
        Ok(self.finish(
            &meter,
            Some(PrometheusEndpoint {
                registry,
                _provider: provider.clone(),
            }),
            Some(provider),
        ))
    }

    /// Metrics recorded through the host's `meter` (from its own
    /// `SdkMeterProvider` and readers); [`OtelMetrics::endpoint`] is `None`.
    pub fn build_with_meter(self, meter: &Meter) -> OtelMetrics {
        self.finish(meter, None, None)
    }

    fn finish(
        self,
        meter: &Meter,
        endpoint: Option<PrometheusEndpoint>,
        provider: Option<SdkMeterProvider>,
    ) -> OtelMetrics {
        OtelMetrics {
            inner: Arc::new(Inner {
                instruments: Instruments::new(meter, self.max_series),
                runs: Runs::new(self.max_runs),
                endpoint,
                provider,
            }),
        }
    }
}

/// A [`TraceSink`] recording FlowTrace's metrics (see the [module
/// docs](self)). Cheap to clone; clones share the instruments.
///
/// [`record`](TraceSink::record) does no I/O and holds short in-memory
/// locks only; [`flush`](TraceSink::flush) does nothing (metrics are
/// pulled by the reader).
#[derive(Debug, Clone)]
pub struct OtelMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    instruments: Instruments,
    runs: Runs,
    endpoint: Option<PrometheusEndpoint>,
    provider: Option<SdkMeterProvider>,
}

impl OtelMetrics {
    /// A builder with the default limits.
    pub fn builder() -> OtelMetricsBuilder {
        OtelMetricsBuilder::default()
    }

    /// The Prometheus endpoint, for metrics built with
    /// [`OtelMetricsBuilder::build`].
    pub fn endpoint(&self) -> Option<PrometheusEndpoint> {
        self.inner.endpoint.clone()
    }

    /// The meter provider, for metrics built with
    /// [`OtelMetricsBuilder::build`].
    pub fn meter_provider(&self) -> Option<&SdkMeterProvider> {
        self.inner.provider.as_ref()
    }

    /// Runs tracked now (started, not finished).
    pub fn active_runs(&self) -> usize {
        self.inner.runs.len()
    }
}

#[async_trait]
impl TraceSink for OtelMetrics {
    fn name(&self) -> &str {
        "otel metrics"
    }

    fn record(&self, event: &TraceEvent) {
        state::record(&self.inner.instruments, &self.inner.runs, event);
    }

    async fn flush(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Dollars of an exact cost, converted once.
pub(crate) fn usd(cost: Cost) -> f64 {
    cost.as_usd_f64()
}

/// Renders the metrics of an [`OtelMetrics`] as Prometheus exposition text
/// (format 0.0.4). Cheap to clone. It keeps the meter provider alive, so an
/// endpoint serves the metrics for as long as it exists, even after the
/// [`OtelMetrics`] it came from is dropped.
#[derive(Debug, Clone)]
pub struct PrometheusEndpoint {
    registry: prometheus::Registry,
    _provider: SdkMeterProvider,
}

impl PrometheusEndpoint {
    /// The `Content-Type` of [`render`](Self::render)'s text.
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";

    /// The current metrics as exposition text. CPU work only, proportional
    /// to the number of series (bounded by the series limit).
    pub fn render(&self) -> Result<String, MetricsError> {
        use prometheus::Encoder;
        let families = self.registry.gather();
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&families, &mut out)
            .map_err(MetricsError::Encode)?;
        String::from_utf8(out).map_err(|e| {
            MetricsError::Encode(prometheus::Error::Msg(format!("exposition not UTF-8: {e}")))
        })
    }
}
