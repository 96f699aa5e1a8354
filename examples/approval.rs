//! FlowTrace human approval: a durable billing workflow that stops for
//! decisions, survives a kill switch, and keeps an audit trail.
//!
//! ```text
//! cargo run --example approval
//! ```
//!
//! Intake → Quote (a model call) → Sales discount → Billing approval → Charge → Receipt,
//! run durably on a [`FileCheckpointer`] (one fsync per checkpoint) in a temp
//! directory. Every charge needs finance's sign-off: the graph stops *before*
//! `billing_approval` (a static interrupt).
//!
//! 1. Order 1001: the run stops `interrupted` before `billing_approval`; the
//!    pending interrupt is printed, then finance approves it and the run
//!    finishes. The approval record is read back from the thread's
//!    checkpoints.
//! 2. Order 1002: the customer asks for a discount, so `sales_discount` calls
//!    `ctx.interrupt(..)` from inside the node (a dynamic interrupt) and
//!    receives the sales approver's answer when resumed. Finance then approves
//!    the charge, but an operator hits the kill switch ([`HaltSwitch`]) from
//!    another task while the payment is in flight: the payment completes and
//!    is committed, and the run stops `halted` at the next safe point with its
//!    checkpoint kept. `graph.invoke(flowtrace::RunInput::Resume, ..)` then finishes the thread without
//!    charging again.
//!
//! The live trace of every call is printed with [`Timeline`]. Runs offline in
//! well under a second.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flowtrace::checkpoint::{
    Checkpointer, DecisionKind, FileCheckpointer, Interrupt, InterruptWhen, StateRecord,
    ThreadStatus,
};
use flowtrace::exec::{Command, HaltSwitch};
use flowtrace::testing::ScriptedModel;
use flowtrace::trace::{LogLevel, SinkError, Timeline};
use flowtrace::{
    ChatRequest, CompiledGraph, EventKind, GraphBuilder, NodeContext, NodeOutput, RunConfig,
    RunOutput, RunStatus, State, ThreadId, TokenUsage, TraceEvent, TraceSink, node_fn, reducer,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::oneshot;

/// One line of an order.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LineItem {
    sku: String,
    quantity: u64,
    unit_cents: u64,
}

/// The workflow's state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Order {
    order_id: String,
    customer: String,
    items: Vec<LineItem>,
    /// The discount the customer asked for, if any.
    discount_requested_pct: Option<u64>,
    quote_cents: Option<u64>,
    quote_note: Option<String>,
    discount_pct: u64,
    charged_cents: Option<u64>,
    payment_ref: Option<String>,
    receipt: Option<String>,
    log: Vec<String>,
}

/// A partial change to [`Order`].
#[derive(Debug, Default, Serialize, Deserialize)]
struct Change {
    quote_cents: Option<u64>,
    quote_note: Option<String>,
    discount_pct: Option<u64>,
    charged_cents: Option<u64>,
    payment_ref: Option<String>,
    receipt: Option<String>,
    log: Vec<String>,
}

impl State for Order {
    type Update = Change;
    fn apply(&mut self, c: Change) {
        reducer::replace(&mut self.quote_cents, c.quote_cents.map(Some));
        reducer::replace(&mut self.quote_note, c.quote_note.map(Some));
        reducer::replace(&mut self.discount_pct, c.discount_pct);
        reducer::replace(&mut self.charged_cents, c.charged_cents.map(Some));
        reducer::replace(&mut self.payment_ref, c.payment_ref.map(Some));
        reducer::replace(&mut self.receipt, c.receipt.map(Some));
        reducer::append(&mut self.log, c.log);
    }
}

impl Order {
    fn new(id: &str, customer: &str, items: &[(&str, u64, u64)]) -> Self {
        Self {
            order_id: id.into(),
            customer: customer.into(),
            items: items
                .iter()
                .map(|&(sku, quantity, unit_cents)| LineItem {
                    sku: sku.into(),
                    quantity,
                    unit_cents,
                })
                .collect(),
            ..Self::default()
        }
    }

    /// What finance is asked to approve.
    fn amount_due(&self) -> u64 {
        self.quote_cents.unwrap_or(0) * (100 - self.discount_pct) / 100
    }
}

fn usd(cents: u64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

fn log(line: String) -> Change {
    Change {
        log: vec![line],
        ..Change::default()
    }
}

/// The workflow's external effects, counted so the example can check them.
struct Services {
    /// Writes the quote; priced as OpenAI gpt-4o-mini.
    quoter: Arc<ScriptedModel>,
    /// Charges made on the (simulated) payment gateway.
    payments: Arc<AtomicUsize>,
}

fn services() -> Services {
    Services {
        quoter: Arc::new(
            ScriptedModel::new("openai")
                .then_always(
                    "Thank you for your order. Prices are per seat per year, taxes included; \
                     the quote is valid for 30 days.",
                    TokenUsage::new(310, 42),
                )
                .with_latency(Duration::from_millis(60)),
        ),
        payments: Arc::new(AtomicUsize::new(0)),
    }
}

fn build(services: &Services) -> CompiledGraph<Order> {
    let quoter = services.quoter.clone();
    let payments = services.payments.clone();
    GraphBuilder::<Order>::new("billing")
        .add_node(
            "intake",
            node_fn(|s: Arc<Order>, _ctx| async move {
                let lines: Vec<String> = s
                    .items
                    .iter()
                    .map(|i| format!("{}×{}", i.quantity, i.sku))
                    .collect();
                Ok(log(format!(
                    "intake: {} for {} ({})",
                    s.order_id,
                    s.customer,
                    lines.join(", ")
                ))
                .into())
            }),
        )
        .add_node(
            "quote",
            node_fn(move |s: Arc<Order>, ctx: NodeContext| {
                let model = quoter.clone();
                async move {
                    let total: u64 = s.items.iter().map(|i| i.quantity * i.unit_cents).sum();
                    let request = ChatRequest::new("gpt-4o-mini")
                        .system("Write a one-line cover note for this quote.")
                        .user(format!(
                            "{} orders {:?}, total {}",
                            s.customer,
                            s.items,
                            usd(total)
                        ))
                        .max_tokens(80);
                    let reply = ctx.chat(model.as_ref(), request).await?;
                    Ok(Change {
                        quote_cents: Some(total),
                        quote_note: Some(reply.text),
                        ..log(format!("quote: {}", usd(total)))
                    }
                    .into())
                }
            }),
        )
        .add_node(
            "sales_discount",
            node_fn(|s: Arc<Order>, ctx: NodeContext| async move {
                let Some(requested) = s.discount_requested_pct else {
                    return Ok(log("sales_discount: none requested".into()).into());
                };
                // Pauses the run the first time; returns the approver's
                // answer when the thread is resumed with an approval.
                let answer = ctx.interrupt(json!({
                    "question": "approve a discount?",
                    "customer": s.customer,
                    "quote": usd(s.quote_cents.unwrap_or(0)),
                    "requested_pct": requested,
                }))?;
                let granted = answer["approved_pct"].as_u64().unwrap_or(0).min(requested);
                Ok(Change {
                    discount_pct: Some(granted),
                    ..log(format!(
                        "sales_discount: {granted}% granted (asked {requested}%)"
                    ))
                }
                .into())
            }),
        )
        // Stopped before by the static interrupt below. The approver's payload
        // is kept in the approval record (the audit trail) and handed to the
        // node through `ctx.approval()`.
        .add_node(
            "billing_approval",
            node_fn(|s: Arc<Order>, ctx: NodeContext| async move {
                let by = ctx
                    .approval()
                    .and_then(|a| a["approved_by"].as_str())
                    .unwrap_or("nobody")
                    .to_string();
                Ok(log(format!(
                    "billing_approval: {} released (approved by {by})",
                    usd(s.amount_due())
                ))
                .into())
            }),
        )
        .add_node(
            "charge",
            node_fn(move |s: Arc<Order>, ctx: NodeContext| {
                let payments = payments.clone();
                async move {
                    // The key is stable across retries and resumes: a real
                    // gateway would de-duplicate on it.
                    let key = ctx.idempotency_key();
                    ctx.log(
                        LogLevel::Info,
                        format!("payment gateway: charging, key {key}"),
                    );
                    tokio::time::sleep(Duration::from_millis(120)).await;
                    payments.fetch_add(1, Ordering::SeqCst);
                    let amount = s.amount_due();
                    Ok(NodeOutput::update(Change {
                        charged_cents: Some(amount),
                        payment_ref: Some(key),
                        ..log(format!("charge: {} captured", usd(amount)))
                    }))
                }
            }),
        )
        .add_node(
            "receipt",
            node_fn(|s: Arc<Order>, _ctx| async move {
                let receipt = format!(
                    "Receipt {} — {}: {} (quote {}, discount {}%), payment {}",
                    s.order_id,
                    s.customer,
                    usd(s.charged_cents.unwrap_or(0)),
                    usd(s.quote_cents.unwrap_or(0)),
                    s.discount_pct,
                    s.payment_ref.as_deref().unwrap_or("-"),
                );
                Ok(Change {
                    receipt: Some(receipt),
                    ..log("receipt: sent".into())
                }
                .into())
            }),
        )
        .set_entry("intake")
        .add_edge("intake", "quote")
        .add_edge("quote", "sales_discount")
        .add_edge("sales_discount", "billing_approval")
        .add_edge("billing_approval", "charge")
        .add_edge("charge", "receipt")
        .set_finish("receipt")
        // Policy: no charge without a human sign-off.
        .interrupt_before(["billing_approval"])
        .compile()
        .expect("the workflow is valid")
}

type Watcher = Box<dyn Fn(&TraceEvent) + Send + Sync>;

/// Prints every event as it happens, rendered by a [`Timeline`], and lets an
/// optional watcher see it too.
struct LiveTimeline {
    timeline: Mutex<Timeline>,
    watcher: Option<Watcher>,
}

impl LiveTimeline {
    fn new() -> Self {
        Self {
            timeline: Mutex::new(Timeline::new()),
            watcher: None,
        }
    }

    fn watch(mut self, watcher: impl Fn(&TraceEvent) + Send + Sync + 'static) -> Self {
        self.watcher = Some(Box::new(watcher));
        self
    }
}

#[async_trait]
impl TraceSink for LiveTimeline {
    fn record(&self, event: &TraceEvent) {
        if let Ok(mut timeline) = self.timeline.lock()
            && let Some(line) = timeline.line(event)
        {
            println!("  {line}");
        }
        if let Some(watch) = &self.watcher {
            watch(event);
        }
    }
    async fn flush(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// The config of every call on `thread`: durable on `store`, traced live.
fn durable(store: &Arc<FileCheckpointer>, thread: &ThreadId) -> RunConfig {
    RunConfig::new()
        .checkpointer(store.clone())
        .thread(thread.clone())
        .sink(LiveTimeline::new())
}

/// The run's output; exits with the error if it failed.
fn ok(result: Result<RunOutput<Order>, flowtrace::RunFailure>) -> RunOutput<Order> {
    result.unwrap_or_else(|failure| {
        eprintln!("run failed: {}\n{}", failure.error, failure.summary);
        std::process::exit(1)
    })
}

/// Prints and returns the pending interrupt of a paused run.
fn pending(out: &RunOutput<Order>) -> Interrupt {
    assert_eq!(out.summary.status, RunStatus::Interrupted);
    let interrupt = out
        .interrupt()
        .cloned()
        .expect("an interrupted run names its interrupt");
    println!(
        "\npending interrupt: node {} ({:?}), id {:?}\n  asks: {}",
        interrupt.node, interrupt.when, interrupt.id, interrupt.payload
    );
    interrupt
}

/// Prints a thread's history and returns its approval records.
async fn audit(
    store: &FileCheckpointer,
    thread: &ThreadId,
) -> Vec<flowtrace::checkpoint::ApprovalRecord> {
    let mut history = store
        .list(thread, None, 100)
        .await
        .expect("the thread's history is readable");
    history.reverse();
    println!("\ncheckpoints of thread {thread} (oldest first):");
    println!(
        "  {:>3}  {:<12} {:<10} {:<18} next",
        "seq", "status", "state", "nodes"
    );
    for cp in &history {
        let state = match &cp.state {
            StateRecord::Full(_) => "full".to_string(),
            StateRecord::Delta(d) => format!("delta({})", d.len()),
        };
        let nodes: Vec<&str> = cp.nodes.iter().map(|n| n.as_str()).collect();
        let next: Vec<&str> = cp.frontier.iter().map(|t| t.node.as_str()).collect();
        println!(
            "  {:>3}  {:<12} {:<10} {:<18} {}",
            cp.seq,
            format!("{:?}", cp.status).to_lowercase(),
            state,
            nodes.join(","),
            next.join(",")
        );
    }
    let approvals: Vec<_> = history.iter().flat_map(|c| c.approvals.clone()).collect();
    println!("approval records:");
    for a in &approvals {
        println!(
            "  {} {} by {} at {} on checkpoint {}: {}",
            a.decision, a.node, a.decided_by, a.decided_at, a.checkpoint_seq, a.payload
        );
    }
    approvals
}

#[tokio::main]
async fn main() {
    let dir = std::env::temp_dir().join(format!("flowtrace-approval-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(FileCheckpointer::open(&dir).expect("checkpoint directory"));
    let services = services();
    let graph = build(&services);
    println!("checkpoints in {}", dir.display());

    // ── 1. A charge waits for finance ───────────────────────────────────
    let thread = ThreadId::new("order-1001");
    println!("\n== order 1001: run until finance must decide ==");
    let order = Order::new(
        "A-1001",
        "Acme",
        &[("seat", 3, 12_000), ("support", 1, 6_000)],
    );
    let out = ok(graph.invoke(order, durable(&store, &thread)).await);
    let interrupt = pending(&out);
    assert_eq!(interrupt.node, "billing_approval");
    assert_eq!(interrupt.when, InterruptWhen::Before);
    assert_eq!(
        services.payments.load(Ordering::SeqCst),
        0,
        "nothing charged yet"
    );
    let latest = store.get(&thread, None).await.unwrap().unwrap();
    assert_eq!(latest.status, ThreadStatus::Interrupted);

    println!("\n== order 1001: finance approves ==");
    let decision = Command::approve(
        interrupt.id.clone(),
        json!({"approved_by": "finance", "limit": 500}),
    )
    .by("alice@finance");
    let out = ok(graph.invoke(decision, durable(&store, &thread)).await);
    assert_eq!(out.summary.status, RunStatus::Succeeded);
    assert_eq!(out.state.charged_cents, Some(42_000));
    println!("\n{}", out.state.receipt.as_deref().unwrap_or("no receipt"));
    println!("{}", out.summary);

    let approvals = audit(&store, &thread).await;
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0].interrupt_id, interrupt.id);
    assert_eq!(approvals[0].decided_by, "alice@finance");
    assert_eq!(approvals[0].decision, DecisionKind::Approve);
    assert_eq!(approvals[0].payload["limit"], 500);

    // ── 2. A discount, a sign-off, a kill switch, a resume ──────────────
    let thread = ThreadId::new("order-1002");
    println!("\n== order 1002: the customer asks for 15% off ==");
    let order = Order {
        discount_requested_pct: Some(15),
        ..Order::new("A-1002", "Globex", &[("seat", 4, 12_000)])
    };
    let out = ok(graph.invoke(order, durable(&store, &thread)).await);
    let ask = pending(&out);
    assert_eq!(ask.node, "sales_discount");
    assert_eq!(ask.when, InterruptWhen::During);
    assert_eq!(ask.payload["requested_pct"], 15);

    println!("\n== order 1002: sales grants 10%; the node re-runs with the answer ==");
    let decision = Command::approve(ask.id.clone(), json!({"approved_pct": 10})).by("bob@sales");
    let out = ok(graph.invoke(decision, durable(&store, &thread)).await);
    assert_eq!(out.state.discount_pct, 10);
    let sign_off = pending(&out);
    assert_eq!(sign_off.node, "billing_approval");

    println!("\n== order 1002: finance approves; an operator halts the run mid-payment ==");
    let switch = HaltSwitch::new();
    let (charging_tx, charging_rx) = oneshot::channel::<()>();
    let charging_tx = Mutex::new(Some(charging_tx));
    let operator = tokio::spawn({
        let switch = switch.clone();
        async move {
            if charging_rx.await.is_ok() {
                println!("  [operator] kill switch pressed while the payment is in flight");
                switch.halt();
            }
        }
    });
    // The operator watches the live trace for the payment to start.
    let watched = LiveTimeline::new().watch(move |ev| {
        if let EventKind::Log { message, .. } = &ev.kind
            && message.starts_with("payment gateway")
            && let Some(tx) = charging_tx.lock().ok().and_then(|mut t| t.take())
        {
            let _ = tx.send(());
        }
    });
    let config = RunConfig::new()
        .checkpointer(store.clone())
        .thread(thread.clone())
        .sink(watched)
        .halt_signal(Arc::new(switch));
    let decision = Command::approve(
        sign_off.id.clone(),
        json!({"approved_by": "finance", "limit": 500}),
    )
    .by("alice@finance");
    let out = ok(graph.invoke(decision, config).await);
    operator.await.expect("the operator task");
    assert_eq!(out.summary.status, RunStatus::Halted);
    assert_eq!(
        out.state.charged_cents,
        Some(43_200),
        "the payment completed"
    );
    assert!(out.state.receipt.is_none());

    let kept = store.get(&thread, None).await.unwrap().unwrap();
    let next: Vec<&str> = kept.frontier.iter().map(|t| t.node.as_str()).collect();
    println!(
        "\nstatus {:?}; kept checkpoint {} ({:?}, after step {}), next: {}",
        out.summary.status,
        kept.seq,
        kept.status,
        kept.step,
        next.join(", ")
    );
    assert_eq!(kept.status, ThreadStatus::Halted);
    assert_eq!(next, ["receipt"]);

    println!("\n== order 1002: resume after the halt ==");
    let out = ok(graph
        .invoke(flowtrace::RunInput::Resume, durable(&store, &thread))
        .await);
    assert_eq!(out.summary.status, RunStatus::Succeeded);
    println!("\n{}", out.state.receipt.as_deref().unwrap_or("no receipt"));
    println!("{}", out.summary);

    let approvals = audit(&store, &thread).await;
    let deciders: Vec<(&str, &str)> = approvals
        .iter()
        .map(|a| (a.node.as_str(), a.decided_by.as_str()))
        .collect();
    assert_eq!(
        deciders,
        [
            ("sales_discount", "bob@sales"),
            ("billing_approval", "alice@finance")
        ]
    );

    // Nothing ran twice: one quote per order, one payment per order.
    assert_eq!(services.quoter.calls(), 2);
    assert_eq!(services.payments.load(Ordering::SeqCst), 2);
    println!(
        "\nmodel calls: {}, payments: {} (one each per order)",
        services.quoter.calls(),
        services.payments.load(Ordering::SeqCst)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
