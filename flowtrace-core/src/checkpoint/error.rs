//! [`CheckpointError`] and its kinds.

use std::path::PathBuf;
use std::sync::Arc;

use crate::ids::{NodeId, ThreadId};

/// A checkpointer failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Another writer appended to the thread first (fencing).
    #[error(
        "thread {thread:?}: checkpoint {seq} rejected, the thread's next checkpoint is {expected} (another writer got there first)"
    )]
    Conflict {
        /// The thread.
        thread: ThreadId,
        /// The checkpoint that was written.
        seq: u64,
        /// The checkpoint number the store expected.
        expected: u64,
    },
    /// The writer no longer holds the thread's lease: another owner took
    /// the thread over (its lease expired or it was released), so this
    /// write is rejected and nothing is stored. Stores that lease threads
    /// to one owner at a time (such as a PostgreSQL store shared by many
    /// workers) report it; the history never forks.
    #[error(
        "thread {thread:?}: write by {owner:?} under lease epoch {epoch} rejected, the thread is now held under epoch {current_epoch} (fenced)"
    )]
    Fenced {
        /// The thread.
        thread: ThreadId,
        /// The owner whose write was rejected.
        owner: String,
        /// The lease epoch the writer held.
        epoch: u64,
        /// The thread's lease epoch now.
        current_epoch: u64,
    },
    /// The stored format is not one this release reads.
    #[error(
        "thread {thread:?}: unsupported checkpoint format version {found} (this release reads {supported})"
    )]
    UnsupportedVersion {
        /// The thread.
        thread: ThreadId,
        /// The version found.
        found: u32,
        /// The version supported.
        supported: u32,
    },
    /// A checkpoint could not be (de)serialized.
    #[error("thread {thread:?}: checkpoint {seq} is not valid: {message}")]
    Corrupt {
        /// The thread.
        thread: ThreadId,
        /// The checkpoint.
        seq: u64,
        /// What is wrong.
        message: String,
    },
    /// A checkpoint nests deeper than [`MAX_RECORD_DEPTH`](super::MAX_RECORD_DEPTH): it could be
    /// written but never read back, so it is refused before anything is
    /// saved.
    #[error(
        "thread {thread:?}: checkpoint {seq} nests {depth} levels deep, over the limit of {limit} (MAX_RECORD_DEPTH){}",
        .node.as_ref().map(|n| format!("; the value came from node {n:?}")).unwrap_or_default()
    )]
    TooDeep {
        /// The thread.
        thread: ThreadId,
        /// The checkpoint.
        seq: u64,
        /// The node whose update, input or payload is too deep, when known.
        node: Option<NodeId>,
        /// The depth found.
        depth: usize,
        /// The limit.
        limit: usize,
    },
    /// The checkpoint asked for was removed by [`Checkpointer::prune`](super::Checkpointer::prune).
    #[error("thread {thread:?}: checkpoint {seq} was pruned (the oldest kept is {oldest})")]
    Pruned {
        /// The thread.
        thread: ThreadId,
        /// The checkpoint asked for.
        seq: u64,
        /// The thread's oldest remaining checkpoint.
        oldest: u64,
    },
    /// The thread has no checkpoint at all.
    #[error("thread {thread:?} has no checkpoint")]
    ThreadNotFound {
        /// The thread.
        thread: ThreadId,
    },
    /// The thread already has checkpoints (a copy's target must have none).
    #[error("thread {thread:?} already has checkpoints")]
    ThreadExists {
        /// The thread.
        thread: ThreadId,
    },
    /// The thread has checkpoints, but not this one: it is after the
    /// latest.
    #[error("thread {thread:?} has no checkpoint {seq} (its latest is {latest})")]
    CheckpointNotFound {
        /// The thread.
        thread: ThreadId,
        /// The checkpoint asked for.
        seq: u64,
        /// The thread's latest checkpoint.
        latest: u64,
    },
    /// A [`CheckpointBatch`](super::CheckpointBatch) breaks its rules (checkpoints of another
    /// thread, `seq`s not consecutive, a write for a checkpoint that is
    /// neither in the batch nor the thread's latest). Nothing was stored.
    #[error("thread {thread:?}: batch refused: {reason}")]
    InvalidBatch {
        /// The thread.
        thread: ThreadId,
        /// What is wrong.
        reason: String,
    },
    /// A file operation of the store failed.
    #[error("{operation} {}", .path.display())]
    Io {
        /// What the store was doing (`cannot write checkpoint log`, ...).
        operation: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The file at a store's path is not one this store wrote (another
    /// program's file, a symbolic link, a device): it is neither read nor
    /// written.
    #[error("{} is not a checkpoint log this store wrote ({reason}); refusing to read or write it", .path.display())]
    ForeignFile {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// The store cannot work as configured or called (no Tokio runtime, a
    /// setting out of range).
    #[error("checkpoint store misconfigured: {message}")]
    Misconfigured {
        /// What is wrong.
        message: String,
    },
    /// The backing store (a database, a remote service, a background task)
    /// failed; the driver's error is the [`source`](std::error::Error::source).
    #[error("checkpoint store failed: {message}")]
    Backend {
        /// What the store was doing.
        message: String,
        /// The driver's error, when there is one.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
}

/// What kind of failure a [`CheckpointError`] is, for callers that branch
/// on it (retry a conflict elsewhere, report corruption, page an operator
/// on I/O).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CheckpointErrorKind {
    /// The thread or checkpoint does not exist (or was pruned).
    NotFound,
    /// Another writer got there first, or the target already exists.
    Conflict,
    /// The store is used or configured wrongly; the request is invalid.
    Misconfigured,
    /// Stored data cannot be read: invalid, an unknown format, or not ours.
    Corrupt,
    /// A value is over a documented limit and was refused before storing.
    LimitExceeded,
    /// A file operation failed.
    Io,
    /// The backing database or service failed.
    Backend,
}

impl CheckpointError {
    /// The kind of failure.
    pub fn kind(&self) -> CheckpointErrorKind {
        use CheckpointErrorKind as K;
        match self {
            CheckpointError::Conflict { .. }
            | CheckpointError::Fenced { .. }
            | CheckpointError::ThreadExists { .. } => K::Conflict,
            CheckpointError::UnsupportedVersion { .. }
            | CheckpointError::Corrupt { .. }
            | CheckpointError::ForeignFile { .. } => K::Corrupt,
            CheckpointError::TooDeep { .. } => K::LimitExceeded,
            CheckpointError::Pruned { .. }
            | CheckpointError::ThreadNotFound { .. }
            | CheckpointError::CheckpointNotFound { .. } => K::NotFound,
            CheckpointError::InvalidBatch { .. } | CheckpointError::Misconfigured { .. } => {
                K::Misconfigured
            }
            CheckpointError::Io { .. } => K::Io,
            CheckpointError::Backend { .. } => K::Backend,
        }
    }

    /// A backend failure with the driver's error as its cause.
    pub fn backend<E>(message: impl Into<String>, source: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        CheckpointError::Backend {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }
}
