//! A real Prometheus server scrapes the sink's `/metrics`.

use super::*;

/// A free loopback port (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory under the test target dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Percent-encodes everything but unreserved characters.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The single value of an instant-vector query, or `None` when the result
/// is empty.
async fn query(http: &reqwest::Client, base: &str, promql: &str) -> Option<f64> {
    let body: serde_json::Value = http
        .get(format!("{base}/api/v1/query?query={}", url_encode(promql)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "success", "{body}");
    let result = body["data"]["result"].as_array().unwrap();
    result
        .first()
        .map(|r| r["value"][1].as_str().unwrap().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_token_and_cost_totals_equal_to_the_run_summary() {
    let Some(bin) = peer_binary(
        "FLOWTRACE_PROMETHEUS",
        "prometheus",
        "the Prometheus scrape test",
    ) else {
        return;
    };
    let metrics = OtelMetrics::builder().build().unwrap();
    let server = serve_metrics("127.0.0.1:0".parse().unwrap(), metrics.endpoint().unwrap())
        .await
        .unwrap();

    let dir = TempDir::new("prometheus");
    let config = dir.0.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: flowtrace\n    scrape_interval: 1s\n    \
             static_configs:\n      - targets: ['{}']\n",
            server.local_addr()
        ),
    )
    .unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(dir.0.join("prometheus.log")).unwrap();
    let mut child = tokio::process::Command::new(&bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.0.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{base}/-/ready")).send().await
            && r.status().is_success()
        {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.0.join("prometheus.log")).unwrap_or_default();
            panic!("prometheus exited with {status}: {log}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "prometheus never got ready"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("prometheus ready on {base} after {:?}", started.elapsed());

    let summary = run_demo(&metrics).await;
    let want_tokens = summary.usage.total() as f64;
    let want_cost = summary.cost.as_usd_f64();

    // Wait for a scrape that saw the run.
    let waited = std::time::Instant::now();
    let (tokens, cost) = loop {
        let tokens = query(&http, &base, "sum(flowtrace_llm_tokens_total)").await;
        let cost = query(&http, &base, "sum(flowtrace_llm_cost_usd_total)").await;
        if tokens == Some(want_tokens) && cost.is_some()
            || waited.elapsed() > Duration::from_secs(30)
        {
            break (tokens, cost);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "scraped after {:?}: tokens {tokens:?}, cost {cost:?}",
        waited.elapsed()
    );
    assert_eq!(tokens, Some(want_tokens), "sum(flowtrace_llm_tokens_total)");
    assert_eq!(cost, Some(want_cost), "sum(flowtrace_llm_cost_usd_total)");
    assert_eq!(
        query(
            &http,
            &base,
            "sum(flowtrace_node_executions_total{workflow=\"metrics-demo\"})"
        )
        .await,
        Some(summary.node_executions as f64)
    );
    assert_eq!(
        query(&http, &base, "up{job=\"flowtrace\"}").await,
        Some(1.0),
        "the target is up"
    );

    child.kill().await.unwrap();
    server.shutdown().await;
}
