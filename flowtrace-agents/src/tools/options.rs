//! Per-tool settings: timeout, retries, result cache, rate limit and size
//! limits.

use std::time::Duration;

use flowtrace_core::RetryPolicy;

/// How long one attempt of a tool call may take, unless the tool's
/// [`ToolOptions::timeout`] says otherwise: 30 s.
pub const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest output a tool may return, as bytes of compact JSON, unless
/// its [`ToolOptions::max_output_bytes`] says otherwise: 1 MiB.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1 << 20;

/// The largest input a tool accepts, as bytes of compact JSON, unless its
/// [`ToolOptions::max_input_bytes`] says otherwise: 256 KiB. Input is
/// usually written by a model, so it is untrusted.
pub const DEFAULT_MAX_INPUT_BYTES: usize = 256 << 10;

/// The deepest nesting of arrays and objects accepted in a tool's input or
/// output (the same as `serde_json`'s parser limit, so any JSON text it
/// parses fits). Bounds the recursion of validation, hashing and scrubbing.
pub const MAX_JSON_DEPTH: usize = 128;

/// The most results one tool's cache keeps; the least recently used ones go
/// first. A cache therefore holds at most `MAX_CACHE_ENTRIES` times the
/// tool's `max_output_bytes`.
pub const MAX_CACHE_ENTRIES: u64 = 1024;

/// How a [`ToolRegistry`](super::ToolRegistry) runs one tool.
///
/// # Order
/// Per call: the result cache is consulted first (a fresh hit never calls
/// the tool and is never rate limited); otherwise each attempt waits for a
/// rate-limit permit and runs the tool, both within the attempt's
/// [`timeout`](Self::timeout); a failed attempt whose error is retryable
/// ([`Timeout`](flowtrace_core::ToolErrorKind::Timeout),
/// [`Unavailable`](flowtrace_core::ToolErrorKind::Unavailable)) is retried
/// after the [`retry`](Self::retry) policy's next delay. Only a successful
/// result is cached.
///
/// ```
/// use std::time::Duration;
/// use flowtrace_agents::tools::{ToolOptions, DEFAULT_TOOL_TIMEOUT};
/// use flowtrace_core::RetryPolicy;
///
/// let options = ToolOptions::new()
///     .timeout(Duration::from_secs(5))
///     .retry(RetryPolicy::new(3).initial_delay(Duration::from_millis(200)))
///     .cache(Duration::from_secs(60))
///     .rate_limit(10, Duration::from_secs(1))
///     .max_output_bytes(64 * 1024);
/// assert_eq!(options.get_timeout(), Duration::from_secs(5));
/// assert_eq!(ToolOptions::default().get_timeout(), DEFAULT_TOOL_TIMEOUT);
/// assert_eq!(options.get_cache_ttl(), Some(Duration::from_secs(60)));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[must_use]
pub struct ToolOptions {
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) cache_ttl: Option<Duration>,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) max_output_bytes: usize,
    pub(crate) max_input_bytes: usize,
}

/// At most `max_calls` calls per `per`, as a steady rate with bursts of up
/// to `max_calls` (a generic cell rate algorithm, through `governor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Calls allowed per window (also the largest burst).
    pub max_calls: u32,
    /// The window.
    pub per: Duration,
}

impl Default for ToolOptions {
    /// A [`DEFAULT_TOOL_TIMEOUT`], no retry, no cache, no rate limit,
    /// [`DEFAULT_MAX_OUTPUT_BYTES`] and [`DEFAULT_MAX_INPUT_BYTES`].
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TOOL_TIMEOUT,
            retry: RetryPolicy::never(),
            cache_ttl: None,
            rate_limit: None,
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            max_input_bytes: DEFAULT_MAX_INPUT_BYTES,
        }
    }
}

impl ToolOptions {
    /// The defaults (see [`Default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// How long one attempt may take, rate-limit wait included; an attempt
    /// that takes longer fails with
    /// [`Timeout`](flowtrace_core::ToolErrorKind::Timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Retries retryable failures with `policy` (its
    /// [`delays`](RetryPolicy::delays), and
    /// [`retry_timeouts`](RetryPolicy::retry_timeouts) for timeouts),
    /// emitting a `retry` event before each retry. Default: no retry.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Keeps successful results for `ttl`, keyed by the tool and its
    /// canonical input (object keys sorted), at most [`MAX_CACHE_ENTRIES`]
    /// of them. Only for tools whose result depends on the input alone.
    pub fn cache(mut self, ttl: Duration) -> Self {
        self.cache_ttl = Some(ttl);
        self
    }

    /// Allows at most `max_calls` calls per `per` (bursts of up to
    /// `max_calls`); further calls wait for a permit, and the wait counts
    /// against the [`timeout`](Self::timeout). `max_calls` must be at least
    /// 1 and `per` non-zero, checked by
    /// [`build`](super::ToolRegistryBuilder::build).
    pub fn rate_limit(mut self, max_calls: u32, per: Duration) -> Self {
        self.rate_limit = Some(RateLimit { max_calls, per });
        self
    }

    /// The largest output, as bytes of compact JSON; a larger one fails
    /// with [`LimitExceeded`](flowtrace_core::ToolErrorKind::LimitExceeded).
    pub fn max_output_bytes(mut self, bytes: usize) -> Self {
        self.max_output_bytes = bytes;
        self
    }

    /// The largest input, as bytes of compact JSON; a larger one is refused
    /// with [`LimitExceeded`](flowtrace_core::ToolErrorKind::LimitExceeded)
    /// before the tool is called.
    pub fn max_input_bytes(mut self, bytes: usize) -> Self {
        self.max_input_bytes = bytes;
        self
    }

    /// The per-attempt timeout.
    pub fn get_timeout(&self) -> Duration {
        self.timeout
    }

    /// The retry policy.
    pub fn get_retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// How long results are cached, if they are.
    pub fn get_cache_ttl(&self) -> Option<Duration> {
        self.cache_ttl
    }

    /// The rate limit, if any.
    pub fn get_rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
    }

    /// The output limit in bytes.
    pub fn get_max_output_bytes(&self) -> usize {
        self.max_output_bytes
    }

    /// The input limit in bytes.
    pub fn get_max_input_bytes(&self) -> usize {
        self.max_input_bytes
    }

    /// What is wrong with the options, as (option, problem) pairs.
    pub(crate) fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.timeout.is_zero() {
            out.push(("timeout", "must be longer than zero".to_string()));
        }
        if self.retry.get_max_attempts() == 0 {
            out.push(("retry.max_attempts", "must be at least 1".to_string()));
        }
        if self.retry.get_initial_delay() > self.retry.get_max_delay() {
            out.push((
                "retry.initial_delay",
                format!(
                    "{:?} is larger than max_delay {:?}",
                    self.retry.get_initial_delay(),
                    self.retry.get_max_delay()
                ),
            ));
        }
        if self.cache_ttl.is_some_and(|t| t.is_zero()) {
            out.push(("cache", "the time to live must be longer than zero".into()));
        }
        if let Some(limit) = self.rate_limit {
            if limit.max_calls == 0 {
                out.push(("rate_limit.max_calls", "must be at least 1".to_string()));
            }
            if limit.per.is_zero() {
                out.push(("rate_limit.per", "must be longer than zero".to_string()));
            } else if limit.max_calls > 0 && (limit.per / limit.max_calls).is_zero() {
                out.push((
                    "rate_limit",
                    format!(
                        "{} calls per {:?} is more than one per nanosecond",
                        limit.max_calls, limit.per
                    ),
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(ToolOptions::default().problems().is_empty());
        let bad = ToolOptions::new()
            .timeout(Duration::ZERO)
            .retry(RetryPolicy::new(0))
            .cache(Duration::ZERO)
            .rate_limit(0, Duration::ZERO);
        let names: Vec<&str> = bad.problems().iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "timeout",
                "retry.max_attempts",
                "cache",
                "rate_limit.max_calls",
                "rate_limit.per"
            ]
        );
        let too_fast = ToolOptions::new().rate_limit(10, Duration::from_nanos(5));
        assert_eq!(too_fast.problems()[0].0, "rate_limit");
    }
}
