//! Checks of a thread's life: delete and prune (and the helpers
//! the new checks share).

use std::sync::Arc;

use serde_json::json;

use super::{
    Check, CheckFailure, Ctx, append_simple, sample_checkpoint, sample_write, unique_thread, whole,
};
use crate::checkpoint::{
    Checkpoint, CheckpointError, Checkpointer, PruneOutcome, Retention, StateRecord, ThreadFilter,
    ThreadInfo,
};
use crate::ids::ThreadId;

// ===== Helpers =====

/// Whether an error is the one expected.
pub(super) type ErrorTest = fn(&CheckpointError) -> bool;

/// Fails unless `result` is an error `matches` accepts (`want` names it).
pub(super) fn expect_err<T: std::fmt::Debug>(
    c: Ctx,
    what: &str,
    result: Result<T, CheckpointError>,
    want: &str,
    matches: impl FnOnce(&CheckpointError) -> bool,
) -> Result<(), CheckFailure> {
    match result {
        Err(e) if matches(&e) => Ok(()),
        Err(e) => Err(c.fail(format!("{what}: failed with {e}, expected {want}"))),
        Ok(v) => Err(c.fail(format!(
            "{what}: succeeded ({}), expected {want}",
            super::short(&v)
        ))),
    }
}

/// A value nesting `depth` levels of arrays and objects.
pub(super) fn nested(depth: usize) -> serde_json::Value {
    let mut v = json!("bottom");
    for i in 0..depth {
        v = if i % 2 == 0 {
            json!([v])
        } else {
            json!({ "level": v })
        };
    }
    v
}

/// A thread's checkpoints with a full state at each of `fulls` and deltas
/// elsewhere.
pub(super) fn snapshots(
    thread: &ThreadId,
    seqs: std::ops::Range<u64>,
    fulls: &[u64],
) -> Vec<Checkpoint> {
    seqs.map(|seq| {
        let state = if fulls.contains(&seq) {
            StateRecord::Full(json!({ "snapshot_at": seq, "items": [seq] }))
        } else {
            StateRecord::Delta(vec![json!({ "seq": seq })])
        };
        sample_checkpoint(thread, seq, state)
    })
    .collect()
}

pub(super) async fn append_all(
    c: Ctx,
    store: &dyn Checkpointer,
    cps: &[Checkpoint],
) -> Result<(), CheckFailure> {
    for cp in cps {
        c.ok(
            &format!("append seq {} of {:?}", cp.seq, cp.thread_id),
            store.append(cp.clone()).await,
        )?;
    }
    Ok(())
}

/// Checkpoint `i` of `list` (a check's own data).
pub(super) fn nth(c: Ctx, list: &[Checkpoint], i: usize) -> Result<&Checkpoint, CheckFailure> {
    list.get(i)
        .ok_or_else(|| c.fail(format!("the check's data has no checkpoint at {i}")))
}

/// `list[range]` (empty when out of range).
pub(super) fn part<R: std::slice::SliceIndex<[Checkpoint], Output = [Checkpoint]>>(
    list: &[Checkpoint],
    range: R,
) -> &[Checkpoint] {
    list.get(range).unwrap_or_default()
}

/// `cps` as thread `to` holds them after a copy.
pub(super) fn rewritten(cps: &[Checkpoint], to: &ThreadId) -> Vec<Checkpoint> {
    cps.iter()
        .map(|cp| Checkpoint {
            thread_id: to.clone(),
            ..cp.clone()
        })
        .collect()
}

/// The summary of a thread whose checkpoints, oldest first, were `cps`.
pub(super) fn summary_of(cps: &[Checkpoint]) -> Option<ThreadInfo> {
    let (first, rest) = cps.split_first()?;
    let mut info = ThreadInfo::from_first(first);
    for cp in rest {
        info.observe(cp);
    }
    Some(info)
}

/// `list_threads` with `filter`, compared by thread id, then field by field.
pub(super) async fn expect_listed(
    c: Ctx,
    what: &str,
    store: &dyn Checkpointer,
    filter: &ThreadFilter,
    want: &[ThreadInfo],
) -> Result<(), CheckFailure> {
    let got = c.ok(what, store.list_threads(filter).await)?;
    let ids = |l: &[ThreadInfo]| l.iter().map(|i| i.thread_id.clone()).collect::<Vec<_>>();
    c.eq(&format!("{what} (thread ids)"), &ids(&got), &ids(want))?;
    for (g, w) in got.iter().zip(want) {
        c.eq(&format!("{what}: the summary of {:?}", w.thread_id), g, w)?;
    }
    Ok(())
}

// ===== Checks =====

/// [`Check::DeleteThread`].
///
/// # Cancel safety
///
/// As for [`run`](super::run).
pub async fn delete_thread<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::DeleteThread);
    let store = open();
    let doomed = unique_thread("delete_thread");
    let kept = unique_thread("delete_thread_kept");
    let mut first = sample_checkpoint(&doomed, 0, StateRecord::Full(json!({ "n": 0 })));
    first
        .metadata
        .insert("conformance".into(), json!(doomed.as_str()));
    c.ok("append seq 0", store.append(first).await)?;
    append_simple(c, store.as_ref(), &doomed, 1..4).await?;
    for (seq, task) in [(3, 0), (3, 1), (1, 0)] {
        c.ok(
            "put_write",
            store
                .put_write(&doomed, seq, sample_write(task, json!(seq)))
                .await,
        )?;
    }
    let others = append_simple(c, store.as_ref(), &kept, 0..2).await?;
    let kept_write = sample_write(0, json!("kept"));
    c.ok(
        "put_write of the other thread",
        store.put_write(&kept, 1, kept_write.clone()).await,
    )?;
    let mine = ThreadFilter::new().metadata("conformance", doomed.as_str());
    let listed = c.ok("list_threads", store.list_threads(&mine).await)?;
    c.eq("threads listed before the delete", &listed.len(), &1)?;

    let existed = c.ok("delete_thread", store.delete_thread(&doomed).await)?;
    c.eq("delete_thread of a thread with history", &existed, &true)?;
    for (handle, via) in [(store.clone(), ""), (open(), " through another handle")] {
        let got = c.ok("get(None)", handle.get(&doomed, None).await)?;
        c.ensure(got.is_none(), || {
            format!("get(None) of a deleted thread{via} returned a checkpoint")
        })?;
        let got = c.ok("get(Some(0))", handle.get(&doomed, Some(0)).await)?;
        c.ensure(got.is_none(), || {
            format!("get(Some(0)) of a deleted thread{via} returned a checkpoint")
        })?;
        let got = c.ok("list", handle.list(&doomed, None, usize::MAX).await)?;
        c.eq(&format!("list of a deleted thread{via}"), &got.len(), &0)?;
        for seq in [1, 3] {
            let got = c.ok("writes", handle.writes(&doomed, seq).await)?;
            c.eq(
                &format!("writes({seq}) of a deleted thread{via}"),
                &got,
                &Vec::new(),
            )?;
        }
        c.ensure(handle.chain(&doomed, 0).await.is_err(), || {
            format!("chain(0) of a deleted thread{via} succeeded")
        })?;
        let listed = c.ok("list_threads", handle.list_threads(&mine).await)?;
        c.eq(
            &format!("list_threads after the delete{via}"),
            &listed,
            &Vec::new(),
        )?;
        let got = c.ok(
            "list of the other thread",
            whole(handle.as_ref(), &kept).await,
        )?;
        c.same_list(&format!("the other thread{via}"), &got, &others)?;
        let got = c.ok("writes of the other thread", handle.writes(&kept, 1).await)?;
        c.eq(
            &format!("writes(1) of the other thread{via}"),
            &got,
            &vec![kept_write.clone()],
        )?;
    }
    let again = c.ok("delete_thread again", store.delete_thread(&doomed).await)?;
    c.eq("delete_thread of a deleted thread", &again, &false)?;
    let never = unique_thread("delete_thread_never");
    let got = c.ok("delete_thread", store.delete_thread(&never).await)?;
    c.eq("delete_thread of a thread never written", &got, &false)?;

    // The thread starts over at seq 0, with none of its old writes.
    let restarted = append_simple(c, store.as_ref(), &doomed, 0..1).await?;
    let got = c.ok("list", whole(open().as_ref(), &doomed).await)?;
    c.same_list("a deleted thread written again", &got, &restarted)?;
    let got = c.ok("writes(1)", store.writes(&doomed, 1).await)?;
    c.eq(
        "writes(1) of a thread deleted and restarted",
        &got,
        &Vec::new(),
    )
}

/// [`Check::Prune`].
///
/// # Cancel safety
///
/// As for [`run`](super::run).
pub async fn prune<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::Prune);
    let store = open();
    let thread = unique_thread("prune");
    // Full states at 0 and 10, so the 3 latest (17..=19) are all deltas.
    let mut written = snapshots(&thread, 0..20, &[0, 10]);
    if let Some(first) = written.first_mut() {
        first
            .metadata
            .insert("conformance".into(), json!(thread.as_str()));
        first.metadata.insert("tenant".into(), json!("acme"));
    }
    append_all(c, store.as_ref(), &written).await?;
    let latest_writes = vec![sample_write(0, json!("a")), sample_write(1, json!("b"))];
    for w in &latest_writes {
        c.ok(
            "put_write(19)",
            store.put_write(&thread, 19, w.clone()).await,
        )?;
    }
    let kept_write = sample_write(0, json!(12));
    for (seq, w) in [(5, sample_write(0, json!(5))), (12, kept_write.clone())] {
        c.ok("put_write", store.put_write(&thread, seq, w).await)?;
    }
    let mine = ThreadFilter::new().metadata("conformance", thread.as_str());
    let before = summary_of(&written);

    let outcome = c.ok(
        "prune(Latest(3))",
        store.prune(&thread, Retention::Latest(3)).await,
    )?;
    c.eq(
        "prune(Latest(3)) with full states at 0 and 10 (must keep 10..=19)",
        &outcome,
        &PruneOutcome::new(10, 10),
    )?;
    let kept = part(&written, 10..).to_vec();
    for (handle, via) in [(store.clone(), ""), (open(), " through another handle")] {
        let got = c.ok("list", whole(handle.as_ref(), &thread).await)?;
        c.same_list(&format!("history after pruning{via}"), &got, &kept)?;
        for seq in [0, 5, 9] {
            let got = c.ok("get", handle.get(&thread, Some(seq)).await)?;
            c.ensure(got.is_none(), || {
                format!("get(Some({seq})) of a pruned checkpoint{via} returned it")
            })?;
        }
        let got = c.ok("get(None)", handle.get(&thread, None).await)?;
        c.same(
            &format!("get(None) after pruning{via}"),
            got.as_ref(),
            nth(c, &written, 19)?,
        )?;
        let got = c.ok("chain(19)", handle.chain(&thread, 19).await)?;
        c.same_list(&format!("chain(19) after pruning{via}"), &got, &kept)?;
        let got = c.ok("chain(15)", handle.chain(&thread, 15).await)?;
        c.same_list(
            &format!("chain(15) after pruning{via}"),
            &got,
            part(&written, 10..=15),
        )?;
        expect_err(
            c,
            &format!("chain(5) of a pruned checkpoint{via}"),
            handle.chain(&thread, 5).await,
            "Pruned naming seq 5 and oldest 10",
            |e| {
                matches!(
                    e,
                    CheckpointError::Pruned {
                        seq: 5,
                        oldest: 10,
                        ..
                    }
                )
            },
        )?;
        let got = c.ok("writes(5)", handle.writes(&thread, 5).await)?;
        c.eq(
            &format!("writes(5) of a pruned checkpoint{via}"),
            &got,
            &Vec::new(),
        )?;
        let got = c.ok("writes(19)", handle.writes(&thread, 19).await)?;
        c.eq(
            &format!("writes(19) (the latest's) after pruning{via}"),
            &got,
            &latest_writes,
        )?;
        let got = c.ok("writes(12)", handle.writes(&thread, 12).await)?;
        c.eq(
            &format!("writes(12) (of a kept checkpoint) after pruning{via}"),
            &got,
            &vec![kept_write.clone()],
        )?;
        // The summary stays: metadata and creation time of seq 0.
        expect_listed(
            c,
            &format!("list_threads after pruning{via}"),
            handle.as_ref(),
            &mine,
            before.as_slice(),
        )
        .await?;
    }
    expect_err(
        c,
        "put_write for a pruned checkpoint",
        store
            .put_write(&thread, 5, sample_write(0, json!("late")))
            .await,
        "Pruned",
        |e| matches!(e, CheckpointError::Pruned { .. }),
    )?;
    let again = c.ok(
        "prune(Latest(3)) again",
        store.prune(&thread, Retention::Latest(3)).await,
    )?;
    c.eq("prune(Latest(3)) again", &again, &PruneOutcome::new(0, 10))?;

    // Appends carry on at the latest plus one, through any handle.
    let mut more = snapshots(&thread, 20..24, &[21]);
    append_all(c, open().as_ref(), &more).await?;
    let got = c.ok("get(None)", store.get(&thread, None).await)?;
    c.same(
        "get(None) after appending to a pruned thread",
        got.as_ref(),
        nth(c, &more, 3)?,
    )?;

    // After: keep from seq 22, so from the full state at 21.
    let outcome = c.ok(
        "prune(After(22))",
        store.prune(&thread, Retention::After(22)).await,
    )?;
    c.eq(
        "prune(After(22)) with a full state at 21",
        &outcome,
        &PruneOutcome::new(11, 21),
    )?;
    let got = c.ok("list", whole(store.as_ref(), &thread).await)?;
    more.remove(0);
    c.same_list("history after prune(After(22))", &got, &more)?;
    for (keep, what) in [
        (Retention::After(0), "prune(After(0))"),
        (Retention::Latest(0), "prune(Latest(0))"),
        (Retention::After(u64::MAX), "prune(After(u64::MAX))"),
    ] {
        let got = c.ok(what, store.prune(&thread, keep).await)?;
        c.eq(
            &format!("{what} when the oldest is the latest's full state"),
            &got,
            &PruneOutcome::new(0, 21),
        )?;
    }

    // With no full state after the first, nothing can go.
    let deltas = unique_thread("prune_deltas");
    let all = append_simple(c, store.as_ref(), &deltas, 0..6).await?;
    let got = c.ok(
        "prune(Latest(1)) of a thread with one full state",
        store.prune(&deltas, Retention::Latest(1)).await,
    )?;
    c.eq(
        "prune(Latest(1)) of a thread whose only full state is seq 0",
        &got,
        &PruneOutcome::new(0, 0),
    )?;
    let got = c.ok("list", whole(store.as_ref(), &deltas).await)?;
    c.same_list("a thread pruned to its only full state", &got, &all)?;

    let never = unique_thread("prune_never");
    expect_err(
        c,
        "prune of a thread never written",
        store.prune(&never, Retention::Latest(1)).await,
        "ThreadNotFound",
        |e| matches!(e, CheckpointError::ThreadNotFound { .. }),
    )
}
