//! [`StoreError`] and its kinds.

use std::fmt;

/// One problem found in a workflow document, at its JSON pointer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkflowProblem {
    /// Where in the document (`""` for the whole document).
    pub pointer: String,
    /// What is wrong there.
    pub message: String,
}

impl WorkflowProblem {
    /// A problem at `pointer`.
    pub fn new(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            pointer: pointer.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for WorkflowProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pointer.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.pointer, self.message)
        }
    }
}

/// The problems of an invalid workflow, every one at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkflowProblems(pub Vec<WorkflowProblem>);

impl fmt::Display for WorkflowProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A registry, queue or trace-store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No such workflow (or no such version of it).
    #[error("workflow {id:?}{} not found", version.map(|v| format!(" version {v}")).unwrap_or_default())]
    WorkflowNotFound {
        /// The workflow id.
        id: String,
        /// The version asked for, if any.
        version: Option<i32>,
    },
    /// No such run.
    #[error("run {run_id:?} not found")]
    RunNotFound {
        /// The run id.
        run_id: String,
    },
    /// The workflow document is not valid; nothing was written.
    #[error("invalid workflow ({} problem{}): {problems}", problems.0.len(), if problems.0.len() == 1 { "" } else { "s" })]
    InvalidWorkflow {
        /// Every problem found, with its JSON pointer.
        problems: WorkflowProblems,
    },
    /// A request that can't be carried out in the run's current state
    /// (deciding a run that is not interrupted, halting a finished run).
    #[error("run {run_id:?} is {status}: {message}")]
    WrongState {
        /// The run id.
        run_id: String,
        /// Its status.
        status: String,
        /// What was asked and why it can't be done.
        message: String,
    },
    /// The caller no longer holds the run's lease (another worker took it
    /// over); nothing was written.
    #[error("run {run_id:?}: lease lost by {owner:?} (fenced)")]
    LeaseLost {
        /// The run id.
        run_id: String,
        /// The worker that lost it.
        owner: String,
    },
    /// A value over a documented limit.
    #[error("{what} is over its limit of {limit}")]
    LimitExceeded {
        /// What was too large.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// Invalid arguments (a malformed cursor, a zero limit).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Stored data could not be decoded.
    #[error("stored data is not valid: {message}")]
    Corrupt {
        /// What could not be read.
        message: String,
        /// The decoder's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The database failed (connection, query, migration).
    #[error("database error while {context}")]
    Database {
        /// What the store was doing.
        context: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// Applying the migrations failed.
    #[error("migrations failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// What kind of failure a [`StoreError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The workflow or run does not exist.
    NotFound,
    /// The input is invalid (a workflow that does not validate, bad
    /// arguments, a value over a limit); nothing was written.
    Invalid,
    /// The request conflicts with the run's state or another owner.
    Conflict,
    /// Stored data is not readable.
    Corrupt,
    /// The database failed; retrying may help.
    Database,
}

impl StoreError {
    /// The kind of failure.
    pub fn kind(&self) -> StoreErrorKind {
        match self {
            StoreError::WorkflowNotFound { .. } | StoreError::RunNotFound { .. } => {
                StoreErrorKind::NotFound
            }
            StoreError::InvalidWorkflow { .. }
            | StoreError::LimitExceeded { .. }
            | StoreError::InvalidRequest(_) => StoreErrorKind::Invalid,
            StoreError::WrongState { .. } | StoreError::LeaseLost { .. } => {
                StoreErrorKind::Conflict
            }
            StoreError::Corrupt { .. } => StoreErrorKind::Corrupt,
            StoreError::Database { .. } | StoreError::Migrate(_) => StoreErrorKind::Database,
        }
    }

    /// A database error while doing `context`.
    pub(crate) fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Database { context, source }
    }
}
