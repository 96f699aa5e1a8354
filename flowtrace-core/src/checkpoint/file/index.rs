//! The records of a log and the small in-memory index of one thread's log:
//! where each checkpoint and pending write is, which checkpoints hold full
//! states, and the thread's summary. Checkpoints themselves stay on disk.

use std::collections::BTreeMap;
use std::path::Path;

use super::frame::{HEADER_LEN, scan};
use super::idx::Entry;
use super::record::{
    BATCH_PREFIX, CHECKPOINT_PREFIX, Head, Identity, Start, StateKind, Summary, Version,
    WRITE_PREFIX, WriteHead,
};
use crate::checkpoint::{CHECKPOINT_FORMAT_VERSION, CheckpointError, ThreadInfo};
use crate::ids::ThreadId;

// ===== Index =====

/// Where a checkpoint's JSON, or a write entry, is in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Loc {
    /// Byte offset in the file.
    pub(super) at: u64,
    /// Length in bytes.
    pub(super) len: u32,
}

impl Loc {
    pub(super) fn end(self) -> u64 {
        self.at + u64::from(self.len)
    }
}

/// What has been read of one thread's log.
pub(super) struct Index {
    pub(super) thread: ThreadId,
    /// Bytes of the log read and applied: the end of its last valid record.
    pub(super) offset: u64,
    /// The `seq` of `slots[0]` (0 unless the log starts with a [`Start`]).
    pub(super) base: u64,
    /// Each checkpoint's place, oldest first.
    pub(super) slots: Vec<Loc>,
    /// The `seq`s of the full states, ascending, with the offset of the
    /// record holding each and whether no write for a later `seq` comes
    /// before it.
    fulls: Vec<(u64, u64, bool)>,
    /// Pending writes by checkpoint `seq` and task position.
    pub(super) writes: BTreeMap<(u64, u32), Loc>,
    /// Where the log says the history starts, if it says so.
    start: Option<Start>,
    /// The thread's summary (`None` before its first checkpoint). Only
    /// right when the index is whole (`partial` is `None`).
    pub(super) info: Option<ThreadInfo>,
    /// `Some(first)` when only the log's tail was read, from the record
    /// holding full state `first` on: checkpoints before `first` (and
    /// their writes), the thread's `base`, and its summary are unknown.
    pub(super) partial: Option<u64>,
    /// The sidecar entries of the records applied by the last
    /// [`apply`](Self::apply), in log order.
    pub(super) applied: Vec<Entry>,
}

impl Index {
    pub(super) fn new(thread: ThreadId) -> Self {
        Self {
            thread,
            offset: 0,
            base: 0,
            slots: Vec::new(),
            fulls: Vec::new(),
            writes: BTreeMap::new(),
            start: None,
            info: None,
            partial: None,
            applied: Vec::new(),
        }
    }

    /// An index of the log's tail built from sidecar entries (the first
    /// being a full state's, see [`idx::read_tail`](super::idx::read_tail)),
    /// up to the end of the last entry's record; `None` unless they are
    /// in order and consistent. Marked `partial` from that full state.
    pub(super) fn from_entries(thread: ThreadId, entries: &[Entry]) -> Option<Self> {
        let first = entries.first()?;
        let (full, full_at) = first.full?;
        if first.write.is_some()
            || !first.is_full
            || full != first.seq
            || !first.clean
            || full_at >= first.loc.at
        {
            return None;
        }
        let mut index = Self::new(thread);
        index.base = full;
        index.partial = Some(full);
        let mut end = 0;
        for e in entries {
            if e.loc.at < end || e.rec_end < e.loc.end() || e.rec_end < index.offset {
                return None;
            }
            end = e.loc.end();
            index.offset = e.rec_end;
            match e.write {
                Some(task) => {
                    index.writes.entry((e.seq, task)).or_insert(e.loc);
                }
                None => {
                    if e.seq != index.next_seq() {
                        return None;
                    }
                    let (f, f_at) = e.full?;
                    if e.is_full {
                        if f != e.seq || (e.seq == full && f_at != full_at) {
                            return None;
                        }
                        index.fulls.push((f, f_at, e.clean));
                    } else if index.fulls.last().map(|&(s, a, _)| (s, a)) != Some((f, f_at)) {
                        return None;
                    }
                    index.slots.push(e.loc);
                }
            }
        }
        Some(index)
    }

    pub(super) fn latest(&self) -> Option<u64> {
        let n = self.slots.len() as u64;
        n.checked_sub(1).map(|l| self.base + l)
    }

    pub(super) fn next_seq(&self) -> u64 {
        self.base + self.slots.len() as u64
    }

    pub(super) fn is_empty(&self) -> bool {
        self.slots.is_empty() && self.writes.is_empty()
    }

    pub(super) fn slot(&self, seq: u64) -> Option<Loc> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.slots.get(i).copied()
    }

    /// The last full state at or before `seq`.
    pub(super) fn last_full(&self, seq: u64) -> Option<u64> {
        let i = self.fulls.partition_point(|&(f, _, _)| f <= seq);
        self.fulls.get(i.checked_sub(1)?).map(|&(f, _, _)| f)
    }

    pub(super) fn has_write(&self, seq: u64, task: u32) -> bool {
        self.writes.contains_key(&(seq, task))
    }

    pub(super) fn writes_of(&self, seq: u64) -> Vec<Loc> {
        self.writes
            .range((seq, 0)..=(seq, u32::MAX))
            .map(|(_, l)| *l)
            .collect()
    }

    pub(super) fn corrupt(&self, message: String) -> CheckpointError {
        CheckpointError::Corrupt {
            thread: self.thread.clone(),
            seq: self.next_seq(),
            message,
        }
    }

    /// Fails unless a log of `len` bytes can hold what was already read.
    pub(super) fn check_len(&self, path: &Path, len: u64) -> Result<(), CheckpointError> {
        if len < self.offset {
            return Err(self.corrupt(format!(
                "{} shrank from {} to {len} bytes (changed outside FlowTrace?)",
                path.display(),
                self.offset
            )));
        }
        Ok(())
    }

    /// Applies the records in `buf`, the bytes of the log from `offset`.
    /// Stops before a torn record at the end (a crashed write).
    pub(super) fn apply(&mut self, buf: &[u8], path: &Path) -> Result<(), CheckpointError> {
        let base = self.offset;
        self.applied.clear();
        let scan = scan(buf).map_err(|e| {
            self.corrupt(format!(
                "{}: damaged record at byte {} ({}) followed by a valid record at byte {}",
                path.display(),
                base + e.at as u64,
                e.reason,
                base + e.next_valid as u64,
            ))
        })?;
        for (end, payload) in scan.records {
            let at = base + (end - payload.len()) as u64;
            self.apply_record(at, base + end as u64, payload)
                .map_err(|e| match e {
                    Bad::Unreadable(why) => self.corrupt(format!(
                        "{}: record at byte {} has a valid checksum but can't be read: {why}",
                        path.display(),
                        at - HEADER_LEN as u64,
                    )),
                    Bad::Refused(e) => e,
                })?;
            self.offset = base + end as u64;
        }
        if let Some(reason) = scan.torn {
            tracing::debug!(
                path = %path.display(),
                at = self.offset,
                reason,
                "ignoring a torn record at the end of a checkpoint log"
            );
        }
        Ok(())
    }

    /// Applies one record whose payload starts at byte `at` of the log.
    fn apply_record(&mut self, at: u64, end: u64, payload: &[u8]) -> Result<(), Bad> {
        let rec = (at - HEADER_LEN as u64, end);
        if let Some(cp) = strip(payload, CHECKPOINT_PREFIX) {
            self.add_checkpoint(rec, at + CHECKPOINT_PREFIX.len() as u64, cp)
        } else if let Some(entry) = strip(payload, WRITE_PREFIX) {
            self.add_write(end, at + WRITE_PREFIX.len() as u64, entry)
        } else if payload.starts_with(BATCH_PREFIX) {
            self.add_batch(rec, at, payload)
        } else {
            Err(Bad::Unreadable("not a checkpoint, write or batch".into()))
        }
    }

    /// Adds the checkpoint whose JSON is at `at`, in the record spanning
    /// `rec` (start, end).
    fn add_checkpoint(&mut self, rec: (u64, u64), at: u64, json: &[u8]) -> Result<(), Bad> {
        let cp: Summary = match serde_json::from_slice(json) {
            Ok(s) => s,
            Err(e) => {
                // Another release's format reads as such, not as damage.
                if let Ok(v) = serde_json::from_slice::<Version>(json)
                    && v.format_version != CHECKPOINT_FORMAT_VERSION
                {
                    let thread = serde_json::from_slice::<Identity>(json)
                        .map_or_else(|_| self.thread.clone(), |i| i.thread_id);
                    return Err(Bad::Refused(CheckpointError::UnsupportedVersion {
                        thread,
                        found: v.format_version,
                        supported: CHECKPOINT_FORMAT_VERSION,
                    }));
                }
                return Err(Bad::Unreadable(e.to_string()));
            }
        };
        if cp.format_version != CHECKPOINT_FORMAT_VERSION {
            return Err(Bad::Refused(CheckpointError::UnsupportedVersion {
                thread: cp.thread_id,
                found: cp.format_version,
                supported: CHECKPOINT_FORMAT_VERSION,
            }));
        }
        if cp.thread_id != self.thread {
            return Err(Bad::Refused(self.corrupt(format!(
                "found a checkpoint of thread {:?}",
                cp.thread_id
            ))));
        }
        if cp.seq != self.next_seq() {
            return Err(Bad::Refused(self.corrupt(format!(
                "found checkpoint {} where {} belongs",
                cp.seq,
                self.next_seq()
            ))));
        }
        let len = u32::try_from(json.len())
            .map_err(|_| Bad::Unreadable("checkpoint longer than 4 GiB".into()))?;
        match &mut self.info {
            Some(info) => {
                info.latest_seq = cp.seq;
                info.status = cp.status;
                info.step = cp.step;
                info.updated_at = cp.created_at;
                if !cp.metadata.is_empty() {
                    info.metadata = cp.metadata;
                }
            }
            None => {
                let mut info = ThreadInfo::new(
                    cp.thread_id,
                    cp.seq,
                    cp.status,
                    cp.step,
                    cp.created_at,
                    cp.created_at,
                );
                info.forked_from = cp.forked_from;
                info.metadata = cp.metadata;
                if let Some(start) = &self.start {
                    info.created_at = start.created_at;
                    info.forked_from.clone_from(&start.forked_from);
                    if info.metadata.is_empty() {
                        info.metadata.clone_from(&start.metadata);
                    }
                }
                self.info = Some(info);
            }
        }
        if cp.state.kind == StateKind::Full {
            let clean = self.writes.range((cp.seq, 0)..).next().is_none();
            self.fulls.push((cp.seq, rec.0, clean));
        }
        let loc = Loc { at, len };
        self.slots.push(loc);
        let full = self.fulls.last().copied();
        self.applied.push(Entry {
            seq: cp.seq,
            loc,
            write: None,
            is_full: cp.state.kind == StateKind::Full,
            full: full.map(|(f, a, _)| (f, a)),
            clean: full.is_some_and(|(_, _, c)| c),
            rec_end: rec.1,
        });
        Ok(())
    }

    fn add_write(&mut self, rec_end: u64, at: u64, entry: &[u8]) -> Result<(), Bad> {
        let head: WriteHead =
            serde_json::from_slice(entry).map_err(|e| Bad::Unreadable(e.to_string()))?;
        let len = u32::try_from(entry.len())
            .map_err(|_| Bad::Unreadable("pending write longer than 4 GiB".into()))?;
        // The first write of a task wins.
        let loc = Loc { at, len };
        if let std::collections::btree_map::Entry::Vacant(v) =
            self.writes.entry((head.seq, head.write.task))
        {
            v.insert(loc);
            self.applied.push(Entry {
                seq: head.seq,
                loc,
                write: Some(head.write.task),
                is_full: false,
                full: None,
                clean: false,
                rec_end,
            });
        }
        Ok(())
    }

    fn add_batch(&mut self, rec: (u64, u64), at: u64, payload: &[u8]) -> Result<(), Bad> {
        let malformed = |why: &str| Bad::Unreadable(format!("malformed batch: {why}"));
        let header_len = payload
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(payload.len());
        let header = payload
            .get(..header_len)
            .ok_or_else(|| malformed("no header"))?;
        let Head::Batch(header) =
            serde_json::from_slice(header).map_err(|e| Bad::Unreadable(e.to_string()))?;
        if let Some(start) = header.start {
            if self.offset != 0 || !self.is_empty() || header.checkpoints.is_empty() {
                return Err(malformed("a history start after the log's first record"));
            }
            self.base = start.seq;
            self.start = Some(start);
        }
        let mut pos = header_len;
        let members = header
            .checkpoints
            .iter()
            .map(|&l| (true, l))
            .chain(header.writes.iter().map(|&l| (false, l)));
        for (is_checkpoint, len) in members {
            let from = pos + 1;
            let to = usize::try_from(len)
                .ok()
                .and_then(|l| from.checked_add(l))
                .ok_or_else(|| malformed("member length"))?;
            if payload.get(pos) != Some(&b'\n') {
                return Err(malformed("members are not newline-separated"));
            }
            let member = payload
                .get(from..to)
                .ok_or_else(|| malformed("member past the record's end"))?;
            let member_at = at + from as u64;
            if is_checkpoint {
                self.add_checkpoint(rec, member_at, member)?;
            } else {
                self.add_write(rec.1, member_at, member)?;
            }
            pos = to;
        }
        if pos != payload.len() {
            return Err(malformed("bytes after the last member"));
        }
        Ok(())
    }
}

/// Whether `json` is checkpoint `seq` of `thread`, a full state or not as
/// `full` says (reading only its identity and summary fields).
pub(super) fn is_checkpoint(json: &[u8], thread: &ThreadId, seq: u64, full: bool) -> bool {
    serde_json::from_slice::<Summary>(json).is_ok_and(|cp| {
        &cp.thread_id == thread
            && cp.seq == seq
            && cp.format_version == CHECKPOINT_FORMAT_VERSION
            && (cp.state.kind == StateKind::Full) == full
    })
}

/// Why a record could not be applied.
enum Bad {
    /// Its bytes are not a record (reported with the record's position).
    Unreadable(String),
    /// It reads, but can't be accepted (reported as is).
    Refused(CheckpointError),
}

/// `payload` without `prefix` and the closing `}`.
fn strip<'a>(payload: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    payload.strip_prefix(prefix)?.strip_suffix(b"}")
}
