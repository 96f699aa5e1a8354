//! Agent health: error rate and latency over a bounded recent window.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// The most recent calls a health window holds unless configured otherwise.
pub const DEFAULT_HEALTH_WINDOW: usize = 20;

/// The most calls any health window holds, whatever it is configured with.
pub const MAX_HEALTH_WINDOW: usize = 10_000;

/// How long a call counts towards health unless configured otherwise: an
/// agent judged unhealthy is tried again once its failures are this old.
pub const DEFAULT_HEALTH_MAX_AGE: Duration = Duration::from_secs(300);

/// When an agent counts as healthy, judged over its recent calls: the last
/// [`window`](Self::window) calls no older than [`max_age`](Self::max_age).
///
/// With fewer than [`min_calls`](Self::min_calls) such calls an agent is
/// healthy (nothing to judge yet). Otherwise it is healthy when at most
/// [`max_error_percent`](Self::max_error_percent) percent of them failed
/// and, if set, their mean latency is at most
/// [`max_mean_latency`](Self::max_mean_latency). Both comparisons are exact
/// integer arithmetic (`errors × 100 ≤ percent × calls`, `total latency ≤
/// limit × calls`), never rounded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct HealthPolicy {
    window: usize,
    max_age: Duration,
    min_calls: u32,
    max_error_percent: u32,
    max_mean_latency: Option<Duration>,
}

impl Default for HealthPolicy {
    /// The last [`DEFAULT_HEALTH_WINDOW`] calls within
    /// [`DEFAULT_HEALTH_MAX_AGE`], judged from 3 calls, at most 50 % errors,
    /// no latency bound.
    fn default() -> Self {
        Self {
            window: DEFAULT_HEALTH_WINDOW,
            max_age: DEFAULT_HEALTH_MAX_AGE,
            min_calls: 3,
            max_error_percent: 50,
            max_mean_latency: None,
        }
    }
}

impl HealthPolicy {
    /// The default policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets how many recent calls count (1 to [`MAX_HEALTH_WINDOW`]).
    pub fn window(mut self, calls: usize) -> Self {
        self.window = calls.clamp(1, MAX_HEALTH_WINDOW);
        self
    }

    /// Sets how long a call counts.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }

    /// Sets how many calls are needed before an agent can be unhealthy.
    pub fn min_calls(mut self, calls: u32) -> Self {
        self.min_calls = calls;
        self
    }

    /// Sets the highest error percentage of a healthy agent (at most 100).
    pub fn max_error_percent(mut self, percent: u32) -> Self {
        self.max_error_percent = percent.min(100);
        self
    }

    /// Sets the highest mean latency of a healthy agent (`None`: no bound).
    pub fn max_mean_latency(mut self, latency: impl Into<Option<Duration>>) -> Self {
        self.max_mean_latency = latency.into();
        self
    }

    /// The window size.
    pub fn get_window(&self) -> usize {
        self.window
    }

    /// The age limit.
    pub fn get_max_age(&self) -> Duration {
        self.max_age
    }

    /// The calls needed to judge.
    pub fn get_min_calls(&self) -> u32 {
        self.min_calls
    }

    /// The error percentage limit.
    pub fn get_max_error_percent(&self) -> u32 {
        self.max_error_percent
    }

    /// The mean latency limit.
    pub fn get_max_mean_latency(&self) -> Option<Duration> {
        self.max_mean_latency
    }
}

/// An agent's health over its recent calls.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Calls in the window.
    pub calls: u32,
    /// Of which failed.
    pub errors: u32,
    /// Their summed latency.
    pub total_latency: Duration,
    /// Whether the agent counts as healthy under the policy.
    pub healthy: bool,
}

impl Health {
    /// The mean latency (exact to the nanosecond, rounded down); `None`
    /// without calls.
    pub fn mean_latency(&self) -> Option<Duration> {
        (self.calls > 0).then(|| self.total_latency / self.calls)
    }

    /// The error rate as a fraction `(errors, calls)`, for exact
    /// comparisons.
    pub fn error_rate(&self) -> (u32, u32) {
        (self.errors, self.calls)
    }
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    ok: bool,
    latency: Duration,
}

/// The recent calls of one agent.
#[derive(Debug, Default)]
pub(crate) struct HealthWindow {
    samples: VecDeque<Sample>,
}

impl HealthWindow {
    /// Records a call that ended at `at`.
    pub(crate) fn record(
        &mut self,
        policy: &HealthPolicy,
        at: Instant,
        ok: bool,
        latency: Duration,
    ) {
        while self.samples.len() >= policy.window {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample { at, ok, latency });
    }

    /// The health at `now`, forgetting calls older than the policy's age.
    pub(crate) fn health(&mut self, policy: &HealthPolicy, now: Instant) -> Health {
        while self
            .samples
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.at) > policy.max_age)
        {
            self.samples.pop_front();
        }
        let mut calls = 0u32;
        let mut errors = 0u32;
        let mut total = Duration::ZERO;
        for s in &self.samples {
            calls = calls.saturating_add(1);
            if !s.ok {
                errors = errors.saturating_add(1);
            }
            total = total.saturating_add(s.latency);
        }
        let healthy = if calls < policy.min_calls {
            true
        } else {
            let rate_ok =
                u64::from(errors) * 100 <= u64::from(policy.max_error_percent) * u64::from(calls);
            let latency_ok = match policy.max_mean_latency {
                None => true,
                // An overflowing bound is larger than any real total.
                Some(limit) => limit.checked_mul(calls).is_none_or(|bound| total <= bound),
            };
            rate_ok && latency_ok
        };
        Health {
            calls,
            errors,
            total_latency: total,
            healthy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn exact_thresholds_and_expiry() {
        let policy = HealthPolicy::new()
            .window(4)
            .min_calls(2)
            .max_error_percent(50)
            .max_mean_latency(Duration::from_millis(100))
            .max_age(Duration::from_secs(60));
        let mut w = HealthWindow::default();
        let t0 = Instant::now();
        w.record(&policy, t0, false, Duration::from_millis(100));
        assert!(
            w.health(&policy, t0).healthy,
            "one call is too few to judge"
        );
        w.record(&policy, t0, true, Duration::from_millis(100));
        // 1 of 2 = exactly 50 %, mean exactly 100 ms: healthy.
        let h = w.health(&policy, t0);
        assert_eq!((h.calls, h.errors), (2, 1));
        assert_eq!(h.mean_latency(), Some(Duration::from_millis(100)));
        assert!(h.healthy);
        // One more nanosecond of latency tips the mean over.
        w.record(&policy, t0, true, Duration::from_nanos(100_000_001));
        let h = w.health(&policy, t0);
        assert_eq!(h.total_latency, Duration::from_nanos(300_000_001));
        assert!(!h.healthy);
        // The window keeps the last 4 calls.
        for _ in 0..4 {
            w.record(&policy, t0, false, Duration::ZERO);
        }
        let h = w.health(&policy, t0);
        assert_eq!((h.calls, h.errors), (4, 4));
        assert!(!h.healthy);
        // Old calls stop counting.
        let later = t0 + Duration::from_secs(61);
        let h = w.health(&policy, later);
        assert_eq!(h.calls, 0);
        assert!(h.healthy);
    }
}
