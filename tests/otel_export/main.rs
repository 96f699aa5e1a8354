//! The `otel_export` example end to end, against real software: it runs
//! the quickstart workflow in-process, a real Prometheus server scrapes the
//! example's `/metrics` endpoint on loopback, and PromQL through its HTTP
//! API returns token and cost totals equal to the runs' summaries; the
//! spans reach a real OTLP receiver (Arize Phoenix) when `FLOWTRACE_OTLP_URL`
//! names one, or are counted as lost when nothing listens.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../examples/otel_export/app.rs"]
#[allow(dead_code)]
mod app;
#[path = "../../flowtrace-otel/tests/support/prometheus.rs"]
mod prom;

use std::time::Duration;

use prom::{Prometheus, prometheus_binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_examples_endpoint_with_the_runs_totals() {
    let Some(bin) = prometheus_binary("the otel_export example under Prometheus") else {
        return;
    };
    let receiver = std::env::var("FLOWTRACE_OTLP_URL")
        .ok()
        .filter(|u| !u.is_empty());
    // Without a receiver: a port nobody listens on (spans are lost, counted).
    let otlp_endpoint = receiver.clone().unwrap_or_else(|| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("http://127.0.0.1:{port}")
    });
    let running = app::start(&app::Options {
        runs: 2,
        otlp_endpoint,
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
    })
    .await
    .unwrap();
    assert_eq!(running.lines.len(), 2);
    assert!(running.tokens > 0);

    let exposition = reqwest::get(format!("http://{}/metrics", running.metrics_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        exposition.contains("flowtrace_llm_tokens_total"),
        "{exposition}"
    );
    let scratch = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("otel-export-prometheus-{}", std::process::id()));
    let prometheus = Prometheus::start(&bin, running.metrics_addr, scratch).await;
    let tokens = prometheus
        .wait_for(
            "sum(flowtrace_llm_tokens_total)",
            running.tokens as f64,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(tokens, Some(running.tokens as f64), "tokens scraped");
    let cost = prometheus.query("sum(flowtrace_llm_cost_usd_total)").await;
    let want = running.cost.as_usd_f64();
    let got = cost.unwrap();
    assert!(
        (got - want).abs() <= want * 1e-12,
        "cost scraped {got}, runs cost {want}"
    );
    assert_eq!(
        prometheus
            .query("sum(flowtrace_run_duration_seconds_count)")
            .await,
        Some(2.0),
        "two runs"
    );
    drop(prometheus);

    let done = running.finish().await;
    if receiver.is_some() {
        assert!(
            done.exported > 0 && done.lost == 0,
            "exported {} lost {}",
            done.exported,
            done.lost
        );
    } else {
        assert!(
            done.lost > 0 && done.exported == 0,
            "exported {} lost {}",
            done.exported,
            done.lost
        );
    }
}
