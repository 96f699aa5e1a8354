//! Scaling benchmarks (issue 9, "No quadratic paths"): the cost per step,
//! per branch and per node must not grow with the size of the graph.
//!
//! Every run has a [`VoidSink`] attached and runs on a current-thread
//! runtime. Each group reports its time per element (criterion
//! `Throughput::Elements`), so flat growth shows as a flat per-element time.
//!
//! * `chain_checkpointed/{100,1000,10000,100000}` — a chain of `n` nodes
//!   (each adds 1 to a counter) run durably on a [`MemoryCheckpointer`]
//!   (`Durability::Sync`, a fresh store and thread per run): `n` super-steps,
//!   `n + 1` checkpoints. Per element = per step. Target: flat within 1.5×.
//! * `chain_checkpoint_discarded/{100,1000,10000,100000}` — the same run on
//!   a store that drops every checkpoint it is given: the executor's side of
//!   checkpointing (building and handing over one checkpoint per step)
//!   without the store keeping `n + 1` checkpoints in memory.
//! * `router_fanout/many_labels/{10,100,1000,10000}` — `route` returns `W`
//!   labels (`add_conditional_fanout`), each label's branch one leaf node;
//!   every leaf runs and finishes. Per element = per branch (`W + 1` steps).
//! * `router_fanout/one_label/{10,100,1000,10000}` — the router returns one
//!   label whose branch has `W` targets (`add_conditional_edges` with the
//!   label repeated). Target for both: flat within 2×.
//! * `compile_fanout/{10,1000,100000}` — `compile()` alone (the builder is
//!   made outside the timing) of start → hub → `W` leaves → join → end.
//!   Per element = per leaf. Target: under 200 ms at 100,000.
//!
//! Run with
//! `cargo bench --bench scaling -- --warm-up-time 1 --measurement-time 3`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use flowtrace::checkpoint::{
    Checkpoint, CheckpointError, Checkpointer, MemoryCheckpointer, PendingWrite,
};
use flowtrace::exec::Durability;
use flowtrace::graph::RouteContext;
use flowtrace::{
    CompiledGraph, GraphBuilder, NodeContext, NodeOutput, NodeResult, RunConfig, RunStatus,
    ThreadId, node_fn,
};

mod common;

use common::{Conversation, Delta, VoidSink};

async fn noop(_s: Arc<Conversation>, _ctx: NodeContext) -> NodeResult<Delta> {
    Ok(NodeOutput::none())
}

async fn count(_s: Arc<Conversation>, _ctx: NodeContext) -> NodeResult<Delta> {
    Ok(Delta {
        messages: Vec::new(),
        counter: 1,
    }
    .into())
}

/// Above the default recursion limit (10,000 node executions), which the
/// largest graphs here pass.
const LIMIT: u64 = 1_000_000;

fn config() -> RunConfig {
    RunConfig::new().sink(VoidSink).recursion_limit(LIMIT)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `f` on a thread with a large stack: graph analyses that recurse
/// once per node must not decide whether the bench can run at all.
fn big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

fn chain(n: usize) -> CompiledGraph<Conversation> {
    big_stack(move || {
        let mut b = GraphBuilder::<Conversation>::new("chain");
        for i in 0..n {
            b = b.add_node(format!("n{i}"), node_fn(count));
            if i > 0 {
                b = b.add_edge(format!("n{}", i - 1), format!("n{i}"));
            }
        }
        b.set_entry("n0")
            .set_finish(format!("n{}", n - 1))
            .compile()
            .unwrap()
    })
}

/// Accepts every checkpoint and keeps none.
struct DiscardingStore;

#[async_trait]
impl Checkpointer for DiscardingStore {
    async fn append(&self, checkpoint: Checkpoint) -> Result<(), CheckpointError> {
        drop(std::hint::black_box(checkpoint));
        Ok(())
    }
    async fn get(
        &self,
        _thread: &ThreadId,
        _seq: Option<u64>,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        Ok(None)
    }
    async fn list(
        &self,
        _thread: &ThreadId,
        _before: Option<u64>,
        _limit: usize,
    ) -> Result<Vec<Checkpoint>, CheckpointError> {
        Ok(Vec::new())
    }
    async fn put_write(
        &self,
        _thread: &ThreadId,
        _seq: u64,
        _write: PendingWrite,
    ) -> Result<(), CheckpointError> {
        Ok(())
    }
    async fn writes(
        &self,
        _thread: &ThreadId,
        _seq: u64,
    ) -> Result<Vec<PendingWrite>, CheckpointError> {
        Ok(Vec::new())
    }
    async fn delete_thread(&self, _thread: &ThreadId) -> Result<bool, CheckpointError> {
        Ok(false)
    }
    async fn prune(
        &self,
        thread: &ThreadId,
        _keep: flowtrace::checkpoint::Retention,
    ) -> Result<flowtrace::checkpoint::PruneOutcome, CheckpointError> {
        Err(CheckpointError::ThreadNotFound {
            thread: thread.clone(),
        })
    }
    async fn list_threads(
        &self,
        _filter: &flowtrace::checkpoint::ThreadFilter,
    ) -> Result<Vec<flowtrace::checkpoint::ThreadInfo>, CheckpointError> {
        Ok(Vec::new())
    }
    async fn copy_thread(&self, from: &ThreadId, _to: &ThreadId) -> Result<(), CheckpointError> {
        Err(CheckpointError::ThreadNotFound {
            thread: from.clone(),
        })
    }
}

fn bench_chain_checkpointed(c: &mut Criterion) {
    chain_on(c, "chain_checkpointed", || {
        Arc::new(MemoryCheckpointer::new())
    });
    chain_on(c, "chain_checkpoint_discarded", || {
        Arc::new(DiscardingStore)
    });
}

/// Durable chains of every size on a fresh store from `store`.
fn chain_on(c: &mut Criterion, group: &str, store: fn() -> Arc<dyn Checkpointer>) {
    let rt = runtime();
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    for n in [100usize, 1000, 10_000, 100_000] {
        let graph = chain(n);
        let mut next_thread = 0u64;
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(n.to_string(), |b| {
            b.to_async(&rt).iter_batched(
                || {
                    next_thread += 1;
                    (store(), ThreadId::new(format!("c{n}-{next_thread}")))
                },
                // The output and the store (with its history) are dropped
                // outside the timing.
                |(store, thread)| async {
                    let cfg = config()
                        .checkpointer(store.clone())
                        .thread(thread)
                        .durability(Durability::Sync);
                    let out = graph
                        .invoke(Conversation::default(), cfg)
                        .await
                        .map_err(|f| f.error)
                        .unwrap();
                    assert_eq!(out.state.counter, n as u64);
                    (out, store)
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

/// route → `w` leaves, each finishing. `one_label`: a single label whose
/// branch has every leaf; otherwise one label per leaf, all returned.
fn router_fanout(w: usize, one_label: bool) -> CompiledGraph<Conversation> {
    big_stack(move || {
        let mut b = GraphBuilder::<Conversation>::new("router_fanout")
            .add_node("route", node_fn(noop))
            .set_entry("route");
        for i in 0..w {
            b = b
                .add_node(format!("l{i}"), node_fn(count))
                .set_finish(format!("l{i}"));
        }
        let b = if one_label {
            b.add_conditional_edges(
                "route",
                |_s: &Conversation| "all",
                (0..w).map(|i| ("all", format!("l{i}"))),
            )
        } else {
            let labels: Arc<Vec<Cow<'static, str>>> =
                Arc::new((0..w).map(|i| Cow::Owned(format!("b{i}"))).collect());
            b.add_conditional_fanout(
                "route",
                move |_s: &Conversation, _ctx: &RouteContext<'_>| labels.as_ref().clone(),
                (0..w).map(|i| (Cow::Owned(format!("b{i}")), format!("l{i}"))),
            )
        };
        b.compile().unwrap()
    })
}

fn bench_router_fanout(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("router_fanout");
    g.sample_size(10);
    for (name, one_label) in [("many_labels", false), ("one_label", true)] {
        for w in [10usize, 100, 1000, 10_000] {
            let graph = router_fanout(w, one_label);
            g.throughput(Throughput::Elements(w as u64));
            g.bench_function(format!("{name}/{w}"), |b| {
                b.to_async(&rt).iter(|| async {
                    let out = graph
                        .invoke(Conversation::default(), config())
                        .await
                        .map_err(|f| f.error)
                        .unwrap();
                    assert_eq!(out.summary.status, RunStatus::Succeeded);
                    assert_eq!(out.state.counter, w as u64);
                    out
                })
            });
        }
    }
    g.finish();
}

/// start → hub → `w` leaves → join → end, not yet compiled.
fn fanout_builder(w: usize) -> GraphBuilder<Conversation> {
    let mut b = GraphBuilder::<Conversation>::new("compile_fanout")
        .add_node("hub", node_fn(noop))
        .add_node("join", node_fn(noop))
        .set_entry("hub")
        .set_finish("join");
    for i in 0..w {
        b = b
            .add_node(format!("l{i}"), node_fn(noop))
            .add_edge("hub", format!("l{i}"))
            .add_edge(format!("l{i}"), "join");
    }
    b
}

fn bench_compile_fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("compile_fanout");
    g.sample_size(10);
    for w in [10usize, 1000, 100_000] {
        g.throughput(Throughput::Elements(w as u64));
        g.bench_function(w.to_string(), |b| {
            b.iter_batched(
                || fanout_builder(w),
                // The compiled graph is dropped outside the timing.
                |builder| builder.compile().unwrap(),
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_chain_checkpointed,
    bench_router_fanout,
    bench_compile_fanout
);
criterion_main!(benches);
