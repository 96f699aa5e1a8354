//! Durable steps on PostgreSQL, next to the physical limit: one bare
//! synchronous commit.
//!
//! Everything runs in the same bench process, against the same database,
//! in a fresh schema (dropped at the end):
//!
//! * `postgres/commit/bare_insert` — one single-row insert in autocommit
//!   (pgbench-style): the cost of one synchronous commit, the floor.
//! * `postgres/durable_step/{fresh_thread,after_10000}` — one durable step
//!   of a single run (a 100-step loop of no-op nodes, `Durability::Sync`,
//!   so one checkpoint commit per step), reported per step: on new threads,
//!   and on a thread that already holds 10,000 steps (flat means the same).
//! * `postgres/fanout/100_wide` — a 100-wide fan-out run (split, 100
//!   workers, join): one commit per super-step however wide.
//! * `postgres/parallel/8_runs` — 8 runs of 100 steps at once, each on its
//!   own thread; throughput is durable steps per second.
//! * `postgres/interrupt/approve_and_pause_again` — one human-in-the-loop
//!   cycle: resume a thread paused at an `interrupt_before` gate with an
//!   approval, run the gated node, and pause at the gate again (the
//!   decision's checkpoint, the step's and the pause's). Target: within 3
//!   commits.
//! * `postgres/resume/10000_steps` — resuming a finished 10,000-step thread
//!   through a new checkpointer handle: read the latest checkpoint and the
//!   tail since its snapshot, find nothing left to run.
//!
//! Targets (issue 12): a durable step within 1.2x of one commit and flat
//! to 10,000 steps; the fan-out run under 15 ms; at least 2,500 durable
//! steps/s with 8 runs; resume under 20 ms. Needs `DATABASE_URL`; without
//! it the bench prints SKIPPED and exits. Run it short:
//! `cargo bench --bench postgres -- --warm-up-time 1 --measurement-time 3`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "common/counting.rs"]
mod counting;

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use counting::{Counter, Tick, counting_loop};
use criterion::{BenchmarkId, Criterion, Throughput};
use flowtrace::checkpoint::Checkpointer;
use flowtrace::exec::Durability;
use flowtrace::{GraphBuilder, NodeOutput, RunConfig, RunInput, node_fn};
use flowtrace_store_postgres::{PgConfig, PgPool, PostgresCheckpointer, connect, migrate};

/// Checkpoints a run of [`looping`] writes: the input, `steps` ticks and
/// the finishing node.
fn checkpoints_per_run(steps: u64) -> u64 {
    steps + 2
}

fn fanout(width: usize) -> flowtrace::CompiledGraph<Counter> {
    let noop = || node_fn(|_s, _c| async { Ok(NodeOutput::update(Tick::default())) });
    let mut b = GraphBuilder::<Counter>::new("fanout")
        .add_node("split", noop())
        .add_node("join", noop())
        .set_entry("split")
        .set_finish("join");
    for i in 0..width {
        b = b
            .add_node(
                format!("w{i}"),
                node_fn(|_s, _c| async { Ok(NodeOutput::update(Tick { n: 1, done: false })) }),
            )
            .add_edge("split", format!("w{i}"))
            .add_edge(format!("w{i}"), "join");
    }
    b.compile().unwrap()
}

fn config(store: Arc<dyn Checkpointer>, thread: &str) -> RunConfig {
    RunConfig::new()
        .checkpointer(store)
        .thread(thread)
        .recursion_limit(1_000_000)
}

/// A thread id no other iteration uses.
fn fresh_thread(label: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{label}-{}", N.fetch_add(1, Ordering::Relaxed))
}

fn unique_schema() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("ft_bench_pg_{}_{nanos:x}", std::process::id())
}

/// Runs whole runs of `per_run` steps until `iters` steps are covered,
/// and returns the time of `iters` steps at the measured rate.
fn per_step(iters: u64, per_run: u64, mut run: impl FnMut()) -> Duration {
    let runs = iters.div_ceil(per_run).max(1);
    let start = Instant::now();
    for _ in 0..runs {
        run();
    }
    start
        .elapsed()
        .mul_f64(iters as f64 / (runs * per_run) as f64)
}

fn bench_commit(c: &mut Criterion, rt: &tokio::runtime::Runtime, pool: &PgPool) {
    rt.block_on(
        sqlx::query("create table bench_commit (id bigserial primary key, v bigint not null)")
            .execute(pool),
    )
    .unwrap();
    let mut g = c.benchmark_group("postgres/commit");
    g.bench_function("bare_insert", |b| {
        b.to_async(rt).iter(|| async {
            sqlx::query("insert into bench_commit (v) values ($1)")
                .bind(1_i64)
                .execute(pool)
                .await
                .unwrap()
        })
    });
    g.finish();
}

fn bench_durable_step(c: &mut Criterion, rt: &tokio::runtime::Runtime, pool: &PgPool) {
    const STEPS: u64 = 100;
    let store: Arc<dyn Checkpointer> = Arc::new(PostgresCheckpointer::new(pool.clone()));
    let graph = counting_loop(STEPS);
    let per_run = checkpoints_per_run(STEPS);

    // A thread holding 10,000 steps; each measured run adds 100 more.
    rt.block_on(counting_loop(10_000).invoke(
        Counter::default(),
        config(store.clone(), "long").durability(Durability::Exit),
    ))
    .unwrap();

    let mut g = c.benchmark_group("postgres/durable_step");
    g.throughput(Throughput::Elements(1));
    for (label, long) in [("fresh_thread", false), ("after_10000", true)] {
        g.bench_function(label, |b| {
            b.iter_custom(|iters| {
                per_step(iters, per_run, || {
                    let thread = if long {
                        "long".to_owned()
                    } else {
                        fresh_thread("step")
                    };
                    let out = rt
                        .block_on(graph.invoke(Counter::default(), config(store.clone(), &thread)))
                        .unwrap();
                    assert_eq!(black_box(out.state.n), STEPS);
                })
            })
        });
    }
    g.finish();
}

fn bench_fanout(c: &mut Criterion, rt: &tokio::runtime::Runtime, pool: &PgPool) {
    let store: Arc<dyn Checkpointer> = Arc::new(PostgresCheckpointer::new(pool.clone()));
    let graph = fanout(100);
    let mut g = c.benchmark_group("postgres/fanout");
    g.bench_function("100_wide", |b| {
        b.to_async(rt).iter(|| async {
            let out = graph
                .invoke(
                    Counter::default(),
                    config(store.clone(), &fresh_thread("fanout")).parallel(100),
                )
                .await
                .unwrap();
            assert_eq!(out.state.n, 100);
        })
    });
    g.finish();
}

fn bench_interrupt(c: &mut Criterion, rt: &tokio::runtime::Runtime, pool: &PgPool) {
    let store: Arc<dyn Checkpointer> = Arc::new(PostgresCheckpointer::new(pool.clone()));
    // The tick loop, gated before every tick: each approval runs one tick
    // and pauses at the gate again.
    let graph = counting_loop(u64::MAX);
    let thread = fresh_thread("gated");
    let cfg = || config(store.clone(), &thread).interrupt_before(["tick"]);
    let first = rt
        .block_on(graph.invoke(Counter::default(), cfg()))
        .unwrap();
    let pending = std::sync::Mutex::new(first.interrupts[0].id.clone());
    let mut g = c.benchmark_group("postgres/interrupt");
    g.bench_function("approve_and_pause_again", |b| {
        b.to_async(rt).iter(|| async {
            let id = pending.lock().unwrap().clone();
            let out = graph
                .invoke(
                    flowtrace::exec::Command::approve(id, serde_json::Value::Null),
                    cfg(),
                )
                .await
                .unwrap();
            *pending.lock().unwrap() = out.interrupts[0].id.clone();
        })
    });
    g.finish();
}

fn bench_parallel(c: &mut Criterion, rt: &tokio::runtime::Runtime, pool: &PgPool) {
    const RUNS: u64 = 8;
    const STEPS: u64 = 100;
    let store: Arc<dyn Checkpointer> = Arc::new(PostgresCheckpointer::new(pool.clone()));
    let graph = Arc::new(counting_loop(STEPS));
    let mut g = c.benchmark_group("postgres/parallel");
    g.throughput(Throughput::Elements(RUNS * checkpoints_per_run(STEPS)));
    g.bench_function(BenchmarkId::new("runs", RUNS), |b| {
        b.to_async(rt).iter(|| async {
            let runs: Vec<_> = (0..RUNS)
                .map(|_| {
                    let graph = graph.clone();
                    let store = store.clone();
                    tokio::spawn(async move {
                        graph
                            .invoke(Counter::default(), config(store, &fresh_thread("par")))
                            .await
                            .unwrap()
                            .state
                            .n
                    })
                })
                .collect();
            for r in runs {
                assert_eq!(r.await.unwrap(), STEPS);
            }
        })
    });
    g.finish();
}

fn bench_resume(c: &mut Criterion, rt: &tokio::runtime::Runtime, pool: &PgPool) {
    const STEPS: u64 = 10_000;
    let graph = counting_loop(STEPS);
    rt.block_on(
        graph.invoke(
            Counter::default(),
            config(Arc::new(PostgresCheckpointer::new(pool.clone())), "resume")
                .durability(Durability::Exit),
        ),
    )
    .unwrap();
    let mut g = c.benchmark_group("postgres/resume");
    g.bench_function(BenchmarkId::new("steps", STEPS), |b| {
        b.to_async(rt).iter(|| async {
            // A new handle, as a restarted worker has.
            let store = Arc::new(PostgresCheckpointer::new(pool.clone()));
            let out = graph
                .invoke(RunInput::Resume, config(store, "resume"))
                .await
                .unwrap();
            assert_eq!(black_box(out.state.n), STEPS);
        })
    });
    g.finish();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The machine's commit latency drifts with its load, so the ratio that
/// matters (a durable step against one bare commit) is also measured in
/// alternating rounds, each a batch of bare commits next to one run.
fn paired(rt: &tokio::runtime::Runtime, pool: &PgPool) {
    const ROUNDS: usize = 9;
    const STEPS: u64 = 100;
    let store: Arc<dyn Checkpointer> = Arc::new(PostgresCheckpointer::new(pool.clone()));
    let graph = counting_loop(STEPS);
    let steps = checkpoints_per_run(STEPS) as f64;
    let (mut commit, mut fresh, mut long) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        rt.block_on(async {
            let t = Instant::now();
            for _ in 0..STEPS {
                sqlx::query("insert into bench_commit (v) values ($1)")
                    .bind(2_i64)
                    .execute(pool)
                    .await
                    .unwrap();
            }
            commit.push(t.elapsed().as_secs_f64() * 1e3 / STEPS as f64);
            for (thread, out) in [
                (fresh_thread("paired"), &mut fresh),
                ("long".to_owned(), &mut long),
            ] {
                let t = Instant::now();
                graph
                    .invoke(Counter::default(), config(store.clone(), &thread))
                    .await
                    .unwrap();
                out.push(t.elapsed().as_secs_f64() * 1e3 / steps);
            }
        });
    }
    let ratio = |v: &[f64]| median(v.iter().zip(&commit).map(|(s, c)| s / c).collect());
    println!(
        "postgres/paired (median of {ROUNDS} alternating rounds): bare commit {:.3} ms; \
         durable step {:.3} ms on new threads ({:.2}x a commit), {:.3} ms after 10,000+ steps ({:.2}x)",
        median(commit.clone()),
        median(fresh.clone()),
        ratio(&fresh),
        median(long.clone()),
        ratio(&long),
    );
}

fn main() {
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            eprintln!(
                "SKIPPED postgres bench: set DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/test) to run it"
            );
            return;
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let schema = unique_schema();
    let pool = rt
        .block_on(connect(
            &PgConfig::new(&url).schema(&schema).max_connections(16),
        ))
        .unwrap();
    rt.block_on(migrate(&pool)).unwrap();

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_commit(&mut c, &rt, &pool);
    bench_durable_step(&mut c, &rt, &pool);
    bench_fanout(&mut c, &rt, &pool);
    bench_parallel(&mut c, &rt, &pool);
    bench_interrupt(&mut c, &rt, &pool);
    bench_resume(&mut c, &rt, &pool);
    paired(&rt, &pool);
    c.final_summary();

    rt.block_on(async {
        pool.close().await;
        let admin = connect(&PgConfig::new(&url).max_connections(1))
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "drop schema if exists \"{schema}\" cascade"
        )))
        .execute(&admin)
        .await
        .unwrap();
        admin.close().await;
    });
}
