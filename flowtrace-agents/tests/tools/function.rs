//! Tools registered from typed async functions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use flowtrace_agents::tools::{FunctionTool, ToolGrants, ToolOptions, ToolRegistry};
use flowtrace_core::{EventKind, Tool, ToolError, ToolErrorKind, ToolSafety};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::support::{in_node, tool_events};

#[derive(Deserialize, JsonSchema)]
struct AddArgs {
    /// The first term.
    a: i64,
    /// The second term.
    b: i64,
}

#[derive(Deserialize, JsonSchema)]
struct LookupArgs {
    city: String,
    #[serde(default)]
    units: Option<Units>,
}

#[derive(Deserialize, JsonSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Units {
    Metric,
    Imperial,
}

#[derive(Serialize)]
struct Weather {
    city: String,
    temp: i32,
}

#[tokio::test]
async fn a_function_registers_in_one_line_and_round_trips() {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let lookup = FunctionTool::new(
        "weather",
        "Current weather of a city",
        ToolSafety::Safe,
        move |args: LookupArgs| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                let temp = match args.units {
                    Some(Units::Imperial) => 70,
                    Some(Units::Metric) | None => 21,
                };
                Ok::<_, ToolError>(Weather {
                    city: args.city,
                    temp,
                })
            }
        },
    );
    let registry = ToolRegistry::builder()
        .function(
            "add",
            "Adds two integers",
            ToolSafety::Safe,
            |args: AddArgs| async move { Ok::<_, ToolError>(args.a + args.b) },
        )
        .tool_with(Arc::new(lookup), ToolOptions::new().max_output_bytes(1024))
        .build()
        .unwrap();
    assert_eq!(registry.names(), ["add", "weather"]);
    let specs = registry.specs(&ToolGrants::safe_only());
    assert_eq!(specs[0].description, "Adds two integers");
    let add_schema = &specs[0].parameters;
    assert_eq!(add_schema["type"], "object");
    assert_eq!(add_schema["properties"]["a"]["type"], "integer");
    assert_eq!(
        add_schema["properties"]["a"]["description"],
        "The first term."
    );
    assert_eq!(add_schema["required"], json!(["a", "b"]));
    assert_eq!(registry.get("weather").unwrap().safety(), ToolSafety::Safe);

    let (outs, sink) = in_node(move |ctx| async move {
        let g = ToolGrants::safe_only();
        (
            registry
                .call(&ctx, &g, "add", json!({"a": 2, "b": 40}))
                .await,
            registry
                .call(
                    &ctx,
                    &g,
                    "weather",
                    json!({"city": "Oslo", "units": "imperial"}),
                )
                .await,
            registry
                .call(
                    &ctx,
                    &g,
                    "weather",
                    json!({"city": "Oslo", "units": "kelvin"}),
                )
                .await,
            registry
                .call(&ctx, &g, "add", json!({"a": 2, "b": "x"}))
                .await,
        )
    })
    .await;
    assert_eq!(outs.0.unwrap(), json!(42));
    assert_eq!(outs.1.unwrap(), json!({"city": "Oslo", "temp": 70}));
    let kelvin = outs.2.unwrap_err();
    assert_eq!(kelvin.kind(), ToolErrorKind::InvalidInput);
    assert!(kelvin.message.contains("/units"), "{kelvin}");
    let bad_b = outs.3.unwrap_err();
    assert_eq!(bad_b.kind(), ToolErrorKind::InvalidInput);
    assert!(bad_b.message.contains("/b"), "{bad_b}");
    // Refused input never reached the function.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let responses = tool_events(&sink)
        .into_iter()
        .filter(|k| matches!(k, EventKind::ToolResponse { .. }))
        .count();
    assert_eq!(responses, 2);
}

#[tokio::test]
async fn a_function_tool_called_directly_names_the_field_that_does_not_fit() {
    let add = FunctionTool::new(
        "add",
        "Adds",
        ToolSafety::Dangerous,
        |a: AddArgs| async move {
            a.a.checked_add(a.b)
                .ok_or_else(|| ToolError::new("add", ToolErrorKind::InvalidInput, "overflow"))
        },
    );
    assert_eq!(add.name(), "add");
    assert_eq!(add.safety(), ToolSafety::Dangerous);
    assert_eq!(add.call(json!({"a": 1, "b": 2})).await.unwrap(), json!(3));
    let err = add.call(json!({"a": 1})).await.unwrap_err();
    assert_eq!(err.kind(), ToolErrorKind::InvalidInput);
    assert!(err.message.contains("missing field `b`"), "{err}");
    let err = add.call(json!({"a": 1, "b": 1.5})).await.unwrap_err();
    assert!(err.message.contains("/b"), "{err}");
    let err = add.call(json!({"a": i64::MAX, "b": 1})).await.unwrap_err();
    assert_eq!(err.message, "overflow");
}
