//! The sidecar index (`t-<name>.idx`): resuming from a log's tail.

use std::fs;
use std::path::Path;

use super::super::frame::file_name;
use super::super::*;
use super::history::{full, record_count};
use super::reads::history;
use super::*;
use crate::checkpoint::{CheckpointBatch, Retention, ThreadFilter};

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

    let before = disk::tail_reads::of(&path);
    let cold = FileCheckpointer::open(&dir.0).unwrap();
    assert_eq!(resume_view(&cold, &thread).await, expected);
    assert_eq!(disk::tail_reads::of(&path), before + 1);
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
    let before = disk::tail_reads::of(&path);
    let d = FileCheckpointer::open(&dir.0).unwrap();
    assert_eq!(resume_view(&d, &thread).await, (32, vec![31, 32], vec![7]));
    assert_eq!(disk::tail_reads::of(&path), before + 1);

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
    let before = disk::tail_reads::of(&path);
    let cold = FileCheckpointer::open(&dir.0).unwrap();
    assert_eq!(
        resume_view(&cold, &thread).await,
        (199, (192..200).collect(), vec![1, 2])
    );
    assert_eq!(disk::tail_reads::of(&path), before + 1);
    assert_eq!(cold.writes(&thread, 3).await.unwrap(), [write(0)]);
    assert_eq!(history(&cold, &thread).await, (0..200).collect::<Vec<_>>());
}
