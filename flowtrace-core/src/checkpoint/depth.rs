//! Depth limits: how deep a stored checkpoint and a saved value may nest.

use super::{Checkpoint, CheckpointError};

/// The deepest nesting of arrays and objects a stored checkpoint may have,
/// counted over the whole record (the checkpoint's own fields take about
/// eight levels, a subgraph paused inside another takes about six more).
///
/// `serde_json` refuses to read anything deeper than 128 levels, so a store
/// that accepted deeper values would hold a thread that can be written but
/// never read back. Runs check their states, updates, inputs and payloads
/// against this limit before anything is saved
/// ([`CheckpointError::TooDeep`]), and stores refuse such checkpoints.
pub const MAX_RECORD_DEPTH: usize = 120;

/// The deepest nesting a single value saved in a checkpoint may have (a
/// state, an update, a dispatch input, an interrupt payload or answer):
/// [`MAX_RECORD_DEPTH`] minus room for the checkpoint's own fields and a few
/// levels of paused subgraphs.
pub const MAX_VALUE_DEPTH: usize = 96;

/// The nesting depth of `value`: 0 for a scalar, 1 for a flat array or
/// object, and so on. Iterative, so any depth is measured without
/// recursion.
pub fn value_depth(value: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack: Vec<(&serde_json::Value, usize)> = vec![(value, 0)];
    while let Some((v, d)) = stack.pop() {
        match v {
            serde_json::Value::Array(items) => {
                deepest = deepest.max(d + 1);
                stack.extend(items.iter().map(|i| (i, d + 1)));
            }
            serde_json::Value::Object(map) => {
                deepest = deepest.max(d + 1);
                stack.extend(map.values().map(|i| (i, d + 1)));
            }
            _ => {}
        }
    }
    deepest
}

impl Checkpoint {
    /// Fails with [`CheckpointError::TooDeep`] when the checkpoint, as
    /// stored, would nest deeper than [`MAX_RECORD_DEPTH`].
    pub fn check_depth(&self) -> Result<(), CheckpointError> {
        let value = serde_json::to_value(self).map_err(|e| CheckpointError::Corrupt {
            thread: self.thread_id.clone(),
            seq: self.seq,
            message: format!("cannot be serialized: {e}"),
        })?;
        let depth = value_depth(&value);
        if depth > MAX_RECORD_DEPTH {
            return Err(CheckpointError::TooDeep {
                thread: self.thread_id.clone(),
                seq: self.seq,
                node: None,
                depth,
                limit: MAX_RECORD_DEPTH,
            });
        }
        Ok(())
    }
}
