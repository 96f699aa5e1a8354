//! A real Prometheus server scrapes the sink's `/metrics`.

use super::*;
use crate::prom::{Prometheus, prometheus_binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_token_and_cost_totals_equal_to_the_run_summary() {
    let Some(bin) = prometheus_binary("the Prometheus scrape test") else {
        return;
    };
    let metrics = OtelMetrics::builder().build().unwrap();
    let server = serve_metrics("127.0.0.1:0".parse().unwrap(), metrics.endpoint().unwrap())
        .await
        .unwrap();
    let scratch =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("prometheus-{}", std::process::id()));
    let prom = Prometheus::start(&bin, server.local_addr(), scratch).await;
    eprintln!("prometheus ready on {}", prom.base);

    let summary = run_demo(&metrics).await;
    let want_tokens = summary.usage.total() as f64;
    let want_cost = summary.cost.as_usd_f64();

    // Wait for a scrape that saw the run.
    let tokens = prom
        .wait_for(
            "sum(flowtrace_llm_tokens_total)",
            want_tokens,
            Duration::from_secs(30),
        )
        .await;
    let cost = prom.query("sum(flowtrace_llm_cost_usd_total)").await;
    assert_eq!(tokens, Some(want_tokens), "sum(flowtrace_llm_tokens_total)");
    assert_eq!(cost, Some(want_cost), "sum(flowtrace_llm_cost_usd_total)");
    assert_eq!(
        prom.query("sum(flowtrace_node_executions_total{workflow=\"metrics-demo\"})")
            .await,
        Some(summary.node_executions as f64)
    );
    assert_eq!(
        prom.query("up{job=\"flowtrace\"}").await,
        Some(1.0),
        "the target is up"
    );
    drop(prom);
    server.shutdown().await;
}
