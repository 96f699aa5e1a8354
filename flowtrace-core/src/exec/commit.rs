//! Building checkpoints (in one place, [`Executor::checkpoint`]) and
//! committing them.

use tokio::time::Instant;

use super::executor::*;
use crate::checkpoint::{
    CHECKPOINT_FORMAT_VERSION, Checkpoint, Interrupt, JoinState, StateRecord, TaskError, TaskSpec,
    ThreadStatus,
};
use crate::error::Error;
use crate::exec::durable::check_value_depth;
use crate::exec::durable::to_json;
use crate::state::State;
use crate::trace::StepRecord;

impl<S: State> Executor<'_, S> {
    /// The scheduler's frontier as stored in a checkpoint.
    pub(super) fn frontier(&self, tasks: &[Task]) -> Vec<TaskSpec> {
        tasks
            .iter()
            .map(|t| TaskSpec {
                node: self.graph.nodes[t.node].id.clone(),
                input: t.input.clone(),
                answers: t.answers.clone(),
                approved: t.approved.clone(),
                subgraph: t.subgraph.clone(),
            })
            .collect()
    }

    /// Joins some of whose predecessors have resolved.
    pub(super) fn joins(&self) -> Vec<JoinState> {
        self.pending
            .open()
            .into_iter()
            .map(|(i, p)| JoinState {
                node: self.graph.nodes[i].id.clone(),
                resolved: p.resolved,
                fired: p.fired,
                inputs: p.inputs.clone(),
            })
            .collect()
    }

    pub(crate) fn checkpoint(
        &self,
        state: StateRecord,
        frontier: &[Task],
        nodes: Vec<crate::ids::NodeId>,
        steps: Vec<StepRecord>,
        status: ThreadStatus,
        interrupts: Vec<Interrupt>,
    ) -> Result<Checkpoint, Error> {
        let (thread, seq) = match &self.durable {
            Some(d) => (d.thread.clone(), d.next_seq()),
            None => (crate::ids::ThreadId::new(self.run.run_id.as_str()), 0),
        };
        for t in frontier {
            if let Some(input) = &t.input {
                check_value_depth(input, Some(&self.graph.nodes[t.node].id))?;
            }
        }
        for i in &interrupts {
            check_value_depth(&i.payload, Some(&i.node))?;
        }
        Ok(Checkpoint {
            thread_id: thread,
            seq,
            parent_seq: seq.checked_sub(1),
            forked_from: None,
            run_id: self.run.run_id.clone(),
            step: self.superstep,
            nodes,
            created_at: self.run.ts(Instant::now()),
            format_version: CHECKPOINT_FORMAT_VERSION,
            state,
            frontier: self.frontier(frontier),
            joins: self.joins(),
            node_executions: self
                .run
                .executions
                .load(std::sync::atomic::Ordering::Acquire),
            steps,
            step_ids: self.run.step_ids_issued(),
            status,
            interrupts,
            approvals: Vec::new(),
            error: None,
            metadata: Default::default(),
        })
    }

    /// Writes a checkpoint that stops the thread before running `ready`
    /// (same frontier, no state change), with the saved results of the
    /// tasks that finished, as one batch.
    pub(super) async fn commit_stop(
        &mut self,
        ready: &[Task],
        status: ThreadStatus,
        interrupts: Vec<Interrupt>,
        error: Option<TaskError>,
    ) -> Result<(), Error> {
        if self.durable.is_none() {
            return Ok(());
        }
        let mut cp = self.checkpoint(
            StateRecord::Delta(Vec::new()),
            ready,
            Vec::new(),
            Vec::new(),
            status,
            interrupts,
        )?;
        cp.error = error;
        let writes = Self::saved_writes(ready);
        if let Some(d) = self.durable.as_mut() {
            d.commit(cp, writes).await?;
        }
        Ok(())
    }

    /// Writes the checkpoint of a merged super-step: the nodes that ran
    /// (`ran`), their step records (from `first_record` on), the frontier
    /// `next` and the `interrupt_after` gates met. The state is a delta, or
    /// a full snapshot when the durability settings say one is due.
    pub(super) async fn commit_superstep(
        &mut self,
        deltas: Vec<serde_json::Value>,
        first_record: usize,
        ran: &[usize],
        next: &[Task],
        gates: Vec<Interrupt>,
    ) -> Result<(), Error> {
        let status = match (gates.is_empty(), next.is_empty()) {
            (false, _) => ThreadStatus::Interrupted,
            (true, true) => ThreadStatus::Completed,
            (true, false) => ThreadStatus::Running,
        };
        let steps = self.records[first_record..].to_vec();
        let nodes = ran
            .iter()
            .map(|&n| self.graph.nodes[n].id.clone())
            .collect();
        let snapshot = self
            .durable
            .as_ref()
            .is_some_and(|d| d.snapshot_due(&deltas));
        let state = if snapshot {
            StateRecord::Full(to_json(&*self.state, None)?)
        } else {
            StateRecord::Delta(deltas)
        };
        let cp = self.checkpoint(state, next, nodes, steps, status, gates)?;
        if self.durable.as_ref().is_some_and(|d| d.is_sync()) {
            // The sinks get the super-step's events before its checkpoint
            // is committed, so a crash never leaves a committed step whose
            // events a sink never received. A failure here is reported by
            // the flush at the end of the run.
            let _ = self.run.bus.flush().await;
        }
        if let Some(d) = self.durable.as_mut() {
            d.append(cp).await?;
        }
        Ok(())
    }

    /// Writes a durable run's first checkpoint: the full state and the
    /// entries as its frontier, with the run's thread metadata.
    pub(super) async fn commit_start(
        &mut self,
        ready: &[Task],
        metadata: std::collections::BTreeMap<String, serde_json::Value>,
    ) -> Result<(), Error> {
        let full = to_json(&*self.state, None)?;
        let mut cp = self.checkpoint(
            StateRecord::Full(full),
            ready,
            Vec::new(),
            Vec::new(),
            ThreadStatus::Running,
            Vec::new(),
        )?;
        cp.metadata = metadata;
        if let Some(d) = self.durable.as_mut() {
            d.append(cp).await?;
        }
        Ok(())
    }
}
