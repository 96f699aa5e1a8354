//! Thread summaries cached next to their logs (`t-<name>.sum`), so
//! `list_threads` reads a few hundred bytes per thread instead of a log.
//!
//! A summary file is a cache, never the truth: it records the length,
//! modification time and identity of the log it was computed from, and is
//! used only while the log still matches; otherwise the log is read and the
//! file rewritten. It is written under a temporary name and renamed, without
//! a flush: after a crash it is at worst missing or stale, and then ignored.

use std::fs::{self, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::checkpoint::ThreadInfo;

/// What identifies one state of a log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Stamp {
    len: u64,
    /// Modification time, nanoseconds since the epoch.
    modified: Option<u128>,
    /// Device and inode (Unix).
    id: Option<(u64, u64)>,
}

impl Stamp {
    pub(super) fn of(meta: &Metadata) -> Self {
        #[cfg(unix)]
        let id = {
            use std::os::unix::fs::MetadataExt;
            Some((meta.dev(), meta.ino()))
        };
        #[cfg(not(unix))]
        let id = None;
        Self {
            len: meta.len(),
            modified: meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_nanos()),
            id,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct SummaryFile {
    log: Stamp,
    /// `None` for a log holding no checkpoint.
    info: Option<ThreadInfo>,
}

/// The summary file of the log at `log`.
pub(super) fn path_of(log: &Path) -> PathBuf {
    log.with_extension("sum")
}

/// The cached summary of the log at `log`, if its file matches `stamp`.
pub(super) fn read(log: &Path, stamp: &Stamp) -> Option<Option<ThreadInfo>> {
    let bytes = fs::read(path_of(log)).ok()?;
    let cached: SummaryFile = serde_json::from_slice(&bytes).ok()?;
    (&cached.log == stamp).then_some(cached.info)
}

/// Caches `info` as the summary of the log at `log` in state `stamp`
/// (best effort: a failure only costs a later read of the log).
pub(super) fn write(log: &Path, stamp: Stamp, info: Option<ThreadInfo>) {
    static TEMP: AtomicU64 = AtomicU64::new(0);
    let path = path_of(log);
    let tmp = log.with_extension(format!(
        "sum.tmp-{}-{}",
        std::process::id(),
        TEMP.fetch_add(1, Ordering::Relaxed)
    ));
    let written = serde_json::to_vec(&SummaryFile { log: stamp, info })
        .map_err(io::Error::other)
        .and_then(|bytes| fs::write(&tmp, bytes))
        .and_then(|()| fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        tracing::debug!(path = %path.display(), error = %e, "could not cache a thread summary");
    }
}

/// Removes the summary file of the log at `log`, if any.
pub(super) fn remove(log: &Path) -> io::Result<()> {
    match fs::remove_file(path_of(log)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
