//! The `pg_queue` command line, shared by the example's `main` and the
//! integration tests `tests/pg_queue` (which run it in-process, and as
//! real worker processes).

macro_rules! outln {
    ($c:expr, $($arg:tt)*) => { $c.out(format!($($arg)*)) };
}

macro_rules! errln {
    ($c:expr, $($arg:tt)*) => { $c.err(format!($($arg)*)) };
}

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flowtrace::workflow::compile::Runtime;
use flowtrace::workflow::limits::{LimitKind, Limits, read_to_string_limited};
use flowtrace_store_postgres::queue::RunState;
use flowtrace_store_postgres::trace::{PostgresTraceSink, TraceStore};
use flowtrace_store_postgres::{
    IdlePolicy, PgConfig, RunQueue, StoreError, StoreErrorKind, Verdict, Worker, WorkflowRegistry,
    connect, migrate,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// The usage text.
pub const USAGE: &str = "usage: pg_queue [--database-url URL] [--schema NAME] [--json] COMMAND
commands:
  migrate
  enqueue WORKFLOW.json [--input JSON] [--count N]
  worker [--concurrency N] [--id NAME] [--exit-when-idle] [--lease-ms MS] [--poll-ms MS] [--grace-ms MS]
  status RUN_ID
  decide RUN_ID (--approve JSON | --reject) [--by NAME]
  halt RUN_ID
  trace RUN_ID [--after CURSOR] [--limit N]";

/// The most runs one `enqueue --count` adds.
pub const MAX_COUNT: usize = 10_000;

#[derive(Debug, Default)]
struct Args {
    database_url: Option<String>,
    schema: Option<String>,
    json: bool,
    command: Vec<String>,
    input: Option<Value>,
    count: Option<usize>,
    concurrency: Option<usize>,
    id: Option<String>,
    exit_when_idle: bool,
    lease_ms: Option<u64>,
    poll_ms: Option<u64>,
    grace_ms: Option<u64>,
    approve: Option<Value>,
    reject: bool,
    by: Option<String>,
    after: Option<i64>,
    limit: Option<usize>,
}

fn parse_args(args: Vec<String>) -> Result<Option<Args>, String> {
    let mut a = Args::default();
    let mut it = args.into_iter();
    fn value(flag: &str, it: &mut impl Iterator<Item = String>) -> Result<String, String> {
        it.next().ok_or_else(|| format!("{flag} needs a value"))
    }
    fn number<T: std::str::FromStr>(flag: &str, text: &str) -> Result<T, String> {
        text.parse()
            .map_err(|_| format!("{flag}: {text:?} is not a valid number"))
    }
    fn json_value(flag: &str, text: &str) -> Result<Value, String> {
        serde_json::from_str(text).map_err(|e| format!("{flag}: invalid JSON: {e}"))
    }
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--database-url" => a.database_url = Some(value(&arg, &mut it)?),
            "--schema" => a.schema = Some(value(&arg, &mut it)?),
            "--json" => a.json = true,
            "--input" => a.input = Some(json_value(&arg, &value(&arg, &mut it)?)?),
            "--count" => a.count = Some(number(&arg, &value(&arg, &mut it)?)?),
            "--concurrency" => a.concurrency = Some(number(&arg, &value(&arg, &mut it)?)?),
            "--id" => a.id = Some(value(&arg, &mut it)?),
            "--exit-when-idle" => a.exit_when_idle = true,
            "--lease-ms" => a.lease_ms = Some(number(&arg, &value(&arg, &mut it)?)?),
            "--poll-ms" => a.poll_ms = Some(number(&arg, &value(&arg, &mut it)?)?),
            "--grace-ms" => a.grace_ms = Some(number(&arg, &value(&arg, &mut it)?)?),
            "--approve" => a.approve = Some(json_value(&arg, &value(&arg, &mut it)?)?),
            "--reject" => a.reject = true,
            "--by" => a.by = Some(value(&arg, &mut it)?),
            "--after" => a.after = Some(number(&arg, &value(&arg, &mut it)?)?),
            "--limit" => a.limit = Some(number(&arg, &value(&arg, &mut it)?)?),
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}")),
            _ => a.command.push(arg),
        }
    }
    if a.command.is_empty() {
        return Err("no command given".into());
    }
    Ok(Some(a))
}

#[path = "../support/console.rs"]
mod console;
#[allow(unused_imports)]
pub use console::{Buffer, Console};

/// Prints `e` (with its causes) and returns the exit code for it: 2 for a
/// request the store refused as invalid or unknown, 1 otherwise.
fn fail(console: &Console, e: &StoreError) -> u8 {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    errln!(console, "error: {text}");
    match e.kind() {
        StoreErrorKind::NotFound | StoreErrorKind::Invalid | StoreErrorKind::Conflict => 2,
        _ => 1,
    }
}

fn usage_error(console: &Console, message: &str) -> u8 {
    errln!(console, "error: {message}\n{USAGE}");
    2
}

/// Runs the command line `args` (without the program name), writing to
/// `console`; returns the exit code (0 ok, 1 failed, 2 invalid input or
/// usage). `shutdown` stops a worker gracefully.
pub async fn run(args: Vec<String>, console: &Console, shutdown: CancellationToken) -> u8 {
    let args = match parse_args(args) {
        Ok(Some(a)) => a,
        Ok(None) => {
            outln!(console, "{USAGE}");
            return 0;
        }
        Err(e) => return usage_error(console, &e),
    };
    let Some(url) = args
        .database_url
        .clone()
        .or_else(|| std::env::var("DATABASE_URL").ok())
    else {
        return usage_error(
            console,
            "no database: pass --database-url or set DATABASE_URL",
        );
    };
    let mut config = PgConfig::new(url);
    if let Some(schema) = &args.schema {
        config = config.schema(schema.clone());
    }
    let command: Vec<&str> = args.command.iter().map(String::as_str).collect();
    // Usage is checked before connecting.
    let known = matches!(
        command.as_slice(),
        ["migrate" | "worker"] | ["enqueue" | "status" | "decide" | "halt" | "trace", _]
    );
    if !known {
        return usage_error(
            console,
            &format!("unknown command {:?}", args.command.join(" ")),
        );
    }
    if command[0] == "decide" && args.approve.is_some() == args.reject {
        return usage_error(
            console,
            "decide needs exactly one of --approve JSON and --reject",
        );
    }
    if args.count.is_some_and(|n| n == 0 || n > MAX_COUNT) {
        return usage_error(console, &format!("--count must be 1 to {MAX_COUNT}"));
    }
    let pool = match connect(&config).await {
        Ok(p) => p,
        Err(e) => return fail(console, &e),
    };
    let code = match command.as_slice() {
        ["migrate"] => match migrate(&pool).await {
            Ok(()) => {
                if args.json {
                    outln!(console, "{}", json!({"migrated": true}));
                } else {
                    outln!(console, "migrations applied");
                }
                0
            }
            Err(e) => fail(console, &e),
        },
        ["enqueue", file] => enqueue(&pool, &args, file, console).await,
        ["worker"] => worker(&pool, &args, console, shutdown).await,
        ["status", run_id] => status(&pool, &args, run_id, console).await,
        ["decide", run_id] => {
            let verdict = match &args.approve {
                Some(payload) => Verdict::Approve(payload.clone()),
                None => Verdict::Reject,
            };
            let by = args.by.clone().unwrap_or_else(|| "pg_queue".into());
            match RunQueue::new(pool.clone())
                .decide(run_id, None, verdict, &by)
                .await
            {
                Ok(answered) => {
                    if args.json {
                        outln!(
                            console,
                            "{}",
                            json!({"run_id": run_id, "answered": answered})
                        );
                    } else {
                        outln!(console, "run {run_id}: answered {}", answered.join(", "));
                    }
                    0
                }
                Err(e) => fail(console, &e),
            }
        }
        ["halt", run_id] => match RunQueue::new(pool.clone()).halt(run_id).await {
            Ok(state) => {
                if args.json {
                    outln!(
                        console,
                        "{}",
                        json!({"run_id": run_id, "status": state.as_str()})
                    );
                } else if state == RunState::Running {
                    outln!(
                        console,
                        "run {run_id}: halt requested; it stops at its next safe point"
                    );
                } else {
                    outln!(console, "run {run_id}: {state}");
                }
                0
            }
            Err(e) => fail(console, &e),
        },
        ["trace", run_id] => trace(&pool, &args, run_id, console).await,
        _ => usage_error(console, "unknown command"),
    };
    pool.close().await;
    code
}

async fn enqueue(pool: &sqlx::PgPool, args: &Args, file: &str, console: &Console) -> u8 {
    let limits = Limits::default();
    let path = PathBuf::from(file);
    let text = match read_to_string_limited(&path, limits.workflow_bytes, LimitKind::WorkflowBytes)
    {
        Ok(t) => t,
        Err(e) => {
            errln!(console, "error: {e}");
            return 2;
        }
    };
    let record = match WorkflowRegistry::new(pool.clone())
        .register_by_content(None, &text)
        .await
    {
        Ok(r) => r,
        Err(e) => return fail(console, &e),
    };
    let input = args.input.clone().unwrap_or_else(|| json!({}));
    let count = args.count.unwrap_or(1);
    let queue = RunQueue::new(pool.clone());
    match queue
        .enqueue_many(
            &record.id,
            record.version,
            std::iter::repeat_n(input, count),
        )
        .await
    {
        Ok(ids) => {
            if args.json {
                outln!(
                    console,
                    "{}",
                    json!({"run_ids": ids, "workflow_id": record.id, "workflow_version": record.version})
                );
            } else {
                for id in &ids {
                    outln!(console, "{id}");
                }
            }
            0
        }
        Err(e) => fail(console, &e),
    }
}

async fn worker(
    pool: &sqlx::PgPool,
    args: &Args,
    console: &Console,
    shutdown: CancellationToken,
) -> u8 {
    let dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let sink = Arc::new(PostgresTraceSink::new(pool.clone()));
    let mut worker = Worker::new(pool.clone(), Runtime::with_env(&dir)).sink(sink);
    if let Some(id) = &args.id {
        worker = worker.id(id.clone());
    }
    if let Some(n) = args.concurrency {
        worker = worker.concurrency(n);
    }
    if let Some(ms) = args.lease_ms {
        worker = worker.lease_ttl(Duration::from_millis(ms));
    }
    if let Some(ms) = args.poll_ms {
        worker = worker.poll_interval(Duration::from_millis(ms));
    }
    if let Some(ms) = args.grace_ms {
        worker = worker.shutdown_grace(Duration::from_millis(ms));
    }
    let idle = if args.exit_when_idle {
        IdlePolicy::ExitWhenIdle
    } else {
        IdlePolicy::UntilShutdown
    };
    if !args.json {
        errln!(console, "worker {} started", worker.name());
    }
    match worker.run(shutdown, idle).await {
        Ok(report) => {
            if args.json {
                outln!(
                    console,
                    "{}",
                    json!({"worker": worker.name(), "claimed": report.claimed, "outcomes": report.by_outcome})
                );
            } else {
                outln!(
                    console,
                    "worker {}: claimed {} run(s); {:?}",
                    worker.name(),
                    report.claimed,
                    report.by_outcome
                );
            }
            0
        }
        Err(e) => fail(console, &e),
    }
}

async fn status(pool: &sqlx::PgPool, args: &Args, run_id: &str, console: &Console) -> u8 {
    let run = match RunQueue::new(pool.clone()).get(run_id).await {
        Ok(r) => r,
        Err(e) => return fail(console, &e),
    };
    let doc = match &run.summary {
        Some(summary) if !matches!(run.status, RunState::Queued | RunState::Running) => {
            let mut s = summary.clone();
            // A run halted or canceled from the queue has an older summary:
            // the status column is the truth.
            if let Some(obj) = s.as_object_mut() {
                obj.insert("status".into(), json!(run.status.as_str()));
            }
            s
        }
        _ => json!({"run_id": run.id, "status": run.status.as_str(), "thread": run.thread_id}),
    };
    if args.json {
        outln!(
            console,
            "{}",
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        );
    } else {
        outln!(console, "run {}: {}", run.id, run.status);
        if let Some(w) = &run.claimed_by {
            outln!(console, "  held by {w}");
        }
        for i in &run.interrupts {
            outln!(
                console,
                "  waiting on {} at node {}: {}",
                i.id,
                i.node,
                i.payload
            );
        }
        if let Some(totals) = doc.get("totals") {
            outln!(console, "  totals: {totals}");
        }
    }
    match run.status {
        RunState::Failed | RunState::Canceled => 1,
        _ => 0,
    }
}

async fn trace(pool: &sqlx::PgPool, args: &Args, run_id: &str, console: &Console) -> u8 {
    let store = TraceStore::new(pool.clone());
    let limit = args.limit.unwrap_or(100);
    match store.events(run_id, args.after, limit).await {
        Ok(page) => {
            for e in &page.events {
                outln!(
                    console,
                    "{}",
                    serde_json::to_string(&json!({"seq": e.seq, "event": e.payload}))
                        .unwrap_or_default()
                );
            }
            match page.next {
                Some(next) => errln!(console, "more: --after {next}"),
                None => errln!(console, "end of trace"),
            }
            0
        }
        Err(e) => fail(console, &e),
    }
}
