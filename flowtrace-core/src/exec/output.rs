//! What a run returns: its final state and report, or why it failed.

use crate::error::Error;
use crate::trace::RunSummary;
/// halted. `summary.status` tells which.
#[derive(Debug, Clone)]
pub struct RunOutput<S> {
    /// The state when the run stopped.
    pub state: S,
    /// The report.
    pub summary: RunSummary,
    /// Every question waiting for a human, when the run stopped for
    /// decisions (several when parallel tasks or dispatched instances each
    /// asked; answer them one at a time or all at once).
    pub interrupts: Vec<crate::checkpoint::Interrupt>,
    /// The durable thread, when the run had a checkpointer.
    pub thread: Option<crate::ids::ThreadId>,
}

impl<S> RunOutput<S> {
    /// The first pending interrupt, if the run stopped for decisions.
    pub fn interrupt(&self) -> Option<&crate::checkpoint::Interrupt> {
        self.interrupts.first()
    }
}

/// A failed run: why, and the report of what happened until then.
#[derive(Debug, Clone, thiserror::Error)]
#[error("run {} failed", .summary.run_id)]
pub struct RunFailure {
    /// Why it failed (also the [`source`](std::error::Error::source); print
    /// [`RunFailure::report`] for the whole chain).
    #[source]
    pub error: Error,
    /// What ran, what it cost.
    pub summary: Box<RunSummary>,
    /// The state when the run stopped (every update merged until then),
    /// serialized as JSON — to see what the completed steps produced. `None`
    /// when the run never got a state or it could not be serialized.
    pub state: Option<Box<serde_json::Value>>,
}

impl RunFailure {
    /// The failure and every cause under it, on one line
    /// (`run r-1 failed: node "fetch" failed after 3 attempt(s): ...`).
    pub fn report(&self) -> crate::error::Report<'_> {
        crate::error::Report::new(self)
    }
}
