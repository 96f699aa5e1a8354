//! Stopping for humans (interrupts, `interrupt_before`/`after` gates) and
//! stopping on failure.

use std::sync::Arc;

use tokio::time::Instant;

use super::executor::*;
use crate::checkpoint::{Interrupt, InterruptWhen, SubgraphState, TaskError, ThreadStatus};
use crate::error::Error;
use crate::exec::durable::to_json;
use crate::state::State;
use crate::trace::EventKind;

impl<S: State> Executor<'_, S> {
    pub(super) fn emit_interrupt(&self, interrupt: &Interrupt) {
        let node = self.graph.index.get(interrupt.node.as_str()).copied();
        self.emit_with(Instant::now(), None, node, 0, || EventKind::Interrupt {
            payload: serde_json::json!({
                "interrupt_id": interrupt.id,
                "when": interrupt.when,
                "payload": interrupt.payload,
                "path": interrupt.path,
                "node_path": interrupt.qualified_node(),
            }),
        });
    }

    pub(super) fn new_interrupt(
        &self,
        node: usize,
        when: InterruptWhen,
        payload: serde_json::Value,
        task: u32,
        call: u32,
    ) -> Interrupt {
        let id = &self.graph.nodes[node].id;
        let id_text = match when {
            InterruptWhen::During => format!(
                "{}{}:{id}.{task}.{call}",
                self.scope.id_prefix, self.superstep
            ),
            _ => format!("{}{}:{id}", self.scope.id_prefix, self.superstep),
        };
        let created_at = self.run.ts(Instant::now());
        let (deadline, on_timeout) = match &self.run.interrupt_deadline {
            Some((after, default)) => (
                Some(created_at.plus_micros(after.as_micros() as u64)),
                Some(default.clone()),
            ),
            None => (None, None),
        };
        let mut tasks = self.scope.tasks.clone();
        tasks.push(task);
        Interrupt {
            id: id_text,
            node: id.clone(),
            path: self.scope.path.clone(),
            tasks,
            call,
            when,
            payload,
            deadline,
            on_timeout,
            created_at,
        }
    }

    /// The static `interrupt_before` gates the tasks of `ready` meet (one
    /// per node; tasks a human already approved pass).
    pub(super) fn gates_before(&self, ready: &[Task]) -> Vec<Interrupt> {
        let mut out: Vec<Interrupt> = Vec::new();
        for t in ready {
            if self.interrupt_before.contains(&t.node)
                && t.approved.is_none()
                && t.saved.is_none()
                && !out.iter().any(|i| i.node == self.graph.nodes[t.node].id)
            {
                out.push(self.new_interrupt(
                    t.node,
                    InterruptWhen::Before,
                    serde_json::Value::Null,
                    t.index,
                    0,
                ));
            }
        }
        out
    }

    /// Stops for humans before running `ready`: records where the graph
    /// stands (a checkpoint at the top level; the subgraph's position for a
    /// nested graph, carried up by its parent task) and surfaces every
    /// question.
    pub(super) async fn pause(
        &mut self,
        ready: &[Task],
        interrupts: Vec<Interrupt>,
    ) -> Result<Stop, Error> {
        if self.scope.is_nested() {
            self.save_position(ready)?;
        } else {
            self.commit_stop(ready, ThreadStatus::Interrupted, interrupts.clone(), None)
                .await?;
        }
        for i in interrupts.iter().filter(|i| i.path == self.scope.path) {
            self.emit_interrupt(i);
        }
        Ok(Stop::Interrupted(interrupts))
    }

    /// Stops after a super-step whose nodes have `interrupt_after` gates
    /// (the top level's checkpoint is already written).
    pub(super) async fn pause_after(
        &mut self,
        next: &[Task],
        gates: Vec<Interrupt>,
    ) -> Result<Stop, Error> {
        if self.scope.is_nested() {
            self.save_position(next)?;
        }
        for i in &gates {
            self.emit_interrupt(i);
        }
        Ok(Stop::Interrupted(gates))
    }

    /// A nested graph's position, for its parent task to carry.
    pub(super) fn save_position(&mut self, ready: &[Task]) -> Result<(), Error> {
        self.paused = Some(SubgraphState {
            state: to_json(&*self.state, self.scope.path.last())?,
            step: self.superstep,
            frontier: self.frontier(ready),
            joins: self.joins(),
            writes: Self::saved_writes(ready),
        });
        Ok(())
    }

    /// Tasks of the super-step asked for humans: keeps the finished
    /// siblings' results and every task's pause, then stops.
    pub(super) async fn pause_superstep(
        &mut self,
        ready: &mut [Task],
        outcomes: &mut Vec<TaskOutcome<S::Update>>,
    ) -> Result<Stop, Error> {
        let mut interrupts = Vec::new();
        let mut result = Ok(());
        for o in outcomes.drain(..) {
            match o.pause.as_deref() {
                Some(TaskPause::Asked { call, payload }) => {
                    interrupts.push(self.new_interrupt(
                        o.node,
                        InterruptWhen::During,
                        payload.clone(),
                        o.index,
                        *call,
                    ));
                }
                Some(TaskPause::Subgraph(p)) => {
                    if let Some(t) = ready.get_mut(o.index as usize) {
                        t.subgraph = Some(Box::new(p.state.clone()));
                    }
                    interrupts.extend(p.interrupts.iter().cloned());
                }
                None => {
                    if o.output.is_some()
                        && o.error.is_none()
                        && ready
                            .get(o.index as usize)
                            .is_some_and(|t| t.saved.is_none())
                    {
                        match self.pending_write(&o) {
                            Ok(w) => {
                                if let Some(t) = ready.get_mut(o.index as usize) {
                                    t.saved = Some(Box::new(w));
                                }
                            }
                            Err(e) => result = Err(e),
                        }
                    }
                }
            }
            self.records.push(o.record);
        }
        result?;
        self.pause(ready, interrupts).await
    }

    /// A task of the super-step failed: keeps the finished siblings'
    /// results (merged into the in-memory state, so the failure report shows
    /// them, and saved with the failed checkpoint, so resuming replays
    /// them) and records the failure.
    pub(super) async fn fail_superstep(
        &mut self,
        ready: &mut [Task],
        outcomes: &mut Vec<TaskOutcome<S::Update>>,
        pos: usize,
    ) -> Error {
        let failed_task = outcomes[pos].index;
        let mut error = None;
        for mut o in outcomes.drain(..) {
            if o.index == failed_task {
                error = o.error.take().map(|e| *e);
            } else if o.output.is_some()
                && o.error.is_none()
                && o.pause.is_none()
                && !o.rejected
                && ready
                    .get(o.index as usize)
                    .is_some_and(|t| t.saved.is_none())
                && let Ok(w) = self.pending_write(&o)
                && let Some(t) = ready.get_mut(o.index as usize)
            {
                t.saved = Some(Box::new(w));
            }
            if !o.rejected
                && let Some(update) = o.output.and_then(|out| out.update)
            {
                Arc::make_mut(&mut self.state).apply(update);
            }
            self.records.push(o.record);
        }
        let error = error.unwrap_or_else(|| Error::aborted("a task failed without an error"));
        self.fail(ready, Some(failed_task), error).await
    }

    /// Records a failed run in its thread (top level, durable runs): a
    /// `failed` checkpoint with the super-step's tasks (finished ones with
    /// their saved results) and the error. Returns the error.
    pub(super) async fn fail(&mut self, ready: &[Task], task: Option<u32>, error: Error) -> Error {
        if self.scope.is_nested() || self.durable.is_none() || matches!(error, Error::Checkpoint(_))
        {
            return error;
        }
        let node = task
            .and_then(|t| ready.get(t as usize))
            .map(|t| self.graph.nodes[t.node].id.clone())
            .or_else(|| error.node().cloned());
        let record = TaskError {
            node,
            task,
            kind: error.kind().to_string(),
            message: error.report().to_string(),
        };
        if let Err(e) = self
            .commit_stop(ready, ThreadStatus::Failed, Vec::new(), Some(record))
            .await
        {
            self.emit_log(
                crate::trace::LogLevel::Error,
                &format!("the failure could not be recorded in the thread: {e}"),
            );
        }
        error
    }
}
