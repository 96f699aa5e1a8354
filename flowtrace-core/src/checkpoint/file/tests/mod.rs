//! Unit tests of the file store: framing, names, torn tails, damage,
//! handles sharing a directory.

mod format;
mod history;
mod reads;
mod sidecar;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::frame::encode_frame;
use super::*;
use crate::checkpoint::{CHECKPOINT_FORMAT_VERSION, PendingWrite, StateRecord};
use crate::checkpoint::{TaskSpec, ThreadStatus};
use crate::ids::{NodeId, RunId, StepId};
use crate::pricing::{Cost, TokenUsage};
use crate::trace::StepRecord;
use crate::trace::{StepStatus, Timestamp};

/// A fresh directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "flowtrace-file-{label}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn step(node: &str) -> StepRecord {
    StepRecord {
        step_id: StepId(1),
        node: NodeId::new(node),
        parent_step_id: None,
        status: StepStatus::Succeeded,
        attempts: 1,
        usage: TokenUsage::new(10, 5),
        cost: Cost::ZERO,
        latency: Duration::from_micros(1500),
        started_at: Timestamp::from_unix_micros(1_700_000_000_000_000),
        provider: None,
        model: None,
        cache_hits: 0,
        call_retries: 0,
        fallbacks: 0,
        branch: None,
        input: None,
        error: None,
    }
}

fn cp(thread: &ThreadId, seq: u64) -> Checkpoint {
    Checkpoint {
        thread_id: thread.clone(),
        seq,
        parent_seq: seq.checked_sub(1),
        forked_from: None,
        run_id: RunId::new("r"),
        step: seq + 1,
        nodes: vec![NodeId::new("n")],
        created_at: Timestamp::now(),
        format_version: CHECKPOINT_FORMAT_VERSION,
        state: if seq == 0 {
            StateRecord::Full(json!({ "items": [] }))
        } else {
            StateRecord::Delta(vec![json!({ "seq": seq })])
        },
        frontier: vec![TaskSpec::new("n", None)],
        joins: Vec::new(),
        node_executions: seq + 1,
        steps: vec![step("n")],
        status: ThreadStatus::Running,
        step_ids: seq + 1,
        interrupts: Vec::new(),
        approvals: Vec::new(),
        error: None,
        metadata: Default::default(),
    }
}

fn write(task: u32) -> PendingWrite {
    PendingWrite {
        task,
        node: NodeId::new("n"),
        update: Some(json!({ "task": task })),
        dispatches: Vec::new(),
        step: step("n"),
    }
}

fn frames(payloads: &[&[u8]]) -> Vec<u8> {
    payloads
        .iter()
        .filter_map(|p| encode_frame(p))
        .flatten()
        .collect()
}
