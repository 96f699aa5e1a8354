//! The result cache: hits, misses, expiry and what is never cached.

use std::time::Duration;

use flowtrace_agents::tools::{ToolGrants, ToolOptions, ToolRegistry};
use flowtrace_core::{CacheOutcome, EventKind, ToolError, ToolSafety};
use serde_json::json;

use crate::support::{Probe, in_node, tool_events};

/// The `cache` field of each `tool.response`, in order.
fn outcomes(sink: &flowtrace_core::trace::MemorySink) -> Vec<Option<CacheOutcome>> {
    tool_events(sink)
        .into_iter()
        .filter_map(|k| match k {
            EventKind::ToolResponse { cache, .. } => Some(cache),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn hits_skip_the_tool_until_the_ttl_passes() {
    let add = Probe::new("add", ToolSafety::Safe, |n, v| async move {
        Ok(json!({"sum": v["a"].as_i64().unwrap() + v["b"].as_i64().unwrap(), "call": n}))
    });
    let registry = ToolRegistry::builder()
        .tool_with(
            add.clone(),
            ToolOptions::new().cache(Duration::from_secs(60)),
        )
        .build()
        .unwrap();
    let (outs, sink) = in_node(move |ctx| async move {
        let g = ToolGrants::safe_only();
        let mut outs = Vec::new();
        outs.push(
            registry
                .call(&ctx, &g, "add", json!({"a": 1, "b": 2}))
                .await,
        );
        tokio::time::sleep(Duration::from_secs(59)).await;
        // The same input with its keys in another order: a hit.
        outs.push(
            registry
                .call(&ctx, &g, "add", json!({"b": 2, "a": 1}))
                .await,
        );
        outs.push(
            registry
                .call(&ctx, &g, "add", json!({"a": 2, "b": 2}))
                .await,
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        // 60 s after it was cached: expired.
        outs.push(
            registry
                .call(&ctx, &g, "add", json!({"a": 1, "b": 2}))
                .await,
        );
        outs.push(
            registry
                .call(&ctx, &g, "add", json!({"a": 1, "b": 2}))
                .await,
        );
        outs
    })
    .await;
    let outs: Vec<_> = outs.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        outs,
        [
            json!({"sum": 3, "call": 1}),
            json!({"sum": 3, "call": 1}),
            json!({"sum": 4, "call": 2}),
            json!({"sum": 3, "call": 3}),
            json!({"sum": 3, "call": 3}),
        ]
    );
    assert_eq!(add.calls(), 3);
    use CacheOutcome::{Hit, Miss};
    assert_eq!(
        outcomes(&sink),
        [Some(Miss), Some(Hit), Some(Miss), Some(Miss), Some(Hit)]
    );
    // A hit still reports its request and its output.
    let events = tool_events(&sink);
    assert_eq!(events.len(), 10);
    match &events[3] {
        EventKind::ToolResponse {
            output,
            error,
            latency_us,
            ..
        } => {
            assert_eq!(output, &Some(json!({"sum": 3, "call": 1})));
            assert_eq!(error, &None);
            assert_eq!(*latency_us, 0);
        }
        other => panic!("expected tool.response, got {other:?}"),
    }
}

#[tokio::test]
async fn failures_are_not_cached_and_uncached_tools_report_no_outcome() {
    let flaky = Probe::new("flaky", ToolSafety::Safe, |n, _| async move {
        if n == 1 {
            Err(ToolError::transient("flaky", "busy"))
        } else {
            Ok(json!(n))
        }
    });
    let registry = ToolRegistry::builder()
        .tool_with(
            flaky.clone(),
            ToolOptions::new().cache(Duration::from_secs(60)),
        )
        .tool(Probe::echo("plain"))
        .build()
        .unwrap();
    let (outs, sink) = in_node(move |ctx| async move {
        let g = ToolGrants::safe_only();
        vec![
            registry.call(&ctx, &g, "flaky", json!({})).await.is_err(),
            registry.call(&ctx, &g, "flaky", json!({})).await.unwrap() == json!(2),
            registry.call(&ctx, &g, "flaky", json!({})).await.unwrap() == json!(2),
            registry.call(&ctx, &g, "plain", json!({})).await.is_ok(),
        ]
    })
    .await;
    assert_eq!(outs, [true, true, true, true]);
    assert_eq!(flaky.calls(), 2);
    use CacheOutcome::{Hit, Miss};
    assert_eq!(outcomes(&sink), [Some(Miss), Some(Miss), Some(Hit), None]);
}
