//! The sidecar index of a thread's log (`t-<name>.idx`): one fixed-size
//! entry per checkpoint and per pending write, in log order, appended as
//! they are committed, so a new handle can find the latest checkpoint, the
//! last full state before it and the writes after it without reading (or
//! parsing) the whole log.
//!
//! Like the summary file, it is a cache, never the truth: it is written
//! without a flush, and only after the log records it describes are
//! flushed. A new handle reads only its end (the entries from the last full
//! state before the latest checkpoint on), checks them (checksums, order,
//! consecutive `seq`s) and the log (long enough; the latest checkpoint and
//! that full state read back as what the entries say), and reads whatever
//! the log holds after them. Anything else (a missing, torn, stale or
//! foreign sidecar) makes it read the log whole, as if there were no
//! sidecar, and rewrite the sidecar.
//!
//! An entry is 64 bytes, all little-endian:
//!
//! | bytes | content |
//! |---|---|
//! | 8 | the checkpoint's (or write's) `seq` |
//! | 8 | byte offset of its JSON in the log |
//! | 4 | length of its JSON |
//! | 4 | flags: 1 = a full state, 2 = a full state at or before it is known, 4 = no pending write for a `seq` at or after that full state comes before it, 8 = a pending write |
//! | 8 | a checkpoint: the `seq` of the last full state at or before it; a write: its task position |
//! | 8 | byte offset of the record holding that full state |
//! | 8 | byte offset of the end of the record holding this entry |
//! | 8 | zero (reserved) |
//! | 8 | FNV-1a 64 checksum of the 56 bytes above |

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::frame::fnv1a64;
use super::index::Loc;

/// Bytes per entry.
pub(super) const ENTRY_LEN: usize = 64;

/// Entries read back at a time when looking for the last full state.
const CHUNK: u64 = 256;

/// Most entries read back before giving up on the sidecar.
const MAX_TAIL: usize = 1 << 16;

const FULL: u32 = 1;
const HAS_FULL: u32 = 2;
const CLEAN: u32 = 4;
const WRITE: u32 = 8;

/// What the sidecar says about one checkpoint or pending write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) seq: u64,
    /// Where its JSON is in the log.
    pub(super) loc: Loc,
    /// `Some(task)` for a pending write.
    pub(super) write: Option<u32>,
    /// A checkpoint holding a full state.
    pub(super) is_full: bool,
    /// A checkpoint: the last full state at or before it, and the offset
    /// of the record holding that one.
    pub(super) full: Option<(u64, u64)>,
    /// No pending write for a `seq` at or after `full` is stored before
    /// `full`'s record, so reading from there finds every write resume
    /// needs.
    pub(super) clean: bool,
    /// Where the record holding it ends.
    pub(super) rec_end: u64,
}

impl Entry {
    pub(super) fn encode(&self) -> [u8; ENTRY_LEN] {
        let flag = |on: bool, bit: u32| if on { bit } else { 0 };
        let flags = flag(self.is_full, FULL)
            | flag(self.full.is_some(), HAS_FULL)
            | flag(self.clean, CLEAN)
            | flag(self.write.is_some(), WRITE);
        let (full_seq, full_at) = match (self.write, self.full) {
            (Some(task), _) => (u64::from(task), 0),
            (None, Some(full)) => full,
            (None, None) => (0, 0),
        };
        let mut body = Vec::with_capacity(ENTRY_LEN);
        body.extend_from_slice(&self.seq.to_le_bytes());
        body.extend_from_slice(&self.loc.at.to_le_bytes());
        body.extend_from_slice(&self.loc.len.to_le_bytes());
        body.extend_from_slice(&flags.to_le_bytes());
        body.extend_from_slice(&full_seq.to_le_bytes());
        body.extend_from_slice(&full_at.to_le_bytes());
        body.extend_from_slice(&self.rec_end.to_le_bytes());
        body.extend_from_slice(&0u64.to_le_bytes());
        let sum = fnv1a64(&body);
        body.extend_from_slice(&sum.to_le_bytes());
        let mut b = [0u8; ENTRY_LEN];
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
        let third = u64_at(24)?;
        let write = if flags & WRITE != 0 {
            Some(u32::try_from(third).ok()?)
        } else {
            None
        };
        Some(Self {
            seq: u64_at(0)?,
            loc: Loc {
                at: u64_at(8)?,
                len: u32_at(16)?,
            },
            write,
            is_full: flags & FULL != 0,
            full: (write.is_none() && flags & HAS_FULL != 0).then_some((third, u64_at(32)?)),
            clean: flags & CLEAN != 0,
            rec_end: u64_at(40)?,
        })
    }
}

/// Never follows a symbolic link planted at a sidecar's path, never blocks
/// on a FIFO.
fn no_follow(o: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    o
}

/// The sidecar of the log at `log`.
pub(super) fn path_of(log: &Path) -> PathBuf {
    log.with_extension("idx")
}

fn open(log: &Path) -> Option<(File, u64)> {
    let file = no_follow(OpenOptions::new().read(true))
        .open(path_of(log))
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let len = file.metadata().ok()?.len();
    (len % ENTRY_LEN as u64 == 0).then_some((file, len / ENTRY_LEN as u64))
}

/// Entries `from..to` of the sidecar, if all are intact.
fn read_entries(file: &File, from: u64, to: u64) -> Option<Vec<Entry>> {
    let n = usize::try_from(to.checked_sub(from)?).ok()?;
    let mut buf = vec![0u8; n * ENTRY_LEN];
    let at = from * ENTRY_LEN as u64;
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut buf, at).ok()?;
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut reader = file;
        reader.seek(SeekFrom::Start(at)).ok()?;
        reader.read_exact(&mut buf).ok()?;
    }
    buf.chunks(ENTRY_LEN).map(Entry::decode).collect()
}

/// The last entry of the sidecar of the log at `log`, if it has a whole,
/// intact one.
pub(super) fn read_last(log: &Path) -> Option<Entry> {
    let (file, n) = open(log)?;
    read_entries(&file, n.checked_sub(1)?, n)?.pop()
}

/// The sidecar's entries from the last full state before its last
/// checkpoint on (that full state's entry first), if it has them intact
/// within [`MAX_TAIL`] entries of its end.
pub(super) fn read_tail(log: &Path) -> Option<Vec<Entry>> {
    let (file, n) = open(log)?;
    let mut back: Vec<Entry> = Vec::new();
    let mut target = None;
    let mut to = n;
    while to > 0 && back.len() < MAX_TAIL {
        let from = to.saturating_sub(CHUNK);
        let chunk = read_entries(&file, from, to)?;
        for e in chunk.into_iter().rev() {
            back.push(e);
            if e.write.is_some() {
                continue;
            }
            let full = match target {
                Some(f) => f,
                None => {
                    let (f, _) = e.full?;
                    target = Some(f);
                    f
                }
            };
            if e.seq == full {
                back.reverse();
                return Some(back);
            }
        }
        to = from;
    }
    None
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
    let written = no_follow(OpenOptions::new().append(true).create(true))
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
