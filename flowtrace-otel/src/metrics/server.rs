//! A tiny HTTP/1.1 server answering `GET /metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use super::{MetricsError, PrometheusEndpoint};

/// The largest request head read (request line and headers); a longer one
/// is answered `431` and the connection closed.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Time allowed to read a request and write its answer; a slower client
/// is disconnected.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections served at once; further ones wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;

/// A running metrics server (see [`serve_metrics`]). Dropping it stops the
/// server; [`shutdown`](Self::shutdown) stops it and waits.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// The address it listens on (with the port the OS chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections and waits for the accept loop to end
    /// (connections being served finish within [`REQUEST_TIMEOUT`]).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Serves `endpoint` at `GET /metrics` on `addr` (use port 0 for any free
/// port), on the current tokio runtime, until the returned
/// [`MetricsServer`] is shut down or dropped.
///
/// A minimal HTTP/1.1 handler: one request per connection
/// (`Connection: close`), heads up to [`MAX_REQUEST_BYTES`], each exchange
/// within [`REQUEST_TIMEOUT`], at most [`MAX_CONNECTIONS`] at once. Other
/// paths get `404`, other methods `405`.
///
/// ```no_run
/// # async fn f() -> Result<(), flowtrace_otel::MetricsError> {
/// use flowtrace_otel::{OtelMetrics, serve_metrics};
/// let metrics = OtelMetrics::builder().build()?;
/// if let Some(endpoint) = metrics.endpoint() {
///     let server = serve_metrics("127.0.0.1:9464".parse().unwrap(), endpoint).await?;
///     println!("metrics on http://{}/metrics", server.local_addr());
///     server.shutdown().await;
/// }
/// # Ok(())
/// # }
/// ```
pub async fn serve_metrics(
    addr: SocketAddr,
    endpoint: PrometheusEndpoint,
) -> Result<MetricsServer, MetricsError> {
    let bind = |source| MetricsError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind)?;
    let local = listener.local_addr().map_err(bind)?;
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let permit = tokio::select! {
                _ = stopped.changed() => return,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let stream = tokio::select! {
                _ = stopped.changed() => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::debug!(error = %e, "metrics server: accept failed");
                        // Out of descriptors and the like: back off briefly.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &endpoint)).await;
            });
        }
    });
    Ok(MetricsServer {
        addr: local,
        stop,
        task: Some(task),
    })
}

/// Reads one request head and writes the answer.
async fn answer(mut stream: TcpStream, endpoint: &PrometheusEndpoint) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let complete = loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            break true;
        }
        if head.len() > MAX_REQUEST_BYTES {
            break false;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break head.windows(4).any(|w| w == b"\r\n\r\n");
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
    };
    let (status, content_type, body) = if !complete {
        if head.len() > MAX_REQUEST_BYTES {
            (
                "431 Request Header Fields Too Large",
                "text/plain",
                "request too large\n".to_string(),
            )
        } else {
            return Ok(());
        }
    } else {
        let line = head
            .split(|b| *b == b'\n')
            .next()
            .and_then(|l| std::str::from_utf8(l).ok())
            .unwrap_or_default()
            .trim_end();
        let mut parts = line.split(' ');
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path = target.split('?').next().unwrap_or("");
        match (method, path) {
            ("GET" | "HEAD", "/metrics") => match endpoint.render() {
                Ok(text) => ("200 OK", PrometheusEndpoint::CONTENT_TYPE, text),
                Err(e) => ("500 Internal Server Error", "text/plain", format!("{e}\n")),
            },
            (_, "/metrics") => (
                "405 Method Not Allowed",
                "text/plain",
                "method not allowed\n".to_string(),
            ),
            _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
        }
    };
    let is_head = head.starts_with(b"HEAD ");
    let allow = if status.starts_with("405") {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !is_head {
        out.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&out).await?;
    stream.shutdown().await
}
