//! Sample data the checks write.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::checkpoint::{
    ApprovalRecord, CHECKPOINT_FORMAT_VERSION, Checkpoint, DefaultDecision, Interrupt,
    InterruptWhen, JoinState, PendingWrite, StateRecord, TaskSpec, ThreadStatus,
};
use crate::ids::{NodeId, RunId, StepId, ThreadId};
use crate::pricing::{Cost, TokenUsage};
use crate::trace::StepRecord;
use crate::trace::{StepStatus, Timestamp};

// ---------------------------------------------------------------------------
// Sample data
// ---------------------------------------------------------------------------

/// A thread id no other call returns (in this process or, practically,
/// any other): `conformance-<label>-<pid>-<nanos>-<counter>`.
pub fn unique_thread(label: &str) -> ThreadId {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    ThreadId::new(format!(
        "conformance-{label}-{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A plausible checkpoint: `seq` of `thread` with the given state, parent
/// `seq - 1`, one node run, one task next, status running, and no optional
/// fields set.
pub fn sample_checkpoint(thread: &ThreadId, seq: u64, state: StateRecord) -> Checkpoint {
    Checkpoint {
        thread_id: thread.clone(),
        seq,
        parent_seq: seq.checked_sub(1),
        forked_from: None,
        run_id: RunId::new("r"),
        step: seq + 1,
        nodes: vec![NodeId::new("work")],
        created_at: Timestamp::now(),
        format_version: CHECKPOINT_FORMAT_VERSION,
        state,
        frontier: vec![TaskSpec::new("work", None)],
        joins: Vec::new(),
        node_executions: seq + 1,
        steps: vec![sample_step(seq + 1, "work")],
        status: ThreadStatus::Running,
        step_ids: seq + 1,
        interrupts: Vec::new(),
        approvals: Vec::new(),
        error: None,
        metadata: Default::default(),
    }
}

/// A plausible pending write of `task`, with `update` as its update.
pub fn sample_write(task: u32, update: serde_json::Value) -> PendingWrite {
    PendingWrite {
        task,
        node: NodeId::new(format!("task_{task}")),
        update: Some(update),
        dispatches: Vec::new(),
        step: sample_step(u64::from(task) + 1, "task"),
    }
}

pub(super) fn sample_step(id: u64, node: &str) -> StepRecord {
    StepRecord {
        step_id: StepId(id),
        node: NodeId::new(node),
        parent_step_id: None,
        status: StepStatus::Succeeded,
        attempts: 1,
        usage: TokenUsage::new(120, 30),
        cost: Cost::from_microdollars(42),
        latency: Duration::from_micros(1_250),
        started_at: Timestamp::now(),
        provider: Some("openai".into()),
        model: Some("gpt-4o-mini".into()),
        cache_hits: 0,
        call_retries: 1,
        fallbacks: 1,
        branch: None,
        input: None,
        error: None,
    }
}

/// A checkpoint with every optional field set.
pub(super) fn rich_checkpoint(thread: &ThreadId) -> Checkpoint {
    let mut cp = sample_checkpoint(
        thread,
        0,
        StateRecord::Full(json!({
            "text": "héllo \"wörld\" ✓ 🚀 \\ / \n\t",
            "nested": { "list": [1, -2, 0.5, true, false, null, "x"], "empty": {}, "none": [] },
            "big": u64::MAX,
            "small": i64::MIN,
        })),
    );
    let mut failed = sample_step(2, "review");
    failed.status = StepStatus::Failed;
    failed.attempts = 3;
    failed.parent_step_id = Some(StepId(1));
    failed.branch = Some("escalate".into());
    failed.input = Some(json!({ "ticket": 7 }));
    failed.error = Some("model overloaded".into());
    failed.cache_hits = 2;
    cp.run_id = RunId::new("run-ünïcode");
    cp.nodes = vec![NodeId::new("draft"), NodeId::new("review")];
    cp.frontier = vec![
        TaskSpec::new("publish", None),
        TaskSpec {
            answers: vec![json!("yes"), json!({ "amount": 5 })],
            approved: Some(json!({ "limit": 10 })),
            subgraph: Some(Box::new(crate::checkpoint::SubgraphState {
                state: json!({ "draft": "x" }),
                step: 2,
                frontier: vec![TaskSpec::new("inner", Some(json!(1)))],
                joins: Vec::new(),
                writes: vec![sample_write(1, json!({ "k": "v" }))],
            })),
            ..TaskSpec::new("translate", Some(json!({ "lang": "fr" })))
        },
    ];
    cp.joins = vec![JoinState {
        node: NodeId::new("merge"),
        resolved: 2,
        fired: 1,
        inputs: vec![json!("a"), json!({ "b": [1, 2] })],
    }];
    cp.node_executions = 5;
    cp.steps.push(failed);
    cp.status = ThreadStatus::Interrupted;
    cp.interrupts = vec![Interrupt {
        id: "interrupt-1".into(),
        node: NodeId::new("review"),
        path: vec![NodeId::new("outer")],
        tasks: vec![1, 0],
        call: 2,
        when: InterruptWhen::During,
        payload: json!({ "question": "refund 120?" }),
        created_at: Timestamp::now(),
        deadline: Some(Timestamp::now().plus_micros(60_000_000)),
        on_timeout: Some(DefaultDecision::Escalate(NodeId::new("supervisor"))),
    }];
    cp.error = Some(crate::checkpoint::TaskError {
        node: Some(NodeId::new("review")),
        task: Some(1),
        kind: "node".into(),
        message: "boom".into(),
    });
    cp.metadata.insert("tenant".into(), json!("acme"));
    cp.step_ids = 9;
    cp.approvals = vec![ApprovalRecord {
        interrupt_id: "interrupt-0".into(),
        node: NodeId::new("draft"),
        decided_by: "ana@example.com".into(),
        decided_at: Timestamp::now(),
        decision: crate::checkpoint::DecisionKind::Update,
        path: Vec::new(),
        payload: json!({ "amount": 100 }),
        checkpoint_seq: 0,
    }];
    cp
}

/// The state of checkpoint `seq` in simple threads: full at 0, deltas after.
pub(super) fn simple_state(seq: u64, tag: &str) -> StateRecord {
    if seq == 0 {
        StateRecord::Full(json!({ "tag": tag, "items": [] }))
    } else {
        StateRecord::Delta(vec![json!({ "tag": tag, "seq": seq })])
    }
}
