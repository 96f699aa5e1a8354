//! File operations on logs: advisory locks, opening without following links,
//! ranged reads, flushed writes, and the I/O errors they report.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;
use std::sync::Arc;

use super::frame::HEADER_LEN;
use crate::checkpoint::CheckpointError;

/// Holds an advisory lock on a log until dropped (on its own handle of the
/// open file, so the log's owner stays free to replace its own).
pub(super) struct FileLock {
    pub(super) file: File,
}

impl FileLock {
    pub(super) fn new(file: &File, exclusive: bool, path: &Path) -> Result<Self, CheckpointError> {
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

pub(super) fn stat(file: &File, path: &Path) -> Result<fs::Metadata, CheckpointError> {
    file.metadata()
        .map_err(|e| io_error("cannot stat checkpoint log", path, e))
}

/// Options that never follow a symbolic link at the log's path (a link
/// planted there could point the store at any file) and never block on a
/// FIFO.
pub(super) fn open_options(write: bool) -> OpenOptions {
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

pub(super) fn open_rw(path: &Path) -> Result<File, CheckpointError> {
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
pub(super) fn open_error(path: &Path, e: io::Error) -> CheckpointError {
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::ELOOP) {
        return not_a_log(path, "it is a symbolic link");
    }
    io_error("cannot open checkpoint log", path, e)
}

/// The log handle was used while detached (an internal invariant).
pub(super) fn not_open(path: &Path) -> CheckpointError {
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
pub(super) fn starts_like_a_torn_record(file: &File, path: &Path, len: u64) -> bool {
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
pub(super) fn is_unlinked(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.nlink() == 0
}

#[cfg(not(unix))]
pub(super) fn is_unlinked(_meta: &fs::Metadata) -> bool {
    // Open files can't be renamed over or deleted here.
    false
}

#[cfg(unix)]
pub(super) fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[cfg(not(unix))]
pub(super) fn same_file(_a: &fs::Metadata, _b: &fs::Metadata) -> bool {
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
pub(super) fn write_at(file: &File, at: u64, len: u64, frame: &[u8]) -> io::Result<()> {
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
