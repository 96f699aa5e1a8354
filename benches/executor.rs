//! Executor overhead benchmarks.
//!
//! Every run here but `chain_unobserved` has a [`VoidSink`] attached, so all
//! trace events are still built and delivered (as for a real persistence
//! sink), but no live subscriber is attached. `chain_unobserved` has neither
//! sink nor subscriber: step events are not even built.
//!
//! Results on the 2-core CI machine (criterion 0.8, release profile), see the
//! README for the latest figures:
//!
//! | bench | figure | median |
//! |---|---|---|
//! | `chain/1000_noop_nodes` | per run of 1000 steps (divide by 1000 for per step) | 339.6 µs |
//! | `chain_unobserved/1000_noop_nodes` | the same, with nobody listening | 314.0 µs |
//! | `fanout/100_parallel_noop_nodes` | per run of 102 steps | 63.3 µs |
//! | `three_node/1000_runs` | per 1000 runs | 2.98 ms |
//! | `state_size/chain_100/{10,100,1000}_messages` | per run of 100 steps | 38.2 / 38.0 / 38.5 µs |
//!
//! (`--warm-up-time 1 --measurement-time 3`, nothing else building.)

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use flowtrace::{
    CompiledGraph, GraphBuilder, NodeContext, NodeOutput, NodeResult, RunConfig, node_fn,
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

fn chain<F, Fut>(n: usize, node: F) -> CompiledGraph<Conversation>
where
    F: Fn(Arc<Conversation>, NodeContext) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = NodeResult<Delta>> + Send + 'static,
{
    let mut b = GraphBuilder::<Conversation>::new("chain");
    for i in 0..n {
        b = b.add_node(format!("n{i}"), node_fn(node.clone()));
        if i > 0 {
            b = b.add_edge(format!("n{}", i - 1), format!("n{i}"));
        }
    }
    b.set_entry("n0")
        .set_finish(format!("n{}", n - 1))
        .compile()
        .unwrap()
}

fn config() -> RunConfig {
    RunConfig::new().sink(VoidSink)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn bench_chain(c: &mut Criterion) {
    let rt = runtime();
    let graph = chain(1000, noop);
    let mut g = c.benchmark_group("chain");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("1000_noop_nodes", |b| {
        b.to_async(&rt).iter(|| async {
            let out = graph
                .invoke(Conversation::default(), config())
                .await
                .unwrap();
            black_box(out.summary.node_executions)
        })
    });
    g.finish();
}

fn bench_chain_unobserved(c: &mut Criterion) {
    let rt = runtime();
    let graph = chain(1000, noop);
    let mut g = c.benchmark_group("chain_unobserved");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("1000_noop_nodes", |b| {
        b.to_async(&rt).iter(|| async {
            let out = graph
                .invoke(Conversation::default(), RunConfig::new())
                .await
                .unwrap();
            black_box(out.summary.node_executions)
        })
    });
    g.finish();
}

fn bench_fanout(c: &mut Criterion) {
    let rt = runtime();
    let mut b = GraphBuilder::<Conversation>::new("fanout")
        .add_node("split", node_fn(noop))
        .add_node("join", node_fn(noop))
        .set_entry("split")
        .set_finish("join");
    for i in 0..100 {
        b = b
            .add_node(format!("w{i}"), node_fn(count))
            .add_edge("split", format!("w{i}"))
            .add_edge(format!("w{i}"), "join");
    }
    let graph = b.compile().unwrap();
    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(102));
    g.bench_function("100_parallel_noop_nodes", |b| {
        b.to_async(&rt).iter(|| async {
            let out = graph
                .invoke(Conversation::default(), config().parallel(100))
                .await
                .unwrap();
            assert_eq!(out.state.counter, 100);
            black_box(out.summary.node_executions)
        })
    });
    g.finish();
}

fn bench_three_node(c: &mut Criterion) {
    let rt = runtime();
    let graph = chain(3, count);
    let mut g = c.benchmark_group("three_node");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("1000_runs", |b| {
        b.to_async(&rt).iter(|| async {
            let mut total = 0;
            for _ in 0..1000 {
                let out = graph
                    .invoke(Conversation::default(), config())
                    .await
                    .unwrap();
                total += out.state.counter;
            }
            black_box(total)
        })
    });
    g.finish();
}

fn bench_state_size(c: &mut Criterion) {
    let rt = runtime();
    let graph = chain(100, count);
    let mut g = c.benchmark_group("state_size/chain_100");
    g.throughput(Throughput::Elements(100));
    for size in [10usize, 100, 1000] {
        let state = Conversation {
            messages: (0..size)
                .map(|i| format!("message number {i} with some text"))
                .collect(),
            counter: 0,
        };
        g.bench_function(format!("{size}_messages"), |b| {
            b.to_async(&rt).iter_batched(
                || state.clone(),
                // The output (and its large state) is dropped outside the timing.
                |s| async { graph.invoke(s, config()).await.unwrap() },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_chain,
    bench_chain_unobserved,
    bench_fanout,
    bench_three_node,
    bench_state_size
);
criterion_main!(benches);
