//! [`NodeError`], the error a node body returns, and its [`ErrorClass`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::Error;
use crate::model::ModelError;
use crate::pricing::CostOverflow;
use crate::tool::ToolError;

/// Whether a node failure may pass on retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// May pass on retry (rate limits, timeouts, flaky networks).
    Transient,
    /// Will fail again (bad input, auth, a bug).
    Permanent,
}

/// The error a node body returns.
///
/// Classify it: only [`transient`](NodeError::transient) errors are retried.
/// `?` on a [`ModelError`] or [`ToolError`] keeps their classification.
#[derive(Debug, Clone)]
pub struct NodeError {
    repr: NodeErrorRepr,
}

#[derive(Debug, Clone)]
enum NodeErrorRepr {
    Failure {
        class: ErrorClass,
        /// The node's own message; `None` when the error only wraps
        /// `source` (made by [`NodeError::from_error`]): then the source's
        /// message is shown and its causes follow.
        message: Option<String>,
        retry_after: Option<Duration>,
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// A run-level condition (budget, pricing, cancellation) raised inside a
    /// node: it ends the run as that error, without retries.
    Run(Box<Error>),
    /// The node asked for a human decision (`NodeContext::interrupt`).
    Interrupt(serde_json::Value),
    /// A subgraph run by the node paused for human decisions.
    Paused(Arc<SubgraphPause>),
}

/// A subgraph that stopped for human decisions: where it stands and what
/// it asks.
#[derive(Debug)]
pub(crate) struct SubgraphPause {
    pub(crate) state: crate::checkpoint::SubgraphState,
    pub(crate) interrupts: Vec<crate::checkpoint::Interrupt>,
}

impl NodeError {
    /// A failure that may pass on retry.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::failure(ErrorClass::Transient, message.into())
    }

    /// A failure that will not pass on retry.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::failure(ErrorClass::Permanent, message.into())
    }

    fn failure(class: ErrorClass, message: String) -> Self {
        Self {
            repr: NodeErrorRepr::Failure {
                class,
                message: Some(message),
                retry_after: None,
                source: None,
            },
        }
    }

    /// Wraps any error with a classification. The error's message is this
    /// error's message and its causes follow (it is not printed twice);
    /// [`get_ref`](Self::get_ref) gives the wrapped error back.
    pub fn from_error<E>(class: ErrorClass, error: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Self {
            repr: NodeErrorRepr::Failure {
                class,
                message: None,
                retry_after: None,
                source: Some(Arc::new(error)),
            },
        }
    }

    /// Records `cause` as this error's [`source`](std::error::Error::source)
    /// (the node's own message stays in front). On a run error or an
    /// interrupt it does nothing.
    pub fn with_source<E>(mut self, cause: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        if let NodeErrorRepr::Failure {
            message, source, ..
        } = &mut self.repr
        {
            // A wrapped error becomes the message's cause: keep its text as
            // the message so nothing is lost.
            if message.is_none()
                && let Some(old) = source.take()
            {
                *message = Some(old.to_string());
            }
            *source = Some(Arc::new(cause));
        }
        self
    }

    /// The error this one wraps or was caused by, for downcasting
    /// (`e.get_ref().and_then(|e| e.downcast_ref::<std::io::Error>())`).
    pub fn get_ref(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match &self.repr {
            NodeErrorRepr::Failure { source, .. } => source.as_deref(),
            NodeErrorRepr::Run(_) | NodeErrorRepr::Interrupt(_) | NodeErrorRepr::Paused(_) => None,
        }
    }

    /// Asks the executor to wait at least `delay` before the next attempt
    /// (a provider's `Retry-After`).
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        if let NodeErrorRepr::Failure { retry_after, .. } = &mut self.repr {
            *retry_after = Some(delay);
        }
        self
    }

    /// Ends the run with `error` (used for budget, pricing and cancellation
    /// conditions detected inside a node; never retried).
    pub fn run_error(error: Error) -> Self {
        Self {
            repr: NodeErrorRepr::Run(Box::new(error)),
        }
    }

    pub(crate) fn interrupt(payload: serde_json::Value) -> Self {
        Self {
            repr: NodeErrorRepr::Interrupt(payload),
        }
    }

    pub(crate) fn subgraph_paused(pause: SubgraphPause) -> Self {
        Self {
            repr: NodeErrorRepr::Paused(Arc::new(pause)),
        }
    }

    /// The subgraph's pause, when a subgraph run by the node stopped for
    /// human decisions.
    pub(crate) fn subgraph_pause(&self) -> Option<&Arc<SubgraphPause>> {
        match &self.repr {
            NodeErrorRepr::Paused(p) => Some(p),
            _ => None,
        }
    }

    /// The payload, when this is a request for a human decision.
    pub fn interrupt_payload(&self) -> Option<&serde_json::Value> {
        match &self.repr {
            NodeErrorRepr::Interrupt(p) => Some(p),
            _ => None,
        }
    }

    /// The classification. Run-level errors and interrupts are permanent.
    pub fn class(&self) -> ErrorClass {
        match &self.repr {
            NodeErrorRepr::Failure { class, .. } => *class,
            NodeErrorRepr::Run(_) | NodeErrorRepr::Interrupt(_) | NodeErrorRepr::Paused(_) => {
                ErrorClass::Permanent
            }
        }
    }

    /// Whether the executor may retry.
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Transient
    }

    /// The requested minimum delay before a retry.
    pub fn retry_after(&self) -> Option<Duration> {
        match &self.repr {
            NodeErrorRepr::Failure { retry_after, .. } => *retry_after,
            NodeErrorRepr::Run(_) | NodeErrorRepr::Interrupt(_) | NodeErrorRepr::Paused(_) => None,
        }
    }

    /// The run-level error this node error carries, if any.
    pub fn as_run_error(&self) -> Option<&Error> {
        match &self.repr {
            NodeErrorRepr::Run(e) => Some(e),
            NodeErrorRepr::Failure { .. }
            | NodeErrorRepr::Interrupt(_)
            | NodeErrorRepr::Paused(_) => None,
        }
    }

    pub(crate) fn into_run_error(self) -> Result<Error, NodeError> {
        match self.repr {
            NodeErrorRepr::Run(e) => Ok(*e),
            repr => Err(NodeError { repr }),
        }
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            NodeErrorRepr::Failure {
                class,
                message,
                source,
                ..
            } => {
                let c = match class {
                    ErrorClass::Transient => "transient",
                    ErrorClass::Permanent => "permanent",
                };
                match (message, source) {
                    (Some(m), _) => write!(f, "{m} ({c})"),
                    (None, Some(s)) => write!(f, "{s} ({c})"),
                    (None, None) => write!(f, "{c} failure"),
                }
            }
            NodeErrorRepr::Run(e) => e.fmt(f),
            NodeErrorRepr::Interrupt(p) => write!(f, "interrupted for a human decision: {p}"),
            NodeErrorRepr::Paused(p) => write!(
                f,
                "subgraph paused for {} human decision(s)",
                p.interrupts.len()
            ),
        }
    }
}

impl std::error::Error for NodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.repr {
            // A wrapped error's message is this error's message: its
            // causes come next.
            NodeErrorRepr::Failure {
                message: None,
                source,
                ..
            } => source.as_deref().and_then(|e| e.source()),
            NodeErrorRepr::Failure { source, .. } => source
                .as_deref()
                .map(|e| e as &(dyn std::error::Error + 'static)),
            // A run error's message is shown: its causes come next.
            NodeErrorRepr::Run(e) => e.source(),
            NodeErrorRepr::Interrupt(_) | NodeErrorRepr::Paused(_) => None,
        }
    }
}

impl From<ModelError> for NodeError {
    fn from(e: ModelError) -> Self {
        let class = if e.is_retryable() {
            ErrorClass::Transient
        } else {
            ErrorClass::Permanent
        };
        let retry_after = e.retry_after();
        let mut err = NodeError::from_error(class, e);
        if let Some(d) = retry_after {
            err = err.with_retry_after(d);
        }
        err
    }
}

impl From<ToolError> for NodeError {
    fn from(e: ToolError) -> Self {
        let class = if e.is_retryable() {
            ErrorClass::Transient
        } else {
            ErrorClass::Permanent
        };
        NodeError::from_error(class, e)
    }
}

impl From<Error> for NodeError {
    fn from(e: Error) -> Self {
        NodeError::run_error(e)
    }
}

/// A model call whose cost cannot be represented fails its step permanently.
impl From<CostOverflow> for NodeError {
    fn from(e: CostOverflow) -> Self {
        NodeError::from_error(ErrorClass::Permanent, e)
    }
}

impl From<serde_json::Error> for NodeError {
    fn from(e: serde_json::Error) -> Self {
        NodeError::from_error(ErrorClass::Permanent, e)
    }
}
