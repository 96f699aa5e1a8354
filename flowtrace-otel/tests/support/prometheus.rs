//! A real Prometheus server for tests: started on a free loopback port with
//! a temporary configuration scraping one target every second, queried
//! through its HTTP API, killed when dropped. Shared by
//! `flowtrace-otel/tests/metrics` and the root `tests/otel_export`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Whether missing peers fail the tests (`FLOWTRACE_REQUIRE_PEERS=1`).
pub fn require_peers() -> bool {
    std::env::var("FLOWTRACE_REQUIRE_PEERS").as_deref() == Ok("1")
}

/// The `prometheus` binary (`FLOWTRACE_PROMETHEUS`, else on `PATH`), or
/// `None` after a loud SKIPPED line naming `what`.
pub fn prometheus_binary(what: &str) -> Option<PathBuf> {
    let found = std::env::var_os("FLOWTRACE_PROMETHEUS")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("prometheus"))
                    .find(|p| p.is_file())
            })
        });
    if found.is_none() {
        let msg = "no prometheus (apt-get install prometheus, or set FLOWTRACE_PROMETHEUS)";
        assert!(!require_peers(), "FLOWTRACE_REQUIRE_PEERS=1 but {msg}");
        // Straight to stderr: the test harness would swallow `eprintln!`.
        let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {what}: {msg} ***\n");
    }
    found
}

/// A free loopback port (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

/// A running Prometheus scraping one target.
pub struct Prometheus {
    child: tokio::process::Child,
    dir: PathBuf,
    http: reqwest::Client,
    /// Its HTTP API, `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Prometheus {
    /// Starts `bin` scraping `target` (`/metrics`) every second, job
    /// `flowtrace`; waits until it is ready. `scratch` is a directory for
    /// its configuration and data (emptied first, removed on drop).
    pub async fn start(bin: &Path, target: SocketAddr, scratch: PathBuf) -> Self {
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).unwrap();
        let config = scratch.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: flowtrace\n    scrape_interval: 1s\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(scratch.join("prometheus.log")).unwrap();
        let mut child = tokio::process::Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                scratch.join("data").display()
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
        let started = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{base}/-/ready")).send().await
                && r.status().is_success()
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log =
                    std::fs::read_to_string(scratch.join("prometheus.log")).unwrap_or_default();
                panic!("prometheus exited with {status}: {log}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "prometheus never got ready"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Self {
            child,
            dir: scratch,
            http,
            base,
        }
    }

    /// The single value of an instant-vector query, or `None` when the
    /// result is empty.
    pub async fn query(&self, promql: &str) -> Option<f64> {
        let body: serde_json::Value = self
            .http
            .get(format!(
                "{}/api/v1/query?query={}",
                self.base,
                url_encode(promql)
            ))
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

    /// Queries `promql` until it returns `want` (a scrape saw it) or
    /// `within` passes; returns the last value.
    pub async fn wait_for(&self, promql: &str, want: f64, within: Duration) -> Option<f64> {
        let started = Instant::now();
        loop {
            let got = self.query(promql).await;
            if got == Some(want) || started.elapsed() > within {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
