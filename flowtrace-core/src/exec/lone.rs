//! The super-step of a lone task not saved before (the common case:
//! chains): it runs directly and its step merges in place, with no
//! outcomes list and nothing to reserve across siblings or to replay.

use super::executor::*;
use super::superstep::Merged;
use crate::error::Error;
use crate::pricing::Amount;
use crate::state::State;

impl<S: State> Executor<'_, S> {
    /// Reserves the task's estimate and runs it. A step that succeeded is
    /// recorded and merged here: its merge result is returned. A step that
    /// failed or paused goes into `outcomes` (and `None` is returned), for
    /// the super-step loop to handle as any other.
    pub(super) async fn run_lone(
        &mut self,
        task: &Task,
        outcomes: &mut Vec<TaskOutcome<S::Update>>,
    ) -> Result<Option<Result<Merged, Error>>, Error> {
        let cn = &self.graph.nodes[task.node];
        let amount = Amount {
            tokens: cn.config.estimated_tokens,
            cost: cn.config.estimated_cost,
        };
        self.run
            .ledger
            .reserve(amount, &cn.id)
            .map_err(Error::BudgetExceeded)?;
        let spare = self.spare_step.take();
        let (step, started, started_ts) = self.start_step(task, amount, None, spare);
        let (result, attempts) = self.run_attempts(task, &step, started, &self.cancel).await;
        let mut spare = None;
        // Kept whole (not destructured): the record moves once, into the
        // records.
        let done = self.finish_step(task, step, started_ts, result, attempts, &mut spare);
        self.spare_step = spare;
        let ended = done.0;
        if ended.error.is_some() || ended.pause.is_some() {
            outcomes.push(ended.into_outcome(task, done.1));
            return Ok(None);
        }
        let idx = self.records.len();
        self.records.push(done.1);
        let mut merged = Merged::default();
        if let Some(out) = ended.output
            && let Err(e) = self.merge_output(task.node, idx, out, None, &mut merged)
        {
            self.completed.clear();
            return Ok(Some(Err(e)));
        }
        Ok(Some(Ok(merged)))
    }
}
