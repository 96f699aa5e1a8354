//! Which tools a caller may use.

use std::collections::BTreeSet;

use flowtrace_core::ToolSafety;

/// The permissions of one caller (an agent, a node): every
/// [`Safe`](ToolSafety::Safe) tool, and the
/// [`Dangerous`](ToolSafety::Dangerous) ones granted by name.
///
/// ```
/// use flowtrace_agents::tools::ToolGrants;
/// use flowtrace_core::ToolSafety;
///
/// let grants = ToolGrants::safe_only().grant("send_email");
/// assert!(grants.allows("search", ToolSafety::Safe));
/// assert!(grants.allows("send_email", ToolSafety::Dangerous));
/// assert!(!grants.allows("delete_account", ToolSafety::Dangerous));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct ToolGrants {
    dangerous: BTreeSet<String>,
}

impl ToolGrants {
    /// Safe tools only: no dangerous tool is granted.
    pub fn safe_only() -> Self {
        Self::default()
    }

    /// Grants the dangerous tool `name`.
    pub fn grant(mut self, name: impl Into<String>) -> Self {
        self.dangerous.insert(name.into());
        self
    }

    /// Whether a tool named `name` of `safety` may be called.
    pub fn allows(&self, name: &str, safety: ToolSafety) -> bool {
        match safety {
            ToolSafety::Safe => true,
            _ => self.dangerous.contains(name),
        }
    }

    /// The dangerous tools granted, by name.
    pub fn granted(&self) -> impl Iterator<Item = &str> {
        self.dangerous.iter().map(String::as_str)
    }
}
