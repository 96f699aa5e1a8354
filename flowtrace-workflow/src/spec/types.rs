//! The typed spec: what a loaded workflow document is.

use super::*;

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
