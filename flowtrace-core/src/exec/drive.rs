//! Top-level runs: preparing a fresh or resumed run, running it, and
//! reporting it (summary, `budget.exceeded`, `run.finished`, sink flush).

use std::sync::Arc;

use tokio::time::Instant;
use tracing::Instrument;

use crate::checkpoint::{
    ApprovalRecord, Checkpoint, DefaultDecision, InterruptWhen, StateRecord, ThreadStatus,
};
use crate::error::{BuildError, Error, GraphProblem};
use crate::exec::durable::{Command, Decision, Durable, rebuild, to_json};
use crate::exec::executor::{Executor, Stop, Task, status_of};
use crate::exec::shared::RunShared;
use crate::exec::{RunFailure, RunOutput, RunSummary, StepRecord};
use crate::graph::Inner;
use crate::ids::{NodeId, ThreadId};
use crate::pricing::{Cost, TokenUsage};
use crate::state::State;
use crate::trace::{EventKind, RunStatus, StepStatus};

/// How a top-level run begins.
pub(crate) enum Start<S: State> {
    /// A new run (a new thread, when durable).
    Fresh(S),
    /// Continue a thread from its latest checkpoint, with a decision when it
    /// waits for one.
    Resume(Option<Command<S::Update>>),
}

fn node_index<S: State>(
    graph: &Inner<S>,
    thread: &ThreadId,
    node: &NodeId,
) -> Result<usize, Error> {
    graph
        .index
        .get(node.as_str())
        .copied()
        .ok_or_else(|| Error::GraphMismatch {
            thread: thread.clone(),
            node: node.to_string(),
        })
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

/// The history's step records and the executor positioned to run.
type Prepared<'g, S> = (Executor<'g, S>, Vec<Task>, Vec<StepRecord>);

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
        Durable::new(store, thread, run.durability)
    });
    match start {
        Start::Fresh(input) => {
            let mut exec = Executor::new(
                graph,
                run.clone(),
                None,
                run.cancel.clone(),
                Arc::new(input),
            );
            exec.interrupt_before = before;
            exec.interrupt_after = after;
            let ready = exec.entry_tasks();
            if let Some(mut d) = durable {
                if d.store.get(&d.thread, None).await?.is_some() {
                    return Err(Error::ThreadExists { thread: d.thread });
                }
                let full = to_json(&*exec.state, None)?;
                let mut cp = exec.checkpoint(
                    StateRecord::Full(full),
                    &ready,
                    Vec::new(),
                    Vec::new(),
                    ThreadStatus::Running,
                    None,
                );
                cp.thread_id = d.thread.clone();
                cp.seq = 0;
                cp.parent_seq = None;
                d.append(cp).await?;
                exec.durable = Some(d);
            }
            Ok((exec, ready, Vec::new()))
        }
        Start::Resume(command) => {
            let Some(mut d) = durable else {
                return Err(Error::Checkpoint(
                    crate::checkpoint::CheckpointError::Store(
                        "resuming needs RunConfig::checkpointer (and RunConfig::thread)".into(),
                    ),
                ));
            };
            let thread = d.thread.clone();
            let latest =
                d.store
                    .get(&thread, None)
                    .await?
                    .ok_or_else(|| Error::ThreadNotFound {
                        thread: thread.clone(),
                    })?;
            check_decision(&thread, &latest, command.as_ref())?;

            let chain = d.store.chain(&thread, latest.seq).await?;
            let state: S = rebuild(&thread, &chain)?;
            let mut history_cps = d.store.list(&thread, None, usize::MAX).await?;
            history_cps.reverse();
            let history: Vec<StepRecord> = history_cps.into_iter().flat_map(|c| c.steps).collect();

            let mut exec = Executor::new(
                graph,
                run.clone(),
                None,
                run.cancel.clone(),
                Arc::new(state),
            );
            exec.interrupt_before = before;
            exec.interrupt_after = after;
            exec.superstep = latest.step;
            run.executions
                .store(latest.node_executions, std::sync::atomic::Ordering::Release);
            let base = history.iter().map(|r| r.step_id.0).max().unwrap_or(0);
            run.set_step_base(base);
            let mut ready = Vec::with_capacity(latest.frontier.len());
            for spec in &latest.frontier {
                ready.push(Task::new(
                    node_index(graph, &thread, &spec.node)?,
                    spec.input.clone(),
                ));
            }
            for j in &latest.joins {
                let i = node_index(graph, &thread, &j.node)?;
                let p = &mut exec.pending[i];
                p.resolved = j.resolved;
                p.fired = j.fired;
                p.inputs = j.inputs.clone();
            }
            let mut writes = d.store.writes(&thread, latest.seq).await?;
            // Replayed results keep their step ids: number new steps after them.
            let replay_base = writes.iter().map(|w| w.step.step_id.0).max().unwrap_or(0);
            run.set_step_base(base.max(replay_base));
            d.seq = Some(latest.seq);

            let resumed_from = latest.seq;
            let mut payload = serde_json::json!({ "from_checkpoint": resumed_from });
            // A decision from the caller, or the interrupt's default once its
            // deadline has passed.
            let decided = match (command, latest.interrupts.first()) {
                (Some(c), _) => Some((c.decision, c.by)),
                (None, Some(i)) if latest.status == ThreadStatus::Interrupted => {
                    default_decision(i).map(|d| (d, "deadline".to_string()))
                }
                _ => None,
            };
            if let (Some((decision, by)), Some(interrupt)) =
                (decided, latest.interrupts.first().cloned())
            {
                let node = node_index(graph, &thread, &interrupt.node)?;
                let mut deltas = Vec::new();
                let (decision, decision_payload) = match decision {
                    Decision::Approve(p) => ("approve", p),
                    Decision::Update(u) => {
                        let v = to_json(&u, None)?;
                        Arc::make_mut(&mut exec.state).apply(u);
                        deltas.push(v.clone());
                        ("update", v)
                    }
                    Decision::Reject { goto } => {
                        if interrupt.when == InterruptWhen::After {
                            ready.clear();
                        } else {
                            ready.retain(|t| t.node != node);
                        }
                        writes.clear();
                        if let Some(goto) = &goto {
                            ready.push(Task::new(node_index(graph, &thread, goto)?, None));
                        }
                        (
                            "reject",
                            serde_json::json!({ "goto": goto.as_ref().map(|g| g.to_string()) }),
                        )
                    }
                    Decision::Escalate { to } => {
                        if interrupt.when == InterruptWhen::After {
                            ready.clear();
                        } else {
                            ready.retain(|t| t.node != node);
                        }
                        writes.clear();
                        ready.push(Task::new(node_index(graph, &thread, &to)?, None));
                        ("escalate", serde_json::json!({ "to": to.to_string() }))
                    }
                };
                if decision == "approve" || decision == "update" {
                    match interrupt.when {
                        InterruptWhen::Before => {
                            exec.released.push(node);
                            for t in ready.iter_mut().filter(|t| t.node == node) {
                                t.approval = Some(decision_payload.clone());
                            }
                        }
                        InterruptWhen::During => {
                            let answer = if decision == "approve" {
                                decision_payload.clone()
                            } else {
                                serde_json::Value::Null
                            };
                            for t in ready.iter_mut().filter(|t| t.node == node) {
                                t.resume = Some(answer.clone());
                            }
                        }
                        InterruptWhen::After => {}
                    }
                }
                let record = ApprovalRecord {
                    interrupt_id: interrupt.id.clone(),
                    node: interrupt.node.clone(),
                    decided_by: by.clone(),
                    decided_at: run.ts(Instant::now()),
                    decision: match decision {
                        "approve" => crate::checkpoint::DecisionKind::Approve,
                        "update" => crate::checkpoint::DecisionKind::Update,
                        "reject" => crate::checkpoint::DecisionKind::Reject,
                        _ => crate::checkpoint::DecisionKind::Escalate,
                    },
                    path: Vec::new(),
                    payload: decision_payload.clone(),
                    checkpoint_seq: latest.seq,
                };
                payload = serde_json::json!({
                    "from_checkpoint": resumed_from,
                    "interrupt_id": interrupt.id,
                    "decision": decision,
                    "decided_by": by,
                    "payload": decision_payload,
                });
                // The decision is durable before anything runs.
                exec.durable = Some(d);
                let mut cp: Checkpoint = exec.checkpoint(
                    StateRecord::Delta(deltas),
                    &ready,
                    Vec::new(),
                    Vec::new(),
                    ThreadStatus::Running,
                    None,
                );
                cp.approvals.push(record);
                if let Some(d) = exec.durable.as_mut() {
                    let seq = cp.seq;
                    for w in &writes {
                        d.put_write(seq, w.clone()).await?;
                    }
                    d.append(cp).await?;
                }
            } else {
                exec.durable = Some(d);
            }
            exec.replay = writes;
            run.event(
                Instant::now(),
                None,
                None,
                None,
                0,
                EventKind::Resume { payload },
            );
            Ok((exec, ready, history))
        }
    }
}

/// The default decision of an interrupt whose deadline has passed.
fn default_decision<U>(interrupt: &crate::checkpoint::Interrupt) -> Option<Decision<U>> {
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

/// Checks that a decision fits the thread's status and pending interrupt.
fn check_decision<U>(
    thread: &ThreadId,
    latest: &Checkpoint,
    command: Option<&Command<U>>,
) -> Result<(), Error> {
    let status = latest.status;
    match (status, command, latest.interrupts.first()) {
        (ThreadStatus::Interrupted, None, Some(i)) if default_decision::<U>(i).is_some() => Ok(()),
        (ThreadStatus::Interrupted, None, Some(i)) => Err(Error::DecisionRequired {
            thread: thread.clone(),
            node: i.node.clone(),
            interrupt_id: i.id.clone(),
        }),
        (ThreadStatus::Interrupted, Some(c), Some(i)) if c.interrupt_id != i.id => {
            Err(Error::StaleInterrupt {
                thread: thread.clone(),
                given: c.interrupt_id.clone(),
                pending: i.id.clone(),
            })
        }
        (ThreadStatus::Interrupted, Some(_), Some(_)) => Ok(()),
        (_, Some(_), _) => Err(Error::NotInterrupted {
            thread: thread.clone(),
            status: format!("{status:?}").to_lowercase(),
        }),
        _ => Ok(()),
    }
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
        Ok((mut exec, ready, history)) => {
            let mut result = exec.execute(ready).instrument(span).await;
            if let Some(d) = exec.durable.as_mut()
                && let Err(e) = d.finish().await
                && result.is_ok()
            {
                result = Err(e);
            }
            let thread = exec.durable.as_ref().map(|d| d.thread.clone());
            let Executor { state, records, .. } = exec;
            let mut all = if history.is_empty() {
                records
            } else {
                let mut all = history;
                all.extend(records);
                all
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
            error: result.as_ref().err().map(|e| e.to_string()),
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
            interrupt: match stop {
                Stop::Interrupted(i) => Some(i),
                _ => None,
            },
            thread,
        }),
        (Ok(_), None) => Err(RunFailure {
            error: Error::Aborted("run ended without a state".into()),
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
