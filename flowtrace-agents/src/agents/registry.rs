//! [`AgentRegistry`]: agents by name and capability, with live health and
//! fallback.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use flowtrace_core::trace::EventKind;
use flowtrace_core::{Agent, AgentOutput, Message, NodeContext, NodeError};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::AgentError;
use super::health::{Health, HealthPolicy, HealthWindow};

/// How expensive an agent is to run, relatively: fallback tries cheaper
/// agents first.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CostTier {
    /// Small models, few calls.
    Low,
    /// The default.
    #[default]
    Medium,
    /// Large models or many calls.
    High,
}

/// What an agent is: its name, what it can do, the models it supports and
/// its cost tier.
///
/// ```
/// use flowtrace_agents::agents::{AgentMeta, CostTier};
/// let meta = AgentMeta::new("researcher")
///     .capability("search")
///     .capability("summarize")
///     .model("gpt-4o-mini")
///     .cost_tier(CostTier::Low);
/// assert!(meta.has_capability("search"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[must_use]
pub struct AgentMeta {
    /// The name (unique in a registry; the agent's own name is not
    /// consulted).
    pub name: String,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// What it can do.
    #[serde(default)]
    pub capabilities: BTreeSet<String>,
    /// The models it supports.
    #[serde(default)]
    pub models: Vec<String>,
    /// How expensive it is.
    #[serde(default)]
    pub cost_tier: CostTier,
}

impl AgentMeta {
    /// Metadata for an agent named `name`, with no capabilities yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: String::new(),
            capabilities: BTreeSet::new(),
            models: Vec::new(),
            cost_tier: CostTier::default(),
        }
    }

    /// Sets the description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Adds a capability.
    pub fn capability(mut self, capability: impl Into<String>) -> Self {
        self.capabilities.insert(capability.into());
        self
    }

    /// Adds a supported model.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.models.push(model.into());
        self
    }

    /// Sets the cost tier.
    pub fn cost_tier(mut self, tier: CostTier) -> Self {
        self.cost_tier = tier;
        self
    }

    /// Whether it has `capability`.
    pub fn has_capability(&self, capability: &str) -> bool {
        self.capabilities.contains(capability)
    }
}

type Factory = Arc<dyn Fn() -> Arc<dyn Agent> + Send + Sync>;

struct Entry {
    meta: AgentMeta,
    factory: Factory,
    instance: Arc<dyn Agent>,
    health: Mutex<HealthWindow>,
}

impl Entry {
    fn health(&self) -> MutexGuard<'_, HealthWindow> {
        // Plain samples: a poisoned lock still has valid data.
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What [`AgentRegistry::run_with_fallback`] produced: the answer and which
/// agent gave it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FallbackOutput {
    /// The agent that answered.
    pub agent: String,
    /// Its answer.
    pub output: AgentOutput,
    /// How many agents failed before it.
    pub fallbacks: u32,
}

/// Agents by name, with what they can do and how they have been doing.
///
/// - [`get`](Self::get) returns the registered instance;
///   [`create`](Self::create) makes a fresh one from the agent's factory
///   (the same instance for agents registered as instances).
/// - Every run through the registry ([`run`](Self::run),
///   [`run_with_fallback`](Self::run_with_fallback)) is recorded in the
///   agent's health window (see [`HealthPolicy`]); [`health`](Self::health)
///   reads it.
/// - [`run_with_fallback`](Self::run_with_fallback) runs the healthy agents
///   with a capability, cheapest [cost tier](CostTier) first (registration
///   order among equals), moving to the next healthy one when an agent
///   fails, with an `agent.fallback` event.
///
/// ```
/// use std::sync::Arc;
/// use flowtrace_agents::agents::{AgentMeta, AgentRegistry, CostTier, ReasoningAgent};
/// use flowtrace_agents::tools::ToolRegistry;
/// use flowtrace_core::testing::ScriptedModel;
///
/// let tools = ToolRegistry::builder().build().unwrap();
/// let model = Arc::new(ScriptedModel::new("openai"));
/// let registry = AgentRegistry::builder()
///     .agent(
///         AgentMeta::new("cheap").capability("answer").cost_tier(CostTier::Low),
///         Arc::new(ReasoningAgent::new("cheap", model.clone(), "gpt-4o-mini", tools.clone())),
///     )
///     .factory(AgentMeta::new("strong").capability("answer").cost_tier(CostTier::High), move || {
///         Arc::new(ReasoningAgent::new("strong", model.clone(), "gpt-4o", tools.clone()))
///     })
///     .build()
///     .unwrap();
/// let names: Vec<&str> = registry.with_capability("answer").iter().map(|m| m.name.as_str()).collect();
/// assert_eq!(names, ["cheap", "strong"]);
/// assert!(registry.create("strong").is_ok());
/// assert!(registry.create("nobody").is_err());
/// ```
pub struct AgentRegistry {
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
    policy: HealthPolicy,
}

impl fmt::Debug for AgentRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentRegistry")
            .field(
                "agents",
                &self.entries.iter().map(|e| &e.meta).collect::<Vec<_>>(),
            )
            .field("policy", &self.policy)
            .finish()
    }
}

/// Builds an [`AgentRegistry`].
#[must_use]
#[derive(Default)]
pub struct AgentRegistryBuilder {
    entries: Vec<(AgentMeta, Factory)>,
    policy: HealthPolicy,
}

impl fmt::Debug for AgentRegistryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentRegistryBuilder")
            .field(
                "agents",
                &self
                    .entries
                    .iter()
                    .map(|(m, _)| &m.name)
                    .collect::<Vec<_>>(),
            )
            .field("policy", &self.policy)
            .finish()
    }
}

impl AgentRegistryBuilder {
    /// Registers a shared agent instance.
    pub fn agent(mut self, meta: AgentMeta, agent: Arc<dyn Agent>) -> Self {
        self.entries.push((meta, Arc::new(move || agent.clone())));
        self
    }

    /// Registers an agent made by `factory` (called once at build for the
    /// shared instance, then on each [`create`](AgentRegistry::create)).
    pub fn factory(
        mut self,
        meta: AgentMeta,
        factory: impl Fn() -> Arc<dyn Agent> + Send + Sync + 'static,
    ) -> Self {
        self.entries.push((meta, Arc::new(factory)));
        self
    }

    /// Sets how health is judged (default [`HealthPolicy::default`]).
    pub fn policy(mut self, policy: HealthPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Builds the registry.
    ///
    /// # Errors
    /// [`AgentError::DuplicateAgent`] when two agents share a name.
    pub fn build(self) -> Result<AgentRegistry, AgentError> {
        let mut by_name = HashMap::with_capacity(self.entries.len());
        let mut entries = Vec::with_capacity(self.entries.len());
        for (i, (meta, factory)) in self.entries.into_iter().enumerate() {
            if by_name.insert(meta.name.clone(), i).is_some() {
                return Err(AgentError::DuplicateAgent { name: meta.name });
            }
            entries.push(Entry {
                instance: factory(),
                meta,
                factory,
                health: Mutex::new(HealthWindow::default()),
            });
        }
        Ok(AgentRegistry {
            entries,
            by_name,
            policy: self.policy,
        })
    }
}

impl AgentRegistry {
    /// An empty builder.
    pub fn builder() -> AgentRegistryBuilder {
        AgentRegistryBuilder::default()
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        self.by_name.get(name).and_then(|&i| self.entries.get(i))
    }

    /// The registered instance of the agent `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Agent>> {
        self.entry(name).map(|e| e.instance.clone())
    }

    /// A new instance of the agent `name`, from its factory.
    ///
    /// # Errors
    /// [`AgentError::UnknownAgent`].
    pub fn create(&self, name: &str) -> Result<Arc<dyn Agent>, AgentError> {
        self.entry(name)
            .map(|e| (e.factory)())
            .ok_or_else(|| AgentError::UnknownAgent {
                name: name.to_string(),
            })
    }

    /// The metadata of the agent `name`.
    pub fn meta(&self, name: &str) -> Option<&AgentMeta> {
        self.entry(name).map(|e| &e.meta)
    }

    /// Every agent's metadata, in registration order.
    pub fn agents(&self) -> impl Iterator<Item = &AgentMeta> {
        self.entries.iter().map(|e| &e.meta)
    }

    /// The agents with `capability`, cheapest tier first (registration
    /// order among equals), healthy or not.
    pub fn with_capability(&self, capability: &str) -> Vec<&AgentMeta> {
        let mut found: Vec<(usize, &AgentMeta)> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.meta.has_capability(capability))
            .map(|(i, e)| (i, &e.meta))
            .collect();
        found.sort_by_key(|(i, m)| (m.cost_tier, *i));
        found.into_iter().map(|(_, m)| m).collect()
    }

    /// The health policy.
    pub fn policy(&self) -> &HealthPolicy {
        &self.policy
    }

    /// The health of the agent `name` now.
    pub fn health(&self, name: &str) -> Option<Health> {
        self.entry(name)
            .map(|e| e.health().health(&self.policy, Instant::now()))
    }

    /// Records the outcome of a run of the agent `name` made outside the
    /// registry (ignored for an unknown name).
    pub fn record(&self, name: &str, ok: bool, latency: std::time::Duration) {
        if let Some(e) = self.entry(name) {
            e.health().record(&self.policy, Instant::now(), ok, latency);
        }
    }

    /// Runs the agent `name` on `conversation`, recording the outcome in its
    /// health.
    ///
    /// # Errors
    /// [`AgentError::UnknownAgent`], or the agent's error.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the agent's run; nothing is recorded.
    pub async fn run(
        &self,
        name: &str,
        conversation: Vec<Message>,
        ctx: &NodeContext,
    ) -> Result<AgentOutput, NodeError> {
        let entry = self.entry(name).ok_or_else(|| AgentError::UnknownAgent {
            name: name.to_string(),
        })?;
        self.run_entry(entry, conversation, ctx).await
    }

    async fn run_entry(
        &self,
        entry: &Entry,
        conversation: Vec<Message>,
        ctx: &NodeContext,
    ) -> Result<AgentOutput, NodeError> {
        let started = Instant::now();
        let result = entry.instance.run(conversation, ctx).await;
        let ended = Instant::now();
        // A pause for a human decision, an exhausted budget or a
        // cancellation says nothing about the agent's health; everything
        // else counts.
        let counts = match &result {
            Ok(_) => true,
            Err(e) => e.interrupt_payload().is_none() && e.as_run_error().is_none(),
        };
        if counts {
            entry.health().record(
                &self.policy,
                ended,
                result.is_ok(),
                ended.saturating_duration_since(started),
            );
        }
        result
    }

    /// The next healthy agent with `capability` not in `tried`.
    fn next_healthy(&self, capability: &str, tried: &[String]) -> Option<&Entry> {
        let now = Instant::now();
        self.with_capability(capability)
            .into_iter()
            .filter(|m| !tried.contains(&m.name))
            .filter_map(|m| self.entry(&m.name))
            .find(|e| e.health().health(&self.policy, now).healthy)
    }

    /// Runs the healthy agents with `capability` in turn until one answers:
    /// cheapest tier first; when one fails, an `agent.fallback` event names
    /// it, the next healthy one and the reason, and the next one runs (each
    /// agent at most once). Health is judged when each agent is picked.
    ///
    /// A failure that ends the run whatever agent answers — an exhausted
    /// budget, a cancellation — or a pause for a human decision is returned
    /// as is, without falling back.
    ///
    /// # Errors
    /// [`AgentError::NoHealthyAgent`] (with the agents tried and the last
    /// one's error as its source) when no agent answered, or a run-level
    /// error as above.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the current agent's run.
    pub async fn run_with_fallback(
        &self,
        capability: &str,
        conversation: Vec<Message>,
        ctx: &NodeContext,
    ) -> Result<FallbackOutput, NodeError> {
        let mut tried: Vec<String> = Vec::new();
        let mut current = self.next_healthy(capability, &tried);
        let mut last_error = None;
        while let Some(entry) = current {
            tried.push(entry.meta.name.clone());
            match self.run_entry(entry, conversation.clone(), ctx).await {
                Ok(output) => {
                    return Ok(FallbackOutput {
                        agent: entry.meta.name.clone(),
                        output,
                        fallbacks: u32::try_from(tried.len().saturating_sub(1)).unwrap_or(u32::MAX),
                    });
                }
                Err(e) if e.as_run_error().is_some() || e.interrupt_payload().is_some() => {
                    return Err(e);
                }
                Err(e) => {
                    current = self.next_healthy(capability, &tried);
                    if let Some(next) = current {
                        ctx.emit(EventKind::AgentFallback {
                            capability: capability.to_string(),
                            from_agent: entry.meta.name.clone(),
                            to_agent: next.meta.name.clone(),
                            reason: e.to_string(),
                        });
                    }
                    last_error = Some(e);
                }
            }
        }
        Err(AgentError::NoHealthyAgent {
            capability: capability.to_string(),
            tried,
            source: last_error,
        }
        .into())
    }
}
