//! Why a spec could not be compiled ([`CompileError`]), why a node of a
//! compiled workflow failed ([`NodeFailure`]), and why a provider factory
//! could not build a model ([`ProviderFactoryError`]).

use super::*;

/// Why a spec could not be compiled. Each message is printed once: where
/// a variant has a cause, the cause is its
/// [`source`](std::error::Error::source), not part of its message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompileError {
    /// An LLM node (or one of its fallbacks) names an unregistered provider.
    #[error("node `{node}`: provider `{provider}` is not registered")]
    UnknownProvider {
        /// The node.
        node: String,
        /// The provider.
        provider: String,
    },
    /// A tool node names an unregistered tool.
    #[error("node `{node}`: tool `{tool}` is not registered")]
    UnknownTool {
        /// The node.
        node: String,
        /// The tool.
        tool: String,
    },
    /// A tool's argument schema is not a valid JSON Schema.
    #[error("node `{node}`: tool `{tool}` has an invalid argument schema: {message}")]
    ToolSchema {
        /// The node.
        node: String,
        /// The tool.
        tool: String,
        /// What is wrong with the schema.
        message: String,
    },
    /// A template does not parse (the parse error is the source).
    #[error("node `{node}`, {field}: invalid template")]
    Template {
        /// The node.
        node: String,
        /// Which template (`inputs.x`, `prompt`, …).
        field: String,
        /// The parse error.
        source: TemplateError,
    },
    /// A router rule or edge condition does not parse (the parse error is
    /// the source).
    #[error("node `{node}`, {field}: invalid rule")]
    Rule {
        /// The node.
        node: String,
        /// `rule` or `edge to <id>`.
        field: String,
        /// The parse error.
        source: RuleError,
    },
    /// The spec has more nodes than `limits.maxNodes`.
    #[error("the workflow has {nodes} nodes, over its limit maxNodes = {limit}")]
    TooManyNodes {
        /// Nodes in the spec.
        nodes: usize,
        /// The limit.
        limit: u32,
    },
    /// The executor refused the graph (its error is the source).
    #[error("the executor refused the workflow's graph")]
    Graph(#[from] BuildError),
}

/// Why a node of a compiled workflow failed: the source of its
/// [`NodeError`] (reach it with `std::error::Error::source` and
/// `downcast_ref::<NodeFailure>()`), so callers can branch on the kind and
/// on [`limit`](Self::limit) instead of parsing the message.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NodeFailure {
    /// A template did not render (a missing value, or output over a limit).
    #[error("node `{node}`, {field}: {error}")]
    Template {
        /// The node.
        node: String,
        /// Which template (`inputs.x`, `prompt`, `config.input`, …).
        field: String,
        /// The rendering error.
        error: TemplateError,
    },
    /// A router rule or edge condition failed to evaluate.
    #[error("node `{node}`, {field}: {error}")]
    Rule {
        /// The node.
        node: String,
        /// `rule` or `edge to <id>`.
        field: String,
        /// The evaluation error.
        error: RuleError,
    },
    /// A limit other than a rendering one was exceeded (a tool's result
    /// over [`Limits::tool_output_bytes`], or the run's total over
    /// [`Limits::run_bytes`]).
    #[error("node `{node}`, {field}: {error}")]
    Limit {
        /// The node.
        node: String,
        /// What exceeded it (`tool `read_file``).
        field: String,
        /// The limit and the value.
        error: LimitExceeded,
    },
    /// The provider factory could not build the node's model (the
    /// primary or a fallback); the factory's error, with its
    /// [`kind`](ProviderFactoryError::kind), is the source.
    #[error("node `{node}`: provider `{provider}` could not build model `{model}`")]
    Provider {
        /// The node.
        node: String,
        /// The provider.
        provider: String,
        /// The model name.
        model: String,
        /// Why.
        #[source]
        source: ProviderFactoryError,
    },
}

impl NodeFailure {
    /// The node that failed.
    pub fn node(&self) -> &str {
        match self {
            NodeFailure::Template { node, .. }
            | NodeFailure::Rule { node, .. }
            | NodeFailure::Limit { node, .. }
            | NodeFailure::Provider { node, .. } => node,
        }
    }

    /// The limit exceeded, if that is why the node failed.
    pub fn limit(&self) -> Option<LimitExceeded> {
        match self {
            NodeFailure::Template { error, .. } => error.limit().copied(),
            NodeFailure::Rule { error, .. } => error.limit_exceeded(),
            NodeFailure::Limit { error, .. } => Some(*error),
            NodeFailure::Provider { .. } => None,
        }
    }
}

impl From<NodeFailure> for NodeError {
    fn from(failure: NodeFailure) -> Self {
        NodeError::from_error(ErrorClass::Permanent, failure)
    }
}

/// What kind of [`ProviderFactoryError`] a factory returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProviderFactoryErrorKind {
    /// The factory does not serve this provider (or this model).
    UnknownProvider,
    /// A credential (an API key) the provider needs is missing.
    MissingCredential,
    /// The node's configuration is not one the provider accepts.
    InvalidConfig,
    /// Anything else; see the message and the source.
    Other,
}

impl fmt::Display for ProviderFactoryErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UnknownProvider => "unknown provider",
            Self::MissingCredential => "missing credential",
            Self::InvalidConfig => "invalid config",
            Self::Other => "other",
        })
    }
}

/// Why a [`ProviderFactory`] could not build a model: a
/// [`kind`](Self::kind) to branch on, a message for people, and the cause
/// (if any) as [`source`](std::error::Error::source), not repeated in the
/// message.
///
/// ```
/// use flowtrace_workflow::compile::{ProviderFactoryError, ProviderFactoryErrorKind};
///
/// let cause = serde_json::from_str::<u32>("x").unwrap_err();
/// let error = ProviderFactoryError::invalid_config("bad simulated options").with_source(cause);
/// assert_eq!(error.kind(), ProviderFactoryErrorKind::InvalidConfig);
/// assert_eq!(error.to_string(), "bad simulated options");
/// assert!(std::error::Error::source(&error).is_some());
/// ```
#[derive(Debug, Clone)]
pub struct ProviderFactoryError {
    kind: ProviderFactoryErrorKind,
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl ProviderFactoryError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ProviderFactoryErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// [`ProviderFactoryErrorKind::UnknownProvider`].
    pub fn unknown_provider(message: impl Into<String>) -> Self {
        Self::new(ProviderFactoryErrorKind::UnknownProvider, message)
    }

    /// [`ProviderFactoryErrorKind::MissingCredential`].
    pub fn missing_credential(message: impl Into<String>) -> Self {
        Self::new(ProviderFactoryErrorKind::MissingCredential, message)
    }

    /// [`ProviderFactoryErrorKind::InvalidConfig`].
    pub fn invalid_config(message: impl Into<String>) -> Self {
        Self::new(ProviderFactoryErrorKind::InvalidConfig, message)
    }

    /// [`ProviderFactoryErrorKind::Other`].
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(ProviderFactoryErrorKind::Other, message)
    }

    /// Sets the cause.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// What kind of failure it is.
    pub fn kind(&self) -> ProviderFactoryErrorKind {
        self.kind
    }

    /// The message (without the cause).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ProviderFactoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ProviderFactoryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
