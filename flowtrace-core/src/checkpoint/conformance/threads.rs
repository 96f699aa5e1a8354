//! Checks of listing and copying threads.

use std::sync::Arc;

use serde_json::json;

use super::lifecycle::{
    append_all, expect_err, expect_listed, nth, part, rewritten, snapshots, summary_of,
};
use super::{Check, CheckFailure, Ctx, sample_checkpoint, sample_write, unique_thread, whole};
use crate::checkpoint::{
    Checkpoint, CheckpointError, Checkpointer, PendingWrite, PruneOutcome, Retention, StateRecord,
    ThreadFilter, ThreadInfo, ThreadStatus,
};
use crate::ids::ThreadId;

/// [`Check::ListThreads`].
///
/// # Cancel safety
///
/// As for [`run`](super::run).
pub async fn list_threads<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::ListThreads);
    let store = open();
    let kit = unique_thread("list_threads");
    let id = |suffix: &str| ThreadId::new(format!("{kit}-{suffix}"));
    let meta = |cp: &mut Checkpoint, tenant: &str| {
        cp.metadata.insert("kit".into(), json!(kit.as_str()));
        cp.metadata.insert("tenant".into(), json!(tenant));
    };
    let full =
        |t: &ThreadId| sample_checkpoint(t, 0, StateRecord::Full(json!({ "t": t.as_str() })));
    let next = |t: &ThreadId, seq: u64, status: ThreadStatus| {
        let mut cp = sample_checkpoint(t, seq, StateRecord::Delta(vec![json!(seq)]));
        cp.status = status;
        cp
    };

    // a: acme, completed (metadata only on seq 0).
    let mut a0 = full(&id("a"));
    meta(&mut a0, "acme");
    let a = vec![a0, next(&id("a"), 1, ThreadStatus::Completed)];
    // b: acme, interrupted, a fork of a.
    let mut b0 = full(&id("b"));
    meta(&mut b0, "acme");
    b0.forked_from = Some((id("a"), 0));
    let b = vec![b0, next(&id("b"), 1, ThreadStatus::Interrupted)];
    // c: globex at first, acme since seq 1 (the latest metadata counts).
    let mut c0 = full(&id("c"));
    meta(&mut c0, "globex");
    let mut c1 = next(&id("c"), 1, ThreadStatus::Running);
    meta(&mut c1, "acme");
    let cs = vec![c0, c1, next(&id("c"), 2, ThreadStatus::Running)];
    // d: globex, failed.
    let mut d0 = full(&id("d"));
    meta(&mut d0, "globex");
    let d = vec![d0, next(&id("d"), 1, ThreadStatus::Failed)];
    // e: not in the kit's metadata.
    let mut e0 = full(&id("e"));
    e0.metadata.insert("other".into(), json!(kit.as_str()));
    let e = vec![e0];
    for thread in [&a, &b, &cs, &d, &e] {
        append_all(c, store.as_ref(), thread).await?;
    }
    // f: pending writes only, no checkpoint: never listed.
    c.ok(
        "put_write to a thread with no checkpoint",
        store
            .put_write(&id("f"), 0, sample_write(0, json!("orphan")))
            .await,
    )?;
    let info = |cps: &[Checkpoint]| summary_of(cps).into_iter().collect::<Vec<_>>();
    let [ia, ib, ic, id_, ie] = [&a, &b, &cs, &d, &e].map(|t| info(t));
    let cat = |parts: &[&Vec<ThreadInfo>]| {
        parts
            .iter()
            .flat_map(|p| p.iter().cloned())
            .collect::<Vec<_>>()
    };
    let kit_only = ThreadFilter::new().metadata("kit", kit.as_str());

    for (handle, via) in [(store.clone(), ""), (open(), " through another handle")] {
        let h = handle.as_ref();
        let q = |what: &str| format!("{what}{via}");
        expect_listed(
            c,
            &q("kit threads"),
            h,
            &kit_only,
            &cat(&[&ia, &ib, &ic, &id_]),
        )
        .await?;
        expect_listed(
            c,
            &q("tenant acme (c by its latest metadata)"),
            h,
            &kit_only.clone().metadata("tenant", "acme"),
            &cat(&[&ia, &ib, &ic]),
        )
        .await?;
        expect_listed(
            c,
            &q("tenant globex"),
            h,
            &kit_only.clone().metadata("tenant", "globex"),
            &cat(&[&id_]),
        )
        .await?;
        expect_listed(
            c,
            &q("status completed"),
            h,
            &kit_only.clone().status(ThreadStatus::Completed),
            &cat(&[&ia]),
        )
        .await?;
        expect_listed(
            c,
            &q("status completed or failed"),
            h,
            &kit_only
                .clone()
                .status(ThreadStatus::Completed)
                .status(ThreadStatus::Failed),
            &cat(&[&ia, &id_]),
        )
        .await?;
        expect_listed(
            c,
            &q("tenant acme and status interrupted"),
            h,
            &kit_only
                .clone()
                .metadata("tenant", "acme")
                .status(ThreadStatus::Interrupted),
            &cat(&[&ib]),
        )
        .await?;
        // Pages of 2 with the cursor.
        expect_listed(
            c,
            &q("first page of 2"),
            h,
            &kit_only.clone().limit(2),
            &cat(&[&ia, &ib]),
        )
        .await?;
        expect_listed(
            c,
            &q("page after b"),
            h,
            &kit_only.clone().after(id("b")).limit(2),
            &cat(&[&ic, &id_]),
        )
        .await?;
        expect_listed(
            c,
            &q("page after d"),
            h,
            &kit_only.clone().after(id("d")).limit(2),
            &[],
        )
        .await?;
        expect_listed(c, &q("limit 0"), h, &kit_only.clone().limit(0), &[]).await?;
        // Without a filter, the cursor alone: the next thread id after a is b,
        // after d is e (no other thread's id starts with the kit's).
        expect_listed(
            c,
            &q("unfiltered, after a, limit 1"),
            h,
            &ThreadFilter::new().after(id("a")).limit(1),
            &cat(&[&ib]),
        )
        .await?;
        expect_listed(
            c,
            &q("unfiltered, after d, limit 1"),
            h,
            &ThreadFilter::new().after(id("d")).limit(1),
            &cat(&[&ie]),
        )
        .await?;
        let after_e = c.ok(
            "list_threads after e",
            h.list_threads(&ThreadFilter::new().after(id("e")).limit(1))
                .await,
        )?;
        c.ensure(
            after_e.first().map(|i| &i.thread_id) != Some(&id("f")),
            || q("a thread with pending writes and no checkpoint was listed"),
        )?;
    }
    Ok(())
}

/// [`Check::CopyThread`].
///
/// # Cancel safety
///
/// As for [`run`](super::run).
pub async fn copy_thread<F>(open: &F) -> Result<(), CheckFailure>
where
    F: Fn() -> Arc<dyn Checkpointer>,
{
    let c = Ctx(Check::CopyThread);
    let store = open();
    let src = unique_thread("copy_thread_src");
    let dst = unique_thread("copy_thread_dst");
    let mut written = snapshots(&src, 0..7, &[0, 5]);
    if let Some(first) = written.first_mut() {
        first
            .metadata
            .insert("conformance".into(), json!(src.as_str()));
        first.forked_from = Some((unique_thread("copy_thread_origin"), 3));
    }
    if let Some(last) = written.last_mut() {
        last.status = ThreadStatus::Interrupted;
    }
    append_all(c, store.as_ref(), &written).await?;
    let writes: Vec<(u64, PendingWrite)> = vec![
        (6, sample_write(0, json!("six/0"))),
        (6, sample_write(1, json!("six/1"))),
        (2, sample_write(0, json!("two/0"))),
    ];
    for (seq, w) in &writes {
        c.ok("put_write", store.put_write(&src, *seq, w.clone()).await)?;
    }
    let writes_of = |seq: u64| -> Vec<PendingWrite> {
        writes
            .iter()
            .filter(|(s, _)| *s == seq)
            .map(|(_, w)| w.clone())
            .collect()
    };

    c.ok("copy_thread", store.copy_thread(&src, &dst).await)?;
    let copied = rewritten(&written, &dst);
    let summary = |cps: &[Checkpoint]| summary_of(cps).into_iter().collect::<Vec<_>>();
    for (handle, via) in [(store.clone(), ""), (open(), " through another handle")] {
        let h = handle.as_ref();
        let got = c.ok("list of the copy", whole(h, &dst).await)?;
        c.same_list(&format!("the copy{via}"), &got, &copied)?;
        for seq in [2, 6] {
            let got = c.ok("writes of the copy", h.writes(&dst, seq).await)?;
            c.eq(
                &format!("writes({seq}) of the copy{via}"),
                &got,
                &writes_of(seq),
            )?;
        }
        let got = c.ok("chain(6) of the copy", h.chain(&dst, 6).await)?;
        c.same_list(
            &format!("chain(6) of the copy{via}"),
            &got,
            part(&copied, 5..),
        )?;
        let got = c.ok("list of the source", whole(h, &src).await)?;
        c.same_list(&format!("the source after the copy{via}"), &got, &written)?;
        let listed = c.ok(
            "list_threads",
            h.list_threads(
                &ThreadFilter::new()
                    .metadata("conformance", src.as_str())
                    .limit(1000),
            )
            .await,
        )?;
        let find = |t: &ThreadId| listed.iter().find(|i| &i.thread_id == t).cloned();
        c.eq(
            &format!("the copy's summary{via}"),
            &find(&dst).into_iter().collect::<Vec<_>>(),
            &summary(&copied),
        )?;
        c.eq(
            &format!("the source's summary{via}"),
            &find(&src).into_iter().collect::<Vec<_>>(),
            &summary(&written),
        )?;
    }

    // The copy and the source go their own ways.
    let dst7 = sample_checkpoint(&dst, 7, StateRecord::Delta(vec![json!("copy")]));
    c.ok("append seq 7 to the copy", store.append(dst7.clone()).await)?;
    let got = c.ok("get(None) of the source", store.get(&src, None).await)?;
    c.same(
        "the source's latest after appending to the copy",
        got.as_ref(),
        nth(c, &written, 6)?,
    )?;
    let src7 = sample_checkpoint(&src, 7, StateRecord::Delta(vec![json!("source")]));
    c.ok("append seq 7 to the source", store.append(src7).await)?;
    let got = c.ok("get(None) of the copy", store.get(&dst, None).await)?;
    c.same(
        "the copy's latest after appending to the source",
        got.as_ref(),
        &dst7,
    )?;

    // Errors: the target has checkpoints; the source has none.
    for (from, to, what) in [
        (&src, &dst, "copy onto an existing thread"),
        (&src, &src, "copy of a thread onto itself"),
    ] {
        expect_err(
            c,
            what,
            store.copy_thread(from, to).await,
            "ThreadExists naming the target",
            |e| matches!(e, CheckpointError::ThreadExists { thread } if thread == to),
        )?;
    }
    let got = c.ok("get(None) of the copy", store.get(&dst, None).await)?;
    c.same("the copy after a refused copy onto it", got.as_ref(), &dst7)?;
    let missing = unique_thread("copy_thread_missing");
    let nowhere = unique_thread("copy_thread_nowhere");
    expect_err(
        c,
        "copy of a thread never written",
        store.copy_thread(&missing, &nowhere).await,
        "ThreadNotFound naming the source",
        |e| matches!(e, CheckpointError::ThreadNotFound { thread } if *thread == missing),
    )?;
    let got = c.ok("get(None)", store.get(&nowhere, None).await)?;
    c.ensure(got.is_none(), || "a refused copy created its target".into())?;

    // A pruned thread copies as pruned; a target with stray writes only
    // is overwritten.
    let outcome = c.ok(
        "prune(Latest(1))",
        store.prune(&src, Retention::Latest(1)).await,
    )?;
    c.eq(
        "prune(Latest(1)) of the source",
        &outcome,
        &PruneOutcome::new(5, 5),
    )?;
    let pruned_copy = unique_thread("copy_thread_pruned");
    c.ok(
        "put_write to the target before copying",
        store
            .put_write(&pruned_copy, 0, sample_write(0, json!("stray")))
            .await,
    )?;
    c.ok(
        "copy of a pruned thread",
        store.copy_thread(&src, &pruned_copy).await,
    )?;
    let source_now = c.ok("list of the source", whole(store.as_ref(), &src).await)?;
    let reopened = open();
    let got = c.ok(
        "list of the copy",
        whole(reopened.as_ref(), &pruned_copy).await,
    )?;
    c.same_list(
        "the copy of a pruned thread",
        &got,
        &rewritten(&source_now, &pruned_copy),
    )?;
    let got = c.ok(
        "writes(0) of the copy",
        reopened.writes(&pruned_copy, 0).await,
    )?;
    c.eq(
        "the target's stray writes after the copy",
        &got,
        &Vec::new(),
    )?;
    let got = c.ok(
        "writes(6) of the copy",
        reopened.writes(&pruned_copy, 6).await,
    )?;
    c.eq(
        "writes(6) of the copy of a pruned thread",
        &got,
        &writes_of(6),
    )?;
    expect_err(
        c,
        "chain(1) of the copy of a pruned thread",
        reopened.chain(&pruned_copy, 1).await,
        "Pruned naming oldest 5",
        |e| matches!(e, CheckpointError::Pruned { oldest: 5, .. }),
    )?;
    let listed = c.ok(
        "list_threads",
        reopened
            .list_threads(
                &ThreadFilter::new()
                    .metadata("conformance", src.as_str())
                    .limit(1000),
            )
            .await,
    )?;
    let src_info = listed.iter().find(|i| i.thread_id == src).cloned();
    let copy_info = listed.iter().find(|i| i.thread_id == pruned_copy).cloned();
    c.eq(
        "the summary of the copy of a pruned thread (creation time, metadata and origin of the pruned seq 0)",
        &copy_info,
        &src_info.map(|mut i| {
            i.thread_id = pruned_copy.clone();
            i
        }),
    )
}
