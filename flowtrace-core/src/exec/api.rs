//! The run API: invoke, stream, read and edit a thread's state, history.
//!
//! | LangGraph                          | FlowTrace                                   |
//! |------------------------------------|---------------------------------------------|
//! | `graph.invoke(input, config)`      | [`CompiledGraph::invoke`]`(input, config)`  |
//! | `graph.invoke(None, config)`       | `invoke(RunInput::Resume, config)`          |
//! | `graph.invoke(Command(resume=v))`  | `invoke(Command::approve(id, v), config)`   |
//! | `graph.stream(input, config)`      | [`CompiledGraph::stream`] (a [`RunHandle`]) |
//! | `graph.get_state(config)`          | [`CompiledGraph::get_state`]                |
//! | `graph.get_state_history(config)`  | [`CompiledGraph::get_state_history`]        |
//! | `graph.update_state(config, v, as_node)` | [`CompiledGraph::update_state`]       |

use std::sync::Arc;

use crate::checkpoint::{Checkpoint, Checkpointer, Interrupt};
use crate::exec::drive;
use crate::exec::durable::{self, Command};
use crate::exec::shared::RunShared;
use crate::exec::{Executor, RunConfig, RunFailure, RunHandle, RunOutput};
use crate::graph::CompiledGraph;
use crate::ids::{NodeId, RunId, ThreadId};
use crate::state::State;

/// What a run starts from: a fresh input, the thread's latest checkpoint,
/// or human decisions about its pending interrupts. Anything that converts
/// into it can be passed to [`CompiledGraph::invoke`] and
/// [`CompiledGraph::stream`]: a state `S`, one [`Command`], or a
/// `Vec<Command>`.
#[derive(Debug)]
#[non_exhaustive]
pub enum RunInput<S: State> {
    /// Run from this input (a completed durable thread continues with it
    /// merged in, see [`State::merge_input`]).
    Start(S),
    /// Continue a durable thread from its latest checkpoint: after a crash,
    /// a halt or a failure (only the failed task runs again). Steps whose
    /// results were committed do not run again. A thread waiting for a
    /// human fails with [`Error::DecisionRequired`](crate::Error::DecisionRequired)
    /// unless an interrupt's deadline passed.
    Resume,
    /// Decide pending interrupts, then continue: each decision reaches only
    /// the interrupt it names, and all are checkpointed (as
    /// [`ApprovalRecord`](crate::checkpoint::ApprovalRecord)s) before
    /// anything runs. When other interrupts are still waiting, the run
    /// stops again at once and reports them.
    Decide(Vec<Command<S::Update>>),
}

impl<S: State> From<S> for RunInput<S> {
    fn from(input: S) -> Self {
        RunInput::Start(input)
    }
}

impl<S: State> From<Command<S::Update>> for RunInput<S> {
    fn from(command: Command<S::Update>) -> Self {
        RunInput::Decide(vec![command])
    }
}

impl<S: State> From<Vec<Command<S::Update>>> for RunInput<S> {
    fn from(commands: Vec<Command<S::Update>>) -> Self {
        RunInput::Decide(commands)
    }
}

impl<S: State> RunInput<S> {
    fn into_start(self) -> drive::Start<S> {
        match self {
            RunInput::Start(s) => drive::Start::Fresh(s),
            RunInput::Resume => drive::Start::Resume(Vec::new()),
            RunInput::Decide(commands) => drive::Start::Resume(commands),
        }
    }
}

/// A thread's state at one checkpoint, with what comes next (LangGraph's
/// `StateSnapshot`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StateSnapshot<S> {
    /// The state, rebuilt from the last full state and the deltas after it.
    pub values: S,
    /// The nodes scheduled to run next (empty when the thread finished).
    pub next: Vec<NodeId>,
    /// The questions waiting for a human at this checkpoint.
    pub interrupts: Vec<Interrupt>,
    /// The checkpoint itself: `seq`, `parent_seq`, `status`, `metadata`,
    /// `created_at`, the steps it recorded, approvals.
    pub checkpoint: Checkpoint,
}

impl<S> StateSnapshot<S> {
    fn new(values: S, checkpoint: Checkpoint) -> Self {
        Self {
            values,
            next: checkpoint.frontier.iter().map(|t| t.node.clone()).collect(),
            interrupts: checkpoint.interrupts.clone(),
            checkpoint,
        }
    }
}

/// A state edit applied to a stored position (see `CompiledGraph::edit`).
struct Edited {
    checkpoint: crate::checkpoint::Checkpoint,
    full_state: serde_json::Value,
    deltas: Vec<serde_json::Value>,
    writes: Vec<crate::checkpoint::PendingWrite>,
}

impl<S: State> CompiledGraph<S> {
    /// Runs the graph and returns the final state and the run's report, or
    /// why it failed (with the report so far). `input` is a state `S` (a
    /// fresh run), [`RunInput::Resume`] (continue a durable thread), or one
    /// or more [`Command`]s (decide pending interrupts and continue); see
    /// [`RunInput`].
    ///
    /// Sinks are flushed before this returns.
    ///
    /// ```
    /// use flowtrace_core::{GraphBuilder, JsonState, NodeOutput, RunConfig, node_fn};
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let graph = GraphBuilder::<JsonState>::new("hello")
    ///     .add_node("greet", node_fn(|_s, _ctx| async {
    ///         let mut update = serde_json::Map::new();
    ///         update.insert("greeting".into(), "hi".into());
    ///         Ok(NodeOutput::update(update))
    ///     }))
    ///     .set_entry("greet")
    ///     .set_finish("greet")
    ///     .compile()
    ///     .unwrap();
    /// let out = graph.invoke(JsonState::new(), RunConfig::new()).await.unwrap();
    /// assert_eq!(out.state.get("greeting"), Some(&serde_json::json!("hi")));
    /// # });
    /// ```
    ///
    /// # Cancel safety
    /// Dropping the future stops the run wherever it is; nothing is flushed
    /// (committed checkpoints stay committed). To stop a run cleanly, cancel
    /// it through a token or [`stream`](Self::stream)'s handle.
    pub async fn invoke(
        &self,
        input: impl Into<RunInput<S>>,
        config: RunConfig,
    ) -> Result<RunOutput<S>, RunFailure> {
        let run_id = config.run_id.clone().unwrap_or_else(RunId::generate);
        let shared = Arc::new(RunShared::new(&config, run_id));
        drive::drive(&self.inner, shared, input.into().into_start()).await
    }

    /// Starts the run on the Tokio runtime and returns a handle to watch its
    /// events live ([`RunHandle::events`]), cancel it, or wait for it.
    /// `input` is as for [`invoke`](Self::invoke).
    ///
    /// Must be called from within a Tokio runtime.
    pub fn stream(&self, input: impl Into<RunInput<S>>, config: RunConfig) -> RunHandle<S> {
        let run_id = config.run_id.clone().unwrap_or_else(RunId::generate);
        let shared = Arc::new(RunShared::new(&config, run_id));
        let events = shared.bus.subscribe();
        let graph = self.inner.clone();
        let task_shared = shared.clone();
        let start = input.into().into_start();
        let join = tokio::spawn(async move { drive::drive(&graph, task_shared, start).await });
        RunHandle::new(shared, events, join)
    }

    /// The state of `thread` at checkpoint `seq` (its latest when `None`),
    /// with what runs next and the pending interrupts. Time travel: read
    /// any earlier checkpoint, then [`fork`](Self::fork) from it.
    pub async fn get_state(
        &self,
        store: &dyn Checkpointer,
        thread: &ThreadId,
        seq: Option<u64>,
    ) -> Result<StateSnapshot<S>, crate::Error> {
        let seq = match seq {
            Some(s) => s,
            None => {
                store
                    .get(thread, None)
                    .await?
                    .ok_or_else(|| crate::Error::ThreadNotFound {
                        thread: thread.clone(),
                    })?
                    .seq
            }
        };
        let mut chain = store.chain(thread, seq).await?;
        if chain.last().map(|c| c.seq) != Some(seq) {
            return Err(crate::Error::CheckpointNotFound {
                thread: thread.clone(),
                seq,
            });
        }
        let values = durable::rebuild(thread, &chain)?;
        let checkpoint = chain
            .pop()
            .ok_or_else(|| crate::Error::CheckpointNotFound {
                thread: thread.clone(),
                seq,
            })?;
        Ok(StateSnapshot::new(values, checkpoint))
    }

    /// The thread's history, newest first: up to `limit` snapshots of
    /// checkpoints before `before` (from the latest when `None`). The
    /// states are rebuilt in one pass forward from the oldest listed, so
    /// the cost is `limit` plus the deltas since its last full state.
    pub async fn get_state_history(
        &self,
        store: &dyn Checkpointer,
        thread: &ThreadId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StateSnapshot<S>>, crate::Error> {
        let mut listed = store.list(thread, before, limit).await?;
        listed.reverse();
        let Some(oldest) = listed.first() else {
            return Ok(Vec::new());
        };
        let chain = store.chain(thread, oldest.seq).await?;
        let mut state: Option<S> = None;
        for cp in &chain {
            durable::apply_record(thread, &mut state, cp)?;
        }
        let mut out = Vec::with_capacity(listed.len());
        for (i, checkpoint) in listed.into_iter().enumerate() {
            if i > 0 {
                durable::apply_record(thread, &mut state, &checkpoint)?;
            }
            let Some(values) = &state else {
                return Err(crate::Error::Checkpoint(
                    crate::checkpoint::CheckpointError::Corrupt {
                        thread: thread.clone(),
                        seq: checkpoint.seq,
                        message: "no full state in the thread's history".into(),
                    },
                ));
            };
            out.push(StateSnapshot::new(values.clone(), checkpoint));
        }
        out.reverse();
        Ok(out)
    }

    /// Time travel: starts thread `to` from checkpoint `seq` of thread
    /// `from`, optionally editing the state first (through the reducers;
    /// with `as_node`, as if that node had produced the edit: its edges are
    /// evaluated again, see [`update_state`](Self::update_state)).
    /// Run it forward with `invoke(RunInput::Resume, ..)` on thread `to`; thread
    /// `from` is not touched. Returns the new thread's first checkpoint.
    pub async fn fork(
        &self,
        store: &dyn Checkpointer,
        from: &ThreadId,
        seq: u64,
        to: impl Into<ThreadId>,
        update: Option<S::Update>,
        as_node: Option<&str>,
    ) -> Result<crate::checkpoint::Checkpoint, crate::Error> {
        let to = to.into();
        let source =
            store
                .get(from, Some(seq))
                .await?
                .ok_or_else(|| crate::Error::CheckpointNotFound {
                    thread: from.clone(),
                    seq,
                })?;
        let state = self.get_state(store, from, Some(seq)).await?.values;
        let writes = store.writes(from, seq).await?;
        let edited = self.edit(&source, state, writes, update, as_node)?;
        let mut checkpoint = edited.checkpoint;
        checkpoint.thread_id = to.clone();
        checkpoint.seq = 0;
        checkpoint.parent_seq = None;
        checkpoint.forked_from = Some((from.clone(), seq));
        checkpoint.state = crate::checkpoint::StateRecord::Full(edited.full_state);
        checkpoint.metadata = source.metadata.clone();
        store
            .append_batch(
                &to,
                crate::checkpoint::CheckpointBatch {
                    checkpoints: vec![checkpoint.clone()],
                    writes: edited.writes.into_iter().map(|w| (0, w)).collect(),
                },
            )
            .await?;
        Ok(checkpoint)
    }

    /// A human edits a thread's state between runs (LangGraph's
    /// `update_state`): `update` is applied through the reducers as if
    /// `as_node` had produced it, the edges out of `as_node` are evaluated
    /// again on the edited state, and tasks that `as_node`'s earlier
    /// routing scheduled (its successors and dispatched instances) are
    /// replaced by what the new routing chooses. Without `as_node` only the
    /// state changes. The edit is appended as a checkpoint (with an
    /// [`ApprovalRecord`](crate::checkpoint::ApprovalRecord) of decision
    /// `update`); continue the thread with `invoke(RunInput::Resume, ..)`.
    /// Pending interrupts whose tasks are no longer scheduled are dropped.
    pub async fn update_state(
        &self,
        store: &dyn Checkpointer,
        thread: &ThreadId,
        update: S::Update,
        as_node: Option<&str>,
    ) -> Result<crate::checkpoint::Checkpoint, crate::Error> {
        let latest =
            store
                .get(thread, None)
                .await?
                .ok_or_else(|| crate::Error::ThreadNotFound {
                    thread: thread.clone(),
                })?;
        let state = self
            .get_state(store, thread, Some(latest.seq))
            .await?
            .values;
        let writes = store.writes(thread, latest.seq).await?;
        let edited = self.edit(&latest, state, writes, Some(update), as_node)?;
        let mut checkpoint = edited.checkpoint;
        checkpoint.thread_id = thread.clone();
        checkpoint.seq = latest.seq + 1;
        checkpoint.parent_seq = Some(latest.seq);
        checkpoint.state = crate::checkpoint::StateRecord::Delta(edited.deltas);
        store
            .append_batch(
                thread,
                crate::checkpoint::CheckpointBatch {
                    checkpoints: vec![checkpoint.clone()],
                    writes: edited
                        .writes
                        .into_iter()
                        .map(|w| (latest.seq + 1, w))
                        .collect(),
                },
            )
            .await?;
        Ok(checkpoint)
    }

    /// Applies a human's state edit to a stored position: the checkpoint
    /// that records it (thread, seq and state to be filled in by the
    /// caller), the edited full state, the deltas, and the saved results of
    /// the tasks that stay scheduled.
    fn edit(
        &self,
        source: &crate::checkpoint::Checkpoint,
        state: S,
        writes: Vec<crate::checkpoint::PendingWrite>,
        update: Option<S::Update>,
        as_node: Option<&str>,
    ) -> Result<Edited, crate::Error> {
        use crate::checkpoint::ThreadStatus;
        let node = match as_node {
            None => None,
            Some(name) => match self.inner.index.get(name) {
                Some(&i) => Some(i),
                None => {
                    return Err(crate::Error::InvalidStateEdit {
                        node: name.to_string(),
                        reason: if name == crate::graph::START || name == crate::graph::END {
                            "START and END produce no updates".into()
                        } else {
                            format!("graph {:?} has no such node", self.inner.name)
                        },
                    });
                }
            },
        };
        let run = Arc::new(RunShared::new(&RunConfig::new(), RunId::generate()));
        run.set_step_base(source.step_ids);
        run.executions
            .store(source.node_executions, std::sync::atomic::Ordering::Release);
        let mut exec = Executor::new(
            &self.inner,
            run.clone(),
            None,
            run.cancel.clone(),
            Arc::new(state),
        );
        exec.superstep = source.step;
        exec.restore_joins(&source.joins)?;
        let mut tasks = exec.tasks_from(source.frontier.clone(), writes)?;
        let mut deltas = Vec::new();
        let mut payload = serde_json::Value::Null;
        if let Some(u) = update {
            let v = durable::to_json(&u, None)?;
            Arc::make_mut(&mut exec.state).apply(u);
            payload = v.clone();
            deltas.push(v);
        }
        let mut interrupts = source.interrupts.clone();
        if let Some(node) = node {
            // Tasks the node's earlier routing scheduled no longer apply.
            let successors = exec.successors(node);
            let mut kept = Vec::with_capacity(tasks.len());
            let mut moved: Vec<Option<u32>> = Vec::with_capacity(tasks.len());
            for t in tasks {
                if successors.contains(&t.node) {
                    moved.push(None);
                } else {
                    moved.push(Some(kept.len() as u32));
                    kept.push(t);
                }
            }
            let node_id = &self.inner.nodes[node].id;
            interrupts.retain_mut(|i| {
                if i.when == crate::checkpoint::InterruptWhen::After {
                    // The edit decides what follows this node.
                    return i.path.is_empty() && &i.node != node_id || !i.path.is_empty();
                }
                match i.tasks.first().copied() {
                    Some(t) => match moved.get(t as usize).copied().flatten() {
                        Some(new) => {
                            i.tasks[0] = new;
                            true
                        }
                        None => false,
                    },
                    None => true,
                }
            });
            exec.reroute(node, &mut kept)?;
            tasks = kept;
        }
        let status = match (interrupts.is_empty(), tasks.is_empty()) {
            (false, _) if source.status == ThreadStatus::Interrupted => ThreadStatus::Interrupted,
            (_, true) => ThreadStatus::Completed,
            _ => ThreadStatus::Running,
        };
        if status != ThreadStatus::Interrupted {
            interrupts.clear();
        }
        let full_state = durable::to_json(&*exec.state, None)?;
        let mut checkpoint = exec.checkpoint(
            crate::checkpoint::StateRecord::Delta(Vec::new()),
            &tasks,
            node.map(|n| vec![self.inner.nodes[n].id.clone()])
                .unwrap_or_default(),
            Vec::new(),
            status,
            interrupts,
        )?;
        checkpoint
            .approvals
            .push(crate::checkpoint::ApprovalRecord {
                interrupt_id: String::new(),
                node: node
                    .map(|n| self.inner.nodes[n].id.clone())
                    .unwrap_or_else(|| NodeId::new("")),
                path: Vec::new(),
                decided_by: "update_state".into(),
                decided_at: crate::trace::Timestamp::now(),
                decision: crate::checkpoint::DecisionKind::Update,
                payload,
                checkpoint_seq: source.seq,
            });
        let writes = Executor::<S>::saved_writes(&tasks);
        Ok(Edited {
            checkpoint,
            full_state,
            deltas,
            writes,
        })
    }
}
