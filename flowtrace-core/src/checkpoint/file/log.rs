//! One thread's log, open and indexed: reads, fenced commits, and the
//! rewrites (prune, copy) and removal (delete) that replace the file.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::frame::{HEADER_LEN, encode_frame, scan};
use super::idx;
use super::index::{Index, Loc, Start, WriteEntry, batch_payload, is_checkpoint};
use super::summary;
use crate::checkpoint::{
    Checkpoint, CheckpointBatch, CheckpointError, PendingWrite, PruneOutcome, Retention, encode,
};
use crate::ids::ThreadId;

/// How many times in a row an operation reopens a log that was replaced
/// (pruned, copied over) or deleted under it before giving up.
const MAX_REOPENS: usize = 64;

/// A thread's log as this handle knows it: the file, open, and its index.
///
/// Invariant: `index` describes the file open in `file`; with no file open,
/// `index` is empty. A prune or copy replaces the log with a new file and a
/// delete unlinks it, each under the old file's exclusive lock, so a log
/// whose open file has no link left is reopened, and its index rebuilt.
pub(super) struct ThreadLog {
    path: PathBuf,
    pub(super) index: Index,
    file: Option<OpenLog>,
}

struct OpenLog {
    file: File,
    writable: bool,
}

/// What of a thread's history an operation reads, so a new handle can
/// read only the log's tail when that is enough.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Need {
    /// The latest checkpoint, the fence, and checkpoints and writes from
    /// the last full state before the latest on.
    Latest,
    /// Checkpoint `seq` (and what `Latest` covers): its chain and writes.
    Seq(u64),
    /// The whole index, and the thread's summary.
    All,
}

impl Need {
    /// Whether an index holding only checkpoints from `first` on lacks
    /// what this needs.
    fn wants_before(self, first: u64) -> bool {
        match self {
            Need::Latest => false,
            Need::Seq(seq) => seq < first,
            Need::All => true,
        }
    }
}

/// What a commit appends, already framed.
pub(super) enum Commit {
    /// A checkpoint record: fenced on `seq`.
    Checkpoint { seq: u64, frame: Vec<u8> },
    /// A pending write: skipped if the task is already saved.
    Write { seq: u64, task: u32, frame: Vec<u8> },
    /// A batch record: fenced and checked as a whole.
    Batch {
        batch: CheckpointBatch,
        frame: Vec<u8>,
    },
}

impl ThreadLog {
    pub(super) fn new(path: PathBuf, thread: ThreadId) -> Self {
        Self {
            path,
            index: Index::new(thread),
            file: None,
        }
    }

    fn thread(&self) -> &ThreadId {
        &self.index.thread
    }

    /// Forgets the open file and everything read from it.
    fn detach(&mut self) {
        self.file = None;
        self.index = Index::new(self.index.thread.clone());
    }

    /// Makes sure the open file is the thread's current log, opening it
    /// (`write`: for writing, created if missing) or reopening it if it was
    /// replaced or deleted. Returns its length; `None` when there is no log
    /// (only when not writing).
    fn attach(&mut self, write: bool) -> Result<Option<u64>, CheckpointError> {
        if let Some(open) = &self.file {
            let meta = stat(&open.file, &self.path)?;
            if !is_unlinked(&meta) {
                if !write || open.writable {
                    return Ok(Some(meta.len()));
                }
                // Upgrade to a writable handle on the same file; while the
                // old one is open its identity can't be reused.
                let file = open_rw(&self.path)?;
                let new_meta = stat(&file, &self.path)?;
                if !same_file(&meta, &new_meta) {
                    self.detach();
                }
                self.file = Some(OpenLog {
                    file,
                    writable: true,
                });
                return Ok(Some(new_meta.len()));
            }
            self.detach();
        }
        let file = if write {
            open_rw(&self.path)?
        } else {
            match open_options(false).open(&self.path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(open_error(&self.path, e)),
            }
        };
        let meta = stat(&file, &self.path)?;
        if !meta.is_file() {
            return Err(not_a_log(&self.path, "it is not a regular file"));
        }
        let len = meta.len();
        self.index = Index::new(self.index.thread.clone());
        self.file = Some(OpenLog {
            file,
            writable: write,
        });
        Ok(Some(len))
    }

    /// Opens and locks the log (shared or `exclusive`), then brings the
    /// index up to date. Returns the lock and the file's length (more than
    /// the index's offset only after a torn record); `None` when there is
    /// no log (only when not writing).
    fn lock(
        &mut self,
        write: bool,
        exclusive: bool,
        need: Need,
    ) -> Result<Option<(FileLock, u64)>, CheckpointError> {
        for _ in 0..MAX_REOPENS {
            if self.attach(write)?.is_none() {
                return Ok(None);
            }
            let Some(open) = &self.file else {
                return Err(not_open(&self.path));
            };
            let lock = FileLock::new(&open.file, exclusive, &self.path)?;
            let meta = stat(&lock.file, &self.path)?;
            if is_unlinked(&meta) {
                // Replaced or deleted between opening and locking.
                drop(lock);
                self.detach();
                continue;
            }
            self.refresh(meta.len(), need)?;
            self.complete(need)?;
            return Ok(Some((lock, meta.len())));
        }
        Err(io_error(
            "cannot open checkpoint log",
            &self.path,
            io::Error::new(
                io::ErrorKind::ResourceBusy,
                format!("replaced {MAX_REOPENS} times in a row while being opened"),
            ),
        ))
    }

    /// Reads and indexes what was appended since the last look. A new
    /// index reads only the log's tail when the sidecar allows and `need`
    /// is content with it; one read whole refreshes the sidecar. The caller
    /// holds a lock on the log.
    fn refresh(&mut self, len: u64, need: Need) -> Result<(), CheckpointError> {
        self.index.check_len(&self.path, len)?;
        let from = self.index.offset;
        if len == from {
            return Ok(());
        }
        let fresh = from == 0;
        if fresh && need != Need::All && self.read_tail(len)? {
            return Ok(());
        }
        let Some(open) = &self.file else {
            return Ok(());
        };
        let buf = read_range(&open.file, &self.path, from, len - from)?;
        self.apply(&buf)?;
        if fresh {
            self.rewrite_sidecar();
        } else {
            self.index.applied.clear();
        }
        Ok(())
    }

    /// Indexes only the log's tail, as the sidecar's end describes it: the
    /// entries from the last full state before its latest checkpoint on,
    /// then whatever the log holds after them. Whether the log confirmed
    /// the entries (else nothing changed, and the log is to be read whole).
    fn read_tail(&mut self, len: u64) -> Result<bool, CheckpointError> {
        let Some(open) = &self.file else {
            return Ok(false);
        };
        let Some(entries) = idx::read_tail(&self.path) else {
            return Ok(false);
        };
        let thread = self.index.thread.clone();
        let Some(mut index) = Index::from_entries(thread.clone(), &entries) else {
            return Ok(false);
        };
        if index.offset > len {
            return Ok(false);
        }
        #[cfg(test)]
        tail_reads::count(&self.path);
        // The records holding the entries are whole: all of them, or, when
        // the full state's record is much longer than the tail (one batch
        // of a whole run), those after it.
        let Some(first) = entries.first() else {
            return Ok(false);
        };
        let Some((_, full_at)) = first.full else {
            return Ok(false);
        };
        let tail = index.offset.saturating_sub(first.loc.at);
        let check_from =
            if first.rec_end.saturating_sub(full_at) <= tail.saturating_mul(2) + (1 << 16) {
                full_at
            } else {
                first.rec_end
            };
        if index.offset > check_from {
            let records = read_range(
                &open.file,
                &self.path,
                check_from,
                index.offset - check_from,
            )?;
            let whole = scan(&records).is_ok_and(|s| {
                s.torn.is_none() && s.records.last().map(|r| r.0) == Some(records.len())
            });
            if !whole {
                return Ok(false);
            }
        }
        // The full state and the latest checkpoint read back as the
        // entries say (the checkpoints between are read, and checked, by
        // whoever asks for them).
        let ends = [index.partial, index.latest()];
        for seq in ends.into_iter().flatten() {
            let Some(loc) = index.slot(seq) else {
                return Ok(false);
            };
            let json = read_range(&open.file, &self.path, loc.at, u64::from(loc.len))?;
            let full = index.last_full(seq) == Some(seq);
            if !is_checkpoint(&json, &thread, seq, full) {
                return Ok(false);
            }
        }
        if len > index.offset {
            let rest = read_range(&open.file, &self.path, index.offset, len - index.offset)?;
            if index.apply(&rest, &self.path).is_err() {
                return Ok(false);
            }
        }
        index.applied.clear();
        self.index = index;
        Ok(true)
    }

    /// Reads the whole log if the index holds only its tail and `need`
    /// wants more. What was indexed never changes in this file, so this
    /// needs no lock.
    fn complete(&mut self, need: Need) -> Result<(), CheckpointError> {
        let Some(first) = self.index.partial else {
            return Ok(());
        };
        if !need.wants_before(first) {
            return Ok(());
        }
        let Some(open) = &self.file else {
            return Ok(());
        };
        let end = self.index.offset;
        let buf = read_range(&open.file, &self.path, 0, end)?;
        self.index = Index::new(self.index.thread.clone());
        self.apply(&buf)?;
        self.index.applied = Vec::new();
        if self.index.offset != end {
            let e = self.index.corrupt(format!(
                "{}: the log read whole ends at byte {} where its tail ended at {end}",
                self.path.display(),
                self.index.offset
            ));
            self.detach();
            return Err(e);
        }
        Ok(())
    }

    /// Rewrites the sidecar with the entries of a log just read whole,
    /// unless it already ends with the same last entry (best effort). The
    /// caller holds a lock on the log, so no writer extends it meanwhile.
    fn rewrite_sidecar(&mut self) {
        let entries = std::mem::take(&mut self.index.applied);
        if entries.is_empty() || idx::read_last(&self.path).as_ref() == entries.last() {
            return;
        }
        idx::rewrite(&self.path, &entries);
    }

    /// Extends the sidecar with the entries of a record this handle just
    /// appended at byte `at`, under the log's exclusive lock: when the
    /// sidecar ends with the record before (else it is removed, to be
    /// rewritten by the next handle that reads the log whole).
    fn extend_sidecar(&mut self, at: u64) {
        let entries = std::mem::take(&mut self.index.applied);
        let last = idx::read_last(&self.path);
        match last {
            Some(e) if e.rec_end == at => idx::append(&self.path, &entries),
            None if at == 0 => idx::rewrite(&self.path, &entries),
            _ => {
                if let Err(e) = idx::remove(&self.path) {
                    tracing::debug!(path = %self.path.display(), error = %e, "could not remove a stale sidecar index");
                }
            }
        }
    }

    /// Indexes `buf`, the bytes of the log from the index's offset on.
    fn apply(&mut self, buf: &[u8]) -> Result<(), CheckpointError> {
        if let Err(e) = self.index.apply(buf, &self.path) {
            // Start over next time (and fail the same way).
            self.detach();
            return Err(e);
        }
        Ok(())
    }

    /// Brings the index up to date and reads through it.
    pub(super) fn read<T>(
        &mut self,
        need: Need,
        f: impl FnOnce(&View<'_>) -> Result<T, CheckpointError>,
    ) -> Result<T, CheckpointError> {
        if let Some(len) = self.attach(false)?
            && len != self.index.offset
        {
            // Read the new records under a shared lock, so none is half
            // written. What was indexed never changes in this file, so the
            // reads below need no lock.
            drop(self.lock(false, false, need)?);
        }
        self.complete(need)?;
        f(&View {
            index: &self.index,
            file: self.file.as_ref().map(|o| &o.file),
            path: &self.path,
        })
    }

    /// Appends a record under an exclusive lock, after reading what other
    /// writers appended and checking the fence; one flush.
    pub(super) fn commit(&mut self, dir: &Path, commit: Commit) -> Result<(), CheckpointError> {
        let need = match &commit {
            Commit::Write { seq, .. } => Need::Seq(*seq),
            Commit::Checkpoint { .. } | Commit::Batch { .. } => Need::Latest,
        };
        let Some((lock, len)) = self.lock(true, true, need)? else {
            return Err(not_open(&self.path));
        };
        let frame = match commit {
            Commit::Checkpoint { seq, frame } => {
                let expected = self.index.next_seq();
                if seq != expected {
                    return Err(CheckpointError::Conflict {
                        thread: self.thread().clone(),
                        seq,
                        expected,
                    });
                }
                frame
            }
            Commit::Write { seq, task, frame } => {
                if self.index.has_write(seq, task) {
                    return Ok(());
                }
                if self.index.latest().is_some() && seq < self.index.base {
                    return Err(CheckpointError::Pruned {
                        thread: self.thread().clone(),
                        seq,
                        oldest: self.index.base,
                    });
                }
                frame
            }
            Commit::Batch { batch, frame } => {
                batch.check(self.thread(), self.index.latest())?;
                frame
            }
        };
        let at = self.index.offset;
        if at == 0 && len > 0 && !starts_like_a_torn_record(&lock.file, &self.path, len) {
            // No valid record at all: not a log this store wrote. Never
            // truncate or write into it.
            return Err(not_a_log(
                &self.path,
                "it does not start with a checkpoint record",
            ));
        }
        if len > at {
            tracing::warn!(
                path = %self.path.display(),
                bytes = len - at,
                "cutting off a torn record at the end of a checkpoint log"
            );
        }
        if let Err(e) = write_at(&lock.file, at, len, &frame) {
            // Leave no partial record behind if we can help it.
            if let Err(e2) = lock.file.set_len(at) {
                tracing::warn!(path = %self.path.display(), error = %e2, "could not roll back a failed checkpoint write");
            }
            return Err(io_error("cannot write checkpoint log", &self.path, e));
        }
        if at == 0 {
            sync_dir(dir).map_err(|e| io_error("cannot sync checkpoint directory", dir, e))?;
        }
        self.apply(&frame)?;
        self.extend_sidecar(at);
        drop(lock);
        Ok(())
    }

    /// Removes the checkpoints `keep` does not ask for (see
    /// [`Checkpointer::prune`](crate::checkpoint::Checkpointer::prune)) by
    /// writing the kept part as a new log and renaming it over the old one.
    pub(super) fn prune(
        &mut self,
        dir: &Path,
        keep: Retention,
    ) -> Result<PruneOutcome, CheckpointError> {
        let thread = self.thread().clone();
        let not_found = || CheckpointError::ThreadNotFound { thread };
        let Some((lock, _)) = self.lock(false, true, Need::All)? else {
            return Err(not_found());
        };
        let (Some(latest), Some(info)) = (self.index.latest(), self.index.info.clone()) else {
            return Err(not_found());
        };
        let oldest = self.index.base;
        let start = encode::first_kept(oldest, latest, keep, |s| self.index.last_full(s));
        if start == oldest {
            return Ok(PruneOutcome::new(0, oldest));
        }
        let view = self.view();
        let checkpoints: Vec<Loc> = (start..=latest)
            .filter_map(|s| self.index.slot(s))
            .collect();
        let writes: Vec<Loc> = self
            .index
            .writes
            .range((start, 0)..)
            .map(|(_, l)| *l)
            .collect();
        let span = view.span(checkpoints.iter().chain(&writes))?;
        let payload = batch_payload(
            Some(Start::new(start, &info)),
            &span.all(&checkpoints)?,
            &span.all(&writes)?,
        )
        .map_err(|e| {
            self.index
                .corrupt(format!("cannot encode the pruned log: {e}"))
        })?;
        drop(span);
        let frame = self.frame(&payload)?;
        drop(payload);
        self.replace(dir, &frame)?;
        drop(lock);
        Ok(PruneOutcome::new(start - oldest, start))
    }

    /// Writes `frame` (a copied thread) as this thread's log, unless the
    /// thread has a checkpoint ([`CheckpointError::ThreadExists`]).
    pub(super) fn create_from(&mut self, dir: &Path, frame: &[u8]) -> Result<(), CheckpointError> {
        let Some((lock, _)) = self.lock(true, true, Need::Latest)? else {
            return Err(not_open(&self.path));
        };
        if self.index.latest().is_some() {
            return Err(CheckpointError::ThreadExists {
                thread: self.thread().clone(),
            });
        }
        self.replace(dir, frame)?;
        drop(lock);
        Ok(())
    }

    /// Deletes the log; whether it held any record.
    pub(super) fn delete(&mut self, dir: &Path) -> Result<bool, CheckpointError> {
        let Some((lock, _)) = self.lock(false, true, Need::Latest)? else {
            return Ok(false);
        };
        let existed = !self.index.is_empty();
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("cannot delete checkpoint log", &self.path, e)),
        }
        idx::remove(&self.path).map_err(|e| {
            io_error(
                "cannot delete thread sidecar index",
                &idx::path_of(&self.path),
                e,
            )
        })?;
        summary::remove(&self.path).map_err(|e| {
            io_error(
                "cannot delete thread summary",
                &summary::path_of(&self.path),
                e,
            )
        })?;
        sync_dir(dir).map_err(|e| io_error("cannot sync checkpoint directory", dir, e))?;
        drop(lock);
        self.detach();
        Ok(existed)
    }

    fn view(&self) -> View<'_> {
        View {
            index: &self.index,
            file: self.file.as_ref().map(|o| &o.file),
            path: &self.path,
        }
    }

    fn frame(&self, payload: &[u8]) -> Result<Vec<u8>, CheckpointError> {
        encode_frame(payload).ok_or_else(|| {
            self.index.corrupt(format!(
                "record of {} bytes exceeds the 4 GiB limit",
                payload.len()
            ))
        })
    }

    /// Replaces the log with a new file holding only `frame`: written and
    /// flushed under a temporary name, then renamed over the log. The
    /// caller holds the old log's exclusive lock, so every other handle
    /// waiting on it finds it unlinked and reopens the new one.
    fn replace(&mut self, dir: &Path, frame: &[u8]) -> Result<(), CheckpointError> {
        static TEMP: AtomicU64 = AtomicU64::new(0);
        let tmp = self.path.with_extension(format!(
            "log.tmp-{}-{}",
            std::process::id(),
            TEMP.fetch_add(1, Ordering::Relaxed)
        ));
        let written = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|file| {
                write_at(&file, 0, 0, frame)?;
                // The old log's sidecar must not outlive it.
                idx::remove(&self.path)?;
                fs::rename(&tmp, &self.path)?;
                Ok(file)
            });
        let file = match written {
            Ok(file) => file,
            Err(e) => {
                if let Err(e2) = fs::remove_file(&tmp)
                    && e2.kind() != io::ErrorKind::NotFound
                {
                    tracing::warn!(path = %tmp.display(), error = %e2, "could not remove a temporary checkpoint log");
                }
                return Err(io_error("cannot rewrite checkpoint log", &self.path, e));
            }
        };
        sync_dir(dir).map_err(|e| io_error("cannot sync checkpoint directory", dir, e))?;
        self.detach();
        self.file = Some(OpenLog {
            file,
            writable: true,
        });
        self.apply(frame)?;
        self.rewrite_sidecar();
        Ok(())
    }
}

/// A thread's index with its open log, for reading checkpoints and writes.
pub(super) struct View<'a> {
    pub(super) index: &'a Index,
    file: Option<&'a File>,
    path: &'a Path,
}

impl View<'_> {
    /// Reads one range of the log covering every one of `locs`.
    fn span<'l>(
        &self,
        locs: impl Iterator<Item = &'l Loc> + Clone,
    ) -> Result<Span, CheckpointError> {
        let from = locs.clone().map(|l| l.at).min();
        let to = locs.map(|l| l.end()).max();
        let (Some(from), Some(to)) = (from, to) else {
            return Ok(Span {
                at: 0,
                buf: Vec::new(),
            });
        };
        let Some(file) = self.file else {
            return Err(self.index.corrupt("indexed, but no log is open".into()));
        };
        Ok(Span {
            at: from,
            buf: read_range(file, self.path, from, to - from)?,
        })
    }

    /// The checkpoints with these `seqs` (in that order), skipping those
    /// the thread does not have.
    pub(super) fn checkpoints(
        &self,
        seqs: impl Iterator<Item = u64>,
    ) -> Result<Vec<Checkpoint>, CheckpointError> {
        let found: Vec<(u64, Loc)> = seqs
            .filter_map(|s| self.index.slot(s).map(|l| (s, l)))
            .collect();
        let span = self.span(found.iter().map(|(_, l)| l))?;
        found
            .iter()
            .map(|(seq, loc)| encode::read_checkpoint(&self.index.thread, *seq, span.get(*loc)?))
            .collect()
    }

    /// The pending writes saved after checkpoint `seq`, by task position.
    pub(super) fn writes(&self, seq: u64) -> Result<Vec<PendingWrite>, CheckpointError> {
        let locs = self.index.writes_of(seq);
        let span = self.span(locs.iter())?;
        locs.iter()
            .map(|loc| {
                serde_json::from_slice::<WriteEntry>(span.get(*loc)?)
                    .map(|e| e.write)
                    .map_err(|e| CheckpointError::Corrupt {
                        thread: self.index.thread.clone(),
                        seq,
                        message: format!("a pending write cannot be read: {e}"),
                    })
            })
            .collect()
    }

    /// Every pending write entry, as stored.
    pub(super) fn raw_writes(&self) -> Result<Vec<Vec<u8>>, CheckpointError> {
        let locs: Vec<Loc> = self.index.writes.values().copied().collect();
        self.span(locs.iter())?.all(&locs)
    }
}

/// Bytes of a log read in one go, starting at byte `at`.
struct Span {
    at: u64,
    buf: Vec<u8>,
}

impl Span {
    fn get(&self, loc: Loc) -> Result<&[u8], CheckpointError> {
        usize::try_from(loc.at - self.at)
            .ok()
            .and_then(|from| self.buf.get(from..from.checked_add(loc.len as usize)?))
            .ok_or_else(|| CheckpointError::Backend {
                message: "checkpoint log read short (an index points past what was read)".into(),
                source: None,
            })
    }

    fn all(&self, locs: &[Loc]) -> Result<Vec<Vec<u8>>, CheckpointError> {
        locs.iter()
            .map(|l| self.get(*l).map(<[u8]>::to_vec))
            .collect()
    }
}

/// Holds an advisory lock on a log until dropped (on its own handle of the
/// open file, so the log's owner stays free to replace its own).
struct FileLock {
    file: File,
}

impl FileLock {
    fn new(file: &File, exclusive: bool, path: &Path) -> Result<Self, CheckpointError> {
        let file = file
            .try_clone()
            .map_err(|e| io_error("cannot lock checkpoint log", path, e))?;
        if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        }
        .map_err(|e| io_error("cannot lock checkpoint log", path, e))?;
        Ok(Self { file })
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the last handle releases the lock anyway.
        if let Err(e) = self.file.unlock() {
            tracing::debug!(error = %e, "could not unlock a checkpoint log");
        }
    }
}

pub(super) fn io_error(operation: &'static str, path: &Path, e: io::Error) -> CheckpointError {
    CheckpointError::Io {
        operation,
        path: path.to_path_buf(),
        source: Arc::new(e),
    }
}

fn stat(file: &File, path: &Path) -> Result<fs::Metadata, CheckpointError> {
    file.metadata()
        .map_err(|e| io_error("cannot stat checkpoint log", path, e))
}

/// Options that never follow a symbolic link at the log's path (a link
/// planted there could point the store at any file) and never block on a
/// FIFO.
fn open_options(write: bool) -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true);
    if write {
        o.write(true).create(true).truncate(false);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    o
}

fn open_rw(path: &Path) -> Result<File, CheckpointError> {
    let file = open_options(true)
        .open(path)
        .map_err(|e| open_error(path, e))?;
    if !stat(&file, path)?.is_file() {
        return Err(not_a_log(path, "it is not a regular file"));
    }
    Ok(file)
}

/// An open failure; a symbolic link at the log's path is refused
/// (`O_NOFOLLOW` fails with `ELOOP`).
fn open_error(path: &Path, e: io::Error) -> CheckpointError {
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::ELOOP) {
        return not_a_log(path, "it is a symbolic link");
    }
    io_error("cannot open checkpoint log", path, e)
}

/// The log handle was used while detached (an internal invariant).
fn not_open(path: &Path) -> CheckpointError {
    io_error(
        "cannot use checkpoint log",
        path,
        io::Error::new(io::ErrorKind::NotConnected, "the log is not open"),
    )
}

/// The file at a log's path is not a log this store wrote: it is refused
/// and never written or truncated.
pub(super) fn not_a_log(path: &Path, why: &str) -> CheckpointError {
    CheckpointError::ForeignFile {
        path: path.to_path_buf(),
        reason: why.to_string(),
    }
}

/// Whether a log whose first record is not valid starts like one of this
/// store's records cut short by a crash (a frame header whose length runs
/// past the end of the file, then the start of a record's JSON): only then
/// may the bytes be cut off. Anything else is not ours and is left alone.
fn starts_like_a_torn_record(file: &File, path: &Path, len: u64) -> bool {
    let want = len.min(HEADER_LEN as u64 + 16);
    let Ok(head) = read_range(file, path, 0, want) else {
        return false;
    };
    let Some(declared) = head.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
        // Shorter than a header: a write cut inside the header.
        return head.is_empty() || len < HEADER_LEN as u64;
    };
    let declared = u64::from(u32::from_le_bytes(declared));
    let payload = head.get(HEADER_LEN..).unwrap_or(&[]);
    let json_start = [
        &b"{\"checkpoint\":"[..],
        &b"{\"batch\":"[..],
        &b"{\"write\":"[..],
    ]
    .iter()
    .any(|p| p.starts_with(payload) || payload.starts_with(p));
    HEADER_LEN as u64 + declared > len && json_start
}

/// Whether the open file is no longer linked into the directory (deleted,
/// or replaced by a rename).
#[cfg(unix)]
fn is_unlinked(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.nlink() == 0
}

#[cfg(not(unix))]
fn is_unlinked(_meta: &fs::Metadata) -> bool {
    // Open files can't be renamed over or deleted here.
    false
}

#[cfg(unix)]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[cfg(not(unix))]
fn same_file(_a: &fs::Metadata, _b: &fs::Metadata) -> bool {
    true
}

/// Reads `len` bytes of `file` at `at`.
pub(super) fn read_range(
    file: &File,
    path: &Path,
    at: u64,
    len: u64,
) -> Result<Vec<u8>, CheckpointError> {
    let n = usize::try_from(len).map_err(|_| {
        io_error(
            "cannot read checkpoint log",
            path,
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                "read too large for this platform",
            ),
        )
    })?;
    let mut buf = vec![0; n];
    #[cfg(unix)]
    let read = {
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut buf, at)
    };
    #[cfg(not(unix))]
    let read = {
        use std::io::{Read, Seek, SeekFrom};
        let mut reader = file;
        reader
            .seek(SeekFrom::Start(at))
            .and_then(|_| reader.read_exact(&mut buf))
    };
    read.map_err(|e| io_error("cannot read checkpoint log", path, e))?;
    Ok(buf)
}

/// Truncates the file to `at` if it is longer (`len`), writes `frame`
/// there and flushes it to the disk.
fn write_at(file: &File, at: u64, len: u64, frame: &[u8]) -> io::Result<()> {
    if len != at {
        file.set_len(at)?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        file.write_all_at(frame, at)?;
    }
    #[cfg(not(unix))]
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut writer = file;
        writer.seek(SeekFrom::Start(at))?;
        writer.write_all(frame)?;
    }
    file.sync_data()
}

#[cfg(unix)]
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
pub(super) fn sync_dir(_dir: &Path) -> io::Result<()> {
    // Directories can't be opened for syncing here; the file system makes
    // new entries durable on its own.
    Ok(())
}

/// Counts, per log, how many times a new index read only the log's tail.
#[cfg(test)]
pub(super) mod tail_reads {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static COUNTS: Mutex<Option<HashMap<PathBuf, usize>>> = Mutex::new(None);

    pub(in super::super) fn count(path: &Path) {
        let mut counts = COUNTS.lock().unwrap_or_else(|p| p.into_inner());
        *counts
            .get_or_insert_with(HashMap::new)
            .entry(path.to_path_buf())
            .or_default() += 1;
    }

    /// How many tail reads of the log at `path` happened so far.
    pub(in super::super) fn of(path: &Path) -> usize {
        let counts = COUNTS.lock().unwrap_or_else(|p| p.into_inner());
        counts
            .as_ref()
            .and_then(|c| c.get(path).copied())
            .unwrap_or(0)
    }
}
