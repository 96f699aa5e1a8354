//! Checks of the write path: chains from a snapshot, batches, the depth
//! limit.

use std::sync::Arc;

use serde_json::json;
use tokio::task::JoinHandle;

use super::lifecycle::{ErrorTest, append_all, expect_err, nested, nth, part, snapshots};
use super::{
    Check, CheckFailure, Ctx, Store, append_simple, sample_checkpoint, sample_write, unique_thread,
    whole,
};
use crate::checkpoint::{
    Checkpoint, CheckpointBatch, CheckpointError, Checkpointer, MAX_RECORD_DEPTH, StateRecord,
};

/// [`Check::ChainFromSnapshot`]: a full state, 50 deltas, a full state, 3
/// deltas: `chain(54)` is exactly 51..=54 and `chain(50)` is 0..=50, also
/// through another handle.
///
/// # Cancel safety
///
/// As for [`run`](super::run).
pub async fn chain_from_snapshot<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::ChainFromSnapshot);
    let store = open();
    let thread = unique_thread("chain_from_snapshot");
    let written = snapshots(&thread, 0..55, &[0, 51]);
    append_all(c, store.as_ref(), &written).await?;
    let reopened = open();
    for (handle, via) in [(&store, ""), (&reopened, " through another handle")] {
        let latest = c.ok("get(None)", handle.get(&thread, None).await)?;
        c.same(
            &format!("get(None){via}"),
            latest.as_ref(),
            nth(c, &written, 54)?,
        )?;
        for (seq, from) in [(54u64, 51usize), (52, 51), (51, 51), (50, 0), (1, 0)] {
            let what = format!("chain({seq}){via}");
            let got = c.ok(&what, handle.chain(&thread, seq).await)?;
            c.same_list(
                &what,
                &got,
                written.get(from..=seq as usize).unwrap_or_default(),
            )?;
        }
    }
    Ok(())
}

/// [`Check::AppendBatch`].
///
/// # Cancel safety
///
/// As for [`run`](super::run).
pub async fn append_batch<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::AppendBatch);
    let store = open();
    let thread = unique_thread("append_batch");
    let mut written = append_simple(c, store.as_ref(), &thread, 0..3).await?;
    let old = sample_write(0, json!("saved before the batch"));
    c.ok(
        "put_write(seq 2, task 0)",
        store.put_write(&thread, 2, old.clone()).await,
    )?;

    // Checkpoints 3..=5 (5 a full state) with writes for 5 and for the
    // thread's latest before the batch (2).
    let batch = snapshots(&thread, 3..6, &[5]);
    let (w0, w1) = (
        sample_write(0, json!("task 0 after 5")),
        sample_write(1, json!("task 1 after 5")),
    );
    let w2 = sample_write(1, json!("task 1 after 2"));
    c.ok(
        "append_batch(3..=5 with writes for 5 and 2)",
        store
            .append_batch(
                &thread,
                CheckpointBatch {
                    checkpoints: batch.clone(),
                    writes: vec![(5, w1.clone()), (2, w2.clone()), (5, w0.clone())],
                },
            )
            .await,
    )?;
    written.extend(batch);
    let got = c.ok("list", whole(store.as_ref(), &thread).await)?;
    c.same_list("history after the batch", &got, &written)?;
    let got = c.ok("writes(5)", store.writes(&thread, 5).await)?;
    c.eq(
        "writes(5) after the batch",
        &got,
        &vec![w0.clone(), w1.clone()],
    )?;
    let got = c.ok("writes(2)", store.writes(&thread, 2).await)?;
    c.eq("writes(2) after the batch", &got, &vec![old, w2])?;
    let got = c.ok("chain(5)", store.chain(&thread, 5).await)?;
    c.same_list("chain(5) after the batch", &got, part(&written, 5..))?;

    // Every refusal stores nothing, writes included.
    let stray = sample_write(3, json!("must not be stored"));
    let refused: Vec<(&str, CheckpointBatch, &str, ErrorTest)> = vec![
        (
            "a batch starting at seq 5 (the thread's next is 6)",
            CheckpointBatch {
                checkpoints: snapshots(&thread, 5..7, &[]),
                writes: vec![(6, stray.clone())],
            },
            "Conflict naming seq 5 and expected 6",
            |e| {
                matches!(
                    e,
                    CheckpointError::Conflict {
                        seq: 5,
                        expected: 6,
                        ..
                    }
                )
            },
        ),
        (
            "a batch of seqs 6 and 8",
            CheckpointBatch {
                checkpoints: vec![
                    sample_checkpoint(&thread, 6, StateRecord::Delta(vec![json!(6)])),
                    sample_checkpoint(&thread, 8, StateRecord::Delta(vec![json!(8)])),
                ],
                writes: vec![(6, stray.clone())],
            },
            "InvalidBatch",
            |e| matches!(e, CheckpointError::InvalidBatch { .. }),
        ),
        (
            "a batch with a write for seq 4 (neither in the batch nor the latest)",
            CheckpointBatch {
                checkpoints: snapshots(&thread, 6..7, &[]),
                writes: vec![(6, stray.clone()), (4, stray.clone())],
            },
            "InvalidBatch",
            |e| matches!(e, CheckpointError::InvalidBatch { .. }),
        ),
        (
            "a batch holding a checkpoint of another thread",
            CheckpointBatch {
                checkpoints: vec![
                    sample_checkpoint(&thread, 6, StateRecord::Delta(vec![json!(6)])),
                    sample_checkpoint(
                        &unique_thread("append_batch_other"),
                        7,
                        StateRecord::Delta(vec![json!(7)]),
                    ),
                ],
                writes: Vec::new(),
            },
            "InvalidBatch",
            |e| matches!(e, CheckpointError::InvalidBatch { .. }),
        ),
        (
            "a batch whose second checkpoint nests 200 deep",
            CheckpointBatch {
                checkpoints: vec![
                    sample_checkpoint(&thread, 6, StateRecord::Delta(vec![json!(6)])),
                    sample_checkpoint(&thread, 7, StateRecord::Delta(vec![nested(200)])),
                    sample_checkpoint(&thread, 8, StateRecord::Delta(vec![json!(8)])),
                ],
                writes: vec![(6, stray.clone())],
            },
            "TooDeep",
            |e| matches!(e, CheckpointError::TooDeep { .. }),
        ),
    ];
    for (what, batch, want, matches) in refused {
        expect_err(
            c,
            what,
            store.append_batch(&thread, batch).await,
            want,
            matches,
        )?;
        let got = c.ok("list", whole(store.as_ref(), &thread).await)?;
        c.same_list(&format!("history after {what}"), &got, &written)?;
        for seq in [4, 6] {
            let got = c.ok("writes", store.writes(&thread, seq).await)?;
            c.eq(&format!("writes({seq}) after {what}"), &got, &Vec::new())?;
        }
    }

    // An empty batch does nothing; a batch of writes only is for the latest
    // (and the first write of a task is kept).
    c.ok(
        "an empty batch",
        store
            .append_batch(&thread, CheckpointBatch::default())
            .await,
    )?;
    let w3 = sample_write(2, json!("task 2 after 5"));
    c.ok(
        "a batch of writes for the latest",
        store
            .append_batch(
                &thread,
                CheckpointBatch {
                    checkpoints: Vec::new(),
                    writes: vec![(5, w3.clone()), (5, sample_write(0, json!("again")))],
                },
            )
            .await,
    )?;
    let got = c.ok("writes(5)", store.writes(&thread, 5).await)?;
    c.eq(
        "writes(5) after a batch of writes (task 0 keeps its first write)",
        &got,
        &vec![w0, w1, w3],
    )?;

    // A new thread can start with a batch.
    let fresh = unique_thread("append_batch_new");
    let first = snapshots(&fresh, 0..2, &[0]);
    c.ok(
        "append_batch(0..=1) to a new thread",
        store
            .append_batch(
                &fresh,
                CheckpointBatch {
                    checkpoints: first.clone(),
                    writes: Vec::new(),
                },
            )
            .await,
    )?;
    let got = c.ok("list", whole(store.as_ref(), &fresh).await)?;
    c.same_list("a new thread written by one batch", &got, &first)?;

    // Two handles race to write seqs 6 and 7: exactly one batch wins.
    let spawn_batch = |handle: Store, who: &'static str| {
        let checkpoints: Vec<Checkpoint> = (6..8)
            .map(|seq| {
                sample_checkpoint(
                    &thread,
                    seq,
                    StateRecord::Delta(vec![json!({ "writer": who, "seq": seq })]),
                )
            })
            .collect();
        let w = sample_write(0, json!({ "writer": who }));
        let batch = CheckpointBatch {
            checkpoints: checkpoints.clone(),
            writes: vec![(7, w.clone())],
        };
        let thread = thread.clone();
        let task: JoinHandle<Result<Result<(), CheckpointError>, String>> =
            tokio::spawn(async move { Ok(handle.append_batch(&thread, batch).await) });
        ((checkpoints, w), task)
    };
    let (a, task_a) = spawn_batch(open(), "a");
    let (b, task_b) = spawn_batch(open(), "b");
    let mut results = c.join(vec![task_a, task_b]).await?.into_iter();
    let (winner, loser) = match (results.next(), results.next()) {
        (Some(Ok(())), Some(r)) => (a, r),
        (Some(r), Some(Ok(()))) => (b, r),
        (ra, rb) => {
            return Err(c.fail(format!(
                "two handles appending a batch at seq 6 at once: expected one success, got {ra:?} and {rb:?}"
            )));
        }
    };
    expect_err(
        c,
        "the slower of two batches at seq 6",
        loser,
        "Conflict naming seq 6 and expected 8",
        |e| {
            matches!(
                e,
                CheckpointError::Conflict {
                    seq: 6,
                    expected: 8,
                    ..
                }
            )
        },
    )?;
    written.extend(winner.0);
    let reopened = open();
    let got = c.ok(
        "list after the race",
        whole(reopened.as_ref(), &thread).await,
    )?;
    c.same_list("history after two batches raced", &got, &written)?;
    let got = c.ok("writes(7)", reopened.writes(&thread, 7).await)?;
    c.eq("writes(7): the winning batch's only", &got, &vec![winner.1])
}

/// [`Check::DepthLimit`].
///
/// # Cancel safety
///
/// As for [`run`](super::run).
pub async fn depth_limit<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::DepthLimit);
    let store = open();
    let thread = unique_thread("depth_limit");
    let deep_ok = sample_checkpoint(&thread, 0, StateRecord::Full(nested(100)));
    c.ok(
        "append a state nested 100 deep",
        store.append(deep_ok.clone()).await,
    )?;
    let too_deep = sample_checkpoint(&thread, 1, StateRecord::Delta(vec![nested(200)]));
    expect_err(
        c,
        "append an update nested 200 deep",
        store.append(too_deep).await,
        &format!("TooDeep naming seq 1, a depth over {MAX_RECORD_DEPTH} and the limit"),
        |e| {
            matches!(e, CheckpointError::TooDeep { seq: 1, depth, limit, .. }
                if *depth > MAX_RECORD_DEPTH && *limit == MAX_RECORD_DEPTH)
        },
    )?;
    let mut deep_write = sample_write(0, nested(200));
    deep_write.dispatches.clear();
    expect_err(
        c,
        "put_write of an update nested 200 deep",
        store.put_write(&thread, 0, deep_write).await,
        "TooDeep",
        |e| matches!(e, CheckpointError::TooDeep { .. }),
    )?;

    // The thread is still readable, through this handle and another.
    for (handle, via) in [(store.clone(), ""), (open(), " through another handle")] {
        let got = c.ok("get(None)", handle.get(&thread, None).await)?;
        c.same(
            &format!("get(None) after the refusals{via}"),
            got.as_ref(),
            &deep_ok,
        )?;
        let got = c.ok("list", whole(handle.as_ref(), &thread).await)?;
        c.same_list(
            &format!("history after the refusals{via}"),
            &got,
            std::slice::from_ref(&deep_ok),
        )?;
        let got = c.ok("chain(0)", handle.chain(&thread, 0).await)?;
        c.same_list(
            &format!("chain(0) of a state 100 deep{via}"),
            &got,
            std::slice::from_ref(&deep_ok),
        )?;
        let got = c.ok("writes(0)", handle.writes(&thread, 0).await)?;
        c.eq(
            &format!("writes(0) after the refused write{via}"),
            &got,
            &Vec::new(),
        )?;
    }
    // Seq 1 is still free; a write 100 deep round-trips.
    let next = sample_checkpoint(&thread, 1, StateRecord::Delta(vec![json!("fine")]));
    c.ok("append seq 1", store.append(next).await)?;
    let ok_write = sample_write(0, nested(100));
    c.ok(
        "put_write of an update nested 100 deep",
        store.put_write(&thread, 1, ok_write.clone()).await,
    )?;
    let got = c.ok("writes(1)", open().writes(&thread, 1).await)?;
    c.eq("a write nested 100 deep", &got, &vec![ok_write])
}
