//! Retry policies.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// How a node's transient failures (and timeouts) are retried: exponential
/// backoff from `initial_delay`, multiplied by `multiplier` after each
/// failure, capped at `max_delay`, with optional jitter. Permanent errors are
/// never retried.
///
/// The delay schedule comes from the [`backon`] crate; a node error's
/// [`retry_after`](crate::NodeError::retry_after) (a provider's
/// `Retry-After`) raises the delay when it is longer.
///
/// ```
/// use std::time::Duration;
/// use flowtrace_core::RetryPolicy;
/// let p = RetryPolicy::new(4)
///     .initial_delay(Duration::from_millis(100))
///     .multiplier(2.0)
///     .max_delay(Duration::from_millis(300));
/// let delays: Vec<_> = p.delays().collect();
/// assert_eq!(delays, [Duration::from_millis(100), Duration::from_millis(200), Duration::from_millis(300)]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_delay: Duration,
    max_delay: Duration,
    multiplier: f32,
    jitter: bool,
    jitter_seed: Option<u64>,
    retry_timeouts: bool,
}

impl Default for RetryPolicy {
    /// Three attempts, 500 ms then 1 s, capped at 30 s, no jitter.
    fn default() -> Self {
        Self::new(3)
    }
}

impl RetryPolicy {
    /// Up to `max_attempts` attempts in all (1 = no retry), starting at
    /// 500 ms, doubling, capped at 30 s, no jitter, timeouts retried.
    pub fn new(max_attempts: u32) -> Self {
        Self {
            max_attempts,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: false,
            jitter_seed: None,
            retry_timeouts: true,
        }
    }

    /// No retries.
    pub fn never() -> Self {
        Self::new(1)
    }

    /// Sets the most attempts in all (1 = no retry), keeping the delays.
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Sets the delay before the first retry.
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// Sets the largest delay.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// Sets the growth factor between delays (at least 1.0).
    pub fn multiplier(mut self, multiplier: f32) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Adds a random extra delay of up to 100% of each delay (still capped
    /// at `max_delay`), so many clients do not retry in lockstep.
    pub fn jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// Seeds the jitter's random generator, for reproducible schedules.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.jitter = true;
        self.jitter_seed = Some(seed);
        self
    }

    /// Whether a timed-out attempt is retried (default `true`).
    pub fn retry_timeouts(mut self, retry: bool) -> Self {
        self.retry_timeouts = retry;
        self
    }

    /// The most attempts.
    pub fn get_max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The delay before the first retry.
    pub fn get_initial_delay(&self) -> Duration {
        self.initial_delay
    }

    /// The largest delay.
    pub fn get_max_delay(&self) -> Duration {
        self.max_delay
    }

    /// Whether timeouts are retried.
    pub fn get_retry_timeouts(&self) -> bool {
        self.retry_timeouts
    }

    /// What is wrong with the policy, if anything.
    pub(crate) fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.max_attempts == 0 {
            out.push(("retry.max_attempts", "must be at least 1".to_string()));
        }
        if !(self.multiplier >= 1.0 && self.multiplier.is_finite()) {
            out.push((
                "retry.multiplier",
                format!("must be a finite number >= 1.0, got {}", self.multiplier),
            ));
        }
        if self.initial_delay > self.max_delay {
            out.push((
                "retry.initial_delay",
                format!(
                    "{:?} is larger than max_delay {:?}",
                    self.initial_delay, self.max_delay
                ),
            ));
        }
        out
    }

    /// The delays before each retry, in order (`max_attempts - 1` of them).
    pub fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        let mut builder = ExponentialBuilder::new()
            .with_min_delay(self.initial_delay)
            .with_max_delay(self.max_delay)
            .with_factor(self.multiplier.max(1.0))
            .with_max_times(self.max_attempts.saturating_sub(1) as usize);
        if self.jitter {
            builder = builder.with_jitter();
            if let Some(seed) = self.jitter_seed {
                builder = builder.with_jitter_seed(seed);
            }
        }
        let cap = self.max_delay;
        // backon multiplies in f32; round to whole microseconds so schedules
        // are exact (200 ms, not 200.000003 ms).
        builder.build().map(move |d| round_to_micros(d).min(cap))
    }
}

impl RetryPolicy {
    /// The delay to wait before a retry whose schedule says `scheduled`
    /// (an item of [`delays`](Self::delays)) when the failure asked for
    /// `retry_after` (a provider's `Retry-After`): the longer of the two, or
    /// `None` when `retry_after` exceeds [`max_delay`](Self::max_delay) —
    /// the caller should then give up (or move on) rather than wait that
    /// long.
    ///
    /// ```
    /// use std::time::Duration;
    /// use flowtrace_core::RetryPolicy;
    /// let p = RetryPolicy::new(3).max_delay(Duration::from_secs(10));
    /// let ms = Duration::from_millis;
    /// assert_eq!(p.delay_with_retry_after(ms(500), None), Some(ms(500)));
    /// assert_eq!(p.delay_with_retry_after(ms(500), Some(ms(2000))), Some(ms(2000)));
    /// assert_eq!(p.delay_with_retry_after(ms(500), Some(ms(100))), Some(ms(500)));
    /// assert_eq!(p.delay_with_retry_after(ms(500), Some(ms(11_000))), None);
    /// ```
    pub fn delay_with_retry_after(
        &self,
        scheduled: Duration,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        match retry_after {
            Some(wait) if wait > self.max_delay => None,
            Some(wait) => Some(wait.max(scheduled)),
            None => Some(scheduled),
        }
    }
}

fn round_to_micros(d: Duration) -> Duration {
    Duration::from_micros(((d.as_nanos() + 500) / 1000) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_bounds_and_is_reproducible() {
        let p = RetryPolicy::new(6)
            .initial_delay(Duration::from_millis(100))
            .max_delay(Duration::from_secs(10))
            .jitter_seed(7);
        let a: Vec<_> = p.delays().collect();
        let b: Vec<_> = p.delays().collect();
        assert_eq!(a, b);
        assert_eq!(a.len(), 5);
        let mut base = Duration::from_millis(100);
        for d in a {
            assert!(
                d >= base && d < base * 2,
                "{d:?} not in [{base:?}, {:?})",
                base * 2
            );
            base *= 2;
        }
    }

    #[test]
    fn retry_after_raises_the_delay_up_to_max_delay() {
        let ms = Duration::from_millis;
        let p = RetryPolicy::new(4)
            .initial_delay(ms(100))
            .max_delay(ms(1000));
        let mut delays = p.delays();
        let first = delays.next().unwrap_or_default();
        assert_eq!(p.delay_with_retry_after(first, None), Some(ms(100)));
        assert_eq!(p.delay_with_retry_after(first, Some(ms(50))), Some(ms(100)));
        assert_eq!(
            p.delay_with_retry_after(first, Some(ms(400))),
            Some(ms(400))
        );
        // Exactly max_delay still waits; beyond it gives up.
        assert_eq!(
            p.delay_with_retry_after(first, Some(ms(1000))),
            Some(ms(1000))
        );
        assert_eq!(p.delay_with_retry_after(first, Some(ms(1001))), None);
    }

    #[test]
    fn problems_are_reported() {
        let p = RetryPolicy::new(0)
            .multiplier(0.5)
            .initial_delay(Duration::from_secs(5))
            .max_delay(Duration::from_secs(1));
        let names: Vec<_> = p.problems().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "retry.max_attempts",
                "retry.multiplier",
                "retry.initial_delay"
            ]
        );
    }
}
