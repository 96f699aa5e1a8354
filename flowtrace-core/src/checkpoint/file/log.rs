//! One thread's log, open and indexed: reads, fenced commits, and the
//! rewrites (prune, copy) and removal (delete) that replace the file.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(test)]
use super::disk::tail_reads;
use super::disk::{
    FileLock, io_error, is_unlinked, not_a_log, not_open, open_error, open_options, open_rw,
    read_range, same_file, starts_like_a_torn_record, stat, sync_dir, write_at,
};
use super::frame::{encode_frame, scan};
use super::idx;
use super::index::{Index, Loc, is_checkpoint};
use super::record::{Start, batch_payload};
use super::summary;
use super::view::View;
use crate::checkpoint::{CheckpointBatch, CheckpointError, PruneOutcome, Retention, encode};
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
