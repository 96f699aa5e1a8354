//! The real `mcp-server-time` (PyPI) over stdio, started from
//! `FLOWTRACE_MCP_TIME_CMD` (printed by `scripts/peers.sh start`).

use std::sync::Arc;

use flowtrace_agents::mcp::{McpClient, McpTool};
use flowtrace_agents::tools::{ToolGrants, ToolRegistry};
use flowtrace_core::{Tool, ToolErrorKind, ToolSafety};
use serde_json::json;

use crate::support::{process_gone, responses, run_calls, tool_events};

/// The command starting the time server, or `None` (test skipped) when
/// `FLOWTRACE_MCP_TIME_CMD` is unset, unless `FLOWTRACE_REQUIRE_PEERS=1`.
fn time_command(test: &str) -> Option<tokio::process::Command> {
    match std::env::var("FLOWTRACE_MCP_TIME_CMD") {
        Ok(path) if !path.is_empty() => {
            assert!(
                std::path::Path::new(&path).exists(),
                "FLOWTRACE_MCP_TIME_CMD={path} does not exist (run scripts/peers.sh start)"
            );
            let mut command = tokio::process::Command::new(path);
            command.arg("--local-timezone=UTC");
            Some(command)
        }
        _ => {
            assert!(
                std::env::var("FLOWTRACE_REQUIRE_PEERS").as_deref() != Ok("1"),
                "FLOWTRACE_REQUIRE_PEERS=1 but FLOWTRACE_MCP_TIME_CMD is unset (run scripts/peers.sh start)"
            );
            eprintln!(
                "SKIPPED {test}: FLOWTRACE_MCP_TIME_CMD is unset (eval \"$(scripts/peers.sh start)\" to run it)"
            );
            None
        }
    }
}

async fn connect(command: tokio::process::Command) -> McpClient {
    McpClient::stdio(command)
        .prefix("time.")
        .connect()
        .await
        .unwrap()
}

fn find<'a>(tools: &'a [Arc<McpTool>], name: &str) -> &'a Arc<McpTool> {
    tools
        .iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("no tool {name}"))
}

#[tokio::test]
async fn time_tools_are_listed_with_their_schemas_and_safety() {
    let Some(command) = time_command("time_tools_are_listed_with_their_schemas_and_safety") else {
        return;
    };
    let client = connect(command).await;
    let (server, version) = client.server_info().unwrap();
    assert_eq!(server, "mcp-time");
    assert_eq!(version, "2026.10.19");
    assert_eq!(client.label(), "mcp-server-time");

    let tools = client.list_tools().await.unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t.name()).collect();
    names.sort_unstable();
    assert_eq!(names, ["time_convert_time", "time_get_current_time"]);

    let now = find(&tools, "time_get_current_time");
    assert_eq!(now.remote_name(), "get_current_time");
    assert_eq!(now.server(), "mcp-server-time");
    assert_eq!(now.description(), "Get current time in a specific timezone");
    let schema = now.parameters();
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["properties"]["timezone"]["type"], "string");
    assert_eq!(schema["required"], json!(["timezone"]));
    assert!(
        schema["properties"]["timezone"]["description"]
            .as_str()
            .unwrap()
            .contains("'UTC' as local timezone")
    );

    let convert = find(&tools, "time_convert_time");
    let mut required: Vec<String> =
        serde_json::from_value(convert.parameters()["required"].clone()).unwrap();
    required.sort_unstable();
    assert_eq!(required, ["source_timezone", "target_timezone", "time"]);

    // Both tools say readOnlyHint: true (and not destructive): safe.
    for tool in &tools {
        let annotations = tool.annotations().unwrap();
        assert_eq!(annotations.read_only_hint, Some(true), "{}", tool.name());
        assert_ne!(annotations.destructive_hint, Some(true), "{}", tool.name());
        assert_eq!(tool.safety(), ToolSafety::Safe, "{}", tool.name());
    }

    // The registry offers them, with the server's schemas, to a caller
    // holding no grants.
    let registry = client
        .register(ToolRegistry::builder())
        .await
        .unwrap()
        .build()
        .unwrap();
    let specs = registry.specs(&ToolGrants::safe_only());
    assert_eq!(specs.len(), 2);
    assert_eq!(specs[1].name, "time_get_current_time");
    assert_eq!(specs[1].parameters, schema);
    client.shutdown().await.unwrap();
}

#[tokio::test]
async fn time_calls_run_through_the_registry_inside_a_graph() {
    let Some(command) = time_command("time_calls_run_through_the_registry_inside_a_graph") else {
        return;
    };
    let client = connect(command).await;
    let registry = client
        .register(ToolRegistry::builder())
        .await
        .unwrap()
        .build()
        .unwrap();
    let (results, sink) = run_calls(
        &registry,
        &ToolGrants::safe_only(),
        vec![
            ("time_get_current_time", json!({"timezone": "Asia/Tokyo"})),
            (
                "time_convert_time",
                json!({"source_timezone": "Europe/London", "time": "12:30", "target_timezone": "Asia/Kolkata"}),
            ),
        ],
    )
    .await;

    // The result is the call's structuredContent.
    let now = results[0].as_ref().unwrap();
    assert_eq!(now["timezone"], "Asia/Tokyo");
    let datetime = now["datetime"].as_str().unwrap();
    assert!(datetime.ends_with("+09:00"), "{datetime}");
    assert_eq!(now["is_dst"], false);

    let converted = results[1].as_ref().unwrap();
    assert_eq!(converted["source"]["timezone"], "Europe/London");
    assert_eq!(converted["target"]["timezone"], "Asia/Kolkata");
    let target = converted["target"]["datetime"].as_str().unwrap();
    // 12:30 in London is 18:00 (winter, UTC+0) or 17:00 (summer, UTC+1) in India.
    assert!(
        target.contains("T18:00:00+05:30") || target.contains("T17:00:00+05:30"),
        "{target}"
    );

    assert_eq!(
        tool_events(&sink),
        [
            ("tool.request", "time_get_current_time".to_string()),
            ("tool.response", "time_get_current_time".to_string()),
            ("tool.request", "time_convert_time".to_string()),
            ("tool.response", "time_convert_time".to_string()),
        ]
    );
    let logged = responses(&sink);
    assert_eq!(logged[0].1.as_ref(), Some(now));
    assert_eq!(logged[0].2, None);
    client.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_input_is_refused_by_the_registry_and_server_errors_are_tool_errors() {
    let Some(command) =
        time_command("invalid_input_is_refused_by_the_registry_and_server_errors_are_tool_errors")
    else {
        return;
    };
    let client = connect(command).await;
    let registry = client
        .register(ToolRegistry::builder())
        .await
        .unwrap()
        .build()
        .unwrap();
    let (results, sink) = run_calls(
        &registry,
        &ToolGrants::safe_only(),
        vec![
            // Missing `timezone`, then a number for it: refused by the schema.
            ("time_get_current_time", json!({})),
            ("time_get_current_time", json!({"timezone": 9})),
            // Valid by the schema, refused by the server.
            (
                "time_get_current_time",
                json!({"timezone": "Mars/Olympus_Mons"}),
            ),
        ],
    )
    .await;

    for (i, field) in [(0, "/"), (1, "/timezone")] {
        let e = results[i].as_ref().unwrap_err();
        assert_eq!(e.kind(), ToolErrorKind::InvalidInput, "{e}");
        assert!(e.message.contains(field), "{e}");
    }
    // Neither invalid input reached the server: no tool.request for them.
    let bad_zone = results[2].as_ref().unwrap_err();
    assert_eq!(bad_zone.kind(), ToolErrorKind::Failed, "{bad_zone}");
    assert_eq!(bad_zone.tool, "time_get_current_time");
    assert!(
        bad_zone.message.contains("Invalid timezone")
            && bad_zone.message.contains("Mars/Olympus_Mons"),
        "{bad_zone}"
    );
    assert_eq!(
        tool_events(&sink),
        [
            ("tool.request", "time_get_current_time".to_string()),
            ("tool.response", "time_get_current_time".to_string()),
        ]
    );
    let logged = responses(&sink);
    assert!(logged[0].2.as_deref().unwrap().contains("Invalid timezone"));

    // The same invalid input sent straight to the tool does reach the
    // server, which refuses it itself: the registry is what stopped it.
    let tools = client.list_tools().await.unwrap();
    let direct = find(&tools, "time_get_current_time")
        .call(json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(
            direct.kind(),
            ToolErrorKind::Failed | ToolErrorKind::InvalidInput
        ),
        "{direct}"
    );
    assert!(direct.message.contains("timezone"), "{direct}");
    // Arguments that are not an object never leave the client.
    let not_object = find(&tools, "time_get_current_time")
        .call(json!([1]))
        .await
        .unwrap_err();
    assert_eq!(not_object.kind(), ToolErrorKind::InvalidInput);
    client.shutdown().await.unwrap();
}

#[tokio::test]
async fn untrusted_annotations_make_time_tools_dangerous_until_granted() {
    let Some(command) =
        time_command("untrusted_annotations_make_time_tools_dangerous_until_granted")
    else {
        return;
    };
    let client = McpClient::stdio(command)
        .prefix("time.")
        .trust_annotations(false)
        .connect()
        .await
        .unwrap();
    let tools = client.list_tools().await.unwrap();
    assert!(tools.iter().all(|t| t.safety() == ToolSafety::Dangerous));
    let registry = client
        .register(ToolRegistry::builder())
        .await
        .unwrap()
        .build()
        .unwrap();
    assert!(registry.specs(&ToolGrants::safe_only()).is_empty());

    let input = json!({"timezone": "UTC"});
    let (results, sink) = run_calls(
        &registry,
        &ToolGrants::safe_only(),
        vec![("time_get_current_time", input.clone())],
    )
    .await;
    let denied = results[0].as_ref().unwrap_err();
    assert_eq!(denied.kind(), ToolErrorKind::PermissionDenied);
    assert_eq!(
        tool_events(&sink),
        [("tool.denied", "time_get_current_time".to_string())]
    );

    let granted = ToolGrants::safe_only().grant("time_get_current_time");
    let (results, sink) =
        run_calls(&registry, &granted, vec![("time_get_current_time", input)]).await;
    assert_eq!(results[0].as_ref().unwrap()["timezone"], "UTC");
    assert_eq!(tool_events(&sink).len(), 2);
    client.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_and_drop_end_the_server_process() {
    let Some(command) = time_command("shutdown_and_drop_end_the_server_process") else {
        return;
    };
    // Explicit shutdown: the process is gone when it returns, and the
    // tools then fail as unavailable.
    let client = connect(command).await;
    let pid = client.pid().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let tools = client.list_tools().await.unwrap();
    client.shutdown().await.unwrap();
    // Reaped by the time shutdown returns.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    let e = tools[0].call(json!({"timezone": "UTC"})).await.unwrap_err();
    assert_eq!(e.kind(), ToolErrorKind::Unavailable, "{e}");
    assert!(std::error::Error::source(&e).is_some());
    client.shutdown().await.unwrap();

    // Dropping the client and every tool ends the process too.
    let client = connect(time_command("shutdown_and_drop_end_the_server_process").unwrap()).await;
    let pid = client.pid().unwrap();
    let tools = client.list_tools().await.unwrap();
    drop(client);
    // A tool alone keeps the connection open.
    let now = find(&tools, "time_get_current_time");
    assert_eq!(
        now.call(json!({"timezone": "UTC"})).await.unwrap()["timezone"],
        "UTC"
    );
    drop(tools);
    assert!(process_gone(pid, 10).await, "process {pid} still runs");
}
