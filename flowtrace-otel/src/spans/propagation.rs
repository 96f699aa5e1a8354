//! Joining the host's trace from a W3C `traceparent` header.

use std::collections::HashMap;

use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;

use super::OtelError;

/// The context a W3C `traceparent` header (and optional `tracestate`)
/// names, to pass to [`OtelSinkBuilder::parent`](super::OtelSinkBuilder::parent)
/// so runs join the caller's trace.
///
/// ```
/// use opentelemetry::trace::TraceContextExt;
/// let cx = flowtrace_otel::context_from_traceparent(
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
///     None,
/// )
/// .unwrap();
/// assert_eq!(
///     cx.span().span_context().trace_id().to_string(),
///     "4bf92f3577b34da6a3ce929d0e0e4736"
/// );
/// assert!(flowtrace_otel::context_from_traceparent("garbage", None).is_err());
/// ```
pub fn context_from_traceparent(
    traceparent: &str,
    tracestate: Option<&str>,
) -> Result<Context, OtelError> {
    let mut headers = HashMap::with_capacity(2);
    headers.insert("traceparent".to_string(), traceparent.to_string());
    if let Some(state) = tracestate {
        headers.insert("tracestate".to_string(), state.to_string());
    }
    let cx = TraceContextPropagator::new().extract(&headers);
    if cx.span().span_context().is_valid() {
        Ok(cx)
    } else {
        Err(OtelError::InvalidTraceparent)
    }
}
