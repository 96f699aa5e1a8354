//! The sidecar index of a thread's log (`t-<name>.idx`): one fixed-size
//! entry per checkpoint, appended as checkpoints are committed, so a new
//! handle can find the latest checkpoint and the last full state before it
//! without reading the whole log.
//!
//! Like the summary file, it is a cache, never the truth: it is written
//! without a flush, and a handle trusts only its last entry, and only once
//! the log confirms it (the records from that entry's full state on are
//! whole, and hold that checkpoint where the entry says). Otherwise the log
//! is read whole, as if there were no sidecar, and the sidecar rewritten.
//!
//! An entry is 48 bytes, all little-endian:
//!
//! | bytes | content |
//! |---|---|
//! | 8 | the checkpoint's `seq` |
//! | 8 | byte offset of its JSON in the log |
//! | 4 | length of its JSON |
//! | 4 | flags: 1 = a full state, 2 = a full state at or before it is known, 4 = no pending write for a `seq` at or after that full state comes before its record |
//! | 8 | the `seq` of the last full state at or before it |
//! | 8 | byte offset of the record holding that full state |
//! | 8 | FNV-1a 64 checksum of the 40 bytes above |

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::frame::fnv1a64;
use super::index::Loc;

/// Bytes per entry.
pub(super) const ENTRY_LEN: usize = 48;

const FULL: u32 = 1;
const HAS_FULL: u32 = 2;
const TAIL_OK: u32 = 4;

/// What the sidecar says about one checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) seq: u64,
    /// Where the checkpoint's JSON is in the log.
    pub(super) loc: Loc,
    pub(super) is_full: bool,
    /// The last full state at or before it: its `seq` and the offset of
    /// the record holding it.
    pub(super) full: Option<(u64, u64)>,
    /// No pending write for a `seq` at or after `full` is stored before
    /// `full`'s record, so reading from there finds every write resume
    /// needs.
    pub(super) tail_ok: bool,
}

impl Entry {
    pub(super) fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        let (full_seq, full_at) = self.full.unwrap_or((0, 0));
        let flag = |on: bool, bit: u32| if on { bit } else { 0 };
        let flags = flag(self.is_full, FULL)
            | flag(self.full.is_some(), HAS_FULL)
            | flag(self.tail_ok, TAIL_OK);
        let mut body = Vec::with_capacity(ENTRY_LEN);
        body.extend_from_slice(&self.seq.to_le_bytes());
        body.extend_from_slice(&self.loc.at.to_le_bytes());
        body.extend_from_slice(&self.loc.len.to_le_bytes());
        body.extend_from_slice(&flags.to_le_bytes());
        body.extend_from_slice(&full_seq.to_le_bytes());
        body.extend_from_slice(&full_at.to_le_bytes());
        let sum = fnv1a64(&body);
        body.extend_from_slice(&sum.to_le_bytes());
        b.copy_from_slice(&body);
        b
    }

    pub(super) fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; ENTRY_LEN] = b.try_into().ok()?;
        let (body, sum) = b.split_at(ENTRY_LEN - 8);
        if fnv1a64(body).to_le_bytes() != *sum {
            return None;
        }
        let u64_at = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(body.get(i..i + 8)?.try_into().ok()?))
        };
        let u32_at = |i: usize| -> Option<u32> {
            Some(u32::from_le_bytes(body.get(i..i + 4)?.try_into().ok()?))
        };
        let flags = u32_at(20)?;
        Some(Self {
            seq: u64_at(0)?,
            loc: Loc {
                at: u64_at(8)?,
                len: u32_at(16)?,
            },
            is_full: flags & FULL != 0,
            full: (flags & HAS_FULL != 0).then_some((u64_at(24)?, u64_at(32)?)),
            tail_ok: flags & TAIL_OK != 0,
        })
    }
}

/// The sidecar of the log at `log`.
pub(super) fn path_of(log: &Path) -> PathBuf {
    log.with_extension("idx")
}

/// The last entry of the sidecar of the log at `log`, if it has a whole,
/// intact one.
pub(super) fn read_last(log: &Path) -> Option<Entry> {
    let file = File::open(path_of(log)).ok()?;
    let len = file.metadata().ok()?.len();
    let entry = ENTRY_LEN as u64;
    if len < entry || len % entry != 0 {
        return None;
    }
    let mut buf = [0u8; ENTRY_LEN];
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut buf, len - entry).ok()?;
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut reader = &file;
        reader.seek(SeekFrom::Start(len - entry)).ok()?;
        reader.read_exact(&mut buf).ok()?;
    }
    Entry::decode(&buf)
}

fn bytes(entries: &[Entry]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for e in entries {
        buf.extend_from_slice(&e.encode());
    }
    buf
}

/// Appends `entries` to the sidecar (best effort; one buffered write, no
/// flush). On failure the sidecar is removed, so it can't be trusted.
pub(super) fn append(log: &Path, entries: &[Entry]) {
    if entries.is_empty() {
        return;
    }
    let path = path_of(log);
    let written = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .and_then(|mut f| f.write_all(&bytes(entries)));
    if let Err(e) = written {
        tracing::debug!(path = %path.display(), error = %e, "could not extend a checkpoint log's sidecar index");
        remove_quietly(log);
    }
}

/// Replaces the sidecar with `entries` (written under a temporary name,
/// then renamed; best effort).
pub(super) fn rewrite(log: &Path, entries: &[Entry]) {
    static TEMP: AtomicU64 = AtomicU64::new(0);
    let path = path_of(log);
    let tmp = log.with_extension(format!(
        "idx.tmp-{}-{}",
        std::process::id(),
        TEMP.fetch_add(1, Ordering::Relaxed)
    ));
    let written = fs::write(&tmp, bytes(entries)).and_then(|()| fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        tracing::debug!(path = %path.display(), error = %e, "could not write a checkpoint log's sidecar index");
        remove_quietly(log);
    }
}

/// Removes the sidecar of the log at `log`, if any.
pub(super) fn remove(log: &Path) -> io::Result<()> {
    match fs::remove_file(path_of(log)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn remove_quietly(log: &Path) {
    if let Err(e) = remove(log) {
        tracing::debug!(path = %path_of(log).display(), error = %e, "could not remove a checkpoint log's sidecar index");
    }
}
