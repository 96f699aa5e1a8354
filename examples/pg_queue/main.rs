//! Drives FlowTrace's PostgreSQL run queue from the command line: migrate
//! the database, enqueue runs of a JSON workflow, run workers (as many
//! processes as you like, on as many machines), look at runs, answer their
//! approvals, halt them and read their traces.
//!
//! ```text
//! export DATABASE_URL=postgres://postgres@127.0.0.1:5432/test
//! cargo run --example pg_queue -- migrate
//! cargo run --example pg_queue -- --json enqueue examples/workflows/research.json \
//!     --input '{"topic": "solar"}' --count 3            # {"run_ids": [...]}
//! cargo run --example pg_queue -- worker --concurrency 4 --exit-when-idle
//! cargo run --example pg_queue -- --json status RUN_ID  # the run_workflow --json summary
//! cargo run --example pg_queue -- decide RUN_ID --approve '{"ok": true}'   # or --reject
//! cargo run --example pg_queue -- halt RUN_ID
//! cargo run --example pg_queue -- trace RUN_ID --after 0 --limit 50     # JSON lines
//! ```
//!
//! Every command takes `--database-url URL` (else `DATABASE_URL`),
//! `--schema NAME` (keep the tables in a schema of their own) and `--json`
//! (one JSON document on stdout). `enqueue` registers the workflow (or
//! reuses the copy with the same content) after validating it: an invalid
//! document is reported, problem by problem, and nothing is written.
//!
//! `worker` claims queued runs (`FOR UPDATE SKIP LOCKED`), runs up to
//! `--concurrency` of them at a time with a lease renewed by a heartbeat
//! (`--lease-ms`, default 30000), and writes every trace event to
//! `trace_events`. SIGTERM or Ctrl-C stop it gracefully: it stops claiming,
//! lets its runs finish for `--grace-ms` (default 30000), then gives the
//! rest back to the queue, where another worker resumes them from their
//! last checkpoints. A worker that dies without that (SIGKILL, a power cut)
//! loses its leases when they expire; another worker then resumes its runs
//! the same way, and no committed step runs twice. `--exit-when-idle`
//! returns once no run is queued or running anywhere.
//!
//! Exit code: 0 ok (for `status`: the run succeeded, is queued, running,
//! interrupted or halted), 1 failed (the run failed or was canceled, or
//! the database failed), 2 invalid input or usage (an unknown run, an
//! invalid workflow, a decision for a run that is not waiting for one).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
mod cli;

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let code = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("a SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            stop.cancel();
        });
        cli::run(args, &cli::Console::stdio(), shutdown).await
    });
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    ExitCode::from(code)
}
