//! Timeouts, retries, rate limits and output limits, on the paused clock.

use std::time::Duration;

use flowtrace_agents::tools::{ToolGrants, ToolOptions, ToolRegistry};
use flowtrace_core::{EventKind, RetryPolicy, ToolError, ToolErrorKind, ToolSafety};
use serde_json::json;
use tokio::time::Instant;

use crate::support::{Probe, in_node, tool_event_names, tool_events};

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test(start_paused = true)]
async fn a_slow_call_times_out_at_the_timeout() {
    let slow = Probe::new("slow", ToolSafety::Safe, |_, _| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(json!("late"))
    });
    let registry = ToolRegistry::builder()
        .tool_with(slow.clone(), ToolOptions::new().timeout(2 * SECOND))
        .build()
        .unwrap();
    assert_eq!(registry.options("slow").unwrap().get_timeout(), 2 * SECOND);
    let ((err, took), sink) = in_node(move |ctx| async move {
        let start = Instant::now();
        let err = registry
            .call(&ctx, &ToolGrants::safe_only(), "slow", json!({}))
            .await
            .unwrap_err();
        (err, start.elapsed())
    })
    .await;
    assert_eq!(err.kind(), ToolErrorKind::Timeout);
    assert!(err.message.contains("2s"), "{err}");
    assert_eq!(took, 2 * SECOND);
    assert_eq!(slow.calls(), 1);
    match tool_events(&sink).as_slice() {
        [
            EventKind::ToolRequest { .. },
            EventKind::ToolResponse {
                output: None,
                error: Some(error),
                latency_us,
                cache: None,
                ..
            },
        ] => {
            assert!(error.contains("timeout"), "{error}");
            assert_eq!(*latency_us, 2_000_000);
        }
        other => panic!("unexpected events {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn retryable_failures_are_retried_with_retry_events_then_succeed() {
    let flaky = Probe::new("flaky", ToolSafety::Safe, |n, _| async move {
        match n {
            1 => Err(ToolError::transient("flaky", "busy")),
            2 => {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(json!("too late"))
            }
            _ => Ok(json!({"attempt": n})),
        }
    });
    let policy = RetryPolicy::new(3).initial_delay(Duration::from_millis(100));
    let registry = ToolRegistry::builder()
        .tool_with(
            flaky.clone(),
            ToolOptions::new().timeout(SECOND).retry(policy),
        )
        .build()
        .unwrap();
    let ((out, took), sink) = in_node(move |ctx| async move {
        let start = Instant::now();
        let out = registry
            .call(&ctx, &ToolGrants::safe_only(), "flaky", json!({"q": 1}))
            .await;
        (out, start.elapsed())
    })
    .await;
    assert_eq!(out.unwrap(), json!({"attempt": 3}));
    assert_eq!(flaky.calls(), 3);
    // Each attempt got the whole input.
    assert_eq!(
        flaky.seen(),
        [json!({"q": 1}), json!({"q": 1}), json!({"q": 1})]
    );
    // 100 ms delay, a 1 s timeout, a 200 ms delay.
    assert_eq!(took, Duration::from_millis(1300));
    assert_eq!(
        tool_event_names(&sink),
        ["tool.request", "retry", "retry", "tool.response"]
    );
    let retries: Vec<(u32, u64, String)> = tool_events(&sink)
        .into_iter()
        .filter_map(|k| match k {
            EventKind::Retry {
                failed_attempt,
                delay_ms,
                error,
            } => Some((failed_attempt, delay_ms, error)),
            _ => None,
        })
        .collect();
    assert_eq!(retries[0].0, 1);
    assert_eq!(retries[0].1, 100);
    assert!(retries[0].2.contains("busy"), "{}", retries[0].2);
    assert_eq!(retries[1].0, 2);
    assert_eq!(retries[1].1, 200);
    assert!(retries[1].2.contains("timeout"), "{}", retries[1].2);
}

#[tokio::test(start_paused = true)]
async fn retries_stop_on_permanent_errors_and_after_the_last_attempt() {
    let broken = Probe::new("broken", ToolSafety::Safe, |n, _| async move {
        match n {
            1 => Err(ToolError::new(
                "broken",
                ToolErrorKind::NotFound,
                "no such file",
            )),
            _ => Ok(json!("never reached")),
        }
    });
    let busy = Probe::new("busy", ToolSafety::Safe, |_, _| async {
        Err(ToolError::transient("busy", "still busy"))
    });
    let stuck = Probe::new("stuck", ToolSafety::Safe, |_, _| async {
        std::future::pending::<()>().await;
        Ok(json!(null))
    });
    let policy = RetryPolicy::new(4).initial_delay(Duration::from_millis(10));
    let registry = ToolRegistry::builder()
        .tool_with(broken.clone(), ToolOptions::new().retry(policy.clone()))
        .tool_with(
            busy.clone(),
            ToolOptions::new().retry(policy.clone().max_attempts(3)),
        )
        .tool_with(
            stuck.clone(),
            ToolOptions::new()
                .timeout(SECOND)
                .retry(policy.retry_timeouts(false)),
        )
        .build()
        .unwrap();
    let (errs, sink) = in_node(move |ctx| async move {
        let g = ToolGrants::safe_only();
        let mut errs = Vec::new();
        for name in ["broken", "busy", "stuck"] {
            errs.push(registry.call(&ctx, &g, name, json!({})).await.unwrap_err());
        }
        errs
    })
    .await;
    assert_eq!(errs[0].kind(), ToolErrorKind::NotFound);
    assert_eq!(broken.calls(), 1);
    assert_eq!(errs[1].kind(), ToolErrorKind::Unavailable);
    assert_eq!(busy.calls(), 3);
    assert_eq!(errs[2].kind(), ToolErrorKind::Timeout);
    assert_eq!(stuck.calls(), 1);
    assert_eq!(
        tool_event_names(&sink),
        [
            "tool.request",
            "tool.response",
            "tool.request",
            "retry",
            "retry",
            "tool.response",
            "tool.request",
            "tool.response",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_spaces_calls_and_its_wait_counts_against_the_timeout() {
    let limited = Probe::echo("limited");
    let registry = ToolRegistry::builder()
        .tool_with(limited.clone(), ToolOptions::new().rate_limit(2, SECOND))
        .tool_with(
            Probe::echo("scarce"),
            ToolOptions::new()
                .rate_limit(1, Duration::from_secs(10))
                .timeout(SECOND),
        )
        .build()
        .unwrap();
    let ((at, scarce), _sink) = in_node(move |ctx| async move {
        let g = ToolGrants::safe_only();
        let start = Instant::now();
        let mut at = Vec::new();
        for i in 0..6 {
            registry
                .call(&ctx, &g, "limited", json!({"i": i}))
                .await
                .unwrap();
            at.push(start.elapsed());
        }
        let first = registry.call(&ctx, &g, "scarce", json!({})).await;
        let waited = Instant::now();
        let second = registry.call(&ctx, &g, "scarce", json!({})).await;
        (at, (first, second, waited.elapsed()))
    })
    .await;
    // A burst of two, then one every 500 ms: six calls take 2 s.
    let ms = Duration::from_millis;
    assert_eq!(at, [ms(0), ms(0), ms(500), ms(1000), ms(1500), ms(2000)]);
    assert_eq!(limited.calls(), 6);
    let (first, second, waited) = scarce;
    assert!(first.is_ok());
    assert_eq!(second.unwrap_err().kind(), ToolErrorKind::Timeout);
    assert_eq!(waited, SECOND);
}

#[tokio::test]
async fn output_over_the_limit_is_refused() {
    let big = Probe::new("big", ToolSafety::Safe, |_, v| async move {
        let n = v["n"].as_u64().unwrap() as usize;
        Ok(json!("x".repeat(n)))
    });
    let registry = ToolRegistry::builder()
        .tool_with(
            big.clone(),
            ToolOptions::new()
                .max_output_bytes(10)
                .retry(RetryPolicy::new(3)),
        )
        .build()
        .unwrap();
    let (results, sink) = in_node(move |ctx| async move {
        let g = ToolGrants::safe_only();
        // "xxxxxxxx" is 10 bytes of JSON, "xxxxxxxxx" 11.
        let fits = registry.call(&ctx, &g, "big", json!({"n": 8})).await;
        let over = registry.call(&ctx, &g, "big", json!({"n": 9})).await;
        (fits, over)
    })
    .await;
    assert_eq!(results.0.unwrap(), json!("xxxxxxxx"));
    let over = results.1.unwrap_err();
    assert_eq!(over.kind(), ToolErrorKind::LimitExceeded);
    assert!(over.message.contains("max_output_bytes (10"), "{over}");
    // A permanent failure: not retried.
    assert_eq!(big.calls(), 2);
    let names = tool_event_names(&sink);
    assert_eq!(names.iter().filter(|n| **n == "retry").count(), 0);
}
