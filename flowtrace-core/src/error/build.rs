//! [`BuildError`]: why a graph could not be compiled.

use std::fmt;

use crate::ids::NodeId;

/// One problem found while compiling a graph.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GraphProblem {
    /// Two nodes share an id.
    DuplicateNode {
        /// The id.
        node: NodeId,
    },
    /// A node id is reserved (`__start__`, `__end__`) or empty.
    ReservedNodeId {
        /// The id.
        node: NodeId,
    },
    /// An edge, router, dispatch or entry names a node that does not exist.
    UnknownNode {
        /// The missing id.
        node: NodeId,
        /// Where it was referenced (for example `edge "a" -> "b"`).
        referenced_by: String,
    },
    /// No entry node was set.
    NoEntry,
    /// The node cannot be reached from the entry.
    Unreachable {
        /// The node.
        node: NodeId,
    },
    /// No path leads from the node to the finish.
    NoPathToFinish {
        /// The node.
        node: NodeId,
    },
    /// A conditional edge declares no branch.
    EmptyBranches {
        /// The routing node.
        node: NodeId,
    },
    /// A value of a router's closed label type (an enum) has no branch.
    UnmappedBranch {
        /// The routing node.
        node: NodeId,
        /// The label's name.
        label: String,
    },
    /// A node has more than one router.
    DuplicateRouter {
        /// The node.
        node: NodeId,
    },
    /// A setting is out of range.
    InvalidSetting {
        /// The node, or `None` for graph-wide settings.
        node: Option<NodeId>,
        /// The setting's name.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for GraphProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DuplicateNode { node } => write!(f, "duplicate node id {node:?}"),
            Self::ReservedNodeId { node } => {
                write!(f, "node id {node:?} is reserved or empty")
            }
            Self::UnknownNode {
                node,
                referenced_by,
            } => write!(f, "{referenced_by} refers to unknown node {node:?}"),
            Self::NoEntry => write!(f, "no entry node: call set_entry(..)"),
            Self::Unreachable { node } => {
                write!(f, "node {node:?} is unreachable from the entry")
            }
            Self::NoPathToFinish { node } => write!(
                f,
                "node {node:?} has no path to finish: add an edge from it (or a successor) to END, or call set_finish"
            ),
            Self::EmptyBranches { node } => {
                write!(f, "conditional edge from node {node:?} declares no branch")
            }
            Self::UnmappedBranch { node, label } => write!(
                f,
                "conditional edge from node {node:?} has no branch for label {label:?}: map every value of the label type"
            ),
            Self::DuplicateRouter { node } => {
                write!(f, "node {node:?} has more than one conditional edge router")
            }
            Self::InvalidSetting {
                node: Some(node),
                setting,
                reason,
            } => write!(f, "node {node:?}: invalid {setting}: {reason}"),
            Self::InvalidSetting {
                node: None,
                setting,
                reason,
            } => write!(f, "invalid {setting}: {reason}"),
        }
    }
}

/// A graph could not be compiled. Lists every problem found, not only the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct BuildError {
    /// Every problem, in the order found.
    pub problems: Vec<GraphProblem>,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "graph has {} problem(s):", self.problems.len())?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}
