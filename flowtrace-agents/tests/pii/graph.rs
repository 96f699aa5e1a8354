//! The redactor in real graph runs: what sinks and live subscribers see.

use std::sync::Arc;

use async_trait::async_trait;
use flowtrace_agents::handover::{self, HandoverNode, HandoverPolicy, keys};
use flowtrace_agents::pii::{CREDENTIAL_MASK, PiiRedactor, RedactionMode, Vault};
use flowtrace_core::testing::ScriptedModel;
use flowtrace_core::trace::{EventRedactor, LogLevel, MemorySink};
use flowtrace_core::{
    ChatRequest, CompiledGraph, EventKind, GraphBuilder, JsonState, NodeContext, NodeOutput,
    RunConfig, StreamItem, TokenUsage, Tool, ToolError, TraceEvent, node_fn,
};
use futures::StreamExt;
use serde_json::{Map, Value, json};

const EMAIL: &str = "ana.lopez@example.com";
const PHONE: &str = "+1 415 555 0132";
const SSN: &str = "123-45-6789";
const CARD: &str = "4111 1111 1111 1111";
const API_KEY: &str = "sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2";
const BEARER: &str = "Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig";

/// A CRM lookup whose output is full of personal data.
struct Crm;

#[async_trait]
impl Tool for Crm {
    fn name(&self) -> &str {
        "crm_lookup"
    }
    fn description(&self) -> &str {
        "Finds a customer by email"
    }
    fn parameters(&self) -> Value {
        json!({"type": "object", "properties": {"email": {"type": "string"}}})
    }
    async fn call(&self, args: Value) -> Result<Value, ToolError> {
        let email = args["email"]
            .as_str()
            .ok_or_else(|| ToolError::permanent("crm_lookup", "email must be a string"))?;
        Ok(
            json!({"email": email, "phone": PHONE, "ssn": SSN, "note": format!("card on file {CARD}")}),
        )
    }
}

/// `support`: logs, calls the CRM tool, asks the model.
fn graph(model: Arc<ScriptedModel>) -> CompiledGraph<JsonState> {
    GraphBuilder::<JsonState>::new("support")
        .add_node(
            "support",
            node_fn(move |_s: Arc<JsonState>, ctx: NodeContext| {
                let model = model.clone();
                async move {
                    ctx.log(
                        LogLevel::Info,
                        format!("customer {EMAIL} called from {PHONE}"),
                    );
                    ctx.log(
                        LogLevel::Debug,
                        format!("upstream auth: {BEARER}, key {API_KEY}"),
                    );
                    let customer = ctx
                        .call_tool(
                            &Crm,
                            json!({"email": EMAIL, "headers": {"x-api-key": API_KEY}}),
                        )
                        .await?;
                    let reply = ctx
                        .chat(
                            model.as_ref(),
                            ChatRequest::new("gpt-4o-mini")
                                .system(format!("You help {EMAIL}."))
                                .user(format!("My SSN is {SSN} and my card {CARD}")),
                        )
                        .await?;
                    let mut u = Map::new();
                    u.insert("customer".into(), customer);
                    u.insert("reply".into(), json!(reply.text));
                    Ok(NodeOutput::update(u))
                }
            }),
        )
        .set_entry("support")
        .set_finish("support")
        .compile()
        .unwrap()
}

fn model() -> Arc<ScriptedModel> {
    Arc::new(ScriptedModel::new("openai").reply(
        format!("I will call you at {PHONE} and email {EMAIL}."),
        TokenUsage::new(30, 12),
    ))
}

/// Runs the graph through `stream`, collecting the live events and the sink.
async fn run(redactor: Arc<dyn EventRedactor>) -> (JsonState, Vec<TraceEvent>, Vec<TraceEvent>) {
    let sink = MemorySink::new();
    let mut handle = graph(model()).stream(
        JsonState::new(),
        RunConfig::new().sink(sink.clone()).redactor(redactor),
    );
    let live: Vec<TraceEvent> = handle
        .events()
        .filter_map(|item| async move {
            match item {
                StreamItem::Event(e) => Some((*e).clone()),
                StreamItem::Lagged { .. } => None,
            }
        })
        .collect()
        .await;
    let out = handle.wait().await.unwrap();
    (out.state, live, sink.events())
}

fn text_of(events: &[TraceEvent]) -> String {
    events
        .iter()
        .map(TraceEvent::to_json_line)
        .collect::<Vec<_>>()
        .join("\n")
}

fn kinds(events: &[TraceEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

#[tokio::test]
async fn masked_in_the_sink_and_the_live_stream() {
    let redactor = Arc::new(PiiRedactor::new(RedactionMode::Mask).unwrap());
    let (state, live, sunk) = run(redactor).await;
    // The state itself is the application's: untouched.
    assert_eq!(state.get("customer").unwrap()["ssn"], SSN);

    assert_eq!(live, sunk, "live subscribers see what sinks see");
    assert!(kinds(&sunk).contains(&"llm.request") && kinds(&sunk).contains(&"tool.response"));
    let all = text_of(&sunk);
    for secret in [
        EMAIL,
        PHONE,
        SSN,
        CARD,
        API_KEY,
        BEARER,
        "eyJhbGciOiJIUzI1NiJ9",
    ] {
        assert!(!all.contains(secret), "{secret} leaked: {all}");
    }
    for mask in [
        "[REDACTED_EMAIL]",
        "[REDACTED_PHONE]",
        "[REDACTED_SSN]",
        "[REDACTED_CARD]",
        CREDENTIAL_MASK,
    ] {
        assert!(all.contains(mask), "{mask} missing");
    }
    // Field by field.
    for e in &sunk {
        match &e.kind {
            EventKind::ToolRequest { arguments, .. } => assert_eq!(
                arguments,
                &json!({"email": "[REDACTED_EMAIL]", "headers": {"x-api-key": CREDENTIAL_MASK}})
            ),
            EventKind::ToolResponse {
                output: Some(output),
                ..
            } => {
                assert_eq!(output["phone"], "[REDACTED_PHONE]");
                assert_eq!(output["note"], "card on file [REDACTED_CARD]");
            }
            EventKind::LlmRequest { request, .. } => {
                assert_eq!(
                    request.system.as_deref(),
                    Some("You help [REDACTED_EMAIL].")
                );
                assert_eq!(
                    request.messages[0].content,
                    "My SSN is [REDACTED_SSN] and my card [REDACTED_CARD]"
                );
            }
            EventKind::LlmResponse { text, .. } => {
                assert_eq!(
                    text,
                    "I will call you at [REDACTED_PHONE] and email [REDACTED_EMAIL]."
                )
            }
            EventKind::Log {
                level: LogLevel::Debug,
                message,
            } => assert_eq!(
                message,
                &format!("upstream auth: {CREDENTIAL_MASK}, key {CREDENTIAL_MASK}")
            ),
            _ => {}
        }
    }
}

#[tokio::test]
async fn tokens_round_trip_through_the_vault() {
    let vault = Arc::new(Vault::new());
    let redactor = Arc::new(PiiRedactor::new(RedactionMode::Tokenize(vault.clone())).unwrap());
    let (_, live, sunk) = run(redactor).await;
    assert_eq!(live, sunk);
    let all = text_of(&sunk);
    for secret in [EMAIL, PHONE, SSN, CARD, API_KEY] {
        assert!(!all.contains(secret), "{secret} leaked");
    }
    // The same email is the same token in every event.
    let log = sunk
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::Log {
                level: LogLevel::Info,
                message,
            } => Some(message.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(log, "customer [EMAIL_1] called from [PHONE_1]");
    assert!(all.contains("[SSN_1]") && all.contains("[CARD_1]"));
    assert!(!all.contains("[EMAIL_2]"), "one email, one token");
    assert_eq!(vault.reveal("[EMAIL_1]").as_deref(), Some(EMAIL));
    assert_eq!(vault.reveal("[PHONE_1]").as_deref(), Some(PHONE));
    assert_eq!(vault.reveal("[SSN_1]").as_deref(), Some(SSN));
    assert_eq!(vault.reveal("[CARD_1]").as_deref(), Some(CARD));
    assert_eq!(vault.len(), 4);
    assert_eq!(
        vault.reveal_text(&log),
        format!("customer {EMAIL} called from {PHONE}")
    );
    // Credentials are never tokenized: nothing to reveal.
    assert!(!all.contains(API_KEY));
    assert!((1..=4).all(|i| vault.reveal(&format!("[CREDENTIAL_{i}]")).is_none()));
}

#[tokio::test]
async fn off_mode_keeps_personal_data_but_never_credentials() {
    let redactor = Arc::new(PiiRedactor::new(RedactionMode::Off).unwrap());
    let (_, live, sunk) = run(redactor).await;
    assert_eq!(live, sunk);
    let all = text_of(&sunk);
    assert!(all.contains(EMAIL) && all.contains(SSN) && all.contains(CARD));
    for secret in [API_KEY, "eyJhbGciOiJIUzI1NiJ9"] {
        assert!(!all.contains(secret), "{secret} leaked in Off mode");
    }
    assert!(all.contains(&format!(r#""x-api-key":"{CREDENTIAL_MASK}""#)));
}

#[tokio::test]
async fn without_a_redactor_everything_would_leak() {
    // The control: the same run with no redactor shows the raw values, so
    // the assertions above are about the redactor, not the fixture.
    let sink = MemorySink::new();
    graph(model())
        .invoke(JsonState::new(), RunConfig::new().sink(sink.clone()))
        .await
        .unwrap();
    let all = text_of(&sink.events());
    for secret in [EMAIL, PHONE, SSN, CARD, API_KEY] {
        assert!(all.contains(secret), "{secret}");
    }
}

#[tokio::test]
async fn handover_context_is_redacted_too() {
    let policy = Arc::new(
        HandoverPolicy::builder()
            .user_phrases(["human"])
            .build()
            .unwrap(),
    );
    let b = GraphBuilder::<JsonState>::new("desk")
        .add_node(
            "agent",
            node_fn(|_s: Arc<JsonState>, _ctx: NodeContext| async move { Ok(NodeOutput::none()) }),
        )
        .set_entry("agent");
    let b = handover::add_router(b, "agent", policy.clone(), "agent");
    let g = handover::add_sinks(b, HandoverNode::new(policy).context_fields(["email"]))
        .compile()
        .unwrap();
    let mut input = JsonState::new();
    input.values.insert(
        keys::USER_MESSAGE.into(),
        json!(format!("human please, I am {EMAIL}")),
    );
    input.values.insert("email".into(), json!(EMAIL));
    input.values.insert(
        keys::MESSAGES.into(),
        json!([{"role": "user", "content": format!("human please, I am {EMAIL}")}]),
    );
    let sink = MemorySink::new();
    let out = g
        .invoke(
            input,
            RunConfig::new()
                .sink(sink.clone())
                .redactor(Arc::new(PiiRedactor::new(RedactionMode::Mask).unwrap())),
        )
        .await
        .unwrap();
    // The host's state keeps the real record; the event does not.
    assert_eq!(
        out.state.get(keys::HANDOVER).unwrap()["context"]["fields"]["email"],
        EMAIL
    );
    let ev = sink
        .events()
        .into_iter()
        .find(|e| matches!(e.kind, EventKind::Handover { .. }))
        .unwrap();
    let EventKind::Handover { context, .. } = ev.kind else {
        unreachable!()
    };
    assert_eq!(context["fields"]["email"], "[REDACTED_EMAIL]");
    assert_eq!(
        context["last_messages"][0]["content"],
        "human please, I am [REDACTED_EMAIL]"
    );
    assert!(!serde_json::to_string(&context).unwrap().contains(EMAIL));
}
