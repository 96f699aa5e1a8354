//! FlowTrace quickstart: the "Research → Summarize → Decide → Deep" JSON
//! workflow (`examples/workflows/research.json`), offline on the simulated
//! provider.
//!
//! ```text
//! cargo run --example quickstart [-- --report PATH]
//! ```
//!
//! It runs the workflow twice with a live timeline: in the first run the
//! summarizer's primary model is rate limited, retried with back-off, and
//! the call falls back to a second model; the router branches on the
//! summary's length. The second run, with the same input, is answered from
//! the response cache and costs nothing. Both runs' totals are printed side
//! by side and a self-contained HTML trace report is written to
//! `flowtrace-report.html` (or `--report PATH`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
mod demo;

use std::path::PathBuf;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut report = PathBuf::from("flowtrace-report.html");
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--report", Some(path)) => report = PathBuf::from(path),
            _ => {
                eprintln!("usage: quickstart [--report PATH]");
                return ExitCode::from(2);
            }
        }
    }
    let mut stdout = std::io::stdout();
    match demo::run(&report, &mut stdout).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quickstart failed: {e}");
            ExitCode::FAILURE
        }
    }
}
