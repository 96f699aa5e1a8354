//! Helpers shared by the root crate's test binaries: each
//! `tests/<area>/main.rs` declares `#[path = "../support/mod.rs"] mod support;`
//! and uses what it needs.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use serde_json::Value;

pub mod browser;

/// The `run_workflow` example's command line, run in process.
#[path = "../../examples/run_workflow/cli.rs"]
pub mod cli;

/// A fresh directory `flowtrace-<area>-<pid>-<name>` under the system temp
/// dir.
pub fn temp_dir(area: &str, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flowtrace-{area}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `examples/workflows`, with the example workflows and their inputs.
pub fn workflows() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/workflows")
}

/// What one `run_workflow` invocation returned.
pub struct Ran {
    /// The exit code.
    pub code: u8,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

impl Ran {
    /// Stdout as one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", self.stdout))
    }
}

/// Runs the `run_workflow` command line with `args` (without the program
/// name), in process.
pub async fn run_workflow(args: &[&str]) -> Ran {
    let (console, out, err) = cli::Console::buffers();
    let code = cli::run(args.iter().map(|s| s.to_string()).collect(), &console).await;
    let text =
        |b: &std::sync::Mutex<Vec<u8>>| String::from_utf8(b.lock().unwrap().clone()).unwrap();
    Ran {
        code,
        stdout: text(&out),
        stderr: text(&err),
    }
}
