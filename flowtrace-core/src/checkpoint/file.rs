//! The embedded checkpointer: one append-only log file per thread.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{
    CHECKPOINT_FORMAT_VERSION, Checkpoint, CheckpointError, Checkpointer, PendingWrite, StateRecord,
};
use crate::ids::ThreadId;

/// Bytes before each payload: a `u32` length and a `u64` checksum, both
/// little-endian.
const HEADER_LEN: usize = 12;

/// Longest encoded thread name kept whole in a file name; longer ones are
/// cut and suffixed with a hash (file names are limited to 255 bytes).
const MAX_NAME_LEN: usize = 200;

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
/// the whole id; each record also names its thread, so a clash is reported
/// as [`CheckpointError::Corrupt`], never mixed up.
///
/// A log is a sequence of records, each framed as:
///
/// | bytes | content |
/// |---|---|
/// | 4 | payload length, little-endian `u32` |
/// | 8 | FNV-1a 64 checksum of the payload, little-endian `u64` |
/// | length | JSON: `{"checkpoint": <Checkpoint>}` or `{"write": {"seq": <u64>, "write": <PendingWrite>}}` |
///
/// # Durability
///
/// [`append`](Checkpointer::append) and [`put_write`](Checkpointer::put_write)
/// return only once the record is written and flushed to the disk
/// (`File::sync_data`; the directory is synced too when a thread's log is
/// new): one fsync per commit. A crash can leave at most one torn record at
/// the end of a log (a short header, a short payload, or a checksum
/// mismatch). It is ignored when reading, and cut off by the next write, so
/// the history before it is intact. A damaged record *followed by* valid
/// records is not something a crash produces: every operation on that thread
/// then fails with [`CheckpointError::Corrupt`] rather than skipping part of
/// the history.
///
/// # Concurrency and fencing
///
/// Any number of handles, in this process or in others, may share a
/// directory. A write takes an exclusive advisory lock on the thread's log
/// (`File::lock`), reads whatever other writers appended since this handle
/// last looked, and only then checks the checkpoint's `seq` against the
/// thread's real latest, so fencing holds across processes. Reads take a
/// shared lock, and only when the log has grown. The locks are advisory:
/// they hold between FlowTrace processes, not against other programs editing
/// the files, and some network file systems don't implement them.
///
/// # Memory and I/O
///
/// The first operation on a thread loads its log into memory; later ones read
/// only what was appended since (checked with one `stat`), so reads never
/// rescan a log. The in-memory copy lives as long as the handle (and its
/// clones) and grows with the threads touched and their history: a process
/// that serves very many long threads may prefer a database-backed store.
/// No file stays open between operations.
///
/// All file I/O runs on Tokio's blocking thread pool
/// ([`spawn_blocking`](tokio::task::spawn_blocking)), so an fsync or a lock
/// held by another process never stalls an async worker. The methods must
/// therefore be called from within a Tokio runtime; outside one they fail
/// with [`CheckpointError::Store`].
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
/// let store: Arc<dyn Checkpointer> = Arc::new(FileCheckpointer::open("./checkpoints")?);
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
    threads: Mutex<HashMap<ThreadId, Arc<Mutex<ThreadLog>>>>,
}

impl fmt::Debug for FileCheckpointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileCheckpointer")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl FileCheckpointer {
    /// Opens the store in `dir`, creating the directory (and its parents) if
    /// needed. Nothing is read until a thread is first used.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::Store`] if the directory can't be created, or
    /// `dir` exists and is not a directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            fs::create_dir_all(&dir)
                .map_err(|e| io_error("cannot create checkpoint directory", &dir, &e))?;
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
                threads: Mutex::new(HashMap::new()),
            }),
        })
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
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            CheckpointError::Store(format!("FileCheckpointer needs a Tokio runtime: {e}"))
        })?;
        let inner = Arc::clone(&self.inner);
        runtime
            .spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| CheckpointError::Store(format!("checkpoint file task failed: {e}")))?
    }
}

impl Inner {
    /// The log of `thread`, created (empty, unread) on first use.
    fn log(&self, thread: &ThreadId) -> Arc<Mutex<ThreadLog>> {
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(threads.entry(thread.clone()).or_insert_with(|| {
            Arc::new(Mutex::new(ThreadLog {
                path: self.dir.join(file_name(thread)),
                index: Index::new(thread.clone()),
                file: None,
            }))
        }))
    }

    /// Brings the thread's index up to date with its file and reads it.
    fn read<T>(
        &self,
        thread: &ThreadId,
        f: impl FnOnce(&Index) -> Result<T, CheckpointError>,
    ) -> Result<T, CheckpointError> {
        let log = self.log(thread);
        let mut log = lock(&log);
        log.refresh_for_read()?;
        f(&log.index)
    }

    /// Commits one record to the thread's log (see [`ThreadLog::commit`]).
    fn commit(&self, thread: &ThreadId, record: Record) -> Result<(), CheckpointError> {
        let payload = serde_json::to_vec(&record).map_err(|e| CheckpointError::Corrupt {
            thread: thread.clone(),
            seq: record.seq(),
            message: format!("cannot serialize: {e}"),
        })?;
        let frame = encode_frame(&payload).ok_or_else(|| CheckpointError::Corrupt {
            thread: thread.clone(),
            seq: record.seq(),
            message: format!("record of {} bytes exceeds the 4 GiB limit", payload.len()),
        })?;
        drop(payload);
        let log = self.log(thread);
        let mut log = lock(&log);
        log.commit(record, &frame, &self.dir)
    }
}

/// A thread's in-process state: the path of its log, what was read of it,
/// and the log opened for appending (kept open between commits).
struct ThreadLog {
    path: PathBuf,
    index: Index,
    file: Option<File>,
}

impl ThreadLog {
    /// Reads what was appended to the log since the last look, if anything.
    fn refresh_for_read(&mut self) -> Result<(), CheckpointError> {
        let len = match fs::metadata(&self.path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_error("cannot stat checkpoint log", &self.path, &e)),
        };
        if len == self.index.offset {
            return Ok(());
        }
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return self.index.check_len(&self.path, 0);
            }
            Err(e) => return Err(io_error("cannot open checkpoint log", &self.path, &e)),
        };
        let _lock = FileLock::shared(&file, &self.path)?;
        self.index.refresh(&file, &self.path)?;
        Ok(())
    }

    /// Appends `record` (already encoded as `frame`) under an exclusive lock,
    /// after reading what other writers appended and checking the fence.
    /// A pending write whose task is already saved is not written again.
    fn commit(&mut self, record: Record, frame: &[u8], dir: &Path) -> Result<(), CheckpointError> {
        self.index.validate(&record)?;
        if self.file.is_none() {
            let opened = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.path)
                .map_err(|e| io_error("cannot open checkpoint log", &self.path, &e))?;
            self.file = Some(opened);
        }
        let Some(file) = self.file.as_ref() else {
            return Err(CheckpointError::Store("checkpoint log not open".into()));
        };
        let _lock = FileLock::exclusive(file, &self.path)?;
        let len = self.index.refresh(file, &self.path)?;
        match &record {
            Record::Checkpoint(cp) => {
                let expected = self.index.checkpoints.len() as u64;
                if cp.seq != expected {
                    return Err(CheckpointError::Conflict {
                        thread: cp.thread_id.clone(),
                        seq: cp.seq,
                        expected,
                    });
                }
            }
            Record::Write { seq, write } => {
                if self.index.has_write(*seq, write.task) {
                    return Ok(());
                }
            }
        }
        let at = self.index.offset;
        if len > at {
            tracing::warn!(
                path = %self.path.display(),
                bytes = len - at,
                "cutting off a torn record at the end of a checkpoint log"
            );
        }
        if let Err(e) = write_at(file, at, len, frame) {
            // Leave no partial record behind if we can help it.
            if let Err(e2) = file.set_len(at) {
                tracing::warn!(path = %self.path.display(), error = %e2, "could not roll back a failed checkpoint write");
            }
            return Err(io_error("cannot write checkpoint log", &self.path, &e));
        }
        if at == 0 {
            sync_dir(dir).map_err(|e| io_error("cannot sync checkpoint directory", dir, &e))?;
        }
        self.index.offset = at + frame.len() as u64;
        self.index.insert(record);
        Ok(())
    }
}

/// Truncates the file to `at` if it is longer, writes `frame` there and
/// flushes it to the disk.
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
        use std::io::Write;
        let mut writer = file;
        writer.seek(SeekFrom::Start(at))?;
        writer.write_all(frame)?;
    }
    file.sync_data()
}

/// What has been read of one thread's log.
struct Index {
    thread: ThreadId,
    /// Bytes of the log read and applied: the end of its last valid record.
    offset: u64,
    checkpoints: Vec<Checkpoint>,
    /// Pending writes by checkpoint seq, then task position.
    writes: HashMap<u64, BTreeMap<u32, PendingWrite>>,
}

impl Index {
    fn new(thread: ThreadId) -> Self {
        Self {
            thread,
            offset: 0,
            checkpoints: Vec::new(),
            writes: HashMap::new(),
        }
    }

    fn has_write(&self, seq: u64, task: u32) -> bool {
        self.writes.get(&seq).is_some_and(|w| w.contains_key(&task))
    }

    fn corrupt(&self, message: String) -> CheckpointError {
        CheckpointError::Corrupt {
            thread: self.thread.clone(),
            seq: self.checkpoints.len() as u64,
            message,
        }
    }

    /// Fails unless a log of `len` bytes can hold what was already read.
    fn check_len(&self, path: &Path, len: u64) -> Result<(), CheckpointError> {
        if len < self.offset {
            return Err(self.corrupt(format!(
                "{} shrank from {} to {len} bytes (changed outside FlowTrace?)",
                path.display(),
                self.offset
            )));
        }
        Ok(())
    }

    /// Checks that `record` can follow what is indexed (ignoring fencing).
    fn validate(&self, record: &Record) -> Result<(), CheckpointError> {
        match record {
            Record::Checkpoint(cp) => {
                if cp.format_version != CHECKPOINT_FORMAT_VERSION {
                    return Err(CheckpointError::UnsupportedVersion {
                        thread: cp.thread_id.clone(),
                        found: cp.format_version,
                        supported: CHECKPOINT_FORMAT_VERSION,
                    });
                }
                if cp.thread_id != self.thread {
                    return Err(
                        self.corrupt(format!("found a checkpoint of thread {:?}", cp.thread_id))
                    );
                }
                Ok(())
            }
            Record::Write { .. } => Ok(()),
        }
    }

    /// Adds a validated record.
    fn insert(&mut self, record: Record) {
        match record {
            Record::Checkpoint(cp) => self.checkpoints.push(cp),
            Record::Write { seq, write } => {
                self.writes
                    .entry(seq)
                    .or_default()
                    .entry(write.task)
                    .or_insert(write);
            }
        }
    }

    /// Reads and applies the records appended after `offset`. The caller
    /// holds a lock on `file`. Returns the file's length, which is more than
    /// `offset` afterwards only if the log ends with a torn record.
    fn refresh(&mut self, file: &File, path: &Path) -> Result<u64, CheckpointError> {
        let len = file
            .metadata()
            .map_err(|e| io_error("cannot stat checkpoint log", path, &e))?
            .len();
        self.check_len(path, len)?;
        if len == self.offset {
            return Ok(len);
        }
        let mut buf = Vec::new();
        let mut reader = file;
        reader
            .seek(SeekFrom::Start(self.offset))
            .and_then(|_| reader.take(len - self.offset).read_to_end(&mut buf))
            .map_err(|e| io_error("cannot read checkpoint log", path, &e))?;
        let base = self.offset;
        let scan = scan(&buf).map_err(|e| {
            self.corrupt(format!(
                "{}: damaged record at byte {} ({}) followed by a valid record at byte {}",
                path.display(),
                base + e.at as u64,
                e.reason,
                base + e.next_valid as u64,
            ))
        })?;
        for (end, payload) in scan.records {
            let record: Record = serde_json::from_slice(payload).map_err(|e| {
                self.corrupt(format!(
                    "{}: record at byte {} has a valid checksum but can't be read: {e}",
                    path.display(),
                    base + (end - payload.len() - HEADER_LEN) as u64,
                ))
            })?;
            self.validate(&record)?;
            if let Record::Checkpoint(cp) = &record
                && cp.seq != self.checkpoints.len() as u64
            {
                return Err(self.corrupt(format!(
                    "{}: found checkpoint {} where {} belongs",
                    path.display(),
                    cp.seq,
                    self.checkpoints.len()
                )));
            }
            self.insert(record);
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
        Ok(len)
    }

    fn get(&self, seq: Option<u64>) -> Option<Checkpoint> {
        match seq {
            None => self.checkpoints.last().cloned(),
            Some(s) => usize::try_from(s)
                .ok()
                .and_then(|i| self.checkpoints.get(i))
                .cloned(),
        }
    }

    fn list(&self, before: Option<u64>, limit: usize) -> Vec<Checkpoint> {
        let len = self.checkpoints.len();
        let end = before.map_or(len, |b| usize::try_from(b).unwrap_or(usize::MAX).min(len));
        self.checkpoints
            .get(..end)
            .unwrap_or_default()
            .iter()
            .rev()
            .take(limit)
            .cloned()
            .collect()
    }

    fn writes(&self, seq: u64) -> Vec<PendingWrite> {
        self.writes
            .get(&seq)
            .map(|w| w.values().cloned().collect())
            .unwrap_or_default()
    }

    fn chain(&self, seq: u64) -> Result<Vec<Checkpoint>, CheckpointError> {
        let upto = usize::try_from(seq)
            .ok()
            .and_then(|s| self.checkpoints.get(..=s))
            .ok_or_else(|| CheckpointError::Corrupt {
                thread: self.thread.clone(),
                seq,
                message: "missing from the thread's history".into(),
            })?;
        let start = upto
            .iter()
            .rposition(|c| matches!(c.state, StateRecord::Full(_)))
            .ok_or_else(|| CheckpointError::Corrupt {
                thread: self.thread.clone(),
                seq,
                message: "no full state before this checkpoint".into(),
            })?;
        Ok(upto.get(start..).unwrap_or_default().to_vec())
    }
}

#[async_trait]
impl Checkpointer for FileCheckpointer {
    async fn append(&self, checkpoint: Checkpoint) -> Result<(), CheckpointError> {
        checkpoint.check_format_version()?;
        self.blocking(move |inner| {
            let thread = checkpoint.thread_id.clone();
            inner.commit(&thread, Record::Checkpoint(checkpoint))
        })
        .await
    }

    async fn get(
        &self,
        thread: &ThreadId,
        seq: Option<u64>,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        let thread = thread.clone();
        self.blocking(move |inner| inner.read(&thread, |index| Ok(index.get(seq))))
            .await
    }

    async fn list(
        &self,
        thread: &ThreadId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<Checkpoint>, CheckpointError> {
        let thread = thread.clone();
        self.blocking(move |inner| inner.read(&thread, |index| Ok(index.list(before, limit))))
            .await
    }

    async fn put_write(
        &self,
        thread: &ThreadId,
        seq: u64,
        write: PendingWrite,
    ) -> Result<(), CheckpointError> {
        let thread = thread.clone();
        self.blocking(move |inner| inner.commit(&thread, Record::Write { seq, write }))
            .await
    }

    async fn writes(
        &self,
        thread: &ThreadId,
        seq: u64,
    ) -> Result<Vec<PendingWrite>, CheckpointError> {
        let thread = thread.clone();
        self.blocking(move |inner| inner.read(&thread, |index| Ok(index.writes(seq))))
            .await
    }

    async fn chain(&self, thread: &ThreadId, seq: u64) -> Result<Vec<Checkpoint>, CheckpointError> {
        let thread = thread.clone();
        self.blocking(move |inner| inner.read(&thread, |index| index.chain(seq)))
            .await
    }
}

/// One record of a log.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Record {
    Checkpoint(Checkpoint),
    Write { seq: u64, write: PendingWrite },
}

impl Record {
    /// The checkpoint the record is or follows.
    fn seq(&self) -> u64 {
        match self {
            Record::Checkpoint(cp) => cp.seq,
            Record::Write { seq, .. } => *seq,
        }
    }
}

/// Holds an advisory lock on a file until dropped.
struct FileLock<'a>(&'a File);

impl<'a> FileLock<'a> {
    fn exclusive(file: &'a File, path: &Path) -> Result<Self, CheckpointError> {
        file.lock()
            .map_err(|e| io_error("cannot lock checkpoint log", path, &e))?;
        Ok(Self(file))
    }

    fn shared(file: &'a File, path: &Path) -> Result<Self, CheckpointError> {
        file.lock_shared()
            .map_err(|e| io_error("cannot lock checkpoint log", path, &e))?;
        Ok(Self(file))
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // Closing the file releases the lock anyway.
        if let Err(e) = self.0.unlock() {
            tracing::debug!(error = %e, "could not unlock a checkpoint log");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every mutation of a log's index happens after its I/O succeeded, so a
    // poisoned lock still guards a consistent index.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn io_error(what: &str, path: &Path, e: &io::Error) -> CheckpointError {
    CheckpointError::Store(format!("{what} {}: {e}", path.display()))
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    // Directories can't be opened for syncing here; the file system makes
    // new entries durable on its own.
    Ok(())
}

/// The log file name of `thread` (see [`FileCheckpointer`]).
fn file_name(thread: &ThreadId) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let id = thread.as_str().as_bytes();
    let mut name = String::with_capacity(id.len() + 6);
    name.push_str("t-");
    for &b in id {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-' {
            name.push(char::from(b));
        } else {
            name.push('%');
            name.push(char::from(HEX[usize::from(b >> 4)]));
            name.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    if name.len() > MAX_NAME_LEN {
        // Only ASCII was pushed, so any byte index is a char boundary. `~`
        // never appears in a whole name (it is escaped), so cut names can't
        // equal whole ones.
        name.truncate(MAX_NAME_LEN - 17);
        name.push('~');
        name.push_str(&format!("{:016x}", fnv1a64(id)));
    }
    name.push_str(".log");
    name
}

/// FNV-1a, 64-bit.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Frames a payload; `None` if it is too long for the length field.
fn encode_frame(payload: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(payload.len()).ok()?;
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&fnv1a64(payload).to_le_bytes());
    frame.extend_from_slice(payload);
    Some(frame)
}

/// Splits a frame header off `buf`: (payload length, checksum, rest).
fn read_header(buf: &[u8]) -> Option<(usize, u64, &[u8])> {
    let (len, rest) = buf.split_first_chunk::<4>()?;
    let (sum, rest) = rest.split_first_chunk::<8>()?;
    Some((
        u32::from_le_bytes(*len) as usize,
        u64::from_le_bytes(*sum),
        rest,
    ))
}

/// The payload of the frame at the start of `buf`, or why it is not whole.
fn decode_frame(buf: &[u8]) -> Result<&[u8], &'static str> {
    let (len, sum, rest) = read_header(buf).ok_or("incomplete header")?;
    let payload = rest.get(..len).ok_or("payload shorter than its length")?;
    if fnv1a64(payload) != sum {
        return Err("checksum mismatch");
    }
    Ok(payload)
}

/// The valid records of a log, in order.
#[derive(Debug)]
struct Scan<'a> {
    /// Each record's end offset and payload.
    records: Vec<(usize, &'a [u8])>,
    /// Why the bytes after the last record are not one (a torn write).
    torn: Option<&'static str>,
}

/// A damaged record followed by a valid one.
#[derive(Debug, PartialEq, Eq)]
struct ScanError {
    at: usize,
    reason: &'static str,
    next_valid: usize,
}

/// Splits a log into records. A bad record at the end is a torn write and
/// is reported in [`Scan::torn`]; a bad record with a valid one after it is
/// a [`ScanError`].
fn scan(buf: &[u8]) -> Result<Scan<'_>, ScanError> {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(rest) = buf.get(at..).filter(|r| !r.is_empty()) {
        match decode_frame(rest) {
            Ok(payload) => {
                at += HEADER_LEN + payload.len();
                records.push((at, payload));
            }
            Err(reason) => {
                if let Some(next_valid) = valid_frame_after(buf, at + 1) {
                    return Err(ScanError {
                        at,
                        reason,
                        next_valid,
                    });
                }
                return Ok(Scan {
                    records,
                    torn: Some(reason),
                });
            }
        }
    }
    Ok(Scan {
        records,
        torn: None,
    })
}

/// The first offset at or after `from` where a valid frame starts.
///
/// Cheap in practice: payloads are JSON text, whose bytes read as a length
/// are hundreds of megabytes, so almost every offset fails the length check
/// before any checksum is computed.
fn valid_frame_after(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len()).find(|&at| {
        let Some((len, sum, rest)) = buf.get(at..).and_then(read_header) else {
            return false;
        };
        rest.get(..len)
            .is_some_and(|p| p.len() >= 2 && p.first() == Some(&b'{') && fnv1a64(p) == sum)
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::checkpoint::{TaskSpec, ThreadStatus};
    use crate::exec::StepRecord;
    use crate::ids::{NodeId, RunId, StepId};
    use crate::pricing::{Cost, TokenUsage};
    use crate::trace::{StepStatus, Timestamp};

    /// A fresh directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(label: &str) -> Self {
            use std::sync::atomic::{AtomicU64, Ordering};
            static N: AtomicU64 = AtomicU64::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let dir = std::env::temp_dir().join(format!(
                "flowtrace-file-{label}-{}-{nanos}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn step(node: &str) -> StepRecord {
        StepRecord {
            step_id: StepId(1),
            node: NodeId::new(node),
            parent_step_id: None,
            status: StepStatus::Succeeded,
            attempts: 1,
            usage: TokenUsage::new(10, 5),
            cost: Cost::ZERO,
            latency: Duration::from_micros(1500),
            started_at: Timestamp::from_unix_micros(1_700_000_000_000_000),
            provider: None,
            model: None,
            cache_hits: 0,
            call_retries: 0,
            fallbacks: 0,
            branch: None,
            input: None,
            error: None,
        }
    }

    fn cp(thread: &ThreadId, seq: u64) -> Checkpoint {
        Checkpoint {
            thread_id: thread.clone(),
            seq,
            parent_seq: seq.checked_sub(1),
            forked_from: None,
            run_id: RunId::new("r"),
            step: seq + 1,
            nodes: vec![NodeId::new("n")],
            created_at: Timestamp::now(),
            format_version: CHECKPOINT_FORMAT_VERSION,
            state: if seq == 0 {
                StateRecord::Full(json!({ "items": [] }))
            } else {
                StateRecord::Delta(vec![json!({ "seq": seq })])
            },
            frontier: vec![TaskSpec::new("n", None)],
            joins: Vec::new(),
            node_executions: seq + 1,
            steps: vec![step("n")],
            status: ThreadStatus::Running,
            step_ids: seq + 1,
            interrupts: Vec::new(),
            approvals: Vec::new(),
            error: None,
            metadata: Default::default(),
        }
    }

    fn write(task: u32) -> PendingWrite {
        PendingWrite {
            task,
            node: NodeId::new("n"),
            update: Some(json!({ "task": task })),
            dispatches: Vec::new(),
            step: step("n"),
        }
    }

    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        payloads
            .iter()
            .filter_map(|p| encode_frame(p))
            .flatten()
            .collect()
    }

    #[test]
    fn fnv1a64_matches_reference_values() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn frames_are_length_checksum_payload() {
        let frame = encode_frame(br#"{"a":1}"#).unwrap();
        assert_eq!(&frame[..4], &7u32.to_le_bytes());
        assert_eq!(&frame[4..12], &fnv1a64(br#"{"a":1}"#).to_le_bytes());
        assert_eq!(&frame[12..], br#"{"a":1}"#);
        assert_eq!(decode_frame(&frame), Ok(&br#"{"a":1}"#[..]));
    }

    #[test]
    fn scan_reads_every_whole_record() {
        let buf = frames(&[br#"{"a":1}"#, br#"{"b":22}"#, br#"{"c":333}"#]);
        let scan = scan(&buf).unwrap();
        assert!(scan.torn.is_none());
        let payloads: Vec<&[u8]> = scan.records.iter().map(|(_, p)| *p).collect();
        assert_eq!(
            payloads,
            [&br#"{"a":1}"#[..], br#"{"b":22}"#, br#"{"c":333}"#]
        );
        assert_eq!(scan.records.last().map(|r| r.0), Some(buf.len()));
        assert!(super::scan(&[]).unwrap().records.is_empty());
    }

    #[test]
    fn scan_ignores_any_torn_tail() {
        let buf = frames(&[br#"{"a":1}"#, br#"{"b":22}"#, br#"{"c":333}"#]);
        let two = frames(&[br#"{"a":1}"#, br#"{"b":22}"#]).len();
        // Every cut inside the last record leaves the first two.
        for cut in two + 1..buf.len() {
            let scan = scan(&buf[..cut]).unwrap();
            assert_eq!(scan.records.len(), 2, "cut at {cut}");
            assert!(scan.torn.is_some(), "cut at {cut}");
        }
        // A flipped byte in the last record: a torn write too.
        let mut flipped = buf.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 0x40;
        let scan = scan(&flipped).unwrap();
        assert_eq!(scan.records.len(), 2);
        assert_eq!(scan.torn, Some("checksum mismatch"));
        // Zeros after the last record (a file extended but never written).
        let mut zeros = buf.clone();
        zeros.extend([0u8; 100]);
        let scan = super::scan(&zeros).unwrap();
        assert_eq!(scan.records.len(), 3);
        assert!(scan.torn.is_some());
    }

    #[test]
    fn scan_rejects_damage_before_valid_records() {
        let buf = frames(&[br#"{"a":1}"#, br#"{"b":22}"#, br#"{"c":333}"#]);
        let one = frames(&[br#"{"a":1}"#]).len();
        let two = frames(&[br#"{"a":1}"#, br#"{"b":22}"#]).len();
        // Flip each byte of the middle record in turn: header or payload.
        for i in one..two {
            let mut bad = buf.clone();
            bad[i] ^= 0x01;
            let err = scan(&bad).unwrap_err();
            assert_eq!(err.at, one, "flipped byte {i}");
            assert_eq!(err.next_valid, two, "flipped byte {i}");
        }
    }

    #[test]
    fn file_names_are_safe_and_distinct() {
        let name = |s: &str| file_name(&ThreadId::new(s));
        assert_eq!(name("run_1-a"), "t-run_1-a.log");
        assert_eq!(name("A"), "t-%41.log");
        assert_eq!(name("../x y"), "t-%2E%2E%2Fx%20y.log");
        assert_eq!(name("%41"), "t-%2541.log");
        assert_eq!(name(""), "t-.log");
        assert_ne!(name("a").to_lowercase(), name("A").to_lowercase());
        let long = "é".repeat(200);
        let cut = name(&long);
        assert!(cut.len() <= MAX_NAME_LEN + 4, "{}", cut.len());
        assert!(cut.contains('~'));
        assert_ne!(cut, name(&format!("{long}x")));
        assert!(
            cut.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"%~_-.".contains(&b))
        );
    }

    async fn history(store: &FileCheckpointer, thread: &ThreadId) -> Vec<u64> {
        let mut seqs: Vec<u64> = store
            .list(thread, None, usize::MAX)
            .await
            .unwrap()
            .iter()
            .map(|c| c.seq)
            .collect();
        seqs.reverse();
        seqs
    }

    #[tokio::test]
    async fn round_trips_through_a_reopened_store() {
        let dir = TempDir::new("reopen");
        let thread = ThreadId::new("Thread/1");
        let written: Vec<Checkpoint> = (0..4).map(|s| cp(&thread, s)).collect();
        {
            let store = FileCheckpointer::open(&dir.0).unwrap();
            for c in &written {
                store.append(c.clone()).await.unwrap();
            }
            store.put_write(&thread, 3, write(1)).await.unwrap();
            store.put_write(&thread, 3, write(0)).await.unwrap();
        }
        let store = FileCheckpointer::open(&dir.0).unwrap();
        let mut read = store.list(&thread, None, usize::MAX).await.unwrap();
        read.reverse();
        assert_eq!(read, written);
        assert_eq!(
            store.writes(&thread, 3).await.unwrap(),
            [write(0), write(1)]
        );
        assert_eq!(
            store.chain(&thread, 2).await.unwrap(),
            written[..3].to_vec()
        );
        assert!(dir.0.join("t-%54hread%2F1.log").is_file());
    }

    #[tokio::test]
    async fn torn_tail_is_ignored_then_cut_off() {
        let dir = TempDir::new("torn");
        let thread = ThreadId::new("torn");
        let path = dir.0.join(file_name(&thread));
        let store = FileCheckpointer::open(&dir.0).unwrap();
        for s in 0..3 {
            store.append(cp(&thread, s)).await.unwrap();
        }
        let two_len = {
            let bytes = fs::read(&path).unwrap();
            let scan = scan(&bytes).unwrap();
            scan.records[1].0
        };
        let full = fs::read(&path).unwrap();
        for cut in [1, 5, 11, 12, 13, full.len() - two_len - 1] {
            fs::write(&path, &full[..full.len() - cut]).unwrap();
            let store = FileCheckpointer::open(&dir.0).unwrap();
            assert_eq!(history(&store, &thread).await, [0, 1], "cut {cut}");
            assert_eq!(
                store.get(&thread, None).await.unwrap().map(|c| c.seq),
                Some(1)
            );
            // Seq 2 is free again: the torn record never counted.
            store.append(cp(&thread, 2)).await.unwrap();
            let reopened = FileCheckpointer::open(&dir.0).unwrap();
            assert_eq!(history(&reopened, &thread).await, [0, 1, 2], "cut {cut}");
            let bytes = fs::read(&path).unwrap();
            let scan = scan(&bytes).unwrap();
            assert_eq!((scan.records.len(), scan.torn), (3, None), "cut {cut}");
        }
        // A torn pending write behaves the same.
        let store = FileCheckpointer::open(&dir.0).unwrap();
        store.put_write(&thread, 2, write(0)).await.unwrap();
        let with_write = fs::read(&path).unwrap();
        fs::write(&path, &with_write[..with_write.len() - 3]).unwrap();
        let store = FileCheckpointer::open(&dir.0).unwrap();
        assert!(store.writes(&thread, 2).await.unwrap().is_empty());
        assert_eq!(history(&store, &thread).await, [0, 1, 2]);
        store.put_write(&thread, 2, write(0)).await.unwrap();
        assert_eq!(fs::read(&path).unwrap(), with_write);
    }

    #[tokio::test]
    async fn damage_before_valid_records_is_corrupt() {
        let dir = TempDir::new("corrupt");
        let thread = ThreadId::new("corrupt");
        let path = dir.0.join(file_name(&thread));
        let store = FileCheckpointer::open(&dir.0).unwrap();
        for s in 0..3 {
            store.append(cp(&thread, s)).await.unwrap();
        }
        let mut bytes = fs::read(&path).unwrap();
        let middle = {
            let scan = scan(&bytes).unwrap();
            (scan.records[0].0 + scan.records[1].0) / 2
        };
        bytes[middle] ^= 0x20;
        fs::write(&path, &bytes).unwrap();

        let store = FileCheckpointer::open(&dir.0).unwrap();
        let is_corrupt =
            |r: Result<(), CheckpointError>| matches!(r, Err(CheckpointError::Corrupt { .. }));
        assert!(is_corrupt(store.get(&thread, None).await.map(drop)));
        assert!(is_corrupt(store.list(&thread, None, 10).await.map(drop)));
        assert!(is_corrupt(store.writes(&thread, 0).await.map(drop)));
        assert!(is_corrupt(store.append(cp(&thread, 3)).await));
        // Nothing was appended or cut.
        assert_eq!(fs::read(&path).unwrap(), bytes);
        let Err(CheckpointError::Corrupt { message, .. }) = store.get(&thread, Some(0)).await
        else {
            panic!("expected Corrupt");
        };
        assert!(message.contains("followed by a valid record"), "{message}");
    }

    #[tokio::test]
    async fn a_valid_checksum_over_bad_json_is_corrupt() {
        let dir = TempDir::new("badjson");
        let thread = ThreadId::new("t");
        let store = FileCheckpointer::open(&dir.0).unwrap();
        fs::write(dir.0.join(file_name(&thread)), frames(&[br#"{"nope":1}"#])).unwrap();
        assert!(matches!(
            store.get(&thread, None).await,
            Err(CheckpointError::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn handles_see_each_others_appends_and_fence() {
        let dir = TempDir::new("fence");
        let thread = ThreadId::new("shared");
        let a = FileCheckpointer::open(&dir.0).unwrap();
        let b = FileCheckpointer::open(&dir.0).unwrap();
        a.append(cp(&thread, 0)).await.unwrap();
        assert_eq!(b.get(&thread, None).await.unwrap().map(|c| c.seq), Some(0));
        b.append(cp(&thread, 1)).await.unwrap();
        // `a` has not read seq 1 yet, but the fence re-reads under the lock.
        let err = a.append(cp(&thread, 1)).await.unwrap_err();
        assert!(
            matches!(
                err,
                CheckpointError::Conflict {
                    seq: 1,
                    expected: 2,
                    ..
                }
            ),
            "{err}"
        );
        a.put_write(&thread, 1, write(0)).await.unwrap();
        let mut other = write(0);
        other.update = None;
        b.put_write(&thread, 1, other).await.unwrap();
        assert_eq!(b.writes(&thread, 1).await.unwrap(), [write(0)]);
        assert_eq!(history(&a, &thread).await, [0, 1]);
    }

    #[tokio::test]
    async fn unsupported_versions_are_refused() {
        let dir = TempDir::new("version");
        let thread = ThreadId::new("v");
        let store = FileCheckpointer::open(&dir.0).unwrap();
        let mut c = cp(&thread, 0);
        c.format_version = 99;
        assert!(matches!(
            store.append(c.clone()).await,
            Err(CheckpointError::UnsupportedVersion { found: 99, .. })
        ));
        // One written by some other release is refused when read.
        let payload = serde_json::to_vec(&Record::Checkpoint(c)).unwrap();
        fs::write(
            dir.0.join(file_name(&thread)),
            encode_frame(&payload).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            store.get(&thread, None).await,
            Err(CheckpointError::UnsupportedVersion { found: 99, .. })
        ));
    }

    #[tokio::test]
    async fn missing_threads_read_as_empty_without_creating_files() {
        let dir = TempDir::new("empty");
        let store = FileCheckpointer::open(dir.0.join("nested/deeper")).unwrap();
        let thread = ThreadId::new("none");
        assert_eq!(store.get(&thread, None).await.unwrap(), None);
        assert!(store.list(&thread, None, 5).await.unwrap().is_empty());
        assert!(store.writes(&thread, 0).await.unwrap().is_empty());
        assert!(store.chain(&thread, 0).await.is_err());
        assert_eq!(fs::read_dir(store.dir()).unwrap().count(), 0);
    }

    #[test]
    fn outside_a_runtime_calls_fail_cleanly() {
        let dir = TempDir::new("nort");
        let store = FileCheckpointer::open(&dir.0).unwrap();
        let thread = ThreadId::new("x");
        let mut fut = store.get(&thread, None);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let result = fut.as_mut().poll(&mut cx);
        assert!(matches!(
            result,
            std::task::Poll::Ready(Err(CheckpointError::Store(_)))
        ));
    }
}
