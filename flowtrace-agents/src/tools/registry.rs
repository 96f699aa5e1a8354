//! The tool registry: lookup, permissions, input limits and validation,
//! timeouts, retries, the result cache, rate limits and events.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use flowtrace_core::model::ToolSpec;
use flowtrace_core::trace::{CacheOutcome, EventKind};
use flowtrace_core::{NodeContext, Tool, ToolError, ToolErrorKind, ToolSafety};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::time::Instant;

use super::ToolGrants;
use super::cache::ResultCache;
use super::function::FunctionTool;
use super::json::{canonical, deeper_than, longer_than, scrub_credentials};
use super::options::{MAX_JSON_DEPTH, ToolOptions};
use super::rate::Limiter;

/// Most schema problems reported for one call's input.
pub const MAX_INPUT_PROBLEMS: usize = 8;

/// Why a [`ToolRegistry`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Two tools share a name.
    #[error("tool {name:?} is registered twice")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// A tool's input schema is not a valid JSON Schema.
    #[error("tool {tool:?} has an invalid input schema: {message}")]
    InvalidSchema {
        /// The tool.
        tool: String,
        /// What is wrong with it.
        message: String,
    },
    /// A tool's [`ToolOptions`] are out of range.
    #[error("tool {tool:?} has an invalid option {option}: {message}")]
    InvalidOptions {
        /// The tool.
        tool: String,
        /// The option (`timeout`, `retry.max_attempts`, `rate_limit.per`, …).
        option: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

pub(crate) struct Entry {
    pub(crate) tool: Arc<dyn Tool>,
    pub(crate) spec: ToolSpec,
    pub(crate) validator: jsonschema::Validator,
    pub(crate) options: ToolOptions,
    pub(crate) cache: Option<ResultCache>,
    pub(crate) limiter: Option<Limiter>,
}

/// Tools by name, run with their input checked, their limits applied and
/// their calls traced.
///
/// Cheap to clone (shared). Build one with [`ToolRegistry::builder`]; each
/// tool runs with its [`ToolOptions`] (timeout, retries, result cache, rate
/// limit, size limits). See [`call`](Self::call) for what a call does.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use flowtrace_agents::tools::{ToolGrants, ToolOptions, ToolRegistry};
/// use flowtrace_core::trace::MemorySink;
/// use flowtrace_core::{GraphBuilder, JsonState, NodeOutput, RunConfig, ToolError, ToolSafety, node_fn};
/// use schemars::JsonSchema;
/// use serde::Deserialize;
/// use serde_json::json;
///
/// #[derive(Deserialize, JsonSchema)]
/// struct AddArgs { a: i64, b: i64 }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let registry = ToolRegistry::builder()
///     .function("add", "Adds two integers", ToolSafety::Safe, |args: AddArgs| async move {
///         Ok::<_, ToolError>(args.a + args.b)
///     })
///     .build()
///     .unwrap();
/// assert_eq!(registry.names(), ["add"]);
///
/// // Calls need a node's context, for their events.
/// let answers = Arc::new(Mutex::new(Vec::new()));
/// let graph = GraphBuilder::<JsonState>::new("calc")
///     .add_node("calc", node_fn({
///         let (registry, answers) = (registry.clone(), answers.clone());
///         move |_state, ctx| {
///             let (registry, answers) = (registry.clone(), answers.clone());
///             async move {
///                 let grants = ToolGrants::safe_only();
///                 let sum = registry.call(&ctx, &grants, "add", json!({"a": 2, "b": 3})).await?;
///                 let bad = registry.call(&ctx, &grants, "add", json!({"a": 2})).await.unwrap_err();
///                 answers.lock().unwrap().extend([sum, json!(bad.message)]);
///                 Ok(NodeOutput::none())
///             }
///         }
///     }))
///     .set_entry("calc")
///     .set_finish("calc")
///     .compile()
///     .unwrap();
/// let sink = MemorySink::new();
/// graph.invoke(JsonState::default(), RunConfig::new().sink(sink.clone())).await.unwrap();
/// let answers = answers.lock().unwrap();
/// assert_eq!(answers[0], json!(5));
/// assert!(answers[1].as_str().unwrap().contains("\"b\" is a required property"));
/// assert!(sink.kinds().contains(&"tool.response"));
/// # }
/// ```
#[derive(Clone)]
pub struct ToolRegistry {
    entries: Arc<HashMap<String, Entry>>,
}

impl fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolRegistry")
            .field("tools", &self.names())
            .finish()
    }
}

/// Builds a [`ToolRegistry`].
#[must_use]
#[derive(Default)]
pub struct ToolRegistryBuilder {
    tools: Vec<(Arc<dyn Tool>, ToolOptions)>,
}

impl fmt::Debug for ToolRegistryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolRegistryBuilder")
            .field("tools", &self.tools.len())
            .finish()
    }
}

impl ToolRegistryBuilder {
    /// Adds a tool with the default [`ToolOptions`].
    pub fn tool(self, tool: Arc<dyn Tool>) -> Self {
        self.tool_with(tool, ToolOptions::default())
    }

    /// Adds a tool with its own options.
    pub fn tool_with(mut self, tool: Arc<dyn Tool>, options: ToolOptions) -> Self {
        self.tools.push((tool, options));
        self
    }

    /// Adds a [`FunctionTool`] running `f`, an async function of a typed
    /// input whose JSON Schema is derived with `schemars`, with the default
    /// [`ToolOptions`] (for other options, pass
    /// [`FunctionTool::new`] to [`tool_with`](Self::tool_with)).
    ///
    /// ```
    /// use flowtrace_agents::tools::ToolRegistry;
    /// use flowtrace_core::{ToolError, ToolSafety};
    /// use schemars::JsonSchema;
    /// use serde::Deserialize;
    ///
    /// #[derive(Deserialize, JsonSchema)]
    /// struct AddArgs { a: i64, b: i64 }
    ///
    /// let registry = ToolRegistry::builder()
    ///     .function("add", "Adds two integers", ToolSafety::Safe, |args: AddArgs| async move {
    ///         Ok::<_, ToolError>(args.a + args.b)
    ///     })
    ///     .build()
    ///     .unwrap();
    /// let spec = &registry.specs(&Default::default())[0];
    /// assert_eq!(spec.parameters["properties"]["a"]["type"], "integer");
    /// ```
    pub fn function<A, O, F, Fut>(
        self,
        name: impl Into<String>,
        description: impl Into<String>,
        safety: ToolSafety,
        f: F,
    ) -> Self
    where
        A: DeserializeOwned + JsonSchema + Send + 'static,
        O: Serialize + 'static,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, ToolError>> + Send + 'static,
    {
        self.tool(Arc::new(FunctionTool::new(name, description, safety, f)))
    }

    /// Checks names and options, and compiles every input schema.
    ///
    /// # Errors
    /// [`RegistryError::DuplicateName`], [`RegistryError::InvalidSchema`] or
    /// [`RegistryError::InvalidOptions`].
    pub fn build(self) -> Result<ToolRegistry, RegistryError> {
        let mut entries = HashMap::with_capacity(self.tools.len());
        for (tool, options) in self.tools {
            let spec = tool.spec();
            let name = spec.name.clone();
            if entries.contains_key(&name) {
                return Err(RegistryError::DuplicateName { name });
            }
            if let Some((option, message)) = options.problems().into_iter().next() {
                return Err(RegistryError::InvalidOptions {
                    tool: name,
                    option,
                    message,
                });
            }
            let validator = jsonschema::validator_for(&spec.parameters).map_err(|e| {
                RegistryError::InvalidSchema {
                    tool: name.clone(),
                    message: e.to_string(),
                }
            })?;
            let limiter = match options.rate_limit {
                Some(limit) => {
                    Some(
                        Limiter::new(limit).ok_or_else(|| RegistryError::InvalidOptions {
                            tool: name.clone(),
                            option: "rate_limit",
                            message: format!("{limit:?} allows no calls"),
                        })?,
                    )
                }
                None => None,
            };
            let cache = options.cache_ttl.map(ResultCache::new);
            entries.insert(
                name,
                Entry {
                    tool,
                    spec,
                    validator,
                    options,
                    cache,
                    limiter,
                },
            );
        }
        Ok(ToolRegistry {
            entries: Arc::new(entries),
        })
    }
}

impl ToolRegistry {
    /// An empty builder.
    pub fn builder() -> ToolRegistryBuilder {
        ToolRegistryBuilder::default()
    }

    /// The tool named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.entries.get(name).map(|e| &e.tool)
    }

    /// The options the tool named `name` runs with.
    pub fn options(&self, name: &str) -> Option<&ToolOptions> {
        self.entries.get(name).map(|e| &e.options)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The descriptions of the tools `grants` allows, sorted by name: what
    /// to offer a model.
    pub fn specs(&self, grants: &ToolGrants) -> Vec<ToolSpec> {
        let mut specs: Vec<ToolSpec> = self
            .entries
            .values()
            .filter(|e| grants.allows(&e.spec.name, e.tool.safety()))
            .map(|e| e.spec.clone())
            .collect();
        specs.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        specs
    }

    /// Calls the tool `name` with `input` for a caller holding `grants`.
    ///
    /// In order:
    /// 1. an unknown tool, or a dangerous one not granted, is refused with a
    ///    `tool.denied` event and never called;
    /// 2. input nested deeper than [`MAX_JSON_DEPTH`] or longer than the
    ///    tool's [`max_input_bytes`](ToolOptions::max_input_bytes) is
    ///    refused with [`LimitExceeded`](ToolErrorKind::LimitExceeded), and
    ///    input that does not match the tool's schema with
    ///    [`InvalidInput`](ToolErrorKind::InvalidInput) naming each field by
    ///    JSON pointer (at most [`MAX_INPUT_PROBLEMS`]); the tool is never
    ///    called;
    /// 3. a `tool.request` event is emitted with a copy of the input whose
    ///    credentials are replaced by `[REDACTED_CREDENTIAL]` (see
    ///    [`scrub_credentials`](super::scrub_credentials)); the tool gets
    ///    the real input;
    /// 4. for a cached tool, a fresh cached result answers without calling
    ///    the tool; otherwise the tool runs under its
    ///    [`ToolOptions`] (rate limit and timeout per attempt, retries with
    ///    a `retry` event before each, output limit);
    /// 5. a `tool.response` event reports the output or error, the latency
    ///    (retries included) and, for a cached tool, the
    ///    [`CacheOutcome`].
    ///
    /// # Errors
    /// A [`ToolError`] with kind
    /// [`NotFound`](ToolErrorKind::NotFound),
    /// [`PermissionDenied`](ToolErrorKind::PermissionDenied),
    /// [`InvalidInput`](ToolErrorKind::InvalidInput),
    /// [`LimitExceeded`](ToolErrorKind::LimitExceeded),
    /// [`Timeout`](ToolErrorKind::Timeout), or the tool's own (the last
    /// attempt's, after retries).
    ///
    /// # Cancel safety
    /// Dropping the future abandons the call midway, like
    /// [`Tool::call`]; no result is cached.
    pub async fn call(
        &self,
        ctx: &NodeContext,
        grants: &ToolGrants,
        name: &str,
        input: Value,
    ) -> Result<Value, ToolError> {
        let entry = self.admit(ctx, grants, name)?;
        check_input(entry, name, &input)?;
        ctx.emit(EventKind::ToolRequest {
            tool: name.to_string(),
            arguments: scrub_credentials(&input),
        });
        let started = Instant::now();
        let (result, cache) = match &entry.cache {
            None => (run(ctx, entry, name, input).await, None),
            Some(cache) => {
                let key = canonical(&input);
                match cache.get(&key).await {
                    Some(hit) => (Ok(Value::clone(&hit)), Some(CacheOutcome::Hit)),
                    None => {
                        let result = run(ctx, entry, name, input).await;
                        if let Ok(value) = &result {
                            cache.insert(key, Arc::new(value.clone())).await;
                        }
                        (result, Some(CacheOutcome::Miss))
                    }
                }
            }
        };
        let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let (output, error) = match &result {
            Ok(v) => (Some(v.clone()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        ctx.emit(EventKind::ToolResponse {
            tool: name.to_string(),
            output,
            error,
            latency_us,
            cache,
        });
        result
    }

    /// The entry for `name`, if it exists and `grants` allow it; otherwise
    /// a `tool.denied` event and the error.
    fn admit(
        &self,
        ctx: &NodeContext,
        grants: &ToolGrants,
        name: &str,
    ) -> Result<&Entry, ToolError> {
        let (kind, reason) = match self.entries.get(name) {
            None => (
                ToolErrorKind::NotFound,
                format!("no tool named {name:?} is registered"),
            ),
            Some(entry) => {
                let safety = entry.tool.safety();
                if grants.allows(name, safety) {
                    return Ok(entry);
                }
                (
                    ToolErrorKind::PermissionDenied,
                    format!("{name:?} is a {safety} tool and was not granted to this caller"),
                )
            }
        };
        ctx.emit(EventKind::ToolDenied {
            tool: name.to_string(),
            reason: reason.clone(),
        });
        Err(ToolError::new(name, kind, reason))
    }
}

/// Refuses input that is too deep, too long or off-schema.
fn check_input(entry: &Entry, name: &str, input: &Value) -> Result<(), ToolError> {
    if deeper_than(input, MAX_JSON_DEPTH) {
        return Err(ToolError::new(
            name,
            ToolErrorKind::LimitExceeded,
            format!("input nests deeper than MAX_JSON_DEPTH ({MAX_JSON_DEPTH} levels)"),
        ));
    }
    let max = entry.options.max_input_bytes;
    if longer_than(input, max) {
        return Err(ToolError::new(
            name,
            ToolErrorKind::LimitExceeded,
            format!("input is longer than max_input_bytes ({max} bytes of JSON)"),
        ));
    }
    // The common case first: `is_valid` stops early and builds no errors.
    if entry.validator.is_valid(input) {
        return Ok(());
    }
    let problems: Vec<String> = entry
        .validator
        .iter_errors(input)
        .take(MAX_INPUT_PROBLEMS)
        .map(|e| {
            let at = e.instance_path().to_string();
            let at = if at.is_empty() { "/".to_string() } else { at };
            format!("{at}: {}", e.masked_with("value"))
        })
        .collect();
    Err(ToolError::new(
        name,
        ToolErrorKind::InvalidInput,
        format!("input does not match the schema: {}", problems.join("; ")),
    ))
}

/// Runs the tool's attempts, retrying retryable failures by its policy.
async fn run(
    ctx: &NodeContext,
    entry: &Entry,
    name: &str,
    mut input: Value,
) -> Result<Value, ToolError> {
    let policy = &entry.options.retry;
    let max_attempts = policy.get_max_attempts().max(1);
    let mut delays = policy.delays();
    let mut attempt = 1;
    loop {
        let last = attempt >= max_attempts;
        let args = if last {
            std::mem::take(&mut input)
        } else {
            input.clone()
        };
        let error = match run_once(entry, name, args).await {
            Ok(output) => return Ok(output),
            Err(e) => e,
        };
        let retryable = error.is_retryable()
            && (error.kind() != ToolErrorKind::Timeout || policy.get_retry_timeouts());
        let delay = match delays.next() {
            Some(delay) if retryable && !last => delay,
            _ => return Err(error),
        };
        ctx.emit(EventKind::Retry {
            failed_attempt: attempt,
            delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            error: error.to_string(),
        });
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

/// One attempt: a rate-limit permit and the call, within the timeout, then
/// the output limit.
async fn run_once(entry: &Entry, name: &str, args: Value) -> Result<Value, ToolError> {
    let timeout = entry.options.timeout;
    let attempt = async {
        if let Some(limiter) = &entry.limiter {
            limiter.acquire().await;
        }
        entry.tool.call(args).await
    };
    let output = match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result?,
        Err(_) => return Err(timed_out(name, timeout)),
    };
    if deeper_than(&output, MAX_JSON_DEPTH) {
        return Err(ToolError::new(
            name,
            ToolErrorKind::LimitExceeded,
            format!("output nests deeper than MAX_JSON_DEPTH ({MAX_JSON_DEPTH} levels)"),
        ));
    }
    let max = entry.options.max_output_bytes;
    if longer_than(&output, max) {
        return Err(ToolError::new(
            name,
            ToolErrorKind::LimitExceeded,
            format!("output is longer than max_output_bytes ({max} bytes of JSON)"),
        ));
    }
    Ok(output)
}

fn timed_out(name: &str, timeout: Duration) -> ToolError {
    ToolError::new(
        name,
        ToolErrorKind::Timeout,
        format!("no result within the timeout ({timeout:?})"),
    )
}
