//! Replaying saved results and restoring where a run stood.

use tokio::time::Instant;

use super::executor::*;
use crate::checkpoint::{JoinState, PendingWrite, SubgraphState, TaskSpec};
use crate::error::Error;
use crate::exec::durable::to_json;
use crate::node::{Dispatch, NodeOutput};
use crate::pricing::Amount;
use crate::state::State;
use crate::trace::{EventKind, StepStatus};

impl<S: State> Executor<'_, S> {
    /// Positions a nested executor (whose state is already the saved one)
    /// where its subgraph paused and returns the tasks to run.
    pub(super) fn restore(&mut self, saved: SubgraphState) -> Result<Vec<Task>, Error> {
        self.superstep = saved.step;
        self.restore_joins(&saved.joins)?;
        self.tasks_from(saved.frontier, saved.writes)
    }

    /// Restores partially resolved joins.
    pub(crate) fn restore_joins(&mut self, joins: &[JoinState]) -> Result<(), Error> {
        for j in joins {
            let i = self.node_index(&j.node)?;
            let p = &mut self.pending[i];
            p.resolved = j.resolved;
            p.fired = j.fired;
            p.inputs = j.inputs.clone();
        }
        Ok(())
    }

    /// The tasks of a stored frontier, with their saved results attached
    /// (`writes` are by position in `frontier`).
    pub(crate) fn tasks_from(
        &self,
        frontier: Vec<TaskSpec>,
        writes: Vec<PendingWrite>,
    ) -> Result<Vec<Task>, Error> {
        let mut tasks = Vec::with_capacity(frontier.len());
        for spec in frontier {
            let mut t = Task::new(self.node_index(&spec.node)?, spec.input);
            t.answers = spec.answers;
            t.approved = spec.approved;
            t.subgraph = spec.subgraph;
            tasks.push(t);
        }
        for w in writes {
            if let Some(t) = tasks.get_mut(w.task as usize)
                && self.graph.nodes[t.node].id == w.node
            {
                t.saved = Some(Box::new(w));
            }
        }
        Ok(tasks)
    }

    /// The saved results of `tasks`, numbered by their positions.
    pub(crate) fn saved_writes(tasks: &[Task]) -> Vec<PendingWrite> {
        tasks
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                t.saved.as_ref().map(|w| {
                    let mut w = (**w).clone();
                    w.task = i as u32;
                    w
                })
            })
            .collect()
    }

    /// A finished task's result as a pending write.
    pub(super) fn pending_write(&self, o: &TaskOutcome<S::Update>) -> Result<PendingWrite, Error> {
        let id = &self.graph.nodes[o.node].id;
        let (update, dispatches) = match &o.output {
            Some(out) => (
                match (&o.update_json, &out.update) {
                    (Some(v), _) => Some(v.clone()),
                    (None, Some(u)) => Some(to_json(u, Some(id))?),
                    (None, None) => None,
                },
                out.dispatches
                    .iter()
                    .map(|d| (d.target.clone(), d.input.clone()))
                    .collect(),
            ),
            None => (None, Vec::new()),
        };
        Ok(PendingWrite {
            task: o.index,
            node: id.clone(),
            update,
            dispatches,
            step: o.record.clone(),
        })
    }

    /// In a durable run, saves a finished task's result as a pending write
    /// right away, so a crash before the super-step commits replays it
    /// instead of running the task again.
    pub(super) async fn save_pending(&self, o: &mut TaskOutcome<S::Update>) {
        let Some(d) = &self.durable else {
            return;
        };
        if !d.writes_now() || o.update_json.is_some() || o.rejected || o.pause.is_some() {
            return;
        }
        if o.output.is_none() || o.error.is_some() {
            return;
        }
        let write = match self.pending_write(o) {
            Ok(w) => w,
            Err(e) => {
                o.error = Some(Box::new(e));
                return;
            }
        };
        let update = write.update.clone();
        if let Err(e) = d
            .store
            .put_write(&d.thread, d.next_seq().saturating_sub(1), write)
            .await
        {
            o.error = Some(Box::new(Error::Checkpoint(e)));
        }
        o.update_json = update;
    }

    /// The outcome of a task whose result was saved before (or that a human
    /// rejected): no execution.
    pub(super) fn replayed(
        &self,
        task: &Task,
        reserved: Amount,
        w: &PendingWrite,
    ) -> TaskOutcome<S::Update> {
        self.run.ledger.release(reserved);
        let id = &self.graph.nodes[task.node].id;
        let rejected = w.step.status == StepStatus::Skipped;
        let update = match &w.update {
            None => Ok(None),
            Some(v) => <S::Update as serde::Deserialize>::deserialize(v).map(Some),
        };
        let (output, error) = match update {
            Ok(update) => (
                Some(NodeOutput {
                    update,
                    dispatches: w
                        .dispatches
                        .iter()
                        .map(|(t, i)| Dispatch::json(t.clone(), i.clone()))
                        .collect(),
                }),
                None,
            ),
            Err(e) => (
                None,
                Some(Error::StateSerialization {
                    node: Some(id.clone()),
                    message: format!("saved result does not match the update type: {e}"),
                }),
            ),
        };
        if rejected {
            self.emit_with(
                Instant::now(),
                Some(w.step.step_id),
                Some(task.node),
                0,
                || EventKind::StepSkipped {
                    reason: w
                        .step
                        .error
                        .clone()
                        .unwrap_or_else(|| "rejected by a human".into()),
                },
            );
        } else {
            self.emit_with(Instant::now(), None, None, 0, || EventKind::Log {
                level: crate::trace::LogLevel::Info,
                message: format!("replayed the saved result of node {id:?} (not run again)"),
            });
        }
        TaskOutcome {
            node: task.node,
            index: task.index,
            output,
            error: error.map(Box::new),
            pause: None,
            rejected,
            sibling_canceled: false,
            record: w.step.clone(),
            update_json: w.update.clone(),
        }
    }
}
