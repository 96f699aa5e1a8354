//! The JSON workflow format (version `"1"`): typed spec, JSON Schema and
//! load-time validation.
//!
//! A workflow is a directed acyclic graph of nodes (`llm`, `tool`, `router`,
//! `approval`) joined by edges, with optional run limits:
//!
//! ```
//! use flowtrace_workflow::spec::{Known, NodeKind, load};
//!
//! let json = r#"{
//!   "version": "1", "entry": "ingest",
//!   "nodes": [
//!     { "id": "ingest", "type": "tool", "config": {"tool": "read_file", "path": "docs.txt"} },
//!     { "id": "summarize", "type": "llm",
//!       "config": {"provider": "openai", "model": "gpt-4o-mini", "prompt": "Summarize: {{text}}"},
//!       "inputs": {"text": "{{node.ingest.output.content}}"} }
//!   ],
//!   "edges": [ { "from": "ingest", "to": "summarize" } ],
//!   "limits": { "maxCostUsd": 0.5 }
//! }"#;
//! let spec = load(json, &Known::default())?;
//! assert!(matches!(spec.nodes[1].kind, NodeKind::Llm(_)));
//! assert_eq!(spec.limits.and_then(|l| l.max_cost_usd), Some("0.5".parse()?));
//!
//! // Every problem is reported at once, each with a JSON pointer.
//! let bad = json.replace("read_file", "rm_rf").replace("node.ingest", "node.nope");
//! let errors = load(&bad, &Known::default()).unwrap_err();
//! assert_eq!(errors.len(), 2);
//! assert!(errors.to_string().contains("/nodes/0/config/tool: unknown tool `rm_rf`"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Validation
//!
//! [`load`] checks a document in layers and collects every [`Problem`]
//! before failing:
//!
//! 1. the text must be JSON (otherwise one problem with line and column);
//! 2. it must match the JSON Schema [`SCHEMA_V1`] (`flowtrace-workflow/schema/workflow.v1.json`,
//!    draft 2020-12): shapes, types, required fields, unknown fields, ranges
//!    and sizes, each problem at the instance's JSON pointer;
//! 3. semantic checks, which run even when the schema failed, on whatever
//!    parts have the right shape:
//!    * node ids are unique; `entry` and every edge end name an existing node;
//!    * templates (node `inputs`, LLM `system` / `prompt`, the simulated
//!      `response` of an LLM config or a fallback, approval `message`, and string arguments of
//!      tool nodes) parse, and only read nodes that exist and are ancestors
//!      of the reading node in the edge graph (so they have run before it).
//!      `{{input…}}` is always allowed. `{{name}}` reads the node's own input
//!      `name` and is allowed everywhere except inside `inputs` themselves;
//!    * router rules and edge `when` conditions parse (the message has the
//!      column); a router's rule may only read the router's inputs, and a
//!      `when` may only read `branch` (the router's result) and the router's
//!      inputs. `when` is only allowed on edges leaving a router node: no
//!      other node produces a branch to test;
//!    * the graph has no cycle, and every node is reachable from `entry`.
//!      Every node without outgoing edges is a finish node, so no separate
//!      "path to finish" check is needed;
//!    * LLM providers (including fallbacks) and tools are registered in
//!      [`Known`]; the simulated-provider options (the `simulated` object:
//!      `response`, `latencyMs`, `failFirst`, `failKind`, `usage`) appear
//!      only with provider [`SIMULATED_PROVIDER`];
//!    * limits are consistent: `maxNodes` is at least the number of nodes,
//!      `maxCostUsd` is an exact positive amount (parsed exactly into
//!      [`Cost`]), a retry's `initialDelayMs` is at most its `maxDelayMs`.
//!
//! What cannot be checked statically: a node that is an ancestor through a
//! router branch may be skipped at run time, so a template reading it can
//! still fail when rendered.
//!
//! Before any of this, while parsing, a key that appears twice in one
//! object is a [`ProblemKind::DuplicateKey`] at the pointer of its second
//! occurrence (JSON parsers disagree on which one wins, so the document is
//! ambiguous); every repeated key is reported, along with the other
//! problems. Whole-number floats (`4.0`, `1e2`) in integer fields are read
//! as integers, as the schema's `"type": "integer"` accepts them; other
//! non-integers there are schema problems with their pointer.
//!
//! Hostile input is bounded ([`Limits`](crate::limits::Limits)): documents
//! over [`Limits::workflow_bytes`](crate::limits::Limits::workflow_bytes)
//! ([`MAX_WORKFLOW_BYTES`] by default) are rejected before parsing, arrays
//! and objects nested deeper than
//! [`Limits::json_depth`](crate::limits::Limits::json_depth) are refused
//! while parsing (both [`ProblemKind::TooLarge`], with the limit in
//! [`Problem::limit`]), strings are size-limited by the schema, messages
//! quote at most a short prefix of any user-supplied string, and at most
//! [`MAX_PROBLEMS`] problems are reported.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::LazyLock;

use flowtrace_core::Cost;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::de::{self, Deserializer};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::limits::{
    FIXED_MAX_EDGES, FIXED_MAX_NODES, FIXED_MAX_PROBLEMS, LimitExceeded, LimitKind,
    Limits as InputLimits,
};
use super::rules::Rule;
use super::template::{Reference, Template};

/// The JSON Schema (draft 2020-12) of format version `"1"`, as shipped in
/// `flowtrace-workflow/schema/workflow.v1.json`.
pub const SCHEMA_V1: &str = include_str!("../../schema/workflow.v1.json");

/// The only format version this module reads.
pub const FORMAT_VERSION: &str = "1";

/// Largest workflow document [`load`] accepts, in bytes (4 MiB; see
/// [`limits::Limits::workflow_bytes`](crate::limits::Limits::workflow_bytes)).
pub const MAX_WORKFLOW_BYTES: usize = InputLimits::DEFAULT.workflow_bytes;

/// Most problems [`load`] reports; further ones are summarised in one last
/// problem of kind [`ProblemKind::Truncated`].
pub const MAX_PROBLEMS: usize = FIXED_MAX_PROBLEMS;

/// The provider name whose options (a `simulated` object: `response`,
/// `latencyMs`, `failFirst`, `failKind`, `usage`) are accepted.
pub const SIMULATED_PROVIDER: &str = "simulated";

/// Above these sizes the quadratic "template reads a node that runs before"
/// check is skipped (the schema already rejects such documents).
const MAX_GRAPH_NODES: usize = FIXED_MAX_NODES;
const MAX_GRAPH_EDGES: usize = FIXED_MAX_EDGES;

/// Longest prefix of a user-supplied string quoted in a message, in chars.
const MAX_QUOTE_CHARS: usize = 64;

/// Longest schema-violation message, in chars.
const MAX_MESSAGE_CHARS: usize = 500;

/// Input names that templates or rules cannot read by name.
const RESERVED_INPUTS: [&str; 5] = ["input", "node", "true", "false", "null"];

mod checks;
mod known;
mod llm;
mod load;
mod types;

pub use known::*;
pub use llm::*;
pub use load::*;
pub use types::*;

/// A user-supplied string for a message, cut to a short prefix.
fn quote(s: &str) -> String {
    clip(s, MAX_QUOTE_CHARS)
}

/// `s` cut to `max` characters (an ellipsis marks the cut).
fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", s.get(..cut).unwrap_or_default()),
        None => s.to_owned(),
    }
}

/// Escapes a key as a JSON pointer segment (RFC 6901).
pub(crate) fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

mod document;

use document::ParseFailure;

#[cfg(test)]
mod tests;
