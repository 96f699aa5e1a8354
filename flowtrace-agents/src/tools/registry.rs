//! The tool registry: lookup, permissions, input validation and events.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use flowtrace_core::model::ToolSpec;
use flowtrace_core::trace::EventKind;
use flowtrace_core::{NodeContext, Tool, ToolError, ToolErrorKind};
use serde_json::Value;

use super::ToolGrants;

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
}

pub(crate) struct Entry {
    pub(crate) tool: Arc<dyn Tool>,
    pub(crate) spec: ToolSpec,
    pub(crate) validator: jsonschema::Validator,
}

/// Tools by name, run with their input validated and their calls traced.
///
/// Cheap to clone (shared). Build one with [`ToolRegistry::builder`].
#[derive(Clone)]
pub struct ToolRegistry {
    entries: Arc<HashMap<String, Entry>>,
}

impl fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("ToolRegistry")
            .field("tools", &names)
            .finish()
    }
}

/// Builds a [`ToolRegistry`].
#[must_use]
#[derive(Default)]
pub struct ToolRegistryBuilder {
    tools: Vec<Arc<dyn Tool>>,
}

impl fmt::Debug for ToolRegistryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolRegistryBuilder")
            .field("tools", &self.tools.len())
            .finish()
    }
}

impl ToolRegistryBuilder {
    /// Adds a tool.
    pub fn tool(mut self, tool: Arc<dyn Tool>) -> Self {
        self.tools.push(tool);
        self
    }

    /// Checks names and compiles every input schema.
    ///
    /// # Errors
    /// [`RegistryError::DuplicateName`] or [`RegistryError::InvalidSchema`].
    pub fn build(self) -> Result<ToolRegistry, RegistryError> {
        let mut entries = HashMap::with_capacity(self.tools.len());
        for tool in self.tools {
            let spec = tool.spec();
            let validator = jsonschema::validator_for(&spec.parameters).map_err(|e| {
                RegistryError::InvalidSchema {
                    tool: spec.name.clone(),
                    message: e.to_string(),
                }
            })?;
            let name = spec.name.clone();
            if entries.contains_key(&name) {
                return Err(RegistryError::DuplicateName { name });
            }
            entries.insert(
                name,
                Entry {
                    tool,
                    spec,
                    validator,
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
    /// In order: an unknown tool, or a dangerous one not granted, is refused
    /// with a `tool.denied` event and never called; input that does not
    /// match the tool's schema is refused with an
    /// [`InvalidInput`](ToolErrorKind::InvalidInput) error naming each field
    /// (JSON pointer) and never called; otherwise the call runs between a
    /// `tool.request` and a `tool.response` event.
    ///
    /// # Errors
    /// A [`ToolError`] with kind
    /// [`PermissionDenied`](ToolErrorKind::PermissionDenied),
    /// [`NotFound`](ToolErrorKind::NotFound),
    /// [`InvalidInput`](ToolErrorKind::InvalidInput), or the tool's own.
    pub async fn call(
        &self,
        ctx: &NodeContext,
        grants: &ToolGrants,
        name: &str,
        input: Value,
    ) -> Result<Value, ToolError> {
        let Some(entry) = self.entries.get(name) else {
            let reason = format!("no tool named {name:?} is registered");
            ctx.emit(EventKind::ToolDenied {
                tool: name.to_string(),
                reason: reason.clone(),
            });
            return Err(ToolError::new(name, ToolErrorKind::NotFound, reason));
        };
        let safety = entry.tool.safety();
        if !grants.allows(name, safety) {
            let reason = format!("{name:?} is a {safety} tool and was not granted to this caller");
            ctx.emit(EventKind::ToolDenied {
                tool: name.to_string(),
                reason: reason.clone(),
            });
            return Err(ToolError::new(
                name,
                ToolErrorKind::PermissionDenied,
                reason,
            ));
        }
        let problems: Vec<String> = entry
            .validator
            .iter_errors(&input)
            .take(MAX_INPUT_PROBLEMS)
            .map(|e| {
                let at = e.instance_path().to_string();
                let at = if at.is_empty() { "/".to_string() } else { at };
                format!("{at}: {}", e.masked_with("value"))
            })
            .collect();
        if !problems.is_empty() {
            return Err(ToolError::new(
                name,
                ToolErrorKind::InvalidInput,
                format!("input does not match the schema: {}", problems.join("; ")),
            ));
        }
        ctx.emit(EventKind::ToolRequest {
            tool: name.to_string(),
            arguments: input.clone(),
        });
        let started = Instant::now();
        let result = entry.tool.call(input).await;
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
            cache: None,
        });
        result
    }
}
