//! The records of a log: single checkpoints, single writes and batches, and
//! the parts of them the index reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::checkpoint::{PendingWrite, ThreadInfo, ThreadStatus};
use crate::ids::ThreadId;
use crate::trace::Timestamp;

// ===== Record formats =====

/// The start of a single-checkpoint record's payload: the checkpoint's JSON
/// follows, then `}`.
pub(super) const CHECKPOINT_PREFIX: &[u8] = b"{\"checkpoint\":";
/// The start of a single-write record's payload: `{"seq":..,"write":..}`
/// follows, then `}`.
pub(super) const WRITE_PREFIX: &[u8] = b"{\"write\":";
/// The start of a batch record's payload.
pub(super) const BATCH_PREFIX: &[u8] = b"{\"batch\":";

/// The payload of a record holding one checkpoint, given its JSON.
#[cfg(test)]
pub(super) fn checkpoint_payload(checkpoint: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(CHECKPOINT_PREFIX.len() + checkpoint.len() + 1);
    p.extend_from_slice(CHECKPOINT_PREFIX);
    p.extend_from_slice(checkpoint);
    p.push(b'}');
    p
}

/// A pending write as stored: `{"seq":<seq>,"write":<write>}`.
pub(super) fn write_entry(seq: u64, write: &[u8]) -> Vec<u8> {
    let seq = seq.to_string();
    let mut e = Vec::with_capacity(write.len() + seq.len() + 17);
    e.extend_from_slice(b"{\"seq\":");
    e.extend_from_slice(seq.as_bytes());
    e.extend_from_slice(b",\"write\":");
    e.extend_from_slice(write);
    e.push(b'}');
    e
}

/// The payload of a record holding one pending write, given its entry
/// ([`write_entry`]).
pub(super) fn write_payload(entry: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(WRITE_PREFIX.len() + entry.len() + 1);
    p.extend_from_slice(WRITE_PREFIX);
    p.extend_from_slice(entry);
    p.push(b'}');
    p
}

/// The JSON of the first checkpoint in a record's payload, followed by
/// the rest of the payload (`None` for a record without checkpoints).
pub(super) fn first_checkpoint(payload: &[u8]) -> Option<&[u8]> {
    if let Some(rest) = payload.strip_prefix(CHECKPOINT_PREFIX) {
        return Some(rest);
    }
    if !payload.starts_with(BATCH_PREFIX) {
        return None;
    }
    let nl = payload.iter().position(|&b| b == b'\n')?;
    let Head::Batch(header) = serde_json::from_slice(payload.get(..nl)?).ok()?;
    if header.checkpoints.is_empty() {
        return None;
    }
    payload.get(nl + 1..)
}

/// Where a thread's history starts in a log whose older checkpoints were
/// pruned (or in a copy of such a thread), with the parts of the thread's
/// summary that came from them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Start {
    /// The first checkpoint in the log.
    pub(super) seq: u64,
    /// When the thread's first checkpoint was written.
    pub(super) created_at: Timestamp,
    /// The thread's fork origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) forked_from: Option<(ThreadId, u64)>,
    /// The thread's metadata when the log was written.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) metadata: BTreeMap<String, serde_json::Value>,
}

impl Start {
    /// Where the history of the thread summarized by `info` starts at `seq`.
    pub(super) fn new(seq: u64, info: &ThreadInfo) -> Self {
        Self {
            seq,
            created_at: info.created_at,
            forked_from: info.forked_from.clone(),
            metadata: info.metadata.clone(),
        }
    }
}

/// The first line of a batch record.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct BatchHeader {
    /// Only in the first record of a log: where its history starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) start: Option<Start>,
    /// The byte length of each checkpoint that follows.
    pub(super) checkpoints: Vec<u64>,
    /// The byte length of each write entry after them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) writes: Vec<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Head {
    Batch(BatchHeader),
}

/// The payload of a batch record: a header line naming the members'
/// lengths, then each checkpoint's JSON and each write entry
/// ([`write_entry`]), each after a newline.
pub(super) fn batch_payload(
    start: Option<Start>,
    checkpoints: &[impl AsRef<[u8]>],
    writes: &[impl AsRef<[u8]>],
) -> Result<Vec<u8>, serde_json::Error> {
    let len = |m: &[u8]| m.len() as u64;
    let header = Head::Batch(BatchHeader {
        start,
        checkpoints: checkpoints.iter().map(|c| len(c.as_ref())).collect(),
        writes: writes.iter().map(|w| len(w.as_ref())).collect(),
    });
    let mut payload = serde_json::to_vec(&header)?;
    let members = checkpoints
        .iter()
        .map(AsRef::as_ref)
        .chain(writes.iter().map(AsRef::as_ref));
    payload.reserve(members.clone().map(|m| m.len() + 1).sum());
    for m in members {
        payload.push(b'\n');
        payload.extend_from_slice(m);
    }
    Ok(payload)
}

/// What the index reads of a checkpoint: its identity and the thread
/// summary fields, skipping the state and everything else.
#[derive(Deserialize)]
pub(super) struct Summary {
    pub(super) thread_id: ThreadId,
    pub(super) seq: u64,
    #[serde(default)]
    pub(super) forked_from: Option<(ThreadId, u64)>,
    pub(super) step: u64,
    pub(super) created_at: Timestamp,
    pub(super) format_version: u32,
    pub(super) state: StateTag,
    pub(super) status: ThreadStatus,
    #[serde(default)]
    pub(super) metadata: BTreeMap<String, serde_json::Value>,
}

/// Enough of a checkpoint to tell its format version (read when a
/// [`Summary`] can't be).
#[derive(Deserialize)]
pub(super) struct Identity {
    pub(super) thread_id: ThreadId,
}

#[derive(Deserialize)]
pub(super) struct Version {
    pub(super) format_version: u32,
}

#[derive(Deserialize)]
pub(super) struct StateTag {
    #[serde(rename = "type")]
    pub(super) kind: StateKind,
}

#[derive(Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub(super) enum StateKind {
    Full,
    Delta,
}

#[derive(Deserialize)]
pub(super) struct WriteHead {
    pub(super) seq: u64,
    pub(super) write: TaskOnly,
}

#[derive(Deserialize)]
pub(super) struct TaskOnly {
    pub(super) task: u32,
}

/// A write entry, read whole.
#[derive(Deserialize)]
pub(super) struct WriteEntry {
    pub(super) write: PendingWrite,
}
