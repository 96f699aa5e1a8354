//! Round trips, torn tails and damage, handles sharing a directory, format
//! versions, and calls outside a runtime.

use std::fs;

use super::super::frame::{encode_frame, file_name, scan};
use super::super::record::checkpoint_payload;
use super::super::*;
use super::*;

pub(super) async fn history(store: &FileCheckpointer, thread: &ThreadId) -> Vec<u64> {
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
