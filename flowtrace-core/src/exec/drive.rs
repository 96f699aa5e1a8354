//! Top-level runs: preparing a fresh or resumed run, running it, and
//! reporting it (summary, `budget.exceeded`, `run.finished`, sink flush).

use std::sync::Arc;

use tokio::time::Instant;
use tracing::Instrument;

use crate::checkpoint::{
    ApprovalRecord, Checkpoint, DecisionKind, DefaultDecision, Interrupt, InterruptWhen,
    PendingWrite, StateRecord, TaskSpec, ThreadStatus,
};
use crate::error::{BuildError, Error, GraphProblem};
use crate::exec::FinishedThread;
use crate::exec::durable::{Command, Decision, Durable, rebuild, to_json};
use crate::exec::executor::{Executor, Stop, Task, status_of};
use crate::exec::shared::RunShared;
use crate::exec::{RunFailure, RunOutput, RunSummary, StepRecord};
use crate::graph::Inner;
use crate::ids::{NodeId, ThreadId};
use crate::node::Scope;
use crate::pricing::{Cost, TokenUsage};
use crate::state::State;
use crate::trace::{EventKind, RunStatus, StepStatus};

/// How a top-level run begins.
pub(crate) enum Start<S: State> {
    /// A new run (a new thread, or the next run of a finished one, when
    /// durable).
    Fresh(S),
    /// Continue a thread from its latest checkpoint, with decisions for
    /// the interrupts it waits on.
    Resume(Vec<Command<S::Update>>),
}

fn resolve_interrupts<S: State>(
    graph: &Inner<S>,
    run: &RunShared,
) -> Result<(Vec<usize>, Vec<usize>), Error> {
    let mut problems = Vec::new();
    let mut resolve = |ids: &[NodeId], base: &[usize], which: &str| -> Vec<usize> {
        let mut out = base.to_vec();
        for id in ids {
            match graph.index.get(id.as_str()) {
                Some(&i) => out.push(i),
                None => problems.push(GraphProblem::UnknownNode {
                    node: id.clone(),
                    referenced_by: format!("RunConfig::{which}"),
                }),
            }
        }
        out
    };
    let before = resolve(
        &run.interrupt_before,
        &graph.interrupt_before,
        "interrupt_before",
    );
    let after = resolve(
        &run.interrupt_after,
        &graph.interrupt_after,
        "interrupt_after",
    );
    if problems.is_empty() {
        Ok((before, after))
    } else {
        Err(Error::Build(BuildError { problems }))
    }
}

/// The executor positioned to run, its first tasks, and a stop when the
/// run ends before running anything (decisions still pending).
/// The last also names the thread's latest checkpoint before this run (for
/// a summary covering the thread).
type Prepared<'g, S> = (Executor<'g, S>, Vec<Task>, Option<Stop>, Option<u64>);

async fn prepare<'g, S: State>(
    graph: &'g Inner<S>,
    run: &Arc<RunShared>,
    start: Start<S>,
) -> Result<Prepared<'g, S>, Error> {
    let (before, after) = resolve_interrupts(graph, run)?;
    let durable = run.checkpointer.clone().map(|store| {
        let thread = run
            .thread
            .clone()
            .unwrap_or_else(|| ThreadId::new(run.run_id.as_str()));
        Durable::new(store, thread, run.durability, run.snapshots)
    });
    let new_exec = |state: S| {
        let mut exec = Executor::new(
            graph,
            run.clone(),
            None,
            run.cancel.clone(),
            Arc::new(state),
        );
        exec.interrupt_before = before.clone();
        exec.interrupt_after = after.clone();
        exec
    };
    match start {
        Start::Fresh(input) => {
            let Some(mut d) = durable else {
                let mut exec = new_exec(input);
                let ready = exec.entry_tasks();
                return Ok((exec, ready, None, None));
            };
            let thread = d.thread.clone();
            let previous = d.store.get(&thread, None).await?;
            let state = match &previous {
                None => input,
                Some(latest) => {
                    match (latest.status, run.finished_thread) {
                        (ThreadStatus::Completed, FinishedThread::Continue) => {}
                        (ThreadStatus::Completed, _) => {
                            return Err(Error::ThreadExists { thread });
                        }
                        (status, _) => return Err(Error::ThreadBusy { thread, status }),
                    }
                    let chain = d.store.chain(&thread, latest.seq).await?;
                    let mut state: S = rebuild(&thread, &chain)?;
                    state.merge_input(input);
                    state
                }
            };
            let mut exec = new_exec(state);
            exec.scope = Arc::new(Scope::top(thread.as_str()));
            if let Some(latest) = &previous {
                // The thread goes on: steps and super-steps are numbered
                // after its history.
                exec.superstep = latest.step;
                run.set_step_base(latest.step_ids);
                d.resume_at(latest.seq, 0);
            }
            let ready = exec.entry_tasks();
            let full = to_json(&*exec.state, None)?;
            exec.durable = Some(d);
            let mut cp = exec.checkpoint(
                StateRecord::Full(full),
                &ready,
                Vec::new(),
                Vec::new(),
                ThreadStatus::Running,
                Vec::new(),
            )?;
            cp.metadata = run.metadata.clone();
            if let Some(d) = exec.durable.as_mut() {
                d.append(cp).await?;
            }
            Ok((exec, ready, None, previous.map(|p| p.seq)))
        }
        Start::Resume(commands) => {
            let Some(mut d) = durable else {
                return Err(Error::NotDurable {
                    operation: "resuming a thread",
                });
            };
            let thread = d.thread.clone();
            let latest =
                d.store
                    .get(&thread, None)
                    .await?
                    .ok_or_else(|| Error::ThreadNotFound {
                        thread: thread.clone(),
                    })?;
            let decided = check_decisions(&thread, &latest, commands)?;
            let chain = d.store.chain(&thread, latest.seq).await?;
            let state: S = rebuild(&thread, &chain)?;
            let mut exec = new_exec(state);
            exec.scope = Arc::new(Scope::top(thread.as_str()));
            exec.superstep = latest.step;
            run.executions
                .store(latest.node_executions, std::sync::atomic::Ordering::Release);
            run.set_step_base(latest.step_ids);
            exec.restore_joins(&latest.joins)?;
            let mut frontier = latest.frontier.clone();
            let mut writes = d.store.writes(&thread, latest.seq).await?;
            d.resume_at(
                latest.seq,
                u32::try_from(chain.len().saturating_sub(1)).unwrap_or(u32::MAX),
            );
            exec.durable = Some(d);

            let mut payload = serde_json::json!({ "from_checkpoint": latest.seq });
            let mut stop = None;
            if !decided.is_empty() {
                let mut deltas = Vec::new();
                let mut records = Vec::new();
                let mut summary = Vec::new();
                for (interrupt, decision, by) in decided {
                    let record = apply_decision(
                        &mut exec,
                        &mut frontier,
                        &mut writes,
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
            let ready = exec.tasks_from(frontier, writes)?;
            run.event(
                Instant::now(),
                None,
                None,
                None,
                0,
                EventKind::Resume { payload },
            );
            Ok((exec, ready, stop, Some(latest.seq)))
        }
    }
}

/// The interrupts decided by a resume, each with its decision and who
/// made it: the caller's commands, plus the defaults of interrupts whose
/// deadline passed.
type Decided<U> = Vec<(Interrupt, Decision<U>, String)>;

/// Checks the commands against the thread's status and pending interrupts.
fn check_decisions<U>(
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
    match kind {
        DecisionKind::Approve | DecisionKind::Update => {
            let answer = if kind == DecisionKind::Approve {
                payload.clone()
            } else {
                serde_json::Value::Null
            };
            match interrupt.when {
                InterruptWhen::During => {
                    let t = level
                        .get_mut(own)
                        .filter(|t| t.node == interrupt.node)
                        .ok_or_else(lost)?;
                    t.answers.push(answer);
                }
                InterruptWhen::Before => {
                    for t in level.iter_mut().filter(|t| t.node == interrupt.node) {
                        t.approved = Some(payload.clone());
                    }
                }
                InterruptWhen::After => {}
            }
        }
        _ => {
            let reason = format!(
                "{} by {by} (interrupt {})",
                if kind == DecisionKind::Reject {
                    "rejected"
                } else {
                    "escalated"
                },
                interrupt.id
            );
            match interrupt.when {
                InterruptWhen::After => {
                    level.clear();
                    level_writes.clear();
                }
                InterruptWhen::During | InterruptWhen::Before => {
                    let hit: Vec<usize> = level
                        .iter()
                        .enumerate()
                        .filter(|(i, t)| {
                            t.node == interrupt.node
                                && (interrupt.when == InterruptWhen::Before || *i == own)
                        })
                        .map(|(i, _)| i)
                        .collect();
                    if hit.is_empty() {
                        return Err(lost());
                    }
                    for i in hit {
                        level_writes.retain(|w| w.task as usize != i);
                        level_writes.push(rejected_write(exec, i as u32, &interrupt.node, &reason));
                    }
                }
            }
            if let Some(goto) = goto {
                level.push(TaskSpec::new(goto, None));
            }
        }
    }
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

/// The committed steps of a thread up to checkpoint `upto` (for
/// [`SummaryScope::Thread`](crate::exec::SummaryScope::Thread)), oldest first.
async fn thread_history(d: &Durable, upto: Option<u64>) -> Result<Vec<StepRecord>, Error> {
    let Some(upto) = upto else {
        return Ok(Vec::new());
    };
    let mut cps = d
        .store
        .list(&d.thread, Some(upto.saturating_add(1)), usize::MAX)
        .await?;
    cps.reverse();
    Ok(cps.into_iter().flat_map(|c| c.steps).collect())
}

/// The default decision of an interrupt whose deadline has passed.
fn default_decision<U>(interrupt: &Interrupt) -> Option<Decision<U>> {
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

/// Runs a top-level graph and reports it.
pub(crate) async fn drive<S: State>(
    graph: &Inner<S>,
    run: Arc<RunShared>,
    start: Start<S>,
) -> Result<RunOutput<S>, RunFailure> {
    let started = Instant::now();
    run.event(
        started,
        None,
        None,
        None,
        0,
        EventKind::RunStarted {
            graph: graph.name.clone(),
        },
    );
    let span = tracing::info_span!("flowtrace.run", run_id = %run.run_id, graph = %graph.name);
    let (result, state, records, thread) = match prepare(graph, &run, start).await {
        Err(e) => (Err(e), None, Vec::new(), None),
        Ok((mut exec, ready, stop, before)) => {
            let history = match (&run.summary_scope, exec.durable.as_ref()) {
                (crate::exec::SummaryScope::Thread, Some(d)) => thread_history(d, before).await,
                _ => Ok(Vec::new()),
            };
            let mut result = match stop {
                Some(stop) => Ok(stop),
                None => exec.execute(ready).instrument(span).await,
            };
            if let Some(d) = exec.durable.as_mut()
                && let Err(e) = d.finish().await
                && result.is_ok()
            {
                result = Err(e);
            }
            let thread = exec.durable.as_ref().map(|d| d.thread.clone());
            let Executor { state, records, .. } = exec;
            let mut all = match history {
                Ok(mut h) => {
                    h.extend(records);
                    h
                }
                Err(e) => {
                    if result.is_ok() {
                        result = Err(e);
                    }
                    records
                }
            };
            {
                let mut nested = run.nested_steps.lock().unwrap_or_else(|p| p.into_inner());
                if !nested.is_empty() {
                    // Subgraph steps interleave with their parents' by step id.
                    all.append(&mut nested);
                    all.sort_by_key(|r| r.step_id);
                }
            }
            (result, Some(state), all, thread)
        }
    };
    let finished = Instant::now();
    let usage: TokenUsage = records.iter().map(|r| r.usage).sum();
    let cost: Cost = records.iter().map(|r| r.cost).sum();
    let node_executions = records
        .iter()
        .filter(|r| r.status != StepStatus::Skipped)
        .count() as u64;
    let elapsed = finished.saturating_duration_since(started);

    if let Err(Error::BudgetExceeded(b)) = &result {
        run.event(
            finished,
            None,
            None,
            b.node.as_ref(),
            0,
            EventKind::BudgetExceeded {
                limit: b.breach.limit_name().to_string(),
                limit_value: b.breach.limit_value(),
                observed: b.breach.observed_value(),
                refused_before_run: b.refused_before_run,
            },
        );
    }
    let status = |r: &Result<Stop, Error>| match r {
        Ok(Stop::Interrupted(_)) => RunStatus::Interrupted,
        Ok(Stop::Halted) => RunStatus::Halted,
        other => status_of(other),
    };
    run.event(
        finished,
        None,
        None,
        None,
        0,
        EventKind::RunFinished {
            status: status(&result),
            usage,
            cost,
            node_executions,
            elapsed_us: elapsed.as_micros() as u64,
            error: result.as_ref().err().map(|e| e.report().to_string()),
        },
    );
    let flushed = run.bus.flush().await;
    let result = match (result, flushed) {
        (Ok(_), Err(e)) => Err(Error::Sink(e)),
        (r, _) => r,
    };
    let summary = RunSummary {
        run_id: run.run_id.clone(),
        graph: graph.name.clone(),
        status: status(&result),
        steps: records,
        usage,
        cost,
        node_executions,
        started_at: run.ts(started),
        elapsed,
        error: result.as_ref().err().map(Into::into),
    };
    match (result, state) {
        (Ok(stop), Some(state)) => Ok(RunOutput {
            state: Arc::try_unwrap(state).unwrap_or_else(|shared| (*shared).clone()),
            summary,
            interrupts: match stop {
                Stop::Interrupted(i) => i,
                _ => Vec::new(),
            },
            thread,
        }),
        (Ok(_), None) => Err(RunFailure {
            error: Error::aborted("run ended without a state"),
            summary: Box::new(summary),
            state: None,
        }),
        (Err(error), state) => Err(RunFailure {
            error,
            summary: Box::new(summary),
            state: state.and_then(|s| serde_json::to_value(&*s).ok().map(Box::new)),
        }),
    }
}
