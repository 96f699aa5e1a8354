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

mod app;

use std::time::Duration;

const USAGE: &str = "usage: otel_export [--runs N] [--serve-secs S]";

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
    if runs == 0 || runs > app::MAX_RUNS {
        return Err(format!("--runs must be 1 to {}", app::MAX_RUNS));
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
    let options = app::Options {
        runs,
        otlp_endpoint: std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .unwrap_or_else(|_| "http://127.0.0.1:4318".into()),
        metrics_addr: "127.0.0.1:9464".parse()?,
    };
    let running = app::start(&options).await?;
    for line in &running.lines {
        println!("{line}");
    }
    println!("totals:  {} tokens, {}", running.tokens, running.cost);
    println!("metrics: http://{}/metrics", running.metrics_addr);
    println!("traces:  OTLP/HTTP to {}", running.traces_url);
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
    let done = running.finish().await;
    if let Some(e) = done.flush_error {
        eprintln!("flushing the spans: {e}");
    }
    println!(
        "spans exported: {}, lost: {} (a collector that is down loses spans, never runs)",
        done.exported, done.lost,
    );
    Ok(())
}
