//! Integration tests of the graph builder and the super-step executor:
//! linear chains, conditional edges and skips, fan-out/fan-in, map-reduce
//! dispatch, loops and the recursion limit, compile errors, subgraphs,
//! panics, and a property test of parallel/sequential equivalence.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use flowtrace_core::trace::MemorySink;
use flowtrace_core::{
    Dispatch, END, Error, EventKind, GraphBuilder, GraphProblem, Node, NodeConfig, NodeContext,
    NodeError, NodeOutput, NodeResult, RetryPolicy, RunConfig, RunStatus, State, StepId,
    StepStatus, TraceEvent, node_fn, reducer,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use crate::support::run_with_sink;

// ---------------------------------------------------------------------------
// Shared state types and helpers
// ---------------------------------------------------------------------------

/// A list that branches append to, plus a last-writer-wins field.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct ListState {
    items: Vec<String>,
    last: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ListUpdate {
    items: Vec<String>,
    last: Option<String>,
}

impl ListUpdate {
    fn item(name: impl Into<String>) -> Self {
        let name = name.into();
        Self {
            items: vec![name.clone()],
            last: Some(name),
        }
    }
}

impl State for ListState {
    type Update = ListUpdate;
    fn apply(&mut self, u: ListUpdate) {
        reducer::append(&mut self.items, u.items);
        reducer::replace(&mut self.last, u.last);
    }
}

/// Tracks how many node bodies run at the same time, and in which order they
/// complete.
#[derive(Default)]
struct Tracker {
    current: AtomicUsize,
    high_water: AtomicUsize,
    slept_ms: AtomicU64,
    completions: Mutex<Vec<String>>,
}

impl Tracker {
    fn enter(&self) {
        let now = self.current.fetch_add(1, Ordering::SeqCst) + 1;
        self.high_water.fetch_max(now, Ordering::SeqCst);
    }

    fn exit(&self, name: &str, ms: u64) {
        self.current.fetch_sub(1, Ordering::SeqCst);
        self.slept_ms.fetch_add(ms, Ordering::SeqCst);
        self.completions.lock().unwrap().push(name.to_string());
    }

    fn high_water(&self) -> usize {
        self.high_water.load(Ordering::SeqCst)
    }

    fn reset(&self) {
        self.current.store(0, Ordering::SeqCst);
        self.high_water.store(0, Ordering::SeqCst);
        self.slept_ms.store(0, Ordering::SeqCst);
        self.completions.lock().unwrap().clear();
    }
}

/// A branch that sleeps a random 1..=`max_ms` milliseconds (real clock) and
/// appends its name.
fn sleepy_branch(name: &'static str, tracker: Arc<Tracker>, max_ms: u64) -> impl Node<ListState> {
    node_fn(move |_s: Arc<ListState>, _ctx: NodeContext| {
        let tracker = tracker.clone();
        let ms = rand::random_range(1..=max_ms);
        async move {
            tracker.enter();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            tracker.exit(name, ms);
            Ok(NodeOutput::update(ListUpdate::item(name)))
        }
    })
}

/// A node that appends `name` and does nothing else.
fn append_node(name: &'static str) -> impl Node<ListState> {
    node_fn(move |_s: Arc<ListState>, _ctx: NodeContext| async move {
        Ok(NodeOutput::update(ListUpdate::item(name)))
    })
}

fn step_nodes(summary: &flowtrace_core::RunSummary) -> Vec<(&str, StepStatus)> {
    summary
        .steps
        .iter()
        .map(|s| (s.node.as_str(), s.status))
        .collect()
}

fn events_of<'a>(events: &'a [TraceEvent], kind: &str) -> Vec<&'a TraceEvent> {
    events.iter().filter(|e| e.kind.name() == kind).collect()
}

fn node_of(e: &TraceEvent) -> Option<&str> {
    e.node.as_ref().map(|n| n.as_str())
}

// ---------------------------------------------------------------------------
// 1. Linear chain with closures and a struct node
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Doc {
    text: String,
    words: usize,
    trail: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct DocUpdate {
    text: Option<String>,
    words: Option<usize>,
    trail: Vec<String>,
}

impl State for Doc {
    type Update = DocUpdate;
    fn apply(&mut self, u: DocUpdate) {
        reducer::replace(&mut self.text, u.text);
        reducer::replace(&mut self.words, u.words);
        reducer::append(&mut self.trail, u.trail);
    }
}

/// A node written as a struct: counts the words of the text it reads.
struct WordCounter {
    calls: Arc<AtomicUsize>,
}

#[async_trait]
impl Node<Doc> for WordCounter {
    async fn run(&self, state: Arc<Doc>, ctx: NodeContext) -> NodeResult<DocUpdate> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(NodeOutput::update(DocUpdate {
            words: Some(state.text.split_whitespace().count()),
            trail: vec![format!(
                "{}@{}#{}",
                ctx.node_id(),
                ctx.step_id(),
                ctx.attempt()
            )],
            ..DocUpdate::default()
        }))
    }
}

/// A node named `name` that sets the text to `text`.
fn text_node(name: &'static str, text: &'static str) -> impl Node<Doc> {
    node_fn(move |_s: Arc<Doc>, _ctx: NodeContext| async move {
        Ok(NodeOutput::update(DocUpdate {
            text: Some(text.into()),
            trail: vec![name.into()],
            ..DocUpdate::default()
        }))
    })
}

#[tokio::test]
async fn linear_chain_with_closures_and_struct_node() {
    let calls = Arc::new(AtomicUsize::new(0));
    let graph = GraphBuilder::<Doc>::new("linear")
        .add_node("fetch", text_node("fetch", "the quick brown fox jumps"))
        .add_node(
            "count",
            WordCounter {
                calls: calls.clone(),
            },
        )
        .add_node(
            "report",
            node_fn(|s: Arc<Doc>, _ctx: NodeContext| async move {
                Ok(NodeOutput::update(DocUpdate {
                    trail: vec![format!("report {} words", s.words)],
                    ..DocUpdate::default()
                }))
            }),
        )
        .set_entry("fetch")
        .add_edge("fetch", "count")
        .add_edge("count", "report")
        .set_finish("report")
        .compile()
        .unwrap();

    assert_eq!(graph.name(), "linear");
    assert_eq!(
        graph.node_ids().map(|n| n.as_str()).collect::<Vec<_>>(),
        ["fetch", "count", "report"]
    );

    let out = graph
        .invoke(Doc::default(), RunConfig::new())
        .await
        .unwrap();

    assert_eq!(out.state.text, "the quick brown fox jumps");
    assert_eq!(out.state.words, 5);
    assert_eq!(out.state.trail, ["fetch", "count@2#1", "report 5 words"]);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let s = &out.summary;
    assert_eq!(s.graph, "linear");
    assert_eq!(s.status, RunStatus::Succeeded);
    assert!(s.error.is_none());
    assert_eq!(s.node_executions, 3);
    assert_eq!(
        step_nodes(s),
        [
            ("fetch", StepStatus::Succeeded),
            ("count", StepStatus::Succeeded),
            ("report", StepStatus::Succeeded)
        ]
    );
    assert_eq!(
        s.steps.iter().map(|r| r.step_id).collect::<Vec<_>>(),
        [StepId(1), StepId(2), StepId(3)]
    );
    for r in &s.steps {
        assert_eq!(r.attempts, 1, "{r:?}");
        assert!(r.parent_step_id.is_none());
        assert!(r.branch.is_none());
        assert!(r.input.is_none());
        assert!(r.error.is_none());
    }
    assert_eq!(s.count(StepStatus::Skipped), 0);

    // The graph is reusable: a second run gives the same result.
    let again = graph
        .invoke(Doc::default(), RunConfig::new())
        .await
        .unwrap();
    assert_eq!(again.state.trail, out.state.trail);
    assert_ne!(again.summary.run_id, out.summary.run_id);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------
// 2./3. Conditional edges
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Ticket {
    text: String,
    kind: String,
    trail: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TicketUpdate {
    kind: Option<String>,
    trail: Vec<String>,
}

impl State for Ticket {
    type Update = TicketUpdate;
    fn apply(&mut self, u: TicketUpdate) {
        reducer::replace(&mut self.kind, u.kind);
        reducer::append(&mut self.trail, u.trail);
    }
}

fn trail_node(name: &'static str) -> impl Node<Ticket> {
    node_fn(move |_s: Arc<Ticket>, _ctx: NodeContext| async move {
        Ok(NodeOutput::update(TicketUpdate {
            kind: None,
            trail: vec![name.to_string()],
        }))
    })
}

/// classify -(router)-> billing_1 -> billing_2 -> join
///                   \-> tech_1 -> tech_2 -------/
/// The router reads `kind`, which `classify` itself writes: routers see the
/// merged state of their node's super-step.
fn ticket_graph(join_runs: Arc<AtomicUsize>) -> flowtrace_core::CompiledGraph<Ticket> {
    GraphBuilder::<Ticket>::new("tickets")
        .add_node(
            "classify",
            node_fn(|s: Arc<Ticket>, _ctx: NodeContext| async move {
                let kind = if s.text.contains("invoice") {
                    "billing"
                } else {
                    "tech"
                };
                Ok(NodeOutput::update(TicketUpdate {
                    kind: Some(kind.to_string()),
                    trail: vec!["classify".into()],
                }))
            }),
        )
        .add_node("billing_1", trail_node("billing_1"))
        .add_node("billing_2", trail_node("billing_2"))
        .add_node("tech_1", trail_node("tech_1"))
        .add_node("tech_2", trail_node("tech_2"))
        .add_node(
            "join",
            node_fn(move |_s: Arc<Ticket>, _ctx: NodeContext| {
                join_runs.fetch_add(1, Ordering::SeqCst);
                async move {
                    Ok(NodeOutput::update(TicketUpdate {
                        kind: None,
                        trail: vec!["join".into()],
                    }))
                }
            }),
        )
        .set_entry("classify")
        .add_conditional_edges(
            "classify",
            |s: &Ticket| s.kind.clone(),
            [("billing", "billing_1"), ("tech", "tech_1")],
        )
        .add_edge("billing_1", "billing_2")
        .add_edge("billing_2", "join")
        .add_edge("tech_1", "tech_2")
        .add_edge("tech_2", "join")
        .set_finish("join")
        .compile()
        .unwrap()
}

#[tokio::test]
async fn conditional_edges_run_only_the_chosen_branch_and_skip_the_other() {
    let join_runs = Arc::new(AtomicUsize::new(0));
    let graph = ticket_graph(join_runs.clone());

    for (text, chosen, other) in [
        ("my invoice is wrong", "billing", "tech"),
        ("the app crashes", "tech", "billing"),
    ] {
        join_runs.store(0, Ordering::SeqCst);
        let sink = MemorySink::new();
        let input = Ticket {
            text: text.into(),
            ..Ticket::default()
        };
        let out = graph
            .invoke(input, RunConfig::new().sink(sink.clone()))
            .await
            .unwrap();

        let c1 = format!("{chosen}_1");
        let c2 = format!("{chosen}_2");
        let o1 = format!("{other}_1");
        let o2 = format!("{other}_2");

        // Only the chosen branch ran; the join ran once.
        assert_eq!(out.state.kind, chosen);
        assert_eq!(
            out.state.trail,
            ["classify", c1.as_str(), c2.as_str(), "join"]
        );
        assert_eq!(join_runs.load(Ordering::SeqCst), 1);

        // Summary: 4 executions, the other branch's 2 nodes skipped.
        let s = &out.summary;
        assert_eq!(s.status, RunStatus::Succeeded);
        assert_eq!(s.node_executions, 4);
        assert_eq!(s.count(StepStatus::Skipped), 2);
        assert_eq!(s.count(StepStatus::Succeeded), 4);
        for skipped in [&o1, &o2] {
            let recs: Vec<_> = s.steps_of(skipped).collect();
            assert_eq!(recs.len(), 1, "{skipped}: {recs:?}");
            assert_eq!(recs[0].status, StepStatus::Skipped);
            assert_eq!(recs[0].attempts, 0);
            assert!(recs[0].error.is_some(), "a skip records its reason");
        }
        for ran in ["classify", c1.as_str(), c2.as_str(), "join"] {
            let recs: Vec<_> = s.steps_of(ran).collect();
            assert_eq!(recs.len(), 1, "{ran}");
            assert_eq!(recs[0].status, StepStatus::Succeeded, "{ran}");
        }
        // The direct skip names the chosen branch.
        let direct_reason = s.steps_of(&o1).next().unwrap().error.clone().unwrap();
        assert!(direct_reason.contains(chosen), "{direct_reason}");

        // The routing node's record carries the chosen branch.
        let classify = s.steps_of("classify").next().unwrap();
        assert_eq!(classify.branch.as_deref(), Some(chosen));
        assert!(
            s.steps
                .iter()
                .filter(|r| r.node != "classify")
                .all(|r| r.branch.is_none())
        );

        // Events: one route event, from classify, naming the branch and target.
        let events = sink.events();
        let routes = events_of(&events, "route");
        assert_eq!(routes.len(), 1);
        assert_eq!(node_of(routes[0]), Some("classify"));
        assert_eq!(routes[0].step_id, Some(classify.step_id));
        match &routes[0].kind {
            EventKind::Route { branch, targets } => {
                assert_eq!(branch, chosen);
                assert_eq!(targets, std::slice::from_ref(&c1));
            }
            k => panic!("unexpected kind {k:?}"),
        }

        // step.skipped for both nodes of the other branch (transitively),
        // never step.started for them.
        let skipped = events_of(&events, "step.skipped");
        let mut skipped_nodes: Vec<_> = skipped.iter().filter_map(|e| node_of(e)).collect();
        skipped_nodes.sort_unstable();
        assert_eq!(skipped_nodes, [o1.as_str(), o2.as_str()]);
        for e in &skipped {
            let rec = s.steps_of(node_of(e).unwrap()).next().unwrap();
            assert_eq!(e.step_id, Some(rec.step_id));
            assert!(matches!(e.kind, EventKind::StepSkipped { .. }));
        }
        let started: Vec<_> = events_of(&events, "step.started")
            .into_iter()
            .filter_map(node_of)
            .collect();
        assert_eq!(started, ["classify", c1.as_str(), c2.as_str(), "join"]);

        // Ordering: classify finishes, then routes, then the chosen branch starts.
        let pos = |pred: &dyn Fn(&TraceEvent) -> bool| events.iter().position(pred).unwrap();
        let classify_done =
            pos(&|e| e.kind.name() == "step.finished" && node_of(e) == Some("classify"));
        let route_at = pos(&|e| e.kind.name() == "route");
        let chosen_start =
            pos(&|e| e.kind.name() == "step.started" && node_of(e) == Some(c1.as_str()));
        let join_start = pos(&|e| e.kind.name() == "step.started" && node_of(e) == Some("join"));
        assert!(classify_done < route_at && route_at < chosen_start && chosen_start < join_start);
        assert_eq!(sink.kinds().first(), Some(&"run.started"));
        assert_eq!(sink.kinds().last(), Some(&"run.finished"));
    }
}

#[tokio::test]
async fn router_returning_unknown_label_fails_with_unknown_branch() {
    let graph = GraphBuilder::<Ticket>::new("bad-router")
        .add_node("classify", trail_node("classify"))
        .add_node("a", trail_node("a"))
        .add_node("b", trail_node("b"))
        .set_entry("classify")
        .add_conditional_edges(
            "classify",
            |_s: &Ticket| "zebra",
            [("left", "a"), ("right", "b")],
        )
        .set_finish("a")
        .set_finish("b")
        .compile()
        .unwrap();

    let sink = MemorySink::new();
    let failure = graph
        .invoke(Ticket::default(), RunConfig::new().sink(sink.clone()))
        .await
        .unwrap_err();

    match &failure.error {
        Error::UnknownBranch {
            node,
            branch,
            known,
        } => {
            assert_eq!(node, "classify");
            assert_eq!(branch, "zebra");
            assert_eq!(known, &["left".to_string(), "right".to_string()]);
        }
        e => panic!("expected UnknownBranch, got {e:?}"),
    }
    let msg = failure.error.to_string();
    assert!(
        msg.contains("\"classify\"") && msg.contains("\"zebra\""),
        "{msg}"
    );
    assert_eq!(failure.error.kind(), "unknown_branch");
    assert_eq!(failure.summary.status, RunStatus::Failed);
    // Neither branch ran.
    assert!(
        failure
            .summary
            .steps_of("a")
            .all(|r| r.status != StepStatus::Succeeded)
    );
    assert!(
        failure
            .summary
            .steps_of("b")
            .all(|r| r.status != StepStatus::Succeeded)
    );
    assert!(
        !events_of(&sink.events(), "step.started")
            .iter()
            .any(|e| matches!(node_of(e), Some("a" | "b")))
    );
}

// ---------------------------------------------------------------------------
// 4. Fan-out / fan-in
// ---------------------------------------------------------------------------

/// start -> {gamma, alpha, beta} -> join. Branches are inserted in a
/// non-alphabetical order so "insertion order" differs from name order.
fn fan_graph(
    tracker: Arc<Tracker>,
    join_runs: Arc<AtomicUsize>,
    max_ms: u64,
) -> flowtrace_core::CompiledGraph<ListState> {
    GraphBuilder::<ListState>::new("fan")
        .add_node("start", append_node("start"))
        .add_node("gamma", sleepy_branch("gamma", tracker.clone(), max_ms))
        .add_node("alpha", sleepy_branch("alpha", tracker.clone(), max_ms))
        .add_node("beta", sleepy_branch("beta", tracker, max_ms))
        .add_node(
            "join",
            node_fn(move |s: Arc<ListState>, _ctx: NodeContext| {
                join_runs.fetch_add(1, Ordering::SeqCst);
                // The join must see every branch's update.
                let seen = s.items.len();
                async move {
                    Ok(NodeOutput::update(ListUpdate::item(format!(
                        "join saw {seen}"
                    ))))
                }
            }),
        )
        .set_entry("start")
        // Edges declared in yet another order: it must not matter.
        .add_edge("start", "beta")
        .add_edge("start", "alpha")
        .add_edge("start", "gamma")
        .add_edge("alpha", "join")
        .add_edge("gamma", "join")
        .add_edge("beta", "join")
        .set_finish("join")
        .compile()
        .unwrap()
}

#[tokio::test]
async fn fan_out_fan_in_merges_in_insertion_order_and_joins_once() {
    let tracker = Arc::new(Tracker::default());
    let join_runs = Arc::new(AtomicUsize::new(0));
    let graph = fan_graph(tracker.clone(), join_runs.clone(), 20);
    let expected = ["start", "gamma", "alpha", "beta", "join saw 4"];

    let mut completion_orders = std::collections::HashSet::new();
    let mut total_elapsed = Duration::ZERO;
    let mut total_slept = 0u64;
    for run in 0..20 {
        tracker.reset();
        join_runs.store(0, Ordering::SeqCst);
        let t0 = Instant::now();
        let out = graph
            .invoke(ListState::default(), RunConfig::new().parallel(3))
            .await
            .unwrap();
        total_elapsed += t0.elapsed();
        total_slept += tracker.slept_ms.load(Ordering::SeqCst);

        assert_eq!(out.state.items, expected, "run {run}");
        assert_eq!(out.state.last, "join saw 4", "run {run}");
        assert_eq!(
            join_runs.load(Ordering::SeqCst),
            1,
            "run {run}: join must run exactly once"
        );
        assert_eq!(out.summary.node_executions, 5);
        assert_eq!(out.summary.steps_of("join").count(), 1);
        // The join started after every branch finished.
        let join = out.summary.steps_of("join").next().unwrap();
        assert!(
            out.summary
                .steps
                .iter()
                .filter(|r| ["gamma", "alpha", "beta"].contains(&r.node.as_str()))
                .all(|r| r.step_id < join.step_id)
        );
        // All three branches were in flight together.
        assert_eq!(
            tracker.high_water(),
            3,
            "run {run}: parallel(3) should run 3 branches at once"
        );
        completion_orders.insert(tracker.completions.lock().unwrap().clone());
    }
    // Random sleeps did produce different completion orders, yet the merged
    // list never changed.
    assert!(
        completion_orders.len() > 1,
        "random sleeps should reorder completions: {completion_orders:?}"
    );
    // Concurrency saved time: wall time is well under the sum of all sleeps.
    assert!(
        total_elapsed < Duration::from_millis(total_slept),
        "elapsed {total_elapsed:?} vs slept {total_slept}ms"
    );
}

#[tokio::test]
async fn parallel_one_caps_concurrency_at_one() {
    let tracker = Arc::new(Tracker::default());
    let join_runs = Arc::new(AtomicUsize::new(0));
    let graph = fan_graph(tracker.clone(), join_runs.clone(), 5);
    for config in [RunConfig::new().parallel(1), RunConfig::new()] {
        for _ in 0..5 {
            tracker.reset();
            let out = graph
                .invoke(ListState::default(), config.clone())
                .await
                .unwrap();
            assert_eq!(
                out.state.items,
                ["start", "gamma", "alpha", "beta", "join saw 4"]
            );
            assert_eq!(tracker.high_water(), 1, "{config:?}");
            // Sequential execution completes in insertion order.
            assert_eq!(
                *tracker.completions.lock().unwrap(),
                ["gamma", "alpha", "beta"]
            );
        }
    }
    // parallel(2) caps at 2.
    for _ in 0..5 {
        tracker.reset();
        graph
            .invoke(ListState::default(), RunConfig::new().parallel(2))
            .await
            .unwrap();
        assert_eq!(tracker.high_water(), 2);
    }
}

// ---------------------------------------------------------------------------
// 5. Map-reduce dispatch
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Job {
    id: u32,
    word: String,
}

fn split_node(n: u32, target: &'static str) -> impl Node<ListState> {
    node_fn(move |_s: Arc<ListState>, _ctx: NodeContext| async move {
        let dispatches = (0..n)
            .map(|id| {
                Dispatch::new(
                    target,
                    Job {
                        id,
                        word: format!("w{id}"),
                    },
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NodeOutput::update(ListUpdate::item("split")).dispatch_all(dispatches))
    })
}

fn worker_node(tracker: Arc<Tracker>) -> impl Node<ListState> {
    node_fn(move |_s: Arc<ListState>, ctx: NodeContext| {
        let tracker = tracker.clone();
        let ms = rand::random_range(1..=15u64);
        async move {
            let job: Job = ctx
                .input::<Job>()?
                .ok_or_else(|| NodeError::permanent("worker needs a dispatch input"))?;
            tracker.enter();
            tokio::time::sleep(Duration::from_millis(ms)).await;
            tracker.exit(&job.word, ms);
            Ok(NodeOutput::update(ListUpdate::item(format!(
                "{}:{}",
                job.id,
                job.word.to_uppercase()
            ))))
        }
    })
}

fn counting_join(runs: Arc<AtomicUsize>) -> impl Node<ListState> {
    node_fn(move |s: Arc<ListState>, _ctx: NodeContext| {
        runs.fetch_add(1, Ordering::SeqCst);
        let seen = s.items.len();
        async move {
            Ok(NodeOutput::update(ListUpdate::item(format!(
                "join saw {seen}"
            ))))
        }
    })
}

#[tokio::test]
async fn map_reduce_dispatch_runs_instances_and_merges_in_dispatch_order() {
    const N: u32 = 6;
    let tracker = Arc::new(Tracker::default());
    let join_runs = Arc::new(AtomicUsize::new(0));
    let graph = GraphBuilder::<ListState>::new("map-reduce")
        .add_node("split", split_node(N, "worker"))
        .add_node("worker", worker_node(tracker.clone()))
        .add_node("join", counting_join(join_runs.clone()))
        .set_entry("split")
        .add_dispatch("split", "worker")
        .add_edge("worker", "join")
        .set_finish("join")
        .compile()
        .unwrap();

    let mut expected: Vec<String> = vec!["split".into()];
    expected.extend((0..N).map(|i| format!("{i}:W{i}")));
    expected.push(format!("join saw {}", N + 1));

    let mut completion_orders = std::collections::HashSet::new();
    for (i, config) in [RunConfig::new()]
        .into_iter()
        .chain(std::iter::repeat_with(|| RunConfig::new().parallel(4)).take(10))
        .enumerate()
    {
        tracker.reset();
        join_runs.store(0, Ordering::SeqCst);
        let parallel = config.get_parallel().is_some();
        let out = graph.invoke(ListState::default(), config).await.unwrap();

        assert_eq!(out.state.items, expected, "run {i}");
        assert_eq!(join_runs.load(Ordering::SeqCst), 1, "run {i}");
        let s = &out.summary;
        assert_eq!(s.node_executions, u64::from(N) + 2);
        let workers: Vec<_> = s.steps_of("worker").collect();
        assert_eq!(workers.len(), N as usize);
        for (k, w) in workers.iter().enumerate() {
            assert_eq!(w.status, StepStatus::Succeeded);
            let input: Job = serde_json::from_value(w.input.clone().unwrap()).unwrap();
            assert_eq!(input.id, k as u32, "worker records are in dispatch order");
        }
        let join = s.steps_of("join").next().unwrap();
        assert!(workers.iter().all(|w| w.step_id < join.step_id));
        if parallel {
            assert!(
                tracker.high_water() > 1,
                "run {i}: instances should overlap"
            );
            assert!(tracker.high_water() <= 4, "run {i}: cap of 4 exceeded");
            completion_orders.insert(tracker.completions.lock().unwrap().clone());
        } else {
            assert_eq!(tracker.high_water(), 1);
        }
    }
    assert!(completion_orders.len() > 1, "{completion_orders:?}");
}

#[tokio::test]
async fn dispatch_to_undeclared_target_fails() {
    let tracker = Arc::new(Tracker::default());
    let graph = GraphBuilder::<ListState>::new("bad-dispatch")
        .add_node("split", split_node(2, "join"))
        .add_node("worker", worker_node(tracker.clone()))
        .add_node("join", append_node("join"))
        .set_entry("split")
        .add_dispatch("split", "worker")
        .add_edge("worker", "join")
        .set_finish("join")
        .compile()
        .unwrap();
    let failure = graph
        .invoke(ListState::default(), RunConfig::new())
        .await
        .unwrap_err();
    match &failure.error {
        Error::UnknownDispatchTarget { node, target } => {
            assert_eq!(node, "split");
            assert_eq!(target, "join");
        }
        e => panic!("expected UnknownDispatchTarget, got {e:?}"),
    }
    assert_eq!(failure.error.kind(), "unknown_dispatch_target");
    assert_eq!(failure.summary.status, RunStatus::Failed);
    assert_eq!(failure.summary.node_executions, 1);
    assert_eq!(tracker.high_water(), 0, "no worker ran");

    // A target that is not a node at all.
    let graph = GraphBuilder::<ListState>::new("bad-dispatch-2")
        .add_node("split", split_node(1, "nowhere"))
        .add_node("worker", worker_node(tracker))
        .set_entry("split")
        .add_dispatch("split", "worker")
        .set_finish("worker")
        .compile()
        .unwrap();
    let failure = graph
        .invoke(ListState::default(), RunConfig::new())
        .await
        .unwrap_err();
    assert!(
        matches!(&failure.error, Error::UnknownDispatchTarget { node, target } if node == "split" && target == "nowhere"),
        "{:?}",
        failure.error
    );
}

#[tokio::test]
async fn zero_dispatches_skip_the_worker() {
    let tracker = Arc::new(Tracker::default());
    let join_runs = Arc::new(AtomicUsize::new(0));
    // split -> join directly too, so the join still has an active predecessor.
    let graph = GraphBuilder::<ListState>::new("empty-map")
        .add_node("split", split_node(0, "worker"))
        .add_node("worker", worker_node(tracker.clone()))
        .add_node("join", counting_join(join_runs.clone()))
        .set_entry("split")
        .add_dispatch("split", "worker")
        .add_edge("split", "join")
        .add_edge("worker", "join")
        .set_finish("join")
        .compile()
        .unwrap();
    let sink = MemorySink::new();
    let out = graph
        .invoke(
            ListState::default(),
            RunConfig::new().parallel(4).sink(sink.clone()),
        )
        .await
        .unwrap();
    assert_eq!(out.state.items, ["split", "join saw 1"]);
    assert_eq!(join_runs.load(Ordering::SeqCst), 1);
    assert_eq!(tracker.high_water(), 0);
    let s = &out.summary;
    assert_eq!(s.node_executions, 2);
    let workers: Vec<_> = s.steps_of("worker").collect();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].status, StepStatus::Skipped);
    let skipped = events_of(&sink.events(), "step.skipped")
        .into_iter()
        .filter_map(node_of)
        .map(str::to_string)
        .collect::<Vec<_>>();
    assert_eq!(skipped, ["worker"]);

    // Without the direct edge, the skip propagates to the join as well.
    let graph = GraphBuilder::<ListState>::new("empty-map-2")
        .add_node("split", split_node(0, "worker"))
        .add_node("worker", worker_node(tracker))
        .add_node("join", counting_join(join_runs.clone()))
        .set_entry("split")
        .add_dispatch("split", "worker")
        .add_edge("worker", "join")
        .set_finish("join")
        .compile()
        .unwrap();
    join_runs.store(0, Ordering::SeqCst);
    let out = graph
        .invoke(ListState::default(), RunConfig::new())
        .await
        .unwrap();
    assert_eq!(out.state.items, ["split"]);
    assert_eq!(join_runs.load(Ordering::SeqCst), 0);
    assert_eq!(
        step_nodes(&out.summary),
        [
            ("split", StepStatus::Succeeded),
            ("worker", StepStatus::Skipped),
            ("join", StepStatus::Skipped)
        ]
    );
}

// ---------------------------------------------------------------------------
// 6. Loops and the recursion limit
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Loop {
    turns: u32,
    tool_calls: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct LoopUpdate {
    turns: u32,
    tool_calls: u32,
}

impl State for Loop {
    type Update = LoopUpdate;
    fn apply(&mut self, u: LoopUpdate) {
        reducer::add(&mut self.turns, u.turns);
        reducer::add(&mut self.tool_calls, u.tool_calls);
    }
}

fn agent_loop(max_tool_calls: Option<u32>) -> flowtrace_core::CompiledGraph<Loop> {
    GraphBuilder::<Loop>::new("agent-loop")
        .add_node(
            "agent",
            node_fn(|_s: Arc<Loop>, _ctx: NodeContext| async move {
                Ok(NodeOutput::update(LoopUpdate {
                    turns: 1,
                    tool_calls: 0,
                }))
            }),
        )
        .add_node(
            "tools",
            node_fn(|_s: Arc<Loop>, _ctx: NodeContext| async move {
                Ok(NodeOutput::update(LoopUpdate {
                    turns: 0,
                    tool_calls: 1,
                }))
            }),
        )
        .set_entry("agent")
        .add_conditional_edges(
            "agent",
            move |s: &Loop| match max_tool_calls {
                Some(max) if s.tool_calls >= max => "done",
                _ => "call_tool",
            },
            [("call_tool", "tools"), ("done", END)],
        )
        .add_edge("tools", "agent")
        .compile()
        .unwrap()
}

#[tokio::test]
async fn agent_loop_runs_the_expected_number_of_iterations() {
    let sink = MemorySink::new();
    let out = agent_loop(Some(3))
        .invoke(Loop::default(), RunConfig::new().sink(sink.clone()))
        .await
        .unwrap();
    // agent, tools, agent, tools, agent, tools, agent(done)
    assert_eq!(out.state.turns, 4);
    assert_eq!(out.state.tool_calls, 3);
    let s = &out.summary;
    assert_eq!(s.node_executions, 7);
    assert_eq!(
        s.steps_of("agent")
            .filter(|r| r.status == StepStatus::Succeeded)
            .count(),
        4
    );
    assert_eq!(
        s.steps_of("tools")
            .filter(|r| r.status == StepStatus::Succeeded)
            .count(),
        3
    );
    let branches: Vec<_> = s.steps_of("agent").map(|r| r.branch.as_deref()).collect();
    assert_eq!(
        branches,
        [
            Some("call_tool"),
            Some("call_tool"),
            Some("call_tool"),
            Some("done")
        ]
    );
    // Steps alternate agent/tools in execution order.
    let executed: Vec<_> = s
        .steps
        .iter()
        .filter(|r| r.status == StepStatus::Succeeded)
        .map(|r| r.node.as_str())
        .collect();
    assert_eq!(
        executed,
        [
            "agent", "tools", "agent", "tools", "agent", "tools", "agent"
        ]
    );
    assert_eq!(events_of(&sink.events(), "route").len(), 4);
}

#[tokio::test]
async fn infinite_loop_hits_the_recursion_limit() {
    let sink = MemorySink::new();
    let failure = agent_loop(None)
        .invoke(
            Loop::default(),
            RunConfig::new().recursion_limit(10).sink(sink.clone()),
        )
        .await
        .unwrap_err();
    match &failure.error {
        Error::RecursionLimit { limit, node } => {
            assert_eq!(*limit, 10);
            // Executions 1, 3, 5, .. are the agent: the 11th would be the agent.
            assert_eq!(node, "agent");
        }
        e => panic!("expected RecursionLimit, got {e:?}"),
    }
    let msg = failure.error.to_string();
    assert!(msg.contains("recursion limit of 10"), "{msg}");
    assert!(
        msg.contains("recursion_limit"),
        "message should say how to raise it: {msg}"
    );
    assert_eq!(failure.error.kind(), "recursion_limit");
    assert_eq!(failure.summary.status, RunStatus::Failed);
    assert_eq!(failure.summary.node_executions, 10);
    assert_eq!(
        failure.summary.error.as_ref().unwrap().kind,
        "recursion_limit"
    );
    let kinds = sink.kinds();
    assert_eq!(kinds.iter().filter(|k| **k == "step.started").count(), 10);
    assert!(kinds.contains(&"error"));
    assert_eq!(kinds.last(), Some(&"run.finished"));
}

// ---------------------------------------------------------------------------
// 7. Compile errors
// ---------------------------------------------------------------------------

fn nop() -> impl Node<ListState> {
    node_fn(|_s: Arc<ListState>, _ctx: NodeContext| async move { Ok(NodeOutput::none()) })
}

#[test]
fn compile_reports_every_problem_at_once() {
    // a -> b -> END; b declared twice; a -> ghost (unknown);
    // island -> END but nothing leads to island; a -> dead_end, a dead end.
    let err = GraphBuilder::<ListState>::new("broken")
        .add_node("a", nop())
        .add_node("b", nop())
        .add_node("b", nop())
        .add_node("island", nop())
        .add_node("dead_end", nop())
        .set_entry("a")
        .add_edge("a", "b")
        .add_edge("a", "ghost")
        .add_edge("a", "dead_end")
        .set_finish("b")
        .set_finish("island")
        .compile()
        .unwrap_err();

    let p = &err.problems;
    assert!(
        p.contains(&GraphProblem::DuplicateNode { node: "b".into() }),
        "{p:?}"
    );
    assert!(
        p.iter().any(
            |x| matches!(x, GraphProblem::UnknownNode { node, referenced_by }
            if node == "ghost" && referenced_by.contains("\"a\""))
        ),
        "{p:?}"
    );
    assert!(
        p.contains(&GraphProblem::Unreachable {
            node: "island".into()
        }),
        "{p:?}"
    );
    assert!(
        p.contains(&GraphProblem::NoPathToFinish {
            node: "dead_end".into()
        }),
        "{p:?}"
    );
    assert_eq!(p.len(), 4, "no spurious problems: {p:?}");

    let text = err.to_string();
    assert!(text.starts_with("graph has 4 problem(s):"), "{text}");
    for problem in p {
        assert!(
            text.contains(&problem.to_string()),
            "{text} lacks {problem}"
        );
    }
    for needle in [
        "duplicate node id \"b\"",
        "\"ghost\"",
        "\"island\" is unreachable",
        "\"dead_end\" has no path to finish",
    ] {
        assert!(text.contains(needle), "{text} lacks {needle}");
    }

    // Through the run error type too.
    let run_err: Error = err.clone().into();
    assert_eq!(run_err.kind(), "build");
    assert_eq!(run_err.to_string(), text);
}

#[test]
fn compile_reports_missing_entry_with_other_problems() {
    // Same kinds of problems, but no entry at all.
    let err = GraphBuilder::<ListState>::new("no-entry")
        .add_node("a", nop())
        .add_node("a", nop())
        .add_node("b", nop())
        .add_node("dead_end", nop())
        .add_edge("a", "b")
        .add_edge("b", "ghost")
        .add_edge("b", "dead_end")
        .set_finish("b")
        .compile()
        .unwrap_err();
    let p = &err.problems;
    assert!(p.contains(&GraphProblem::NoEntry), "{p:?}");
    assert!(
        p.contains(&GraphProblem::DuplicateNode { node: "a".into() }),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|x| matches!(x, GraphProblem::UnknownNode { node, .. } if node == "ghost")),
        "{p:?}"
    );
    assert!(
        p.contains(&GraphProblem::NoPathToFinish {
            node: "dead_end".into()
        }),
        "{p:?}"
    );
    let text = err.to_string();
    assert!(text.contains("no entry node"), "{text}");
    for problem in p {
        assert!(
            text.contains(&problem.to_string()),
            "{text} lacks {problem}"
        );
    }
}

#[test]
fn compile_reports_invalid_retry_policy_naming_the_node() {
    let err = GraphBuilder::<ListState>::new("bad-retry")
        .add_node("ok", nop())
        .add_node_with("flaky", nop(), NodeConfig::new().retry(RetryPolicy::new(0)))
        .set_entry("ok")
        .add_edge("ok", "flaky")
        .set_finish("flaky")
        .compile()
        .unwrap_err();
    assert_eq!(err.problems.len(), 1, "{:?}", err.problems);
    match &err.problems[0] {
        GraphProblem::InvalidSetting {
            node,
            setting,
            reason,
        } => {
            assert_eq!(node.as_ref().map(|n| n.as_str()), Some("flaky"));
            assert!(setting.contains("max_attempts"), "{setting}");
            assert!(!reason.is_empty());
        }
        other => panic!("expected InvalidSetting, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("\"flaky\"") && text.contains("max_attempts"),
        "{text}"
    );

    // A valid policy compiles.
    GraphBuilder::<ListState>::new("good-retry")
        .add_node_with("flaky", nop(), NodeConfig::new().retry(RetryPolicy::new(1)))
        .set_entry("flaky")
        .set_finish("flaky")
        .compile()
        .unwrap();
}

// ---------------------------------------------------------------------------
// 8. Subgraphs
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Words {
    text: String,
    words: Vec<String>,
    count: usize,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct WordsUpdate {
    words: Vec<String>,
    count: Option<usize>,
}

impl State for Words {
    type Update = WordsUpdate;
    fn apply(&mut self, u: WordsUpdate) {
        reducer::append(&mut self.words, u.words);
        reducer::replace(&mut self.count, u.count);
    }
}

fn words_graph() -> flowtrace_core::CompiledGraph<Words> {
    GraphBuilder::<Words>::new("words")
        .add_node(
            "tokenize",
            node_fn(|s: Arc<Words>, _ctx: NodeContext| async move {
                Ok(NodeOutput::update(WordsUpdate {
                    words: s.text.split_whitespace().map(str::to_uppercase).collect(),
                    count: None,
                }))
            }),
        )
        .add_node(
            "count",
            node_fn(|s: Arc<Words>, _ctx: NodeContext| async move {
                Ok(NodeOutput::update(WordsUpdate {
                    words: Vec::new(),
                    count: Some(s.words.len()),
                }))
            }),
        )
        .set_entry("tokenize")
        .add_edge("tokenize", "count")
        .set_finish("count")
        .compile()
        .unwrap()
}

#[tokio::test]
async fn subgraph_runs_as_a_node_with_nested_steps_and_events() {
    let child = words_graph();
    let parent = GraphBuilder::<Doc>::new("parent")
        .add_node("load", text_node("load", "the quick brown fox"))
        .add_node(
            "analyze",
            child.as_node(
                |p: &Doc| Words {
                    text: p.text.clone(),
                    ..Words::default()
                },
                |c: Words| DocUpdate {
                    words: Some(c.count),
                    trail: vec![format!("analyze:{}", c.words.join("|"))],
                    ..DocUpdate::default()
                },
            ),
        )
        .add_node(
            "report",
            node_fn(|s: Arc<Doc>, _ctx: NodeContext| async move {
                Ok(NodeOutput::update(DocUpdate {
                    trail: vec![format!("report {}", s.words)],
                    ..DocUpdate::default()
                }))
            }),
        )
        .set_entry("load")
        .add_edge("load", "analyze")
        .add_edge("analyze", "report")
        .set_finish("report")
        .compile()
        .unwrap();

    let (out, sink) = run_with_sink(&parent, Doc::default()).await;

    // The child's result flowed back into the parent.
    assert_eq!(out.state.words, 4);
    assert_eq!(
        out.state.trail,
        ["load", "analyze:THE|QUICK|BROWN|FOX", "report 4"]
    );

    // Summary: child steps are included, nested under the subgraph node's step.
    let s = &out.summary;
    assert_eq!(s.status, RunStatus::Succeeded);
    assert_eq!(s.node_executions, 5, "3 parent + 2 child executions");
    let sub = s.steps_of("analyze").next().unwrap();
    assert!(sub.parent_step_id.is_none());
    assert_eq!(sub.status, StepStatus::Succeeded);
    for child_node in ["tokenize", "count"] {
        let recs: Vec<_> = s.steps_of(child_node).collect();
        assert_eq!(recs.len(), 1, "{child_node}");
        assert_eq!(recs[0].parent_step_id, Some(sub.step_id), "{child_node}");
        assert_eq!(recs[0].status, StepStatus::Succeeded);
        assert!(
            recs[0].step_id > sub.step_id,
            "child steps start after the subgraph step"
        );
    }
    for parent_node in ["load", "report"] {
        assert!(
            s.steps_of(parent_node)
                .next()
                .unwrap()
                .parent_step_id
                .is_none()
        );
    }
    // Steps are in start order, step ids unique.
    let ids: Vec<_> = s.steps.iter().map(|r| r.step_id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted);
    assert_eq!(
        s.steps.iter().map(|r| r.node.as_str()).collect::<Vec<_>>(),
        ["load", "analyze", "tokenize", "count", "report"]
    );

    // Events: every child event carries parent_step_id = the subgraph step.
    let events = sink.events();
    for e in &events {
        if matches!(node_of(e), Some("tokenize" | "count")) {
            assert_eq!(e.parent_step_id, Some(sub.step_id), "{e:?}");
        }
        if matches!(node_of(e), Some("load" | "analyze" | "report")) {
            assert!(e.parent_step_id.is_none(), "{e:?}");
        }
    }
    let child_steps = events
        .iter()
        .filter(|e| e.kind.name() == "step.started" && e.parent_step_id == Some(sub.step_id))
        .count();
    assert_eq!(child_steps, 2);

    // A nested run.started / run.finished pair, scoped to the subgraph step.
    let started = events_of(&events, "run.started");
    let finished = events_of(&events, "run.finished");
    assert_eq!(started.len(), 2);
    assert_eq!(finished.len(), 2);
    let nested_start = started.iter().find(|e| e.parent_step_id.is_some()).unwrap();
    let nested_end = finished
        .iter()
        .find(|e| e.parent_step_id.is_some())
        .unwrap();
    assert_eq!(nested_start.parent_step_id, Some(sub.step_id));
    assert_eq!(nested_end.parent_step_id, Some(sub.step_id));
    assert!(matches!(&nested_start.kind, EventKind::RunStarted { graph } if graph == "words"));
    match &nested_end.kind {
        EventKind::RunFinished {
            status,
            node_executions,
            ..
        } => {
            assert_eq!(*status, RunStatus::Succeeded);
            assert_eq!(*node_executions, 2);
        }
        k => panic!("unexpected {k:?}"),
    }
    // The top-level pair has no parent and brackets everything.
    assert!(events.first().unwrap().parent_step_id.is_none());
    assert!(
        matches!(&events.first().unwrap().kind, EventKind::RunStarted { graph } if graph == "parent")
    );
    let last = events.last().unwrap();
    assert!(last.parent_step_id.is_none());
    assert!(matches!(
        &last.kind,
        EventKind::RunFinished {
            node_executions: 5,
            ..
        }
    ));
    // The nested pair sits inside the subgraph node's step.
    let pos = |target: &TraceEvent| events.iter().position(|e| std::ptr::eq(e, target)).unwrap();
    let sub_start = events
        .iter()
        .position(|e| e.kind.name() == "step.started" && node_of(e) == Some("analyze"))
        .unwrap();
    let sub_end = events
        .iter()
        .position(|e| e.kind.name() == "step.finished" && node_of(e) == Some("analyze"))
        .unwrap();
    assert!(
        sub_start < pos(nested_start)
            && pos(nested_start) < pos(nested_end)
            && pos(nested_end) < sub_end
    );
    assert!(events.iter().all(|e| e.run_id == s.run_id));
}

// ---------------------------------------------------------------------------
// 9. Panics
// ---------------------------------------------------------------------------

#[tokio::test]
async fn panicking_node_fails_the_run_cleanly() {
    let after_runs = Arc::new(AtomicUsize::new(0));
    let after = after_runs.clone();
    let graph = GraphBuilder::<Doc>::new("panics")
        .add_node(
            "explode",
            node_fn(|s: Arc<Doc>, _ctx: NodeContext| async move {
                if s.text.is_empty() {
                    panic!("boom: empty text");
                }
                Ok(NodeOutput::none())
            }),
        )
        .add_node(
            "after",
            node_fn(move |_s: Arc<Doc>, _ctx: NodeContext| {
                after.fetch_add(1, Ordering::SeqCst);
                async move { Ok(NodeOutput::none()) }
            }),
        )
        .set_entry("explode")
        .add_edge("explode", "after")
        .set_finish("after")
        .compile()
        .unwrap();

    let sink = MemorySink::new();
    let failure = graph
        .invoke(Doc::default(), RunConfig::new().sink(sink.clone()))
        .await
        .unwrap_err();
    match &failure.error {
        Error::NodePanicked { node, message } => {
            assert_eq!(node, "explode");
            assert!(message.contains("boom: empty text"), "{message}");
        }
        e => panic!("expected NodePanicked, got {e:?}"),
    }
    assert_eq!(failure.error.kind(), "node_panicked");
    assert_eq!(failure.summary.status, RunStatus::Failed);
    assert_eq!(after_runs.load(Ordering::SeqCst), 0);
    assert_eq!(
        step_nodes(&failure.summary),
        [("explode", StepStatus::Failed)]
    );
    assert_eq!(sink.kinds().last(), Some(&"run.finished"));

    // The graph still works afterwards.
    let ok = graph
        .invoke(
            Doc {
                text: "fine".into(),
                ..Doc::default()
            },
            RunConfig::new(),
        )
        .await
        .unwrap();
    assert_eq!(ok.summary.node_executions, 2);
}

#[tokio::test]
async fn panicking_branch_in_parallel_fan_out_fails_the_run() {
    let tracker = Arc::new(Tracker::default());
    let graph = GraphBuilder::<ListState>::new("parallel-panic")
        .add_node("start", append_node("start"))
        .add_node("slow", sleepy_branch("slow", tracker.clone(), 5))
        .add_node(
            "bad",
            node_fn(|s: Arc<ListState>, _ctx: NodeContext| async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                if s.items.len() == 1 {
                    panic!("branch exploded");
                }
                Ok(NodeOutput::none())
            }),
        )
        .add_node("join", append_node("join"))
        .set_entry("start")
        .add_edge("start", "slow")
        .add_edge("start", "bad")
        .add_edge("slow", "join")
        .add_edge("bad", "join")
        .set_finish("join")
        .compile()
        .unwrap();
    let failure = graph
        .invoke(ListState::default(), RunConfig::new().parallel(2))
        .await
        .unwrap_err();
    assert!(
        matches!(&failure.error, Error::NodePanicked { node, message } if node == "bad" && message.contains("branch exploded")),
        "{:?}",
        failure.error
    );
    assert!(
        failure.summary.steps_of("join").next().is_none(),
        "join must not run"
    );
    assert_eq!(
        failure.summary.steps_of("bad").next().map(|r| r.status),
        Some(StepStatus::Failed)
    );
}

// ---------------------------------------------------------------------------
// 10. Property: parallel merge == sequential merge
// ---------------------------------------------------------------------------

const BRANCH_NAMES: [&str; 8] = ["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7"];

/// start -> b{width-1} .. b0 (inserted in reverse name order) -> join, each
/// branch sleeping its own delay.
fn prop_graph(width: usize, delays: &[u64]) -> flowtrace_core::CompiledGraph<ListState> {
    let mut b = GraphBuilder::<ListState>::new("prop")
        .add_node("start", append_node("start"))
        .set_entry("start");
    for i in (0..width).rev() {
        let name = BRANCH_NAMES[i];
        let ms = delays[i];
        b = b
            .add_node(
                name,
                node_fn(move |_s: Arc<ListState>, _ctx: NodeContext| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(NodeOutput::update(ListUpdate::item(name)))
                }),
            )
            .add_edge("start", name)
            .add_edge(name, "join");
    }
    b.add_node(
        "join",
        node_fn(|s: Arc<ListState>, _ctx: NodeContext| {
            let seen = s.items.len();
            async move { Ok(NodeOutput::update(ListUpdate::item(format!("join {seen}")))) }
        }),
    )
    .set_finish("join")
    .compile()
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn parallel_merge_equals_sequential_merge(
        width in 1usize..8,
        delays in proptest::collection::vec(0u64..8, 8),
        cap in 1usize..9,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let graph = prop_graph(width, &delays);
        let (seq, par) = rt.block_on(async {
            let seq = graph.invoke(ListState::default(), RunConfig::new()).await.unwrap();
            let par = graph.invoke(ListState::default(), RunConfig::new().parallel(cap)).await.unwrap();
            (seq, par)
        });
        prop_assert_eq!(&par.state, &seq.state);

        // And both equal the insertion order (reverse name order).
        let mut expected = vec!["start".to_string()];
        expected.extend((0..width).rev().map(|i| BRANCH_NAMES[i].to_string()));
        expected.push(format!("join {}", width + 1));
        prop_assert_eq!(&seq.state.items, &expected);
        prop_assert_eq!(&par.state.last, &format!("join {}", width + 1));
        prop_assert_eq!(par.summary.node_executions, width as u64 + 2);
        prop_assert_eq!(par.summary.steps_of("join").count(), 1);
    }
}

// ------------------------------------------------------------ router fan-out

/// triage → (billing | legal | support, any subset) → reply (a join).
fn fanout_graph(choose: &'static [&'static str]) -> flowtrace_core::CompiledGraph<ListState> {
    GraphBuilder::<ListState>::new("fanout")
        .add_node("triage", append_node("triage"))
        .add_node("billing", append_node("billing"))
        .add_node("legal", append_node("legal"))
        .add_node("support", append_node("support"))
        .add_node("reply", append_node("reply"))
        .set_entry("triage")
        .add_conditional_fanout(
            "triage",
            move |_s: &ListState, _ctx| choose.iter().copied(),
            [
                ("billing", "billing"),
                ("legal", "legal"),
                ("support", "support"),
            ],
        )
        .add_edge("billing", "reply")
        .add_edge("legal", "reply")
        .add_edge("support", "reply")
        .set_finish("reply")
        .compile()
        .unwrap()
}

#[tokio::test]
async fn a_fanout_router_runs_every_chosen_branch_then_joins_once() {
    let sink = MemorySink::new();
    let out = fanout_graph(&["legal", "billing"])
        .invoke(
            ListState::default(),
            RunConfig::new().parallel(4).sink(sink.clone()),
        )
        .await
        .unwrap();
    // Both chosen branches ran in one super-step (graph order), the join ran
    // once after them, and the third branch was skipped.
    assert_eq!(out.state.items, ["triage", "billing", "legal", "reply"]);
    assert_eq!(
        out.summary.steps_of("support").next().unwrap().status,
        StepStatus::Skipped
    );
    let skipped = out.summary.steps_of("support").next().unwrap();
    assert!(
        skipped
            .error
            .as_deref()
            .unwrap()
            .contains("branches \"legal,billing\""),
        "{skipped:?}"
    );
    let triage = out.summary.steps_of("triage").next().unwrap();
    assert_eq!(triage.branch.as_deref(), Some("legal,billing"));
    let events = sink.events();
    let routes = events_of(&events, "route");
    assert_eq!(routes.len(), 1);
    match &routes[0].kind {
        EventKind::Route { branch, targets } => {
            assert_eq!(branch, "legal,billing");
            assert_eq!(targets, &["legal", "billing"]);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_fanout_router_choosing_nothing_skips_every_branch() {
    let out = fanout_graph(&[])
        .invoke(ListState::default(), RunConfig::new())
        .await
        .unwrap();
    assert_eq!(out.state.items, ["triage"]);
    for node in ["billing", "legal", "support", "reply"] {
        let step = out.summary.steps_of(node).next().unwrap();
        assert_eq!(step.status, StepStatus::Skipped, "{node}");
    }
    assert!(
        out.summary
            .steps_of("billing")
            .next()
            .unwrap()
            .error
            .as_deref()
            .unwrap()
            .contains("chose no branch")
    );
}

#[tokio::test]
async fn a_fanout_router_naming_an_unknown_branch_fails_the_run() {
    let failure = fanout_graph(&["billing", "marketing"])
        .invoke(ListState::default(), RunConfig::new())
        .await
        .unwrap_err();
    match &failure.error {
        flowtrace_core::Error::UnknownBranch {
            node,
            branch,
            known,
        } => {
            assert_eq!(node.as_str(), "triage");
            assert_eq!(branch, "marketing");
            assert_eq!(known.len(), 3);
        }
        other => panic!("{other:?}"),
    }
}
