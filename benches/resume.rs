//! Resuming a long thread costs the same as resuming a short one.
//!
//! A thread of N super-steps is built once per size (a one-node loop that
//! counts to N, then a finishing node; default snapshot policy: a full
//! state every 64 checkpoints). Each iteration resumes the finished thread:
//! read the latest checkpoint, rebuild the state from the latest snapshot
//! and the deltas after it, position the executor, find nothing left to run.
//!
//! * `resume/memory/{100,10000,100000}` — one `MemoryCheckpointer` shared by
//!   the iterations.
//! * `resume/file_cold/{100,10000,100000}` — a new `FileCheckpointer` handle
//!   per iteration (what a restarted process does), reading the thread's log
//!   from disk.
//!
//! Target: resuming a 100,000-step thread within 2× of a 100-step one, in
//! memory and on the file store from a fresh handle. Figures are in README.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "common/counting.rs"]
mod counting;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use counting::{Counter, counting_loop};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use flowtrace::RunConfig;
use flowtrace::checkpoint::{Checkpointer, FileCheckpointer, MemoryCheckpointer};
use flowtrace::exec::Durability;

fn config(store: Arc<dyn Checkpointer>) -> RunConfig {
    RunConfig::new()
        .checkpointer(store)
        .thread("long")
        .recursion_limit(1_000_000)
}

fn dir(label: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "flowtrace-bench-resume-{label}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn resume(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("resume");
    for n in [100u64, 10_000, 100_000] {
        let g = counting_loop(n);
        // In memory.
        let memory: Arc<dyn Checkpointer> = Arc::new(MemoryCheckpointer::new());
        let out = rt
            .block_on(g.invoke(Counter::default(), config(memory.clone())))
            .unwrap();
        assert_eq!(out.state.n, n);
        group.bench_with_input(BenchmarkId::new("memory", n), &n, |b, _| {
            b.iter(|| {
                let out = rt
                    .block_on(g.invoke(flowtrace::RunInput::Resume, config(memory.clone())))
                    .unwrap();
                black_box(out.state.n)
            })
        });
        drop(memory);

        // On disk, from a fresh handle each time (a restarted process).
        let path = dir(&n.to_string());
        {
            let file: Arc<dyn Checkpointer> = Arc::new(FileCheckpointer::open(&path).unwrap());
            rt.block_on(g.invoke(
                Counter::default(),
                config(file).durability(Durability::Exit),
            ))
            .unwrap();
        }
        group.bench_with_input(BenchmarkId::new("file_cold", n), &n, |b, _| {
            b.iter(|| {
                let file: Arc<dyn Checkpointer> = Arc::new(FileCheckpointer::open(&path).unwrap());
                let out = rt
                    .block_on(g.invoke(flowtrace::RunInput::Resume, config(file)))
                    .unwrap();
                black_box(out.state.n)
            })
        });
        let _ = std::fs::remove_dir_all(&path);
    }
    group.finish();
}

criterion_group!(benches, resume);
criterion_main!(benches);
