//! A ReAct agent with tools and permissions, offline.
//!
//! ```text
//! cargo run --example tool_agent
//! ```
//!
//! The agent gets three tools from a `ToolRegistry`: two safe ones
//! (`get_weather`, `convert_temperature`) and a dangerous one (`send_email`)
//! that its `ToolGrants` do not cover. It runs on the simulated provider,
//! scripted to call the weather tool, then to try sending an email, then to
//! convert the temperature, then to answer. The email is refused before it
//! runs: the live trace shows `tool … denied`, the model gets the refusal as
//! the call's result, and goes on. Every model call is priced like the real
//! `gpt-4o-mini` (the simulated provider's rows of the built-in price
//! table); the run's tokens and exact cost are printed at the end.
//!
//! With a Model Context Protocol server at hand, its tools join the same
//! registry, under the same validation, permissions and events: set
//! `FLOWTRACE_MCP_TIME_CMD` to the `mcp-server-time` executable (PyPI
//! `mcp-server-time`; `scripts/peers.sh start` installs it and prints the
//! line) and the agent also asks it for the time in Paris over stdio.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use flowtrace::agents::agents::{ReasoningAgent, agent_node};
use flowtrace::agents::mcp::McpClient;
use flowtrace::agents::tools::{ToolGrants, ToolRegistry};
use flowtrace::providers::simulated::{SimulatedConfig, SimulatedModel, SimulatedTurn};
use flowtrace::trace::Timeline;
use flowtrace::{GraphBuilder, JsonState, RunConfig, Tool, ToolError, ToolErrorKind, ToolSafety};
use futures::StreamExt;
use serde_json::{Value, json};

/// Today's weather, from a fixed table (a real tool would call an API).
struct GetWeather;

#[async_trait]
impl Tool for GetWeather {
    fn name(&self) -> &str {
        "get_weather"
    }
    fn description(&self) -> &str {
        "Today's weather in a city: sky and temperature in Celsius."
    }
    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": false
        })
    }
    fn safety(&self) -> ToolSafety {
        ToolSafety::Safe
    }
    async fn call(&self, args: Value) -> Result<Value, ToolError> {
        let city = args["city"].as_str().unwrap_or_default();
        match city {
            "Paris" => Ok(json!({"city": city, "sky": "clear", "celsius": 18})),
            "Oslo" => Ok(json!({"city": city, "sky": "snow", "celsius": -4})),
            _ => Err(ToolError::new(
                "get_weather",
                ToolErrorKind::NotFound,
                format!("no weather for {city:?}"),
            )),
        }
    }
}

/// Celsius to Fahrenheit.
struct ConvertTemperature;

#[async_trait]
impl Tool for ConvertTemperature {
    fn name(&self) -> &str {
        "convert_temperature"
    }
    fn description(&self) -> &str {
        "Converts a temperature from Celsius to Fahrenheit."
    }
    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {"celsius": {"type": "integer"}},
            "required": ["celsius"]
        })
    }
    fn safety(&self) -> ToolSafety {
        ToolSafety::Safe
    }
    async fn call(&self, args: Value) -> Result<Value, ToolError> {
        let c = args["celsius"].as_i64().unwrap_or_default();
        // Exact: F = C × 9/5 + 32, shown as a decimal string.
        let tenths = c * 18 + 320;
        let sign = if tenths < 0 { "-" } else { "" };
        let t = tenths.abs();
        Ok(json!({"fahrenheit": format!("{sign}{}.{}", t / 10, t % 10)}))
    }
}

/// Sends an email: a side effect, so dangerous. Counts its calls to show
/// that a refused call never reaches it.
struct SendEmail {
    sent: AtomicUsize,
}

#[async_trait]
impl Tool for SendEmail {
    fn name(&self) -> &str {
        "send_email"
    }
    fn description(&self) -> &str {
        "Sends an email."
    }
    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {"to": {"type": "string"}, "body": {"type": "string"}},
            "required": ["to", "body"]
        })
    }
    // The default safety is `Dangerous`.
    async fn call(&self, _args: Value) -> Result<Value, ToolError> {
        self.sent.fetch_add(1, Ordering::SeqCst);
        Ok(json!({"sent": true}))
    }
}

/// Connects to `mcp-server-time` over stdio when `FLOWTRACE_MCP_TIME_CMD`
/// names it; its tools are registered as `time_get_current_time` and
/// `time_convert_time`.
async fn time_server() -> Option<McpClient> {
    let Ok(cmd) = std::env::var("FLOWTRACE_MCP_TIME_CMD") else {
        println!(
            "(MCP: set FLOWTRACE_MCP_TIME_CMD to the mcp-server-time executable to add its tools)"
        );
        return None;
    };
    let client = McpClient::stdio(tokio::process::Command::new(cmd))
        .prefix("time_")
        .connect()
        .await
        .expect("mcp-server-time answers the MCP handshake");
    if let Some((name, version)) = client.server_info() {
        println!("MCP server {name} {version} connected over stdio");
    }
    Some(client)
}

#[tokio::main]
async fn main() {
    let email = Arc::new(SendEmail {
        sent: AtomicUsize::new(0),
    });
    let mut tools = ToolRegistry::builder()
        .tool(Arc::new(GetWeather))
        .tool(Arc::new(ConvertTemperature))
        .tool(email.clone());
    let mcp = time_server().await;
    if let Some(client) = &mcp {
        tools = client
            .register(tools)
            .await
            .expect("the server lists its tools");
    }
    let tools = tools.build().expect("valid tools");
    println!("tools: {}", tools.names().join(", "));

    // The simulated model, scripted turn by turn (by the number of
    // assistant turns already in the conversation).
    let script = SimulatedConfig::new()
        .latency(Duration::from_millis(40))
        .turn(SimulatedTurn::tool_call(
            "get_weather",
            json!({"city": "Paris"}),
        ))
        .turn(SimulatedTurn::tool_call(
            "send_email",
            json!({"to": "boss@example.com", "body": "Paris: clear, 18 °C"}),
        ))
        .turn(SimulatedTurn::tool_call(
            "convert_temperature",
            json!({"celsius": 18}),
        ));
    // With the MCP server: one more turn, asking it for the local time.
    let script = if mcp.is_some() {
        script.turn(SimulatedTurn::tool_call(
            "time_get_current_time",
            json!({"timezone": "Europe/Paris"}),
        ))
    } else {
        script
    };
    let model = Arc::new(SimulatedModel::new(script.turn(SimulatedTurn::text(
        "Paris is clear today at 18 °C (64.4 °F). I could not email it: \
                 sending email is not allowed for me.",
    ))));

    let agent = ReasoningAgent::new("weather_agent", model, "gpt-4o-mini", tools)
        .system("You answer weather questions with the tools you have.")
        .grants(ToolGrants::safe_only())
        .max_iterations(6);

    let graph = GraphBuilder::<JsonState>::new("tool_agent")
        .add_node("agent", agent_node(Arc::new(agent)))
        .set_entry("agent")
        .set_finish("agent")
        .compile()
        .expect("valid graph");

    let mut input = JsonState::new();
    input.values.insert(
        "messages".into(),
        json!("What's the weather in Paris, in Fahrenheit? Email it to my boss."),
    );

    println!("== live trace ==");
    let mut handle = graph.stream(input, RunConfig::new());
    let mut lines = Timeline::new().follow(handle.events());
    while let Some(line) = lines.next().await {
        println!("{line}");
    }
    let out = match handle.wait().await {
        Ok(out) => out,
        Err(failure) => {
            eprintln!("run failed: {}", failure.report());
            std::process::exit(1);
        }
    };

    println!("\n== answer ==");
    println!(
        "{}",
        out.state
            .get("answer")
            .and_then(Value::as_str)
            .unwrap_or("")
    );
    println!("\n== cost ==");
    let s = &out.summary;
    println!(
        "{} input + {} output tokens, {} USD (exact), {} ms",
        s.usage.input_tokens,
        s.usage.output_tokens,
        s.cost.to_decimal_string(),
        s.elapsed.as_millis()
    );
    let sent = email.sent.load(Ordering::SeqCst);
    println!("emails sent: {sent} (send_email was denied: never executed)");
    assert_eq!(sent, 0, "a denied tool must never run");
    if let Some(client) = mcp {
        client.shutdown().await.expect("the MCP server stops");
    }
}
