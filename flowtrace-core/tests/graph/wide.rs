//! Wide and long graphs (issue 9): routers with more branches than are
//! scanned (labels are then looked up in a map), shared and `END` targets,
//! dispatches to several targets, and a chain too long for a recursive
//! graph search.

use std::sync::Arc;

use flowtrace_core::trace::MemorySink;
use flowtrace_core::{
    Dispatch, END, Error, EventKind, GraphBuilder, NodeContext, NodeOutput, RunConfig, StepStatus,
    node_fn,
};

use crate::support::{Items, run_with_sink};

/// Appends its name, and its dispatch input if it has one.
fn item(name: &'static str) -> impl flowtrace_core::Node<Items> {
    node_fn(move |_s: Arc<Items>, ctx: NodeContext| async move {
        let text = match ctx.input_value() {
            Some(v) => format!("{name}:{v}"),
            None => name.to_string(),
        };
        Ok(NodeOutput::update(vec![text]))
    })
}

fn leaf(i: usize) -> &'static str {
    Box::leak(format!("l{i}").into_boxed_str())
}

fn route_targets(sink: &MemorySink) -> (String, Vec<String>) {
    let events = sink.events();
    let routes: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Route { branch, targets } => Some((branch.clone(), targets.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(routes.len(), 1, "{routes:?}");
    routes.into_iter().next().unwrap()
}

const WIDTH: usize = 12;

/// r routes by label `b{i}` to leaf `l{i}`; `b0` also leads to `l1`, and
/// `b2` and `b3` lead to END.
fn wide_router(labels: &'static [&'static str]) -> flowtrace_core::CompiledGraph<Items> {
    let mut b = GraphBuilder::<Items>::new("wide")
        .add_node("r", item("r"))
        .set_entry("r");
    let mut branches: Vec<(String, String)> = Vec::new();
    for i in 0..WIDTH {
        b = b.add_node(leaf(i), item(leaf(i))).set_finish(leaf(i));
        branches.push((format!("b{i}"), leaf(i).to_string()));
    }
    branches.push(("b0".into(), "l1".into()));
    branches.push(("b2".into(), END.into()));
    branches.push(("b3".into(), END.into()));
    b.add_conditional_fanout(
        "r",
        move |_s: &Items, _ctx| labels.iter().map(|l| l.to_string()),
        branches,
    )
    .compile()
    .unwrap()
}

#[tokio::test]
async fn a_wide_router_names_each_target_once_in_the_order_first_chosen() {
    let sink = MemorySink::new();
    let out = wide_router(&["b3", "b0", "b1", "b2", "b0"])
        .invoke(Items::default(), RunConfig::new().sink(sink.clone()))
        .await
        .unwrap();
    assert_eq!(out.state.items, ["r", "l0", "l1", "l2", "l3"]);
    let (branch, targets) = route_targets(&sink);
    assert_eq!(branch, "b3,b0,b1,b2,b0");
    assert_eq!(targets, ["l3", END, "l0", "l1", "l2"]);
    for i in 4..WIDTH {
        let step = out.summary.steps_of(leaf(i)).next().unwrap();
        assert_eq!(step.status, StepStatus::Skipped, "l{i}");
        assert_eq!(
            step.error.as_deref(),
            Some("branches \"b3,b0,b1,b2,b0\" of \"r\" were chosen")
        );
    }
}

#[tokio::test]
async fn a_wide_router_naming_an_unknown_label_lists_every_known_one_in_order() {
    let failure = wide_router(&["b11", "nope"])
        .invoke(Items::default(), RunConfig::new())
        .await
        .unwrap_err();
    match failure.error {
        Error::UnknownBranch {
            node,
            branch,
            known,
        } => {
            assert_eq!(node.as_str(), "r");
            assert_eq!(branch, "nope");
            let want: Vec<String> = (0..WIDTH).map(|i| format!("b{i}")).collect();
            assert_eq!(known, want);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn one_label_with_many_targets_runs_them_all_in_graph_order() {
    let width = 40;
    let mut b = GraphBuilder::<Items>::new("one_label")
        .add_node("r", item("r"))
        .add_node("join", item("join"))
        .set_entry("r")
        .set_finish("join");
    for i in 0..width {
        b = b.add_node(leaf(i), item(leaf(i))).add_edge(leaf(i), "join");
    }
    // Listed last to first: the route event follows the branch's order.
    let graph = b
        .add_conditional_edges(
            "r",
            |_s: &Items| "all",
            (0..width).rev().map(|i| ("all", leaf(i))),
        )
        .compile()
        .unwrap();
    let (out, sink) = run_with_sink(&graph, Items::default()).await;
    let mut want = vec!["r".to_string()];
    want.extend((0..width).map(|i| format!("l{i}")));
    want.push("join".into());
    assert_eq!(out.state.items, want);
    let (branch, targets) = route_targets(&sink);
    assert_eq!(branch, "all");
    let order: Vec<String> = (0..width).rev().map(|i| format!("l{i}")).collect();
    assert_eq!(targets, order);
}

#[tokio::test]
async fn dispatches_to_several_targets_keep_each_targets_order() {
    let graph = GraphBuilder::<Items>::new("dispatch")
        .add_node(
            "split",
            node_fn(|_s: Arc<Items>, _ctx: NodeContext| async {
                Ok(NodeOutput::update(vec!["split".to_string()]).dispatch_all([
                    Dispatch::json("w2", 1.into()),
                    Dispatch::json("w1", 2.into()),
                    Dispatch::json("w2", 3.into()),
                    Dispatch::json("w1", 4.into()),
                ]))
            }),
        )
        .add_node("w1", item("w1"))
        .add_node("w2", item("w2"))
        .add_node("w3", item("w3"))
        .add_node("join", item("join"))
        .set_entry("split")
        .add_dispatch("split", "w3")
        .add_dispatch("split", "w2")
        .add_dispatch("split", "w1")
        .add_dispatch("split", "w2")
        .add_edge("w1", "join")
        .add_edge("w2", "join")
        .add_edge("w3", "join")
        .set_finish("join")
        .compile()
        .unwrap();
    let out = graph
        .invoke(Items::default(), RunConfig::new())
        .await
        .unwrap();
    assert_eq!(
        out.state.items,
        ["split", "w1:2", "w1:4", "w2:1", "w2:3", "join"]
    );
    let w3 = out.summary.steps_of("w3").next().unwrap();
    assert_eq!(w3.status, StepStatus::Skipped);
}

#[tokio::test]
async fn a_long_chain_with_a_loop_compiles_and_runs() {
    // Deep enough that a recursive search would overflow a test thread's stack.
    let n = 50_000;
    let mut b = GraphBuilder::<Items>::new("long").add_node("n0", item("n0"));
    for i in 1..n {
        b = b
            .add_node(
                format!("n{i}"),
                node_fn(|_s, _ctx| async { Ok(NodeOutput::none()) }),
            )
            .add_edge(format!("n{}", i - 1), format!("n{i}"));
    }
    // The last node goes back to the first once, then finishes.
    let last = format!("n{}", n - 1);
    let graph = b
        .set_entry("n0")
        .add_conditional_edges(
            last,
            |s: &Items| if s.items.len() < 2 { "again" } else { "done" },
            [("again", "n0"), ("done", END)],
        )
        .compile()
        .unwrap();
    let out = graph
        .invoke(
            Items::default(),
            RunConfig::new().recursion_limit(1_000_000),
        )
        .await
        .unwrap();
    assert_eq!(out.state.items, ["n0", "n0"]);
    assert_eq!(out.summary.node_executions, 2 * n as u64);
}
