//! Unit tests of the file store: framing, names, torn tails, damage,
//! handles sharing a directory.

use std::time::Duration;

use serde_json::json;

use std::fs;
use std::path::{Path, PathBuf};

use super::frame::{
    self, HEADER_LEN, MAX_NAME_LEN, decode_frame, encode_frame, file_name, fnv1a64, scan,
};
use super::index::checkpoint_payload;
use super::*;
use crate::checkpoint::{
    CHECKPOINT_FORMAT_VERSION, CheckpointBatch, PendingWrite, PruneOutcome, Retention, StateRecord,
    ThreadFilter,
};
use crate::checkpoint::{TaskSpec, ThreadStatus};
use crate::ids::{NodeId, RunId, StepId};
use crate::pricing::{Cost, TokenUsage};
use crate::trace::StepRecord;
use crate::trace::{StepStatus, Timestamp};

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "flowtrace-file-{label}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn step(node: &str) -> StepRecord {
    StepRecord {
        step_id: StepId(1),
        node: NodeId::new(node),
        parent_step_id: None,
        status: StepStatus::Succeeded,
        attempts: 1,
        usage: TokenUsage::new(10, 5),
        cost: Cost::ZERO,
        latency: Duration::from_micros(1500),
        started_at: Timestamp::from_unix_micros(1_700_000_000_000_000),
        provider: None,
        model: None,
        cache_hits: 0,
        call_retries: 0,
        fallbacks: 0,
        branch: None,
        input: None,
        error: None,
    }
}

fn cp(thread: &ThreadId, seq: u64) -> Checkpoint {
    Checkpoint {
        thread_id: thread.clone(),
        seq,
        parent_seq: seq.checked_sub(1),
        forked_from: None,
        run_id: RunId::new("r"),
        step: seq + 1,
        nodes: vec![NodeId::new("n")],
        created_at: Timestamp::now(),
        format_version: CHECKPOINT_FORMAT_VERSION,
        state: if seq == 0 {
            StateRecord::Full(json!({ "items": [] }))
        } else {
            StateRecord::Delta(vec![json!({ "seq": seq })])
        },
        frontier: vec![TaskSpec::new("n", None)],
        joins: Vec::new(),
        node_executions: seq + 1,
        steps: vec![step("n")],
        status: ThreadStatus::Running,
        step_ids: seq + 1,
        interrupts: Vec::new(),
        approvals: Vec::new(),
        error: None,
        metadata: Default::default(),
    }
}

fn write(task: u32) -> PendingWrite {
    PendingWrite {
        task,
        node: NodeId::new("n"),
        update: Some(json!({ "task": task })),
        dispatches: Vec::new(),
        step: step("n"),
    }
}

fn frames(payloads: &[&[u8]]) -> Vec<u8> {
    payloads
        .iter()
        .filter_map(|p| encode_frame(p))
        .flatten()
        .collect()
}

#[test]
fn fnv1a64_matches_reference_values() {
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn frames_are_length_checksum_payload() {
    let frame = encode_frame(br#"{"a":1}"#).unwrap();
    assert_eq!(&frame[..4], &7u32.to_le_bytes());
    assert_eq!(&frame[4..12], &fnv1a64(br#"{"a":1}"#).to_le_bytes());
    assert_eq!(&frame[12..], br#"{"a":1}"#);
    assert_eq!(decode_frame(&frame), Ok(&br#"{"a":1}"#[..]));
    let mut in_place = [&[0u8; HEADER_LEN][..], br#"{"a":1}"#].concat();
    frame::frame_in_place(&mut in_place).unwrap();
    assert_eq!(in_place, frame);
}

#[test]
fn scan_reads_every_whole_record() {
    let buf = frames(&[br#"{"a":1}"#, br#"{"b":22}"#, br#"{"c":333}"#]);
    let scan = scan(&buf).unwrap();
    assert!(scan.torn.is_none());
    let payloads: Vec<&[u8]> = scan.records.iter().map(|(_, p)| *p).collect();
    assert_eq!(
        payloads,
        [&br#"{"a":1}"#[..], br#"{"b":22}"#, br#"{"c":333}"#]
    );
    assert_eq!(scan.records.last().map(|r| r.0), Some(buf.len()));
    assert!(frame::scan(&[]).unwrap().records.is_empty());
}

#[test]
fn scan_ignores_any_torn_tail() {
    let buf = frames(&[br#"{"a":1}"#, br#"{"b":22}"#, br#"{"c":333}"#]);
    let two = frames(&[br#"{"a":1}"#, br#"{"b":22}"#]).len();
    // Every cut inside the last record leaves the first two.
    for cut in two + 1..buf.len() {
        let scan = scan(&buf[..cut]).unwrap();
        assert_eq!(scan.records.len(), 2, "cut at {cut}");
        assert!(scan.torn.is_some(), "cut at {cut}");
    }
    // A flipped byte in the last record: a torn write too.
    let mut flipped = buf.clone();
    let last = flipped.len() - 2;
    flipped[last] ^= 0x40;
    let scan = scan(&flipped).unwrap();
    assert_eq!(scan.records.len(), 2);
    assert_eq!(scan.torn, Some("checksum mismatch"));
    // Zeros after the last record (a file extended but never written).
    let mut zeros = buf.clone();
    zeros.extend([0u8; 100]);
    let scan = frame::scan(&zeros).unwrap();
    assert_eq!(scan.records.len(), 3);
    assert!(scan.torn.is_some());
}

#[test]
fn scan_rejects_damage_before_valid_records() {
    let buf = frames(&[br#"{"a":1}"#, br#"{"b":22}"#, br#"{"c":333}"#]);
    let one = frames(&[br#"{"a":1}"#]).len();
    let two = frames(&[br#"{"a":1}"#, br#"{"b":22}"#]).len();
    // Flip each byte of the middle record in turn: header or payload.
    for i in one..two {
        let mut bad = buf.clone();
        bad[i] ^= 0x01;
        let err = scan(&bad).unwrap_err();
        assert_eq!(err.at, one, "flipped byte {i}");
        assert_eq!(err.next_valid, two, "flipped byte {i}");
    }
}

#[test]
fn file_names_are_safe_and_distinct() {
    let name = |s: &str| file_name(&ThreadId::new(s));
    assert_eq!(name("run_1-a"), "t-run_1-a.log");
    assert_eq!(name("A"), "t-%41.log");
    assert_eq!(name("../x y"), "t-%2E%2E%2Fx%20y.log");
    assert_eq!(name("%41"), "t-%2541.log");
    assert_eq!(name(""), "t-.log");
    assert_ne!(name("a").to_lowercase(), name("A").to_lowercase());
    let long = "é".repeat(200);
    let cut = name(&long);
    assert!(cut.len() <= MAX_NAME_LEN + 4, "{}", cut.len());
    assert!(cut.contains('~'));
    assert_ne!(cut, name(&format!("{long}x")));
    assert!(
        cut.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"%~_-.".contains(&b))
    );
}

async fn history(store: &FileCheckpointer, thread: &ThreadId) -> Vec<u64> {
    let mut seqs: Vec<u64> = store
        .list(thread, None, usize::MAX)
        .await
        .unwrap()
        .iter()
        .map(|c| c.seq)
        .collect();
    seqs.reverse();
    seqs
}

#[tokio::test]
async fn round_trips_through_a_reopened_store() {
    let dir = TempDir::new("reopen");
    let thread = ThreadId::new("Thread/1");
    let written: Vec<Checkpoint> = (0..4).map(|s| cp(&thread, s)).collect();
    {
        let store = FileCheckpointer::open(&dir.0).unwrap();
        for c in &written {
            store.append(c.clone()).await.unwrap();
        }
        store.put_write(&thread, 3, write(1)).await.unwrap();
        store.put_write(&thread, 3, write(0)).await.unwrap();
    }
    let store = FileCheckpointer::open(&dir.0).unwrap();
    let mut read = store.list(&thread, None, usize::MAX).await.unwrap();
    read.reverse();
    assert_eq!(read, written);
    assert_eq!(
        store.writes(&thread, 3).await.unwrap(),
        [write(0), write(1)]
    );
    assert_eq!(
        store.chain(&thread, 2).await.unwrap(),
        written[..3].to_vec()
    );
    assert!(dir.0.join("t-%54hread%2F1.log").is_file());
}

#[tokio::test]
async fn torn_tail_is_ignored_then_cut_off() {
    let dir = TempDir::new("torn");
    let thread = ThreadId::new("torn");
    let path = dir.0.join(file_name(&thread));
    let store = FileCheckpointer::open(&dir.0).unwrap();
    for s in 0..3 {
        store.append(cp(&thread, s)).await.unwrap();
    }
    let two_len = {
        let bytes = fs::read(&path).unwrap();
        let scan = scan(&bytes).unwrap();
        scan.records[1].0
    };
    let full = fs::read(&path).unwrap();
    for cut in [1, 5, 11, 12, 13, full.len() - two_len - 1] {
        fs::write(&path, &full[..full.len() - cut]).unwrap();
        let store = FileCheckpointer::open(&dir.0).unwrap();
        assert_eq!(history(&store, &thread).await, [0, 1], "cut {cut}");
        assert_eq!(
            store.get(&thread, None).await.unwrap().map(|c| c.seq),
            Some(1)
        );
        // Seq 2 is free again: the torn record never counted.
        store.append(cp(&thread, 2)).await.unwrap();
        let reopened = FileCheckpointer::open(&dir.0).unwrap();
        assert_eq!(history(&reopened, &thread).await, [0, 1, 2], "cut {cut}");
        let bytes = fs::read(&path).unwrap();
        let scan = scan(&bytes).unwrap();
        assert_eq!((scan.records.len(), scan.torn), (3, None), "cut {cut}");
    }
    // A torn pending write behaves the same.
    let store = FileCheckpointer::open(&dir.0).unwrap();
    store.put_write(&thread, 2, write(0)).await.unwrap();
    let with_write = fs::read(&path).unwrap();
    fs::write(&path, &with_write[..with_write.len() - 3]).unwrap();
    let store = FileCheckpointer::open(&dir.0).unwrap();
    assert!(store.writes(&thread, 2).await.unwrap().is_empty());
    assert_eq!(history(&store, &thread).await, [0, 1, 2]);
    store.put_write(&thread, 2, write(0)).await.unwrap();
    assert_eq!(fs::read(&path).unwrap(), with_write);
}

#[tokio::test]
async fn damage_before_valid_records_is_corrupt() {
    let dir = TempDir::new("corrupt");
    let thread = ThreadId::new("corrupt");
    let path = dir.0.join(file_name(&thread));
    let store = FileCheckpointer::open(&dir.0).unwrap();
    for s in 0..3 {
        store.append(cp(&thread, s)).await.unwrap();
    }
    let mut bytes = fs::read(&path).unwrap();
    let middle = {
        let scan = scan(&bytes).unwrap();
        (scan.records[0].0 + scan.records[1].0) / 2
    };
    bytes[middle] ^= 0x20;
    fs::write(&path, &bytes).unwrap();

    let store = FileCheckpointer::open(&dir.0).unwrap();
    let is_corrupt =
        |r: Result<(), CheckpointError>| matches!(r, Err(CheckpointError::Corrupt { .. }));
    assert!(is_corrupt(store.get(&thread, None).await.map(drop)));
    assert!(is_corrupt(store.list(&thread, None, 10).await.map(drop)));
    assert!(is_corrupt(store.writes(&thread, 0).await.map(drop)));
    assert!(is_corrupt(store.append(cp(&thread, 3)).await));
    // Nothing was appended or cut.
    assert_eq!(fs::read(&path).unwrap(), bytes);
    let Err(CheckpointError::Corrupt { message, .. }) = store.get(&thread, Some(0)).await else {
        panic!("expected Corrupt");
    };
    assert!(message.contains("followed by a valid record"), "{message}");
}

#[tokio::test]
async fn a_valid_checksum_over_bad_json_is_corrupt() {
    let dir = TempDir::new("badjson");
    let thread = ThreadId::new("t");
    let store = FileCheckpointer::open(&dir.0).unwrap();
    fs::write(dir.0.join(file_name(&thread)), frames(&[br#"{"nope":1}"#])).unwrap();
    assert!(matches!(
        store.get(&thread, None).await,
        Err(CheckpointError::Corrupt { .. })
    ));
}

#[tokio::test]
async fn handles_see_each_others_appends_and_fence() {
    let dir = TempDir::new("fence");
    let thread = ThreadId::new("shared");
    let a = FileCheckpointer::open(&dir.0).unwrap();
    let b = FileCheckpointer::open(&dir.0).unwrap();
    a.append(cp(&thread, 0)).await.unwrap();
    assert_eq!(b.get(&thread, None).await.unwrap().map(|c| c.seq), Some(0));
    b.append(cp(&thread, 1)).await.unwrap();
    // `a` has not read seq 1 yet, but the fence re-reads under the lock.
    let err = a.append(cp(&thread, 1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::Conflict {
                seq: 1,
                expected: 2,
                ..
            }
        ),
        "{err}"
    );
    a.put_write(&thread, 1, write(0)).await.unwrap();
    let mut other = write(0);
    other.update = None;
    b.put_write(&thread, 1, other).await.unwrap();
    assert_eq!(b.writes(&thread, 1).await.unwrap(), [write(0)]);
    assert_eq!(history(&a, &thread).await, [0, 1]);
}

#[tokio::test]
async fn unsupported_versions_are_refused() {
    let dir = TempDir::new("version");
    let thread = ThreadId::new("v");
    let store = FileCheckpointer::open(&dir.0).unwrap();
    let mut c = cp(&thread, 0);
    c.format_version = 99;
    assert!(matches!(
        store.append(c.clone()).await,
        Err(CheckpointError::UnsupportedVersion { found: 99, .. })
    ));
    // One written by some other release is refused when read.
    let payload = checkpoint_payload(&serde_json::to_vec(&c).unwrap());
    fs::write(
        dir.0.join(file_name(&thread)),
        encode_frame(&payload).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        store.get(&thread, None).await,
        Err(CheckpointError::UnsupportedVersion { found: 99, .. })
    ));
}

#[tokio::test]
async fn missing_threads_read_as_empty_without_creating_files() {
    let dir = TempDir::new("empty");
    let store = FileCheckpointer::open(dir.0.join("nested/deeper")).unwrap();
    let thread = ThreadId::new("none");
    assert_eq!(store.get(&thread, None).await.unwrap(), None);
    assert!(store.list(&thread, None, 5).await.unwrap().is_empty());
    assert!(store.writes(&thread, 0).await.unwrap().is_empty());
    assert!(store.chain(&thread, 0).await.is_err());
    assert_eq!(fs::read_dir(store.dir()).unwrap().count(), 0);
}

#[test]
fn outside_a_runtime_calls_fail_cleanly() {
    let dir = TempDir::new("nort");
    let store = FileCheckpointer::open(&dir.0).unwrap();
    let thread = ThreadId::new("x");
    let mut fut = store.get(&thread, None);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let result = fut.as_mut().poll(&mut cx);
    assert!(matches!(
        result,
        std::task::Poll::Ready(Err(CheckpointError::Misconfigured { .. }))
    ));
}

fn full(thread: &ThreadId, seq: u64) -> Checkpoint {
    Checkpoint {
        state: StateRecord::Full(json!({ "items": seq })),
        ..cp(thread, seq)
    }
}

/// The files in `dir` other than sidecar indexes (`.idx`).
fn logs_and_others(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".idx")
        })
        .count()
}

fn record_count(path: &Path) -> usize {
    let bytes = fs::read(path).unwrap();
    let scan = scan(&bytes).unwrap();
    assert!(scan.torn.is_none());
    scan.records.len()
}

#[tokio::test]
async fn a_batch_is_one_record_read_back_whole() {
    let dir = TempDir::new("batch");
    let thread = ThreadId::new("batch");
    let path = dir.0.join(file_name(&thread));
    let store = FileCheckpointer::open(&dir.0).unwrap();
    store.append(cp(&thread, 0)).await.unwrap();
    let batch = CheckpointBatch {
        checkpoints: vec![cp(&thread, 1), full(&thread, 2), cp(&thread, 3)],
        writes: vec![(3, write(1)), (0, write(0)), (3, write(0))],
    };
    store.append_batch(&thread, batch.clone()).await.unwrap();
    assert_eq!(record_count(&path), 2);
    for handle in [store.clone(), FileCheckpointer::open(&dir.0).unwrap()] {
        assert_eq!(history(&handle, &thread).await, [0, 1, 2, 3]);
        assert_eq!(
            handle.chain(&thread, 3).await.unwrap(),
            batch.checkpoints[1..]
        );
        assert_eq!(
            handle.writes(&thread, 3).await.unwrap(),
            [write(0), write(1)]
        );
        assert_eq!(handle.writes(&thread, 0).await.unwrap(), [write(0)]);
    }

    // Torn anywhere inside, the batch counts for nothing; the next write
    // cuts it off.
    let whole = fs::read(&path).unwrap();
    let first = {
        let scan = scan(&whole).unwrap();
        scan.records[0].0
    };
    for cut in [
        first + 5,
        first + 40,
        (first + whole.len()) / 2,
        whole.len() - 1,
    ] {
        fs::write(&path, &whole[..cut]).unwrap();
        let store = FileCheckpointer::open(&dir.0).unwrap();
        assert_eq!(history(&store, &thread).await, [0], "cut at {cut}");
        assert!(store.writes(&thread, 3).await.unwrap().is_empty());
        store.append_batch(&thread, batch.clone()).await.unwrap();
        assert_eq!(fs::read(&path).unwrap(), whole, "cut at {cut}");
    }
}

#[tokio::test]
async fn prune_rewrites_the_log_and_other_handles_follow() {
    let dir = TempDir::new("prune");
    let thread = ThreadId::new("pruned");
    let path = dir.0.join(file_name(&thread));
    let a = FileCheckpointer::open(&dir.0).unwrap();
    let b = FileCheckpointer::open(&dir.0).unwrap();
    for seq in 0..30u64 {
        let c = if seq.is_multiple_of(10) {
            full(&thread, seq)
        } else {
            cp(&thread, seq)
        };
        a.append(c).await.unwrap();
    }
    a.put_write(&thread, 29, write(0)).await.unwrap();
    a.put_write(&thread, 3, write(0)).await.unwrap();
    let before = fs::metadata(&path).unwrap().len();
    // `b` has the log open and indexed.
    assert_eq!(history(&b, &thread).await.len(), 30);

    let outcome = a.prune(&thread, Retention::Latest(5)).await.unwrap();
    assert_eq!(outcome, PruneOutcome::new(20, 20));
    let after = fs::metadata(&path).unwrap().len();
    assert!(after * 2 < before, "{after} of {before} bytes");
    assert_eq!(record_count(&path), 1);
    // No temporary file is left behind.
    assert_eq!(logs_and_others(&dir.0), 1);

    // `b` notices the replaced file: reads and fencing follow it.
    assert_eq!(history(&b, &thread).await, (20..30).collect::<Vec<_>>());
    assert_eq!(b.get(&thread, Some(3)).await.unwrap(), None);
    assert_eq!(b.writes(&thread, 29).await.unwrap(), [write(0)]);
    let err = b.append(cp(&thread, 10)).await.unwrap_err();
    assert!(
        matches!(err, CheckpointError::Conflict { expected: 30, .. }),
        "{err}"
    );
    b.append(cp(&thread, 30)).await.unwrap();
    assert_eq!(a.get(&thread, None).await.unwrap().map(|c| c.seq), Some(30));
    let c = FileCheckpointer::open(&dir.0).unwrap();
    assert_eq!(history(&c, &thread).await, (20..31).collect::<Vec<_>>());
    assert_eq!(c.chain(&thread, 30).await.unwrap().len(), 11);
}

#[tokio::test]
async fn delete_removes_the_file_and_other_handles_follow() {
    let dir = TempDir::new("delete");
    let thread = ThreadId::new("gone");
    let a = FileCheckpointer::open(&dir.0).unwrap();
    let b = FileCheckpointer::open(&dir.0).unwrap();
    for seq in 0..3 {
        a.append(cp(&thread, seq)).await.unwrap();
    }
    assert_eq!(history(&b, &thread).await, [0, 1, 2]);
    assert!(a.delete_thread(&thread).await.unwrap());
    assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 0);
    assert_eq!(b.get(&thread, None).await.unwrap(), None);
    // `b` had the log open: its append starts a new log, fenced at 0.
    let err = b.append(cp(&thread, 3)).await.unwrap_err();
    assert!(
        matches!(err, CheckpointError::Conflict { expected: 0, .. }),
        "{err}"
    );
    b.append(cp(&thread, 0)).await.unwrap();
    assert_eq!(history(&a, &thread).await, [0]);
    assert!(!a.delete_thread(&ThreadId::new("never")).await.unwrap());
    assert_eq!(logs_and_others(&dir.0), 1);
}

#[tokio::test]
async fn copy_and_list_handle_long_thread_ids() {
    let dir = TempDir::new("long");
    let store = FileCheckpointer::open(&dir.0).unwrap();
    let long = ThreadId::new(format!("{}-long", "Ü".repeat(150)));
    let copy = ThreadId::new(format!("{}-copy", "Ü".repeat(150)));
    assert!(file_name(&long).contains('~'));
    for seq in 0..3 {
        store.append(cp(&long, seq)).await.unwrap();
    }
    store.put_write(&long, 2, write(0)).await.unwrap();
    store.copy_thread(&long, &copy).await.unwrap();
    let listed: Vec<ThreadId> = store
        .list_threads(&ThreadFilter::new())
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.thread_id)
        .collect();
    assert_eq!(listed, [copy.clone(), long.clone()]);
    assert_eq!(store.writes(&copy, 2).await.unwrap(), [write(0)]);
    assert_eq!(logs_and_others(&dir.0), 2);
}

#[tokio::test]
async fn only_the_most_recently_used_threads_stay_indexed() {
    let dir = TempDir::new("lru");
    let store = FileCheckpointer::open(&dir.0)
        .unwrap()
        .with_cached_threads(2);
    assert_eq!(store.cached_threads(), 2);
    let threads: Vec<ThreadId> = (0..5).map(|i| ThreadId::new(format!("t{i}"))).collect();
    for t in &threads {
        for seq in 0..3 {
            store.append(cp(t, seq)).await.unwrap();
        }
    }
    assert_eq!(lock(&store.inner.cache).logs.len(), 2);
    // Evicted threads are read back from disk, and stay fenced.
    for t in &threads {
        assert_eq!(history(&store, t).await, [0, 1, 2]);
        assert!(matches!(
            store.append(cp(t, 1)).await,
            Err(CheckpointError::Conflict { expected: 3, .. })
        ));
    }
    let cache = lock(&store.inner.cache);
    assert_eq!((cache.logs.len(), cache.recent.len()), (2, 2));
    let kept: Vec<&ThreadId> = cache.recent.values().collect();
    assert_eq!(kept, [&threads[3], &threads[4]]);
}

#[tokio::test]
async fn a_pruned_log_records_where_its_history_starts() {
    let dir = TempDir::new("start");
    let thread = ThreadId::new("s");
    let store = FileCheckpointer::open(&dir.0).unwrap();
    let mut first = full(&thread, 0);
    first.metadata.insert("tenant".into(), json!("acme"));
    store.append(first.clone()).await.unwrap();
    for seq in 1..4 {
        store.append(cp(&thread, seq)).await.unwrap();
    }
    store.append(full(&thread, 4)).await.unwrap();
    store.prune(&thread, Retention::Latest(1)).await.unwrap();
    let bytes = fs::read(dir.0.join(file_name(&thread))).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains(r#"{"batch":{"start":{"seq":4,"#), "{text}");
    let info = FileCheckpointer::open(&dir.0)
        .unwrap()
        .list_threads(&ThreadFilter::new())
        .await
        .unwrap();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].created_at, first.created_at);
    assert_eq!(info[0].metadata.get("tenant"), Some(&json!("acme")));
    assert_eq!(info[0].latest_seq, 4);
}

#[cfg(unix)]
#[tokio::test]
async fn list_threads_caches_summaries_next_to_the_logs() {
    let dir = TempDir::new("summary");
    let thread = ThreadId::new("summed");
    let log = dir.0.join(file_name(&thread));
    let sum = dir.0.join("t-summed.sum");
    let writer = FileCheckpointer::open(&dir.0).unwrap();
    for seq in 0..3 {
        writer.append(cp(&thread, seq)).await.unwrap();
    }
    let list = |store: FileCheckpointer| async move {
        store.list_threads(&ThreadFilter::new()).await.map(|l| {
            l.iter()
                .map(|i| (i.thread_id.clone(), i.latest_seq))
                .collect::<Vec<_>>()
        })
    };
    // A handle that never touched the thread reads its log once, and
    // caches the summary.
    assert_eq!(
        list(FileCheckpointer::open(&dir.0).unwrap()).await.unwrap(),
        [(thread.clone(), 2)]
    );
    assert!(sum.is_file());

    // While the log's length, time and identity match, the log is not read:
    // garbage of the same length behind the same stamp still lists.
    let original = fs::read(&log).unwrap();
    let modified = fs::metadata(&log).unwrap().modified().unwrap();
    {
        let f = fs::OpenOptions::new().write(true).open(&log).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&vec![b'#'; original.len()], 0).unwrap();
        f.set_modified(modified).unwrap();
    }
    assert_eq!(
        list(FileCheckpointer::open(&dir.0).unwrap()).await.unwrap(),
        [(thread.clone(), 2)]
    );
    fs::write(&log, &original).unwrap();

    // A changed log is read again.
    writer.append(cp(&thread, 3)).await.unwrap();
    assert_eq!(
        list(FileCheckpointer::open(&dir.0).unwrap()).await.unwrap(),
        [(thread.clone(), 3)]
    );
    assert!(writer.delete_thread(&thread).await.unwrap());
    assert!(!sum.exists());
    assert!(list(writer).await.unwrap().is_empty());
}

// ===== Sidecar index (`t-<name>.idx`) =====

/// Appends checkpoints `0..n` to `thread` (a full state every 10th) and
/// two pending writes after the latest.
async fn long_thread(store: &FileCheckpointer, thread: &ThreadId, n: u64) {
    for seq in 0..n {
        let c = if seq % 10 == 0 {
            full(thread, seq)
        } else {
            cp(thread, seq)
        };
        store.append(c).await.unwrap();
        if seq % 7 == 3 {
            store.put_write(thread, seq, write(1)).await.unwrap();
        }
    }
    store.put_write(thread, n - 1, write(0)).await.unwrap();
    store.put_write(thread, n - 1, write(2)).await.unwrap();
}

/// What a resume reads: the latest, its chain and its writes (as seqs and
/// tasks).
async fn resume_view(store: &FileCheckpointer, thread: &ThreadId) -> (u64, Vec<u64>, Vec<u32>) {
    let latest = store.get(thread, None).await.unwrap().unwrap().seq;
    let chain = store.chain(thread, latest).await.unwrap();
    let writes = store.writes(thread, latest).await.unwrap();
    (
        latest,
        chain.iter().map(|c| c.seq).collect(),
        writes.iter().map(|w| w.task).collect(),
    )
}

/// Everything a full read answers.
async fn whole_view(
    store: &FileCheckpointer,
    thread: &ThreadId,
) -> (Vec<u64>, Vec<u64>, Vec<u32>, Vec<ThreadInfo>) {
    let old_chain = store.chain(thread, 14).await.unwrap();
    let old_writes = store.writes(thread, 3).await.unwrap();
    let infos = store.list_threads(&ThreadFilter::new()).await.unwrap();
    (
        history(store, thread).await,
        old_chain.iter().map(|c| c.seq).collect(),
        old_writes.iter().map(|w| w.task).collect(),
        infos,
    )
}

/// The sidecar's checkpoint entries.
fn sidecar_entries(log: &Path) -> Vec<idx::Entry> {
    let bytes = fs::read(idx::path_of(log)).unwrap();
    assert_eq!(bytes.len() % idx::ENTRY_LEN, 0);
    bytes
        .chunks(idx::ENTRY_LEN)
        .map(|c| idx::Entry::decode(c).unwrap())
        .filter(|e| e.write.is_none())
        .collect()
}

#[tokio::test]
async fn a_new_handle_reads_only_the_tail_to_resume() {
    let dir = TempDir::new("cold");
    let thread = ThreadId::new("cold");
    let path = dir.0.join(file_name(&thread));
    let writer = FileCheckpointer::open(&dir.0).unwrap();
    long_thread(&writer, &thread, 95).await;
    let expected = resume_view(&writer, &thread).await;
    assert_eq!(expected, (94, (90..95).collect(), vec![0, 1, 2]));
    let entries = sidecar_entries(&path);
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (0..95).collect::<Vec<_>>()
    );

    // Damage a checkpoint early in the log, far before the tail.
    let mut bytes = fs::read(&path).unwrap();
    let third = entries[3].loc;
    let at = usize::try_from(third.at).unwrap() + 5;
    bytes[at] ^= 0x20;
    fs::write(&path, &bytes).unwrap();

    let before = log::tail_reads::of(&path);
    let cold = FileCheckpointer::open(&dir.0).unwrap();
    assert_eq!(resume_view(&cold, &thread).await, expected);
    assert_eq!(log::tail_reads::of(&path), before + 1);
    // Fencing knows the latest.
    let err = cold.append(cp(&thread, 94)).await.unwrap_err();
    assert!(
        matches!(err, CheckpointError::Conflict { expected: 95, .. }),
        "{err}"
    );
    // Reading older history reads the log whole, and finds the damage.
    let err = cold.get(&thread, Some(3)).await.unwrap_err();
    assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
    let cold = FileCheckpointer::open(&dir.0).unwrap();
    let err = cold.list(&thread, None, 200).await.unwrap_err();
    assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");
    let cold = FileCheckpointer::open(&dir.0).unwrap();
    let err = cold.chain(&thread, 20).await.unwrap_err();
    assert!(matches!(err, CheckpointError::Corrupt { .. }), "{err}");

    // Without the damage, a cold handle that reads the tail first answers
    // older questions (read whole on demand) like the writer.
    bytes[at] ^= 0x20;
    fs::write(&path, &bytes).unwrap();
    let cold = FileCheckpointer::open(&dir.0).unwrap();
    assert_eq!(resume_view(&cold, &thread).await, expected);
    assert_eq!(
        whole_view(&cold, &thread).await,
        whole_view(&writer, &thread).await
    );
    // And it keeps appending to the sidecar.
    cold.append(full(&thread, 95)).await.unwrap();
    cold.append(cp(&thread, 96)).await.unwrap();
    assert_eq!(sidecar_entries(&path).len(), 97);
    let again = FileCheckpointer::open(&dir.0).unwrap();
    assert_eq!(
        resume_view(&again, &thread).await,
        (96, vec![95, 96], vec![])
    );
}

#[tokio::test]
async fn a_missing_torn_stale_or_wrong_sidecar_falls_back_to_the_log() {
    let dir = TempDir::new("sidecar");
    let thread = ThreadId::new("side");
    let other = ThreadId::new("other");
    let path = dir.0.join(file_name(&thread));
    let sidecar = idx::path_of(&path);
    let writer = FileCheckpointer::open(&dir.0).unwrap();
    long_thread(&writer, &thread, 40).await;
    let stale = fs::read(&sidecar).unwrap();
    for seq in 40..57 {
        writer.append(cp(&thread, seq)).await.unwrap();
    }
    writer.put_write(&thread, 56, write(4)).await.unwrap();
    long_thread(&writer, &other, 33).await;
    let good = fs::read(&sidecar).unwrap();
    let resume = resume_view(&writer, &thread).await;
    assert_eq!(resume, (56, (30..57).collect(), vec![4]));
    let whole = whole_view(&writer, &thread).await;

    let wrong = fs::read(idx::path_of(&dir.0.join(file_name(&other)))).unwrap();
    let mut garbled = good.clone();
    let last = garbled.len() - 20;
    garbled[last] ^= 1;
    let cases: [(&str, Option<Vec<u8>>); 6] = [
        ("missing", None),
        ("torn", Some(good[..good.len() - 5].to_vec())),
        ("garbled", Some(garbled)),
        ("stale", Some(stale)),
        ("another thread's", Some(wrong)),
        ("empty", Some(Vec::new())),
    ];
    for (case, content) in cases {
        match &content {
            Some(c) => fs::write(&sidecar, c).unwrap(),
            None => fs::remove_file(&sidecar).unwrap(),
        }
        let cold = FileCheckpointer::open(&dir.0).unwrap();
        assert_eq!(resume_view(&cold, &thread).await, resume, "{case}");
        let cold = FileCheckpointer::open(&dir.0).unwrap();
        assert_eq!(whole_view(&cold, &thread).await, whole, "{case}");
        // A handle that read the log whole rewrote the sidecar.
        let cold = FileCheckpointer::open(&dir.0).unwrap();
        assert_eq!(history(&cold, &thread).await.len(), 57, "{case}");
        if case != "stale" {
            assert_eq!(fs::read(&sidecar).unwrap(), good, "{case}");
        }
        // A writer brings a stale one up to date.
        let writer = FileCheckpointer::open(&dir.0).unwrap();
        assert_eq!(resume_view(&writer, &thread).await, resume, "{case}");
        writer.put_write(&thread, 56, write(4)).await.unwrap();
    }
    let seqs: Vec<u64> = sidecar_entries(&path).iter().map(|e| e.seq).collect();
    assert_eq!(seqs.last(), Some(&56));
}

#[tokio::test]
async fn handles_appending_in_turn_keep_the_sidecar_whole() {
    let dir = TempDir::new("sidecar-turns");
    let thread = ThreadId::new("turns");
    let path = dir.0.join(file_name(&thread));
    let a = FileCheckpointer::open(&dir.0).unwrap();
    let b = FileCheckpointer::open(&dir.0).unwrap();
    for seq in 0..30 {
        let store = if seq % 2 == 0 { &a } else { &b };
        let c = if seq % 5 == 0 {
            full(&thread, seq)
        } else {
            cp(&thread, seq)
        };
        store.append(c).await.unwrap();
        let other = if seq % 2 == 0 { &b } else { &a };
        other.put_write(&thread, seq, write(1)).await.unwrap();
    }
    b.append_batch(
        &thread,
        CheckpointBatch {
            checkpoints: vec![cp(&thread, 30), full(&thread, 31), cp(&thread, 32)],
            writes: vec![(32, write(7))],
        },
    )
    .await
    .unwrap();
    let entries = sidecar_entries(&path);
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (0..33).collect::<Vec<_>>()
    );
    // Exactly what a full read of the log writes.
    let appended = fs::read(idx::path_of(&path)).unwrap();
    fs::remove_file(idx::path_of(&path)).unwrap();
    let c = FileCheckpointer::open(&dir.0).unwrap();
    assert_eq!(history(&c, &thread).await.len(), 33);
    assert_eq!(fs::read(idx::path_of(&path)).unwrap(), appended);
    let before = log::tail_reads::of(&path);
    let d = FileCheckpointer::open(&dir.0).unwrap();
    assert_eq!(resume_view(&d, &thread).await, (32, vec![31, 32], vec![7]));
    assert_eq!(log::tail_reads::of(&path), before + 1);

    // Prune rewrites the sidecar with the log.
    a.prune(&thread, Retention::Latest(4)).await.unwrap();
    let entries = sidecar_entries(&path);
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (25..33).collect::<Vec<_>>()
    );
    let e = FileCheckpointer::open(&dir.0).unwrap();
    assert_eq!(resume_view(&e, &thread).await, (32, vec![31, 32], vec![7]));
    assert_eq!(history(&e, &thread).await, (25..33).collect::<Vec<_>>());
    // Delete removes it.
    assert!(e.delete_thread(&thread).await.unwrap());
    assert!(!idx::path_of(&path).exists());
}

#[tokio::test]
async fn a_thread_written_as_one_batch_resumes_from_its_tail() {
    let dir = TempDir::new("sidecar-batch");
    let thread = ThreadId::new("batch");
    let path = dir.0.join(file_name(&thread));
    let store = FileCheckpointer::open(&dir.0).unwrap();
    let checkpoints = (0..200)
        .map(|s| {
            if s % 64 == 0 {
                full(&thread, s)
            } else {
                cp(&thread, s)
            }
        })
        .collect();
    store
        .append_batch(
            &thread,
            CheckpointBatch {
                checkpoints,
                writes: vec![(3, write(0)), (199, write(1)), (199, write(2))],
            },
        )
        .await
        .unwrap();
    assert_eq!(record_count(&path), 1);
    let before = log::tail_reads::of(&path);
    let cold = FileCheckpointer::open(&dir.0).unwrap();
    assert_eq!(
        resume_view(&cold, &thread).await,
        (199, (192..200).collect(), vec![1, 2])
    );
    assert_eq!(log::tail_reads::of(&path), before + 1);
    assert_eq!(cold.writes(&thread, 3).await.unwrap(), [write(0)]);
    assert_eq!(history(&cold, &thread).await, (0..200).collect::<Vec<_>>());
}
