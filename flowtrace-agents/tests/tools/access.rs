//! What is refused before a tool runs, and what the request event shows.

use flowtrace_agents::tools::{RegistryError, ToolGrants, ToolOptions, ToolRegistry};
use flowtrace_core::{EventKind, ToolErrorKind, ToolSafety};
use serde_json::json;

use crate::support::{Probe, in_node, tool_event_names, tool_events};

#[tokio::test]
async fn invalid_input_names_each_field_and_never_calls_the_tool() {
    let weather = Probe::with_schema(
        "weather",
        ToolSafety::Safe,
        json!({
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "maximum": 7}},
            "required": ["city"]
        }),
        |_, _| async { Ok(json!("sunny")) },
    );
    let registry = ToolRegistry::builder()
        .tool(weather.clone())
        .build()
        .unwrap();
    let (errors, sink) = in_node(move |ctx| async move {
        let grants = ToolGrants::safe_only();
        let wrong = registry
            .call(&ctx, &grants, "weather", json!({"city": 5, "days": 30}))
            .await
            .unwrap_err();
        let missing = registry
            .call(&ctx, &grants, "weather", json!({"days": 1}))
            .await
            .unwrap_err();
        (wrong, missing)
    })
    .await;
    let (wrong, missing) = errors;
    assert_eq!(wrong.kind(), ToolErrorKind::InvalidInput);
    assert_eq!(wrong.tool, "weather");
    assert!(wrong.message.contains("/city:"), "{wrong}");
    assert!(wrong.message.contains("/days:"), "{wrong}");
    assert_eq!(missing.kind(), ToolErrorKind::InvalidInput);
    assert!(
        missing.message.contains("\"city\" is a required property"),
        "{missing}"
    );
    assert_eq!(weather.calls(), 0);
    assert!(tool_event_names(&sink).is_empty());
}

#[tokio::test]
async fn a_dangerous_tool_runs_only_when_granted() {
    let email = Probe::new("send_email", ToolSafety::Dangerous, |_, _| async {
        Ok(json!({"sent": true}))
    });
    let registry = ToolRegistry::builder()
        .tool(email.clone())
        .tool(Probe::echo("search"))
        .build()
        .unwrap();
    let names = |specs: Vec<flowtrace_core::model::ToolSpec>| {
        specs.into_iter().map(|s| s.name).collect::<Vec<_>>()
    };
    assert_eq!(names(registry.specs(&ToolGrants::safe_only())), ["search"]);
    assert_eq!(
        names(registry.specs(&ToolGrants::safe_only().grant("send_email"))),
        ["search", "send_email"]
    );
    let (denied, sink) = {
        let registry = registry.clone();
        in_node(move |ctx| async move {
            registry
                .call(&ctx, &ToolGrants::safe_only(), "send_email", json!({}))
                .await
                .unwrap_err()
        })
        .await
    };
    assert_eq!(denied.kind(), ToolErrorKind::PermissionDenied);
    assert_eq!(email.calls(), 0);
    match tool_events(&sink).as_slice() {
        [EventKind::ToolDenied { tool, reason }] => {
            assert_eq!(tool, "send_email");
            assert!(reason.contains("dangerous"), "{reason}");
        }
        other => panic!("expected one tool.denied, got {other:?}"),
    }

    let (sent, sink) = in_node(move |ctx| async move {
        let grants = ToolGrants::safe_only().grant("send_email");
        registry.call(&ctx, &grants, "send_email", json!({})).await
    })
    .await;
    assert_eq!(sent.unwrap(), json!({"sent": true}));
    assert_eq!(email.calls(), 1);
    assert_eq!(tool_event_names(&sink), ["tool.request", "tool.response"]);
}

#[tokio::test]
async fn an_unknown_tool_is_denied() {
    let registry = ToolRegistry::builder()
        .tool(Probe::echo("search"))
        .build()
        .unwrap();
    assert!(registry.get("search").is_some() && registry.get("nope").is_none());
    let (err, sink) = in_node(move |ctx| async move {
        registry
            .call(&ctx, &ToolGrants::safe_only(), "nope", json!({}))
            .await
            .unwrap_err()
    })
    .await;
    assert_eq!(err.kind(), ToolErrorKind::NotFound);
    assert!(err.message.contains("\"nope\""), "{err}");
    match tool_events(&sink).as_slice() {
        [EventKind::ToolDenied { tool, reason }] => {
            assert_eq!(tool, "nope");
            assert!(reason.contains("no tool named"), "{reason}");
        }
        other => panic!("expected one tool.denied, got {other:?}"),
    }
}

#[tokio::test]
async fn oversized_or_overdeep_input_is_refused_before_the_call() {
    let echo = Probe::echo("echo");
    let registry = ToolRegistry::builder()
        .tool_with(echo.clone(), ToolOptions::new().max_input_bytes(32))
        .build()
        .unwrap();
    let mut deep = json!(1);
    for _ in 0..=flowtrace_agents::tools::MAX_JSON_DEPTH {
        deep = json!([deep]);
    }
    let (results, sink) = in_node(move |ctx| async move {
        let g = ToolGrants::safe_only();
        let fits = registry.call(&ctx, &g, "echo", json!({"q": "x"})).await;
        let long = registry
            .call(&ctx, &g, "echo", json!({"q": "x".repeat(40)}))
            .await;
        let deep = registry.call(&ctx, &g, "echo", json!({"q": deep})).await;
        (fits, long, deep)
    })
    .await;
    let (fits, long, deep) = results;
    assert_eq!(fits.unwrap(), json!({"q": "x"}));
    let long = long.unwrap_err();
    assert_eq!(long.kind(), ToolErrorKind::LimitExceeded);
    assert!(long.message.contains("max_input_bytes (32"), "{long}");
    let deep = deep.unwrap_err();
    assert_eq!(deep.kind(), ToolErrorKind::LimitExceeded);
    assert!(deep.message.contains("MAX_JSON_DEPTH"), "{deep}");
    assert_eq!(echo.calls(), 1);
    assert_eq!(tool_event_names(&sink), ["tool.request", "tool.response"]);
}

#[tokio::test]
async fn credentials_are_scrubbed_from_the_request_event_only() {
    let fetch = Probe::echo("fetch");
    let registry = ToolRegistry::builder().tool(fetch.clone()).build().unwrap();
    let input = json!({
        "url": "https://api.example.com",
        "headers": {"Authorization": "Bearer sk-live-1", "Proxy-Authorization": "Basic eA==",
                    "X-API-Key": "k-2", "Cookie": "session=3", "Accept": "json"},
        "login": {"user": "ann", "Password": "hunter2", "api_key": "k-4"},
        "items": [{"secret": "s-5"}, {"token": {"value": "t-6"}}],
        "max_tokens": 100,
    });
    let (out, sink) = {
        let input = input.clone();
        in_node(move |ctx| async move {
            registry
                .call(&ctx, &ToolGrants::safe_only(), "fetch", input)
                .await
        })
        .await
    };
    // The tool got (and answered with) the real input.
    assert_eq!(out.unwrap(), input);
    assert_eq!(fetch.seen(), [input]);
    let events = tool_events(&sink);
    let EventKind::ToolRequest { arguments, .. } = &events[0] else {
        panic!("expected tool.request first, got {events:?}");
    };
    assert_eq!(
        arguments,
        &json!({
            "url": "https://api.example.com",
            "headers": {"Authorization": "[REDACTED_CREDENTIAL]", "Proxy-Authorization": "[REDACTED_CREDENTIAL]",
                        "X-API-Key": "[REDACTED_CREDENTIAL]", "Cookie": "[REDACTED_CREDENTIAL]", "Accept": "json"},
            "login": {"user": "ann", "Password": "[REDACTED_CREDENTIAL]", "api_key": "[REDACTED_CREDENTIAL]"},
            "items": [{"secret": "[REDACTED_CREDENTIAL]"}, {"token": "[REDACTED_CREDENTIAL]"}],
            "max_tokens": 100,
        })
    );
    let line = sink.events()[0..]
        .iter()
        .find(|e| e.kind.name() == "tool.request")
        .unwrap()
        .to_json_line();
    for secret in [
        "sk-live-1",
        "eA==",
        "k-2",
        "session=3",
        "hunter2",
        "k-4",
        "s-5",
        "t-6",
    ] {
        assert!(!line.contains(secret), "{secret} leaked: {line}");
    }
}

#[test]
fn bad_registrations_are_refused_at_build() {
    let dup = ToolRegistry::builder()
        .tool(Probe::echo("a"))
        .tool(Probe::echo("a"))
        .build()
        .unwrap_err();
    assert!(matches!(dup, RegistryError::DuplicateName { ref name } if name == "a"));
    let bad_schema = ToolRegistry::builder()
        .tool(Probe::with_schema(
            "b",
            ToolSafety::Safe,
            json!({"type": 12}),
            |_, v| async { Ok(v) },
        ))
        .build()
        .unwrap_err();
    assert!(matches!(bad_schema, RegistryError::InvalidSchema { ref tool, .. } if tool == "b"));
    let bad_options = ToolRegistry::builder()
        .tool_with(
            Probe::echo("c"),
            ToolOptions::new().rate_limit(0, std::time::Duration::from_secs(1)),
        )
        .build()
        .unwrap_err();
    assert!(
        matches!(bad_options, RegistryError::InvalidOptions { ref tool, option, .. }
            if tool == "c" && option == "rate_limit.max_calls"),
        "{bad_options}"
    );
    assert!(bad_options.to_string().contains("rate_limit.max_calls"));
}
