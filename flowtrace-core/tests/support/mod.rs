//! Helpers shared by the integration test binaries (`tests/<area>/main.rs`),
//! each of which includes this file with
//! `#[path = "../support/mod.rs"] mod support;`.

// Each binary uses only some of these helpers; the rest would warn as dead
// code in that binary. The allow is here only, not in the test modules.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flowtrace_core::checkpoint::Checkpointer;
use flowtrace_core::trace::MemorySink;
use flowtrace_core::{CompiledGraph, Cost, RunConfig, RunOutput, State, reducer};
use serde::{Deserialize, Serialize};

// ===== State =====

/// A state whose updates are lists of strings, appended in merge order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Items {
    pub items: Vec<String>,
}

impl State for Items {
    type Update = Vec<String>;
    fn apply(&mut self, u: Vec<String>) {
        reducer::append(&mut self.items, u);
    }
}

// ===== Run configuration =====

/// A durable run of `thread` on `store`.
pub fn durable(store: Arc<dyn Checkpointer>, thread: &str) -> RunConfig {
    RunConfig::new().checkpointer(store).thread(thread)
}

/// Runs `graph` on `input` with a memory sink attached; the run must succeed.
pub async fn run_with_sink<S: State>(
    graph: &CompiledGraph<S>,
    input: S,
) -> (RunOutput<S>, MemorySink) {
    let sink = MemorySink::new();
    let out = graph
        .invoke(input, RunConfig::new().sink(sink.clone()))
        .await
        .unwrap();
    (out, sink)
}

/// A cost from its decimal dollar amount, e.g. `cost("0.000015")`.
pub fn cost(s: &str) -> Cost {
    s.parse().unwrap()
}

// ===== Temporary directories =====

/// A fresh, empty directory, removed with everything in it on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new directory under the system temp dir, named after `label`.
    pub fn new(label: &str) -> Self {
        Self::new_in(&std::env::temp_dir(), label)
    }

    /// A new directory under `base`, named after `label`, this process and a
    /// counter, so parallel tests and test binaries never share one.
    pub fn new_in(base: &Path, label: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = base.join(format!(
            "flowtrace-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ===== Re-running this test binary =====

/// A command that runs this test binary again with only the test `name` of
/// the module `module` (pass `module_path!()`), one thread, output shown.
///
/// The filter is built from the module path, so it follows the test when
/// modules move: a filter that matched nothing would run no test and still
/// exit successfully.
pub fn rerun_test(module: &str, name: &str) -> Command {
    // `module_path!()` starts with the crate (the test binary), which is not
    // part of a test's name.
    let path = match module.split_once("::") {
        Some((_crate, rest)) => format!("{rest}::{name}"),
        None => name.to_string(),
    };
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", &path, "--nocapture", "--test-threads=1"]);
    cmd
}

// ===== Assertions =====

/// Asserts that an error matches a pattern, printing the error (and the
/// optional context after the pattern) when it does not.
///
/// Unused in some binaries, as the helpers above are (a macro and its
/// re-export are not covered by `dead_code`).
#[allow(unused_macros)]
macro_rules! assert_error {
    ($error:expr, $pattern:pat $(,)?) => {
        assert!(matches!($error, $pattern), "unexpected error: {}", $error)
    };
    ($error:expr, $pattern:pat, $($context:tt)+) => {
        assert!(
            matches!($error, $pattern),
            "{}: unexpected error: {}",
            format_args!($($context)+),
            $error
        )
    };
}
#[allow(unused_imports)]
pub(crate) use assert_error;
