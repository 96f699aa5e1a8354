//! Crash recovery for real: a child process running a durable graph on a
//! [`FileCheckpointer`] is killed with SIGKILL at many points of the run, a
//! new process resumes the thread, and the test counts node executions and
//! compares final states with an uninterrupted run.
//!
//! The test binary re-executes itself: [`child_process_entry`] does nothing
//! unless `FLOWTRACE_KILL_CHILD` is set, in which case it runs (or resumes)
//! the graph and writes its final state and summary as JSON.
//!
//! Every node appends one line `"<super-step>:<instance>"` to an execution
//! log (synced to disk) before it returns, so the log holds one line per
//! execution, across all processes. After each kill the parent reads the
//! thread back from the store: the instances in committed checkpoints and the
//! results saved as pending writes must never run again; only instances of
//! the super-step that was in flight may run twice; and the last process must
//! run exactly what was neither committed nor saved.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowtrace_core::checkpoint::{Checkpointer, FileCheckpointer, StateRecord, ThreadStatus};
use flowtrace_core::{
    CompiledGraph, Dispatch, END, Error, GraphBuilder, Node, NodeContext, NodeError, NodeOutput,
    RunConfig, State, StepRecord, StepStatus, ThreadId, node_fn, reducer,
};
use serde::{Deserialize, Serialize};

use crate::support::rerun_test;

const CHILD_ENV: &str = "FLOWTRACE_KILL_CHILD";
const ENV_MODE: &str = "FLOWTRACE_KILL_MODE";
const ENV_STORE: &str = "FLOWTRACE_KILL_STORE";
const ENV_THREAD: &str = "FLOWTRACE_KILL_THREAD";
const ENV_LOG: &str = "FLOWTRACE_KILL_LOG";
const ENV_RESULT: &str = "FLOWTRACE_KILL_RESULT";

/// Times the loop body (split .. publish) runs.
const ROUNDS: u32 = 2;
/// Node executions of an uninterrupted run: 3 + ROUNDS * (1 + 4 + 1 + 1 + 3 + 2).
const EXECUTIONS: usize = 27;
const WORKERS: u32 = 3;
/// How long a child may take to reach a kill point or to finish.
const CHILD_DEADLINE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// The state: an order-sensitive trail.

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Trail {
    /// One entry per execution, naming the length of the trail it saw.
    order: Vec<String>,
    /// Sum of every execution's weight (catches an update applied twice).
    counter: u64,
    /// Hash of the whole state as seen by the last single-task node.
    digest: u64,
    /// Loop body rounds completed.
    rounds: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Mark {
    order: Vec<String>,
    add: u64,
    digest: Option<u64>,
    round_done: bool,
}

impl State for Trail {
    type Update = Mark;
    fn apply(&mut self, u: Mark) {
        reducer::append(&mut self.order, u.order);
        reducer::add(&mut self.counter, u.add);
        reducer::replace(&mut self.digest, u.digest);
        if u.round_done {
            self.rounds += 1;
        }
    }
}

fn digest_of(s: &Trail, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ s.digest;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for item in &s.order {
        eat(item.as_bytes());
        eat(b"|");
    }
    eat(&s.counter.to_le_bytes());
    eat(&s.rounds.to_le_bytes());
    eat(name.as_bytes());
    h
}

// ---------------------------------------------------------------------------
// The graph.
//
//   intake -> plan -> prepare -> split -> {a, b, c, d} -> join -> fanout
//   =dispatch=> worker x3 -> review -> publish -(rounds < 2)-> split (back edge)
//                                               -(done)-> END
//
// Super-steps (index: tasks): 0 intake, 1 plan, 2 prepare, then per round r
// from base 3 + 7r: split, {a,b,c,d}, join, fanout, {worker0..2}, review,
// publish. 17 super-steps, 27 executions; two multi-task super-steps per round.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Single,
    Branch,
    Fanout,
    Worker,
    Publish,
}

/// The super-step index from an idempotency key "thread/superstep/node/task".
fn superstep_of(key: &str) -> String {
    key.rsplit('/').nth(2).unwrap_or("?").to_string()
}

/// The instance name of a node execution: the node, plus the dispatch input.
fn instance(node: &str, input: Option<&serde_json::Value>) -> String {
    match input {
        Some(v) => format!("{node}{v}"),
        None => node.to_string(),
    }
}

fn record_execution(log: &Path, line: &str) -> std::io::Result<()> {
    let mut f = OpenOptions::new().create(true).append(true).open(log)?;
    f.write_all(format!("{line}\n").as_bytes())?;
    f.sync_data()
}

fn node(name: &'static str, kind: Kind, sleep_ms: u64, log: Arc<PathBuf>) -> impl Node<Trail> {
    node_fn(move |s: Arc<Trail>, ctx: NodeContext| {
        let log = log.clone();
        async move {
            let k: Option<u32> = ctx.input()?;
            let label = instance(name, ctx.input_value());
            let line = format!("{}:{label}", superstep_of(&ctx.idempotency_key()));
            let mut mark = Mark {
                order: vec![format!("{label}/r{}@{}", s.rounds, s.order.len())],
                add: (name.len() as u64 + 1) * u64::from(s.rounds + 1),
                ..Mark::default()
            };
            let mut sleep = sleep_ms;
            let mut dispatches = Vec::new();
            match kind {
                Kind::Single => mark.digest = Some(digest_of(&s, name)),
                Kind::Branch => {}
                Kind::Fanout => {
                    mark.digest = Some(digest_of(&s, name));
                    for k in 0..WORKERS {
                        dispatches.push(Dispatch::new("worker", k)?);
                    }
                }
                Kind::Worker => {
                    let k = k.ok_or_else(|| NodeError::permanent("worker without input"))?;
                    mark.add += 1000 * u64::from(k + 1);
                    sleep += 40 * u64::from(k);
                }
                Kind::Publish => {
                    mark.digest = Some(digest_of(&s, name));
                    mark.round_done = true;
                }
            }
            record_execution(&log, &line)
                .map_err(|e| NodeError::permanent(format!("execution log: {e}")))?;
            tokio::time::sleep(Duration::from_millis(sleep)).await;
            Ok(NodeOutput::update(mark).dispatch_all(dispatches))
        }
    })
}

fn build_graph(log: &Path) -> CompiledGraph<Trail> {
    let log = Arc::new(log.to_path_buf());
    let n = |name, kind, ms| node(name, kind, ms, log.clone());
    GraphBuilder::<Trail>::new("kill-resume")
        .add_node("intake", n("intake", Kind::Single, 20))
        .add_node("plan", n("plan", Kind::Single, 20))
        .add_node("prepare", n("prepare", Kind::Single, 20))
        .add_node("split", n("split", Kind::Single, 20))
        .add_node("a", n("a", Kind::Branch, 10))
        .add_node("b", n("b", Kind::Branch, 45))
        .add_node("c", n("c", Kind::Branch, 85))
        .add_node("d", n("d", Kind::Branch, 130))
        .add_node("join", n("join", Kind::Single, 20))
        .add_node("fanout", n("fanout", Kind::Fanout, 20))
        .add_node("worker", n("worker", Kind::Worker, 10))
        .add_node("review", n("review", Kind::Single, 20))
        .add_node("publish", n("publish", Kind::Publish, 20))
        .set_entry("intake")
        .add_edge("intake", "plan")
        .add_edge("plan", "prepare")
        .add_edge("prepare", "split")
        .add_edge("split", "a")
        .add_edge("split", "b")
        .add_edge("split", "c")
        .add_edge("split", "d")
        .add_edge("a", "join")
        .add_edge("b", "join")
        .add_edge("c", "join")
        .add_edge("d", "join")
        .add_edge("join", "fanout")
        .add_dispatch("fanout", "worker")
        .add_edge("worker", "review")
        .add_edge("review", "publish")
        .add_conditional_edges(
            "publish",
            |s: &Trail| if s.rounds < ROUNDS { "again" } else { "done" },
            [("again", "split"), ("done", END)],
        )
        .compile()
        .unwrap()
}

fn config(store: Arc<FileCheckpointer>, thread: &str) -> RunConfig {
    RunConfig::new()
        .checkpointer(store)
        .thread(thread)
        .parallel(4)
        // The final report is compared with an uninterrupted run's.
        .summary_scope(flowtrace_core::exec::SummaryScope::Thread)
}

// ---------------------------------------------------------------------------
// The child.

/// What a child writes when its run or resume returns.
#[derive(Debug, Serialize, Deserialize)]
struct ChildReport {
    /// "completed", or the error kind when the resume was refused.
    outcome: String,
    state: Option<Trail>,
    status: String,
    node_executions: u64,
    steps: Vec<StepRecord>,
}

/// Runs only in a child process (`FLOWTRACE_KILL_CHILD` set): runs or
/// resumes the thread, then writes a [`ChildReport`].
#[test]
fn child_process_entry() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
    let mode = env(ENV_MODE);
    let store_dir = PathBuf::from(env(ENV_STORE));
    let thread = env(ENV_THREAD);
    let log = PathBuf::from(env(ENV_LOG));
    let result = PathBuf::from(env(ENV_RESULT));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(async {
        let graph = build_graph(&log);
        let store = Arc::new(FileCheckpointer::open(&store_dir).unwrap());
        let cfg = config(store, &thread);
        let out = match mode.as_str() {
            "run" => graph.invoke(Trail::default(), cfg).await,
            "resume" => graph.invoke(flowtrace_core::RunInput::Resume, cfg).await,
            other => panic!("unknown mode {other:?}"),
        };
        match out {
            Ok(out) => ChildReport {
                outcome: "completed".into(),
                state: Some(out.state),
                status: format!("{:?}", out.summary.status),
                node_executions: out.summary.node_executions,
                steps: out.summary.steps,
            },
            Err(f) if matches!(f.error, Error::NotInterrupted { .. }) => ChildReport {
                outcome: format!("{}: {}", f.error.kind(), f.error),
                state: None,
                status: format!("{:?}", f.summary.status),
                node_executions: f.summary.node_executions,
                steps: f.summary.steps.clone(),
            },
            Err(f) => panic!(
                "child {mode} of {thread} failed: {} ({:?})",
                f.error, f.error
            ),
        }
    });
    let tmp = result.with_extension("tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(&report).unwrap()).unwrap();
    fs::rename(&tmp, &result).unwrap();
}

// ---------------------------------------------------------------------------
// The parent: spawning, killing, reading back.

struct Paths {
    root: PathBuf,
    store: PathBuf,
    log: PathBuf,
    result: PathBuf,
    thread: String,
}

impl Paths {
    fn new(base: &Path, name: &str) -> Self {
        let root = base.join(name);
        fs::create_dir_all(&root).unwrap();
        Self {
            store: root.join("checkpoints"),
            log: root.join("executions.log"),
            result: root.join("result.json"),
            thread: format!("kill-{name}"),
            root,
        }
    }

    fn spawn(&self, mode: &str, tag: &str) -> Child {
        let _ = fs::remove_file(&self.result);
        let out = File::create(self.root.join(format!("{tag}.stdout"))).unwrap();
        let err = File::create(self.root.join(format!("{tag}.stderr"))).unwrap();
        rerun_test(module_path!(), "child_process_entry")
            .env(CHILD_ENV, "1")
            .env(ENV_MODE, mode)
            .env(ENV_STORE, &self.store)
            .env(ENV_THREAD, &self.thread)
            .env(ENV_LOG, &self.log)
            .env(ENV_RESULT, &self.result)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap()
    }

    fn child_output(&self, tag: &str) -> String {
        let read = |ext: &str| {
            fs::read_to_string(self.root.join(format!("{tag}.{ext}"))).unwrap_or_default()
        };
        let tail = |s: String| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            tail(read("stdout")),
            tail(read("stderr"))
        )
    }

    fn report(&self) -> ChildReport {
        serde_json::from_slice(&fs::read(&self.result).unwrap()).unwrap()
    }
}

/// The execution log's complete lines; fails on a torn last line (a node's
/// one `write` of a whole line can't be torn by SIGKILL).
fn read_log(path: &Path) -> Vec<String> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => panic!("reading {}: {e}", path.display()),
    };
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "torn line in {}: {text:?}",
        path.display()
    );
    text.lines().map(str::to_string).collect()
}

/// What the store says about a thread, read by the parent.
#[derive(Debug)]
struct Snapshot {
    latest_seq: u64,
    /// Super-steps committed.
    step: u64,
    status: ThreadStatus,
    node_executions: u64,
    /// "superstep:instance" of every step in a committed checkpoint.
    committed: BTreeSet<String>,
    /// Results saved as pending writes for the super-step in flight.
    saved: BTreeSet<String>,
    /// The tasks of the super-step in flight (the latest frontier).
    frontier: BTreeSet<String>,
    /// The state rebuilt from the checkpoints.
    state: Trail,
    /// Inconsistencies found while reading.
    problems: Vec<String>,
}

impl Snapshot {
    /// Everything whose result the store holds: never to be run again.
    fn done(&self) -> BTreeSet<String> {
        self.committed.union(&self.saved).cloned().collect()
    }
}

async fn snapshot(store_dir: &Path, thread: &str) -> Option<Snapshot> {
    let store = FileCheckpointer::open(store_dir).unwrap();
    let thread = ThreadId::new(thread);
    let latest = store.get(&thread, None).await.unwrap()?;
    let mut committed = BTreeSet::new();
    let mut problems = Vec::new();
    for cp in store.list(&thread, None, usize::MAX).await.unwrap() {
        for r in &cp.steps {
            let id = format!(
                "{}:{}",
                cp.step - 1,
                instance(r.node.as_str(), r.input.as_ref())
            );
            if r.status != StepStatus::Succeeded {
                problems.push(format!(
                    "checkpoint {} holds {id} with status {:?}",
                    cp.seq, r.status
                ));
            }
            if !committed.insert(id.clone()) {
                problems.push(format!("{id} is committed twice"));
            }
        }
    }
    let saved = store
        .writes(&thread, latest.seq)
        .await
        .unwrap()
        .iter()
        .map(|w| {
            format!(
                "{}:{}",
                latest.step,
                instance(w.node.as_str(), w.step.input.as_ref())
            )
        })
        .collect();
    let frontier = latest
        .frontier
        .iter()
        .map(|t| {
            format!(
                "{}:{}",
                latest.step,
                instance(t.node.as_str(), t.input.as_ref())
            )
        })
        .collect();
    let mut state: Option<Trail> = None;
    for cp in store.chain(&thread, latest.seq).await.unwrap() {
        match cp.state {
            StateRecord::Full(v) => state = Some(serde_json::from_value(v).unwrap()),
            StateRecord::Delta(updates) => {
                let s = state.as_mut().expect("a delta before any full state");
                for u in updates {
                    s.apply(serde_json::from_value(u).unwrap());
                }
            }
        }
    }
    Some(Snapshot {
        latest_seq: latest.seq,
        step: latest.step,
        status: latest.status,
        node_executions: latest.node_executions,
        committed,
        saved,
        frontier,
        state: state.expect("no state in the thread"),
        problems,
    })
}

/// Where to kill a child.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// Once this process has logged `n` executions (the n-th node is running).
    Lines(usize),
    /// Once `writes` task results of super-step `superstep` are saved as
    /// pending writes (the rest of that super-step is still running).
    Saved { superstep: u64, writes: usize },
}

fn wait_exit(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for the kill point, then SIGKILLs the child.
fn kill_at(
    rt: &tokio::runtime::Runtime,
    paths: &Paths,
    child: &mut Child,
    kill: Kill,
    log_offset: usize,
) -> Result<(), String> {
    let started = Instant::now();
    let store = FileCheckpointer::open(&paths.store).unwrap();
    let thread = ThreadId::new(paths.thread.as_str());
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(format!("exited ({status}) before reaching {kill:?}"));
        }
        let reached = match kill {
            Kill::Lines(n) => read_log(&paths.log).len() >= log_offset + n,
            Kill::Saved { superstep, writes } => rt.block_on(async {
                match store.get(&thread, None).await.unwrap() {
                    Some(latest) if latest.step == superstep => {
                        store.writes(&thread, latest.seq).await.unwrap().len() >= writes
                    }
                    _ => false,
                }
            }),
        };
        if reached {
            break;
        }
        if started.elapsed() > CHILD_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("did not reach {kill:?} in {CHILD_DEADLINE:?}"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if status.signal() != Some(9) {
            return Err(format!("was not killed by SIGKILL at {kill:?}: {status}"));
        }
    }
    #[cfg(not(unix))]
    if status.success() {
        return Err(format!("finished before the kill at {kill:?}"));
    }
    Ok(())
}

/// One process of a scenario.
struct Proc {
    mode: &'static str,
    kill: Option<Kill>,
    /// The executions it logged.
    lines: Vec<String>,
    /// The store right after it was killed.
    after: Option<Snapshot>,
}

/// The uninterrupted run everything is compared with.
struct Baseline {
    executions: BTreeSet<String>,
    state: Trail,
    /// (node, input) of the summary's steps, in order.
    steps: Vec<(String, Option<serde_json::Value>)>,
}

fn step_keys(steps: &[StepRecord]) -> Vec<(String, Option<serde_json::Value>)> {
    steps
        .iter()
        .map(|r| (r.node.to_string(), r.input.clone()))
        .collect()
}

struct Outcome {
    name: &'static str,
    kills: Vec<Kill>,
    errors: Vec<String>,
    notes: Vec<String>,
    /// Results saved as pending writes when a process was killed (the
    /// checks make sure they were not run again).
    replayed: usize,
    /// In-flight executions lost by a kill and run again.
    rerun: usize,
    total: usize,
}

fn run_scenario(base: &Path, baseline: &Baseline, name: &'static str, kills: Vec<Kill>) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let paths = Paths::new(base, name);
    let mut out = Outcome {
        name,
        kills: kills.clone(),
        errors: Vec::new(),
        notes: Vec::new(),
        replayed: 0,
        rerun: 0,
        total: 0,
    };
    let mut procs: Vec<Proc> = Vec::new();
    let plan: Vec<Option<Kill>> = kills.iter().copied().map(Some).chain([None]).collect();
    for (i, kill) in plan.into_iter().enumerate() {
        let mode = if i == 0 { "run" } else { "resume" };
        let tag = format!("p{i}-{mode}");
        let offset = read_log(&paths.log).len();
        let mut child = paths.spawn(mode, &tag);
        let mut after = None;
        match kill {
            Some(k) => {
                if let Err(e) = kill_at(&rt, &paths, &mut child, k, offset) {
                    out.errors.push(format!(
                        "process {i} ({mode}) {e}\n{}",
                        paths.child_output(&tag)
                    ));
                    return out;
                }
                after = rt.block_on(snapshot(&paths.store, &paths.thread));
                if after.is_none() {
                    out.errors
                        .push(format!("process {i} killed before checkpoint 0 existed"));
                    return out;
                }
            }
            None => match wait_exit(&mut child, CHILD_DEADLINE) {
                Some(s) if s.success() => {}
                other => {
                    out.errors.push(format!(
                        "final process {i} ({mode}) did not succeed: {other:?}\n{}",
                        paths.child_output(&tag)
                    ));
                    return out;
                }
            },
        }
        let lines = read_log(&paths.log)[offset..].to_vec();
        procs.push(Proc {
            mode,
            kill,
            lines,
            after,
        });
    }
    let report = paths.report();
    let last = rt
        .block_on(snapshot(&paths.store, &paths.thread))
        .expect("the thread exists");
    check(baseline, &procs, &report, &last, &mut out);
    out
}

/// What differs between two states, briefly.
fn state_diff(got: &Trail, expected: &Trail) -> String {
    let mut out = Vec::new();
    let n = got.order.len().max(expected.order.len());
    for i in 0..n {
        let (g, e) = (got.order.get(i), expected.order.get(i));
        if g != e {
            out.push(format!("order[{i}] = {g:?}, expected {e:?}"));
        }
    }
    for (what, g, e) in [
        ("counter", got.counter, expected.counter),
        ("digest", got.digest, expected.digest),
        ("rounds", u64::from(got.rounds), u64::from(expected.rounds)),
    ] {
        if g != e {
            out.push(format!("{what} = {g}, expected {e}"));
        }
    }
    out.join("; ")
}

fn set(lines: &[String]) -> BTreeSet<String> {
    lines.iter().cloned().collect()
}

fn check(
    baseline: &Baseline,
    procs: &[Proc],
    report: &ChildReport,
    last: &Snapshot,
    out: &mut Outcome,
) {
    let all = &baseline.executions;
    let mut err = |m: String| out.errors.push(m);
    let empty = BTreeSet::new();
    for (i, p) in procs.iter().enumerate() {
        let who = format!("process {i} ({}, kill {:?})", p.mode, p.kill);
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for l in &p.lines {
            *counts.entry(l.as_str()).or_default() += 1;
        }
        for (l, n) in &counts {
            if *n > 1 {
                err(format!("{who} executed {l} {n} times"));
            }
        }
        let lines = set(&p.lines);
        let unknown: Vec<_> = lines.difference(all).collect();
        if !unknown.is_empty() {
            err(format!(
                "{who} executed {unknown:?}, which an uninterrupted run never executes"
            ));
        }
        let before = if i == 0 {
            &empty
        } else {
            &procs[i - 1].after.as_ref().unwrap().committed
        };
        let saved_before = if i == 0 {
            empty.clone()
        } else {
            procs[i - 1].after.as_ref().unwrap().saved.clone()
        };
        let again: Vec<_> = lines.intersection(before).collect();
        if !again.is_empty() {
            err(format!(
                "{who} re-executed steps that were committed in a checkpoint: {again:?}"
            ));
        }
        let again: Vec<_> = lines.intersection(&saved_before).collect();
        if !again.is_empty() {
            err(format!(
                "{who} re-executed tasks whose results were saved as pending writes: {again:?}"
            ));
        }
        let done_before: BTreeSet<String> = before.union(&saved_before).cloned().collect();
        match &p.after {
            Some(after) => {
                for problem in &after.problems {
                    err(format!("{who}: store after the kill: {problem}"));
                }
                // Killed: at most the super-step in flight is lost.
                let done = after.done();
                let lost: BTreeSet<_> = lines.difference(&done).cloned().collect();
                let beyond: Vec<_> = lost.difference(&after.frontier).collect();
                if !beyond.is_empty() {
                    err(format!(
                        "{who}: executions {beyond:?} are neither in the store nor in the \
                         super-step in flight (frontier {:?} at checkpoint {})",
                        after.frontier, after.latest_seq
                    ));
                }
                let phantom: Vec<_> = done
                    .difference(&done_before)
                    .filter(|d| !lines.contains(*d))
                    .collect();
                if !phantom.is_empty() {
                    err(format!(
                        "{who}: the store holds results {phantom:?} that no process produced"
                    ));
                }
                out.rerun += lost.len();
                // Results saved by this process (or before) and not run again later.
                out.replayed += after.saved.difference(&after.committed).count();
            }
            None => {
                let phantom: Vec<_> = last
                    .committed
                    .difference(&done_before)
                    .filter(|d| !lines.contains(*d))
                    .collect();
                if !phantom.is_empty() {
                    err(format!(
                        "{who}: the finished thread commits results {phantom:?} that no \
                         process produced (a saved result replayed in the wrong super-step?)"
                    ));
                }
                // The last process runs exactly what the store did not hold.
                let expected: BTreeSet<String> = all.difference(&done_before).cloned().collect();
                let missing: Vec<_> = expected.difference(&lines).collect();
                let extra: Vec<_> = lines.difference(&expected).collect();
                if !missing.is_empty() || !extra.is_empty() {
                    err(format!(
                        "{who} should have executed exactly the {} steps not in the store; \
                         never executed: {missing:?}; executed but not expected: {extra:?}",
                        expected.len()
                    ));
                }
            }
        }
    }
    let total: usize = procs.iter().map(|p| p.lines.len()).sum();
    out.total = total;
    let executed: BTreeSet<String> = procs.iter().flat_map(|p| p.lines.clone()).collect();
    let never: Vec<_> = all.difference(&executed).collect();
    if !never.is_empty() {
        err(format!(
            "steps of an uninterrupted run never executed in any process: {never:?}"
        ));
    }
    if total != EXECUTIONS + out.rerun {
        err(format!(
            "{total} executions in all; expected {EXECUTIONS} + {} lost in flight",
            out.rerun
        ));
    }

    // Final state and the thread's record.
    if report.outcome != "completed" {
        err(format!("final resume did not complete: {}", report.outcome));
    }
    match &report.state {
        Some(s) if *s == baseline.state => {}
        Some(s) => err(format!(
            "final state differs from the uninterrupted run: {}",
            state_diff(s, &baseline.state)
        )),
        None => err("the final process returned no state".into()),
    }
    if last.state != baseline.state {
        err(format!(
            "state rebuilt from the checkpoints differs from the uninterrupted run: {}",
            state_diff(&last.state, &baseline.state)
        ));
    }
    for problem in &last.problems {
        err(format!("finished thread: {problem}"));
    }
    if last.status != ThreadStatus::Completed {
        err(format!(
            "thread status {:?}, expected Completed",
            last.status
        ));
    }
    if last.committed != *all {
        let missing: Vec<_> = all.difference(&last.committed).collect();
        let extra: Vec<_> = last.committed.difference(all).collect();
        err(format!(
            "committed steps of the finished thread differ from the uninterrupted run: \
             missing {missing:?}, extra {extra:?}"
        ));
    }
    if last.node_executions != EXECUTIONS as u64 || report.node_executions != EXECUTIONS as u64 {
        err(format!(
            "node_executions: checkpoint {}, summary {}, expected {EXECUTIONS}",
            last.node_executions, report.node_executions
        ));
    }
    if step_keys(&report.steps) != baseline.steps {
        err(format!(
            "the resumed summary's steps differ from the uninterrupted run's:\n  got      {:?}\n  expected {:?}",
            step_keys(&report.steps),
            baseline.steps
        ));
    }
    let mut ids: Vec<u64> = report.steps.iter().map(|r| r.step_id.0).collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    if ids.len() != n {
        out.notes.push(format!(
            "summary step ids are not unique after resume ({} distinct of {n})",
            ids.len()
        ));
    }
}

/// The uninterrupted run, in a child process; cross-checked with an
/// in-process run without a checkpointer, and with a resume of the finished
/// thread.
fn baseline(base: &Path) -> (Baseline, Vec<String>) {
    let mut notes = Vec::new();
    let paths = Paths::new(base, "baseline");
    let mut child = paths.spawn("run", "run");
    let status = wait_exit(&mut child, CHILD_DEADLINE);
    assert!(
        status.is_some_and(|s| s.success()),
        "uninterrupted child run failed: {status:?}\n{}",
        paths.child_output("run")
    );
    let report = paths.report();
    assert_eq!(report.outcome, "completed");
    assert_eq!(report.status, "Succeeded");
    let state = report.state.clone().unwrap();
    let lines = read_log(&paths.log);
    let executions = set(&lines);
    assert_eq!(lines.len(), EXECUTIONS, "{lines:?}");
    assert_eq!(executions.len(), EXECUTIONS, "each execution is distinct");
    assert_eq!(state.rounds, ROUNDS);
    assert_eq!(state.order.len(), EXECUTIONS);
    assert_eq!(report.node_executions, EXECUTIONS as u64);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stored = rt.block_on(snapshot(&paths.store, &paths.thread)).unwrap();
    assert_eq!(stored.status, ThreadStatus::Completed);
    assert_eq!(stored.state, state, "checkpoints rebuild the final state");
    assert_eq!(stored.committed, executions, "every execution is committed");
    assert_eq!(stored.step, 17, "17 super-steps");

    // The same graph in this process, without a checkpointer.
    let local_log = paths.root.join("in-process.log");
    let local = rt
        .block_on(build_graph(&local_log).invoke(Trail::default(), RunConfig::new().parallel(4)))
        .unwrap();
    assert_eq!(local.state, state, "in-process run == child run");
    assert_eq!(set(&read_log(&local_log)), executions);
    assert_eq!(step_keys(&local.summary.steps), step_keys(&report.steps));

    // A crash after the last commit: resuming the finished thread must not
    // execute anything.
    let mut child = paths.spawn("resume", "resume-completed");
    let status = wait_exit(&mut child, CHILD_DEADLINE);
    assert!(
        status.is_some_and(|s| s.success()),
        "resume of a completed thread crashed: {status:?}\n{}",
        paths.child_output("resume-completed")
    );
    assert_eq!(
        read_log(&paths.log).len(),
        EXECUTIONS,
        "resuming a completed thread executed nodes"
    );
    let again = paths.report();
    match again.state {
        Some(s) => assert_eq!(s, state, "resume of a completed thread"),
        None => notes.push(format!(
            "resume() of a completed thread returns an error instead of its final state: {}",
            again.outcome
        )),
    }

    let baseline = Baseline {
        executions,
        state,
        steps: step_keys(&report.steps),
    };
    (baseline, notes)
}

#[test]
fn sigkill_at_many_points_then_resume_matches_an_uninterrupted_run() {
    let started = Instant::now();
    let base = std::env::temp_dir().join(format!(
        "flowtrace-kill-resume-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    fs::create_dir_all(&base).unwrap();
    let (baseline, mut notes) = baseline(&base);

    use Kill::{Lines, Saved};
    // Super-steps: 0 intake, 1 plan, 2 prepare; round 1: 3 split, 4 {a,b,c,d},
    // 5 join, 6 fanout, 7 {worker x3}, 8 review, 9 publish; round 2: 10..16.
    // Round 2 runs the same nodes at the same task positions as round 1, so a
    // result saved in round 1 must not stand in for its round-2 twin.
    // Executions (log lines): 1 intake, 2 plan, 3 prepare, 4 split, 5-8 a-d,
    // 9 join, 10 fanout, 11-13 workers, 14 review, 15 publish, 16-27 round 2.
    let scenarios: Vec<(&'static str, Vec<Kill>)> = vec![
        ("first-node", vec![Lines(1)]),
        ("chain", vec![Lines(3)]),
        ("fanout-in-flight", vec![Lines(8)]),
        (
            "fanout-1-saved",
            vec![Saved {
                superstep: 4,
                writes: 1,
            }],
        ),
        (
            "fanout-3-saved",
            vec![Saved {
                superstep: 4,
                writes: 3,
            }],
        ),
        ("after-fanout", vec![Lines(9)]),
        (
            "workers-1-saved",
            vec![Saved {
                superstep: 7,
                writes: 1,
            }],
        ),
        (
            "round2-fanout-2-saved",
            vec![Saved {
                superstep: 11,
                writes: 2,
            }],
        ),
        (
            "round2-workers-2-saved",
            vec![Saved {
                superstep: 14,
                writes: 2,
            }],
        ),
        ("last-node", vec![Lines(27)]),
        (
            "double-crash",
            vec![
                Lines(5),
                Saved {
                    superstep: 11,
                    writes: 1,
                },
            ],
        ),
        (
            "crash-right-after-resume",
            vec![
                Saved {
                    superstep: 4,
                    writes: 2,
                },
                Lines(1),
            ],
        ),
        (
            "triple-crash",
            vec![
                Lines(2),
                Saved {
                    superstep: 7,
                    writes: 2,
                },
                Lines(4),
            ],
        ),
    ];

    // A few lanes at a time: each child mostly sleeps, fsyncs and waits.
    const LANES: usize = 3;
    let queue = std::sync::Mutex::new(scenarios.into_iter());
    let outcomes = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..LANES {
            s.spawn(|| {
                loop {
                    let next = queue.lock().unwrap().next();
                    let Some((name, kills)) = next else { break };
                    let o = run_scenario(&base, &baseline, name, kills);
                    outcomes.lock().unwrap().push(o);
                }
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap();
    outcomes.sort_by_key(|o| o.name);

    let mut failures = Vec::new();
    let (mut replayed, mut rerun) = (0, 0);
    for o in &outcomes {
        eprintln!(
            "{:<26} kills {:<70} executions {:>2} (+{} lost in flight), {} results saved at a kill: {}",
            o.name,
            format!("{:?}", o.kills),
            o.total,
            o.rerun,
            o.replayed,
            if o.errors.is_empty() { "ok" } else { "FAILED" }
        );
        replayed += o.replayed;
        rerun += o.rerun;
        for n in &o.notes {
            notes.push(format!("{}: {n}", o.name));
        }
        for e in &o.errors {
            failures.push(format!("[{}] {e}", o.name));
        }
    }
    notes.sort();
    notes.dedup();
    for n in &notes {
        eprintln!("note: {n}");
    }
    eprintln!("kill/resume scenarios took {:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed (files kept in {}):\n{}",
        outcomes.iter().filter(|o| !o.errors.is_empty()).count(),
        outcomes.len(),
        base.display(),
        failures.join("\n")
    );
    // The scenarios really exercised both recovery paths.
    assert!(replayed > 0, "no saved result was ever replayed");
    assert!(rerun > 0, "no in-flight execution was ever lost and re-run");
    let _ = fs::remove_dir_all(&base);
}
