//! What the stores share (the shipped ones and those of other crates,
//! such as the PostgreSQL store): checkpoints and pending writes encoded
//! as JSON bytes with the depth limit measured while encoding, and the
//! retention rule of [`prune`](super::Checkpointer::prune).

use std::cell::Cell;
use std::io;

use serde::Serialize;
use serde_json::ser::Formatter;

use super::{Checkpoint, CheckpointError, MAX_RECORD_DEPTH, PendingWrite, Retention};
use crate::ids::ThreadId;

/// `checkpoint` as JSON, refused with [`CheckpointError::TooDeep`] when it
/// nests deeper than [`MAX_RECORD_DEPTH`].
///
/// Same verdict as [`Checkpoint::check_depth`] (the depth of the JSON text
/// is the depth of the value it encodes), measured while serializing
/// instead of on a second, tree-shaped serialization.
pub fn checkpoint(checkpoint: &Checkpoint) -> Result<Vec<u8>, CheckpointError> {
    checkpoint_after(&[], checkpoint)
}

/// `prefix` followed by `checkpoint` as JSON (see [`checkpoint`]).
pub fn checkpoint_after(
    prefix: &[u8],
    checkpoint: &Checkpoint,
) -> Result<Vec<u8>, CheckpointError> {
    let (bytes, depth) = to_json(prefix, checkpoint).map_err(|e| CheckpointError::Corrupt {
        thread: checkpoint.thread_id.clone(),
        seq: checkpoint.seq,
        message: format!("cannot be serialized: {e}"),
    })?;
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
pub fn write(
    thread: &ThreadId,
    seq: u64,
    write: &PendingWrite,
) -> Result<Vec<u8>, CheckpointError> {
    let (bytes, depth) = to_json(&[], write).map_err(|e| CheckpointError::Corrupt {
        thread: thread.clone(),
        seq,
        message: format!(
            "pending write of task {} cannot be serialized: {e}",
            write.task
        ),
    })?;
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

/// `prefix`, then `value` as compact JSON; and the JSON's nesting depth.
fn to_json<T: Serialize + ?Sized>(
    prefix: &[u8],
    value: &T,
) -> Result<(Vec<u8>, usize), serde_json::Error> {
    let mut out = Vec::with_capacity(prefix.len() + 1024);
    out.extend_from_slice(prefix);
    let deepest = Cell::new(0);
    let mut ser = serde_json::Serializer::with_formatter(
        &mut out,
        DepthFormatter {
            depth: 0,
            deepest: &deepest,
        },
    );
    value.serialize(&mut ser)?;
    Ok((out, deepest.get()))
}

/// The compact formatter, counting how deep arrays and objects nest.
struct DepthFormatter<'a> {
    depth: usize,
    deepest: &'a Cell<usize>,
}

impl DepthFormatter<'_> {
    fn open(&mut self) {
        self.depth += 1;
        if self.depth > self.deepest.get() {
            self.deepest.set(self.depth);
        }
    }

    fn close(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }
}

impl Formatter for DepthFormatter<'_> {
    fn begin_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.open();
        writer.write_all(b"[")
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.close();
        writer.write_all(b"]")
    }

    fn begin_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.open();
        writer.write_all(b"{")
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.close();
        writer.write_all(b"}")
    }
}

/// Reads back a checkpoint stored as `bytes`, expected to be `seq` of
/// `thread` and in this release's format.
pub fn read_checkpoint(
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
pub fn read_write(
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

/// The `seq` from which `prune` keeps a thread whose checkpoints run from
/// `oldest` to `latest`: the last full state at or before the oldest
/// checkpoint `keep` asks for (`last_full(s)` finds the last full state at
/// or before `s`). With no full state there, nothing is removed.
pub fn first_kept(
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
    fn encoding_measures_value_depth_and_writes_compact_json() {
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
            let (bytes, depth) = to_json(b"x", &v).unwrap();
            assert_eq!(depth, value_depth(&v), "{v}");
            let mut want = b"x".to_vec();
            want.extend(serde_json::to_vec(&v).unwrap());
            assert_eq!(bytes, want);
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
