//! A conformance kit for [`Checkpointer`] implementations.
//!
//! Run [`run`] from your store's tests. It exercises everything the
//! executor relies on — round-trips, history paging, pending writes,
//! fencing, durability across a reopen, concurrency, forks, large states,
//! format versions, state chains and chains from snapshots, batches, the
//! depth limit — and the history management of the
//! [`Checkpointer`] contract: deleting, pruning,
//! copying and listing threads. It reports every failed check by name in a
//! [`ConformanceFailure`].
//!
//! What the kit can't see from outside a store — that `delete_thread` and
//! `prune` free memory or disk, that a batch is one record with one flush,
//! that `chain` and `list_threads` don't read the whole history — is the
//! store's own tests' job.
//!
//! `run` takes a function that returns a **new handle on the same
//! underlying store** each time it is called. The kit calls it to simulate
//! a process restart (data written through one handle must be readable
//! through the next) and to get competing writers. For an in-memory store,
//! clone one `Arc`; for a file store, open the same directory again; for a
//! database, build a new checkpointer over the same database.
//!
//! Each check writes to threads of its own, with ids made unique from a
//! counter, the process id and the clock, so checks never share data and
//! the kit can run against a store that already holds other threads.
//!
//! ```
//! use std::sync::Arc;
//! use flowtrace_core::checkpoint::{conformance, Checkpointer, MemoryCheckpointer};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = Arc::new(MemoryCheckpointer::new());
//! let result = conformance::run(|| -> Arc<dyn Checkpointer> { store.clone() }).await;
//! assert!(result.is_ok(), "{}", result.unwrap_err());
//! # });
//! ```
//!
//! The checks need a Tokio runtime (the concurrency checks use
//! [`tokio::spawn`]); any flavor works. A store that deadlocks makes the
//! kit hang rather than fail: wrap the call in a timeout if that matters.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod lifecycle;
mod writes;

pub use lifecycle::{copy_thread, delete_thread, list_threads, prune};
pub use writes::{append_batch, chain_from_snapshot, depth_limit};

use serde_json::json;
use tokio::task::JoinHandle;

use super::{
    ApprovalRecord, CHECKPOINT_FORMAT_VERSION, Checkpoint, CheckpointError, Checkpointer,
    DefaultDecision, Interrupt, InterruptWhen, JoinState, PendingWrite, StateRecord, TaskSpec,
    ThreadStatus,
};
use crate::ids::{NodeId, RunId, StepId, ThreadId};
use crate::pricing::{Cost, TokenUsage};
use crate::trace::StepRecord;
use crate::trace::{StepStatus, Timestamp};

/// One check of the kit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Check {
    /// A checkpoint with every field set, and one with every optional field
    /// empty, read back equal; also after reopening.
    RoundTrip,
    /// `list` returns newest first and pages with `before` and `limit`.
    History,
    /// `get(None)` is the latest checkpoint.
    Latest,
    /// Pending writes round-trip, come back by task position, and a second
    /// write of the same task keeps the first.
    PendingWrites,
    /// Many tasks appending to their own threads through one handle.
    ConcurrentThreads,
    /// A fork (a new thread starting from a full state, with `forked_from`)
    /// leaves the original thread untouched.
    Forks,
    /// A 2 MiB state (and a 1 MiB pending write) round-trips.
    LargeState,
    /// An unknown format version is refused on append, or on read.
    FormatVersion,
    /// Appends are fenced: a wrong `seq` gets [`CheckpointError::Conflict`],
    /// and of two handles appending the same `seq` exactly one wins.
    Fencing,
    /// Pending writes saved after the latest checkpoint survive a reopen.
    CrashOrdering,
    /// Many handles writing checkpoints and pending writes to different
    /// threads at once.
    ConcurrentWriters,
    /// `chain` returns the checkpoints from the last full state, oldest first.
    Chain,
    /// On a thread with a full state, 50 deltas, a full state and 3
    /// deltas, `chain(latest)` is exactly the last 4 checkpoints.
    ChainFromSnapshot,
    /// `append_batch` stores checkpoints and writes together, all or
    /// nothing: a stale first `seq`, a gap, a misplaced write, a checkpoint
    /// of another thread or one too deep store nothing; of two handles
    /// racing, one wins.
    AppendBatch,
    /// A state or pending write nested 200 deep is refused with
    /// [`CheckpointError::TooDeep`] and the thread stays readable; 100 deep
    /// round-trips.
    DepthLimit,
    /// `delete_thread` removes a thread's checkpoints and writes, leaves the
    /// others, reports whether it existed, and the thread can start over.
    DeleteThread,
    /// `prune` with both retentions keeps the full state a resume needs,
    /// removes the writes of pruned checkpoints, reads pruned ones as
    /// absent ([`CheckpointError::Pruned`] for `chain`), keeps the thread's
    /// summary, and appends carry on.
    Prune,
    /// `list_threads` filters by status and metadata (the latest metadata
    /// counts), pages with a cursor and a limit, sorted by thread id, and
    /// reports each thread's summary.
    ListThreads,
    /// `copy_thread` copies checkpoints and writes exactly (a pruned thread
    /// too), leaves the source alone, and refuses a missing source or an
    /// existing target.
    CopyThread,
}

impl Check {
    /// Every check, in the order [`run`] runs them.
    pub const ALL: &'static [Check] = &[
        Check::RoundTrip,
        Check::History,
        Check::Latest,
        Check::PendingWrites,
        Check::ConcurrentThreads,
        Check::Forks,
        Check::LargeState,
        Check::FormatVersion,
        Check::Fencing,
        Check::CrashOrdering,
        Check::ConcurrentWriters,
        Check::Chain,
        Check::ChainFromSnapshot,
        Check::AppendBatch,
        Check::DepthLimit,
        Check::DeleteThread,
        Check::Prune,
        Check::ListThreads,
        Check::CopyThread,
    ];

    /// The check's name (`snake_case`), as used in failure messages.
    pub const fn name(self) -> &'static str {
        match self {
            Check::RoundTrip => "round_trip",
            Check::History => "history",
            Check::Latest => "latest",
            Check::PendingWrites => "pending_writes",
            Check::ConcurrentThreads => "concurrent_threads",
            Check::Forks => "forks",
            Check::LargeState => "large_state",
            Check::FormatVersion => "format_version",
            Check::Fencing => "fencing",
            Check::CrashOrdering => "crash_ordering",
            Check::ConcurrentWriters => "concurrent_writers",
            Check::Chain => "chain",
            Check::ChainFromSnapshot => "chain_from_snapshot",
            Check::AppendBatch => "append_batch",
            Check::DepthLimit => "depth_limit",
            Check::DeleteThread => "delete_thread",
            Check::Prune => "prune",
            Check::ListThreads => "list_threads",
            Check::CopyThread => "copy_thread",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One failed check.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{check}: {message}")]
#[non_exhaustive]
pub struct CheckFailure {
    /// The check.
    pub check: Check,
    /// What went wrong.
    pub message: String,
}

/// Some checks of [`run`] failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.failures, *.checks_run))]
#[non_exhaustive]
pub struct ConformanceFailure {
    /// Every failed check, in run order.
    pub failures: Vec<CheckFailure>,
    /// How many checks ran.
    pub checks_run: usize,
}

impl ConformanceFailure {
    /// Whether `check` is among the failures.
    pub fn failed(&self, check: Check) -> bool {
        self.failures.iter().any(|f| f.check == check)
    }
}

fn render(failures: &[CheckFailure], checks_run: usize) -> String {
    let mut out = format!(
        "{} of {checks_run} checkpointer conformance checks failed:",
        failures.len()
    );
    for f in failures {
        out.push_str("\n- ");
        out.push_str(&f.to_string());
    }
    out
}

/// Runs every check ([`Check::ALL`]) and reports all that failed.
///
/// `open` must return a new handle on the same underlying store each time
/// it is called (see the [module docs](self)).
///
/// # Cancel safety
///
/// Dropping the future stops between two store calls; tasks already spawned
/// by a concurrency check run on to completion. What was written stays in
/// the store under this run's unique thread ids, which are never reused.
pub async fn run<F>(open: F) -> Result<(), ConformanceFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let mut failures = Vec::new();
    for &check in Check::ALL {
        match run_check(check, &open).await {
            Ok(()) => tracing::debug!(
                check = check.name(),
                "checkpointer conformance check passed"
            ),
            Err(f) => failures.push(f),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(ConformanceFailure {
            failures,
            checks_run: Check::ALL.len(),
        })
    }
}

/// Runs one check.
///
/// # Cancel safety
///
/// As for [`run`].
pub async fn run_check<F>(check: Check, open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    match check {
        Check::RoundTrip => round_trip(open).await,
        Check::History => history(open).await,
        Check::Latest => latest(open).await,
        Check::PendingWrites => pending_writes(open).await,
        Check::ConcurrentThreads => concurrent_threads(open).await,
        Check::Forks => forks(open).await,
        Check::LargeState => large_state(open).await,
        Check::FormatVersion => format_version(open).await,
        Check::Fencing => fencing(open).await,
        Check::CrashOrdering => crash_ordering(open).await,
        Check::ConcurrentWriters => concurrent_writers(open).await,
        Check::Chain => chain(open).await,
        Check::ChainFromSnapshot => chain_from_snapshot(open).await,
        Check::AppendBatch => append_batch(open).await,
        Check::DepthLimit => depth_limit(open).await,
        Check::DeleteThread => delete_thread(open).await,
        Check::Prune => prune(open).await,
        Check::ListThreads => list_threads(open).await,
        Check::CopyThread => copy_thread(open).await,
    }
}

// ---------------------------------------------------------------------------
// Sample data
// ---------------------------------------------------------------------------

/// A thread id no other call returns (in this process or, practically,
/// any other): `conformance-<label>-<pid>-<nanos>-<counter>`.
pub fn unique_thread(label: &str) -> ThreadId {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    ThreadId::new(format!(
        "conformance-{label}-{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A plausible checkpoint: `seq` of `thread` with the given state, parent
/// `seq - 1`, one node run, one task next, status running, and no optional
/// fields set.
pub fn sample_checkpoint(thread: &ThreadId, seq: u64, state: StateRecord) -> Checkpoint {
    Checkpoint {
        thread_id: thread.clone(),
        seq,
        parent_seq: seq.checked_sub(1),
        forked_from: None,
        run_id: RunId::new("r"),
        step: seq + 1,
        nodes: vec![NodeId::new("work")],
        created_at: Timestamp::now(),
        format_version: CHECKPOINT_FORMAT_VERSION,
        state,
        frontier: vec![TaskSpec::new("work", None)],
        joins: Vec::new(),
        node_executions: seq + 1,
        steps: vec![sample_step(seq + 1, "work")],
        status: ThreadStatus::Running,
        step_ids: seq + 1,
        interrupts: Vec::new(),
        approvals: Vec::new(),
        error: None,
        metadata: Default::default(),
    }
}

/// A plausible pending write of `task`, with `update` as its update.
pub fn sample_write(task: u32, update: serde_json::Value) -> PendingWrite {
    PendingWrite {
        task,
        node: NodeId::new(format!("task_{task}")),
        update: Some(update),
        dispatches: Vec::new(),
        step: sample_step(u64::from(task) + 1, "task"),
    }
}

fn sample_step(id: u64, node: &str) -> StepRecord {
    StepRecord {
        step_id: StepId(id),
        node: NodeId::new(node),
        parent_step_id: None,
        status: StepStatus::Succeeded,
        attempts: 1,
        usage: TokenUsage::new(120, 30),
        cost: Cost::from_microdollars(42),
        latency: Duration::from_micros(1_250),
        started_at: Timestamp::now(),
        provider: Some("openai".into()),
        model: Some("gpt-4o-mini".into()),
        cache_hits: 0,
        call_retries: 1,
        fallbacks: 1,
        branch: None,
        input: None,
        error: None,
    }
}

/// A checkpoint with every optional field set.
fn rich_checkpoint(thread: &ThreadId) -> Checkpoint {
    let mut cp = sample_checkpoint(
        thread,
        0,
        StateRecord::Full(json!({
            "text": "héllo \"wörld\" ✓ 🚀 \\ / \n\t",
            "nested": { "list": [1, -2, 0.5, true, false, null, "x"], "empty": {}, "none": [] },
            "big": u64::MAX,
            "small": i64::MIN,
        })),
    );
    let mut failed = sample_step(2, "review");
    failed.status = StepStatus::Failed;
    failed.attempts = 3;
    failed.parent_step_id = Some(StepId(1));
    failed.branch = Some("escalate".into());
    failed.input = Some(json!({ "ticket": 7 }));
    failed.error = Some("model overloaded".into());
    failed.cache_hits = 2;
    cp.run_id = RunId::new("run-ünïcode");
    cp.nodes = vec![NodeId::new("draft"), NodeId::new("review")];
    cp.frontier = vec![
        TaskSpec::new("publish", None),
        TaskSpec {
            answers: vec![json!("yes"), json!({ "amount": 5 })],
            approved: Some(json!({ "limit": 10 })),
            subgraph: Some(Box::new(crate::checkpoint::SubgraphState {
                state: json!({ "draft": "x" }),
                step: 2,
                frontier: vec![TaskSpec::new("inner", Some(json!(1)))],
                joins: Vec::new(),
                writes: vec![sample_write(1, json!({ "k": "v" }))],
            })),
            ..TaskSpec::new("translate", Some(json!({ "lang": "fr" })))
        },
    ];
    cp.joins = vec![JoinState {
        node: NodeId::new("merge"),
        resolved: 2,
        fired: 1,
        inputs: vec![json!("a"), json!({ "b": [1, 2] })],
    }];
    cp.node_executions = 5;
    cp.steps.push(failed);
    cp.status = ThreadStatus::Interrupted;
    cp.interrupts = vec![Interrupt {
        id: "interrupt-1".into(),
        node: NodeId::new("review"),
        path: vec![NodeId::new("outer")],
        tasks: vec![1, 0],
        call: 2,
        when: InterruptWhen::During,
        payload: json!({ "question": "refund 120?" }),
        created_at: Timestamp::now(),
        deadline: Some(Timestamp::now().plus_micros(60_000_000)),
        on_timeout: Some(DefaultDecision::Escalate(NodeId::new("supervisor"))),
    }];
    cp.error = Some(crate::checkpoint::TaskError {
        node: Some(NodeId::new("review")),
        task: Some(1),
        kind: "node".into(),
        message: "boom".into(),
    });
    cp.metadata.insert("tenant".into(), json!("acme"));
    cp.step_ids = 9;
    cp.approvals = vec![ApprovalRecord {
        interrupt_id: "interrupt-0".into(),
        node: NodeId::new("draft"),
        decided_by: "ana@example.com".into(),
        decided_at: Timestamp::now(),
        decision: crate::checkpoint::DecisionKind::Update,
        path: Vec::new(),
        payload: json!({ "amount": 100 }),
        checkpoint_seq: 0,
    }];
    cp
}

/// The state of checkpoint `seq` in simple threads: full at 0, deltas after.
fn simple_state(seq: u64, tag: &str) -> StateRecord {
    if seq == 0 {
        StateRecord::Full(json!({ "tag": tag, "items": [] }))
    } else {
        StateRecord::Delta(vec![json!({ "tag": tag, "seq": seq })])
    }
}

// ---------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------

type Store = Arc<dyn Checkpointer>;

/// Builds failures of one check.
#[derive(Clone, Copy)]
struct Ctx(Check);

impl Ctx {
    fn fail(self, message: impl Into<String>) -> CheckFailure {
        CheckFailure {
            check: self.0,
            message: message.into(),
        }
    }

    fn ensure(self, ok: bool, message: impl FnOnce() -> String) -> Result<(), CheckFailure> {
        if ok {
            Ok(())
        } else {
            Err(self.fail(message()))
        }
    }

    /// The value of a store call that must succeed.
    fn ok<T>(self, what: &str, r: Result<T, CheckpointError>) -> Result<T, CheckFailure> {
        r.map_err(|e| self.fail(format!("{what}: unexpected error: {e}")))
    }

    fn eq<T: PartialEq + fmt::Debug>(
        self,
        what: &str,
        got: &T,
        want: &T,
    ) -> Result<(), CheckFailure> {
        self.ensure(got == want, || {
            format!("{what}: got {}, expected {}", short(got), short(want))
        })
    }

    /// Compares checkpoints, naming the fields that differ.
    fn same(
        self,
        what: &str,
        got: Option<&Checkpoint>,
        want: &Checkpoint,
    ) -> Result<(), CheckFailure> {
        let Some(got) = got else {
            return Err(self.fail(format!(
                "{what}: checkpoint {} of {:?} is missing",
                want.seq, want.thread_id
            )));
        };
        let fields = differing_fields(got, want);
        self.ensure(fields.is_empty(), || {
            format!(
                "{what}: checkpoint {} of {:?} came back different in {}",
                want.seq,
                want.thread_id,
                fields.join(", ")
            )
        })
    }

    /// Compares lists of checkpoints.
    fn same_list(
        self,
        what: &str,
        got: &[Checkpoint],
        want: &[Checkpoint],
    ) -> Result<(), CheckFailure> {
        let seqs = |l: &[Checkpoint]| l.iter().map(|c| c.seq).collect::<Vec<_>>();
        self.eq(&format!("{what} (seqs)"), &seqs(got), &seqs(want))?;
        for (g, w) in got.iter().zip(want) {
            self.same(what, Some(g), w)?;
        }
        Ok(())
    }

    /// Joins spawned tasks, failing on the first error or panic.
    async fn join<T>(
        self,
        tasks: Vec<JoinHandle<Result<T, String>>>,
    ) -> Result<Vec<T>, CheckFailure> {
        let mut out = Vec::with_capacity(tasks.len());
        let mut first_error = None;
        for (i, task) in tasks.into_iter().enumerate() {
            match task.await {
                Ok(Ok(v)) => out.push(v),
                Ok(Err(e)) => {
                    first_error.get_or_insert_with(|| format!("task {i}: {e}"));
                }
                Err(e) => {
                    first_error.get_or_insert_with(|| format!("task {i} failed: {e}"));
                }
            }
        }
        match first_error {
            Some(e) => Err(self.fail(e)),
            None => Ok(out),
        }
    }
}

/// Debug output, cut to a readable length.
fn short(value: &impl fmt::Debug) -> String {
    const MAX: usize = 300;
    let s = format!("{value:?}");
    if s.len() <= MAX {
        return s;
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &s[..end], s.len())
}

fn differing_fields(a: &Checkpoint, b: &Checkpoint) -> Vec<String> {
    let mut out = Vec::new();
    let mut cmp = |name: &str, same: bool, got: &dyn fmt::Debug, want: &dyn fmt::Debug| {
        if !same {
            out.push(format!(
                "{name} (got {}, expected {})",
                short(&got),
                short(&want)
            ));
        }
    };
    cmp(
        "thread_id",
        a.thread_id == b.thread_id,
        &a.thread_id,
        &b.thread_id,
    );
    cmp("seq", a.seq == b.seq, &a.seq, &b.seq);
    cmp(
        "parent_seq",
        a.parent_seq == b.parent_seq,
        &a.parent_seq,
        &b.parent_seq,
    );
    cmp(
        "forked_from",
        a.forked_from == b.forked_from,
        &a.forked_from,
        &b.forked_from,
    );
    cmp("run_id", a.run_id == b.run_id, &a.run_id, &b.run_id);
    cmp("step", a.step == b.step, &a.step, &b.step);
    cmp("nodes", a.nodes == b.nodes, &a.nodes, &b.nodes);
    cmp(
        "created_at",
        a.created_at == b.created_at,
        &a.created_at,
        &b.created_at,
    );
    cmp(
        "format_version",
        a.format_version == b.format_version,
        &a.format_version,
        &b.format_version,
    );
    cmp("state", a.state == b.state, &a.state, &b.state);
    cmp(
        "frontier",
        a.frontier == b.frontier,
        &a.frontier,
        &b.frontier,
    );
    cmp("joins", a.joins == b.joins, &a.joins, &b.joins);
    cmp(
        "node_executions",
        a.node_executions == b.node_executions,
        &a.node_executions,
        &b.node_executions,
    );
    cmp("steps", a.steps == b.steps, &a.steps, &b.steps);
    cmp("status", a.status == b.status, &a.status, &b.status);
    cmp(
        "interrupts",
        a.interrupts == b.interrupts,
        &a.interrupts,
        &b.interrupts,
    );
    cmp(
        "approvals",
        a.approvals == b.approvals,
        &a.approvals,
        &b.approvals,
    );
    cmp("error", a.error == b.error, &a.error, &b.error);
    cmp(
        "metadata",
        a.metadata == b.metadata,
        &a.metadata,
        &b.metadata,
    );
    cmp(
        "step_ids",
        a.step_ids == b.step_ids,
        &a.step_ids,
        &b.step_ids,
    );
    out
}

/// Appends `seqs` of a simple thread, returning what was appended.
async fn append_simple(
    c: Ctx,
    store: &dyn Checkpointer,
    thread: &ThreadId,
    seqs: std::ops::Range<u64>,
) -> Result<Vec<Checkpoint>, CheckFailure> {
    let mut out = Vec::new();
    for seq in seqs {
        let cp = sample_checkpoint(thread, seq, simple_state(seq, thread.as_str()));
        c.ok(&format!("append seq {seq}"), store.append(cp.clone()).await)?;
        out.push(cp);
    }
    Ok(out)
}

/// The whole history of a thread, oldest first.
async fn whole(
    store: &dyn Checkpointer,
    thread: &ThreadId,
) -> Result<Vec<Checkpoint>, CheckpointError> {
    let mut all = store.list(thread, None, usize::MAX).await?;
    all.reverse();
    Ok(all)
}

/// Fails unless `history` is seqs 0, 1, … with matching parents.
fn contiguous(c: Ctx, what: &str, history: &[Checkpoint]) -> Result<(), CheckFailure> {
    for (i, cp) in history.iter().enumerate() {
        let i = i as u64;
        c.ensure(cp.seq == i && cp.parent_seq == i.checked_sub(1), || {
            format!(
                "{what}: history is not contiguous: position {i} holds seq {} with parent {:?} (seqs: {:?})",
                cp.seq,
                cp.parent_seq,
                history.iter().map(|c| c.seq).collect::<Vec<_>>()
            )
        })?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// [`Check::RoundTrip`].
///
/// # Cancel safety
///
/// As for [`run`].
pub async fn round_trip<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::RoundTrip);
    let store = open();
    let thread = unique_thread("round_trip");
    c.eq(
        "get(None) of a new thread",
        &c.ok("get", store.get(&thread, None).await)?,
        &None,
    )?;
    c.eq(
        "get(Some(0)) of a new thread",
        &c.ok("get", store.get(&thread, Some(0)).await)?,
        &None,
    )?;
    c.ok(
        "list of a new thread",
        store.list(&thread, None, 10).await.map(|l| l.is_empty()),
    )
    .and_then(|empty| c.ensure(empty, || "list of a new thread is not empty".into()))?;

    let rich = rich_checkpoint(&thread);
    c.ok(
        "append seq 0 (every field set)",
        store.append(rich.clone()).await,
    )?;
    let mut bare = sample_checkpoint(&thread, 1, StateRecord::Delta(Vec::new()));
    bare.nodes.clear();
    bare.frontier.clear();
    bare.steps.clear();
    bare.status = ThreadStatus::Completed;
    c.ok(
        "append seq 1 (optional fields empty)",
        store.append(bare.clone()).await,
    )?;

    let got = c.ok("get(Some(0))", store.get(&thread, Some(0)).await)?;
    c.same("get(Some(0))", got.as_ref(), &rich)?;
    let got = c.ok("get(Some(1))", store.get(&thread, Some(1)).await)?;
    c.same("get(Some(1))", got.as_ref(), &bare)?;
    let got = c.ok("get(Some(2))", store.get(&thread, Some(2)).await)?;
    c.ensure(got.is_none(), || {
        "get(Some(2)) returned a checkpoint past the latest".into()
    })?;
    let got = c.ok(
        "get(Some(u64::MAX))",
        store.get(&thread, Some(u64::MAX)).await,
    )?;
    c.ensure(got.is_none(), || {
        "get(Some(u64::MAX)) returned a checkpoint".into()
    })?;

    let reopened = open();
    let got = c.ok(
        "get(Some(0)) after reopening",
        reopened.get(&thread, Some(0)).await,
    )?;
    c.same("get(Some(0)) after reopening", got.as_ref(), &rich)?;
    let got = c.ok(
        "get(Some(1)) after reopening",
        reopened.get(&thread, Some(1)).await,
    )?;
    c.same("get(Some(1)) after reopening", got.as_ref(), &bare)
}

/// [`Check::History`].
///
/// # Cancel safety
///
/// As for [`run`].
pub async fn history<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::History);
    let store = open();
    let thread = unique_thread("history");
    let written = append_simple(c, store.as_ref(), &thread, 0..10).await?;
    let newest_first: Vec<Checkpoint> = written.iter().rev().cloned().collect();
    let page = |before: Option<u64>, limit: usize| {
        let store = Arc::clone(&store);
        let thread = thread.clone();
        async move { store.list(&thread, before, limit).await }
    };
    let want = |seqs: &[u64]| -> Vec<Checkpoint> {
        seqs.iter()
            .filter_map(|&s| written.get(s as usize).cloned())
            .collect()
    };

    let all = c.ok("list(None, usize::MAX)", page(None, usize::MAX).await)?;
    c.same_list("list(None, usize::MAX)", &all, &newest_first)?;
    for (before, limit, seqs) in [
        (None, 3, &[9, 8, 7][..]),
        (Some(7), 3, &[6, 5, 4]),
        (Some(2), 10, &[1, 0]),
        (Some(1), 1, &[0]),
        (Some(0), 10, &[]),
        (None, 0, &[]),
        (Some(100), 2, &[9, 8]),
        (Some(u64::MAX), 1, &[9]),
    ] {
        let what = format!("list(before {before:?}, limit {limit})");
        let got = c.ok(&what, page(before, limit).await)?;
        c.same_list(&what, &got, &want(seqs))?;
    }

    // Walk the whole history in pages of 4.
    let mut walked = Vec::new();
    let mut before = None;
    loop {
        let got = c.ok("paging with before", page(before, 4).await)?;
        let Some(last) = got.last() else { break };
        c.ensure(walked.len() <= written.len(), || {
            "paging with before never ends".into()
        })?;
        before = Some(last.seq);
        walked.extend(got);
    }
    c.same_list("pages of 4 walked with before", &walked, &newest_first)?;

    let other = unique_thread("history_other");
    let got = c.ok("list of another thread", store.list(&other, None, 10).await)?;
    c.same_list("list of another thread", &got, &[])
}

/// [`Check::Latest`].
///
/// # Cancel safety
///
/// As for [`run`].
pub async fn latest<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::Latest);
    let store = open();
    let thread = unique_thread("latest");
    let got = c.ok("get(None) of a new thread", store.get(&thread, None).await)?;
    c.ensure(got.is_none(), || {
        "get(None) of a new thread returned a checkpoint".into()
    })?;
    for seq in 0..5 {
        let cp = sample_checkpoint(&thread, seq, simple_state(seq, "latest"));
        c.ok(&format!("append seq {seq}"), store.append(cp.clone()).await)?;
        let got = c.ok("get(None)", store.get(&thread, None).await)?;
        c.same(
            &format!("get(None) after appending seq {seq}"),
            got.as_ref(),
            &cp,
        )?;
        c.ok(
            "put_write",
            store
                .put_write(&thread, seq, sample_write(0, json!(seq)))
                .await,
        )?;
        let got = c.ok("get(None)", store.get(&thread, None).await)?;
        c.same(
            &format!("get(None) after a pending write on seq {seq}"),
            got.as_ref(),
            &cp,
        )?;
    }
    let other = open();
    let got = c.ok(
        "get(None) through another handle",
        other.get(&thread, None).await,
    )?;
    c.eq(
        "get(None) through another handle (seq)",
        &got.map(|cp| cp.seq),
        &Some(4),
    )
}

/// [`Check::PendingWrites`].
///
/// # Cancel safety
///
/// As for [`run`].
pub async fn pending_writes<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::PendingWrites);
    let store = open();
    let thread = unique_thread("pending_writes");
    append_simple(c, store.as_ref(), &thread, 0..1).await?;

    let w0 = sample_write(0, json!({ "messages": ["a"] }));
    let w1 = sample_write(1, json!("b"));
    let mut w2 = sample_write(2, json!(null));
    w2.update = None;
    w2.dispatches = vec![
        (NodeId::new("worker"), json!({ "item": 1 })),
        (NodeId::new("worker"), json!({ "item": 2 })),
    ];
    for w in [&w2, &w0, &w1] {
        c.ok(
            &format!("put_write(seq 0, task {})", w.task),
            store.put_write(&thread, 0, w.clone()).await,
        )?;
    }
    let all = [w0.clone(), w1.clone(), w2.clone()];
    let got = c.ok("writes(0)", store.writes(&thread, 0).await)?;
    c.eq("writes(0), by task position", &got, &all.to_vec())?;

    let again = sample_write(1, json!("a different result"));
    c.ok(
        "put_write of task 1 again",
        store.put_write(&thread, 0, again).await,
    )?;
    let got = c.ok("writes(0)", store.writes(&thread, 0).await)?;
    c.eq(
        "writes(0) after writing task 1 twice (the first write must be kept)",
        &got,
        &all.to_vec(),
    )?;

    let got = c.ok("writes(1)", store.writes(&thread, 1).await)?;
    c.eq("writes(1) before any", &got, &Vec::new())?;
    let other = unique_thread("pending_writes_other");
    let got = c.ok("writes of another thread", store.writes(&other, 0).await)?;
    c.eq("writes of another thread", &got, &Vec::new())?;

    append_simple(c, store.as_ref(), &thread, 1..2).await?;
    let next = sample_write(0, json!("after checkpoint 1"));
    c.ok(
        "put_write(seq 1, task 0)",
        store.put_write(&thread, 1, next.clone()).await,
    )?;
    let got = c.ok("writes(1)", store.writes(&thread, 1).await)?;
    c.eq("writes(1)", &got, &vec![next.clone()])?;
    let got = c.ok("writes(0)", store.writes(&thread, 0).await)?;
    c.eq("writes(0) after writes to seq 1", &got, &all.to_vec())?;

    let reopened = open();
    let got = c.ok(
        "writes(0) after reopening",
        reopened.writes(&thread, 0).await,
    )?;
    c.eq("writes(0) after reopening", &got, &all.to_vec())?;
    let got = c.ok(
        "writes(1) after reopening",
        reopened.writes(&thread, 1).await,
    )?;
    c.eq("writes(1) after reopening", &got, &vec![next])
}

/// [`Check::ConcurrentThreads`]: 16 tasks append 20 checkpoints each to
/// threads of their own, through one handle.
///
/// # Cancel safety
///
/// As for [`run`].
pub async fn concurrent_threads<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    const TASKS: usize = 16;
    const CHECKPOINTS: u64 = 20;
    type Written = (ThreadId, Vec<Checkpoint>);
    let c = Ctx(Check::ConcurrentThreads);
    let store = open();
    let tasks: Vec<JoinHandle<Result<Written, String>>> = (0..TASKS)
        .map(|i| {
            let store = Arc::clone(&store);
            let thread = unique_thread(&format!("concurrent_threads_{i}"));
            tokio::spawn(async move {
                let mut written = Vec::new();
                for seq in 0..CHECKPOINTS {
                    let cp = sample_checkpoint(&thread, seq, simple_state(seq, thread.as_str()));
                    store
                        .append(cp.clone())
                        .await
                        .map_err(|e| format!("append seq {seq}: {e}"))?;
                    written.push(cp);
                }
                Ok((thread, written))
            })
        })
        .collect();
    let results = c.join(tasks).await?;
    let reopened = open();
    for (thread, written) in &results {
        let got = c.ok("list", whole(store.as_ref(), thread).await)?;
        c.same_list(&format!("history of {thread:?}"), &got, written)?;
        let got = c.ok(
            "list after reopening",
            whole(reopened.as_ref(), thread).await,
        )?;
        c.same_list(
            &format!("history of {thread:?} after reopening"),
            &got,
            written,
        )?;
    }
    Ok(())
}

/// [`Check::Forks`].
///
/// # Cancel safety
///
/// As for [`run`].
pub async fn forks<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::Forks);
    let store = open();
    let original = unique_thread("forks_original");
    let mut written = append_simple(c, store.as_ref(), &original, 0..3).await?;

    let fork = unique_thread("forks_fork");
    let mut f0 = sample_checkpoint(
        &fork,
        0,
        StateRecord::Full(json!({ "tag": "forked", "items": ["edited by a human"] })),
    );
    f0.forked_from = Some((original.clone(), 1));
    f0.run_id = RunId::new("fork-run");
    let f1 = sample_checkpoint(&fork, 1, simple_state(1, "forked"));
    c.ok("append the fork's seq 0", store.append(f0.clone()).await)?;
    c.ok("append the fork's seq 1", store.append(f1.clone()).await)?;

    let got = c.ok(
        "list of the original",
        whole(store.as_ref(), &original).await,
    )?;
    c.same_list("the original after forking", &got, &written)?;
    let got = c.ok("list of the fork", whole(store.as_ref(), &fork).await)?;
    c.same_list("the fork", &got, &[f0.clone(), f1.clone()])?;
    let got = c.ok("get(fork, Some(0))", store.get(&fork, Some(0)).await)?;
    c.eq(
        "forked_from of the fork's seq 0",
        &got.and_then(|cp| cp.forked_from),
        &Some((original.clone(), 1)),
    )?;
    let got = c.ok("chain(fork, 1)", store.chain(&fork, 1).await)?;
    c.same_list("chain(fork, 1)", &got, &[f0.clone(), f1.clone()])?;

    // Each thread keeps its own fence.
    written.extend(append_simple(c, store.as_ref(), &original, 3..4).await?);
    let f2 = sample_checkpoint(&fork, 2, simple_state(2, "forked"));
    c.ok("append the fork's seq 2", store.append(f2.clone()).await)?;
    let got = c.ok(
        "list of the original",
        whole(store.as_ref(), &original).await,
    )?;
    c.same_list("the original after appending to both", &got, &written)?;
    let got = c.ok("list of the fork", whole(store.as_ref(), &fork).await)?;
    c.same_list("the fork after appending to both", &got, &[f0, f1, f2])
}

/// [`Check::LargeState`]: a 2 MiB state and a 1 MiB pending write.
///
/// # Cancel safety
///
/// As for [`run`].
pub async fn large_state<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::LargeState);
    let store = open();
    let thread = unique_thread("large_state");
    let blob = |bytes: usize| {
        let unit = "flowtrace ✓ \"large\" state\n";
        unit.repeat(bytes / unit.len() + 1)
    };
    let cp0 = sample_checkpoint(
        &thread,
        0,
        StateRecord::Full(json!({ "blob": blob(2 << 20), "n": 1 })),
    );
    c.ok("append a 2 MiB state", store.append(cp0.clone()).await)?;
    let cp1 = sample_checkpoint(
        &thread,
        1,
        StateRecord::Delta(vec![json!({ "blob": blob(512 << 10) })]),
    );
    c.ok("append a 512 KiB delta", store.append(cp1.clone()).await)?;
    let write = sample_write(0, json!({ "blob": blob(1 << 20) }));
    c.ok(
        "put_write of a 1 MiB update",
        store.put_write(&thread, 1, write.clone()).await,
    )?;

    let got = c.ok("get(Some(0))", store.get(&thread, Some(0)).await)?;
    c.same("the 2 MiB state", got.as_ref(), &cp0)?;
    let got = c.ok("chain(1)", store.chain(&thread, 1).await)?;
    c.same_list("chain(1)", &got, &[cp0.clone(), cp1])?;
    let got = c.ok("writes(1)", store.writes(&thread, 1).await)?;
    c.eq("the 1 MiB pending write", &got, &vec![write.clone()])?;

    let reopened = open();
    let got = c.ok(
        "get(Some(0)) after reopening",
        reopened.get(&thread, Some(0)).await,
    )?;
    c.same("the 2 MiB state after reopening", got.as_ref(), &cp0)?;
    let got = c.ok(
        "writes(1) after reopening",
        reopened.writes(&thread, 1).await,
    )?;
    c.eq(
        "the 1 MiB pending write after reopening",
        &got,
        &vec![write],
    )
}

/// [`Check::FormatVersion`]: a checkpoint of format version 99 is refused
/// with [`CheckpointError::UnsupportedVersion`], when appended or, if the
/// store accepts it blindly, when read.
///
/// # Cancel safety
///
/// As for [`run`].
pub async fn format_version<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::FormatVersion);
    let store = open();
    let thread = unique_thread("format_version");
    let mut future = sample_checkpoint(&thread, 0, simple_state(0, "future"));
    future.format_version = 99;
    match store.append(future).await {
        Err(CheckpointError::UnsupportedVersion { found, .. }) => {
            c.eq("UnsupportedVersion.found", &found, &99)?;
            // Nothing was stored: seq 0 is still free.
            let got = c.ok("get(None) after the refused append", store.get(&thread, None).await)?;
            c.ensure(got.is_none(), || {
                "a refused append of format version 99 left a checkpoint behind".into()
            })?;
            append_simple(c, store.as_ref(), &thread, 0..1).await?;
            Ok(())
        }
        Err(e) => Err(c.fail(format!(
            "appending format version 99 failed with {e}, expected UnsupportedVersion"
        ))),
        Ok(()) => match store.get(&thread, Some(0)).await {
            Err(CheckpointError::UnsupportedVersion { found: 99, .. }) => Ok(()),
            Err(e) => Err(c.fail(format!(
                "format version 99 was accepted, then reading it failed with {e}, expected UnsupportedVersion"
            ))),
            Ok(_) => Err(c.fail(
                "format version 99 was accepted on append and returned on read; one of them must fail with UnsupportedVersion",
            )),
        },
    }
}

/// [`Check::Fencing`]: wrong `seq`s are refused with
/// [`CheckpointError::Conflict`] (naming the expected `seq`); two handles
/// appending the same `seq` at once get exactly one success; and eight
/// handles racing to extend one thread leave a contiguous history holding
/// exactly the appends that succeeded.
///
/// # Cancel safety
///
/// As for [`run`].
pub async fn fencing<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::Fencing);
    let store = open();
    let thread = unique_thread("fencing");

    let conflict = |what: &str, r: Result<(), CheckpointError>, seq: u64, expected: u64| {
        match r {
        Err(CheckpointError::Conflict {
            seq: s, expected: e, ..
        }) if s == seq && e == expected => Ok(()),
        Err(CheckpointError::Conflict { seq: s, expected: e, .. }) => Err(c.fail(format!(
            "{what}: Conflict names seq {s} and expected {e}, should be seq {seq} and expected {expected}"
        ))),
        Err(e) => Err(c.fail(format!("{what}: failed with {e}, expected Conflict"))),
        Ok(()) => Err(c.fail(format!(
            "{what}: accepted, expected Conflict (expected seq {expected})"
        ))),
    }
    };

    // Sequential: wrong seqs are refused and store nothing.
    let stray = sample_checkpoint(&thread, 1, simple_state(1, "stray"));
    conflict(
        "append seq 1 to an empty thread",
        store.append(stray).await,
        1,
        0,
    )?;
    let got = c.ok("get(None)", store.get(&thread, None).await)?;
    c.ensure(got.is_none(), || {
        "a refused append left a checkpoint behind".into()
    })?;
    let first = append_simple(c, store.as_ref(), &thread, 0..1).await?;
    let dup = sample_checkpoint(&thread, 0, StateRecord::Full(json!("a second seq 0")));
    conflict("append seq 0 twice", store.append(dup).await, 0, 1)?;
    let gap = sample_checkpoint(&thread, 5, simple_state(5, "gap"));
    conflict("append seq 5 after seq 0", store.append(gap).await, 5, 1)?;
    let got = c.ok("list", whole(store.as_ref(), &thread).await)?;
    c.same_list("history after refused appends", &got, &first)?;

    // Two handles append the same seq at once, a few rounds.
    for seq in 1..=5u64 {
        let (a, b) = (open(), open());
        let spawn_append = |store: Store, who: &str| {
            let cp = sample_checkpoint(
                &thread,
                seq,
                StateRecord::Delta(vec![json!({ "writer": who, "seq": seq })]),
            );
            let task = tokio::spawn({
                let cp = cp.clone();
                async move { Ok::<_, String>(store.append(cp).await) }
            });
            (cp, task)
        };
        let (cp_a, task_a) = spawn_append(Arc::clone(&a), "a");
        let (cp_b, task_b) = spawn_append(Arc::clone(&b), "b");
        let mut results = c.join(vec![task_a, task_b]).await?.into_iter();
        let (ra, rb) = (results.next(), results.next());
        let (winner, loser, loser_result) = match (ra, rb) {
            (Some(Ok(())), Some(r)) => (cp_a, &b, r),
            (Some(r), Some(Ok(()))) => (cp_b, &a, r),
            (Some(ra), Some(rb)) => {
                return Err(c.fail(format!(
                    "two handles appended seq {seq} at once and both failed: {ra:?}; {rb:?}"
                )));
            }
            _ => return Err(c.fail("a spawned append vanished")),
        };
        conflict(
            &format!("the slower of two handles appending seq {seq} at once"),
            loser_result,
            seq,
            seq + 1,
        )?;
        for (name, handle) in [("the winner's", &a), ("the loser's", &b)] {
            let got = c.ok("list", whole(handle.as_ref(), &thread).await)?;
            contiguous(
                c,
                &format!("after the race for seq {seq}, through {name} handle"),
                &got,
            )?;
            c.eq(
                &format!("length of the history after the race for seq {seq}"),
                &got.len(),
                &(seq as usize + 1),
            )?;
            c.same(
                &format!("seq {seq} through {name} handle (must be the winner's)"),
                got.last(),
                &winner,
            )?;
        }
        let retry = sample_checkpoint(&thread, seq, simple_state(seq, "retry"));
        conflict(
            &format!("the loser appending seq {seq} again"),
            loser.append(retry).await,
            seq,
            seq + 1,
        )?;
    }

    race(c, open).await
}

/// Eight handles race to append five checkpoints each to one thread,
/// retrying on conflict.
async fn race<F>(c: Ctx, open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    const WRITERS: usize = 8;
    const WINS: usize = 5;
    const MAX_ATTEMPTS: usize = 2_000;
    let thread = unique_thread("fencing_race");
    let tasks: Vec<JoinHandle<Result<Vec<Checkpoint>, String>>> = (0..WRITERS)
        .map(|writer| {
            let store = open();
            let thread = thread.clone();
            tokio::spawn(async move {
                let mut won = Vec::new();
                let mut attempts = 0;
                while won.len() < WINS {
                    attempts += 1;
                    if attempts > MAX_ATTEMPTS {
                        return Err(format!(
                            "writer {writer} won only {} appends in {MAX_ATTEMPTS} attempts",
                            won.len()
                        ));
                    }
                    let latest = store
                        .get(&thread, None)
                        .await
                        .map_err(|e| format!("writer {writer}: get(None): {e}"))?;
                    let seq = latest.map_or(0, |cp| cp.seq + 1);
                    let tag = json!({ "writer": writer, "win": won.len(), "attempt": attempts });
                    let state = if seq == 0 {
                        StateRecord::Full(tag)
                    } else {
                        StateRecord::Delta(vec![tag])
                    };
                    let cp = sample_checkpoint(&thread, seq, state);
                    match store.append(cp.clone()).await {
                        Ok(()) => won.push(cp),
                        Err(CheckpointError::Conflict { .. }) => tokio::task::yield_now().await,
                        Err(e) => return Err(format!("writer {writer}: append seq {seq}: {e}")),
                    }
                }
                Ok(won)
            })
        })
        .collect();
    let won: Vec<Checkpoint> = c.join(tasks).await?.into_iter().flatten().collect();
    let history = c.ok("list after the race", whole(open().as_ref(), &thread).await)?;
    contiguous(c, "after eight handles raced", &history)?;
    c.eq(
        "checkpoints in the history vs. appends that succeeded",
        &history.len(),
        &won.len(),
    )?;
    for cp in &won {
        c.same(
            "a successful append in the raced history",
            usize::try_from(cp.seq).ok().and_then(|i| history.get(i)),
            cp,
        )?;
    }
    Ok(())
}

/// [`Check::CrashOrdering`]: the executor saves task results after
/// checkpoint N before it writes N+1; after a crash between the two, a new
/// handle must still see checkpoint N as the latest and all its results.
///
/// # Cancel safety
///
/// As for [`run`].
pub async fn crash_ordering<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::CrashOrdering);
    let thread = unique_thread("crash_ordering");
    let (written, saved) = {
        let before_crash = open();
        let written = append_simple(c, before_crash.as_ref(), &thread, 0..2).await?;
        let saved = vec![
            sample_write(0, json!({ "done": "first task" })),
            sample_write(1, json!({ "done": "second task" })),
        ];
        for w in &saved {
            c.ok(
                &format!("put_write(seq 1, task {})", w.task),
                before_crash.put_write(&thread, 1, w.clone()).await,
            )?;
        }
        (written, saved)
    };

    let Some(latest) = written.last() else {
        return Err(c.fail("no checkpoint was written"));
    };
    let after = open();
    let got = c.ok("get(None) after reopening", after.get(&thread, None).await)?;
    c.same(
        "get(None) after reopening (must still be seq 1)",
        got.as_ref(),
        latest,
    )?;
    let got = c.ok("writes(1) after reopening", after.writes(&thread, 1).await)?;
    c.eq("writes(1) after reopening", &got, &saved)?;
    let got = c.ok("writes(0) after reopening", after.writes(&thread, 0).await)?;
    c.eq("writes(0) after reopening", &got, &Vec::new())?;
    let got = c.ok("list after reopening", whole(after.as_ref(), &thread).await)?;
    c.same_list("history after reopening", &got, &written)?;

    // The resumed run carries on.
    append_simple(c, after.as_ref(), &thread, 2..3).await?;
    Ok(())
}

/// [`Check::ConcurrentWriters`]: eight handles at once, each writing ten
/// checkpoints and two pending writes per checkpoint to a thread of its own.
///
/// # Cancel safety
///
/// As for [`run`].
pub async fn concurrent_writers<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    const WRITERS: usize = 8;
    const CHECKPOINTS: u64 = 10;
    type Written = (ThreadId, Vec<Checkpoint>, Vec<Vec<PendingWrite>>);
    let c = Ctx(Check::ConcurrentWriters);
    let tasks: Vec<JoinHandle<Result<Written, String>>> = (0..WRITERS)
        .map(|i| {
            let store = open();
            let thread = unique_thread(&format!("concurrent_writers_{i}"));
            tokio::spawn(async move {
                let mut checkpoints = Vec::new();
                let mut writes = Vec::new();
                for seq in 0..CHECKPOINTS {
                    let cp = sample_checkpoint(&thread, seq, simple_state(seq, thread.as_str()));
                    store
                        .append(cp.clone())
                        .await
                        .map_err(|e| format!("append seq {seq}: {e}"))?;
                    let latest = store
                        .get(&thread, None)
                        .await
                        .map_err(|e| format!("get(None): {e}"))?;
                    if latest.as_ref() != Some(&cp) {
                        return Err(format!(
                            "get(None) right after appending seq {seq} returned seq {:?}",
                            latest.map(|l| l.seq)
                        ));
                    }
                    let mut saved = Vec::new();
                    for task in [1, 0] {
                        let w =
                            sample_write(task, json!({ "thread": thread.as_str(), "seq": seq }));
                        store
                            .put_write(&thread, seq, w.clone())
                            .await
                            .map_err(|e| format!("put_write(seq {seq}, task {task}): {e}"))?;
                        saved.insert(0, w);
                    }
                    checkpoints.push(cp);
                    writes.push(saved);
                }
                Ok((thread, checkpoints, writes))
            })
        })
        .collect();
    let results = c.join(tasks).await?;
    let reader = open();
    for (thread, checkpoints, writes) in &results {
        let got = c.ok("list", whole(reader.as_ref(), thread).await)?;
        c.same_list(&format!("history of {thread:?}"), &got, checkpoints)?;
        for (seq, saved) in writes.iter().enumerate() {
            let got = c.ok("writes", reader.writes(thread, seq as u64).await)?;
            c.eq(&format!("writes({seq}) of {thread:?}"), &got, saved)?;
        }
    }
    Ok(())
}

/// [`Check::Chain`]: with full states at 0 and 3 and deltas elsewhere,
/// `chain(5)` is 3, 4, 5 and `chain(2)` is 0, 1, 2.
///
/// # Cancel safety
///
/// As for [`run`].
pub async fn chain<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::Chain);
    let store = open();
    let thread = unique_thread("chain");
    let mut written = Vec::new();
    for seq in 0..6u64 {
        let state = if seq == 0 || seq == 3 {
            StateRecord::Full(json!({ "edited_at": seq }))
        } else {
            StateRecord::Delta(vec![
                json!({ "seq": seq }),
                json!({ "seq": seq, "second": true }),
            ])
        };
        let cp = sample_checkpoint(&thread, seq, state);
        c.ok(&format!("append seq {seq}"), store.append(cp.clone()).await)?;
        written.push(cp);
    }
    let reopened = open();
    for (seq, from) in [(5u64, 3usize), (4, 3), (3, 3), (2, 0), (1, 0), (0, 0)] {
        let want = written.get(from..=seq as usize).unwrap_or_default();
        let got = c.ok(&format!("chain({seq})"), store.chain(&thread, seq).await)?;
        c.same_list(&format!("chain({seq})"), &got, want)?;
        let got = c.ok(
            &format!("chain({seq}) after reopening"),
            reopened.chain(&thread, seq).await,
        )?;
        c.same_list(&format!("chain({seq}) after reopening"), &got, want)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::MemoryCheckpointer;

    #[tokio::test]
    async fn memory_checkpointer_conforms() {
        let store = Arc::new(MemoryCheckpointer::new());
        let result = run(|| -> Arc<dyn Checkpointer> { store.clone() }).await;
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn failures_name_their_checks() {
        let failure = ConformanceFailure {
            failures: vec![
                Ctx(Check::Fencing).fail("both appends of seq 1 were accepted"),
                Ctx(Check::Chain).fail("chain(5) came back empty"),
            ],
            checks_run: Check::ALL.len(),
        };
        assert_eq!(
            failure.to_string(),
            "2 of 19 checkpointer conformance checks failed:\n\
             - fencing: both appends of seq 1 were accepted\n\
             - chain: chain(5) came back empty"
        );
        assert!(failure.failed(Check::Fencing));
        assert!(!failure.failed(Check::History));
    }

    #[test]
    fn every_check_has_a_distinct_name() {
        let mut names: Vec<&str> = Check::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Check::ALL.len());
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let s = short(&"é".repeat(1000));
        assert!(s.len() < 400, "{}", s.len());
        assert!(s.ends_with("bytes in all)"));
    }
}
