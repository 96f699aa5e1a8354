//! What the shipped stores share: checkpoints and pending writes encoded
//! as JSON bytes with the depth limit enforced on those bytes, and the
//! retention rule of `prune`.

use super::{Checkpoint, CheckpointError, MAX_RECORD_DEPTH, PendingWrite, Retention};
use crate::ids::ThreadId;

/// `checkpoint` as JSON, refused with [`CheckpointError::TooDeep`] when it
/// nests deeper than [`MAX_RECORD_DEPTH`].
///
/// Same verdict as [`Checkpoint::check_depth`] (the depth of the JSON text
/// is the depth of the value it encodes), measured on the bytes the store
/// keeps anyway instead of on a second, tree-shaped serialization.
pub(super) fn checkpoint(checkpoint: &Checkpoint) -> Result<Vec<u8>, CheckpointError> {
    let bytes = serde_json::to_vec(checkpoint).map_err(|e| CheckpointError::Corrupt {
        thread: checkpoint.thread_id.clone(),
        seq: checkpoint.seq,
        message: format!("cannot be serialized: {e}"),
    })?;
    let depth = json_depth(&bytes);
    if depth > MAX_RECORD_DEPTH {
        return Err(CheckpointError::TooDeep {
            thread: checkpoint.thread_id.clone(),
            seq: checkpoint.seq,
            node: None,
            depth,
            limit: MAX_RECORD_DEPTH,
        });
    }
    Ok(bytes)
}

/// `write` (for checkpoint `seq` of `thread`) as JSON, refused with
/// [`CheckpointError::TooDeep`] (naming the task's node) when it nests
/// deeper than [`MAX_RECORD_DEPTH`].
pub(super) fn write(
    thread: &ThreadId,
    seq: u64,
    write: &PendingWrite,
) -> Result<Vec<u8>, CheckpointError> {
    let bytes = serde_json::to_vec(write).map_err(|e| CheckpointError::Corrupt {
        thread: thread.clone(),
        seq,
        message: format!(
            "pending write of task {} cannot be serialized: {e}",
            write.task
        ),
    })?;
    let depth = json_depth(&bytes);
    if depth > MAX_RECORD_DEPTH {
        return Err(CheckpointError::TooDeep {
            thread: thread.clone(),
            seq,
            node: Some(write.node.clone()),
            depth,
            limit: MAX_RECORD_DEPTH,
        });
    }
    Ok(bytes)
}

/// Reads back a checkpoint stored as `bytes`, expected to be `seq` of
/// `thread` and in this release's format.
pub(super) fn read_checkpoint(
    thread: &ThreadId,
    seq: u64,
    bytes: &[u8],
) -> Result<Checkpoint, CheckpointError> {
    let cp: Checkpoint = serde_json::from_slice(bytes).map_err(|e| CheckpointError::Corrupt {
        thread: thread.clone(),
        seq,
        message: format!("cannot be read: {e}"),
    })?;
    cp.check_format_version()?;
    if &cp.thread_id != thread || cp.seq != seq {
        return Err(CheckpointError::Corrupt {
            thread: thread.clone(),
            seq,
            message: format!(
                "found checkpoint {} of thread {:?} in its place",
                cp.seq, cp.thread_id
            ),
        });
    }
    Ok(cp)
}

/// Reads back a pending write stored as `bytes`.
pub(super) fn read_write(
    thread: &ThreadId,
    seq: u64,
    bytes: &[u8],
) -> Result<PendingWrite, CheckpointError> {
    serde_json::from_slice(bytes).map_err(|e| CheckpointError::Corrupt {
        thread: thread.clone(),
        seq,
        message: format!("a pending write cannot be read: {e}"),
    })
}

/// The nesting depth of the JSON text `bytes` (0 for a scalar, 1 for a
/// flat array or object, ...), as [`super::value_depth`] counts it for the
/// value the text encodes. One pass, no allocation.
pub(super) fn json_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// The `seq` from which `prune` keeps a thread whose checkpoints run from
/// `oldest` to `latest`: the last full state at or before the oldest
/// checkpoint `keep` asks for (`last_full(s)` finds the last full state at
/// or before `s`). With no full state there, nothing is removed.
pub(super) fn first_kept(
    oldest: u64,
    latest: u64,
    keep: Retention,
    last_full: impl Fn(u64) -> Option<u64>,
) -> u64 {
    let wanted = match keep {
        Retention::Latest(n) => {
            let n = u64::try_from(n.max(1)).unwrap_or(u64::MAX);
            latest.saturating_sub(n - 1)
        }
        Retention::After(seq) => seq.min(latest),
    }
    .max(oldest);
    last_full(wanted).map_or(oldest, |full| full.max(oldest))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::checkpoint::value_depth;

    #[test]
    fn json_depth_is_value_depth() {
        let mut deep = json!("leaf");
        for i in 0..150 {
            deep = if i % 2 == 0 {
                json!([deep])
            } else {
                json!({ "k": deep })
            };
        }
        for v in [
            json!(1),
            json!("]]]}}}"),
            json!("a \" [[[ \\\" {{ \\\\"),
            json!([]),
            json!({}),
            json!([[], {}, [[1]]]),
            json!({ "a": { "b": ["[", "{", { "c": "\\\"]" }] } }),
            deep,
        ] {
            let bytes = serde_json::to_vec(&v).unwrap();
            assert_eq!(json_depth(&bytes), value_depth(&v), "{v}");
        }
    }

    #[test]
    fn first_kept_keeps_the_full_state_a_resume_needs() {
        // Full states at 0, 10 and 20; checkpoints 0..=25.
        let fulls = [0u64, 10, 20];
        let last_full = |s: u64| fulls.iter().rev().copied().find(|&f| f <= s);
        let kept = |oldest, keep| first_kept(oldest, 25, keep, last_full);
        assert_eq!(kept(0, Retention::Latest(3)), 20);
        assert_eq!(kept(0, Retention::Latest(6)), 20);
        assert_eq!(kept(0, Retention::Latest(7)), 10);
        assert_eq!(kept(0, Retention::Latest(0)), 20);
        assert_eq!(kept(0, Retention::Latest(1000)), 0);
        assert_eq!(kept(0, Retention::After(0)), 0);
        assert_eq!(kept(0, Retention::After(15)), 10);
        assert_eq!(kept(0, Retention::After(u64::MAX)), 20);
        assert_eq!(kept(10, Retention::Latest(1000)), 10);
        // No full state at or before what is asked for: keep everything.
        assert_eq!(first_kept(3, 9, Retention::Latest(1), |_| None), 3);
    }
}
