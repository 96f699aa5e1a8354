//! Checks of what a store keeps: round trips, history, the latest
//! checkpoint, pending writes, concurrent threads, forks, large states,
//! format versions and state chains.

use std::sync::Arc;

use serde_json::json;
use tokio::task::JoinHandle;

use super::{
    Check, CheckFailure, Ctx, append_simple, rich_checkpoint, sample_checkpoint, sample_write,
    simple_state, unique_thread, whole,
};
use crate::checkpoint::{Checkpoint, CheckpointError, Checkpointer, StateRecord, ThreadStatus};
use crate::ids::{NodeId, RunId, ThreadId};

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// [`Check::RoundTrip`].
///
/// # Cancel safety
///
/// As for [`run`](super::run).
pub async fn round_trip<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::RoundTrip);
    let store = open();
    let thread = unique_thread("round_trip");
    c.eq(
        "get(None) of a new thread",
        &c.ok("get", store.get(&thread, None).await)?,
        &None,
    )?;
    c.eq(
        "get(Some(0)) of a new thread",
        &c.ok("get", store.get(&thread, Some(0)).await)?,
        &None,
    )?;
    c.ok(
        "list of a new thread",
        store.list(&thread, None, 10).await.map(|l| l.is_empty()),
    )
    .and_then(|empty| c.ensure(empty, || "list of a new thread is not empty".into()))?;

    let rich = rich_checkpoint(&thread);
    c.ok(
        "append seq 0 (every field set)",
        store.append(rich.clone()).await,
    )?;
    let mut bare = sample_checkpoint(&thread, 1, StateRecord::Delta(Vec::new()));
    bare.nodes.clear();
    bare.frontier.clear();
    bare.steps.clear();
    bare.status = ThreadStatus::Completed;
    c.ok(
        "append seq 1 (optional fields empty)",
        store.append(bare.clone()).await,
    )?;

    let got = c.ok("get(Some(0))", store.get(&thread, Some(0)).await)?;
    c.same("get(Some(0))", got.as_ref(), &rich)?;
    let got = c.ok("get(Some(1))", store.get(&thread, Some(1)).await)?;
    c.same("get(Some(1))", got.as_ref(), &bare)?;
    let got = c.ok("get(Some(2))", store.get(&thread, Some(2)).await)?;
    c.ensure(got.is_none(), || {
        "get(Some(2)) returned a checkpoint past the latest".into()
    })?;
    let got = c.ok(
        "get(Some(u64::MAX))",
        store.get(&thread, Some(u64::MAX)).await,
    )?;
    c.ensure(got.is_none(), || {
        "get(Some(u64::MAX)) returned a checkpoint".into()
    })?;

    let reopened = open();
    let got = c.ok(
        "get(Some(0)) after reopening",
        reopened.get(&thread, Some(0)).await,
    )?;
    c.same("get(Some(0)) after reopening", got.as_ref(), &rich)?;
    let got = c.ok(
        "get(Some(1)) after reopening",
        reopened.get(&thread, Some(1)).await,
    )?;
    c.same("get(Some(1)) after reopening", got.as_ref(), &bare)
}

/// [`Check::History`].
///
/// # Cancel safety
///
/// As for [`run`](super::run).
pub async fn history<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::History);
    let store = open();
    let thread = unique_thread("history");
    let written = append_simple(c, store.as_ref(), &thread, 0..10).await?;
    let newest_first: Vec<Checkpoint> = written.iter().rev().cloned().collect();
    let page = |before: Option<u64>, limit: usize| {
        let store = Arc::clone(&store);
        let thread = thread.clone();
        async move { store.list(&thread, before, limit).await }
    };
    let want = |seqs: &[u64]| -> Vec<Checkpoint> {
        seqs.iter()
            .filter_map(|&s| written.get(s as usize).cloned())
            .collect()
    };

    let all = c.ok("list(None, usize::MAX)", page(None, usize::MAX).await)?;
    c.same_list("list(None, usize::MAX)", &all, &newest_first)?;
    for (before, limit, seqs) in [
        (None, 3, &[9, 8, 7][..]),
        (Some(7), 3, &[6, 5, 4]),
        (Some(2), 10, &[1, 0]),
        (Some(1), 1, &[0]),
        (Some(0), 10, &[]),
        (None, 0, &[]),
        (Some(100), 2, &[9, 8]),
        (Some(u64::MAX), 1, &[9]),
    ] {
        let what = format!("list(before {before:?}, limit {limit})");
        let got = c.ok(&what, page(before, limit).await)?;
        c.same_list(&what, &got, &want(seqs))?;
    }

    // Walk the whole history in pages of 4.
    let mut walked = Vec::new();
    let mut before = None;
    loop {
        let got = c.ok("paging with before", page(before, 4).await)?;
        let Some(last) = got.last() else { break };
        c.ensure(walked.len() <= written.len(), || {
            "paging with before never ends".into()
        })?;
        before = Some(last.seq);
        walked.extend(got);
    }
    c.same_list("pages of 4 walked with before", &walked, &newest_first)?;

    let other = unique_thread("history_other");
    let got = c.ok("list of another thread", store.list(&other, None, 10).await)?;
    c.same_list("list of another thread", &got, &[])
}

/// [`Check::Latest`].
///
/// # Cancel safety
///
/// As for [`run`](super::run).
pub async fn latest<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::Latest);
    let store = open();
    let thread = unique_thread("latest");
    let got = c.ok("get(None) of a new thread", store.get(&thread, None).await)?;
    c.ensure(got.is_none(), || {
        "get(None) of a new thread returned a checkpoint".into()
    })?;
    for seq in 0..5 {
        let cp = sample_checkpoint(&thread, seq, simple_state(seq, "latest"));
        c.ok(&format!("append seq {seq}"), store.append(cp.clone()).await)?;
        let got = c.ok("get(None)", store.get(&thread, None).await)?;
        c.same(
            &format!("get(None) after appending seq {seq}"),
            got.as_ref(),
            &cp,
        )?;
        c.ok(
            "put_write",
            store
                .put_write(&thread, seq, sample_write(0, json!(seq)))
                .await,
        )?;
        let got = c.ok("get(None)", store.get(&thread, None).await)?;
        c.same(
            &format!("get(None) after a pending write on seq {seq}"),
            got.as_ref(),
            &cp,
        )?;
    }
    let other = open();
    let got = c.ok(
        "get(None) through another handle",
        other.get(&thread, None).await,
    )?;
    c.eq(
        "get(None) through another handle (seq)",
        &got.map(|cp| cp.seq),
        &Some(4),
    )
}

/// [`Check::PendingWrites`].
///
/// # Cancel safety
///
/// As for [`run`](super::run).
pub async fn pending_writes<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::PendingWrites);
    let store = open();
    let thread = unique_thread("pending_writes");
    append_simple(c, store.as_ref(), &thread, 0..1).await?;

    let w0 = sample_write(0, json!({ "messages": ["a"] }));
    let w1 = sample_write(1, json!("b"));
    let mut w2 = sample_write(2, json!(null));
    w2.update = None;
    w2.dispatches = vec![
        (NodeId::new("worker"), json!({ "item": 1 })),
        (NodeId::new("worker"), json!({ "item": 2 })),
    ];
    for w in [&w2, &w0, &w1] {
        c.ok(
            &format!("put_write(seq 0, task {})", w.task),
            store.put_write(&thread, 0, w.clone()).await,
        )?;
    }
    let all = [w0.clone(), w1.clone(), w2.clone()];
    let got = c.ok("writes(0)", store.writes(&thread, 0).await)?;
    c.eq("writes(0), by task position", &got, &all.to_vec())?;

    let again = sample_write(1, json!("a different result"));
    c.ok(
        "put_write of task 1 again",
        store.put_write(&thread, 0, again).await,
    )?;
    let got = c.ok("writes(0)", store.writes(&thread, 0).await)?;
    c.eq(
        "writes(0) after writing task 1 twice (the first write must be kept)",
        &got,
        &all.to_vec(),
    )?;

    let got = c.ok("writes(1)", store.writes(&thread, 1).await)?;
    c.eq("writes(1) before any", &got, &Vec::new())?;
    let other = unique_thread("pending_writes_other");
    let got = c.ok("writes of another thread", store.writes(&other, 0).await)?;
    c.eq("writes of another thread", &got, &Vec::new())?;

    append_simple(c, store.as_ref(), &thread, 1..2).await?;
    let next = sample_write(0, json!("after checkpoint 1"));
    c.ok(
        "put_write(seq 1, task 0)",
        store.put_write(&thread, 1, next.clone()).await,
    )?;
    let got = c.ok("writes(1)", store.writes(&thread, 1).await)?;
    c.eq("writes(1)", &got, &vec![next.clone()])?;
    let got = c.ok("writes(0)", store.writes(&thread, 0).await)?;
    c.eq("writes(0) after writes to seq 1", &got, &all.to_vec())?;

    let reopened = open();
    let got = c.ok(
        "writes(0) after reopening",
        reopened.writes(&thread, 0).await,
    )?;
    c.eq("writes(0) after reopening", &got, &all.to_vec())?;
    let got = c.ok(
        "writes(1) after reopening",
        reopened.writes(&thread, 1).await,
    )?;
    c.eq("writes(1) after reopening", &got, &vec![next])
}

/// [`Check::ConcurrentThreads`]: 16 tasks append 20 checkpoints each to
/// threads of their own, through one handle.
///
/// # Cancel safety
///
/// As for [`run`](super::run).
pub async fn concurrent_threads<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    const TASKS: usize = 16;
    const CHECKPOINTS: u64 = 20;
    type Written = (ThreadId, Vec<Checkpoint>);
    let c = Ctx(Check::ConcurrentThreads);
    let store = open();
    let tasks: Vec<JoinHandle<Result<Written, String>>> = (0..TASKS)
        .map(|i| {
            let store = Arc::clone(&store);
            let thread = unique_thread(&format!("concurrent_threads_{i}"));
            tokio::spawn(async move {
                let mut written = Vec::new();
                for seq in 0..CHECKPOINTS {
                    let cp = sample_checkpoint(&thread, seq, simple_state(seq, thread.as_str()));
                    store
                        .append(cp.clone())
                        .await
                        .map_err(|e| format!("append seq {seq}: {e}"))?;
                    written.push(cp);
                }
                Ok((thread, written))
            })
        })
        .collect();
    let results = c.join(tasks).await?;
    let reopened = open();
    for (thread, written) in &results {
        let got = c.ok("list", whole(store.as_ref(), thread).await)?;
        c.same_list(&format!("history of {thread:?}"), &got, written)?;
        let got = c.ok(
            "list after reopening",
            whole(reopened.as_ref(), thread).await,
        )?;
        c.same_list(
            &format!("history of {thread:?} after reopening"),
            &got,
            written,
        )?;
    }
    Ok(())
}

/// [`Check::Forks`].
///
/// # Cancel safety
///
/// As for [`run`](super::run).
pub async fn forks<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::Forks);
    let store = open();
    let original = unique_thread("forks_original");
    let mut written = append_simple(c, store.as_ref(), &original, 0..3).await?;

    let fork = unique_thread("forks_fork");
    let mut f0 = sample_checkpoint(
        &fork,
        0,
        StateRecord::Full(json!({ "tag": "forked", "items": ["edited by a human"] })),
    );
    f0.forked_from = Some((original.clone(), 1));
    f0.run_id = RunId::new("fork-run");
    let f1 = sample_checkpoint(&fork, 1, simple_state(1, "forked"));
    c.ok("append the fork's seq 0", store.append(f0.clone()).await)?;
    c.ok("append the fork's seq 1", store.append(f1.clone()).await)?;

    let got = c.ok(
        "list of the original",
        whole(store.as_ref(), &original).await,
    )?;
    c.same_list("the original after forking", &got, &written)?;
    let got = c.ok("list of the fork", whole(store.as_ref(), &fork).await)?;
    c.same_list("the fork", &got, &[f0.clone(), f1.clone()])?;
    let got = c.ok("get(fork, Some(0))", store.get(&fork, Some(0)).await)?;
    c.eq(
        "forked_from of the fork's seq 0",
        &got.and_then(|cp| cp.forked_from),
        &Some((original.clone(), 1)),
    )?;
    let got = c.ok("chain(fork, 1)", store.chain(&fork, 1).await)?;
    c.same_list("chain(fork, 1)", &got, &[f0.clone(), f1.clone()])?;

    // Each thread keeps its own fence.
    written.extend(append_simple(c, store.as_ref(), &original, 3..4).await?);
    let f2 = sample_checkpoint(&fork, 2, simple_state(2, "forked"));
    c.ok("append the fork's seq 2", store.append(f2.clone()).await)?;
    let got = c.ok(
        "list of the original",
        whole(store.as_ref(), &original).await,
    )?;
    c.same_list("the original after appending to both", &got, &written)?;
    let got = c.ok("list of the fork", whole(store.as_ref(), &fork).await)?;
    c.same_list("the fork after appending to both", &got, &[f0, f1, f2])
}

/// [`Check::LargeState`]: a 2 MiB state and a 1 MiB pending write.
///
/// # Cancel safety
///
/// As for [`run`](super::run).
pub async fn large_state<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::LargeState);
    let store = open();
    let thread = unique_thread("large_state");
    let blob = |bytes: usize| {
        let unit = "flowtrace ✓ \"large\" state\n";
        unit.repeat(bytes / unit.len() + 1)
    };
    let cp0 = sample_checkpoint(
        &thread,
        0,
        StateRecord::Full(json!({ "blob": blob(2 << 20), "n": 1 })),
    );
    c.ok("append a 2 MiB state", store.append(cp0.clone()).await)?;
    let cp1 = sample_checkpoint(
        &thread,
        1,
        StateRecord::Delta(vec![json!({ "blob": blob(512 << 10) })]),
    );
    c.ok("append a 512 KiB delta", store.append(cp1.clone()).await)?;
    let write = sample_write(0, json!({ "blob": blob(1 << 20) }));
    c.ok(
        "put_write of a 1 MiB update",
        store.put_write(&thread, 1, write.clone()).await,
    )?;

    let got = c.ok("get(Some(0))", store.get(&thread, Some(0)).await)?;
    c.same("the 2 MiB state", got.as_ref(), &cp0)?;
    let got = c.ok("chain(1)", store.chain(&thread, 1).await)?;
    c.same_list("chain(1)", &got, &[cp0.clone(), cp1])?;
    let got = c.ok("writes(1)", store.writes(&thread, 1).await)?;
    c.eq("the 1 MiB pending write", &got, &vec![write.clone()])?;

    let reopened = open();
    let got = c.ok(
        "get(Some(0)) after reopening",
        reopened.get(&thread, Some(0)).await,
    )?;
    c.same("the 2 MiB state after reopening", got.as_ref(), &cp0)?;
    let got = c.ok(
        "writes(1) after reopening",
        reopened.writes(&thread, 1).await,
    )?;
    c.eq(
        "the 1 MiB pending write after reopening",
        &got,
        &vec![write],
    )
}

/// [`Check::FormatVersion`]: a checkpoint of format version 99 is refused
/// with [`CheckpointError::UnsupportedVersion`], when appended or, if the
/// store accepts it blindly, when read.
///
/// # Cancel safety
///
/// As for [`run`](super::run).
pub async fn format_version<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::FormatVersion);
    let store = open();
    let thread = unique_thread("format_version");
    let mut future = sample_checkpoint(&thread, 0, simple_state(0, "future"));
    future.format_version = 99;
    match store.append(future).await {
        Err(CheckpointError::UnsupportedVersion { found, .. }) => {
            c.eq("UnsupportedVersion.found", &found, &99)?;
            // Nothing was stored: seq 0 is still free.
            let got = c.ok("get(None) after the refused append", store.get(&thread, None).await)?;
            c.ensure(got.is_none(), || {
                "a refused append of format version 99 left a checkpoint behind".into()
            })?;
            append_simple(c, store.as_ref(), &thread, 0..1).await?;
            Ok(())
        }
        Err(e) => Err(c.fail(format!(
            "appending format version 99 failed with {e}, expected UnsupportedVersion"
        ))),
        Ok(()) => match store.get(&thread, Some(0)).await {
            Err(CheckpointError::UnsupportedVersion { found: 99, .. }) => Ok(()),
            Err(e) => Err(c.fail(format!(
                "format version 99 was accepted, then reading it failed with {e}, expected UnsupportedVersion"
            ))),
            Ok(_) => Err(c.fail(
                "format version 99 was accepted on append and returned on read; one of them must fail with UnsupportedVersion",
            )),
        },
    }
}

/// [`Check::Chain`]: with full states at 0 and 3 and deltas elsewhere,
/// `chain(5)` is 3, 4, 5 and `chain(2)` is 0, 1, 2.
///
/// # Cancel safety
///
/// As for [`run`](super::run).
pub async fn chain<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::Chain);
    let store = open();
    let thread = unique_thread("chain");
    let mut written = Vec::new();
    for seq in 0..6u64 {
        let state = if seq == 0 || seq == 3 {
            StateRecord::Full(json!({ "edited_at": seq }))
        } else {
            StateRecord::Delta(vec![
                json!({ "seq": seq }),
                json!({ "seq": seq, "second": true }),
            ])
        };
        let cp = sample_checkpoint(&thread, seq, state);
        c.ok(&format!("append seq {seq}"), store.append(cp.clone()).await)?;
        written.push(cp);
    }
    let reopened = open();
    for (seq, from) in [(5u64, 3usize), (4, 3), (3, 3), (2, 0), (1, 0), (0, 0)] {
        let want = written.get(from..=seq as usize).unwrap_or_default();
        let got = c.ok(&format!("chain({seq})"), store.chain(&thread, seq).await)?;
        c.same_list(&format!("chain({seq})"), &got, want)?;
        let got = c.ok(
            &format!("chain({seq}) after reopening"),
            reopened.chain(&thread, seq).await,
        )?;
        c.same_list(&format!("chain({seq}) after reopening"), &got, want)?;
    }
    Ok(())
}
