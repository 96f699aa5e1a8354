//! Loop detection: the same tool call asked for again and again.

use serde_json::Value;

/// How many times an agent lets the model ask for the same tool call (same
/// tool, equal arguments) before it stops with
/// [`AgentError::Loop`](super::AgentError::Loop), unless configured
/// otherwise.
pub const DEFAULT_LOOP_THRESHOLD: u32 = 3;

/// Counts the tool calls of one agent run by tool and arguments.
///
/// Arguments compare as JSON values: key order does not matter (`{"a":1,
/// "b":2}` equals `{"b":2,"a":1}`), and the calls need not be consecutive
/// (`A, B, A, B, A` repeats `A` three times). It holds one entry per
/// distinct call, at most the run's tool calls (bounded by the agent's
/// iteration limit times
/// [`MAX_TOOL_CALLS_PER_TURN`](super::MAX_TOOL_CALLS_PER_TURN)).
#[derive(Debug)]
pub(crate) struct LoopGuard {
    threshold: u32,
    seen: Vec<(String, Value, u32)>,
}

impl LoopGuard {
    /// A guard that trips on the `threshold`-th identical call (at least 2).
    pub(crate) fn new(threshold: u32) -> Self {
        Self {
            threshold: threshold.max(2),
            seen: Vec::new(),
        }
    }

    /// Counts a call of `tool` with `arguments`; `Some(repeats)` when this
    /// call reaches the threshold.
    pub(crate) fn record(&mut self, tool: &str, arguments: &Value) -> Option<u32> {
        let count = match self
            .seen
            .iter_mut()
            .find(|(t, a, _)| t == tool && a == arguments)
        {
            Some((_, _, count)) => {
                *count = count.saturating_add(1);
                *count
            }
            None => {
                self.seen.push((tool.to_string(), arguments.clone(), 1));
                1
            }
        };
        (count >= self.threshold).then_some(count)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn trips_on_the_threshold_whatever_the_key_order() {
        let mut g = LoopGuard::new(3);
        assert_eq!(g.record("search", &json!({"q": "x", "n": 1})), None);
        assert_eq!(g.record("other", &json!({"q": "x", "n": 1})), None);
        assert_eq!(g.record("search", &json!({"n": 1, "q": "x"})), None);
        assert_eq!(g.record("search", &json!({"n": 2, "q": "x"})), None);
        assert_eq!(g.record("search", &json!({"q": "x", "n": 1})), Some(3));
    }

    #[test]
    fn the_threshold_is_at_least_two() {
        let mut g = LoopGuard::new(0);
        assert_eq!(g.record("t", &json!({})), None);
        assert_eq!(g.record("t", &json!({})), Some(2));
    }
}
