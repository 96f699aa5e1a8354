//! The embedded checkpointer: one append-only log file per thread.

mod cache;
mod disk;
mod frame;
mod idx;
mod index;
mod log;
mod record;
mod store;
mod summary;
#[cfg(test)]
mod tests;
mod view;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use self::cache::{Cache, lock};
use self::disk::{io_error, sync_dir};
use self::frame::{
    HEADER_LEN, LogName, encode_frame, file_name, frame_in_place, parse_file_name, scan,
};
use self::log::{Commit, Need, ThreadLog};
use self::record::{
    CHECKPOINT_PREFIX, Start, batch_payload, first_checkpoint, write_entry, write_payload,
};
use super::{
    Checkpoint, CheckpointBatch, CheckpointError, Checkpointer, PendingWrite, PruneOutcome,
    Retention, ThreadFilter, ThreadInfo, encode,
};
use crate::ids::ThreadId;

/// How many threads' indexes a handle keeps by default.
const DEFAULT_CACHED_THREADS: usize = 256;

/// Stores every thread as an append-only log file in one directory: a
/// durable checkpointer with no server, for a single machine.
///
/// # Files
///
/// [`open`](FileCheckpointer::open) takes a directory (created if missing).
/// Each thread lives in `t-<name>.log`, where `<name>` is the thread id with
/// every byte outside `[a-z0-9_-]` written as `%XX` (uppercase hex, so two
/// ids never share a file even on a case-insensitive file system). A name
/// longer than 200 bytes is cut and suffixed with `~` and a 64-bit hash of
/// the whole id; each checkpoint also names its thread, so a clash is
/// reported as [`CheckpointError::Corrupt`], never mixed up.
///
/// A log is a sequence of records, each framed as:
///
/// | bytes | content |
/// |---|---|
/// | 4 | payload length, little-endian `u32` |
/// | 8 | FNV-1a 64 checksum of the payload, little-endian `u64` |
/// | length | the payload (below) |
///
/// A payload is one of:
///
/// * `{"checkpoint":<Checkpoint>}` — one [`append`](Checkpointer::append);
/// * `{"write":{"seq":<u64>,"write":<PendingWrite>}}` — one
///   [`put_write`](Checkpointer::put_write);
/// * a batch: the line `{"batch":{"checkpoints":[<len>, ...],"writes":[<len>, ...]}}`,
///   then, each after a newline, the JSON of every checkpoint and every
///   write entry (`{"seq":<u64>,"write":<PendingWrite>}`), of the lengths
///   in bytes the header lists. One
///   [`append_batch`](Checkpointer::append_batch) is one batch record.
///   The first record of a pruned (or copied pruned) thread's log is a
///   batch whose header also holds `"start":{"seq":<u64>,"created_at":..,
///   "forked_from":..,"metadata":..}`: the log's first checkpoint and the
///   thread's summary from before it.
///
/// Logs written by earlier releases (checkpoint and write records only)
/// read unchanged. Batch records are new in this release: an earlier
/// release refuses a log holding one with [`CheckpointError::Corrupt`]
/// rather than misreading it.
///
/// # Durability
///
/// [`append`](Checkpointer::append), [`append_batch`](Checkpointer::append_batch)
/// and [`put_write`](Checkpointer::put_write) return only once their record
/// is written and flushed to the disk (`File::sync_data`; the directory is
/// synced too when a thread's log is new): one fsync per commit, whatever the
/// batch holds. A crash can leave at most one torn record at the end of a
/// log (a short header, a short payload, or a checksum mismatch). It is
/// ignored when reading, and cut off by the next write, so the history before
/// it is intact, and a batch counts whole or not at all. A damaged record
/// *followed by* valid records is not something a crash produces: every
/// operation on that thread then fails with [`CheckpointError::Corrupt`]
/// rather than skipping part of the history.
///
/// [`prune`](Checkpointer::prune) and [`copy_thread`](Checkpointer::copy_thread)
/// write the new log under a temporary name (`t-<name>.log.tmp-…`), flush
/// it, and rename it over the old one; a crash leaves either log whole (and
/// perhaps a temporary file, which is never read).
/// [`delete_thread`](Checkpointer::delete_thread) removes the file (and its
/// summary and sidecar index files, see below). Prune and copy remove the
/// old log's sidecar index before the rename and write the new one's after.
///
/// # Concurrency and fencing
///
/// Any number of handles, in this process or in others, may share a
/// directory. A write takes an exclusive advisory lock on the thread's log
/// (`File::lock`), reads whatever other writers appended since this handle
/// last looked, and only then checks the checkpoint's `seq` against the
/// thread's real latest, so fencing holds across processes. Reads take a
/// shared lock, and only when the log has grown. Prune, copy and delete
/// replace or remove a log while holding its exclusive lock; every handle
/// checks, after locking, that the file it locked is still linked, and
/// otherwise reopens the log, so no write lands in a replaced file. The
/// locks are advisory: they hold between FlowTrace processes, not against
/// other programs editing the files, and some network file systems don't
/// implement them (nor the link count this relies on).
///
/// # Memory and I/O
///
/// Checkpoints stay on disk. A handle keeps, for each thread it used
/// recently, a small index of the thread's log — where each checkpoint and
/// pending write is (16 bytes each), which checkpoints hold full states, and
/// the thread's summary for [`list_threads`](Checkpointer::list_threads) —
/// and keeps that log open. Later operations read only what was appended
/// since (checked with one `fstat`).
///
/// Each log has a sidecar index, `t-<name>.idx`: one 64-byte entry per
/// checkpoint and per pending write, in log order (where its JSON is, the
/// end of its record, and for a checkpoint the last full state at or
/// before it), appended after each commit, without a flush. It is a cache,
/// checked before use. The first operation on a thread that needs only
/// its recent history (the latest checkpoint, the fence, `chain` or
/// `writes` from the last full state before the latest on: what a resume
/// reads) reads the sidecar's end back to that full state, checks those
/// entries and the log's records holding them, and indexes just that tail,
/// plus whatever the log holds past the sidecar; so resuming a thread from
/// a new handle costs the same however long its history. Asking for older
/// checkpoints (or `list`, `prune`, `copy_thread`, a summary) then reads
/// the log whole, once. So does a first operation when the sidecar is
/// missing, torn, stale or does not match the log, parsing only each
/// checkpoint's identity and summary fields, and it rewrites the sidecar.
/// Logs of earlier releases (with no sidecar) read as before.
///
/// Reads then fetch just the bytes they return:
/// [`get`](Checkpointer::get) of the latest reads one checkpoint,
/// [`chain`](Checkpointer::chain) reads the checkpoints from the last full
/// state in one read, [`writes`](Checkpointer::writes) only that
/// super-step's writes.
///
/// At most [`cached_threads`](FileCheckpointer::cached_threads) indexes (and
/// open logs) are kept, 256 by default; the least recently used is dropped
/// and rebuilt from disk when needed again, so a handle's memory does not
/// grow with the number of threads it serves (it grows with the history of
/// the threads kept, by 16 bytes a checkpoint: prune long threads).
/// [`list_threads`](Checkpointer::list_threads) reads the directory and
/// each thread's summary: from its index when kept, else from
/// `t-<name>.sum`, a summary file next to the log. That file is a cache
/// written by `list_threads` itself (under a temporary name, then renamed;
/// not flushed) and trusted only while the log's length, modification time
/// and identity are those it records; otherwise the log is read once and
/// the file rewritten. So listing reads a few hundred bytes per unchanged
/// thread, however long its history.
///
/// All file I/O runs on Tokio's blocking thread pool
/// ([`spawn_blocking`](tokio::task::spawn_blocking)), so an fsync or a lock
/// held by another process never stalls an async worker. The methods must
/// therefore be called from within a Tokio runtime; outside one they fail
/// with [`CheckpointError::Misconfigured`].
///
/// # Cancel safety
///
/// Every method is cancel safe in the sense that dropping its future never
/// leaves a half-written record: the blocking part runs to completion on its
/// own. A write whose future was dropped may therefore still have been
/// committed; read the thread (for example with
/// [`get`](Checkpointer::get)) to find out.
///
/// # Example
///
/// ```no_run
/// use std::sync::Arc;
/// use flowtrace_core::checkpoint::{Checkpointer, FileCheckpointer};
///
/// # fn main() -> Result<(), flowtrace_core::checkpoint::CheckpointError> {
/// let store: Arc<dyn Checkpointer> =
///     Arc::new(FileCheckpointer::open("./checkpoints")?.with_cached_threads(1024));
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct FileCheckpointer {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    cache: Mutex<Cache>,
}

impl fmt::Debug for FileCheckpointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileCheckpointer")
            .field("dir", &self.inner.dir)
            .field("cached_threads", &self.cached_threads())
            .finish_non_exhaustive()
    }
}

impl FileCheckpointer {
    /// Opens the store in `dir`, creating the directory (and its parents) if
    /// needed. Nothing is read until a thread is first used.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::Io`] if the directory can't be created, or `dir`
    /// exists and is not a directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            fs::create_dir_all(&dir)
                .map_err(|e| io_error("cannot create checkpoint directory", &dir, e))?;
            // Make the new directory's entry durable too (best effort: some
            // platforms can't sync a directory).
            if let Some(parent) = dir.parent() {
                let parent = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
                if let Err(e) = sync_dir(parent) {
                    tracing::debug!(dir = %parent.display(), error = %e, "could not sync the checkpoint directory's parent");
                }
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                dir,
                cache: Mutex::new(Cache::new(DEFAULT_CACHED_THREADS)),
            }),
        })
    }

    /// Keeps the index (and open log) of at most `threads` threads, the
    /// most recently used (256 by default, at least 1); others are rebuilt
    /// from disk when needed. Applies to every clone of this handle.
    #[must_use]
    pub fn with_cached_threads(self, threads: usize) -> Self {
        lock(&self.inner.cache).set_capacity(threads);
        self
    }

    /// How many threads' indexes this handle keeps at most.
    pub fn cached_threads(&self) -> usize {
        lock(&self.inner.cache).capacity
    }

    /// The directory holding the logs.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Runs `f` on the blocking thread pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T, CheckpointError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, CheckpointError> + Send + 'static,
    {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|e| CheckpointError::Misconfigured {
                message: format!("FileCheckpointer needs a Tokio runtime ({e})"),
            })?;
        let inner = Arc::clone(&self.inner);
        runtime
            .spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| CheckpointError::backend("the checkpoint file task ended abnormally", e))?
    }
}

// ===== impl Inner =====

impl Inner {
    /// Runs `f` on the thread's log (kept in the cache).
    fn with_log<T>(
        &self,
        thread: &ThreadId,
        f: impl FnOnce(&mut ThreadLog) -> Result<T, CheckpointError>,
    ) -> Result<T, CheckpointError> {
        let log = lock(&self.cache).get(thread, &self.dir);
        let mut log = lock(&log);
        f(&mut log)
    }

    fn commit(&self, thread: &ThreadId, commit: Commit) -> Result<(), CheckpointError> {
        self.with_log(thread, |log| log.commit(&self.dir, commit))
    }

    /// The thread's summary: from its index if kept, else from its summary
    /// file if that still matches the log, else read from the log (without
    /// keeping the index) and cached in a summary file.
    fn summary(&self, thread: &ThreadId) -> Result<Option<ThreadInfo>, CheckpointError> {
        let cached = lock(&self.cache).peek(thread);
        if let Some(log) = cached {
            return lock(&log).read(Need::All, |v| Ok(v.index.info.clone()));
        }
        let path = self.dir.join(file_name(thread));
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("cannot stat checkpoint log", &path, e)),
        };
        // Taken before reading: if the log grows meanwhile, the cache is
        // stale at once and read again next time, never wrongly trusted.
        let stamp = summary::Stamp::of(&meta);
        if let Some(info) = summary::read(&path, &stamp) {
            return Ok(info);
        }
        let info = ThreadLog::new(path.clone(), thread.clone())
            .read(Need::All, |v| Ok(v.index.info.clone()))?;
        summary::write(&path, stamp, info.clone());
        Ok(info)
    }

    fn list_threads(&self, filter: &ThreadFilter) -> Result<Vec<ThreadInfo>, CheckpointError> {
        if filter.limit == 0 {
            return Ok(Vec::new());
        }
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("cannot list checkpoint directory", &self.dir, e)),
        };
        let mut threads = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| io_error("cannot list checkpoint directory", &self.dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let thread = match parse_file_name(name) {
                LogName::Other => continue,
                LogName::Whole(thread) => thread,
                LogName::Cut => match thread_named_in(&entry.path())? {
                    Some(thread) if file_name(&thread) == name => thread,
                    _ => continue,
                },
            };
            if filter.is_after_cursor(&thread) {
                threads.push(thread);
            }
        }
        threads.sort_unstable();
        let mut out = Vec::new();
        for thread in threads {
            if let Some(info) = self.summary(&thread)?
                && filter.matches(&info)
            {
                out.push(info);
                if out.len() >= filter.limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn copy_thread(&self, from: &ThreadId, to: &ThreadId) -> Result<(), CheckpointError> {
        let (base, info, checkpoints, writes) = self.with_log(from, |log| {
            log.read(Need::All, |v| {
                let (Some(latest), Some(info)) = (v.index.latest(), v.index.info.clone()) else {
                    return Err(CheckpointError::ThreadNotFound {
                        thread: from.clone(),
                    });
                };
                let base = v.index.base;
                Ok((base, info, v.checkpoints(base..=latest)?, v.raw_writes()?))
            })
        })?;
        let checkpoints = checkpoints
            .into_iter()
            .map(|mut cp| {
                cp.thread_id = to.clone();
                encode::checkpoint(&cp)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let start = (base > 0).then(|| Start::new(base, &info));
        let payload =
            batch_payload(start, &checkpoints, &writes).map_err(|e| CheckpointError::Corrupt {
                thread: to.clone(),
                seq: base,
                message: format!("cannot encode the copy: {e}"),
            })?;
        drop((checkpoints, writes));
        let frame = frame(to, base, &payload)?;
        drop(payload);
        self.with_log(to, |log| log.create_from(&self.dir, &frame))
    }
}

/// The thread named by the first checkpoint in the log at `path`.
fn thread_named_in(path: &Path) -> Result<Option<ThreadId>, CheckpointError> {
    #[derive(serde::Deserialize)]
    struct Named {
        thread_id: ThreadId,
    }
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("cannot read checkpoint log", path, e)),
    };
    let Ok(scan) = scan(&bytes) else {
        return Ok(None);
    };
    for (_, payload) in scan.records {
        let Some(json) = first_checkpoint(payload) else {
            continue;
        };
        let mut de = serde_json::Deserializer::from_slice(json).into_iter::<Named>();
        if let Some(Ok(named)) = de.next() {
            return Ok(Some(named.thread_id));
        }
    }
    Ok(None)
}

fn frame(thread: &ThreadId, seq: u64, payload: &[u8]) -> Result<Vec<u8>, CheckpointError> {
    encode_frame(payload).ok_or_else(|| CheckpointError::Corrupt {
        thread: thread.clone(),
        seq,
        message: format!("record of {} bytes exceeds the 4 GiB limit", payload.len()),
    })
}
