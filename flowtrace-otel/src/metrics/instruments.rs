//! The instruments FlowTrace exports, and the bound on their series.

use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Mutex;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};

use super::labels;

/// Metric names as Prometheus shows them (counters get `_total` from the
/// exporter; the OpenTelemetry instrument is named without it).
pub mod names {
    /// Tokens used by model calls, `{provider,model,type}`; `type` is
    /// `input` or `output`.
    pub const LLM_TOKENS: &str = "flowtrace_llm_tokens_total";
    /// Model calls answered by the provider (not from a cache),
    /// `{provider,model}`: with [`CACHE_HITS`], the cache hit rate.
    pub const LLM_CALLS: &str = "flowtrace_llm_calls_total";
    /// Dollars spent on model calls, `{provider,model}`.
    pub const LLM_COST_USD: &str = "flowtrace_llm_cost_usd_total";
    /// Finished node executions, `{workflow,node,status}`.
    pub const NODE_EXECUTIONS: &str = "flowtrace_node_executions_total";
    /// Node latency histogram in seconds (retries included), `{workflow,node}`.
    pub const NODE_DURATION: &str = "flowtrace_node_duration_seconds";
    /// Run wall-time histogram in seconds, `{workflow,status}`; its
    /// `_count` is the number of finished runs.
    pub const RUN_DURATION: &str = "flowtrace_run_duration_seconds";
    /// Retried attempts (node and model retries), `{workflow,node}`.
    pub const RETRIES: &str = "flowtrace_retries_total";
    /// Model fallbacks, `{provider,model,reason}` (the side given up on).
    pub const FALLBACKS: &str = "flowtrace_fallbacks_total";
    /// Model calls answered from a cache, `{provider,model}`.
    pub const CACHE_HITS: &str = "flowtrace_cache_hits_total";
    /// 1 while a provider/model's circuit breaker is known open, else 0,
    /// `{provider,model}`.
    pub const CIRCUIT_BREAKER_OPEN: &str = "flowtrace_circuit_breaker_open";
    /// Budget limits reached, `{workflow,limit}`.
    pub const BUDGET_EXCEEDED: &str = "flowtrace_budget_exceeded_total";

    /// Every name above.
    pub const ALL: [&str; 11] = [
        LLM_TOKENS,
        LLM_CALLS,
        LLM_COST_USD,
        NODE_EXECUTIONS,
        NODE_DURATION,
        RUN_DURATION,
        RETRIES,
        FALLBACKS,
        CACHE_HITS,
        CIRCUIT_BREAKER_OPEN,
        BUDGET_EXCEEDED,
    ];
}

/// Bucket bounds (seconds) of the duration histograms: 5 ms to 10 min.
pub const DURATION_BUCKETS_SECONDS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Label values longer than this many bytes are replaced by
/// [`labels::OTHER`].
pub const MAX_LABEL_VALUE_BYTES: usize = 128;

/// Remembers the label sets an instrument has seen (as 64-bit hashes), up
/// to a limit; past the limit a new set becomes all-[`labels::OTHER`] (one
/// overflow series).
#[derive(Debug)]
pub(crate) struct SeriesLimit {
    seen: Mutex<HashSet<u64>>,
    hasher: RandomState,
    limit: usize,
}

/// `v`, or [`labels::OTHER`] when empty or longer than
/// [`MAX_LABEL_VALUE_BYTES`].
fn clean(v: &str) -> &str {
    if v.is_empty() || v.len() > MAX_LABEL_VALUE_BYTES {
        labels::OTHER
    } else {
        v
    }
}

impl SeriesLimit {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            seen: Mutex::new(HashSet::new()),
            hasher: RandomState::new(),
            limit,
        }
    }

    /// The attributes to record for `pairs`: as given when the series is
    /// known or there is room, else every value replaced by `other`.
    pub(crate) fn attrs(&self, pairs: &[(&'static str, &str)]) -> Vec<KeyValue> {
        let mut h = self.hasher.build_hasher();
        for (_, v) in pairs {
            clean(v).hash(&mut h);
        }
        let key = h.finish();
        let admitted = match self.seen.lock() {
            Ok(mut seen) => seen.contains(&key) || (seen.len() < self.limit && seen.insert(key)),
            Err(_) => false,
        };
        pairs
            .iter()
            .map(|(k, v)| {
                let v = if admitted { clean(v) } else { labels::OTHER };
                KeyValue::new(*k, v.to_string())
            })
            .collect()
    }
}

/// One instrument with its series bound.
#[derive(Debug)]
pub(crate) struct Limited<I> {
    pub(crate) instrument: I,
    pub(crate) limit: SeriesLimit,
}

impl<I> Limited<I> {
    fn new(instrument: I, limit: usize) -> Self {
        Self {
            instrument,
            limit: SeriesLimit::new(limit),
        }
    }
}

impl Limited<Counter<u64>> {
    pub(crate) fn add(&self, n: u64, pairs: &[(&'static str, &str)]) {
        self.instrument.add(n, &self.limit.attrs(pairs));
    }
}

impl Limited<Counter<f64>> {
    pub(crate) fn add(&self, n: f64, pairs: &[(&'static str, &str)]) {
        self.instrument.add(n, &self.limit.attrs(pairs));
    }
}

impl Limited<Histogram<f64>> {
    pub(crate) fn record(&self, v: f64, pairs: &[(&'static str, &str)]) {
        self.instrument.record(v, &self.limit.attrs(pairs));
    }
}

impl Limited<Gauge<u64>> {
    pub(crate) fn record(&self, v: u64, pairs: &[(&'static str, &str)]) {
        self.instrument.record(v, &self.limit.attrs(pairs));
    }
}

/// Every instrument of [`OtelMetrics`](super::OtelMetrics).
#[derive(Debug)]
pub(crate) struct Instruments {
    pub(crate) tokens: Limited<Counter<u64>>,
    pub(crate) calls: Limited<Counter<u64>>,
    pub(crate) cost: Limited<Counter<f64>>,
    pub(crate) node_executions: Limited<Counter<u64>>,
    pub(crate) node_duration: Limited<Histogram<f64>>,
    pub(crate) run_duration: Limited<Histogram<f64>>,
    pub(crate) retries: Limited<Counter<u64>>,
    pub(crate) fallbacks: Limited<Counter<u64>>,
    pub(crate) cache_hits: Limited<Counter<u64>>,
    pub(crate) breaker_open: Limited<Gauge<u64>>,
    pub(crate) budget_exceeded: Limited<Counter<u64>>,
}

/// The OpenTelemetry instrument name of a Prometheus counter name.
fn counter(name: &'static str) -> &'static str {
    name.strip_suffix("_total").unwrap_or(name)
}

impl Instruments {
    pub(crate) fn new(meter: &Meter, limit: usize) -> Self {
        let u64_counter = |name: &'static str, help: &'static str| {
            Limited::new(
                meter
                    .u64_counter(counter(name))
                    .with_description(help)
                    .build(),
                limit,
            )
        };
        let seconds = |name: &'static str, help: &'static str| {
            Limited::new(
                meter
                    .f64_histogram(name)
                    .with_description(help)
                    .with_unit("s")
                    .with_boundaries(DURATION_BUCKETS_SECONDS.to_vec())
                    .build(),
                limit,
            )
        };
        Self {
            tokens: u64_counter(names::LLM_TOKENS, "Tokens used by model calls"),
            calls: u64_counter(names::LLM_CALLS, "Model calls answered by the provider"),
            cost: Limited::new(
                meter
                    .f64_counter(counter(names::LLM_COST_USD))
                    .with_description("US dollars spent on model calls")
                    .build(),
                limit,
            ),
            node_executions: u64_counter(names::NODE_EXECUTIONS, "Finished node executions"),
            node_duration: seconds(names::NODE_DURATION, "Node latency, retries included"),
            run_duration: seconds(names::RUN_DURATION, "Run wall time"),
            retries: u64_counter(names::RETRIES, "Failed attempts that were retried"),
            fallbacks: u64_counter(names::FALLBACKS, "Model calls moved to the next candidate"),
            cache_hits: u64_counter(names::CACHE_HITS, "Model calls answered from a cache"),
            breaker_open: Limited::new(
                meter
                    .u64_gauge(names::CIRCUIT_BREAKER_OPEN)
                    .with_description("1 while the provider/model's circuit breaker is open")
                    .build(),
                limit,
            ),
            budget_exceeded: u64_counter(names::BUDGET_EXCEEDED, "Budget limits reached"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(attrs: &[KeyValue]) -> Vec<String> {
        attrs.iter().map(|kv| kv.value.to_string()).collect()
    }

    #[test]
    fn series_past_the_limit_become_other_and_known_ones_stay() {
        let limit = SeriesLimit::new(2);
        assert_eq!(values(&limit.attrs(&[("a", "x"), ("b", "1")])), ["x", "1"]);
        assert_eq!(values(&limit.attrs(&[("a", "y"), ("b", "1")])), ["y", "1"]);
        assert_eq!(
            values(&limit.attrs(&[("a", "z"), ("b", "1")])),
            ["other", "other"]
        );
        assert_eq!(values(&limit.attrs(&[("a", "x"), ("b", "1")])), ["x", "1"]);
    }

    #[test]
    fn long_and_empty_values_are_other() {
        let limit = SeriesLimit::new(10);
        let long = "m".repeat(MAX_LABEL_VALUE_BYTES + 1);
        assert_eq!(
            values(&limit.attrs(&[("model", &long), ("provider", "")])),
            ["other", "other"]
        );
    }

    #[test]
    fn counters_lose_their_suffix_for_the_exporter() {
        assert_eq!(counter(names::LLM_TOKENS), "flowtrace_llm_tokens");
        assert_eq!(counter(names::NODE_DURATION), names::NODE_DURATION);
    }
}
