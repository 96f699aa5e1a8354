//! Where the example command lines write: stdout and stderr, or in-memory
//! buffers when a test runs them in-process. Shared by `run_workflow` and
//! `pg_queue`.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// A captured output stream.
pub type Buffer = Arc<Mutex<Vec<u8>>>;

/// Where the runner writes: stdout and stderr, or buffers (in tests).
#[derive(Clone)]
pub struct Console {
    out: Arc<Mutex<dyn Write + Send>>,
    err: Arc<Mutex<dyn Write + Send>>,
}

impl Console {
    /// The process's stdout and stderr.
    pub fn stdio() -> Self {
        Self {
            out: Arc::new(Mutex::new(std::io::stdout())),
            err: Arc::new(Mutex::new(std::io::stderr())),
        }
    }

    /// In-memory buffers for stdout and stderr.
    pub fn buffers() -> (Self, Buffer, Buffer) {
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(Vec::new()));
        (
            Self {
                out: out.clone(),
                err: err.clone(),
            },
            out,
            err,
        )
    }

    /// Writes a line to stdout (or its buffer).
    pub fn out(&self, line: String) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    /// Writes a line to stderr (or its buffer).
    pub fn err(&self, line: String) {
        let mut err = self.err.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(err, "{line}");
    }
}
