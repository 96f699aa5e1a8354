//! The runner's command line, shared by the example's `main` and the
//! integration test `tests/run_workflow.rs` (which runs it in-process).

macro_rules! outln {
    ($c:expr) => { $c.out(String::new()) };
    ($c:expr, $($arg:tt)*) => { $c.out(format!($($arg)*)) };
}

macro_rules! errln {
    ($c:expr, $($arg:tt)*) => { $c.err(format!($($arg)*)) };
}

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flowtrace::checkpoint::FileCheckpointer;
use flowtrace::exec::{Command, HaltSwitch, SummaryScope};
use flowtrace::report::{HtmlReport, ReportRecorder};
use flowtrace::trace::{JsonLinesSink, Timeline};
use flowtrace::workflow::compile::{CompiledWorkflow, Runtime, compile};
use flowtrace::workflow::limits::{FIXED_MAX_REPEAT, LimitKind, Limits, read_to_string_limited};
use flowtrace::workflow::pricing::load_price_table;
use flowtrace::workflow::spec::{NodeKind, WorkflowSpec, load_with};
use flowtrace::workflow::summary::{WorkflowSummary, report_run};
use flowtrace::{
    Checkpointer, JsonState, PriceTable, RunConfig, RunOutput, RunStatus, ThreadId, TraceSink,
};
use futures::StreamExt;
use serde_json::{Value, json};

/// The usage line.
pub const USAGE: &str = "usage: run_workflow WORKFLOW.json [--input JSON] [--pricing PRICES.json] \
[--repeat N] [--json] [--trace-out FILE.jsonl] [--html FILE.html] \
[--checkpoint-dir DIR --thread ID [--resume] [--approve JSON | --reject]] [--halt-after-ms N]";

/// What to do with the thread.
#[derive(Debug, Clone)]
enum Mode {
    /// A new run (a new thread when durable).
    Fresh,
    /// Continue the thread from its latest checkpoint.
    Resume,
    /// Approve the pending interrupt with this payload.
    Approve(Value),
    /// Reject the pending interrupt.
    Reject,
}

#[derive(Debug)]
struct Args {
    workflow: PathBuf,
    input: Value,
    pricing: Option<PathBuf>,
    repeat: usize,
    json: bool,
    trace_out: Option<PathBuf>,
    html: Option<PathBuf>,
    checkpoint_dir: Option<PathBuf>,
    thread: Option<String>,
    mode: Mode,
    halt_after_ms: Option<u64>,
}

/// The command line, or why it is invalid. `Ok(None)` for `--help`.
fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut workflow = None;
    let mut input = None;
    let mut pricing = None;
    let mut repeat = 1;
    let mut json = false;
    let mut trace_out = None;
    let mut html = None;
    let mut checkpoint_dir = None;
    let mut thread = None;
    let mut resume = false;
    let mut approve = None;
    let mut reject = false;
    let mut halt_after_ms = None;

    fn value(flag: &str, it: &mut impl Iterator<Item = String>) -> Result<String, String> {
        it.next().ok_or_else(|| format!("{flag} needs a value"))
    }
    fn json_value(flag: &str, text: &str) -> Result<Value, String> {
        serde_json::from_str(text).map_err(|e| format!("{flag}: not valid JSON: {e}"))
    }

    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--input" => input = Some(json_value("--input", &value("--input", &mut it)?)?),
            "--pricing" => pricing = Some(PathBuf::from(value("--pricing", &mut it)?)),
            "--repeat" => {
                let v = value("--repeat", &mut it)?;
                let n =
                    v.parse::<u64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        format!("--repeat: expected a positive integer, got `{v}`")
                    })?;
                repeat = usize::try_from(n)
                    .ok()
                    .filter(|n| *n <= FIXED_MAX_REPEAT)
                    .ok_or_else(|| {
                        format!(
                            "--repeat: {n} runs is over the `{}` limit of {FIXED_MAX_REPEAT} runs",
                            LimitKind::Repeat
                        )
                    })?;
            }
            "--json" => json = true,
            "--trace-out" => trace_out = Some(PathBuf::from(value("--trace-out", &mut it)?)),
            "--html" => html = Some(PathBuf::from(value("--html", &mut it)?)),
            "--checkpoint-dir" => {
                checkpoint_dir = Some(PathBuf::from(value("--checkpoint-dir", &mut it)?));
            }
            "--thread" => thread = Some(value("--thread", &mut it)?),
            "--resume" => resume = true,
            "--approve" => approve = Some(json_value("--approve", &value("--approve", &mut it)?)?),
            "--reject" => reject = true,
            "--halt-after-ms" => {
                let v = value("--halt-after-ms", &mut it)?;
                halt_after_ms =
                    Some(v.parse::<u64>().map_err(|_| {
                        format!("--halt-after-ms: expected milliseconds, got `{v}`")
                    })?);
            }
            other if other.starts_with('-') => return Err(format!("unknown option `{other}`")),
            other => {
                if workflow.is_some() {
                    return Err(format!("unexpected argument `{other}`"));
                }
                workflow = Some(PathBuf::from(other));
            }
        }
    }

    let workflow = workflow.ok_or("missing the workflow file")?;
    let decisions = [resume, approve.is_some(), reject]
        .iter()
        .filter(|b| **b)
        .count();
    if decisions > 1 {
        return Err("--resume, --approve and --reject exclude each other".into());
    }
    if decisions > 0 && (checkpoint_dir.is_none() || thread.is_none()) {
        return Err("--resume, --approve and --reject need --checkpoint-dir and --thread".into());
    }
    if checkpoint_dir.is_some() != thread.is_some() {
        return Err("--checkpoint-dir and --thread go together".into());
    }
    if checkpoint_dir.is_some() && repeat > 1 {
        return Err(
            "--repeat cannot be combined with --checkpoint-dir (one thread, one run)".into(),
        );
    }
    if decisions > 0 && input.is_some() {
        return Err(
            "--input starts a new run; it cannot be combined with --resume, --approve or --reject"
                .into(),
        );
    }
    let mode = if resume {
        Mode::Resume
    } else if let Some(payload) = approve {
        Mode::Approve(payload)
    } else if reject {
        Mode::Reject
    } else {
        Mode::Fresh
    };
    Ok(Some(Args {
        workflow,
        input: input.unwrap_or_else(|| json!({})),
        pricing,
        repeat,
        json,
        trace_out,
        html,
        checkpoint_dir,
        thread,
        mode,
        halt_after_ms,
    }))
}

type Outcome = Result<RunOutput<JsonState>, flowtrace::RunFailure>;

/// Everything one run needs besides the workflow.
struct Setup {
    pricing: Option<Arc<PriceTable>>,
    sink: Option<Arc<dyn TraceSink>>,
    store: Option<Arc<FileCheckpointer>>,
    thread: Option<ThreadId>,
    halt_after: Option<Duration>,
    live: bool,
}

impl Setup {
    fn config(&self, compiled: &CompiledWorkflow) -> RunConfig {
        let mut config = compiled.config();
        if let Some(p) = &self.pricing {
            config = config.pricing(p.clone());
        }
        if let Some(s) = &self.sink {
            config = config.shared_sink(s.clone());
        }
        if let (Some(store), Some(thread)) = (&self.store, &self.thread) {
            // The JSON summary covers the whole thread (earlier runs too).
            config = config
                .checkpointer(store.clone())
                .thread(thread.clone())
                .summary_scope(SummaryScope::Thread);
        }
        if let Some(after) = self.halt_after {
            let switch = HaltSwitch::new();
            config = config.halt_signal(Arc::new(switch.clone()));
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                switch.halt();
            });
        }
        config
    }
}

/// One run: a fresh one through a handle (live timeline), or a resume.
async fn run_once(
    compiled: &CompiledWorkflow,
    setup: &Setup,
    input: &Value,
    mode: &Mode,
    pending: Option<&str>,
    recorder: Option<&ReportRecorder>,
    console: &Console,
) -> Outcome {
    let mut config = setup.config(compiled);
    if let Some(recorder) = recorder {
        config = config.sink(recorder.clone());
    }
    let graph = compiled.graph();
    let id = pending.unwrap_or_default().to_string();
    let mut handle = match mode {
        Mode::Fresh => graph.stream(CompiledWorkflow::initial_state(input.clone()), config),
        Mode::Resume => graph.stream(flowtrace::RunInput::Resume, config),
        Mode::Approve(payload) => graph.stream(Command::approve(id, payload.clone()), config),
        Mode::Reject => graph.stream(Command::reject(id), config),
    };
    if setup.live {
        let mut lines = Timeline::new().follow(handle.events());
        while let Some(line) = lines.next().await {
            outln!(console, "{line}");
        }
    }
    handle.wait().await
}

/// Prints the end of one run for a human.
fn print_report(spec: &WorkflowSpec, outcome: &Outcome, args: &Args, console: &Console) {
    let summary = match outcome {
        Ok(out) => &out.summary,
        Err(failure) => &*failure.summary,
    };
    outln!(console);
    outln!(console, "{summary}");
    match outcome {
        Ok(out) => {
            let shown: Vec<_> = spec
                .nodes
                .iter()
                .filter_map(|n| CompiledWorkflow::output(&out.state, &n.id).map(|v| (&n.id, v)))
                .collect();
            if !shown.is_empty() {
                outln!(console, "outputs:");
                for (id, v) in shown {
                    match v {
                        Value::String(s) => outln!(console, "  {id}: {s}"),
                        other => outln!(console, "  {id}: {other}"),
                    }
                }
            }
            if let Some(interrupt) = out.interrupt() {
                outln!(
                    console,
                    "\nwaiting for a decision at `{}` (interrupt {}): {}",
                    interrupt.node.as_ref(),
                    interrupt.id,
                    interrupt.payload
                );
                if let (Some(dir), Some(thread)) = (&args.checkpoint_dir, &args.thread) {
                    outln!(
                        console,
                        "continue with: --checkpoint-dir {} --thread {thread} --approve '<JSON>' (or --reject)",
                        dir.display()
                    );
                }
            }
            if out.summary.status == RunStatus::Halted
                && let (Some(dir), Some(thread)) = (&args.checkpoint_dir, &args.thread)
            {
                outln!(
                    console,
                    "\nhalted; continue with: --checkpoint-dir {} --thread {thread} --resume",
                    dir.display()
                );
            }
        }
        Err(failure) => outln!(
            console,
            "run failed ({}): {}",
            failure.error.kind(),
            failure.error
        ),
    }
}

fn invalid(console: &Console, message: impl std::fmt::Display) -> u8 {
    errln!(console, "error: {message}");
    2
}

/// `error` followed by each of its causes, `: `-separated.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Runs the command line `args` (without the program name), writing to
/// `console`; returns the exit code.
pub async fn run(args: Vec<String>, console: &Console) -> u8 {
    let args = match parse_args(args.into_iter()) {
        Ok(Some(args)) => args,
        Ok(None) => {
            outln!(console, "{USAGE}");
            return 0;
        }
        Err(e) => {
            errln!(console, "error: {e}\n{USAGE}");
            return 2;
        }
    };

    let limits = Limits::default();
    // Read at most one byte past the limit: `/dev/zero` or a huge file is
    // refused without being read whole.
    let text = match read_to_string_limited(
        &args.workflow,
        limits.workflow_bytes,
        LimitKind::WorkflowBytes,
    ) {
        Ok(t) => t,
        Err(e) => return invalid(console, e),
    };
    let dir = match args.workflow.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let runtime = Runtime::with_env(&dir);
    let spec = match load_with(&text, &runtime.known(), &limits) {
        Ok(spec) => spec,
        Err(errors) => {
            for problem in &errors {
                errln!(console, "{problem}");
            }
            return 2;
        }
    };
    let compiled = match compile(&spec, &runtime) {
        Ok(c) => c,
        Err(e) => return invalid(console, with_causes(&e)),
    };
    // An approval pauses the run until a decision, which only a durable
    // run can receive: without a checkpoint directory the pause could never
    // be continued.
    let approvals: Vec<&str> = spec
        .nodes
        .iter()
        .filter(|n| matches!(n.kind, NodeKind::Approval(_)))
        .map(|n| n.id.as_str())
        .collect();
    if !approvals.is_empty() && args.checkpoint_dir.is_none() {
        return invalid(
            console,
            format!(
                "the workflow has approval node(s) `{}`: a run pauses there for a decision, \
which must be given in a later invocation; run it durably with --checkpoint-dir DIR --thread ID \
(then continue with --approve JSON or --reject)",
                approvals.join("`, `")
            ),
        );
    }

    let pricing = match &args.pricing {
        None => None,
        Some(path) => {
            let text =
                match read_to_string_limited(path, limits.pricing_bytes, LimitKind::PricingBytes) {
                    Ok(t) => t,
                    Err(e) => return invalid(console, e),
                };
            match load_price_table(&text, &limits) {
                Ok(table) => Some(Arc::new(table)),
                Err(errors) => {
                    for problem in &errors {
                        errln!(console, "error: {}: {problem}", path.display());
                    }
                    return 2;
                }
            }
        }
    };
    let sink: Option<Arc<dyn TraceSink>> = match &args.trace_out {
        None => None,
        Some(path) => match JsonLinesSink::create(path) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => return invalid(console, format!("cannot create {}: {e}", path.display())),
        },
    };
    let store = match &args.checkpoint_dir {
        None => None,
        Some(dir) => match FileCheckpointer::open(dir) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => return invalid(console, format!("cannot open {}: {e}", dir.display())),
        },
    };
    let thread = args.thread.clone().map(ThreadId::from);

    // A decision names the pending interrupt of the thread's latest checkpoint.
    let pending = match (&args.mode, &store, &thread) {
        (Mode::Approve(_) | Mode::Reject, Some(store), Some(thread)) => {
            match store.get(thread, None).await {
                Ok(Some(cp)) => match cp.interrupts.into_iter().next() {
                    Some(interrupt) => Some(interrupt.id),
                    None => {
                        return invalid(
                            console,
                            format!("thread `{}` is not waiting for a decision", thread.as_ref()),
                        );
                    }
                },
                Ok(None) => {
                    return invalid(console, format!("thread `{}` not found", thread.as_ref()));
                }
                Err(e) => {
                    return invalid(
                        console,
                        format!("cannot read thread `{}`: {e}", thread.as_ref()),
                    );
                }
            }
        }
        _ => None,
    };

    let setup = Setup {
        pricing,
        sink,
        store,
        thread,
        halt_after: args.halt_after_ms.map(Duration::from_millis),
        live: !args.json,
    };

    let mut summaries = Vec::with_capacity(args.repeat);
    let mut report = args.html.as_ref().map(|_| {
        let name = args
            .workflow
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "workflow".into());
        HtmlReport::new(format!("FlowTrace: {name}"))
    });
    let mut ok = true;
    for i in 0..args.repeat {
        if !args.json && args.repeat > 1 {
            outln!(console, "== run {} of {} ==", i + 1, args.repeat);
        }
        let recorder = report.as_ref().map(|_| ReportRecorder::new());
        let outcome = run_once(
            &compiled,
            &setup,
            &args.input,
            &args.mode,
            pending.as_deref(),
            recorder.as_ref(),
            console,
        )
        .await;
        let summary = WorkflowSummary::new(&spec, &outcome);
        ok &= summary.is_success();
        if let (Some(r), Some(recorder)) = (report.take(), &recorder) {
            let run = report_run(&spec, &outcome, recorder.take_events()).label(format!(
                "Run {} of {}",
                i + 1,
                args.repeat
            ));
            report = Some(r.run(run));
        }
        if args.json {
            summaries.push(serde_json::to_value(&summary).unwrap());
        } else {
            print_report(&spec, &outcome, &args, console);
            if i + 1 < args.repeat {
                outln!(console);
            }
        }
    }

    // The JSON document first: stdout holds it even if the report fails.
    if args.json {
        let doc = if args.repeat == 1 {
            summaries.pop().unwrap_or(Value::Null)
        } else {
            Value::Array(summaries)
        };
        outln!(console, "{}", serde_json::to_string_pretty(&doc).unwrap());
    }
    if let (Some(report), Some(path)) = (&report, &args.html) {
        if let Err(e) = report.write_to(path) {
            errln!(console, "error: cannot write {}: {e}", path.display());
            return 1;
        }
        if !args.json {
            outln!(console, "\nHTML report: {}", path.display());
        }
    }
    if ok { 0 } else { 1 }
}

/// Runs [`run`] on a runtime of its own and shuts the runtime down without
/// waiting for blocking work: a tool call abandoned by its timeout (a read
/// stuck on a FIFO, say) may still hold a thread of the blocking pool, and
/// must not keep the process alive.
pub fn run_blocking(args: Vec<String>, console: &Console) -> u8 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            errln!(console, "error: cannot start the runtime: {e}");
            return 1;
        }
    };
    let code = runtime.block_on(run(args, console));
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

#[path = "../support/console.rs"]
mod console;
#[allow(unused_imports)]
pub use console::{Buffer, Console};
