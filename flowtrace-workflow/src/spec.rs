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
//! 2. it must match the JSON Schema [`SCHEMA_V1`] (`schema/workflow.v1.json`,
//!    draft 2020-12): shapes, types, required fields, unknown fields, ranges
//!    and sizes, each problem at the instance's JSON pointer;
//! 3. semantic checks, which run even when the schema failed, on whatever
//!    parts have the right shape:
//!    * node ids are unique; `entry` and every edge end name an existing node;
//!    * templates (node `inputs`, LLM `system` / `prompt` / `response`,
//!      fallback `response`, approval `message`, and string arguments of
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
//!      [`Known`]; the simulated-provider options (`response`, `latency_ms`,
//!      `fail_first`, `fail_kind`, `usage`) appear only with provider
//!      [`SIMULATED_PROVIDER`];
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
//! Hostile input is bounded ([`Limits`](super::limits::Limits)): documents
//! over [`Limits::workflow_bytes`](super::limits::Limits::workflow_bytes)
//! ([`MAX_WORKFLOW_BYTES`] by default) are rejected before parsing, arrays
//! and objects nested deeper than
//! [`Limits::json_depth`](super::limits::Limits::json_depth) are refused
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
/// `schema/workflow.v1.json`.
pub const SCHEMA_V1: &str = include_str!("../schema/workflow.v1.json");

/// The only format version this module reads.
pub const FORMAT_VERSION: &str = "1";

/// Largest workflow document [`load`] accepts, in bytes (4 MiB; see
/// [`limits::Limits::workflow_bytes`](super::limits::Limits::workflow_bytes)).
pub const MAX_WORKFLOW_BYTES: usize = InputLimits::DEFAULT.workflow_bytes;

/// Most problems [`load`] reports; further ones are summarised in one last
/// problem of kind [`ProblemKind::Truncated`].
pub const MAX_PROBLEMS: usize = FIXED_MAX_PROBLEMS;

/// The provider name whose simulated options (`response`, `latency_ms`,
/// `fail_first`, `fail_kind`, `usage`) are accepted.
pub const SIMULATED_PROVIDER: &str = "simulated";

/// Above these sizes the quadratic "template reads a node that runs before"
/// check is skipped (the schema already rejects such documents).
const MAX_GRAPH_NODES: usize = FIXED_MAX_NODES;
const MAX_GRAPH_EDGES: usize = FIXED_MAX_EDGES;

/// Longest prefix of a user-supplied string quoted in a message, in chars.
const MAX_QUOTE_CHARS: usize = 64;

/// Longest schema-violation message, in chars.
const MAX_MESSAGE_CHARS: usize = 500;

/// Option keys of the simulated provider.
const SIMULATED_OPTIONS: [&str; 5] = ["response", "latency_ms", "fail_first", "fail_kind", "usage"];

/// Input names that templates or rules cannot read by name.
const RESERVED_INPUTS: [&str; 5] = ["input", "node", "true", "false", "null"];

// ---------------------------------------------------------------------------
// Typed spec
// ---------------------------------------------------------------------------

/// A whole workflow document (format version `"1"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkflowSpec {
    /// Optional `$schema` reference for editors; ignored.
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// The format version; always [`FORMAT_VERSION`] after [`load`].
    pub version: String,
    /// Free-form description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Id of the node the run starts at.
    pub entry: String,
    /// The nodes, in document order.
    pub nodes: Vec<NodeSpec>,
    /// The edges (default: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edges: Vec<EdgeSpec>,
    /// Run limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Whether independent ready nodes may run concurrently (default false).
    #[serde(default)]
    pub parallel: bool,
    /// Most nodes running at once when `parallel` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

impl WorkflowSpec {
    /// The node with id `id`, if any.
    pub fn node(&self, id: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The edges leaving node `id`, in document order.
    pub fn outgoing<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a EdgeSpec> + 'a {
        self.edges.iter().filter(move |e| e.from == id)
    }
}

/// The `type` of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    /// A model call.
    Llm,
    /// A host-registered tool call.
    Tool,
    /// A rule choosing the branch to follow.
    Router,
    /// An interrupt point waiting for a human decision.
    Approval,
}

impl NodeType {
    /// The name used in JSON (`"llm"`, `"tool"`, `"router"`, `"approval"`).
    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Llm => "llm",
            NodeType::Tool => "tool",
            NodeType::Router => "router",
            NodeType::Approval => "approval",
        }
    }
}

impl fmt::Display for NodeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One node: common fields plus the type-specific configuration.
///
/// In JSON the type is the `type` field and the configuration the `config`
/// object; here both are carried by [`NodeKind`].
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    /// Unique id, referenced by edges and templates.
    pub id: String,
    /// Human-readable name.
    pub name: Option<String>,
    /// Type and configuration.
    pub kind: NodeKind,
    /// Named inputs: templates rendered before the node runs; a router's
    /// rule and the node's own templates read them by name.
    pub inputs: BTreeMap<String, String>,
    /// Retry policy.
    pub retry: Option<RetrySpec>,
    /// Per-attempt timeout in milliseconds.
    pub timeout_ms: Option<u64>,
}

impl NodeSpec {
    /// The node's type.
    pub fn node_type(&self) -> NodeType {
        self.kind.node_type()
    }
}

/// The type-specific configuration of a node.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// `"type": "llm"`.
    Llm(LlmConfig),
    /// `"type": "tool"`.
    Tool(ToolConfig),
    /// `"type": "router"`.
    Router(RouterConfig),
    /// `"type": "approval"`.
    Approval(ApprovalConfig),
}

impl NodeKind {
    /// The corresponding [`NodeType`].
    pub fn node_type(&self) -> NodeType {
        match self {
            NodeKind::Llm(_) => NodeType::Llm,
            NodeKind::Tool(_) => NodeType::Tool,
            NodeKind::Router(_) => NodeType::Router,
            NodeKind::Approval(_) => NodeType::Approval,
        }
    }
}

/// How a simulated provider fails its first calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailKind {
    /// HTTP 429.
    RateLimit,
    /// HTTP 5xx.
    ServerError,
    /// The call times out.
    Timeout,
    /// HTTP 400 (not retryable).
    InvalidRequest,
}

/// Token usage a simulated provider reports for each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedUsage {
    /// Prompt tokens.
    pub input: u64,
    /// Completion tokens.
    pub output: u64,
}

fn default_true() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// Configuration of an `llm` node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// Provider name, registered with the host (see [`Known`]).
    pub provider: String,
    /// Model name.
    pub model: String,
    /// System prompt template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// User prompt template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// Sampling temperature (0 to 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Completion token limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Whether identical calls may be answered from the response cache
    /// (default true).
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub cache: bool,
    /// Providers tried in order when this one fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<FallbackSpec>,
    /// Simulated provider: the response template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// Simulated provider: latency per call, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Simulated provider: how many first calls fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_first: Option<u32>,
    /// Simulated provider: how those calls fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_kind: Option<FailKind>,
    /// Simulated provider: reported token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<SimulatedUsage>,
}

/// One fallback of an `llm` node: a provider, a model and provider options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackSpec {
    /// Provider name.
    pub provider: String,
    /// Model name.
    pub model: String,
    /// Sampling temperature (0 to 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Completion token limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Simulated provider: the response template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// Simulated provider: latency per call, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Simulated provider: how many first calls fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_first: Option<u32>,
    /// Simulated provider: how those calls fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_kind: Option<FailKind>,
    /// Simulated provider: reported token usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<SimulatedUsage>,
}

/// Configuration of a `tool` node: the tool name and its arguments (every
/// other key of `config`). String arguments are templates.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToolConfig {
    /// Tool name, registered with the host (see [`Known`]).
    pub tool: String,
    /// The arguments, without `tool`.
    pub args: Map<String, Value>,
}

impl Serialize for ToolConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let args = self.args.iter().filter(|(k, _)| k.as_str() != "tool");
        let mut map = serializer.serialize_map(Some(1 + args.clone().count()))?;
        map.serialize_entry("tool", &self.tool)?;
        for (k, v) in args {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ToolConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut args = Map::deserialize(deserializer)?;
        match args.remove("tool") {
            Some(Value::String(tool)) => Ok(ToolConfig { tool, args }),
            Some(_) => Err(de::Error::custom("`tool` must be a string")),
            None => Err(de::Error::missing_field("tool")),
        }
    }
}

/// Configuration of a `router` node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// The rule (see [`rules`](super::rules)); its result is the branch,
    /// tested by the `when` conditions of the router's outgoing edges.
    pub rule: String,
    /// `false` (default): the first outgoing edge whose condition holds is
    /// taken. `true`: every edge whose condition holds is taken, and those
    /// targets run together (in parallel when the workflow is parallel).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fanout: bool,
}

/// Configuration of an `approval` node (optional in JSON).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalConfig {
    /// Message template shown to the approver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Retry policy of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in total, the first included (at least 1).
    pub max_attempts: u32,
    /// Delay before the first retry, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_ms: Option<u64>,
    /// Largest delay between retries, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay_ms: Option<u64>,
}

/// An edge `from` → `to`, optionally conditional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSpec {
    /// Source node id.
    pub from: String,
    /// Target node id.
    pub to: String,
    /// Condition (a rule returning a boolean), only on edges leaving a
    /// router; it reads `branch` (the router's result) and the router's
    /// inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
}

/// Run limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Most nodes the workflow may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_nodes: Option<u32>,
    /// Most node executions in one run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u64>,
    /// Most tokens (input plus output) in one run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Most dollars one run may cost, exact (JSON number or decimal string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<Cost>,
    /// Wall-clock limit of one run, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// A node as written in JSON.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawNode {
    id: String,
    #[serde(rename = "type")]
    node_type: NodeType,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    config: Option<Value>,
    #[serde(default)]
    inputs: BTreeMap<String, String>,
    #[serde(default)]
    retry: Option<RetrySpec>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

impl<'de> Deserialize<'de> for NodeSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawNode::deserialize(deserializer)?;
        let config = raw.config.unwrap_or(Value::Null);
        let err = |e: serde_json::Error| {
            de::Error::custom(format_args!(
                "config of {} node `{}`: {e}",
                raw.node_type,
                quote(&raw.id)
            ))
        };
        let kind = match raw.node_type {
            NodeType::Llm => NodeKind::Llm(serde_json::from_value(config).map_err(err)?),
            NodeType::Tool => NodeKind::Tool(serde_json::from_value(config).map_err(err)?),
            NodeType::Router => NodeKind::Router(serde_json::from_value(config).map_err(err)?),
            NodeType::Approval if config.is_null() => NodeKind::Approval(ApprovalConfig::default()),
            NodeType::Approval => NodeKind::Approval(serde_json::from_value(config).map_err(err)?),
        };
        Ok(NodeSpec {
            id: raw.id,
            name: raw.name,
            kind,
            inputs: raw.inputs,
            retry: raw.retry,
            timeout_ms: raw.timeout_ms,
        })
    }
}

/// The configuration of a node, by reference, for serialization.
#[derive(Serialize)]
#[serde(untagged)]
enum ConfigRef<'a> {
    Llm(&'a LlmConfig),
    Tool(&'a ToolConfig),
    Router(&'a RouterConfig),
    Approval(&'a ApprovalConfig),
}

/// A node as written in JSON, by reference, for serialization.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RawNodeRef<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    node_type: NodeType,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<ConfigRef<'a>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    inputs: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<&'a RetrySpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
}

impl Serialize for NodeSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let config = match &self.kind {
            NodeKind::Llm(c) => Some(ConfigRef::Llm(c)),
            NodeKind::Tool(c) => Some(ConfigRef::Tool(c)),
            NodeKind::Router(c) => Some(ConfigRef::Router(c)),
            NodeKind::Approval(c) if c.message.is_none() => None,
            NodeKind::Approval(c) => Some(ConfigRef::Approval(c)),
        };
        RawNodeRef {
            id: &self.id,
            node_type: self.node_type(),
            name: self.name.as_deref(),
            config,
            inputs: &self.inputs,
            retry: self.retry.as_ref(),
            timeout_ms: self.timeout_ms,
        }
        .serialize(serializer)
    }
}

// ---------------------------------------------------------------------------
// Known providers and tools
// ---------------------------------------------------------------------------

/// The provider and tool names the host registered, so [`load`] can reject
/// unknown ones.
///
/// [`Known::default`] lists providers `openai`, `anthropic`, `simulated`
/// and tools `read_file`, `transform_json` (names only). A tool registered
/// with its argument schema ([`with_tool_schema`](Self::with_tool_schema),
/// as `Runtime::known` does) also has its arguments checked at load time:
/// missing required arguments, unknown ones (when the schema sets
/// `additionalProperties: false`) and literal values of the wrong shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    providers: BTreeSet<String>,
    tools: BTreeSet<String>,
    tool_schemas: BTreeMap<String, Value>,
}

impl Known {
    /// No providers and no tools.
    pub fn empty() -> Self {
        Known {
            providers: BTreeSet::new(),
            tools: BTreeSet::new(),
            tool_schemas: BTreeMap::new(),
        }
    }

    /// Adds a provider name.
    pub fn with_provider(mut self, name: impl Into<String>) -> Self {
        self.providers.insert(name.into());
        self
    }

    /// Adds a tool name.
    pub fn with_tool(mut self, name: impl Into<String>) -> Self {
        self.tools.insert(name.into());
        self
    }

    /// Adds a tool with the JSON Schema of its arguments (an object schema,
    /// as [`Tool::parameters`](flowtrace_core::Tool::parameters) returns).
    pub fn with_tool_schema(mut self, name: impl Into<String>, schema: Value) -> Self {
        let name = name.into();
        self.tools.insert(name.clone());
        self.tool_schemas.insert(name, schema);
        self
    }

    /// The argument schema of tool `name`, when registered with one.
    pub fn tool_schema(&self, name: &str) -> Option<&Value> {
        self.tool_schemas.get(name)
    }

    /// Whether provider `name` is registered.
    pub fn has_provider(&self, name: &str) -> bool {
        self.providers.contains(name)
    }

    /// Whether tool `name` is registered.
    pub fn has_tool(&self, name: &str) -> bool {
        self.tools.contains(name)
    }

    /// The registered provider names, sorted.
    pub fn providers(&self) -> impl Iterator<Item = &str> {
        self.providers.iter().map(String::as_str)
    }

    /// The registered tool names, sorted.
    pub fn tools(&self) -> impl Iterator<Item = &str> {
        self.tools.iter().map(String::as_str)
    }
}

impl Default for Known {
    fn default() -> Self {
        Known::empty()
            .with_provider("openai")
            .with_provider("anthropic")
            .with_provider(SIMULATED_PROVIDER)
            .with_tool("read_file")
            .with_tool("transform_json")
    }
}

// ---------------------------------------------------------------------------
// Problems
// ---------------------------------------------------------------------------

/// What kind of [`Problem`] was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The text is not JSON (or is too large to read).
    Json,
    /// A JSON Schema violation, or the document does not fit the typed spec.
    Schema,
    /// The embedded schema could not be compiled (a build defect).
    Internal,
    /// Two nodes share an id, or two edges are identical.
    Duplicate,
    /// An object has the same key twice (at the pointer of the repeat).
    DuplicateKey,
    /// The document exceeds one of the loader's
    /// [`limits::Limits`](super::limits::Limits): its size or
    /// its nesting depth ([`Problem::limit`] says which).
    TooLarge,
    /// `entry`, an edge end or a template names a node that does not exist.
    UnknownNode,
    /// A template reads a node that does not run before the reading node.
    NotBefore,
    /// A template does not parse.
    Template,
    /// A router rule or edge condition does not parse.
    Rule,
    /// A rule, condition or template reads a variable that is not provided.
    UnknownVariable,
    /// The edges form a cycle.
    Cycle,
    /// A node cannot be reached from `entry`.
    Unreachable,
    /// An LLM node or fallback names an unregistered provider.
    UnknownProvider,
    /// A tool node names an unregistered tool.
    UnknownTool,
    /// A tool node's arguments do not fit the tool's schema (missing,
    /// unknown, or a literal value of the wrong shape).
    ToolArguments,
    /// A limit is out of range or inconsistent.
    Limits,
    /// Any other inconsistency (misplaced `when`, simulated options on a
    /// real provider, reserved input names, retry delays).
    Invalid,
    /// Stands for the problems beyond [`MAX_PROBLEMS`].
    Truncated,
}

/// One problem in a workflow document.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// JSON pointer (RFC 6901) of the offending value, like
    /// `/nodes/2/config/rule`; empty for the whole document.
    pub pointer: String,
    /// What kind of problem this is.
    pub kind: ProblemKind,
    /// What is wrong (includes line/column when known).
    pub message: String,
    /// 1-based line: in the document for [`ProblemKind::Json`], inside the
    /// string for [`ProblemKind::Template`].
    pub line: Option<usize>,
    /// 1-based column in characters: in the document for
    /// [`ProblemKind::Json`], inside the string for template and rule errors.
    pub column: Option<usize>,
    /// The limit exceeded, for [`ProblemKind::TooLarge`] and for rules and
    /// templates over one of their fixed limits.
    pub limit: Option<LimitExceeded>,
}

impl Problem {
    pub(crate) fn new(
        pointer: impl Into<String>,
        kind: ProblemKind,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            pointer: pointer.into(),
            kind,
            message: message.into(),
            line: None,
            column: None,
            limit: None,
        }
    }

    pub(crate) fn with_limit(mut self, limit: Option<LimitExceeded>) -> Self {
        self.limit = limit;
        self
    }

    fn at(mut self, line: Option<usize>, column: Option<usize>) -> Self {
        self.line = line;
        self.column = column;
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pointer.is_empty() {
            write!(f, "(document): {}", self.message)
        } else {
            write!(f, "{}: {}", self.pointer, self.message)
        }
    }
}

/// Every problem found while loading a workflow; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadErrors {
    problems: Vec<Problem>,
}

impl LoadErrors {
    pub(crate) fn from_problems(problems: Vec<Problem>) -> Self {
        Self { problems }
    }

    /// The problems, schema violations first, then semantic ones.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Takes the problems.
    pub fn into_problems(self) -> Vec<Problem> {
        self.problems
    }

    /// Number of problems.
    pub fn len(&self) -> usize {
        self.problems.len()
    }

    /// Always false: a `LoadErrors` holds at least one problem.
    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// Iterates over the problems.
    pub fn iter(&self) -> std::slice::Iter<'_, Problem> {
        self.problems.iter()
    }
}

impl<'a> IntoIterator for &'a LoadErrors {
    type Item = &'a Problem;
    type IntoIter = std::slice::Iter<'a, Problem>;
    fn into_iter(self) -> Self::IntoIter {
        self.problems.iter()
    }
}

impl fmt::Display for LoadErrors {
    /// One problem per line, `pointer: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

/// Parses and validates a workflow document, reporting every problem at
/// once (see the [module docs](self) for what is checked), with the
/// default [`Limits`].
pub fn load(json: &str, known: &Known) -> Result<WorkflowSpec, LoadErrors> {
    load_with(json, known, &InputLimits::default())
}

/// [`load`] with the document size and nesting limits of `limits`.
pub fn load_with(
    json: &str,
    known: &Known,
    limits: &InputLimits,
) -> Result<WorkflowSpec, LoadErrors> {
    let fail = |problem: Problem| LoadErrors {
        problems: vec![problem],
    };
    if json.len() > limits.workflow_bytes {
        let limit = LimitExceeded::of(LimitKind::WorkflowBytes, limits.workflow_bytes, json.len());
        return Err(fail(
            Problem::new(
                "",
                ProblemKind::TooLarge,
                format!("document too large: {limit}"),
            )
            .with_limit(Some(limit)),
        ));
    }
    let (mut value, mut problems) = document_problems(json, limits)?;
    document::normalize_integers(&mut value);
    problems.extend(validate(&value, known));
    if !problems.is_empty() {
        truncate(&mut problems);
        return Err(LoadErrors { problems });
    }
    to_spec(value)
}

/// Validates an already parsed document like [`load`] and converts it into
/// the typed spec. (Repeated keys cannot be detected here: the parser that
/// built `value` already dropped them.)
pub fn load_value(mut value: Value, known: &Known) -> Result<WorkflowSpec, LoadErrors> {
    document::normalize_integers(&mut value);
    let problems = validate(&value, known);
    if !problems.is_empty() {
        return Err(LoadErrors { problems });
    }
    to_spec(value)
}

/// Parses a JSON document within `limits.json_depth`: the value and a
/// problem for every repeated key, or the one problem that stopped parsing
/// (not JSON, or nested too deeply).
pub(crate) fn document_problems(
    json: &str,
    limits: &InputLimits,
) -> Result<(Value, Vec<Problem>), LoadErrors> {
    let fail = |problem: Problem| LoadErrors {
        problems: vec![problem],
    };
    let parsed = match document::parse(json, limits.effective_json_depth(), MAX_PROBLEMS) {
        Ok(parsed) => parsed,
        Err(ParseFailure::Json(e)) => {
            return Err(fail(
                Problem::new("", ProblemKind::Json, format!("not valid JSON: {e}"))
                    .at(Some(e.line()), Some(e.column())),
            ));
        }
        Err(ParseFailure::TooDeep { pointer, depth }) => {
            let limit =
                LimitExceeded::of(LimitKind::JsonDepth, limits.effective_json_depth(), depth);
            return Err(fail(
                Problem::new(
                    clip(&pointer, MAX_MESSAGE_CHARS),
                    ProblemKind::TooLarge,
                    format!("arrays and objects nested too deeply: {limit}"),
                )
                .with_limit(Some(limit)),
            ));
        }
    };
    let mut problems: Vec<Problem> = parsed
        .duplicates
        .iter()
        .map(|pointer| {
            let key = pointer.rsplit('/').next().unwrap_or_default();
            let key = key.replace("~1", "/").replace("~0", "~");
            Problem::new(
                pointer.clone(),
                ProblemKind::DuplicateKey,
                format!(
                    "duplicate key `{}`: the object already has this key, and only one value can be kept",
                    quote(&key)
                ),
            )
        })
        .collect();
    if parsed.more_duplicates > 0 {
        problems.push(Problem::new(
            "",
            ProblemKind::Truncated,
            format!("{} more duplicate keys not shown", parsed.more_duplicates),
        ));
    }
    Ok((parsed.value, problems))
}

fn to_spec(value: Value) -> Result<WorkflowSpec, LoadErrors> {
    serde_json::from_value(value).map_err(|e| LoadErrors {
        problems: vec![Problem::new(
            "",
            ProblemKind::Schema,
            format!("does not fit the workflow format: {e}"),
        )],
    })
}

/// Cuts `problems` to [`MAX_PROBLEMS`], the last one saying how many more
/// there were.
fn truncate(problems: &mut Vec<Problem>) {
    if problems.len() > MAX_PROBLEMS {
        let dropped = problems.len() - (MAX_PROBLEMS - 1);
        problems.truncate(MAX_PROBLEMS - 1);
        problems.push(Problem::new(
            "",
            ProblemKind::Truncated,
            format!("{dropped} more problems not shown"),
        ));
    }
}

/// Runs the schema and semantic checks on `value` and returns every problem
/// (empty when the document is valid).
pub fn validate(value: &Value, known: &Known) -> Vec<Problem> {
    let mut problems = Vec::new();
    match &*SCHEMA {
        Ok(validator) => schema_problems(validator, value, &mut problems),
        Err(e) => problems.push(Problem::new(
            "",
            ProblemKind::Internal,
            format!("the embedded workflow schema does not compile: {e}"),
        )),
    }
    // Pointers of scalar values the schema already rejected: a semantic
    // problem at the same place would only repeat it.
    let rejected: HashSet<String> = problems
        .iter()
        .filter(|p| value.pointer(&p.pointer).is_some_and(is_scalar))
        .map(|p| p.pointer.clone())
        .collect();
    let mut semantic = Vec::new();
    Checker::new(value, known, &mut semantic).run();
    problems.extend(
        semantic
            .into_iter()
            .filter(|p| !rejected.contains(&p.pointer)),
    );
    truncate(&mut problems);
    problems
}

fn is_scalar(v: &Value) -> bool {
    !(v.is_object() || v.is_array())
}

static SCHEMA: LazyLock<Result<jsonschema::Validator, String>> =
    LazyLock::new(|| compile_schema(SCHEMA_V1));

fn compile_schema(text: &str) -> Result<jsonschema::Validator, String> {
    let schema: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    jsonschema::draft202012::new(&schema).map_err(|e| clip(&e.to_string(), MAX_MESSAGE_CHARS))
}

fn schema_problems(validator: &jsonschema::Validator, value: &Value, out: &mut Vec<Problem>) {
    for error in validator.iter_errors(value) {
        let short = match error.instance().as_ref() {
            Value::String(s) => s.chars().nth(MAX_QUOTE_CHARS).is_none(),
            Value::Array(_) | Value::Object(_) => false,
            _ => true,
        };
        let message = if short {
            error.to_string()
        } else {
            error.masked_with("value").to_string()
        };
        out.push(Problem::new(
            error.instance_path().to_string(),
            ProblemKind::Schema,
            clip(&message, MAX_MESSAGE_CHARS),
        ));
        if out.len() > MAX_PROBLEMS {
            break;
        }
    }
}

// ---------------------------------------------------------------------------
// Semantic checks
// ---------------------------------------------------------------------------

/// A node as far as its shape allows.
struct NodeView<'a> {
    id: Option<&'a str>,
    node_type: Option<&'a str>,
    config: Option<&'a Map<String, Value>>,
    inputs: Option<&'a Map<String, Value>>,
    retry: Option<&'a Map<String, Value>>,
}

/// An edge whose ends both resolve to nodes.
struct ResolvedEdge {
    index: usize,
    from: usize,
    to: usize,
}

/// Who may be read by name from a template.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TemplateRole {
    /// A node input: may read node outputs and the workflow input only.
    Input,
    /// Any other template: may also read the node's inputs by name.
    Config,
}

struct Checker<'a, 'o> {
    root: &'a Value,
    known: &'a Known,
    out: &'o mut Vec<Problem>,
    nodes: Vec<NodeView<'a>>,
    /// Node id → index of its first definition.
    ids: HashMap<&'a str, usize>,
    edges: Vec<ResolvedEdge>,
    succ: Vec<Vec<usize>>,
    pred: Vec<Vec<usize>>,
    ancestors: HashMap<usize, HashSet<usize>>,
}

impl<'a, 'o> Checker<'a, 'o> {
    fn new(root: &'a Value, known: &'a Known, out: &'o mut Vec<Problem>) -> Self {
        Checker {
            root,
            known,
            out,
            nodes: Vec::new(),
            ids: HashMap::new(),
            edges: Vec::new(),
            succ: Vec::new(),
            pred: Vec::new(),
            ancestors: HashMap::new(),
        }
    }

    fn push(&mut self, pointer: impl Into<String>, kind: ProblemKind, message: impl Into<String>) {
        self.out.push(Problem::new(pointer, kind, message));
    }

    fn run(mut self) {
        let Some(root) = self.root.as_object() else {
            return;
        };
        self.collect_nodes(root);
        self.check_entry(root);
        self.collect_edges(root);
        for i in 0..self.nodes.len() {
            self.check_node(i);
        }
        self.check_limits(root);
        self.check_cycles();
        self.check_reachability(root);
    }

    fn collect_nodes(&mut self, root: &'a Map<String, Value>) {
        let Some(nodes) = root.get("nodes").and_then(Value::as_array) else {
            return;
        };
        for (i, node) in nodes.iter().enumerate() {
            let obj = node.as_object();
            let field = |k: &str| obj.and_then(|o| o.get(k));
            let view = NodeView {
                id: field("id").and_then(Value::as_str),
                node_type: field("type").and_then(Value::as_str),
                config: field("config").and_then(Value::as_object),
                inputs: field("inputs").and_then(Value::as_object),
                retry: field("retry").and_then(Value::as_object),
            };
            if let Some(id) = view.id {
                if let Some(&first) = self.ids.get(id) {
                    self.push(
                        format!("/nodes/{i}/id"),
                        ProblemKind::Duplicate,
                        format!(
                            "duplicate node id `{}` (first defined at /nodes/{first})",
                            quote(id)
                        ),
                    );
                } else {
                    self.ids.insert(id, i);
                }
            }
            self.nodes.push(view);
        }
        self.succ = vec![Vec::new(); self.nodes.len()];
        self.pred = vec![Vec::new(); self.nodes.len()];
    }

    fn check_entry(&mut self, root: &'a Map<String, Value>) {
        if let Some(entry) = root.get("entry").and_then(Value::as_str)
            && root.get("nodes").is_some_and(Value::is_array)
            && !self.ids.contains_key(entry)
        {
            self.push(
                "/entry",
                ProblemKind::UnknownNode,
                format!("entry node `{}` does not exist", quote(entry)),
            );
        }
    }

    fn collect_edges(&mut self, root: &'a Map<String, Value>) {
        let Some(edges) = root.get("edges").and_then(Value::as_array) else {
            return;
        };
        let mut seen: HashMap<(&str, &str, Option<&str>), usize> = HashMap::new();
        for (i, edge) in edges.iter().enumerate() {
            let Some(obj) = edge.as_object() else {
                continue;
            };
            let mut end = |key: &str| -> Option<(&'a str, usize)> {
                let id = obj.get(key)?.as_str()?;
                match self.ids.get(id) {
                    Some(&n) => Some((id, n)),
                    None => {
                        self.out.push(Problem::new(
                            format!("/edges/{i}/{key}"),
                            ProblemKind::UnknownNode,
                            format!("edge {key} unknown node `{}`", quote(id)),
                        ));
                        None
                    }
                }
            };
            let from = end("from");
            let to = end("to");
            let when = obj.get("when").and_then(Value::as_str);
            if let Some(when) = when {
                self.check_when(i, when, from.map(|(_, n)| n));
            }
            if let (Some((from_id, from)), Some((to_id, to))) = (from, to) {
                if let Some(first) = seen.get(&(from_id, to_id, when)) {
                    self.push(
                        format!("/edges/{i}"),
                        ProblemKind::Duplicate,
                        format!(
                            "duplicate edge `{}` → `{}` (same as /edges/{first})",
                            quote(from_id),
                            quote(to_id)
                        ),
                    );
                    continue;
                }
                seen.insert((from_id, to_id, when), i);
                self.edges.push(ResolvedEdge { index: i, from, to });
                self.succ[from].push(to);
                self.pred[to].push(from);
            }
        }
    }

    fn check_when(&mut self, edge: usize, when: &str, from: Option<usize>) {
        let pointer = format!("/edges/{edge}/when");
        let rule = match Rule::parse(when) {
            Ok(rule) => Some(rule),
            Err(e) => {
                self.out.push(
                    Problem::new(&pointer, ProblemKind::Rule, format!("condition {e}"))
                        .at(None, Some(e.column()))
                        .with_limit(e.limit_exceeded()),
                );
                None
            }
        };
        let Some(from) = from else {
            return;
        };
        let Some(node) = self.nodes.get(from) else {
            return;
        };
        match node.node_type {
            Some("router") => {}
            Some(other) => {
                let other = other.to_owned();
                let id = node.id.unwrap_or_default().to_owned();
                self.push(
                    pointer,
                    ProblemKind::Invalid,
                    format!(
                        "only edges leaving a router may have a `when` condition; `{}` is a {} node",
                        quote(&id),
                        quote(&other)
                    ),
                );
                return;
            }
            None => return,
        }
        let Some(rule) = rule else {
            return;
        };
        let inputs = node.inputs;
        for var in rule.variables() {
            if var != "branch" && !inputs.is_some_and(|m| m.contains_key(&var)) {
                self.push(
                    &pointer,
                    ProblemKind::UnknownVariable,
                    format!(
                        "condition reads `{}`, but only `branch` and the router's inputs ({}) are available",
                        quote(&var),
                        names(inputs)
                    ),
                );
            }
        }
    }

    fn check_node(&mut self, i: usize) {
        let Some(node) = self.nodes.get(i) else {
            return;
        };
        let (node_type, config, inputs, retry) =
            (node.node_type, node.config, node.inputs, node.retry);
        let base = format!("/nodes/{i}");
        if let Some(inputs) = inputs {
            for (name, value) in inputs {
                let pointer = format!("{base}/inputs/{}", escape(name));
                if RESERVED_INPUTS.contains(&name.as_str()) {
                    self.push(
                        &pointer,
                        ProblemKind::Invalid,
                        format!("input name `{name}` is reserved and could not be read by name"),
                    );
                }
                if let Some(source) = value.as_str() {
                    self.check_template(i, &pointer, source, TemplateRole::Input);
                }
            }
        }
        if let Some(config) = config {
            match node_type {
                Some("llm") => self.check_llm(i, &base, config),
                Some("tool") => self.check_tool(i, &base, config),
                Some("router") => self.check_router(&base, config, inputs),
                Some("approval") => {
                    if let Some(message) = config.get("message").and_then(Value::as_str) {
                        let pointer = format!("{base}/config/message");
                        self.check_template(i, &pointer, message, TemplateRole::Config);
                    }
                }
                _ => {}
            }
        }
        if let Some(retry) = retry {
            let initial = retry.get("initialDelayMs").and_then(Value::as_u64);
            let max = retry.get("maxDelayMs").and_then(Value::as_u64);
            if let (Some(initial), Some(max)) = (initial, max)
                && initial > max
            {
                self.push(
                    format!("{base}/retry/initialDelayMs"),
                    ProblemKind::Invalid,
                    format!("initialDelayMs ({initial}) is greater than maxDelayMs ({max})"),
                );
            }
        }
    }

    fn check_llm(&mut self, i: usize, base: &str, config: &'a Map<String, Value>) {
        self.check_provider(&format!("{base}/config"), config);
        for key in ["system", "prompt", "response"] {
            if let Some(source) = config.get(key).and_then(Value::as_str) {
                let pointer = format!("{base}/config/{key}");
                self.check_template(i, &pointer, source, TemplateRole::Config);
            }
        }
        let Some(fallbacks) = config.get("fallbacks").and_then(Value::as_array) else {
            return;
        };
        for (j, fallback) in fallbacks.iter().enumerate() {
            let Some(fallback) = fallback.as_object() else {
                continue;
            };
            let fb_base = format!("{base}/config/fallbacks/{j}");
            self.check_provider(&fb_base, fallback);
            if let Some(source) = fallback.get("response").and_then(Value::as_str) {
                let pointer = format!("{fb_base}/response");
                self.check_template(i, &pointer, source, TemplateRole::Config);
            }
        }
    }

    /// Checks `provider` and the simulated options of an LLM config or a
    /// fallback at `base`.
    fn check_provider(&mut self, base: &str, config: &Map<String, Value>) {
        let Some(provider) = config.get("provider").and_then(Value::as_str) else {
            return;
        };
        if !self.known.has_provider(provider) {
            let registered = self.known.providers().collect::<Vec<_>>().join(", ");
            self.push(
                format!("{base}/provider"),
                ProblemKind::UnknownProvider,
                format!(
                    "unknown provider `{}` (registered: {registered})",
                    quote(provider)
                ),
            );
            return;
        }
        if provider == SIMULATED_PROVIDER {
            return;
        }
        for option in SIMULATED_OPTIONS {
            if config.contains_key(option) {
                self.push(
                    format!("{base}/{option}"),
                    ProblemKind::Invalid,
                    format!(
                        "`{option}` is an option of the `{SIMULATED_PROVIDER}` provider, but the provider is `{}`",
                        quote(provider)
                    ),
                );
            }
        }
    }

    fn check_tool(&mut self, i: usize, base: &str, config: &'a Map<String, Value>) {
        if let Some(tool) = config.get("tool").and_then(Value::as_str)
            && !self.known.has_tool(tool)
        {
            let registered = self.known.tools().collect::<Vec<_>>().join(", ");
            self.push(
                format!("{base}/config/tool"),
                ProblemKind::UnknownTool,
                format!("unknown tool `{}` (registered: {registered})", quote(tool)),
            );
        }
        for (key, value) in config {
            if key == "tool" {
                continue;
            }
            let pointer = format!("{base}/config/{}", escape(key));
            self.check_templates_in(i, &pointer, value);
        }
        if let Some(schema) = config
            .get("tool")
            .and_then(Value::as_str)
            .and_then(|tool| self.known.tool_schema(tool).map(|s| (tool, s)))
        {
            self.check_tool_arguments(base, schema.0, schema.1, config);
        }
    }

    /// Checks every string inside `value` as a template.
    fn check_templates_in(&mut self, i: usize, pointer: &str, value: &'a Value) {
        match value {
            Value::String(source) => self.check_template(i, pointer, source, TemplateRole::Config),
            Value::Array(items) => {
                for (n, item) in items.iter().enumerate() {
                    self.check_templates_in(i, &format!("{pointer}/{n}"), item);
                }
            }
            Value::Object(map) => {
                for (k, v) in map {
                    self.check_templates_in(i, &format!("{pointer}/{}", escape(k)), v);
                }
            }
            _ => {}
        }
    }

    /// Checks a tool node's arguments against the tool's schema: required
    /// ones present, no unknown ones when the schema closes the object, and
    /// every literal (template-free) value valid for its property.
    fn check_tool_arguments(
        &mut self,
        base: &str,
        tool: &str,
        schema: &Value,
        config: &Map<String, Value>,
    ) {
        let properties = schema.get("properties").and_then(Value::as_object);
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !config.contains_key(name) {
                    self.push(
                        format!("{base}/config"),
                        ProblemKind::ToolArguments,
                        format!(
                            "missing argument `{}` required by tool `{}`",
                            quote(name),
                            quote(tool)
                        ),
                    );
                }
            }
        }
        // Closed objects: unknown names are reported (pattern properties
        // would accept names not listed, so those schemas are not closed).
        let closed = schema.get("additionalProperties") == Some(&Value::Bool(false))
            && schema.get("patternProperties").is_none();
        let mut literals = Map::new();
        for (key, value) in config {
            if key == "tool" {
                continue;
            }
            let known = properties.is_some_and(|p| p.contains_key(key));
            if !known && closed {
                let accepted = properties
                    .map(|p| p.keys().map(String::as_str).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default();
                self.push(
                    format!("{base}/config/{}", escape(key)),
                    ProblemKind::ToolArguments,
                    format!(
                        "unknown argument `{}` for tool `{}` (accepted: {accepted})",
                        quote(key),
                        quote(tool)
                    ),
                );
                continue;
            }
            if !has_template(value) {
                literals.insert(key.clone(), value.clone());
            }
        }
        if literals.is_empty() {
            return;
        }
        // The literal arguments against the whole schema (so `$ref`s
        // resolve); errors about the object itself (required, unknown
        // names) are the checks above, made with templated ones in view.
        match jsonschema::validator_for(schema) {
            Ok(validator) => {
                let literals = Value::Object(literals);
                for error in validator.iter_errors(&literals) {
                    let at = error.instance_path().to_string();
                    if at.is_empty() {
                        continue;
                    }
                    self.push(
                        format!("{base}/config{at}"),
                        ProblemKind::ToolArguments,
                        clip(
                            &format!("tool `{}`: {}", quote(tool), error.masked_with("value")),
                            MAX_MESSAGE_CHARS,
                        ),
                    );
                }
            }
            Err(e) => self.push(
                format!("{base}/config/tool"),
                ProblemKind::Internal,
                clip(
                    &format!("tool `{}` has an invalid argument schema: {e}", quote(tool)),
                    MAX_MESSAGE_CHARS,
                ),
            ),
        }
    }

    fn check_router(
        &mut self,
        base: &str,
        config: &Map<String, Value>,
        inputs: Option<&Map<String, Value>>,
    ) {
        let Some(source) = config.get("rule").and_then(Value::as_str) else {
            return;
        };
        let pointer = format!("{base}/config/rule");
        match Rule::parse(source) {
            Err(e) => self.out.push(
                Problem::new(&pointer, ProblemKind::Rule, format!("rule {e}"))
                    .at(None, Some(e.column()))
                    .with_limit(e.limit_exceeded()),
            ),
            Ok(rule) => {
                for var in rule.variables() {
                    if !inputs.is_some_and(|m| m.contains_key(&var)) {
                        self.push(
                            &pointer,
                            ProblemKind::UnknownVariable,
                            format!(
                                "rule reads `{}`, which is not one of the node's inputs ({})",
                                quote(&var),
                                names(inputs)
                            ),
                        );
                    }
                }
            }
        }
    }

    /// Parses a template of node `node` and checks what it reads.
    fn check_template(&mut self, node: usize, pointer: &str, source: &str, role: TemplateRole) {
        let template = match Template::parse(source) {
            Ok(t) => t,
            Err(e) => {
                let pos = e.position();
                self.out.push(
                    Problem::new(pointer, ProblemKind::Template, e.to_string())
                        .at(pos.map(|p| p.line), pos.map(|p| p.column)),
                );
                return;
            }
        };
        let inputs = self.nodes.get(node).and_then(|n| n.inputs);
        let mut seen = HashSet::new();
        for reference in template.references() {
            if !seen.insert(reference.clone()) {
                continue;
            }
            match reference {
                Reference::Input { .. } => {}
                Reference::Var(name) => match role {
                    TemplateRole::Input => self.push(
                        pointer,
                        ProblemKind::UnknownVariable,
                        format!(
                            "inputs may read only `{{{{node.<id>.output…}}}}` and `{{{{input…}}}}`, not `{{{{{}}}}}`",
                            quote(&name)
                        ),
                    ),
                    TemplateRole::Config => {
                        if !inputs.is_some_and(|m| m.contains_key(&name)) {
                            self.push(
                                pointer,
                                ProblemKind::UnknownVariable,
                                format!(
                                    "template reads `{{{{{}}}}}`, which is not one of the node's inputs ({})",
                                    quote(&name),
                                    names(inputs)
                                ),
                            );
                        }
                    }
                },
                Reference::Node { id, .. } => self.check_node_reference(node, pointer, &id),
            }
        }
    }

    fn check_node_reference(&mut self, node: usize, pointer: &str, id: &str) {
        let Some(&target) = self.ids.get(id) else {
            self.push(
                pointer,
                ProblemKind::UnknownNode,
                format!("template reads unknown node `{}`", quote(id)),
            );
            return;
        };
        let this = self
            .nodes
            .get(node)
            .and_then(|n| n.id)
            .unwrap_or_default()
            .to_owned();
        if target == node {
            self.push(
                pointer,
                ProblemKind::NotBefore,
                format!("template of node `{}` reads its own output", quote(&this)),
            );
            return;
        }
        if self.nodes.len() > MAX_GRAPH_NODES || self.edges.len() > MAX_GRAPH_EDGES {
            return;
        }
        if !self.ancestors_of(node).contains(&target) {
            self.push(
                pointer,
                ProblemKind::NotBefore,
                format!(
                    "template reads node `{}`, which does not run before node `{}` (it is not an ancestor in the edge graph)",
                    quote(id),
                    quote(&this)
                ),
            );
        }
    }

    /// Nodes with a path to `node` (cached).
    fn ancestors_of(&mut self, node: usize) -> &HashSet<usize> {
        let pred = &self.pred;
        self.ancestors.entry(node).or_insert_with(|| {
            let mut seen = HashSet::new();
            let mut queue = VecDeque::from([node]);
            while let Some(n) = queue.pop_front() {
                for &p in pred.get(n).into_iter().flatten() {
                    if seen.insert(p) {
                        queue.push_back(p);
                    }
                }
            }
            seen
        })
    }

    fn check_limits(&mut self, root: &Map<String, Value>) {
        let Some(limits) = root.get("limits").and_then(Value::as_object) else {
            return;
        };
        if let Some(max) = limits.get("maxNodes").and_then(Value::as_u64)
            && let Some(nodes) = root.get("nodes").and_then(Value::as_array)
            && (nodes.len() as u64) > max
        {
            self.push(
                "/limits/maxNodes",
                ProblemKind::Limits,
                format!(
                    "maxNodes is {max}, but the workflow has {} nodes",
                    nodes.len()
                ),
            );
        }
        if let Some(cost) = limits.get("maxCostUsd")
            && (cost.is_number() || cost.is_string())
        {
            match Cost::deserialize(cost) {
                Ok(c) if c.is_zero() => self.push(
                    "/limits/maxCostUsd",
                    ProblemKind::Limits,
                    "maxCostUsd must be greater than zero",
                ),
                Ok(_) => {}
                Err(e) => self.push(
                    "/limits/maxCostUsd",
                    ProblemKind::Limits,
                    format!("maxCostUsd is not an exact dollar amount: {e}"),
                ),
            }
        }
    }

    fn check_cycles(&mut self) {
        let mut graph = DiGraph::<usize, usize>::with_capacity(self.nodes.len(), self.edges.len());
        let index: Vec<NodeIndex> = (0..self.nodes.len()).map(|i| graph.add_node(i)).collect();
        for e in &self.edges {
            if let (Some(&a), Some(&b)) = (index.get(e.from), index.get(e.to)) {
                graph.add_edge(a, b, e.index);
            }
        }
        let mut components: Vec<Vec<usize>> = petgraph::algo::tarjan_scc(&graph)
            .into_iter()
            .map(|c| {
                let mut c: Vec<usize> = c.into_iter().map(NodeIndex::index).collect();
                c.sort_unstable();
                c
            })
            .filter(|c| match c.as_slice() {
                [single] => self.succ.get(*single).is_some_and(|s| s.contains(single)),
                _ => true,
            })
            .collect();
        components.sort();
        for component in components {
            if let Some((edge, path)) = self.find_cycle(&component) {
                let path = path
                    .iter()
                    .map(|&n| quote(self.nodes.get(n).and_then(|v| v.id).unwrap_or_default()))
                    .collect::<Vec<_>>();
                self.push(
                    format!("/edges/{edge}"),
                    ProblemKind::Cycle,
                    format!(
                        "edges form a cycle {}; workflows must be acyclic",
                        path.join(" → ")
                    ),
                );
            }
        }
    }

    /// A shortest cycle through the first node of a strongly connected
    /// `component`: the index of its closing edge and the node path (first
    /// node repeated at the end).
    fn find_cycle(&self, component: &[usize]) -> Option<(usize, Vec<usize>)> {
        let start = *component.first()?;
        let members: HashSet<usize> = component.iter().copied().collect();
        let mut out_edges: HashMap<usize, Vec<&ResolvedEdge>> = HashMap::new();
        for e in &self.edges {
            if members.contains(&e.from) && members.contains(&e.to) {
                out_edges.entry(e.from).or_default().push(e);
            }
        }
        let mut parent: HashMap<usize, usize> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(n) = queue.pop_front() {
            for e in out_edges.get(&n).into_iter().flatten() {
                if e.to == start {
                    let mut path = vec![start];
                    let mut cur = n;
                    while cur != start {
                        path.push(cur);
                        cur = *parent.get(&cur)?;
                    }
                    path.push(start);
                    path.reverse();
                    return Some((e.index, path));
                }
                if e.to != start && !parent.contains_key(&e.to) {
                    parent.insert(e.to, n);
                    queue.push_back(e.to);
                }
            }
        }
        None
    }

    fn check_reachability(&mut self, root: &Map<String, Value>) {
        let Some(&entry) = root
            .get("entry")
            .and_then(Value::as_str)
            .and_then(|e| self.ids.get(e))
        else {
            return;
        };
        let mut reached = vec![false; self.nodes.len()];
        let mut queue = VecDeque::from([entry]);
        if let Some(r) = reached.get_mut(entry) {
            *r = true;
        }
        while let Some(n) = queue.pop_front() {
            for &s in self.succ.get(n).into_iter().flatten() {
                if let Some(r) = reached.get_mut(s)
                    && !*r
                {
                    *r = true;
                    queue.push_back(s);
                }
            }
        }
        let entry_id = quote(
            root.get("entry")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        let unreached: Vec<(usize, &str)> = self
            .ids
            .iter()
            .filter(|&(_, &i)| !reached.get(i).copied().unwrap_or(true))
            .map(|(&id, &i)| (i, id))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect();
        for (i, id) in unreached {
            self.push(
                format!("/nodes/{i}"),
                ProblemKind::Unreachable,
                format!(
                    "node `{}` is not reachable from the entry node `{entry_id}`",
                    quote(id)
                ),
            );
        }
    }
}

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

/// The input names of a node for a message.
fn names(inputs: Option<&Map<String, Value>>) -> String {
    match inputs {
        Some(m) if !m.is_empty() => {
            let mut list: Vec<String> = m.keys().take(16).map(|k| quote(k)).collect();
            if m.len() > 16 {
                list.push("…".to_owned());
            }
            list.join(", ")
        }
        _ => "none".to_owned(),
    }
}

/// Whether any string inside `value` contains a template placeholder.
fn has_template(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains("{{"),
        Value::Array(items) => items.iter().any(has_template),
        Value::Object(map) => map.values().any(has_template),
        _ => false,
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
