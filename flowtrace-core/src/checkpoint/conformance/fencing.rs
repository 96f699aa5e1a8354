//! Checks of fencing, crash ordering and concurrent writers.

use std::sync::Arc;

use serde_json::json;
use tokio::task::JoinHandle;

use super::{
    Check, CheckFailure, Ctx, Store, append_simple, contiguous, sample_checkpoint, sample_write,
    simple_state, unique_thread, whole,
};
use crate::checkpoint::{Checkpoint, CheckpointError, Checkpointer, PendingWrite, StateRecord};
use crate::ids::ThreadId;

/// [`Check::Fencing`]: wrong `seq`s are refused with
/// [`CheckpointError::Conflict`] (naming the expected `seq`); two handles
/// appending the same `seq` at once get exactly one success; and eight
/// handles racing to extend one thread leave a contiguous history holding
/// exactly the appends that succeeded.
///
/// # Cancel safety
///
/// As for [`run`](super::run).
pub async fn fencing<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::Fencing);
    let store = open();
    let thread = unique_thread("fencing");

    let conflict = |what: &str, r: Result<(), CheckpointError>, seq: u64, expected: u64| {
        match r {
        Err(CheckpointError::Conflict {
            seq: s, expected: e, ..
        }) if s == seq && e == expected => Ok(()),
        Err(CheckpointError::Conflict { seq: s, expected: e, .. }) => Err(c.fail(format!(
            "{what}: Conflict names seq {s} and expected {e}, should be seq {seq} and expected {expected}"
        ))),
        Err(e) => Err(c.fail(format!("{what}: failed with {e}, expected Conflict"))),
        Ok(()) => Err(c.fail(format!(
            "{what}: accepted, expected Conflict (expected seq {expected})"
        ))),
    }
    };

    // Sequential: wrong seqs are refused and store nothing.
    let stray = sample_checkpoint(&thread, 1, simple_state(1, "stray"));
    conflict(
        "append seq 1 to an empty thread",
        store.append(stray).await,
        1,
        0,
    )?;
    let got = c.ok("get(None)", store.get(&thread, None).await)?;
    c.ensure(got.is_none(), || {
        "a refused append left a checkpoint behind".into()
    })?;
    let first = append_simple(c, store.as_ref(), &thread, 0..1).await?;
    let dup = sample_checkpoint(&thread, 0, StateRecord::Full(json!("a second seq 0")));
    conflict("append seq 0 twice", store.append(dup).await, 0, 1)?;
    let gap = sample_checkpoint(&thread, 5, simple_state(5, "gap"));
    conflict("append seq 5 after seq 0", store.append(gap).await, 5, 1)?;
    let got = c.ok("list", whole(store.as_ref(), &thread).await)?;
    c.same_list("history after refused appends", &got, &first)?;

    // Two handles append the same seq at once, a few rounds.
    for seq in 1..=5u64 {
        let (a, b) = (open(), open());
        let spawn_append = |store: Store, who: &str| {
            let cp = sample_checkpoint(
                &thread,
                seq,
                StateRecord::Delta(vec![json!({ "writer": who, "seq": seq })]),
            );
            let task = tokio::spawn({
                let cp = cp.clone();
                async move { Ok::<_, String>(store.append(cp).await) }
            });
            (cp, task)
        };
        let (cp_a, task_a) = spawn_append(Arc::clone(&a), "a");
        let (cp_b, task_b) = spawn_append(Arc::clone(&b), "b");
        let mut results = c.join(vec![task_a, task_b]).await?.into_iter();
        let (ra, rb) = (results.next(), results.next());
        let (winner, loser, loser_result) = match (ra, rb) {
            (Some(Ok(())), Some(r)) => (cp_a, &b, r),
            (Some(r), Some(Ok(()))) => (cp_b, &a, r),
            (Some(ra), Some(rb)) => {
                return Err(c.fail(format!(
                    "two handles appended seq {seq} at once and both failed: {ra:?}; {rb:?}"
                )));
            }
            _ => return Err(c.fail("a spawned append vanished")),
        };
        conflict(
            &format!("the slower of two handles appending seq {seq} at once"),
            loser_result,
            seq,
            seq + 1,
        )?;
        for (name, handle) in [("the winner's", &a), ("the loser's", &b)] {
            let got = c.ok("list", whole(handle.as_ref(), &thread).await)?;
            contiguous(
                c,
                &format!("after the race for seq {seq}, through {name} handle"),
                &got,
            )?;
            c.eq(
                &format!("length of the history after the race for seq {seq}"),
                &got.len(),
                &(seq as usize + 1),
            )?;
            c.same(
                &format!("seq {seq} through {name} handle (must be the winner's)"),
                got.last(),
                &winner,
            )?;
        }
        let retry = sample_checkpoint(&thread, seq, simple_state(seq, "retry"));
        conflict(
            &format!("the loser appending seq {seq} again"),
            loser.append(retry).await,
            seq,
            seq + 1,
        )?;
    }

    race(c, open).await
}

/// Eight handles race to append five checkpoints each to one thread,
/// retrying on conflict.
async fn race<F>(c: Ctx, open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    const WRITERS: usize = 8;
    const WINS: usize = 5;
    const MAX_ATTEMPTS: usize = 2_000;
    let thread = unique_thread("fencing_race");
    let tasks: Vec<JoinHandle<Result<Vec<Checkpoint>, String>>> = (0..WRITERS)
        .map(|writer| {
            let store = open();
            let thread = thread.clone();
            tokio::spawn(async move {
                let mut won = Vec::new();
                let mut attempts = 0;
                while won.len() < WINS {
                    attempts += 1;
                    if attempts > MAX_ATTEMPTS {
                        return Err(format!(
                            "writer {writer} won only {} appends in {MAX_ATTEMPTS} attempts",
                            won.len()
                        ));
                    }
                    let latest = store
                        .get(&thread, None)
                        .await
                        .map_err(|e| format!("writer {writer}: get(None): {e}"))?;
                    let seq = latest.map_or(0, |cp| cp.seq + 1);
                    let tag = json!({ "writer": writer, "win": won.len(), "attempt": attempts });
                    let state = if seq == 0 {
                        StateRecord::Full(tag)
                    } else {
                        StateRecord::Delta(vec![tag])
                    };
                    let cp = sample_checkpoint(&thread, seq, state);
                    match store.append(cp.clone()).await {
                        Ok(()) => won.push(cp),
                        Err(CheckpointError::Conflict { .. }) => tokio::task::yield_now().await,
                        Err(e) => return Err(format!("writer {writer}: append seq {seq}: {e}")),
                    }
                }
                Ok(won)
            })
        })
        .collect();
    let won: Vec<Checkpoint> = c.join(tasks).await?.into_iter().flatten().collect();
    let history = c.ok("list after the race", whole(open().as_ref(), &thread).await)?;
    contiguous(c, "after eight handles raced", &history)?;
    c.eq(
        "checkpoints in the history vs. appends that succeeded",
        &history.len(),
        &won.len(),
    )?;
    for cp in &won {
        c.same(
            "a successful append in the raced history",
            usize::try_from(cp.seq).ok().and_then(|i| history.get(i)),
            cp,
        )?;
    }
    Ok(())
}

/// [`Check::CrashOrdering`]: the executor saves task results after
/// checkpoint N before it writes N+1; after a crash between the two, a new
/// handle must still see checkpoint N as the latest and all its results.
///
/// # Cancel safety
///
/// As for [`run`](super::run).
pub async fn crash_ordering<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::CrashOrdering);
    let thread = unique_thread("crash_ordering");
    let (written, saved) = {
        let before_crash = open();
        let written = append_simple(c, before_crash.as_ref(), &thread, 0..2).await?;
        let saved = vec![
            sample_write(0, json!({ "done": "first task" })),
            sample_write(1, json!({ "done": "second task" })),
        ];
        for w in &saved {
            c.ok(
                &format!("put_write(seq 1, task {})", w.task),
                before_crash.put_write(&thread, 1, w.clone()).await,
            )?;
        }
        (written, saved)
    };

    let Some(latest) = written.last() else {
        return Err(c.fail("no checkpoint was written"));
    };
    let after = open();
    let got = c.ok("get(None) after reopening", after.get(&thread, None).await)?;
    c.same(
        "get(None) after reopening (must still be seq 1)",
        got.as_ref(),
        latest,
    )?;
    let got = c.ok("writes(1) after reopening", after.writes(&thread, 1).await)?;
    c.eq("writes(1) after reopening", &got, &saved)?;
    let got = c.ok("writes(0) after reopening", after.writes(&thread, 0).await)?;
    c.eq("writes(0) after reopening", &got, &Vec::new())?;
    let got = c.ok("list after reopening", whole(after.as_ref(), &thread).await)?;
    c.same_list("history after reopening", &got, &written)?;

    // The resumed run carries on.
    append_simple(c, after.as_ref(), &thread, 2..3).await?;
    Ok(())
}

/// [`Check::ConcurrentWriters`]: eight handles at once, each writing ten
/// checkpoints and two pending writes per checkpoint to a thread of its own.
///
/// # Cancel safety
///
/// As for [`run`](super::run).
pub async fn concurrent_writers<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    const WRITERS: usize = 8;
    const CHECKPOINTS: u64 = 10;
    type Written = (ThreadId, Vec<Checkpoint>, Vec<Vec<PendingWrite>>);
    let c = Ctx(Check::ConcurrentWriters);
    let tasks: Vec<JoinHandle<Result<Written, String>>> = (0..WRITERS)
        .map(|i| {
            let store = open();
            let thread = unique_thread(&format!("concurrent_writers_{i}"));
            tokio::spawn(async move {
                let mut checkpoints = Vec::new();
                let mut writes = Vec::new();
                for seq in 0..CHECKPOINTS {
                    let cp = sample_checkpoint(&thread, seq, simple_state(seq, thread.as_str()));
                    store
                        .append(cp.clone())
                        .await
                        .map_err(|e| format!("append seq {seq}: {e}"))?;
                    let latest = store
                        .get(&thread, None)
                        .await
                        .map_err(|e| format!("get(None): {e}"))?;
                    if latest.as_ref() != Some(&cp) {
                        return Err(format!(
                            "get(None) right after appending seq {seq} returned seq {:?}",
                            latest.map(|l| l.seq)
                        ));
                    }
                    let mut saved = Vec::new();
                    for task in [1, 0] {
                        let w =
                            sample_write(task, json!({ "thread": thread.as_str(), "seq": seq }));
                        store
                            .put_write(&thread, seq, w.clone())
                            .await
                            .map_err(|e| format!("put_write(seq {seq}, task {task}): {e}"))?;
                        saved.insert(0, w);
                    }
                    checkpoints.push(cp);
                    writes.push(saved);
                }
                Ok((thread, checkpoints, writes))
            })
        })
        .collect();
    let results = c.join(tasks).await?;
    let reader = open();
    for (thread, checkpoints, writes) in &results {
        let got = c.ok("list", whole(reader.as_ref(), thread).await)?;
        c.same_list(&format!("history of {thread:?}"), &got, checkpoints)?;
        for (seq, saved) in writes.iter().enumerate() {
            let got = c.ok("writes", reader.writes(thread, seq as u64).await)?;
            c.eq(&format!("writes({seq}) of {thread:?}"), &got, saved)?;
        }
    }
    Ok(())
}
