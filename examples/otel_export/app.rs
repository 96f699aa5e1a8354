//! The example's work, shared by `main` and the test `tests/otel_export`
//! (which runs it in-process with a real Prometheus scraping it).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flowtrace::Cost;
use flowtrace::workflow::compile::{CompiledWorkflow, Runtime, compile};
use flowtrace::workflow::spec::load;
use flowtrace_otel::opentelemetry_otlp::{SpanExporter, WithExportConfig};
use flowtrace_otel::opentelemetry_sdk::Resource;
use flowtrace_otel::opentelemetry_sdk::trace::SdkTracerProvider;
use flowtrace_otel::{
    CountingExporter, ExportStats, MetricsServer, OtelMetrics, OtelSink, serve_metrics,
};
use serde_json::json;

/// The most runs one invocation makes.
pub const MAX_RUNS: usize = 1000;

/// What to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// How many runs of the quickstart workflow.
    pub runs: usize,
    /// Where the OTLP/HTTP spans go (the base URL; `/v1/traces` is added).
    pub otlp_endpoint: String,
    /// Where `/metrics` is served.
    pub metrics_addr: SocketAddr,
}

/// The runs done, with the metrics still served.
pub struct Running {
    /// Where `/metrics` is served.
    pub metrics_addr: SocketAddr,
    /// Where the spans went.
    pub traces_url: String,
    /// Total tokens (input + output) of every run.
    pub tokens: u64,
    /// Total cost of every run.
    pub cost: Cost,
    /// One line per run, for people.
    pub lines: Vec<String>,
    server: MetricsServer,
    spans: Arc<OtelSink>,
    /// Kept alive: its meter provider feeds the endpoint.
    _metrics: Arc<OtelMetrics>,
    export: ExportStats,
}

/// What the export did, once flushed.
pub struct Finished {
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans lost (the collector down or too slow).
    pub lost: u64,
    /// Why the final flush failed, if it did.
    pub flush_error: Option<String>,
}

/// Sets up OTLP/HTTP export and the metrics endpoint, then runs the
/// quickstart workflow `runs` times with both sinks attached.
pub async fn start(options: &Options) -> Result<Running, Box<dyn std::error::Error>> {
    // Traces: OTLP/HTTP through the SDK's batch processor, off the runs'
    // path; the counting wrapper makes losses visible.
    let traces_url = format!("{}/v1/traces", options.otlp_endpoint.trim_end_matches('/'));
    let otlp = SpanExporter::builder()
        .with_http()
        .with_endpoint(traces_url.clone())
        .with_timeout(Duration::from_secs(5))
        .build()?;
    let exporter = CountingExporter::new(otlp).with_own_runtime()?;
    let export = exporter.stats();
    let provider = SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name("flowtrace-otel-example")
                .build(),
        )
        .with_batch_exporter(exporter)
        .build();
    let spans = Arc::new(
        OtelSink::builder(provider)
            .export_stats(export.clone())
            .build(),
    );

    // Metrics: OpenTelemetry instruments rendered as Prometheus text.
    let metrics = OtelMetrics::builder().build()?;
    let endpoint = metrics
        .endpoint()
        .ok_or("the metrics sink was built without its endpoint")?;
    let server = serve_metrics(options.metrics_addr, endpoint).await?;
    let metrics = Arc::new(metrics);

    // The quickstart workflow, offline.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/workflows");
    let runtime = Runtime::offline(&dir);
    let text = std::fs::read_to_string(dir.join("research.json"))?;
    let spec = load(&text, &runtime.known()).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        lines.join("\n")
    })?;
    let workflow: CompiledWorkflow = compile(&spec, &runtime)?;
    let input = json!({"notes_path": "research-notes.md", "topic": "agent observability"});
    let mut tokens = 0u64;
    let mut cost = Cost::ZERO;
    let mut lines = Vec::new();
    for i in 1..=options.runs {
        let out = workflow
            .run(input.clone(), |c| {
                c.shared_sink(spans.clone()).shared_sink(metrics.clone())
            })
            .await?;
        tokens += out.summary.usage.total();
        cost = cost.checked_add(out.summary.cost).ok_or("cost overflow")?;
        lines.push(format!(
            "run {i}/{}: {} — {} steps, {} input + {} output tokens, {}",
            options.runs,
            out.summary.run_id,
            out.summary.steps.len(),
            out.summary.usage.input_tokens,
            out.summary.usage.output_tokens,
            out.summary.cost,
        ));
    }
    Ok(Running {
        metrics_addr: server.local_addr(),
        traces_url,
        tokens,
        cost,
        lines,
        server,
        spans,
        _metrics: metrics,
        export,
    })
}

impl Running {
    /// Flushes the spans and stops serving the metrics.
    pub async fn finish(self) -> Finished {
        let flush_error = self.spans.force_flush().await.err().map(|e| e.to_string());
        self.server.shutdown().await;
        Finished {
            exported: self.export.exported_spans(),
            lost: self.spans.stats().not_exported_spans(),
            flush_error,
        }
    }
}
