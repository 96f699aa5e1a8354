//! The file checkpointer never touches a file it did not write: a symbolic
//! link planted at a thread's log or sidecar path, a foreign file or a FIFO
//! there, is refused, and the target is left exactly as it was.

#![cfg(unix)]

use std::fs;
use std::time::{Duration, Instant};

use flowtrace_core::ThreadId;
use flowtrace_core::checkpoint::conformance::sample_checkpoint;
use flowtrace_core::checkpoint::{Checkpointer, FileCheckpointer, StateRecord};
use serde_json::json;

use crate::support::TempDir;

fn first(thread: &ThreadId) -> flowtrace_core::checkpoint::Checkpoint {
    sample_checkpoint(thread, 0, StateRecord::Full(json!({ "n": 0 })))
}

#[tokio::test]
async fn a_symlink_at_a_log_path_is_refused_and_its_target_untouched() {
    let tmp = TempDir::new("hostile-symlink");
    let d = tmp.path();
    let victim = d.join("victim.txt");
    fs::write(&victim, b"precious data\n").unwrap();
    let store_dir = d.join("store");
    fs::create_dir_all(&store_dir).unwrap();
    std::os::unix::fs::symlink(&victim, store_dir.join("t-victim.log")).unwrap();
    let store = FileCheckpointer::open(&store_dir).unwrap();
    let thread = ThreadId::new("victim");
    let err = store.append(first(&thread)).await.unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    let err = store.get(&thread, None).await.unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(fs::read(&victim).unwrap(), b"precious data\n");
}

#[tokio::test]
async fn a_foreign_file_at_a_log_path_is_never_truncated() {
    let tmp = TempDir::new("hostile-foreign");
    let d = tmp.path();
    let path = d.join("t-notes.log");
    let content = b"these are somebody's notes, not a checkpoint log\n".repeat(10);
    fs::write(&path, &content).unwrap();
    let store = FileCheckpointer::open(d).unwrap();
    let thread = ThreadId::new("notes");
    let err = store.append(first(&thread)).await.unwrap_err();
    assert!(err.to_string().contains("not a checkpoint log"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), content);
}

#[tokio::test]
async fn a_fifo_at_a_log_path_is_refused_without_blocking() {
    let tmp = TempDir::new("hostile-fifo");
    let d = tmp.path();
    let status = std::process::Command::new("mkfifo")
        .arg(d.join("t-pipe.log"))
        .status()
        .unwrap();
    assert!(status.success());
    let store = FileCheckpointer::open(d).unwrap();
    let thread = ThreadId::new("pipe");
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(5), store.get(&thread, None)).await;
    let err = result.expect("reading a FIFO must not block").unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    let result = tokio::time::timeout(Duration::from_secs(5), store.append(first(&thread))).await;
    assert!(result.expect("must not block").is_err());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_symlink_at_a_sidecar_path_is_never_written_through() {
    let tmp = TempDir::new("hostile-sidecar");
    let d = tmp.path();
    let victim = d.join("victim.txt");
    fs::write(&victim, b"precious data\n").unwrap();
    let store_dir = d.join("store");
    fs::create_dir_all(&store_dir).unwrap();
    std::os::unix::fs::symlink(&victim, store_dir.join("t-side.idx")).unwrap();
    let store = FileCheckpointer::open(&store_dir).unwrap();
    let thread = ThreadId::new("side");
    store.append(first(&thread)).await.unwrap();
    for seq in 1..5 {
        store
            .append(sample_checkpoint(
                &thread,
                seq,
                StateRecord::Delta(vec![json!({ "n": seq })]),
            ))
            .await
            .unwrap();
    }
    assert_eq!(fs::read(&victim).unwrap(), b"precious data\n");
    // A fresh handle still reads the thread (from the log).
    let fresh = FileCheckpointer::open(&store_dir).unwrap();
    assert_eq!(fresh.get(&thread, None).await.unwrap().unwrap().seq, 4);
}

#[tokio::test]
async fn our_own_torn_first_record_is_still_recovered() {
    let tmp = TempDir::new("hostile-torn");
    let d = tmp.path();
    let thread = ThreadId::new("torn");
    // A crash during the very first write: a frame header announcing more
    // bytes than were written, then the start of a checkpoint record.
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&500u32.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(b"{\"checkpoint\":{\"thr");
    fs::write(d.join("t-torn.log"), &bytes).unwrap();
    let store = FileCheckpointer::open(d).unwrap();
    store.append(first(&thread)).await.unwrap();
    assert_eq!(store.get(&thread, None).await.unwrap().unwrap().seq, 0);
}
