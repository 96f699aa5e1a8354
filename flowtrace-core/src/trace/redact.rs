//! A hook that rewrites events before anything sees them.

use std::fmt;

use super::TraceEvent;

/// Rewrites each event of a run before it reaches any sink or subscriber:
/// the place to remove personal data and credentials from payloads.
///
/// Set one per run with
/// [`RunConfig::redactor`](crate::RunConfig::redactor). It is called on the
/// executor's task for every event that someone listens to, so it must be
/// quick and must not block; events nobody listens to are never built and
/// never reach it.
///
/// ```
/// use flowtrace_core::trace::{EventKind, EventRedactor, TraceEvent};
///
/// /// Hides every tool argument.
/// #[derive(Debug)]
/// struct HideArguments;
///
/// impl EventRedactor for HideArguments {
///     fn redact(&self, event: &mut TraceEvent) {
///         if let EventKind::ToolRequest { arguments, .. } = &mut event.kind {
///             *arguments = serde_json::Value::String("[hidden]".into());
///         }
///     }
/// }
/// ```
pub trait EventRedactor: Send + Sync + fmt::Debug {
    /// Rewrites `event` in place.
    fn redact(&self, event: &mut TraceEvent);
}
