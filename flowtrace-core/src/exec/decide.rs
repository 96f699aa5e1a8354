//! Human decisions on resume: checking the commands against the thread's
//! pending interrupts, applying each decision to the stored frontier, and
//! recording them in one checkpoint before anything runs.

use crate::checkpoint::{
    ApprovalRecord, Checkpoint, DecisionKind, DefaultDecision, Interrupt, InterruptWhen,
    PendingWrite, StateRecord, TaskSpec, ThreadStatus,
};
use crate::error::Error;
use crate::exec::durable::{Command, Decision, to_json};
use crate::exec::executor::{Executor, Stop};
use crate::ids::{NodeId, ThreadId};
use crate::state::State;
use std::sync::Arc;

use tokio::time::Instant;

use crate::trace::StepRecord;

/// Applies the `decided` interrupts of the thread whose latest checkpoint
/// is `latest` to its stored `frontier` and `writes`, and commits them in
/// one checkpoint. Returns the `resume` event's payload and, when
/// interrupts remain undecided, the stop.
pub(super) async fn apply_decisions<S: State>(
    exec: &mut Executor<'_, S>,
    latest: &Checkpoint,
    frontier: &mut Vec<TaskSpec>,
    writes: &mut Vec<PendingWrite>,
    decided: Decided<S::Update>,
) -> Result<(serde_json::Value, Option<Stop>), Error> {
    let mut payload = serde_json::json!({ "from_checkpoint": latest.seq });
    let mut stop = None;
    if !decided.is_empty() {
        let mut deltas = Vec::new();
        let mut records = Vec::new();
        let mut summary = Vec::new();
        for (interrupt, decision, by) in decided {
            let record = apply_decision(
                exec,
                frontier,
                writes,
                &interrupt,
                decision,
                &by,
                &mut deltas,
                latest.seq,
            )?;
            summary.push(serde_json::json!({
                "interrupt_id": record.interrupt_id,
                "decision": record.decision,
                "decided_by": record.decided_by,
                "payload": record.payload,
                "node_path": interrupt.qualified_node(),
            }));
            records.push(record);
        }
        let remaining: Vec<Interrupt> = latest
            .interrupts
            .iter()
            .filter(|i| !records.iter().any(|r| r.interrupt_id == i.id))
            .cloned()
            .collect();
        payload = serde_json::json!({
            "from_checkpoint": latest.seq,
            "decisions": summary,
            "pending": remaining.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        });
        if let [one] = summary.as_slice()
            && let Some(obj) = one.as_object()
        {
            // One decision: its fields at the top level, as before.
            for (k, v) in obj {
                payload[k.as_str()] = v.clone();
            }
        }
        let tasks = exec.tasks_from(frontier.clone(), writes.clone())?;
        let status = if remaining.is_empty() {
            ThreadStatus::Running
        } else {
            ThreadStatus::Interrupted
        };
        // The decisions are durable before anything runs.
        let mut cp = exec.checkpoint(
            StateRecord::Delta(deltas),
            &tasks,
            Vec::new(),
            Vec::new(),
            status,
            remaining.clone(),
        )?;
        cp.approvals = records;
        let saved = Executor::<S>::saved_writes(&tasks);
        if let Some(d) = exec.durable.as_mut() {
            d.commit(cp, saved).await?;
        }
        if !remaining.is_empty() {
            stop = Some(Stop::Interrupted(remaining));
        }
    }
    Ok((payload, stop))
}

/// The interrupts decided by a resume, each with its decision and who
/// made it: the caller's commands, plus the defaults of interrupts whose
/// deadline passed.
pub(super) type Decided<U> = Vec<(Interrupt, Decision<U>, String)>;

/// Checks the commands against the thread's status and pending interrupts.
pub(super) fn check_decisions<U>(
    thread: &ThreadId,
    latest: &Checkpoint,
    commands: Vec<Command<U>>,
) -> Result<Decided<U>, Error> {
    if latest.status != ThreadStatus::Interrupted {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        return Err(Error::NotInterrupted {
            thread: thread.clone(),
            status: latest.status,
        });
    }
    let pending = &latest.interrupts;
    let mut decided: Decided<U> = Vec::new();
    for c in commands {
        let Some(i) = pending.iter().find(|i| i.id == c.interrupt_id) else {
            return Err(Error::StaleInterrupt {
                thread: thread.clone(),
                given: c.interrupt_id,
                pending: pending.iter().map(|i| i.id.clone()).collect(),
            });
        };
        if decided.iter().any(|(d, _, _)| d.id == i.id) {
            return Err(Error::DuplicateDecision {
                thread: thread.clone(),
                interrupt_id: i.id.clone(),
            });
        }
        decided.push((i.clone(), c.decision, c.by));
    }
    // Interrupts nobody decided whose deadline passed get their default.
    for i in pending {
        if !decided.iter().any(|(d, _, _)| d.id == i.id)
            && let Some(d) = default_decision(i)
        {
            decided.push((i.clone(), d, "deadline".to_string()));
        }
    }
    if decided.is_empty() {
        let first = pending.first();
        return Err(Error::DecisionRequired {
            thread: thread.clone(),
            node: first
                .map(|i| i.node.clone())
                .unwrap_or_else(|| NodeId::new("")),
            interrupt_id: first.map(|i| i.id.clone()).unwrap_or_default(),
            pending: pending.len(),
        });
    }
    Ok(decided)
}

/// The frontier and saved results of the graph level an interrupt belongs
/// to (the top level, or a paused subgraph inside frontier tasks).
fn level_of<'a>(
    mut frontier: &'a mut Vec<TaskSpec>,
    mut writes: &'a mut Vec<PendingWrite>,
    tasks: &[u32],
) -> Option<(&'a mut Vec<TaskSpec>, &'a mut Vec<PendingWrite>)> {
    for &t in tasks {
        let sub = frontier
            .get_mut(t as usize)
            .and_then(|spec| spec.subgraph.as_deref_mut())?;
        frontier = &mut sub.frontier;
        writes = &mut sub.writes;
    }
    Some((frontier, writes))
}

/// Applies one decision to the stored position of the thread: answers,
/// approvals, rejections (a rejected task is saved as skipped, so its
/// finished siblings keep their results), state edits and escalations.
#[allow(clippy::too_many_arguments)]
fn apply_decision<S: State>(
    exec: &mut Executor<'_, S>,
    frontier: &mut Vec<TaskSpec>,
    writes: &mut Vec<PendingWrite>,
    interrupt: &Interrupt,
    decision: Decision<S::Update>,
    by: &str,
    deltas: &mut Vec<serde_json::Value>,
    checkpoint_seq: u64,
) -> Result<ApprovalRecord, Error> {
    let depth = interrupt.path.len();
    let own = interrupt.tasks.get(depth).copied().unwrap_or(0) as usize;
    let lost = || {
        Error::Checkpoint(crate::checkpoint::CheckpointError::Corrupt {
            thread: exec
                .durable
                .as_ref()
                .map(|d| d.thread.clone())
                .unwrap_or_else(|| ThreadId::new("")),
            seq: checkpoint_seq,
            message: format!(
                "interrupt {:?} names a task the checkpoint does not hold",
                interrupt.id
            ),
        })
    };
    let prefix = interrupt.tasks.get(..depth).ok_or_else(lost)?;
    let (kind, payload, goto) = match decision {
        Decision::Approve(p) => (DecisionKind::Approve, p, None),
        Decision::Update(u) => {
            let v = to_json(&u, Some(&interrupt.node))?;
            Arc::make_mut(&mut exec.state).apply(u);
            deltas.push(v.clone());
            (DecisionKind::Update, v, None)
        }
        Decision::Reject { goto } => (
            DecisionKind::Reject,
            serde_json::json!({ "goto": goto.as_ref().map(|g| g.to_string()) }),
            goto,
        ),
        Decision::Escalate { to } => (
            DecisionKind::Escalate,
            serde_json::json!({ "to": to.to_string() }),
            Some(to),
        ),
    };
    crate::exec::durable::check_value_depth(&payload, Some(&interrupt.node))?;
    let (level, level_writes) = level_of(frontier, writes, prefix).ok_or_else(lost)?;
    let applied = match kind {
        DecisionKind::Approve | DecisionKind::Update => {
            let answer = if kind == DecisionKind::Approve {
                payload.clone()
            } else {
                serde_json::Value::Null
            };
            release(level, interrupt, own, answer, &payload)
        }
        _ => {
            let verb = if kind == DecisionKind::Reject {
                "rejected"
            } else {
                "escalated"
            };
            let reason = format!("{verb} by {by} (interrupt {})", interrupt.id);
            skip(exec, level, level_writes, interrupt, own, &reason).map(|()| {
                if let Some(goto) = goto {
                    level.push(TaskSpec::new(goto, None));
                }
            })
        }
    };
    applied.ok_or_else(lost)?;
    Ok(ApprovalRecord {
        interrupt_id: interrupt.id.clone(),
        node: interrupt.node.clone(),
        path: interrupt.path.clone(),
        decided_by: by.to_string(),
        decided_at: exec_ts(exec),
        decision: kind,
        payload,
        checkpoint_seq,
    })
}

/// An approval or an edit releases the interrupted task: its answer for
/// an `interrupt` call (task number `own` of `level`), or the approval of
/// an `interrupt_before` gate. `None` when the task is not there.
fn release(
    level: &mut [TaskSpec],
    interrupt: &Interrupt,
    own: usize,
    answer: serde_json::Value,
    payload: &serde_json::Value,
) -> Option<()> {
    match interrupt.when {
        InterruptWhen::During => {
            let t = level.get_mut(own).filter(|t| t.node == interrupt.node)?;
            t.answers.push(answer);
        }
        InterruptWhen::Before => {
            for t in level.iter_mut().filter(|t| t.node == interrupt.node) {
                t.approved = Some(payload.clone());
            }
        }
        InterruptWhen::After => {}
    }
    Some(())
}

/// A rejection or an escalation skips the interrupted task (saved as
/// skipped for `reason`), or for an `interrupt_after` gate everything the
/// graph level was about to run. `None` when the task is not there.
fn skip<S: State>(
    exec: &Executor<'_, S>,
    level: &mut Vec<TaskSpec>,
    level_writes: &mut Vec<PendingWrite>,
    interrupt: &Interrupt,
    own: usize,
    reason: &str,
) -> Option<()> {
    if interrupt.when == InterruptWhen::After {
        level.clear();
        level_writes.clear();
        return Some(());
    }
    let hit: Vec<usize> = level
        .iter()
        .enumerate()
        .filter(|(i, t)| {
            t.node == interrupt.node && (interrupt.when == InterruptWhen::Before || *i == own)
        })
        .map(|(i, _)| i)
        .collect();
    if hit.is_empty() {
        return None;
    }
    for i in hit {
        level_writes.retain(|w| w.task as usize != i);
        level_writes.push(rejected_write(exec, i as u32, &interrupt.node, reason));
    }
    Some(())
}

fn exec_ts<S: State>(exec: &Executor<'_, S>) -> crate::trace::Timestamp {
    exec.run_shared().ts(Instant::now())
}

/// The saved "result" of a task a human rejected: no update, a skipped
/// step, so it is not run and its successors skip.
fn rejected_write<S: State>(
    exec: &Executor<'_, S>,
    task: u32,
    node: &NodeId,
    reason: &str,
) -> PendingWrite {
    let run = exec.run_shared();
    let now = Instant::now();
    PendingWrite {
        task,
        node: node.clone(),
        update: None,
        dispatches: Vec::new(),
        step: StepRecord::skipped(run.next_step_id(), node.clone(), None, run.ts(now), reason),
    }
}

/// The default decision of an interrupt whose deadline has passed.
pub(super) fn default_decision<U>(interrupt: &Interrupt) -> Option<Decision<U>> {
    let deadline = interrupt.deadline?;
    if crate::trace::Timestamp::now() < deadline {
        return None;
    }
    Some(match interrupt.on_timeout.clone()? {
        DefaultDecision::Approve(p) => Decision::Approve(p),
        DefaultDecision::Reject => Decision::Reject { goto: None },
        DefaultDecision::Escalate(to) => Decision::Escalate { to },
    })
}
