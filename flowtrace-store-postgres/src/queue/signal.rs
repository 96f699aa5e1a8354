//! Requests from other processes, delivered to the run they name.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flowtrace_core::exec::HaltSignal;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::NOTIFY_CHANNEL;

/// What another process asked of one run a worker holds: halt at the next
/// safe point, or cancel now. The worker flips it when a `NOTIFY` arrives
/// on [`NOTIFY_CHANNEL`] (or, if one was missed, at the next heartbeat);
/// the executor reads it through [`HaltSignal`].
#[derive(Debug, Default)]
pub struct RemoteSignal {
    halt: AtomicBool,
    cancel: CancellationToken,
    canceled: AtomicBool,
}

impl RemoteSignal {
    /// A signal nobody has raised.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the run to halt at its next safe point.
    pub fn halt(&self) {
        self.halt.store(true, Ordering::Release);
    }

    /// Cancels the run now.
    pub fn cancel(&self) {
        self.canceled.store(true, Ordering::Release);
        self.cancel.cancel();
    }

    /// Whether the run was canceled on request (rather than stopped by its
    /// worker).
    pub fn cancel_requested(&self) -> bool {
        self.canceled.load(Ordering::Acquire)
    }

    /// The token the run is canceled through (by a request, a lost lease or
    /// the worker shutting down).
    pub fn token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Applies a request by name (`halt`, `cancel`); others are ignored.
    pub(crate) fn apply(&self, what: &str) {
        match what {
            "halt" => self.halt(),
            "cancel" => self.cancel(),
            _ => {}
        }
    }
}

impl HaltSignal for RemoteSignal {
    fn halt_requested(&self) -> bool {
        self.halt.load(Ordering::Acquire)
    }
}

/// How long the listener waits before reconnecting after a failure.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// Listens on [`NOTIFY_CHANNEL`] until `stop`: wakes the claim loop on
/// `queue`, and hands `halt:<id>` / `cancel:<id>` to `deliver`. Reconnects
/// after failures (a request missed meanwhile reaches the run at its next
/// heartbeat).
pub(crate) async fn listen(
    pool: PgPool,
    wake: Arc<Notify>,
    deliver: impl Fn(&str, &str) + Send + 'static,
    stop: CancellationToken,
) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "run signals: cannot connect; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RECONNECT_DELAY) => continue,
                }
            }
        };
        if let Err(e) = listener.listen(NOTIFY_CHANNEL).await {
            tracing::warn!(error = %e, "run signals: cannot listen; retrying");
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(RECONNECT_DELAY) => continue,
            }
        }
        // Whatever was claimable while we were away.
        wake.notify_one();
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                n = listener.try_recv() => n,
            };
            match next {
                Ok(Some(n)) => {
                    let payload = n.payload();
                    match payload.split_once(':') {
                        Some((what, run_id)) => deliver(what, run_id),
                        None => wake.notify_one(),
                    }
                }
                // The connection dropped: `try_recv` reconnects on the next
                // call; notifications sent meanwhile are lost, so look at the
                // queue again.
                Ok(None) => wake.notify_one(),
                Err(e) => {
                    tracing::warn!(error = %e, "run signals: listener failed; reconnecting");
                    break;
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RECONNECT_DELAY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_flip_the_signal() {
        let s = RemoteSignal::new();
        assert!(!s.halt_requested());
        s.apply("resume");
        assert!(!s.halt_requested() && !s.token().is_cancelled());
        s.apply("halt");
        assert!(s.halt_requested());
        assert!(!s.cancel_requested());
        s.apply("cancel");
        assert!(s.cancel_requested() && s.token().is_cancelled());
    }
}
