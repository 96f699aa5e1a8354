//! A handle on a run started in the background.

use std::fmt;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::exec::shared::RunShared;
use crate::exec::{RunFailure, RunOutput, RunSummary};
use crate::ids::RunId;
use crate::trace::{EventStream, RunStatus, Timestamp};

/// Watches, cancels or waits for a run started with
/// [`CompiledGraph::stream`](crate::CompiledGraph::stream).
pub struct RunHandle<S> {
    shared: Arc<RunShared>,
    first_stream: Option<EventStream>,
    join: JoinHandle<Result<RunOutput<S>, RunFailure>>,
}

impl<S> fmt::Debug for RunHandle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunHandle")
            .field("run_id", &self.shared.run_id)
            .finish_non_exhaustive()
    }
}

impl<S> RunHandle<S> {
    pub(crate) fn new(
        shared: Arc<RunShared>,
        first_stream: EventStream,
        join: JoinHandle<Result<RunOutput<S>, RunFailure>>,
    ) -> Self {
        Self {
            shared,
            first_stream: Some(first_stream),
            join,
        }
    }

    /// The run's id.
    pub fn run_id(&self) -> &RunId {
        &self.shared.run_id
    }

    /// The run's live events. Every stream begins with the run's
    /// `run.started` and ends after its `run.finished`. The first call
    /// returns a stream subscribed before the run started, so it sees every
    /// event unless it falls behind; later calls subscribe from the current
    /// event on, and report the events they came in too late for as a
    /// [`StreamItem::Lagged`](crate::StreamItem::Lagged) right after
    /// `run.started`.
    pub fn events(&mut self) -> EventStream {
        match self.first_stream.take() {
            Some(s) => s,
            None => self.shared.bus.subscribe(),
        }
    }

    /// Asks the run to stop. Running nodes are stopped at their next await
    /// point; the run reports [`Error::Canceled`] and status `canceled`.
    pub fn cancel(&self) {
        self.shared.cancel.cancel();
    }

    /// A clone of the run's cancellation token, to cancel it from another
    /// task while this handle waits.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.shared.cancel.clone()
    }

    /// Whether cancellation was requested.
    pub fn is_canceled(&self) -> bool {
        self.shared.cancel.is_cancelled()
    }

    /// Waits for the run to end.
    ///
    /// # Cancel safety
    /// Dropping this future does not stop the run (it keeps going in the
    /// background); only its result is lost.
    pub async fn wait(self) -> Result<RunOutput<S>, RunFailure> {
        drop(self.first_stream);
        match self.join.await {
            Ok(result) => result,
            Err(e) => Err(RunFailure {
                state: None,
                error: Error::Aborted {
                    reason: if e.is_panic() {
                        "the run's task panicked".into()
                    } else {
                        "the run's task was aborted".into()
                    },
                    source: Some(std::sync::Arc::new(e)),
                },
                summary: Box::new(RunSummary {
                    run_id: self.shared.run_id.clone(),
                    graph: String::new(),
                    status: RunStatus::Failed,
                    steps: Vec::new(),
                    usage: Default::default(),
                    cost: Default::default(),
                    node_executions: 0,
                    started_at: Timestamp::default(),
                    elapsed: Default::default(),
                    error: None,
                }),
            }),
        }
    }
}
