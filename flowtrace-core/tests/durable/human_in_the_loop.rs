//! Human decisions land exactly where they belong: several questions per
//! node, several paused instances at once, gates and questions inside
//! subgraphs, rejections that keep finished siblings, failed threads, new
//! runs on finished threads, and state edits as a node.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flowtrace_core::checkpoint::{
    Checkpointer, DecisionKind, FileCheckpointer, InterruptWhen, MemoryCheckpointer, ThreadStatus,
};
use flowtrace_core::exec::{Command, Durability, FinishedThread};
use flowtrace_core::trace::MemorySink;
use flowtrace_core::{
    Dispatch, END, Error, GraphBuilder, JsonState, NodeOutput, RunStatus, State, node_fn, reducer,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::support::{TempDir, assert_error, durable};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Log {
    items: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Add {
    items: Vec<String>,
}

impl State for Log {
    type Update = Add;
    fn apply(&mut self, u: Add) {
        reducer::append(&mut self.items, u.items);
    }
    fn merge_input(&mut self, input: Self) {
        self.items.extend(input.items);
    }
}

fn add(s: impl Into<String>) -> Add {
    Add {
        items: vec![s.into()],
    }
}

fn stores() -> Vec<(&'static str, Arc<dyn Checkpointer>, Option<TempDir>)> {
    let dir = TempDir::new("hitl");
    let file: Arc<dyn Checkpointer> = Arc::new(FileCheckpointer::open(dir.path()).unwrap());
    vec![
        ("memory", Arc::new(MemoryCheckpointer::new()), None),
        ("file", file, Some(dir)),
    ]
}

/// 1. A node that asks one question per item: each call is its own
/// interrupt; earlier answers are replayed in order; the update applies
/// once the node returns.
#[tokio::test]
async fn a_node_asks_one_question_per_item_and_finishes() {
    for (label, store, _dir) in stores() {
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let graph = GraphBuilder::<Log>::new("review")
            .add_node(
                "review",
                node_fn(move |_s: Arc<Log>, ctx| {
                    let r = r.clone();
                    async move {
                        r.fetch_add(1, Ordering::SeqCst);
                        let mut out = Vec::new();
                        for item in ["a", "b", "c"] {
                            let answer = ctx.interrupt(json!({ "item": item }))?;
                            out.push(format!("{item}={}", answer.as_str().unwrap_or("?")));
                        }
                        Ok(Add { items: out }.into())
                    }
                }),
            )
            .set_entry("review")
            .set_finish("review")
            .compile()
            .unwrap();
        let mut out = graph
            .invoke(Log::default(), durable(store.clone(), "q"))
            .await
            .unwrap();
        let mut ids = Vec::new();
        for answer in ["yes", "no", "maybe"] {
            assert_eq!(out.summary.status, RunStatus::Interrupted, "{label}");
            assert_eq!(out.interrupts.len(), 1, "{label}");
            let i = out.interrupt().unwrap().clone();
            assert_eq!(i.when, InterruptWhen::During);
            assert_eq!(i.call as usize, ids.len(), "{label}: call index");
            assert!(!ids.contains(&i.id), "{label}: every call has its own id");
            assert!(
                out.state.items.is_empty(),
                "{label}: no update before return"
            );
            ids.push(i.id.clone());
            out = graph
                .invoke(
                    Command::approve(&i.id, json!(answer)),
                    durable(store.clone(), "q"),
                )
                .await
                .unwrap();
        }
        assert_eq!(out.summary.status, RunStatus::Succeeded, "{label}");
        assert_eq!(out.state.items, ["a=yes", "b=no", "c=maybe"], "{label}");
        assert_eq!(runs.load(Ordering::SeqCst), 4, "{label}");
        // An answer to an already-answered question is refused.
        let err = graph
            .invoke(
                Command::approve(&ids[0], json!("x")),
                durable(store.clone(), "q"),
            )
            .await
            .unwrap_err();
        assert_error!(err.error, Error::NotInterrupted { .. }, "{label}");
    }
}

fn workers_graph(asks: Arc<AtomicUsize>) -> flowtrace_core::CompiledGraph<JsonState> {
    GraphBuilder::<JsonState>::new("map")
        .add_node(
            "plan",
            node_fn(|_s, _c| async {
                Ok(NodeOutput::none()
                    .dispatch(Dispatch::json("worker", json!(1)))
                    .dispatch(Dispatch::json("worker", json!(2)))
                    .dispatch(Dispatch::json("worker", json!(3))))
            }),
        )
        .add_node(
            "worker",
            node_fn(move |_s, ctx| {
                let asks = asks.clone();
                async move {
                    let n = ctx.input_value().cloned().unwrap_or(Value::Null);
                    asks.fetch_add(1, Ordering::SeqCst);
                    let answer = ctx.interrupt(json!({ "worker": n }))?;
                    let mut m = serde_json::Map::new();
                    m.insert(format!("w{n}"), answer);
                    Ok(m.into())
                }
            }),
        )
        .add_node("reduce", node_fn(|_s, _c| async { Ok(NodeOutput::none()) }))
        .set_entry("plan")
        .add_dispatch("plan", "worker")
        .add_edge("worker", "reduce")
        .set_finish("reduce")
        .compile()
        .unwrap()
}

/// 2. Dispatched instances that each ask: all surfaced at once with
/// distinct ids; answered one at a time, each answer reaches only its own
/// instance, and answered instances are not asked again.
#[tokio::test]
async fn every_paused_instance_is_surfaced_and_answered_alone() {
    for (label, store, _dir) in stores() {
        for parallel in [false, true] {
            let asks = Arc::new(AtomicUsize::new(0));
            let graph = workers_graph(asks.clone());
            let thread = format!("w-{parallel}");
            let cfg = || {
                let c = durable(store.clone(), &thread);
                if parallel { c.parallel(4) } else { c }
            };
            let out = graph.invoke(JsonState::new(), cfg()).await.unwrap();
            assert_eq!(out.interrupts.len(), 3, "{label}");
            let ids: Vec<String> = out.interrupts.iter().map(|i| i.id.clone()).collect();
            let mut unique = ids.clone();
            unique.dedup();
            assert_eq!(unique.len(), 3, "{label}: distinct ids {ids:?}");
            assert_eq!(asks.load(Ordering::SeqCst), 3);
            let payloads: Vec<Value> = out
                .interrupts
                .iter()
                .map(|i| i.payload["worker"].clone())
                .collect();
            assert_eq!(payloads, [json!(1), json!(2), json!(3)]);

            // Answer the second one alone: the run stops again at once with
            // the other two still pending; nothing runs.
            let out = graph
                .invoke(Command::approve(&ids[1], json!("B")), cfg())
                .await
                .unwrap();
            assert_eq!(out.summary.status, RunStatus::Interrupted);
            let pending: Vec<String> = out.interrupts.iter().map(|i| i.id.clone()).collect();
            assert_eq!(pending, [ids[0].clone(), ids[2].clone()], "{label}");
            assert_eq!(asks.load(Ordering::SeqCst), 3, "nothing re-asked");
            // A decision for the already-answered one is stale.
            let err = graph
                .invoke(Command::approve(&ids[1], json!("again")), cfg())
                .await
                .unwrap_err();
            assert_error!(err.error, Error::StaleInterrupt { .. });

            // Answer the other two together.
            let out = graph
                .invoke(
                    vec![
                        Command::approve(&ids[0], json!("A")),
                        Command::approve(&ids[2], json!("C")),
                    ],
                    cfg(),
                )
                .await
                .unwrap();
            assert_eq!(out.summary.status, RunStatus::Succeeded, "{label}");
            assert_eq!(out.state.values["w1"], json!("A"));
            assert_eq!(out.state.values["w2"], json!("B"));
            assert_eq!(out.state.values["w3"], json!("C"));
            // Each instance ran once more (with its own answer).
            assert_eq!(asks.load(Ordering::SeqCst), 6, "{label}");
        }
    }
}

/// 4. Rejecting one instance keeps the others' answers and results.
#[tokio::test]
async fn rejecting_one_instance_keeps_finished_siblings() {
    let store: Arc<dyn Checkpointer> = Arc::new(MemoryCheckpointer::new());
    let asks = Arc::new(AtomicUsize::new(0));
    let graph = workers_graph(asks.clone());
    let out = graph
        .invoke(JsonState::new(), durable(store.clone(), "r"))
        .await
        .unwrap();
    let ids: Vec<String> = out.interrupts.iter().map(|i| i.id.clone()).collect();
    let out = graph
        .invoke(
            Command::approve(&ids[0], json!("A")),
            durable(store.clone(), "r"),
        )
        .await
        .unwrap();
    assert_eq!(out.interrupts.len(), 2);
    let out = graph
        .invoke(
            vec![
                Command::reject(&ids[1]).by("carol"),
                Command::approve(&ids[2], json!("C")),
            ],
            durable(store.clone(), "r"),
        )
        .await
        .unwrap();
    assert_eq!(out.summary.status, RunStatus::Succeeded);
    assert_eq!(out.state.values["w1"], json!("A"));
    assert!(
        !out.state.values.contains_key("w2"),
        "rejected instance did not run"
    );
    assert_eq!(out.state.values["w3"], json!("C"));
    // 3 first asks + the two approved instances re-ran; the rejected did not.
    assert_eq!(asks.load(Ordering::SeqCst), 5);
    let latest = store.list(&"r".into(), None, 100).await.unwrap();
    let approvals: Vec<_> = latest.iter().flat_map(|c| c.approvals.clone()).collect();
    assert!(
        approvals
            .iter()
            .any(|a| a.decision == DecisionKind::Reject && a.decided_by == "carol")
    );
}

/// 3. Gates and questions inside subgraphs pause the parent at any depth,
/// resume inside the subgraph, and name the path.
#[tokio::test]
async fn subgraph_gates_and_questions_pause_the_parent() {
    for (label, store, _dir) in stores() {
        let inner_runs = Arc::new(AtomicUsize::new(0));
        let ir = inner_runs.clone();
        // Innermost: "draft" then a gated "send" that also asks a question.
        let inner = GraphBuilder::<Log>::new("inner")
            .add_node(
                "draft",
                node_fn(move |_s: Arc<Log>, _c| {
                    let ir = ir.clone();
                    async move {
                        ir.fetch_add(1, Ordering::SeqCst);
                        Ok(add("draft").into())
                    }
                }),
            )
            .add_node(
                "send",
                node_fn(|_s: Arc<Log>, ctx| async move {
                    let to = ctx.interrupt(json!("to whom?"))?;
                    Ok(add(format!("sent to {}", to.as_str().unwrap_or("?"))).into())
                }),
            )
            .set_entry("draft")
            .add_edge("draft", "send")
            .set_finish("send")
            .interrupt_before(["send"])
            .compile()
            .unwrap();
        // Middle graph wraps the inner one; the top graph wraps the middle.
        let middle = GraphBuilder::<Log>::new("middle")
            .add_node(
                "mail",
                inner.as_node(|p: &Log| p.clone(), |c: Log| Add { items: c.items }),
            )
            .set_entry("mail")
            .set_finish("mail")
            .compile()
            .unwrap();
        let top = GraphBuilder::<Log>::new("top")
            .add_node("start", node_fn(|_s, _c| async { Ok(add("start").into()) }))
            .add_node(
                "outbox",
                middle.as_node(|_p: &Log| Log::default(), |c: Log| Add { items: c.items }),
            )
            .add_node("done", node_fn(|_s, _c| async { Ok(add("done").into()) }))
            .set_entry("start")
            .add_edge("start", "outbox")
            .add_edge("outbox", "done")
            .set_finish("done")
            .compile()
            .unwrap();
        let sink = MemorySink::new();
        let out = top
            .invoke(
                Log::default(),
                durable(store.clone(), "sub").sink(sink.clone()),
            )
            .await
            .unwrap();
        // The static gate inside the subgraph stops the whole run.
        assert_eq!(out.summary.status, RunStatus::Interrupted, "{label}");
        let gate = out.interrupt().unwrap().clone();
        assert_eq!(gate.when, InterruptWhen::Before);
        assert_eq!(gate.node, "send");
        assert_eq!(gate.path, ["outbox", "mail"]);
        assert_eq!(gate.qualified_node(), "outbox → mail → send");
        assert_eq!(
            out.state.items,
            ["start"],
            "{label}: parent not past the subgraph"
        );
        assert!(sink.kinds().contains(&"interrupt"));
        let latest = store.get(&"sub".into(), None).await.unwrap().unwrap();
        assert_eq!(latest.status, ThreadStatus::Interrupted);

        // Approve the gate: "send" now runs and asks its question.
        let out = top
            .invoke(
                Command::approve(&gate.id, Value::Null).by("ops"),
                durable(store.clone(), "sub"),
            )
            .await
            .unwrap();
        assert_eq!(out.summary.status, RunStatus::Interrupted, "{label}");
        let q = out.interrupt().unwrap().clone();
        assert_eq!(q.when, InterruptWhen::During);
        assert_eq!(q.path, ["outbox", "mail"]);
        assert_eq!(q.payload, json!("to whom?"));
        assert_ne!(q.id, gate.id);
        assert_eq!(
            inner_runs.load(Ordering::SeqCst),
            1,
            "{label}: draft not re-run"
        );

        let out = top
            .invoke(
                Command::approve(&q.id, json!("alice")),
                durable(store.clone(), "sub"),
            )
            .await
            .unwrap();
        assert_eq!(out.summary.status, RunStatus::Succeeded, "{label}");
        assert_eq!(
            out.state.items,
            ["start", "draft", "sent to alice", "done"],
            "{label}"
        );
        assert_eq!(
            inner_runs.load(Ordering::SeqCst),
            1,
            "{label}: draft ran once"
        );
        let approvals: Vec<_> = store
            .list(&"sub".into(), None, 100)
            .await
            .unwrap()
            .into_iter()
            .flat_map(|c| c.approvals)
            .collect();
        assert_eq!(approvals.len(), 2);
        assert!(approvals.iter().all(|a| a.path == ["outbox", "mail"]));
    }
}

/// 5. Exit durability writes when the run stops (one batch), and the
/// finished siblings of a paused super-step are saved and not re-run.
#[tokio::test]
async fn exit_durability_keeps_finished_siblings_of_a_pause() {
    for (label, store, _dir) in stores() {
        let sibling_runs = Arc::new(AtomicUsize::new(0));
        let sr = sibling_runs.clone();
        let graph = GraphBuilder::<Log>::new("exit")
            .add_node("fan", node_fn(|_s, _c| async { Ok(NodeOutput::none()) }))
            .add_node(
                "ask",
                node_fn(|_s: Arc<Log>, ctx| async move {
                    let a = ctx.interrupt("ok?")?;
                    Ok(add(format!("ask={a}")).into())
                }),
            )
            .add_node(
                "work",
                node_fn(move |_s: Arc<Log>, _c| {
                    let sr = sr.clone();
                    async move {
                        sr.fetch_add(1, Ordering::SeqCst);
                        Ok(add("work").into())
                    }
                }),
            )
            .set_entry("fan")
            .add_edge("fan", "ask")
            .add_edge("fan", "work")
            .add_edge("ask", END)
            .add_edge("work", END)
            .compile()
            .unwrap();
        let cfg = || durable(store.clone(), "exit").durability(Durability::Exit);
        let out = graph.invoke(Log::default(), cfg()).await.unwrap();
        let id = out.interrupt().unwrap().id.clone();
        assert_eq!(sibling_runs.load(Ordering::SeqCst), 1);
        let out = graph
            .invoke(Command::approve(&id, json!("yes")), cfg())
            .await
            .unwrap();
        assert_eq!(out.summary.status, RunStatus::Succeeded, "{label}");
        assert_eq!(
            sibling_runs.load(Ordering::SeqCst),
            1,
            "{label}: sibling not re-run"
        );
        let mut items = out.state.items.clone();
        items.sort();
        assert_eq!(items, ["ask=\"yes\"", "work"], "{label}");
    }
}

/// 6. A failed super-step: the thread is `failed` with the error, and
/// resuming runs only the failed task.
#[tokio::test]
async fn a_failed_thread_resumes_only_the_failed_task() {
    for (label, store, _dir) in stores() {
        for mode in [Durability::Sync, Durability::Exit] {
            let ok_runs = Arc::new(AtomicUsize::new(0));
            let fails = Arc::new(AtomicUsize::new(0));
            let (o, f) = (ok_runs.clone(), fails.clone());
            let graph = GraphBuilder::<Log>::new("f")
                .add_node("fan", node_fn(|_s, _c| async { Ok(NodeOutput::none()) }))
                .add_node(
                    "good",
                    node_fn(move |_s: Arc<Log>, _c| {
                        let o = o.clone();
                        async move {
                            o.fetch_add(1, Ordering::SeqCst);
                            Ok(add("good").into())
                        }
                    }),
                )
                .add_node(
                    "shaky",
                    node_fn(move |_s: Arc<Log>, _c| {
                        let f = f.clone();
                        async move {
                            if f.fetch_add(1, Ordering::SeqCst) == 0 {
                                return Err(flowtrace_core::NodeError::permanent("down"));
                            }
                            Ok(add("shaky").into())
                        }
                    }),
                )
                .set_entry("fan")
                .add_edge("fan", "good")
                .add_edge("fan", "shaky")
                .add_edge("good", END)
                .add_edge("shaky", END)
                .compile()
                .unwrap();
            let thread = format!("fail-{mode:?}");
            let cfg = || durable(store.clone(), &thread).durability(mode).parallel(2);
            let err = graph.invoke(Log::default(), cfg()).await.unwrap_err();
            assert!(matches!(err.error, Error::Node { .. }));
            let latest = store
                .get(&thread.as_str().into(), None)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(latest.status, ThreadStatus::Failed, "{label} {mode:?}");
            let e = latest.error.clone().unwrap();
            assert_eq!(e.node.unwrap(), "shaky");
            assert!(e.message.contains("down"));
            let out = graph
                .invoke(flowtrace_core::RunInput::Resume, cfg())
                .await
                .unwrap();
            assert_eq!(out.summary.status, RunStatus::Succeeded, "{label} {mode:?}");
            assert_eq!(
                ok_runs.load(Ordering::SeqCst),
                1,
                "{label} {mode:?}: good not re-run"
            );
            assert_eq!(fails.load(Ordering::SeqCst), 2);
            let mut items = out.state.items.clone();
            items.sort();
            assert_eq!(items, ["good", "shaky"]);
        }
    }
}

/// 7. A finished thread takes the next message: state carries over, step
/// numbering continues, history stays readable; refusal is an option; a
/// thread that is not finished is refused with its status.
#[tokio::test]
async fn a_finished_thread_accepts_the_next_run() {
    for (label, store, _dir) in stores() {
        let graph = GraphBuilder::<Log>::new("chat")
            .add_node(
                "reply",
                node_fn(|s: Arc<Log>, _c| async move {
                    let last = s.items.last().cloned().unwrap_or_default();
                    Ok(add(format!("re: {last}")).into())
                }),
            )
            .set_entry("reply")
            .set_finish("reply")
            .compile()
            .unwrap();
        let first = graph
            .invoke(
                Log {
                    items: vec!["hi".into()],
                },
                durable(store.clone(), "chat"),
            )
            .await
            .unwrap();
        let second = graph
            .invoke(
                Log {
                    items: vec!["how are you".into()],
                },
                durable(store.clone(), "chat"),
            )
            .await
            .unwrap();
        assert_eq!(
            second.state.items,
            ["hi", "re: hi", "how are you", "re: how are you"],
            "{label}"
        );
        assert!(second.summary.steps[0].step_id > first.summary.steps[0].step_id);
        let history = store.list(&"chat".into(), None, 100).await.unwrap();
        assert_eq!(history.len(), 4, "{label}");
        assert_eq!(history[0].status, ThreadStatus::Completed);
        let err = graph
            .invoke(
                Log::default(),
                durable(store.clone(), "chat").finished_thread(FinishedThread::Refuse),
            )
            .await
            .unwrap_err();
        assert!(matches!(err.error, Error::ThreadExists { .. }));
    }
    // A thread waiting for a human is not finished.
    let store: Arc<dyn Checkpointer> = Arc::new(MemoryCheckpointer::new());
    let graph = workers_graph(Arc::new(AtomicUsize::new(0)));
    graph
        .invoke(JsonState::new(), durable(store.clone(), "busy"))
        .await
        .unwrap();
    let err = graph
        .invoke(JsonState::new(), durable(store.clone(), "busy"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.error,
            Error::ThreadBusy {
                status: ThreadStatus::Interrupted,
                ..
            }
        ),
        "{}",
        err.error
    );
}

/// 8. A state edit as a node re-evaluates its routing and drops what its
/// earlier routing scheduled; fork takes the same option.
#[tokio::test]
async fn update_state_as_node_reroutes() {
    let store: Arc<dyn Checkpointer> = Arc::new(MemoryCheckpointer::new());
    let graph = GraphBuilder::<JsonState>::new("route")
        .add_node(
            "classify",
            node_fn(|_s, _c| async {
                let mut m = serde_json::Map::new();
                m.insert("kind".into(), json!("refund"));
                Ok(m.into())
            }),
        )
        .add_node(
            "refund",
            node_fn(|_s, _c| async {
                let mut m = serde_json::Map::new();
                m.insert("handled".into(), json!("refund"));
                Ok(m.into())
            }),
        )
        .add_node(
            "question",
            node_fn(|_s, _c| async {
                let mut m = serde_json::Map::new();
                m.insert("handled".into(), json!("question"));
                Ok(m.into())
            }),
        )
        .set_entry("classify")
        .add_conditional_edges(
            "classify",
            |s: &JsonState| {
                if s.values.get("kind") == Some(&json!("refund")) {
                    "refund"
                } else {
                    "question"
                }
            },
            [("refund", "refund"), ("question", "question")],
        )
        .add_edge("refund", END)
        .add_edge("question", END)
        .interrupt_after(["classify"])
        .compile()
        .unwrap();
    let out = graph
        .invoke(JsonState::new(), durable(store.clone(), "e"))
        .await
        .unwrap();
    assert_eq!(out.summary.status, RunStatus::Interrupted);
    let latest = store.get(&"e".into(), None).await.unwrap().unwrap();
    assert_eq!(latest.frontier[0].node, "refund");

    let mut edit = serde_json::Map::new();
    edit.insert("kind".into(), json!("question"));
    // A fork with the same edit, taken before the thread is edited.
    let fork = graph
        .fork(
            store.as_ref(),
            &"e".into(),
            latest.seq,
            "e-fork",
            Some(edit.clone()),
            Some("classify"),
        )
        .await
        .unwrap();
    assert_eq!(fork.frontier.len(), 1);
    assert_eq!(fork.frontier[0].node, "question");

    let cp = graph
        .update_state(store.as_ref(), &"e".into(), edit, Some("classify"))
        .await
        .unwrap();
    let nodes: Vec<&str> = cp.frontier.iter().map(|t| t.node.as_str()).collect();
    assert_eq!(nodes, ["question"], "the refund task no longer applies");
    assert_eq!(cp.approvals[0].decision, DecisionKind::Update);
    let out = graph
        .invoke(
            flowtrace_core::RunInput::Resume,
            durable(store.clone(), "e"),
        )
        .await
        .unwrap();
    assert_eq!(out.summary.status, RunStatus::Succeeded);
    assert_eq!(out.state.values["handled"], json!("question"));
    let out = graph
        .invoke(
            flowtrace_core::RunInput::Resume,
            durable(store.clone(), "e-fork"),
        )
        .await
        .unwrap();
    assert_eq!(out.state.values["handled"], json!("question"));

    let err = graph
        .update_state(
            store.as_ref(),
            &"e".into(),
            serde_json::Map::new(),
            Some("nope"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidStateEdit { .. }));
}

/// A value nested deeper than the checkpoint limit is refused before it is
/// saved, and the thread stays readable.
#[tokio::test]
async fn too_deep_values_are_refused_before_saving() {
    let store: Arc<dyn Checkpointer> = Arc::new(MemoryCheckpointer::new());
    let graph = GraphBuilder::<JsonState>::new("deep")
        .add_node(
            "nest",
            node_fn(|_s, _c| async {
                let mut v = json!(1);
                for _ in 0..200 {
                    v = json!([v]);
                }
                let mut m = serde_json::Map::new();
                m.insert("deep".into(), v);
                Ok(m.into())
            }),
        )
        .set_entry("nest")
        .set_finish("nest")
        .compile()
        .unwrap();
    let err = graph
        .invoke(JsonState::new(), durable(store.clone(), "d"))
        .await
        .unwrap_err();
    assert_error!(err.error, Error::ValueTooDeep { limit: 96, .. });
    // What was saved can be read back.
    graph
        .get_state(store.as_ref(), &"d".into(), None)
        .await
        .map(|snapshot| snapshot.values)
        .unwrap();
    let latest = store.get(&"d".into(), None).await.unwrap().unwrap();
    assert_eq!(latest.status, ThreadStatus::Failed);
}
