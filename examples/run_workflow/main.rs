//! Runs a JSON workflow file from the command line.
//!
//! ```text
//! cargo run --example run_workflow -- WORKFLOW.json [--input JSON] [--pricing PRICES.json]
//!     [--repeat N] [--json] [--trace-out FILE.jsonl] [--html FILE.html]
//!     [--checkpoint-dir DIR --thread ID [--resume] [--approve JSON | --reject]]
//!     [--halt-after-ms N]
//! ```
//!
//! The workflow is loaded and validated (every problem is reported, one per
//! line, and the exit code is 2), compiled on the offline runtime (the
//! `simulated` provider, `read_file` confined to the workflow's directory,
//! `transform_json`, an in-memory response cache) plus `openai` /
//! `anthropic` when `OPENAI_API_KEY` / `ANTHROPIC_API_KEY` are set, and run.
//!
//! Without `--json` the trace is shown live as a timeline, then the summary
//! table. With `--json`, stdout holds exactly one JSON document: the run
//! summary (an array of summaries with `--repeat N`; the runs share the
//! runtime and its cache, so repeats are answered from it).
//!
//! `--html FILE.html` writes a self-contained HTML trace report of the
//! run(s) (see `flowtrace::report`).
//!
//! Durable runs: `--checkpoint-dir DIR --thread ID` checkpoints the run in
//! DIR; `--resume` continues the thread (after a halt, a crash or a
//! failure); `--approve JSON` / `--reject` decide the thread's pending
//! approval. `--halt-after-ms N` asks the run to halt after N milliseconds.
//!
//! A workflow with `approval` nodes needs `--checkpoint-dir` and `--thread`:
//! without them the pause could never be continued, so the run is refused
//! (exit code 2).
//!
//! Inputs are bounded (see `flowtrace::workflow::limits`): the workflow and
//! `--pricing` files are read up to their size limit plus one byte, never
//! whole; `--repeat` is at most 1000. When the run ends the process exits
//! even if a tool call abandoned by its timeout is still blocked.
//!
//! Exit code: 0 when the run succeeds, is interrupted for a decision or is
//! halted; 1 when it fails or is canceled; 2 when the workflow or the
//! arguments are invalid.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = std::env::args().skip(1).collect();
    ExitCode::from(cli::run_blocking(args, &cli::Console::stdio()))
}
