//! The file checkpointer's memory does not grow with the number of threads
//! it serves. Measured alone: the test runs itself again in a child process
//! with only this test, since it measures the process's resident memory,
//! which other tests of the binary running alongside would disturb.

use std::sync::Arc;
use std::time::Instant;

use flowtrace_core::ThreadId;
use flowtrace_core::checkpoint::conformance::{sample_checkpoint, sample_write};
use flowtrace_core::checkpoint::{
    Checkpoint, CheckpointBatch, Checkpointer, FileCheckpointer, StateRecord, ThreadFilter,
    ThreadStatus,
};
use futures::StreamExt;
use serde_json::json;

use crate::support::TempDir;

use crate::support::rerun_test;

const THREADS: usize = 10_000;
const STEPS: u64 = 20;
const BOUND: u64 = 20 << 20;

/// Resident memory of this process, in bytes (Linux).
fn rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A finished 20-step thread: the full input state, then one delta per
/// super-step, the last one completed.
fn thread_of(i: usize) -> (ThreadId, Vec<Checkpoint>) {
    let thread = ThreadId::new(format!("thread-{i:05}"));
    let checkpoints = (0..=STEPS)
        .map(|seq| {
            let state = if seq == 0 {
                StateRecord::Full(json!({
                    "messages": ["Summarize the attached invoice and flag anything unusual."],
                    "counter": 0,
                }))
            } else {
                StateRecord::Delta(vec![json!({
                    "messages": [format!("step {seq}: a reply of about sixty characters of text")],
                    "counter": 1,
                })])
            };
            let mut cp = sample_checkpoint(&thread, seq, state);
            if seq == 0 {
                cp.metadata
                    .insert("tenant".into(), json!(format!("t{}", i % 7)));
            }
            if seq == STEPS {
                cp.status = ThreadStatus::Completed;
                cp.frontier.clear();
            }
            cp
        })
        .collect();
    (thread, checkpoints)
}

/// Set in the child process that runs only this test.
const CHILD_ENV: &str = "FLOWTRACE_MEMORY_CHILD";

#[test]
fn file_store_memory_stays_bounded() {
    if std::env::var_os(CHILD_ENV).is_none() {
        let out = rerun_test(module_path!(), "file_store_memory_stays_bounded")
            .env(CHILD_ENV, "1")
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        // The figures the child printed.
        eprint!("{stderr}");
        assert!(
            out.status.success(),
            "the child failed:\n{stdout}\n{stderr}"
        );
        // A filter matching no test would succeed without measuring.
        assert!(
            stdout.contains("1 passed"),
            "the child ran no test:\n{stdout}"
        );
        return;
    }
    let Some(start) = rss() else {
        eprintln!("no /proc/self/status: resident memory can't be measured here");
        return;
    };
    // On tmpfs when there is one: what is measured is the handle's memory,
    // not the disk, and 10,000 fsynced files take long to write and delete
    // on some disks. Files read with `pread` don't count as resident memory.
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = TempDir::new_in(&base, "memory-bound");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(FileCheckpointer::open(dir.path()).unwrap());
    let began = Instant::now();

    // Write every thread through one handle: one batch record each.
    runtime.block_on(
        futures::stream::iter(0..THREADS)
            .map(|i| {
                let store = Arc::clone(&store);
                async move {
                    let (thread, checkpoints) = thread_of(i);
                    let writes = vec![(STEPS, sample_write(0, json!("last task")))];
                    store
                        .append_batch(
                            &thread,
                            CheckpointBatch {
                                checkpoints,
                                writes,
                            },
                        )
                        .await
                        .unwrap();
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<()>>(),
    );
    let written = Instant::now();
    let after_writes = rss().unwrap_or(start);

    // Read every thread back through the same handle, as a resume would.
    runtime.block_on(
        futures::stream::iter(0..THREADS)
            .map(|i| {
                let store = Arc::clone(&store);
                async move {
                    let thread = ThreadId::new(format!("thread-{i:05}"));
                    let latest = store.get(&thread, None).await.unwrap().unwrap();
                    assert_eq!(latest.seq, STEPS);
                    let chain = store.chain(&thread, latest.seq).await.unwrap();
                    assert_eq!(chain.len(), STEPS as usize + 1);
                    assert_eq!(store.writes(&thread, STEPS).await.unwrap().len(), 1);
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<()>>(),
    );
    let page = runtime
        .block_on(store.list_threads(&ThreadFilter::new().metadata("tenant", "t3").limit(50)))
        .unwrap();
    assert_eq!(page.len(), 50);
    assert!(page.iter().all(|t| t.status == ThreadStatus::Completed));
    let end = rss().unwrap_or(start);

    let disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let grown = end.saturating_sub(start);
    eprintln!(
        "{THREADS} threads of {STEPS} steps through one FileCheckpointer: \
         written in {:.1} s, read back in {:.1} s; on disk {} bytes a thread; \
         resident memory grew by {:.1} MiB after writing, {:.1} MiB after reading \
         (bound {} MiB)",
        (written - began).as_secs_f64(),
        written.elapsed().as_secs_f64(),
        disk / THREADS as u64,
        after_writes.saturating_sub(start) as f64 / f64::from(1 << 20),
        grown as f64 / f64::from(1 << 20),
        BOUND >> 20,
    );
    assert!(
        grown <= BOUND,
        "resident memory grew by {grown} bytes for {THREADS} threads (bound {BOUND})"
    );
}
