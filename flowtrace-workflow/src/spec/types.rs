//! The typed spec: what a loaded workflow document is.

use super::*;

/// A whole workflow document (format version `"1"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
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
    /// A workflow of format version [`FORMAT_VERSION`] starting at `entry`,
    /// with `nodes`, no edges, no limits, run sequentially.
    pub fn new(entry: impl Into<String>, nodes: Vec<NodeSpec>) -> Self {
        WorkflowSpec {
            schema: None,
            version: FORMAT_VERSION.to_owned(),
            description: None,
            entry: entry.into(),
            nodes,
            edges: Vec::new(),
            limits: None,
            parallel: false,
            max_concurrency: None,
        }
    }

    /// Adds an edge.
    #[must_use]
    pub fn edge(mut self, edge: EdgeSpec) -> Self {
        self.edges.push(edge);
        self
    }

    /// Sets the run limits.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }
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
#[non_exhaustive]
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
#[non_exhaustive]
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
    /// Node `id` of `kind`, without a name, inputs, retry or timeout.
    pub fn new(id: impl Into<String>, kind: NodeKind) -> Self {
        NodeSpec {
            id: id.into(),
            name: None,
            kind,
            inputs: BTreeMap::new(),
            retry: None,
            timeout_ms: None,
        }
    }

    /// Adds the input `name`, a template.
    #[must_use]
    pub fn input(mut self, name: impl Into<String>, template: impl Into<String>) -> Self {
        self.inputs.insert(name.into(), template.into());
        self
    }

    /// Sets the retry policy.
    #[must_use]
    pub fn retry(mut self, retry: RetrySpec) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Sets the per-attempt timeout, in milliseconds.
    #[must_use]
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }
}

impl NodeSpec {
    /// The node's type.
    pub fn node_type(&self) -> NodeType {
        self.kind.node_type()
    }
}

/// The type-specific configuration of a node.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
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

/// Configuration of a `tool` node: the tool name and its arguments (every
/// other key of `config`). String arguments are templates.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct ToolConfig {
    /// Tool name, registered with the host (see [`Known`]).
    pub tool: String,
    /// The arguments, without `tool`.
    pub args: Map<String, Value>,
}

impl ToolConfig {
    /// A call of tool `tool` without arguments.
    pub fn new(tool: impl Into<String>) -> Self {
        ToolConfig {
            tool: tool.into(),
            args: Map::new(),
        }
    }

    /// Adds the argument `name` (string values are templates).
    #[must_use]
    pub fn arg(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.args.insert(name.into(), value.into());
        self
    }
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
#[non_exhaustive]
pub struct RouterConfig {
    /// The rule (see [`rules`](crate::rules)); its result is the branch,
    /// tested by the `when` conditions of the router's outgoing edges.
    pub rule: String,
    /// `false` (default): the first outgoing edge whose condition holds is
    /// taken. `true`: every edge whose condition holds is taken, and those
    /// targets run together (in parallel when the workflow is parallel).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fanout: bool,
}

impl RouterConfig {
    /// A router taking the first edge whose condition holds for `rule`.
    pub fn new(rule: impl Into<String>) -> Self {
        RouterConfig {
            rule: rule.into(),
            fanout: false,
        }
    }

    /// Takes every edge whose condition holds (`fanout`).
    #[must_use]
    pub fn fanout(mut self, fanout: bool) -> Self {
        self.fanout = fanout;
        self
    }
}

/// Configuration of an `approval` node (optional in JSON).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ApprovalConfig {
    /// Message template shown to the approver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ApprovalConfig {
    /// An approval showing the message template `message`.
    pub fn with_message(message: impl Into<String>) -> Self {
        ApprovalConfig {
            message: Some(message.into()),
        }
    }
}

/// Retry policy of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
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

impl RetrySpec {
    /// `max_attempts` attempts in total, with the default delays.
    pub fn new(max_attempts: u32) -> Self {
        RetrySpec {
            max_attempts,
            initial_delay_ms: None,
            max_delay_ms: None,
        }
    }

    /// Sets the delay before the first retry, in milliseconds.
    #[must_use]
    pub fn initial_delay_ms(mut self, ms: u64) -> Self {
        self.initial_delay_ms = Some(ms);
        self
    }

    /// Sets the largest delay between retries, in milliseconds.
    #[must_use]
    pub fn max_delay_ms(mut self, ms: u64) -> Self {
        self.max_delay_ms = Some(ms);
        self
    }
}

/// An edge `from` → `to`, optionally conditional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
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

impl EdgeSpec {
    /// An unconditional edge `from` → `to`.
    pub fn new(from: impl Into<String>, to: impl Into<String>) -> Self {
        EdgeSpec {
            from: from.into(),
            to: to.into(),
            when: None,
        }
    }

    /// Sets the condition (only on edges leaving a router).
    #[must_use]
    pub fn when(mut self, condition: impl Into<String>) -> Self {
        self.when = Some(condition.into());
        self
    }
}

/// Run limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
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
