//! Running tools: the [`ToolRegistry`], the per-tool [`ToolOptions`]
//! (timeout, retries, result cache, rate limit, size limits), the
//! [`ToolGrants`] that decide which dangerous tools a caller may use, and
//! [`FunctionTool`]s made from typed async functions.
//!
//! Every call goes through [`ToolRegistry::call`], which refuses what is not
//! allowed or not valid before the tool runs and traces the rest as
//! `tool.request` (credentials scrubbed), `retry` and `tool.response`
//! events.

mod cache;
mod function;
mod grants;
mod json;
mod options;
mod rate;
mod registry;

pub use function::FunctionTool;
pub use grants::ToolGrants;
pub use json::scrub_credentials;
pub use options::{
    DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_TOOL_TIMEOUT, MAX_CACHE_ENTRIES,
    MAX_JSON_DEPTH, RateLimit, ToolOptions,
};
pub use registry::{MAX_INPUT_PROBLEMS, RegistryError, ToolRegistry, ToolRegistryBuilder};
