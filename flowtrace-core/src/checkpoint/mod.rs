//! Checkpointers: the durable history of a run, per thread.
//!
//! A run with a [`Checkpointer`] and a [`ThreadId`](crate::ThreadId) writes a [`Checkpoint`]
//! after every super-step. The first checkpoint of a thread holds the whole
//! state; every later one holds only the updates merged in its super-step
//! ([`StateRecord::Delta`]), so a write costs what changed, not the size of
//! the state. The state at any checkpoint is the last full state before it
//! with the later deltas re-applied through the state's reducers.
//!
//! Inside a super-step whose tasks run concurrently, each finished task's
//! result is saved as a [`PendingWrite`]; a resume after a crash replays those
//! results instead of running the tasks again.
//!
//! Appends are fenced: checkpoint `seq` is accepted only if the thread's
//! latest is `seq - 1` (or the thread is empty and `seq` is 0), so two
//! writers on one thread can never fork its history — the stale one gets
//! [`CheckpointError::Conflict`].
//!
//! Histories are managed with [`Checkpointer::prune`] (drop old
//! checkpoints, never what a resume needs), [`Checkpointer::delete_thread`],
//! [`Checkpointer::copy_thread`] and [`Checkpointer::list_threads`].
//!
//! [`MemoryCheckpointer`] is the in-memory default; [`FileCheckpointer`]
//! keeps threads in append-only files.

pub mod conformance;
mod depth;
pub mod encode;
mod error;
mod file;
mod memory;
mod records;
mod store;
mod thread;

pub use depth::{MAX_RECORD_DEPTH, MAX_VALUE_DEPTH, value_depth};
pub use error::{CheckpointError, CheckpointErrorKind};
pub use file::FileCheckpointer;
pub use memory::MemoryCheckpointer;
pub use records::{
    ApprovalRecord, CHECKPOINT_FORMAT_VERSION, Checkpoint, CheckpointBatch, DecisionKind,
    DefaultDecision, Interrupt, InterruptWhen, JoinState, PendingWrite, StateRecord, SubgraphState,
    TaskError, TaskSpec, ThreadStatus,
};
pub use store::Checkpointer;
pub use thread::{PruneOutcome, Retention, ThreadFilter, ThreadInfo};
