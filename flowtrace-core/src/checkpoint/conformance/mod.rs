//! A conformance kit for [`Checkpointer`] implementations.
//!
//! Run [`run`] from your store's tests. It exercises everything the
//! executor relies on — round-trips, history paging, pending writes,
//! fencing, durability across a reopen, concurrency, forks, large states,
//! format versions, state chains and chains from snapshots, batches, the
//! depth limit — and the history management of the
//! [`Checkpointer`] contract: deleting, pruning,
//! copying and listing threads. It reports every failed check by name in a
//! [`ConformanceFailure`].
//!
//! What the kit can't see from outside a store — that `delete_thread` and
//! `prune` free memory or disk, that a batch is one record with one flush,
//! that `chain` and `list_threads` don't read the whole history — is the
//! store's own tests' job.
//!
//! `run` takes a function that returns a **new handle on the same
//! underlying store** each time it is called. The kit calls it to simulate
//! a process restart (data written through one handle must be readable
//! through the next) and to get competing writers. For an in-memory store,
//! clone one `Arc`; for a file store, open the same directory again; for a
//! database, build a new checkpointer over the same database.
//!
//! Each check writes to threads of its own, with ids made unique from a
//! counter, the process id and the clock, so checks never share data and
//! the kit can run against a store that already holds other threads.
//!
//! ```
//! use std::sync::Arc;
//! use flowtrace_core::checkpoint::{conformance, Checkpointer, MemoryCheckpointer};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = Arc::new(MemoryCheckpointer::new());
//! let result = conformance::run(|| -> Arc<dyn Checkpointer> { store.clone() }).await;
//! assert!(result.is_ok(), "{}", result.unwrap_err());
//! # });
//! ```
//!
//! The checks need a Tokio runtime (the concurrency checks use
//! [`tokio::spawn`]); any flavor works. A store that deadlocks makes the
//! kit hang rather than fail: wrap the call in a timeout if that matters.

use std::fmt;
use std::sync::Arc;

mod assert;
mod fencing;
mod lifecycle;
mod sample;
mod storage;
mod threads;
mod writes;

pub use fencing::{concurrent_writers, crash_ordering, fencing};
pub use lifecycle::{delete_thread, prune};
pub use sample::{sample_checkpoint, sample_write, unique_thread};
pub use storage::{
    chain, concurrent_threads, forks, format_version, history, large_state, latest, pending_writes,
    round_trip,
};
pub use threads::{copy_thread, list_threads};
pub use writes::{append_batch, chain_from_snapshot, depth_limit};

use assert::{Ctx, Store, append_simple, contiguous, short, whole};
use sample::{rich_checkpoint, simple_state};

use super::Checkpointer;

/// One check of the kit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Check {
    /// A checkpoint with every field set, and one with every optional field
    /// empty, read back equal; also after reopening.
    RoundTrip,
    /// `list` returns newest first and pages with `before` and `limit`.
    History,
    /// `get(None)` is the latest checkpoint.
    Latest,
    /// Pending writes round-trip, come back by task position, and a second
    /// write of the same task keeps the first.
    PendingWrites,
    /// Many tasks appending to their own threads through one handle.
    ConcurrentThreads,
    /// A fork (a new thread starting from a full state, with `forked_from`)
    /// leaves the original thread untouched.
    Forks,
    /// A 2 MiB state (and a 1 MiB pending write) round-trips.
    LargeState,
    /// An unknown format version is refused on append, or on read.
    FormatVersion,
    /// Appends are fenced: a wrong `seq` gets [`CheckpointError::Conflict`](super::CheckpointError::Conflict),
    /// and of two handles appending the same `seq` exactly one wins.
    Fencing,
    /// Pending writes saved after the latest checkpoint survive a reopen.
    CrashOrdering,
    /// Many handles writing checkpoints and pending writes to different
    /// threads at once.
    ConcurrentWriters,
    /// `chain` returns the checkpoints from the last full state, oldest first.
    Chain,
    /// On a thread with a full state, 50 deltas, a full state and 3
    /// deltas, `chain(latest)` is exactly the last 4 checkpoints.
    ChainFromSnapshot,
    /// `append_batch` stores checkpoints and writes together, all or
    /// nothing: a stale first `seq`, a gap, a misplaced write, a checkpoint
    /// of another thread or one too deep store nothing; of two handles
    /// racing, one wins.
    AppendBatch,
    /// A state or pending write nested 200 deep is refused with
    /// [`CheckpointError::TooDeep`](super::CheckpointError::TooDeep) and the thread stays readable; 100 deep
    /// round-trips.
    DepthLimit,
    /// `delete_thread` removes a thread's checkpoints and writes, leaves the
    /// others, reports whether it existed, and the thread can start over.
    DeleteThread,
    /// `prune` with both retentions keeps the full state a resume needs,
    /// removes the writes of pruned checkpoints, reads pruned ones as
    /// absent ([`CheckpointError::Pruned`](super::CheckpointError::Pruned) for `chain`), keeps the thread's
    /// summary, and appends carry on.
    Prune,
    /// `list_threads` filters by status and metadata (the latest metadata
    /// counts), pages with a cursor and a limit, sorted by thread id, and
    /// reports each thread's summary.
    ListThreads,
    /// `copy_thread` copies checkpoints and writes exactly (a pruned thread
    /// too), leaves the source alone, and refuses a missing source or an
    /// existing target.
    CopyThread,
}

impl Check {
    /// Every check, in the order [`run`] runs them.
    pub const ALL: &'static [Check] = &[
        Check::RoundTrip,
        Check::History,
        Check::Latest,
        Check::PendingWrites,
        Check::ConcurrentThreads,
        Check::Forks,
        Check::LargeState,
        Check::FormatVersion,
        Check::Fencing,
        Check::CrashOrdering,
        Check::ConcurrentWriters,
        Check::Chain,
        Check::ChainFromSnapshot,
        Check::AppendBatch,
        Check::DepthLimit,
        Check::DeleteThread,
        Check::Prune,
        Check::ListThreads,
        Check::CopyThread,
    ];

    /// The check's name (`snake_case`), as used in failure messages.
    pub const fn name(self) -> &'static str {
        match self {
            Check::RoundTrip => "round_trip",
            Check::History => "history",
            Check::Latest => "latest",
            Check::PendingWrites => "pending_writes",
            Check::ConcurrentThreads => "concurrent_threads",
            Check::Forks => "forks",
            Check::LargeState => "large_state",
            Check::FormatVersion => "format_version",
            Check::Fencing => "fencing",
            Check::CrashOrdering => "crash_ordering",
            Check::ConcurrentWriters => "concurrent_writers",
            Check::Chain => "chain",
            Check::ChainFromSnapshot => "chain_from_snapshot",
            Check::AppendBatch => "append_batch",
            Check::DepthLimit => "depth_limit",
            Check::DeleteThread => "delete_thread",
            Check::Prune => "prune",
            Check::ListThreads => "list_threads",
            Check::CopyThread => "copy_thread",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One failed check.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{check}: {message}")]
#[non_exhaustive]
pub struct CheckFailure {
    /// The check.
    pub check: Check,
    /// What went wrong.
    pub message: String,
}

/// Some checks of [`run`] failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.failures, *.checks_run))]
#[non_exhaustive]
pub struct ConformanceFailure {
    /// Every failed check, in run order.
    pub failures: Vec<CheckFailure>,
    /// How many checks ran.
    pub checks_run: usize,
}

impl ConformanceFailure {
    /// Whether `check` is among the failures.
    pub fn failed(&self, check: Check) -> bool {
        self.failures.iter().any(|f| f.check == check)
    }
}

fn render(failures: &[CheckFailure], checks_run: usize) -> String {
    let mut out = format!(
        "{} of {checks_run} checkpointer conformance checks failed:",
        failures.len()
    );
    for f in failures {
        out.push_str("\n- ");
        out.push_str(&f.to_string());
    }
    out
}

/// Runs every check ([`Check::ALL`]) and reports all that failed.
///
/// `open` must return a new handle on the same underlying store each time
/// it is called (see the [module docs](self)).
///
/// # Cancel safety
///
/// Dropping the future stops between two store calls; tasks already spawned
/// by a concurrency check run on to completion. What was written stays in
/// the store under this run's unique thread ids, which are never reused.
pub async fn run<F>(open: F) -> Result<(), ConformanceFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let mut failures = Vec::new();
    for &check in Check::ALL {
        match run_check(check, &open).await {
            Ok(()) => tracing::debug!(
                check = check.name(),
                "checkpointer conformance check passed"
            ),
            Err(f) => failures.push(f),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(ConformanceFailure {
            failures,
            checks_run: Check::ALL.len(),
        })
    }
}

/// Runs one check.
///
/// # Cancel safety
///
/// As for [`run`].
pub async fn run_check<F>(check: Check, open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    match check {
        Check::RoundTrip => round_trip(open).await,
        Check::History => history(open).await,
        Check::Latest => latest(open).await,
        Check::PendingWrites => pending_writes(open).await,
        Check::ConcurrentThreads => concurrent_threads(open).await,
        Check::Forks => forks(open).await,
        Check::LargeState => large_state(open).await,
        Check::FormatVersion => format_version(open).await,
        Check::Fencing => fencing(open).await,
        Check::CrashOrdering => crash_ordering(open).await,
        Check::ConcurrentWriters => concurrent_writers(open).await,
        Check::Chain => chain(open).await,
        Check::ChainFromSnapshot => chain_from_snapshot(open).await,
        Check::AppendBatch => append_batch(open).await,
        Check::DepthLimit => depth_limit(open).await,
        Check::DeleteThread => delete_thread(open).await,
        Check::Prune => prune(open).await,
        Check::ListThreads => list_threads(open).await,
        Check::CopyThread => copy_thread(open).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::MemoryCheckpointer;

    #[tokio::test]
    async fn memory_checkpointer_conforms() {
        let store = Arc::new(MemoryCheckpointer::new());
        let result = run(|| -> Arc<dyn Checkpointer> { store.clone() }).await;
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn failures_name_their_checks() {
        let failure = ConformanceFailure {
            failures: vec![
                Ctx(Check::Fencing).fail("both appends of seq 1 were accepted"),
                Ctx(Check::Chain).fail("chain(5) came back empty"),
            ],
            checks_run: Check::ALL.len(),
        };
        assert_eq!(
            failure.to_string(),
            "2 of 19 checkpointer conformance checks failed:\n\
             - fencing: both appends of seq 1 were accepted\n\
             - chain: chain(5) came back empty"
        );
        assert!(failure.failed(Check::Fencing));
        assert!(!failure.failed(Check::History));
    }

    #[test]
    fn every_check_has_a_distinct_name() {
        let mut names: Vec<&str> = Check::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Check::ALL.len());
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let s = short(&"é".repeat(1000));
        assert!(s.len() < 400, "{}", s.len());
        assert!(s.ends_with("bytes in all)"));
    }
}
