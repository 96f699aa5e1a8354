//! Every attribute, event and span name this crate writes, in one place.
//!
//! The `gen_ai.*` names follow the OpenTelemetry GenAI semantic conventions
//! (development status). They are pinned here rather than taken from
//! `opentelemetry-semantic-conventions`, where they sit behind an
//! experimental feature and keep moving: a dashboard built on these names
//! changes only when this module does. The `flowtrace.*` names are
//! FlowTrace's own.

// ===== GenAI attributes =====

/// The operation: [`OPERATION_CHAT`] or [`OPERATION_EXECUTE_TOOL`].
pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
/// The provider answering a model call (`openai`, `anthropic`, …).
pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
/// The provider, under the older convention's name (same value as
/// [`GEN_AI_PROVIDER_NAME`]), for backends that still read it.
pub const GEN_AI_SYSTEM: &str = "gen_ai.system";
/// The model the call asked for.
pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
/// The request's sampling temperature, when set.
pub const GEN_AI_REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
/// The request's completion-token limit, when set.
pub const GEN_AI_REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
/// The model that answered (after a fallback, not the one asked for).
pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
/// Why the model stopped, as a string array (`["stop"]`).
pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
/// Prompt tokens, as the provider reported them.
pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
/// Completion tokens, as the provider reported them.
pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
/// The tool a tool span calls.
pub const GEN_AI_TOOL_NAME: &str = "gen_ai.tool.name";
/// The request's messages as JSON; only with content capture on.
pub const GEN_AI_INPUT_MESSAGES: &str = "gen_ai.input.messages";
/// The reply as JSON; only with content capture on.
pub const GEN_AI_OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
/// A tool call's arguments as JSON; only with content capture on.
pub const GEN_AI_TOOL_CALL_ARGUMENTS: &str = "gen_ai.tool.call.arguments";
/// A tool call's result as JSON; only with content capture on.
pub const GEN_AI_TOOL_CALL_RESULT: &str = "gen_ai.tool.call.result";

/// [`GEN_AI_OPERATION_NAME`] of a model call span.
pub const OPERATION_CHAT: &str = "chat";
/// [`GEN_AI_OPERATION_NAME`] of a tool call span.
pub const OPERATION_EXECUTE_TOOL: &str = "execute_tool";

// ===== General attributes =====

/// The class of a failure (OpenTelemetry general convention).
pub const ERROR_TYPE: &str = "error.type";
/// The `exception` event's message.
pub const EXCEPTION_MESSAGE: &str = "exception.message";
/// The `exception` event's type (FlowTrace's error kind).
pub const EXCEPTION_TYPE: &str = "exception.type";

// ===== FlowTrace attributes =====

/// The run id (on every span).
pub const FLOWTRACE_RUN_ID: &str = "flowtrace.run_id";
/// The provider a model call first asked, when a fallback chain answered
/// from another (`gen_ai.provider.name` names the one that answered).
pub const FLOWTRACE_REQUESTED_PROVIDER: &str = "flowtrace.requested_provider";
/// The graph's name (run spans).
pub const FLOWTRACE_GRAPH: &str = "flowtrace.graph";
/// How the run ended (`succeeded`, `failed`, …; run spans).
pub const FLOWTRACE_RUN_STATUS: &str = "flowtrace.run.status";
/// Node executions of the run (run spans).
pub const FLOWTRACE_NODE_EXECUTIONS: &str = "flowtrace.node_executions";
/// The node (step and call spans).
pub const FLOWTRACE_NODE_ID: &str = "flowtrace.node_id";
/// The step id within the run (step spans).
pub const FLOWTRACE_STEP_ID: &str = "flowtrace.step_id";
/// For a subgraph run: the parent graph's step that runs it.
pub const FLOWTRACE_PARENT_STEP_ID: &str = "flowtrace.parent_step_id";
/// Attempts made (step spans), or the failed attempt (retry events).
pub const FLOWTRACE_ATTEMPT: &str = "flowtrace.attempt";
/// How the step ended (`succeeded`, `failed`, …; step spans).
pub const FLOWTRACE_STEP_STATUS: &str = "flowtrace.step.status";
/// Cost in US dollars, converted once from the exact amount (run, step and
/// model call spans).
pub const FLOWTRACE_COST_USD: &str = "flowtrace.cost_usd";
/// The exact cost as a decimal string of dollars (`"0.00021"`).
pub const FLOWTRACE_COST: &str = "flowtrace.cost";
/// Whether a model call of the step (or the call, or a tool call) was answered
/// from a cache.
pub const FLOWTRACE_CACHE_HIT: &str = "flowtrace.cache_hit";
/// The branch a router chose after the step.
pub const FLOWTRACE_BRANCH: &str = "flowtrace.branch";
/// The nodes the chosen branch leads to.
pub const FLOWTRACE_BRANCH_TARGETS: &str = "flowtrace.branch.targets";
/// Tokens of all model calls (run and step spans).
pub const FLOWTRACE_USAGE_INPUT_TOKENS: &str = "flowtrace.usage.input_tokens";
/// Completion tokens of all model calls (run and step spans).
pub const FLOWTRACE_USAGE_OUTPUT_TOKENS: &str = "flowtrace.usage.output_tokens";
/// A retry's delay in milliseconds (retry events).
pub const FLOWTRACE_RETRY_DELAY_MS: &str = "flowtrace.retry.delay_ms";
/// The provider given up on (fallback events).
pub const FLOWTRACE_FALLBACK_FROM_PROVIDER: &str = "flowtrace.fallback.from_provider";
/// The model given up on (fallback events).
pub const FLOWTRACE_FALLBACK_FROM_MODEL: &str = "flowtrace.fallback.from_model";
/// The provider tried next (fallback events).
pub const FLOWTRACE_FALLBACK_TO_PROVIDER: &str = "flowtrace.fallback.to_provider";
/// The model tried next (fallback events).
pub const FLOWTRACE_FALLBACK_TO_MODEL: &str = "flowtrace.fallback.to_model";
/// Why (fallback, skip and model-route events).
pub const FLOWTRACE_REASON: &str = "flowtrace.reason";
/// What a cache hit saved, in US dollars (cache-hit events).
pub const FLOWTRACE_SAVED_COST_USD: &str = "flowtrace.saved_cost_usd";
/// The routing profile (model-route events).
pub const FLOWTRACE_ROUTE_PROFILE: &str = "flowtrace.model_route.profile";
/// The limit's name (budget events).
pub const FLOWTRACE_BUDGET_LIMIT: &str = "flowtrace.budget.limit";
/// The limit's value (budget events).
pub const FLOWTRACE_BUDGET_LIMIT_VALUE: &str = "flowtrace.budget.limit_value";
/// The observed value (budget events).
pub const FLOWTRACE_BUDGET_OBSERVED: &str = "flowtrace.budget.observed";
/// The interrupt's or resume's payload as JSON; only with content capture on.
pub const FLOWTRACE_PAYLOAD: &str = "flowtrace.payload";
/// A log message (log events, warnings and errors only).
pub const FLOWTRACE_LOG_MESSAGE: &str = "flowtrace.log.message";
/// Set when captured content was cut at the size limit.
pub const FLOWTRACE_CONTENT_TRUNCATED: &str = "flowtrace.content_truncated";

// ===== Span names =====

/// The span of a run (and of a subgraph run).
pub const SPAN_RUN: &str = "flowtrace.run";
/// The span of a step (a node's execution, all its attempts).
pub const SPAN_STEP: &str = "flowtrace.step";

// ===== Span event names =====

/// A failed attempt will be retried.
pub const EVENT_RETRY: &str = "flowtrace.retry";
/// A call moved to the next provider/model.
pub const EVENT_FALLBACK: &str = "flowtrace.fallback";
/// A model call was answered from a cache.
pub const EVENT_CACHE_HIT: &str = "flowtrace.cache_hit";
/// A model router chose a candidate.
pub const EVENT_MODEL_ROUTE: &str = "flowtrace.model_route";
/// The run paused for a human.
pub const EVENT_INTERRUPT: &str = "flowtrace.interrupt";
/// The run continued after an interrupt.
pub const EVENT_RESUME: &str = "flowtrace.resume";
/// A budget limit was reached.
pub const EVENT_BUDGET_EXCEEDED: &str = "flowtrace.budget_exceeded";
/// A node was not run because its branch was not chosen.
pub const EVENT_STEP_SKIPPED: &str = "flowtrace.step_skipped";
/// A router chose a branch after a step that had already been exported.
pub const EVENT_ROUTE: &str = "flowtrace.route";
/// A warning or error logged by a node or the executor.
pub const EVENT_LOG: &str = "flowtrace.log";
/// A failure (OpenTelemetry's exception event).
pub const EVENT_EXCEPTION: &str = "exception";
