//! A minimal headless-Chromium driver for tests, speaking the Chrome DevTools
//! Protocol (CDP) over one WebSocket. It starts a locally installed browser (it
//! never downloads one), opens pages, evaluates JavaScript, clicks with real mouse
//! events and takes screenshots. Every step is bounded by [`TIMEOUT`], so a test
//! fails instead of hanging, and the browser is killed and its temporary profile
//! removed by [`Browser::close`] or when the [`Browser`] is dropped (also on panic).
#![allow(dead_code)] // Each test binary uses only part of this module.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use futures::{SinkExt as _, StreamExt as _, stream::SplitSink};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

/// Any error of this module; its message says which step failed.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
/// Result with this module's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Upper bound for starting the browser, for each CDP call and for a page load.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Chromium flags, besides `--user-data-dir` and `--remote-debugging-port=0`.
pub const FLAGS: &str = "--headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
    --disable-background-networking --disable-component-update --disable-default-apps \
    --disable-extensions --disable-sync --no-first-run --no-default-browser-check --mute-audio \
    --hide-scrollbars --force-device-scale-factor=1 --window-size=1280,800";

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;

/// The WebSocket to the browser; replies are matched to requests by id.
struct Conn {
    sink: tokio::sync::Mutex<Sink>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Value>>>>,
    next_id: AtomicU64,
    closed: AtomicBool,
}

impl Conn {
    /// Sends one CDP command (to a tab when `session` is set) and waits for its reply.
    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let exchange = async {
            if self.closed.load(Ordering::SeqCst) {
                return Err("the browser connection is closed".into());
            }
            let text = Message::text(msg.to_string());
            self.sink.lock().await.send(text).await?;
            rx.await.map_err(|_| "the browser connection closed")?
        };
        let out = timeout(TIMEOUT, exchange).await;
        lock(&self.pending).remove(&id);
        match out {
            Ok(r) => r.map_err(|e| format!("CDP {method}: {e}").into()),
            Err(_) => Err(format!("CDP {method}: no reply within {TIMEOUT:?}").into()),
        }
    }

    /// Marks the connection closed and fails every call still waiting for a reply.
    fn shut(&self) {
        self.closed.store(true, Ordering::SeqCst);
        lock(&self.pending).clear();
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The string field `key` of a CDP reply.
fn field(reply: &Value, key: &str) -> Result<String> {
    let s = reply[key]
        .as_str()
        .ok_or_else(|| format!("no {key} in {reply}"));
    Ok(s?.to_owned())
}

/// The browser process (`.0`) and its profile directory (`.1`): killed and removed on drop.
#[derive(Debug)]
struct Proc(Option<Child>, PathBuf);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Chromium's helper processes outlive the main one by a few ms and may still write here.
        for _ in 0..40 {
            if std::fs::remove_dir_all(&self.1).is_ok() || !self.1.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A running headless Chromium with a throw-away profile.
#[derive(Debug)]
pub struct Browser {
    conn: Arc<Conn>,
    proc: Proc,
}

impl Browser {
    /// Starts the Chromium binary at `path` (e.g. `/usr/bin/chromium`) and connects to it.
    pub async fn launch(path: impl AsRef<Path>) -> Result<Browser> {
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let (path, n) = (path.as_ref(), COUNT.fetch_add(1, Ordering::Relaxed));
        let nanos = UNIX_EPOCH.elapsed().map_or(0, |d| d.as_nanos());
        let name = format!("cdp-test-{}-{n}-{nanos}", std::process::id());
        let profile = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&profile)?;
        // From here on, an early return drops `proc`: chromium is killed, the profile removed.
        let mut proc = Proc(None, profile);
        // Chromium's stderr goes to a file (a pipe would need draining); it is quoted on failure.
        let log_path = proc.1.join("chromium.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(path)
            .args(FLAGS.split_whitespace())
            .arg(format!("--user-data-dir={}", proc.1.display()))
            .args(["--remote-debugging-port=0", "about:blank"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", path.display()))?;
        proc.0 = Some(child);
        // Chromium writes its port and browser path to this file once it is listening.
        let port_file = proc.1.join("DevToolsActivePort");
        let deadline = Instant::now() + TIMEOUT;
        let url = loop {
            let text = std::fs::read_to_string(&port_file).unwrap_or_default();
            if let Some((port, ws_path)) = text.trim().split_once('\n')
                && ws_path.starts_with("/devtools/browser/")
            {
                break format!("ws://127.0.0.1:{port}{ws_path}");
            }
            let status = proc.0.as_mut().map(Child::try_wait);
            if !matches!(status, Some(Ok(None))) || Instant::now() >= deadline {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("chromium not listening ({status:?}); stderr:\n{log}").into());
            }
            sleep(Duration::from_millis(20)).await;
        };
        let (ws, _) = timeout(TIMEOUT, tokio_tungstenite::connect_async(url.as_str()))
            .await
            .map_err(|_| format!("connecting to {url} timed out"))??;
        let (sink, mut stream) = ws.split();
        let conn = Arc::new(Conn {
            sink: tokio::sync::Mutex::new(sink),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
        });
        let reader = Arc::clone(&conn);
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                // Events carry no id: this driver polls the page instead of listening to them.
                if let Ok(v) = serde_json::from_slice::<Value>(&msg.into_data())
                    && let Some(id) = v["id"].as_u64()
                    && let Some(tx) = lock(&reader.pending).remove(&id)
                {
                    let _ = tx.send(match v.get("error") {
                        Some(e) => Err(format!("error reply {e}").into()),
                        None => Ok(v.get("result").cloned().unwrap_or(Value::Null)),
                    });
                }
            }
            reader.shut();
        });
        Ok(Browser { conn, proc })
    }

    /// Sends a raw browser-level CDP command, e.g. `("Browser.getVersion", json!({}))`.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.conn.call(None, method, params).await
    }

    /// Opens `url` in a new tab with a 1280×800 viewport (so screenshots are alike everywhere)
    /// and waits until its document has fully loaded.
    pub async fn open(&self, url: &str) -> Result<Page> {
        let blank = json!({ "url": "about:blank" });
        let target = field(&self.call("Target.createTarget", blank).await?, "targetId")?;
        let attach = json!({ "targetId": target, "flatten": true });
        let attached = self.call("Target.attachToTarget", attach).await?;
        let (conn, session) = (Arc::clone(&self.conn), field(&attached, "sessionId")?);
        let page = Page { conn, session };
        let vp = json!({ "width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false });
        page.call("Emulation.setDeviceMetricsOverride", vp).await?;
        let nav = page.call("Page.navigate", json!({ "url": url })).await?;
        if let Some(err) = nav.get("errorText").and_then(Value::as_str) {
            return Err(format!("opening {url} failed: {err}").into());
        }
        // Polls rather than waiting for Page.loadEventFired, which about:blank's own load
        // could fake; errors like "execution context destroyed" are normal while navigating.
        let loaded = "document.readyState === 'complete' && location.href !== 'about:blank'";
        let deadline = Instant::now() + TIMEOUT;
        while !matches!(page.eval::<bool>(loaded).await, Ok(true)) {
            if Instant::now() >= deadline {
                return Err(format!("{url} did not finish loading within {TIMEOUT:?}").into());
            }
            sleep(Duration::from_millis(50)).await;
        }
        Ok(page)
    }

    /// Asks the browser to quit, waits up to 2 s, then kills what is left and removes the profile.
    pub async fn close(mut self) {
        let quit = self.call("Browser.close", json!({}));
        let _ = timeout(Duration::from_secs(2), quit).await;
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Some(Ok(None)) = self.proc.0.as_mut().map(Child::try_wait) {
            if Instant::now() >= deadline {
                break;
            }
            sleep(Duration::from_millis(50)).await;
        }
    } // Dropping `self` here kills the browser if it is still running.
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.conn.shut(); // Then `proc` drops: chromium is killed and the profile removed.
    }
}

/// One tab, attached through a flattened CDP session. Calls fail once the browser is gone.
#[derive(Clone, Debug)]
pub struct Page {
    conn: Arc<Conn>,
    session: String,
}

impl Page {
    /// Sends a raw CDP command to this tab, e.g. `("Page.reload", json!({}))`.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.conn.call(Some(&self.session), method, params).await
    }

    /// Evaluates a JavaScript expression, awaits it if it is a promise, and converts its
    /// JSON value into `T` (`undefined` becomes `null`). A thrown exception is an error.
    pub async fn eval<T: serde::de::DeserializeOwned>(&self, expr: &str) -> Result<T> {
        let params = json!({ "expression": expr, "returnByValue": true, "awaitPromise": true });
        let r = self.call("Runtime.evaluate", params).await?;
        if let Some(ex) = r.get("exceptionDetails") {
            let text = ex.pointer("/exception/description").unwrap_or(ex);
            return Err(format!("JavaScript error in `{expr}`: {text}").into());
        }
        let value = r.pointer("/result/value").cloned().unwrap_or(Value::Null);
        serde_json::from_value(value).map_err(|e| format!("`{expr}` gave {e}").into())
    }

    /// Clicks the centre of the first element matching the CSS `selector` with real mouse
    /// events (`event.isTrusted` is true), after scrolling it into view and waiting until it
    /// stops moving. Fails if it is missing, has no size, or another element covers its centre.
    pub async fn click(&self, selector: &str) -> Result<()> {
        let js = CLICK_JS.replace("SELECTOR", &serde_json::to_string(selector)?);
        let point: Value = self.eval(&script(&js)).await?;
        let (Some(x), Some(y)) = (point[0].as_f64(), point[1].as_f64()) else {
            return Err(format!("cannot click {selector}: {point}").into());
        };
        let moved = json!({ "type": "mouseMoved", "x": x, "y": y });
        self.call("Input.dispatchMouseEvent", moved).await?;
        for (kind, buttons) in [("mousePressed", 1), ("mouseReleased", 0)] {
            let event = json!({ "type": kind, "x": x, "y": y, "button": "left",
                                "buttons": buttons, "clickCount": 1 });
            self.call("Input.dispatchMouseEvent", event).await?;
        }
        Ok(())
    }

    /// Waits until the page stops scrolling or growing (e.g. after a smooth scroll).
    pub async fn settle(&self) -> Result<()> {
        let js = "await stable(() => [scrollX, scrollY, document.documentElement.scrollHeight]);";
        self.eval(&script(js)).await
    }

    /// Takes a PNG screenshot of the viewport once the page has settled.
    pub async fn screenshot(&self) -> Result<Vec<u8>> {
        self.settle().await?;
        let png = json!({ "format": "png" });
        let r = self.call("Page.captureScreenshot", png).await?;
        Ok(base64::engine::general_purpose::STANDARD.decode(field(&r, "data")?)?)
    }
}

/// Wraps `body` in an async function that can use `stable(key)`: it resolves once `key()`
/// is unchanged over three frames (at most 60 frames of at most 100 ms each).
fn script(body: &str) -> String {
    let stable =
        "const frame = () => new Promise(r => { requestAnimationFrame(r); setTimeout(r, 100); });
      const stable = async (key) => { let last = '', same = 0;
        for (let i = 0; i < 60 && same < 3; i++) {
          await frame(); const k = key().join(); same = k === last ? same + 1 : 0; last = k; } };";
    format!("(async () => {{ {stable}\n{body} }})()")
}

/// Scrolls the element into view if its centre is outside the viewport, waits until it stops
/// moving (smooth scrolling would otherwise slide another element under the mouse), then
/// gives `[x, y]` of its centre, or the reason it cannot be clicked as a string.
const CLICK_JS: &str = "const el = document.querySelector(SELECTOR);
  if (!el) return 'no element matches';
  const box = () => { const r = el.getBoundingClientRect();
    return [r.left + r.width / 2, r.top + r.height / 2, r.width, r.height]; };
  const inView = ([x, y]) => x >= 0 && y >= 0 && x < innerWidth && y < innerHeight;
  for (let tries = 0; tries < 3; tries++) {
    if (!inView(box())) el.scrollIntoView({ block: 'center', inline: 'center', behavior: 'instant' });
    await stable(box);
    const [x, y, w, h] = box();
    if (w < 1 || h < 1) return 'element has no size (hidden?)';
    if (!inView([x, y])) continue;
    const hit = document.elementFromPoint(x, y);
    if (hit === el || el.contains(hit)) return [x, y];
    return 'its centre is covered by ' + (hit ? hit.outerHTML.slice(0, 80) : 'nothing');
  }
  return 'could not scroll it into view';";
