//! Per-tool rate limits: `governor`'s cell rate algorithm on tokio's clock,
//! so a paused test clock drives it like every other timer.

use std::num::NonZeroU32;
use std::ops::Add;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

use super::options::RateLimit;

/// A point on tokio's clock, as `governor` wants it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TokioInstant(Instant);

impl Add<Nanos> for TokioInstant {
    type Output = Self;

    fn add(self, other: Nanos) -> Self {
        Self(self.0 + std::time::Duration::from(other))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        Nanos::from(self.0.saturating_duration_since(earlier.0))
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        Self(
            self.0
                .checked_sub(std::time::Duration::from(duration))
                .unwrap_or(self.0),
        )
    }
}

/// tokio's clock.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TokioClock;

impl Clock for TokioClock {
    type Instant = TokioInstant;

    fn now(&self) -> TokioInstant {
        TokioInstant(Instant::now())
    }
}

/// One tool's limiter.
pub(crate) struct Limiter {
    inner: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<TokioInstant>>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Limiter")
    }
}

impl Limiter {
    /// A limiter for `limit`, or `None` when it allows nothing (zero calls,
    /// a zero window, or more than one call per nanosecond; the options'
    /// checks reject those first).
    pub(crate) fn new(limit: RateLimit) -> Option<Self> {
        let burst = NonZeroU32::new(limit.max_calls)?;
        let quota = Quota::with_period(limit.per / limit.max_calls)?.allow_burst(burst);
        Some(Self {
            inner: RateLimiter::direct_with_clock(quota, TokioClock),
        })
    }

    /// Waits until a call is allowed, and takes its permit.
    ///
    /// # Cancel safety
    /// Dropping the future before it resolves takes no permit.
    pub(crate) async fn acquire(&self) {
        loop {
            match self.inner.check() {
                Ok(()) => return,
                Err(not_until) => {
                    let wait = not_until.wait_time_from(TokioClock.now());
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn permits_follow_the_paused_clock() {
        let limiter = Limiter::new(RateLimit {
            max_calls: 2,
            per: Duration::from_secs(1),
        })
        .unwrap();
        let start = Instant::now();
        for _ in 0..2 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        limiter.acquire().await;
        assert_eq!(start.elapsed(), Duration::from_millis(500));
        assert!(
            Limiter::new(RateLimit {
                max_calls: 0,
                per: Duration::from_secs(1)
            })
            .is_none()
        );
    }
}
