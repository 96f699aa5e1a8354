//! Top-level runs: preparing a fresh or resumed run, running it, and
//! reporting it (summary, `budget.exceeded`, `run.finished`, sink flush).

use std::sync::Arc;

use tokio::time::Instant;
use tracing::Instrument;

use crate::checkpoint::ThreadStatus;
use crate::error::{BuildError, Error, GraphProblem};
use crate::exec::FinishedThread;
use crate::exec::decide::{apply_decisions, check_decisions};
use crate::exec::durable::{Command, Durable, rebuild};
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

/// Positions the executor for `start`: a fresh run from the entries (in
/// a new thread or the next run of a finished one) or a resumed thread.
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
        exec.interrupt_before = before;
        exec.interrupt_after = after;
        exec
    };
    match (start, durable) {
        (Start::Fresh(input), None) => {
            let mut exec = new_exec(input);
            let ready = exec.entry_tasks();
            Ok((exec, ready, None, None))
        }
        (Start::Fresh(input), Some(d)) => start_thread(run, d, input, new_exec).await,
        (Start::Resume(_), None) => Err(Error::NotDurable {
            operation: "resuming a thread",
        }),
        (Start::Resume(commands), Some(d)) => resume_thread(run, d, commands, new_exec).await,
    }
}

/// A fresh durable run: a new thread, or the next run of a finished one
/// (its state rebuilt, `input` merged in); writes the run's first
/// checkpoint.
async fn start_thread<'g, S: State>(
    run: &Arc<RunShared>,
    mut d: Durable,
    input: S,
    new_exec: impl FnOnce(S) -> Executor<'g, S>,
) -> Result<Prepared<'g, S>, Error> {
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
    exec.durable = Some(d);
    exec.commit_start(&ready, run.metadata.clone()).await?;
    Ok((exec, ready, None, previous.map(|p| p.seq)))
}

/// Continues a thread from its latest checkpoint, applying `commands`
/// (the decisions for the interrupts it waits on) first.
async fn resume_thread<'g, S: State>(
    run: &Arc<RunShared>,
    mut d: Durable,
    commands: Vec<Command<S::Update>>,
    new_exec: impl FnOnce(S) -> Executor<'g, S>,
) -> Result<Prepared<'g, S>, Error> {
    let thread = d.thread.clone();
    let latest = d
        .store
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
    let (payload, stop) =
        apply_decisions(&mut exec, &latest, &mut frontier, &mut writes, decided).await?;
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
    let ran = match prepare(graph, &run, start).await {
        Err(e) => (Err(e), None, Vec::new(), None),
        Ok(prepared) => run_prepared(&run, prepared, span).await,
    };
    report(graph, &run, started, ran).await
}

/// What running a prepared graph left: its result, its state, every step
/// record for the summary (the thread's history first, when the summary
/// covers the thread), and its thread.
type Ran<S> = (
    Result<Stop, Error>,
    Option<Arc<S>>,
    Vec<StepRecord>,
    Option<ThreadId>,
);

/// Runs a prepared graph (unless it stopped before running anything) and
/// finishes its thread.
async fn run_prepared<S: State>(
    run: &RunShared,
    (mut exec, ready, stop, before): Prepared<'_, S>,
    span: tracing::Span,
) -> Ran<S> {
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
        // Without history the records are the summary's steps as
        // they are (not copied into a new vector).
        Ok(h) if h.is_empty() => records,
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

/// Reports a finished run: `budget.exceeded` and `run.finished` events, the
/// sink flush, and the output or failure with its summary.
async fn report<S: State>(
    graph: &Inner<S>,
    run: &RunShared,
    started: Instant,
    (result, state, records, thread): Ran<S>,
) -> Result<RunOutput<S>, RunFailure> {
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
