//! Helpers shared by the compile tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use super::*;
use crate::spec::load;

/// A fresh directory under the system temp dir.
pub(super) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flowtrace-compile-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Loads and compiles a workflow document, failing the test on any problem.
pub(super) fn compile_json(json: &str, runtime: &Runtime) -> CompiledWorkflow {
    let spec = load(json, &runtime.known()).unwrap_or_else(|e| panic!("{e}"));
    compile(&spec, runtime).unwrap()
}

/// [`compile_json`] of a JSON value.
pub(super) fn compile_value(doc: &Value, runtime: &Runtime) -> CompiledWorkflow {
    compile_json(&doc.to_string(), runtime)
}

/// The typed failure of the node that failed the run.
pub(super) fn node_failure(failure: &RunFailure) -> NodeFailure {
    let flowtrace_core::Error::Node { error, .. } = &failure.error else {
        panic!("not a node failure: {}", failure.error);
    };
    error
        .get_ref()
        .and_then(|s| s.downcast_ref::<NodeFailure>())
        .cloned()
        .unwrap_or_else(|| panic!("no NodeFailure behind: {error}"))
}
