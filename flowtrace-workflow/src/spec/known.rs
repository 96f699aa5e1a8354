//! The provider and tool names a host registered.

use super::*;

/// The provider and tool names the host registered, so [`load`] can reject
/// unknown ones.
///
/// [`Known::default`] lists providers `openai`, `anthropic`, `simulated`
/// and tools `read_file`, `transform_json`, `filter_list` (names only). A tool registered
/// with its argument schema ([`with_tool_schema`](Self::with_tool_schema),
/// as `Runtime::known` does) also has its arguments checked at load time:
/// missing required arguments, unknown ones (when the schema sets
/// `additionalProperties: false`) and literal values of the wrong shape.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    #[must_use]
    pub fn with_provider(mut self, name: impl Into<String>) -> Self {
        self.providers.insert(name.into());
        self
    }

    /// Adds a tool name.
    #[must_use]
    pub fn with_tool(mut self, name: impl Into<String>) -> Self {
        self.tools.insert(name.into());
        self
    }

    /// Adds a tool with the JSON Schema of its arguments (an object schema,
    /// as [`Tool::parameters`](flowtrace_core::Tool::parameters) returns).
    #[must_use]
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
            .with_tool("filter_list")
    }
}
