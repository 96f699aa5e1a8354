//! Typed workflow state and reducers.
//!
//! A workflow's state is a user type implementing [`State`]. Nodes never
//! mutate it directly: they return an [`Update`](State::Update), and the
//! executor merges updates through [`State::apply`]. When several nodes run in
//! the same super-step (fan-out, dispatched instances), their updates are
//! applied in a fixed order — the order of the nodes in the graph, then of
//! the instances — so the merged state never depends on which branch
//! finished first.
//!
//! The [`reducer`] functions implement the usual per-field merge rules.
//!
//! ```
//! use flowtrace_core::state::{reducer, State};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone, Debug, Default, Serialize, Deserialize)]
//! struct Research {
//!     notes: Vec<String>, // appended
//!     summary: String,    // replaced
//!     calls: u64,         // summed
//! }
//!
//! #[derive(Debug, Default, Serialize, Deserialize)]
//! struct ResearchUpdate {
//!     notes: Vec<String>,
//!     summary: Option<String>,
//!     calls: u64,
//! }
//!
//! impl State for Research {
//!     type Update = ResearchUpdate;
//!     fn apply(&mut self, u: ResearchUpdate) {
//!         reducer::append(&mut self.notes, u.notes);
//!         reducer::replace(&mut self.summary, u.summary);
//!         reducer::add(&mut self.calls, u.calls);
//!     }
//! }
//!
//! let mut s = Research::default();
//! s.apply(ResearchUpdate { notes: vec!["a".into()], summary: Some("x".into()), calls: 1 });
//! s.apply(ResearchUpdate { notes: vec!["b".into()], ..Default::default() });
//! assert_eq!(s.notes, ["a", "b"]);
//! assert_eq!(s.summary, "x");
//! assert_eq!(s.calls, 1);
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A workflow's state.
///
/// `Clone` is only used when a node still holds the previous state while
/// the executor merges (it keeps its `Arc`); normally the executor mutates
/// the state in place and never clones it.
pub trait State: Clone + Send + Sync + Serialize + DeserializeOwned + 'static {
    /// A partial change produced by one node.
    type Update: Send + Sync + Serialize + DeserializeOwned + 'static;

    /// Merges one update into the state.
    fn apply(&mut self, update: Self::Update);

    /// How a new run's input joins a thread that already has state (the
    /// next message of a conversation thread; see
    /// [`FinishedThread`](crate::exec::FinishedThread)). The default
    /// replaces the state with the input; override it to keep history, for
    /// example by appending the input's messages.
    fn merge_input(&mut self, input: Self) {
        *self = input;
    }
}

/// Per-field merge rules, for writing [`State::apply`].
pub mod reducer {
    use std::collections::{BTreeMap, HashMap};
    use std::hash::Hash;
    use std::ops::AddAssign;

    /// Last writer wins: replaces the field when the update has a value.
    pub fn replace<T>(field: &mut T, value: Option<T>) {
        if let Some(v) = value {
            *field = v;
        }
    }

    /// Appends the update's items.
    pub fn append<T>(field: &mut Vec<T>, items: Vec<T>) {
        if field.is_empty() {
            *field = items;
        } else {
            field.extend(items);
        }
    }

    /// Adds the update's amount (counters, token tallies).
    pub fn add<T: AddAssign>(field: &mut T, amount: T) {
        *field += amount;
    }

    /// Inserts or replaces the update's entries.
    pub fn merge_map<K: Ord, V>(field: &mut BTreeMap<K, V>, entries: BTreeMap<K, V>) {
        field.extend(entries);
    }

    /// Inserts or replaces the update's entries.
    pub fn merge_hash_map<K: Eq + Hash, V>(field: &mut HashMap<K, V>, entries: HashMap<K, V>) {
        field.extend(entries);
    }

    /// Keeps the larger value.
    pub fn max<T: Ord>(field: &mut T, value: Option<T>) {
        if let Some(v) = value
            && v > *field
        {
            *field = v;
        }
    }
}

/// A schemaless state: a JSON object whose keys are replaced by updates,
/// except keys listed as append keys, whose arrays are concatenated.
///
/// Useful for workflows loaded from data rather than written in Rust.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct JsonState {
    /// The values.
    pub values: serde_json::Map<String, serde_json::Value>,
    /// Keys whose arrays are appended rather than replaced.
    #[serde(default)]
    pub append_keys: Vec<String>,
}

impl JsonState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares `key` as an append key.
    pub fn with_append_key(mut self, key: impl Into<String>) -> Self {
        self.append_keys.push(key.into());
        self
    }

    /// Reads a value.
    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.values.get(key)
    }
}

impl State for JsonState {
    type Update = serde_json::Map<String, serde_json::Value>;

    fn apply(&mut self, update: Self::Update) {
        for (k, v) in update {
            if self.append_keys.iter().any(|a| a == &k) {
                let slot = self
                    .values
                    .entry(k)
                    .or_insert_with(|| serde_json::Value::Array(Vec::new()));
                match (slot, v) {
                    (serde_json::Value::Array(items), serde_json::Value::Array(new)) => {
                        items.extend(new)
                    }
                    (serde_json::Value::Array(items), other) => items.push(other),
                    (slot, other) => *slot = other,
                }
            } else {
                self.values.insert(k, v);
            }
        }
    }

    /// The input's keys are merged as an update (append keys append), so a
    /// new run on a finished thread keeps what earlier runs wrote.
    fn merge_input(&mut self, input: Self) {
        for k in input.append_keys.iter() {
            if !self.append_keys.contains(k) {
                self.append_keys.push(k.clone());
            }
        }
        self.apply(input.values);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_state_replaces_and_appends() {
        let mut s = JsonState::new().with_append_key("log");
        let mut u = serde_json::Map::new();
        u.insert("log".into(), json!(["a"]));
        u.insert("x".into(), json!(1));
        s.apply(u);
        let mut u = serde_json::Map::new();
        u.insert("log".into(), json!("b"));
        u.insert("x".into(), json!(2));
        s.apply(u);
        assert_eq!(s.get("log"), Some(&json!(["a", "b"])));
        assert_eq!(s.get("x"), Some(&json!(2)));
    }
}
