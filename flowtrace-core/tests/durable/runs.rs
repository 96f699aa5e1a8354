//! Durable execution: checkpoints per super-step, resume, interrupts,
//! decisions, halt and durability modes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flowtrace_core::checkpoint::{
    Checkpointer, DecisionKind, InterruptWhen, MemoryCheckpointer, StateRecord, ThreadStatus,
};
use flowtrace_core::exec::{Command, Durability, FinishedThread, HaltSwitch};
use flowtrace_core::trace::MemorySink;
use flowtrace_core::{
    CompiledGraph, END, Error, GraphBuilder, NodeContext, NodeError, NodeOutput, RunConfig,
    RunStatus, State, node_fn, reducer,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::support::{assert_error, durable};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Ledger {
    log: Vec<String>,
    approved: Option<serde_json::Value>,
    amount: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Entry {
    log: Vec<String>,
    approved: Option<serde_json::Value>,
    amount: Option<u64>,
}

impl State for Ledger {
    type Update = Entry;
    fn apply(&mut self, u: Entry) {
        reducer::append(&mut self.log, u.log);
        if u.approved.is_some() {
            self.approved = u.approved;
        }
        reducer::replace(&mut self.amount, u.amount);
    }
}

fn log(s: &str) -> Entry {
    Entry {
        log: vec![s.to_string()],
        ..Entry::default()
    }
}

/// A node that appends its name and counts its executions.
fn counted(name: &'static str, counter: Arc<AtomicUsize>) -> impl flowtrace_core::Node<Ledger> {
    node_fn(move |_s: Arc<Ledger>, _ctx| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(log(name).into())
        }
    })
}

struct Counters {
    a: Arc<AtomicUsize>,
    b: Arc<AtomicUsize>,
    c: Arc<AtomicUsize>,
}

fn counters() -> Counters {
    Counters {
        a: Arc::new(AtomicUsize::new(0)),
        b: Arc::new(AtomicUsize::new(0)),
        c: Arc::new(AtomicUsize::new(0)),
    }
}

fn chain(c: &Counters) -> GraphBuilder<Ledger> {
    GraphBuilder::new("billing")
        .add_node("intake", counted("intake", c.a.clone()))
        .add_node("billing_approval", counted("billing_approval", c.b.clone()))
        .add_node("charge", counted("charge", c.c.clone()))
        .set_entry("intake")
        .add_edge("intake", "billing_approval")
        .add_edge("billing_approval", "charge")
        .set_finish("charge")
}

#[tokio::test]
async fn each_super_step_is_checkpointed_as_a_delta() {
    let c = counters();
    let graph = chain(&c).compile().unwrap();
    let store = Arc::new(MemoryCheckpointer::new());
    let out = graph
        .invoke(Ledger::default(), durable(store.clone(), "t1"))
        .await
        .unwrap();
    assert_eq!(out.state.log, ["intake", "billing_approval", "charge"]);
    assert_eq!(out.thread.as_ref().map(|t| t.as_str()), Some("t1"));

    let history = store.list(&"t1".into(), None, 100).await.unwrap();
    let seqs: Vec<u64> = history.iter().map(|c| c.seq).collect();
    assert_eq!(
        seqs,
        [3, 2, 1, 0],
        "newest first, one per super-step plus the input"
    );
    assert!(matches!(history[3].state, StateRecord::Full(_)));
    for cp in &history[..3] {
        // Each delta holds only its super-step's one update.
        match &cp.state {
            StateRecord::Delta(updates) => assert_eq!(updates.len(), 1),
            other => panic!("expected a delta, got {other:?}"),
        }
        assert_eq!(cp.nodes.len(), 1);
    }
    assert_eq!(history[0].status, ThreadStatus::Completed);
    assert!(history[0].frontier.is_empty());
    assert_eq!(history[1].frontier[0].node, "charge");
}

#[tokio::test]
async fn delta_size_does_not_grow_with_the_state() {
    #[derive(Clone, Default, Serialize, Deserialize)]
    struct Chat {
        messages: Vec<String>,
    }
    impl State for Chat {
        type Update = Vec<String>;
        fn apply(&mut self, u: Vec<String>) {
            reducer::append(&mut self.messages, u)
        }
    }
    let mut b = GraphBuilder::<Chat>::new("chat");
    for i in 0..5 {
        b = b.add_node(
            format!("n{i}"),
            node_fn(move |_s, _ctx| async move { Ok(vec![format!("message {i}")].into()) }),
        );
        if i > 0 {
            b = b.add_edge(format!("n{}", i - 1), format!("n{i}"));
        }
    }
    let graph = b.set_entry("n0").set_finish("n4").compile().unwrap();
    let store = Arc::new(MemoryCheckpointer::new());
    let big = Chat {
        messages: (0..1000).map(|i| format!("old message {i}")).collect(),
    };
    graph
        .invoke(
            big,
            RunConfig::new().checkpointer(store.clone()).thread("big"),
        )
        .await
        .unwrap();
    let history = store.list(&"big".into(), None, 100).await.unwrap();
    let sizes: Vec<usize> = history
        .iter()
        .map(|c| serde_json::to_string(&c.state).unwrap().len())
        .collect();
    // The input checkpoint holds 1000 messages; every later one a single one.
    assert!(sizes[5] > 10_000, "{sizes:?}");
    for s in &sizes[..5] {
        assert!(*s < 100, "delta of {s} bytes: {sizes:?}");
    }
    // Resuming the finished thread runs nothing and rebuilds the final state
    // exactly (what a caller needs after a crash right after the last commit).
    let resumed = graph
        .invoke(
            flowtrace_core::RunInput::Resume,
            RunConfig::new().checkpointer(store.clone()).thread("big"),
        )
        .await
        .unwrap();
    assert_eq!(resumed.state.messages.len(), 1005);
    assert_eq!(resumed.state.messages[1004], "message 4");
    // Nothing ran: the summary covers this run only.
    assert_eq!(resumed.summary.node_executions, 0);
}

#[tokio::test]
async fn a_failed_run_resumes_without_rerunning_committed_steps() {
    let c = counters();
    let fail_once = Arc::new(AtomicUsize::new(0));
    let f = fail_once.clone();
    let graph = GraphBuilder::<Ledger>::new("crashy")
        .add_node("intake", counted("intake", c.a.clone()))
        .add_node("billing_approval", counted("billing_approval", c.b.clone()))
        .add_node(
            "charge",
            node_fn(move |_s, _ctx| {
                let f = f.clone();
                async move {
                    if f.fetch_add(1, Ordering::SeqCst) == 0 {
                        return Err(NodeError::permanent("card processor down"));
                    }
                    Ok(log("charge").into())
                }
            }),
        )
        .set_entry("intake")
        .add_edge("intake", "billing_approval")
        .add_edge("billing_approval", "charge")
        .set_finish("charge")
        .compile()
        .unwrap();
    let store = Arc::new(MemoryCheckpointer::new());
    let failed = graph
        .invoke(Ledger::default(), durable(store.clone(), "crash"))
        .await
        .unwrap_err();
    assert!(matches!(failed.error, Error::Node { .. }));
    let latest = store.get(&"crash".into(), None).await.unwrap().unwrap();
    // The thread is marked failed, with the failing task's error.
    assert_eq!(latest.status, ThreadStatus::Failed);
    assert_eq!(latest.frontier[0].node, "charge");
    let error = latest.error.as_ref().unwrap();
    assert_eq!(error.node.as_ref().unwrap(), "charge");
    assert_eq!(error.kind, "node");
    assert!(error.message.contains("card processor down"), "{error:?}");

    let sink = MemorySink::new();
    let out = graph
        .invoke(
            flowtrace_core::RunInput::Resume,
            durable(store.clone(), "crash").sink(sink.clone()),
        )
        .await
        .unwrap();
    assert_eq!(out.state.log, ["intake", "billing_approval", "charge"]);
    assert_eq!(c.a.load(Ordering::SeqCst), 1, "intake ran once");
    assert_eq!(c.b.load(Ordering::SeqCst), 1, "billing_approval ran once");
    assert_eq!(out.summary.status, RunStatus::Succeeded);
    // The summary covers this run: only the failed task ran again.
    let nodes: Vec<&str> = out.summary.steps.iter().map(|s| s.node.as_str()).collect();
    assert_eq!(nodes, ["charge"]);
    let ids: Vec<u64> = out.summary.steps.iter().map(|s| s.step_id.0).collect();
    assert_eq!(ids, [4], "step numbering continues after the history");
    assert!(sink.kinds().contains(&"resume"));
}

#[tokio::test]
async fn static_interrupt_before_then_approve() {
    let c = counters();
    let graph = chain(&c)
        .interrupt_before(["billing_approval"])
        .compile()
        .unwrap();
    let store = Arc::new(MemoryCheckpointer::new());
    let sink = MemorySink::new();
    let out = graph
        .invoke(
            Ledger::default(),
            durable(store.clone(), "t").sink(sink.clone()),
        )
        .await
        .unwrap();
    assert_eq!(out.summary.status, RunStatus::Interrupted);
    let interrupt = out.interrupt().cloned().unwrap();
    assert_eq!(interrupt.node, "billing_approval");
    assert_eq!(interrupt.when, InterruptWhen::Before);
    assert_eq!(c.b.load(Ordering::SeqCst), 0);
    assert!(sink.kinds().contains(&"interrupt"));
    let latest = store.get(&"t".into(), None).await.unwrap().unwrap();
    assert_eq!(latest.status, ThreadStatus::Interrupted);
    assert_eq!(latest.interrupts[0].id, interrupt.id);

    // No decision, a stale decision, then the right one.
    let err = graph
        .invoke(
            flowtrace_core::RunInput::Resume,
            durable(store.clone(), "t"),
        )
        .await
        .unwrap_err();
    assert_error!(err.error, Error::DecisionRequired { .. });
    let err = graph
        .invoke(
            Command::approve("nope", json!(null)),
            durable(store.clone(), "t"),
        )
        .await
        .unwrap_err();
    assert_error!(err.error, Error::StaleInterrupt { .. });

    let out = graph
        .invoke(
            Command::approve(interrupt.id.clone(), json!({"ok": true})).by("alice"),
            durable(store.clone(), "t"),
        )
        .await
        .unwrap();
    assert_eq!(out.summary.status, RunStatus::Succeeded);
    assert_eq!(out.state.log, ["intake", "billing_approval", "charge"]);
    assert_eq!(c.a.load(Ordering::SeqCst), 1);
    assert_eq!(c.b.load(Ordering::SeqCst), 1);

    // The approval is kept with the checkpoint it produced.
    let history = store.list(&"t".into(), None, 100).await.unwrap();
    let approvals: Vec<_> = history.iter().flat_map(|c| c.approvals.clone()).collect();
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].decided_by, "alice");
    assert_eq!(approvals[0].decision, DecisionKind::Approve);
    assert_eq!(approvals[0].interrupt_id, interrupt.id);

    // A finished thread takes no more decisions.
    let err = graph
        .invoke(
            Command::approve(interrupt.id, json!(null)),
            durable(store.clone(), "t"),
        )
        .await
        .unwrap_err();
    assert_error!(err.error, Error::NotInterrupted { .. });
}

#[tokio::test]
async fn interrupt_after_set_per_run_and_reject_ends_the_run() {
    let c = counters();
    let graph = chain(&c).compile().unwrap();
    let store = Arc::new(MemoryCheckpointer::new());
    let out = graph
        .invoke(
            Ledger::default(),
            durable(store.clone(), "t").interrupt_after(["billing_approval"]),
        )
        .await
        .unwrap();
    let interrupt = out.interrupt().cloned().unwrap();
    assert_eq!(interrupt.when, InterruptWhen::After);
    assert_eq!(c.b.load(Ordering::SeqCst), 1);
    assert_eq!(c.c.load(Ordering::SeqCst), 0);
    let out = graph
        .invoke(Command::reject(interrupt.id), durable(store.clone(), "t"))
        .await
        .unwrap();
    assert_eq!(out.summary.status, RunStatus::Succeeded);
    assert_eq!(out.state.log, ["intake", "billing_approval"]);
    assert_eq!(c.c.load(Ordering::SeqCst), 0, "charge never ran");
}

#[tokio::test]
async fn reject_to_routes_elsewhere_and_update_edits_the_state() {
    let c = counters();
    let refunds = Arc::new(AtomicUsize::new(0));
    let graph = chain(&c)
        .add_node("notify", counted("notify", refunds.clone()))
        .add_edge("notify", END)
        .add_dispatch("intake", "notify")
        .interrupt_before(["billing_approval"])
        .compile()
        .unwrap();
    let store = Arc::new(MemoryCheckpointer::new());
    let out = graph
        .invoke(Ledger::default(), durable(store.clone(), "r"))
        .await
        .unwrap();
    let id = out.interrupt().cloned().unwrap().id;
    let out = graph
        .invoke(
            Command::reject_to(id, "notify").by("bob"),
            durable(store.clone(), "r"),
        )
        .await
        .unwrap();
    assert_eq!(out.state.log, ["intake", "notify"]);
    assert_eq!(c.b.load(Ordering::SeqCst), 0);

    let out = graph
        .invoke(Ledger::default(), durable(store.clone(), "u"))
        .await
        .unwrap();
    let id = out.interrupt().cloned().unwrap().id;
    let out = graph
        .invoke(
            Command::update(
                id,
                Entry {
                    amount: Some(250),
                    log: vec!["edited by a human".into()],
                    ..Entry::default()
                },
            ),
            durable(store.clone(), "u"),
        )
        .await
        .unwrap();
    assert_eq!(out.state.amount, 250);
    assert_eq!(
        out.state.log,
        ["intake", "edited by a human", "billing_approval", "charge"]
    );
}

#[tokio::test]
async fn dynamic_interrupt_returns_the_human_answer_and_keeps_sibling_results() {
    let sibling_runs = Arc::new(AtomicUsize::new(0));
    let approver_runs = Arc::new(AtomicUsize::new(0));
    let s = sibling_runs.clone();
    let a = approver_runs.clone();
    let graph = GraphBuilder::<Ledger>::new("refund")
        .add_node(
            "start",
            node_fn(|_s, _ctx| async { Ok(NodeOutput::none()) }),
        )
        .add_node(
            "sales_discount",
            node_fn(move |_s, ctx: NodeContext| {
                let a = a.clone();
                async move {
                    a.fetch_add(1, Ordering::SeqCst);
                    let answer = ctx.interrupt(json!({"question": "discount 20%?"}))?;
                    Ok(Entry {
                        approved: Some(answer),
                        ..log("discount decided")
                    }
                    .into())
                }
            }),
        )
        .add_node(
            "lookup",
            node_fn(move |_s, _ctx| {
                let s = s.clone();
                async move {
                    s.fetch_add(1, Ordering::SeqCst);
                    Ok(log("looked up").into())
                }
            }),
        )
        .add_node("done", node_fn(|_s, _ctx| async { Ok(log("done").into()) }))
        .set_entry("start")
        .add_edge("start", "sales_discount")
        .add_edge("start", "lookup")
        .add_edge("sales_discount", "done")
        .add_edge("lookup", "done")
        .set_finish("done")
        .compile()
        .unwrap();
    let store = Arc::new(MemoryCheckpointer::new());
    let cfg = || durable(store.clone(), "d").parallel(4);
    let out = graph.invoke(Ledger::default(), cfg()).await.unwrap();
    let interrupt = out.interrupt().cloned().unwrap();
    assert_eq!(interrupt.when, InterruptWhen::During);
    assert_eq!(interrupt.payload, json!({"question": "discount 20%?"}));
    assert_eq!(sibling_runs.load(Ordering::SeqCst), 1);

    let out = graph
        .invoke(
            Command::approve(interrupt.id, json!({"percent": 15})),
            cfg(),
        )
        .await
        .unwrap();
    assert_eq!(out.summary.status, RunStatus::Succeeded);
    assert_eq!(out.state.approved, Some(json!({"percent": 15})));
    assert_eq!(
        sibling_runs.load(Ordering::SeqCst),
        1,
        "the sibling's saved result was replayed"
    );
    assert_eq!(
        approver_runs.load(Ordering::SeqCst),
        2,
        "the interrupted node runs again"
    );
    // Merge order is graph order, whichever finished first.
    assert_eq!(out.state.log, ["discount decided", "looked up", "done"]);
}

#[tokio::test]
async fn halt_stops_at_a_safe_point_and_the_thread_resumes() {
    let switch = HaltSwitch::new();
    let sw = switch.clone();
    let c = counters();
    let graph = GraphBuilder::<Ledger>::new("halt")
        .add_node(
            "intake",
            node_fn(move |_s, _ctx| {
                let sw = sw.clone();
                async move {
                    sw.halt();
                    Ok(log("intake").into())
                }
            }),
        )
        .add_node("billing_approval", counted("billing_approval", c.b.clone()))
        .set_entry("intake")
        .add_edge("intake", "billing_approval")
        .set_finish("billing_approval")
        .compile()
        .unwrap();
    let store = Arc::new(MemoryCheckpointer::new());
    let sink = MemorySink::new();
    let out = graph
        .invoke(
            Ledger::default(),
            durable(store.clone(), "h")
                .halt_signal(Arc::new(switch))
                .sink(sink.clone()),
        )
        .await
        .unwrap();
    assert_eq!(out.summary.status, RunStatus::Halted);
    assert_eq!(c.b.load(Ordering::SeqCst), 0);
    assert_eq!(
        store.get(&"h".into(), None).await.unwrap().unwrap().status,
        ThreadStatus::Halted
    );
    assert!(sink.events().iter().any(|e| matches!(
        &e.kind,
        flowtrace_core::EventKind::Log { message, .. } if message.contains("halt")
    )));
    // Without the switch, the thread continues where it stopped.
    let out = graph
        .invoke(
            flowtrace_core::RunInput::Resume,
            durable(store.clone(), "h"),
        )
        .await
        .unwrap();
    assert_eq!(out.state.log, ["intake", "billing_approval"]);
    assert_eq!(c.b.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_router_can_see_the_halt_and_route_to_clean_up() {
    let switch = HaltSwitch::new();
    let sw = switch.clone();
    let graph: CompiledGraph<Ledger> = GraphBuilder::new("cleanup")
        .add_node(
            "work",
            node_fn(move |_s, _ctx| {
                let sw = sw.clone();
                async move {
                    sw.halt();
                    Ok(log("work").into())
                }
            }),
        )
        .add_node("more", node_fn(|_s, _ctx| async { Ok(log("more").into()) }))
        .add_node(
            "cleanup",
            node_fn(|_s, _ctx| async { Ok(log("cleanup").into()) }),
        )
        .set_entry("work")
        .add_conditional_edges_with_context(
            "work",
            |_s: &Ledger, r: &flowtrace_core::graph::RouteContext<'_>| {
                if r.halt_requested() { "halt" } else { "go" }
            },
            [("halt", "cleanup"), ("go", "more")],
        )
        .set_finish("more")
        .set_finish("cleanup")
        .compile()
        .unwrap();
    let out = graph
        .invoke(
            Ledger::default(),
            RunConfig::new().halt_signal(Arc::new(switch)),
        )
        .await
        .unwrap();
    assert_eq!(out.state.log, ["work", "cleanup"]);
    assert_eq!(out.summary.status, RunStatus::Halted);
}

#[tokio::test]
async fn durability_modes_write_the_same_history() {
    for mode in [Durability::Sync, Durability::Async, Durability::Exit] {
        let c = counters();
        let graph = chain(&c).compile().unwrap();
        let store = Arc::new(MemoryCheckpointer::new());
        graph
            .invoke(
                Ledger::default(),
                durable(store.clone(), "m").durability(mode),
            )
            .await
            .unwrap();
        let history = store.list(&"m".into(), None, 100).await.unwrap();
        assert_eq!(history.len(), 4, "{mode:?}");
        assert_eq!(history[0].status, ThreadStatus::Completed, "{mode:?}");
    }
}

#[tokio::test]
async fn starting_an_existing_thread_is_refused() {
    let c = counters();
    let graph = chain(&c).compile().unwrap();
    let store = Arc::new(MemoryCheckpointer::new());
    graph
        .invoke(Ledger::default(), durable(store.clone(), "x"))
        .await
        .unwrap();
    let err = graph
        .invoke(
            Ledger::default(),
            durable(store.clone(), "x").finished_thread(FinishedThread::Refuse),
        )
        .await
        .unwrap_err();
    assert_error!(err.error, Error::ThreadExists { .. });
    let err = graph
        .invoke(
            flowtrace_core::RunInput::Resume,
            durable(store.clone(), "missing"),
        )
        .await
        .unwrap_err();
    assert_error!(err.error, Error::ThreadNotFound { .. });
}

#[tokio::test]
async fn idempotency_keys_are_stable_across_attempts_and_resumes() {
    let keys = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let k = keys.clone();
    let attempts = Arc::new(AtomicUsize::new(0));
    let at = attempts.clone();
    let graph = GraphBuilder::<Ledger>::new("keys")
        .add_node(
            "pay",
            node_fn(move |_s, ctx: NodeContext| {
                let k = k.clone();
                let at = at.clone();
                async move {
                    k.lock().unwrap().push(ctx.idempotency_key());
                    if at.fetch_add(1, Ordering::SeqCst) < 2 {
                        return Err(NodeError::permanent("gateway timeout"));
                    }
                    Ok(log("paid").into())
                }
            }),
        )
        .set_entry("pay")
        .set_finish("pay")
        .compile()
        .unwrap();
    let store = Arc::new(MemoryCheckpointer::new());
    assert!(
        graph
            .invoke(Ledger::default(), durable(store.clone(), "pay-1"))
            .await
            .is_err()
    );
    assert!(
        graph
            .invoke(
                flowtrace_core::RunInput::Resume,
                durable(store.clone(), "pay-1")
            )
            .await
            .is_err()
    );
    graph
        .invoke(
            flowtrace_core::RunInput::Resume,
            durable(store.clone(), "pay-1"),
        )
        .await
        .unwrap();
    let keys = keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k == &keys[0]), "{keys:?}");
    assert_eq!(keys[0], "pay-1/0/pay/0");
}

#[tokio::test]
async fn time_travel_reads_past_states_and_forks_without_touching_the_original() {
    let c = counters();
    let graph = chain(&c).compile().unwrap();
    let store = Arc::new(MemoryCheckpointer::new());
    graph
        .invoke(Ledger::default(), durable(store.clone(), "orig"))
        .await
        .unwrap();
    let orig: flowtrace_core::ThreadId = "orig".into();

    // The state after each super-step.
    let at1 = graph
        .get_state(store.as_ref(), &orig, Some(1))
        .await
        .map(|snapshot| snapshot.values)
        .unwrap();
    assert_eq!(at1.log, ["intake"]);
    let latest = graph
        .get_state(store.as_ref(), &orig, None)
        .await
        .map(|snapshot| snapshot.values)
        .unwrap();
    assert_eq!(latest.log, ["intake", "billing_approval", "charge"]);
    assert!(
        graph
            .get_state(store.as_ref(), &orig, Some(99))
            .await
            .map(|snapshot| snapshot.values)
            .is_err()
    );

    // Fork after "intake", with an edit, and run the fork forward.
    let before = store.list(&orig, None, 100).await.unwrap();
    let first = graph
        .fork(
            store.as_ref(),
            &orig,
            1,
            "fork",
            Some(log("corrected by ops")),
            None,
        )
        .await
        .unwrap();
    assert_eq!(first.forked_from, Some((orig.clone(), 1)));
    let out = graph
        .invoke(
            flowtrace_core::RunInput::Resume,
            durable(store.clone(), "fork"),
        )
        .await
        .unwrap();
    assert_eq!(
        out.state.log,
        ["intake", "corrected by ops", "billing_approval", "charge"]
    );
    assert_eq!(
        c.a.load(Ordering::SeqCst),
        1,
        "the fork does not re-run intake"
    );
    assert_eq!(c.b.load(Ordering::SeqCst), 2);

    // The original thread is untouched.
    let after = store.list(&orig, None, 100).await.unwrap();
    assert_eq!(before, after);
    // A fork onto an existing thread is refused by fencing.
    let err = graph
        .fork(store.as_ref(), &orig, 1, "fork", None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Checkpoint(_)), "{err}");
}

#[tokio::test]
async fn interrupt_deadlines_apply_the_default_decision() {
    use flowtrace_core::checkpoint::DefaultDecision;
    use std::time::Duration;

    // Not yet due: a decision is still required.
    let c = counters();
    let graph = chain(&c)
        .interrupt_before(["billing_approval"])
        .compile()
        .unwrap();
    let store = Arc::new(MemoryCheckpointer::new());
    let cfg = |t: &str, d: DefaultDecision, after: Duration| {
        durable(store.clone(), t).interrupt_deadline(after, d)
    };
    let out = graph
        .invoke(
            Ledger::default(),
            cfg("later", DefaultDecision::Reject, Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let i = out.interrupt().cloned().unwrap();
    assert!(i.deadline.is_some());
    let err = graph
        .invoke(
            flowtrace_core::RunInput::Resume,
            durable(store.clone(), "later"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err.error, Error::DecisionRequired { .. }));

    // Due immediately: approve by default.
    let out = graph
        .invoke(
            Ledger::default(),
            cfg(
                "approve",
                DefaultDecision::Approve(json!({"auto": true})),
                Duration::ZERO,
            ),
        )
        .await
        .unwrap();
    assert_eq!(out.summary.status, RunStatus::Interrupted);
    let out = graph
        .invoke(
            flowtrace_core::RunInput::Resume,
            durable(store.clone(), "approve"),
        )
        .await
        .unwrap();
    assert_eq!(out.state.log, ["intake", "billing_approval", "charge"]);
    let approvals: Vec<_> = store
        .list(&"approve".into(), None, 100)
        .await
        .unwrap()
        .into_iter()
        .flat_map(|c| c.approvals)
        .collect();
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].decided_by, "deadline");
    assert_eq!(approvals[0].decision, DecisionKind::Approve);

    // Escalate to a named node.
    let sup = Arc::new(AtomicUsize::new(0));
    let graph = chain(&counters())
        .add_node("supervisor", counted("supervisor", sup.clone()))
        .add_edge("supervisor", END)
        .add_dispatch("intake", "supervisor")
        .interrupt_before(["billing_approval"])
        .compile()
        .unwrap();
    graph
        .invoke(
            Ledger::default(),
            cfg(
                "esc",
                DefaultDecision::Escalate("supervisor".into()),
                Duration::ZERO,
            ),
        )
        .await
        .unwrap();
    let sink = MemorySink::new();
    let out = graph
        .invoke(
            flowtrace_core::RunInput::Resume,
            durable(store.clone(), "esc").sink(sink.clone()),
        )
        .await
        .unwrap();
    assert_eq!(out.state.log, ["intake", "supervisor"]);
    assert_eq!(sup.load(Ordering::SeqCst), 1);
    let resume = sink
        .events()
        .into_iter()
        .find(|e| e.kind.name() == "resume")
        .unwrap();
    match resume.kind {
        flowtrace_core::EventKind::Resume { payload } => {
            assert_eq!(payload["decision"], "escalate");
            assert_eq!(payload["decided_by"], "deadline");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_node_released_from_interrupt_before_sees_the_approval_payload() {
    let graph = GraphBuilder::<Ledger>::new("limit")
        .add_node(
            "billing_approval",
            node_fn(|_s, ctx: NodeContext| async move {
                Ok(Entry {
                    approved: ctx.approval().cloned(),
                    ..log("charged")
                }
                .into())
            }),
        )
        .set_entry("billing_approval")
        .set_finish("billing_approval")
        .interrupt_before(["billing_approval"])
        .compile()
        .unwrap();
    let store = Arc::new(MemoryCheckpointer::new());
    let out = graph
        .invoke(Ledger::default(), durable(store.clone(), "a"))
        .await
        .unwrap();
    let id = out.interrupt().cloned().unwrap().id;
    let out = graph
        .invoke(
            Command::approve(id, json!({"limit": 500})),
            durable(store.clone(), "a"),
        )
        .await
        .unwrap();
    assert_eq!(out.state.approved, Some(json!({"limit": 500})));
}

#[tokio::test]
async fn resumes_can_be_watched_live() {
    use futures::StreamExt;

    let c = counters();
    let graph = chain(&c)
        .interrupt_before(["billing_approval"])
        .compile()
        .unwrap();
    let store = Arc::new(MemoryCheckpointer::new());
    let paused = graph
        .invoke(Ledger::default(), durable(store.clone(), "live"))
        .await
        .unwrap();
    let id = paused.interrupt().cloned().unwrap().id;

    // The decision's run, watched through its handle as it goes.
    let mut handle = graph.stream(
        Command::approve(id, json!({"ok": true})).by("bob"),
        durable(store.clone(), "live"),
    );
    let kinds: Vec<&'static str> = handle
        .events()
        .filter_map(|item| async move {
            match item {
                flowtrace_core::trace::StreamItem::Event(e) => Some(e.kind.name()),
                flowtrace_core::trace::StreamItem::Lagged { .. } => None,
            }
        })
        .collect()
        .await;
    let out = handle.wait().await.unwrap();
    assert_eq!(out.summary.status, RunStatus::Succeeded);
    assert_eq!(out.state.log, ["intake", "billing_approval", "charge"]);
    assert_eq!(c.a.load(Ordering::SeqCst), 1, "intake is not run again");
    assert_eq!(kinds.first(), Some(&"run.started"));
    assert!(kinds.contains(&"resume"), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| **k == "step.finished").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"run.finished"));

    // A plain resume of a halted-or-failed thread works the same way; here
    // the thread is finished, so it returns its final state at once.
    let again = graph
        .stream(
            flowtrace_core::RunInput::Resume,
            durable(store.clone(), "live"),
        )
        .wait()
        .await
        .unwrap();
    assert_eq!(again.state.log, ["intake", "billing_approval", "charge"]);
    assert_eq!(c.c.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn periodic_snapshots_keep_the_resume_chain_short() {
    let mut b = GraphBuilder::<Ledger>::new("long");
    for i in 0..40 {
        b = b.add_node(
            format!("n{i}"),
            node_fn(move |_s, _ctx| async move { Ok(log(&format!("n{i}")).into()) }),
        );
        if i > 0 {
            b = b.add_edge(format!("n{}", i - 1), format!("n{i}"));
        }
    }
    let graph = b.set_entry("n0").set_finish("n39").compile().unwrap();
    let store = Arc::new(MemoryCheckpointer::new());
    let cfg = || {
        durable(store.clone(), "snap")
            .snapshots(flowtrace_core::exec::SnapshotPolicy::default().every(8))
    };
    let out = graph.invoke(Ledger::default(), cfg()).await.unwrap();
    assert_eq!(out.state.log.len(), 40);
    let history = store.list(&"snap".into(), None, 100).await.unwrap();
    let full: Vec<u64> = history
        .iter()
        .filter(|c| matches!(c.state, StateRecord::Full(_)))
        .map(|c| c.seq)
        .collect();
    // Checkpoint 0 holds the input; then every 8th checkpoint is a snapshot.
    assert_eq!(full, [40, 32, 24, 16, 8, 0]);
    let latest = history[0].seq;
    let chain = store.chain(&"snap".into(), latest).await.unwrap();
    assert_eq!(chain.len(), 1, "the latest checkpoint is a snapshot");
    let chain = store.chain(&"snap".into(), 37).await.unwrap();
    assert_eq!(chain.first().unwrap().seq, 32);
    // Every checkpoint still rebuilds to the same state as replaying deltas.
    for seq in [5, 8, 13, 39] {
        let s = graph
            .get_state(store.as_ref(), &"snap".into(), Some(seq))
            .await
            .map(|snapshot| snapshot.values)
            .unwrap();
        assert_eq!(s.log.len() as u64, seq, "state at {seq}");
    }
    // Size-based snapshots: a tiny byte budget makes every checkpoint full.
    let store2 = Arc::new(MemoryCheckpointer::new());
    graph
        .invoke(
            Ledger::default(),
            durable(store2.clone(), "bytes")
                .snapshots(flowtrace_core::exec::SnapshotPolicy::default().max_delta_bytes(1)),
        )
        .await
        .unwrap();
    let history = store2.list(&"bytes".into(), None, 100).await.unwrap();
    assert!(
        history
            .iter()
            .all(|c| matches!(c.state, StateRecord::Full(_)))
    );
}
