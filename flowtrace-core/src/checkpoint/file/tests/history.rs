//! Batches, prune, delete, copy, listing and the cache of indexed threads.

use std::fs;
use std::path::Path;

use serde_json::json;

use super::super::frame::{file_name, scan};
use super::super::*;
use super::reads::history;
use super::*;
use crate::checkpoint::{CheckpointBatch, PruneOutcome, Retention, StateRecord, ThreadFilter};

pub(super) fn full(thread: &ThreadId, seq: u64) -> Checkpoint {
    Checkpoint {
        state: StateRecord::Full(json!({ "items": seq })),
        ..cp(thread, seq)
    }
}

/// The files in `dir` other than sidecar indexes (`.idx`).
pub(super) fn logs_and_others(dir: &Path) -> usize {
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

pub(super) fn record_count(path: &Path) -> usize {
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
