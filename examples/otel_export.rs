//! Exports FlowTrace runs to the tools teams watch: OpenTelemetry spans over
//! OTLP/HTTP and Prometheus metrics.
//!
//! ```text
//! cargo run --example otel_export -- [--runs N] [--serve-secs S]
//! ```
//!
//! Runs the quickstart workflow (`examples/workflows/research.json`,
//! offline on the simulated provider) N times (default 1). Every run's
//! spans (a root span per run, a span per step, per model call and per tool
//! call, with the OpenTelemetry GenAI attributes) go by OTLP/HTTP to
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (default `http://127.0.0.1:4318`, path
//! `/v1/traces`); its metrics are served as Prometheus text on
//! `http://127.0.0.1:9464/metrics` for S seconds after the runs (default:
//! until Ctrl-C). Then the exporter is flushed and the example prints how
//! many spans were exported and how many were lost (a collector that is
//! down loses spans, never the runs).
//!
//! Point a Prometheus at the endpoint (see `deploy/prometheus/` and the
//! Grafana dashboard in `deploy/grafana/`) and any OTLP receiver (an
//! OpenTelemetry Collector, Jaeger, Arize Phoenix) at the traces.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use flowtrace::workflow::compile::{CompiledWorkflow, Runtime, compile};
use flowtrace::workflow::spec::load;
use flowtrace_otel::opentelemetry_otlp::{SpanExporter, WithExportConfig};
use flowtrace_otel::opentelemetry_sdk::Resource;
use flowtrace_otel::opentelemetry_sdk::trace::SdkTracerProvider;
use flowtrace_otel::{CountingExporter, OtelMetrics, OtelSink, serve_metrics};
use serde_json::json;

const USAGE: &str = "usage: otel_export [--runs N] [--serve-secs S]";
/// The most runs one invocation makes.
const MAX_RUNS: usize = 1000;

fn parse() -> Result<(usize, Option<u64>), String> {
    let mut runs = 1;
    let mut serve = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| format!("{flag} needs a number"))
        };
        match arg.as_str() {
            "--runs" => runs = value("--runs")? as usize,
            "--serve-secs" => serve = Some(value("--serve-secs")?),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if runs == 0 || runs > MAX_RUNS {
        return Err(format!("--runs must be 1 to {MAX_RUNS}"));
    }
    Ok((runs, serve))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (runs, serve_secs) = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };

    // Traces: OTLP/HTTP through the SDK's batch processor, off the runs'
    // path; the counting wrapper makes losses visible.
    let base = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:4318".into());
    let traces_url = format!("{}/v1/traces", base.trim_end_matches('/'));
    let otlp = SpanExporter::builder()
        .with_http()
        .with_endpoint(traces_url.clone())
        .with_timeout(Duration::from_secs(5))
        .build()?;
    let exporter = CountingExporter::new(otlp).with_own_runtime()?;
    let export_stats = exporter.stats();
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
            .export_stats(export_stats.clone())
            .build(),
    );

    // Metrics: OpenTelemetry instruments rendered as Prometheus text.
    let metrics = OtelMetrics::builder().build()?;
    let endpoint = metrics.endpoint().expect("built with its own endpoint");
    let addr: SocketAddr = "127.0.0.1:9464".parse()?;
    let server = serve_metrics(addr, endpoint).await?;
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
    for i in 1..=runs {
        let out = workflow
            .run(input.clone(), |c| {
                c.shared_sink(spans.clone()).shared_sink(metrics.clone())
            })
            .await?;
        println!(
            "run {i}/{runs}: {} — {} steps, {} input + {} output tokens, {}",
            out.summary.run_id,
            out.summary.steps.len(),
            out.summary.usage.input_tokens,
            out.summary.usage.output_tokens,
            out.summary.cost,
        );
    }

    println!("metrics: http://{}/metrics", server.local_addr());
    println!("traces:  OTLP/HTTP to {traces_url}");
    match serve_secs {
        Some(s) => {
            println!("serving the metrics for {s} s");
            tokio::time::sleep(Duration::from_secs(s)).await;
        }
        None => {
            println!("serving the metrics until Ctrl-C");
            tokio::signal::ctrl_c().await?;
        }
    }
    if let Err(e) = spans.force_flush().await {
        eprintln!("flushing the spans: {e}");
    }
    server.shutdown().await;
    let stats = spans.stats();
    println!(
        "spans exported: {}, lost: {} (a collector that is down loses spans, never runs)",
        export_stats.exported_spans(),
        stats.not_exported_spans(),
    );
    Ok(())
}
