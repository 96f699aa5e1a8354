//! Assertions and helpers the checks share.

use std::fmt;
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::{Check, CheckFailure, sample_checkpoint, simple_state};
use crate::checkpoint::{Checkpoint, CheckpointError, Checkpointer};
use crate::ids::ThreadId;

// ---------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------

pub(super) type Store = Arc<dyn Checkpointer>;

/// Builds failures of one check.
#[derive(Clone, Copy)]
pub(super) struct Ctx(pub(super) Check);

impl Ctx {
    pub(super) fn fail(self, message: impl Into<String>) -> CheckFailure {
        CheckFailure {
            check: self.0,
            message: message.into(),
        }
    }

    pub(super) fn ensure(
        self,
        ok: bool,
        message: impl FnOnce() -> String,
    ) -> Result<(), CheckFailure> {
        if ok {
            Ok(())
        } else {
            Err(self.fail(message()))
        }
    }

    /// The value of a store call that must succeed.
    pub(super) fn ok<T>(
        self,
        what: &str,
        r: Result<T, CheckpointError>,
    ) -> Result<T, CheckFailure> {
        r.map_err(|e| self.fail(format!("{what}: unexpected error: {e}")))
    }

    pub(super) fn eq<T: PartialEq + fmt::Debug>(
        self,
        what: &str,
        got: &T,
        want: &T,
    ) -> Result<(), CheckFailure> {
        self.ensure(got == want, || {
            format!("{what}: got {}, expected {}", short(got), short(want))
        })
    }

    /// Compares checkpoints, naming the fields that differ.
    pub(super) fn same(
        self,
        what: &str,
        got: Option<&Checkpoint>,
        want: &Checkpoint,
    ) -> Result<(), CheckFailure> {
        let Some(got) = got else {
            return Err(self.fail(format!(
                "{what}: checkpoint {} of {:?} is missing",
                want.seq, want.thread_id
            )));
        };
        let fields = differing_fields(got, want);
        self.ensure(fields.is_empty(), || {
            format!(
                "{what}: checkpoint {} of {:?} came back different in {}",
                want.seq,
                want.thread_id,
                fields.join(", ")
            )
        })
    }

    /// Compares lists of checkpoints.
    pub(super) fn same_list(
        self,
        what: &str,
        got: &[Checkpoint],
        want: &[Checkpoint],
    ) -> Result<(), CheckFailure> {
        let seqs = |l: &[Checkpoint]| l.iter().map(|c| c.seq).collect::<Vec<_>>();
        self.eq(&format!("{what} (seqs)"), &seqs(got), &seqs(want))?;
        for (g, w) in got.iter().zip(want) {
            self.same(what, Some(g), w)?;
        }
        Ok(())
    }

    /// Joins spawned tasks, failing on the first error or panic.
    pub(super) async fn join<T>(
        self,
        tasks: Vec<JoinHandle<Result<T, String>>>,
    ) -> Result<Vec<T>, CheckFailure> {
        let mut out = Vec::with_capacity(tasks.len());
        let mut first_error = None;
        for (i, task) in tasks.into_iter().enumerate() {
            match task.await {
                Ok(Ok(v)) => out.push(v),
                Ok(Err(e)) => {
                    first_error.get_or_insert_with(|| format!("task {i}: {e}"));
                }
                Err(e) => {
                    first_error.get_or_insert_with(|| format!("task {i} failed: {e}"));
                }
            }
        }
        match first_error {
            Some(e) => Err(self.fail(e)),
            None => Ok(out),
        }
    }
}

/// Debug output, cut to a readable length.
pub(super) fn short(value: &impl fmt::Debug) -> String {
    const MAX: usize = 300;
    let s = format!("{value:?}");
    if s.len() <= MAX {
        return s;
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &s[..end], s.len())
}

pub(super) fn differing_fields(a: &Checkpoint, b: &Checkpoint) -> Vec<String> {
    let mut out = Vec::new();
    let mut cmp = |name: &str, same: bool, got: &dyn fmt::Debug, want: &dyn fmt::Debug| {
        if !same {
            out.push(format!(
                "{name} (got {}, expected {})",
                short(&got),
                short(&want)
            ));
        }
    };
    cmp(
        "thread_id",
        a.thread_id == b.thread_id,
        &a.thread_id,
        &b.thread_id,
    );
    cmp("seq", a.seq == b.seq, &a.seq, &b.seq);
    cmp(
        "parent_seq",
        a.parent_seq == b.parent_seq,
        &a.parent_seq,
        &b.parent_seq,
    );
    cmp(
        "forked_from",
        a.forked_from == b.forked_from,
        &a.forked_from,
        &b.forked_from,
    );
    cmp("run_id", a.run_id == b.run_id, &a.run_id, &b.run_id);
    cmp("step", a.step == b.step, &a.step, &b.step);
    cmp("nodes", a.nodes == b.nodes, &a.nodes, &b.nodes);
    cmp(
        "created_at",
        a.created_at == b.created_at,
        &a.created_at,
        &b.created_at,
    );
    cmp(
        "format_version",
        a.format_version == b.format_version,
        &a.format_version,
        &b.format_version,
    );
    cmp("state", a.state == b.state, &a.state, &b.state);
    cmp(
        "frontier",
        a.frontier == b.frontier,
        &a.frontier,
        &b.frontier,
    );
    cmp("joins", a.joins == b.joins, &a.joins, &b.joins);
    cmp(
        "node_executions",
        a.node_executions == b.node_executions,
        &a.node_executions,
        &b.node_executions,
    );
    cmp("steps", a.steps == b.steps, &a.steps, &b.steps);
    cmp("status", a.status == b.status, &a.status, &b.status);
    cmp(
        "interrupts",
        a.interrupts == b.interrupts,
        &a.interrupts,
        &b.interrupts,
    );
    cmp(
        "approvals",
        a.approvals == b.approvals,
        &a.approvals,
        &b.approvals,
    );
    cmp("error", a.error == b.error, &a.error, &b.error);
    cmp(
        "metadata",
        a.metadata == b.metadata,
        &a.metadata,
        &b.metadata,
    );
    cmp(
        "step_ids",
        a.step_ids == b.step_ids,
        &a.step_ids,
        &b.step_ids,
    );
    out
}

/// Appends `seqs` of a simple thread, returning what was appended.
pub(super) async fn append_simple(
    c: Ctx,
    store: &dyn Checkpointer,
    thread: &ThreadId,
    seqs: std::ops::Range<u64>,
) -> Result<Vec<Checkpoint>, CheckFailure> {
    let mut out = Vec::new();
    for seq in seqs {
        let cp = sample_checkpoint(thread, seq, simple_state(seq, thread.as_str()));
        c.ok(&format!("append seq {seq}"), store.append(cp.clone()).await)?;
        out.push(cp);
    }
    Ok(out)
}

/// The whole history of a thread, oldest first.
pub(super) async fn whole(
    store: &dyn Checkpointer,
    thread: &ThreadId,
) -> Result<Vec<Checkpoint>, CheckpointError> {
    let mut all = store.list(thread, None, usize::MAX).await?;
    all.reverse();
    Ok(all)
}

/// Fails unless `history` is seqs 0, 1, … with matching parents.
pub(super) fn contiguous(c: Ctx, what: &str, history: &[Checkpoint]) -> Result<(), CheckFailure> {
    for (i, cp) in history.iter().enumerate() {
        let i = i as u64;
        c.ensure(cp.seq == i && cp.parent_seq == i.checked_sub(1), || {
            format!(
                "{what}: history is not contiguous: position {i} holds seq {} with parent {:?} (seqs: {:?})",
                cp.seq,
                cp.parent_seq,
                history.iter().map(|c| c.seq).collect::<Vec<_>>()
            )
        })?;
    }
    Ok(())
}
