//! Crash recovery around human decisions, for real: a child process runs a
//! graph whose subgraph pauses at a static gate and then asks a question
//! (with a sibling finishing in the same super-step), on a
//! [`FileCheckpointer`], in `sync` and `exit` durability. Processes that
//! answer the pending interrupts are killed with SIGKILL at many points; new
//! processes keep answering what the thread waits for until it completes.
//!
//! Checked: the final state equals an uninterrupted run's; the sibling
//! that finished before the first pause never runs again (its result is
//! saved with the pause, in both modes); the subgraph's steps before its
//! gate never run again (the subgraph's position is saved with the pause);
//! every decision reaches the interrupt it names.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowtrace_core::checkpoint::{
    Checkpointer, FileCheckpointer, Interrupt, InterruptWhen, ThreadStatus,
};
use flowtrace_core::exec::{Command, Durability};
use flowtrace_core::{CompiledGraph, END, GraphBuilder, NodeContext, RunConfig, State, node_fn};
use serde::{Deserialize, Serialize};

use crate::support::{TempDir, rerun_test};

const CHILD_ENV: &str = "FLOWTRACE_HITL_CHILD";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Items {
    items: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct More {
    items: Vec<String>,
}

impl State for Items {
    type Update = More;
    fn apply(&mut self, u: More) {
        self.items.extend(u.items);
    }
}

fn record(log: &Path, line: &str) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    writeln!(f, "{line}").unwrap();
    f.sync_data().unwrap();
}

/// A node that sleeps, logs its execution and appends its name (or, when
/// `ask`, the answer to its question).
fn step(
    name: &'static str,
    sleep_ms: u64,
    ask: bool,
    log: Arc<PathBuf>,
) -> impl flowtrace_core::Node<Items> {
    node_fn(move |_s: Arc<Items>, ctx: NodeContext| {
        let log = log.clone();
        async move {
            let item = if ask {
                let a = ctx.interrupt(serde_json::json!({ "question": name }))?;
                format!("{name}={}", a.as_str().unwrap_or("?"))
            } else {
                name.to_string()
            };
            tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
            record(&log, name);
            Ok(More { items: vec![item] }.into())
        }
    })
}

fn build(log: &Path) -> CompiledGraph<Items> {
    let log = Arc::new(log.to_path_buf());
    let inner = GraphBuilder::<Items>::new("inner")
        .add_node("draft", step("draft", 20, false, log.clone()))
        .add_node("gate", step("gate", 10, false, log.clone()))
        .add_node("edit", step("edit", 20, true, log.clone()))
        .add_node("polish", step("polish", 20, false, log.clone()))
        .set_entry("draft")
        .add_edge("draft", "gate")
        .add_edge("gate", "edit")
        .add_edge("edit", "polish")
        .set_finish("polish")
        .interrupt_before(["gate"])
        .compile()
        .unwrap();
    GraphBuilder::<Items>::new("outer")
        .add_node("intake", step("intake", 5, false, log.clone()))
        .add_node(
            "review",
            inner.as_node(
                |_p: &Items| Items::default(),
                |c: Items| More { items: c.items },
            ),
        )
        .add_node("audit", step("audit", 40, false, log.clone()))
        .add_node("ship", step("ship", 10, false, log))
        .set_entry("intake")
        .add_edge("intake", "review")
        .add_edge("intake", "audit")
        .add_edge("review", "ship")
        .add_edge("audit", "ship")
        .add_edge("ship", END)
        .compile()
        .unwrap()
}

fn config(store: Arc<dyn Checkpointer>, durability: Durability) -> RunConfig {
    RunConfig::new()
        .checkpointer(store)
        .thread("t")
        .durability(durability)
        .parallel(4)
}

/// Approves every gate and answers every question "yes".
fn answers(interrupts: &[Interrupt]) -> Vec<Command<More>> {
    interrupts
        .iter()
        .map(|i| match i.when {
            InterruptWhen::During => Command::approve(&i.id, serde_json::json!("yes")),
            _ => Command::approve(&i.id, serde_json::Value::Null),
        })
        .collect()
}

fn durability(name: &str) -> Durability {
    match name {
        "exit" => Durability::Exit,
        _ => Durability::Sync,
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Report {
    status: String,
    pending: Vec<(String, InterruptWhen)>,
    state: Items,
}

/// The child: `run`, or answer every pending interrupt of the thread
/// (approve gates, answer questions "yes").
#[test]
fn child_process_entry() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let var = |k: &str| std::env::var(k).unwrap();
    let (mode, dir, log, out) = (
        var("HITL_MODE"),
        PathBuf::from(var("HITL_STORE")),
        PathBuf::from(var("HITL_LOG")),
        PathBuf::from(var("HITL_RESULT")),
    );
    let d = durability(&var("HITL_DURABILITY"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = rt.block_on(async {
        let graph = build(&log);
        let store: Arc<dyn Checkpointer> = Arc::new(FileCheckpointer::open(&dir).unwrap());
        let out = if mode == "run" {
            graph.invoke(Items::default(), config(store, d)).await
        } else {
            let latest = store.get(&"t".into(), None).await.unwrap().unwrap();
            graph
                .invoke(answers(&latest.interrupts), config(store, d))
                .await
        };
        let out = out.unwrap();
        Report {
            status: format!("{:?}", out.summary.status),
            pending: out
                .interrupts
                .iter()
                .map(|i| (i.id.clone(), i.when))
                .collect(),
            state: out.state,
        }
    });
    let tmp = out.with_extension("tmp");
    fs::write(&tmp, serde_json::to_vec(&report).unwrap()).unwrap();
    fs::rename(&tmp, &out).unwrap();
}

fn spawn(mode: &str, base: &Path, durability: &str) -> std::process::Child {
    let result = base.join("result.json");
    let _ = fs::remove_file(&result);
    rerun_test(module_path!(), "child_process_entry")
        .env(CHILD_ENV, "1")
        .env("HITL_MODE", mode)
        .env("HITL_STORE", base.join("store"))
        .env("HITL_LOG", base.join("exec.log"))
        .env("HITL_RESULT", &result)
        .env("HITL_DURABILITY", durability)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs a child to the end (or kills it after `kill_after`); the report if
/// it finished.
fn drive(
    mode: &str,
    base: &Path,
    durability: &str,
    kill_after: Option<Duration>,
) -> Option<Report> {
    let mut child = spawn(mode, base, durability);
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "child {mode} failed: {status}");
            let bytes = fs::read(base.join("result.json")).ok()?;
            return Some(serde_json::from_slice(&bytes).unwrap());
        }
        if kill_after.is_some_and(|k| started.elapsed() >= k) {
            child.kill().unwrap();
            child.wait().unwrap();
            return None;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "child {mode} hung"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn executions(base: &Path, node: &str) -> usize {
    fs::read_to_string(base.join("exec.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == node)
        .count()
}

async fn expected() -> Items {
    let dir = TempDir::new("hitl-expected");
    let graph = build(&dir.path().join("exec.log"));
    let store: Arc<dyn Checkpointer> =
        Arc::new(flowtrace_core::checkpoint::MemoryCheckpointer::new());
    let mut out = graph
        .invoke(Items::default(), config(store.clone(), Durability::Sync))
        .await
        .unwrap();
    while !out.interrupts.is_empty() {
        let commands = answers(&out.interrupts);
        out = graph
            .invoke(commands, config(store.clone(), Durability::Sync))
            .await
            .unwrap();
    }
    out.state
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_while_answering_subgraph_interrupts_then_resume() {
    let expected = expected().await;
    assert_eq!(
        expected.items,
        [
            "intake", "draft", "gate", "edit=yes", "polish", "audit", "ship"
        ]
    );
    let root = std::env::temp_dir().join(format!("flowtrace-hitl-kill-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let mut problems = Vec::new();
    for mode in ["sync", "exit"] {
        for (k, kill_ms) in [0u64, 3, 8, 15, 25, 40, 70].into_iter().enumerate() {
            let base = root.join(format!("{mode}-{k}"));
            fs::create_dir_all(base.join("store")).unwrap();
            // The first process pauses at the subgraph's gate.
            let first = drive("run", &base, mode, None).unwrap();
            assert_eq!(first.status, "Interrupted");
            assert_eq!(first.pending.len(), 1);
            assert_eq!(first.pending[0].1, InterruptWhen::Before);
            // Answer, killing the first answering process at `kill_ms`,
            // then keep answering until the thread completes.
            let mut kill = Some(Duration::from_millis(kill_ms));
            let mut last = None;
            for _ in 0..10 {
                match drive("answer", &base, mode, kill.take()) {
                    Some(r) if r.status == "Succeeded" => {
                        last = Some(r);
                        break;
                    }
                    Some(r) => assert_eq!(r.status, "Interrupted"),
                    None => {}
                }
            }
            let Some(last) = last else {
                problems.push(format!("{mode}/{kill_ms}ms: never completed"));
                continue;
            };
            if last.state != expected {
                problems.push(format!(
                    "{mode}/{kill_ms}ms: state {:?} != {:?}",
                    last.state.items, expected.items
                ));
            }
            for node in ["intake", "audit", "draft"] {
                let n = executions(&base, node);
                if n != 1 {
                    problems.push(format!("{mode}/{kill_ms}ms: {node} ran {n} times"));
                }
            }
            for node in ["gate", "edit", "polish", "ship"] {
                if executions(&base, node) < 1 {
                    problems.push(format!("{mode}/{kill_ms}ms: {node} never ran"));
                }
            }
            let store = FileCheckpointer::open(base.join("store")).unwrap();
            let latest = store.get(&"t".into(), None).await.unwrap().unwrap();
            if latest.status != ThreadStatus::Completed {
                problems.push(format!("{mode}/{kill_ms}ms: thread {:?}", latest.status));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{problems:#?} (files in {})",
        root.display()
    );
    let _ = fs::remove_dir_all(&root);
}
