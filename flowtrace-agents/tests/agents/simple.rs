//! SimpleAgent: templates, structured output and re-asking.

use std::sync::Arc;

use flowtrace_agents::agents::{
    AgentError, PromptTemplate, SimpleAgent, TemplateErrorKind, run_agent,
};
use flowtrace_core::model::{ResponseFormat, Role};
use flowtrace_core::testing::ScriptedModel;
use flowtrace_core::{Message, TokenUsage};
use serde_json::{Map, json};

use crate::support::in_node;

fn schema() -> serde_json::Value {
    json!({
        "type": "object",
        "properties": {
            "sentiment": {"enum": ["positive", "negative", "neutral"]},
            "score": {"type": "integer", "minimum": 0, "maximum": 10}
        },
        "required": ["sentiment", "score"],
        "additionalProperties": false
    })
}

fn classifier(model: Arc<ScriptedModel>) -> SimpleAgent {
    SimpleAgent::new(
        "classify",
        model,
        "gpt-4o-mini",
        PromptTemplate::new("classify", "Classify ({{ scale }}): {{ input }}").unwrap(),
    )
    .var("scale", "0-10")
    .output_schema(schema())
    .unwrap()
}

#[tokio::test]
async fn one_call_renders_the_template_in_place_of_the_last_user_message() {
    let model = Arc::new(ScriptedModel::new("openai").reply("Bonjour.", TokenUsage::new(12, 2)));
    let agent = SimpleAgent::new(
        "translate",
        model.clone(),
        "gpt-4o-mini",
        PromptTemplate::new(
            "t",
            "Translate to {{ lang }} ({{ conversation | length }} messages so far):\n{{ input }}",
        )
        .unwrap(),
    )
    .system("You translate.")
    .var("lang", "English");
    let conversation = vec![
        Message::assistant("Hi, what shall I translate?"),
        Message::user("Hello."),
    ];
    let mut vars = Map::new();
    vars.insert("lang".into(), json!("French"));
    let agent = Arc::new(agent);
    let a = agent.clone();
    let (out, summary) = in_node(Default::default(), move |ctx| {
        let a = a.clone();
        let conversation = conversation.clone();
        let vars = vars.clone();
        async move { a.run_with(&vars, conversation, &ctx).await }
    })
    .await
    .unwrap();
    assert_eq!(out.output.text, "Bonjour.");
    assert_eq!(out.output.turns, 1);
    assert_eq!(out.value, None);
    assert_eq!(summary.usage, TokenUsage::new(12, 2));
    let request = &model.requests()[0];
    assert_eq!(request.system.as_deref(), Some("You translate."));
    assert_eq!(request.messages.len(), 2);
    assert_eq!(request.messages[0].role, Role::Assistant);
    // The call's variable wins over the agent's.
    assert_eq!(
        request.messages[1].content,
        "Translate to French (2 messages so far):\nHello."
    );
    assert_eq!(request.response_format, None);
}

#[tokio::test]
async fn a_mismatching_reply_is_asked_again_with_the_validation_error() {
    let model = Arc::new(
        ScriptedModel::new("openai")
            .reply(
                r#"{"sentiment": "great", "score": 9}"#,
                TokenUsage::new(40, 8),
            )
            .reply(
                "```json\n{\"sentiment\": \"positive\", \"score\": 9}\n```",
                TokenUsage::new(90, 8),
            ),
    );
    let agent = Arc::new(classifier(model.clone()));
    let a = agent.clone();
    let (out, summary) = in_node(Default::default(), move |ctx| {
        let a = a.clone();
        async move {
            a.run_with(&Map::new(), vec![Message::user("I love it")], &ctx)
                .await
        }
    })
    .await
    .unwrap();
    assert_eq!(
        out.value,
        Some(json!({"sentiment": "positive", "score": 9}))
    );
    assert_eq!(out.output.turns, 2);
    assert_eq!(summary.usage, TokenUsage::new(130, 16));

    let requests = model.requests();
    assert!(matches!(
        &requests[0].response_format,
        Some(ResponseFormat::JsonSchema { schema, .. }) if schema == &self::schema()
    ));
    assert_eq!(
        requests[0].messages[0].content,
        "Classify (0-10): I love it"
    );
    // The re-ask shows the model its reply and what is wrong with it.
    let second = &requests[1].messages;
    assert_eq!(second.len(), 3);
    assert_eq!(second[1].content, r#"{"sentiment": "great", "score": 9}"#);
    assert_eq!(second[2].role, Role::User);
    assert!(
        second[2].content.contains("/sentiment: "),
        "{}",
        second[2].content
    );
    assert!(
        second[2].content.contains("\"great\""),
        "{}",
        second[2].content
    );
}

#[tokio::test]
async fn replies_that_never_match_end_in_a_typed_error() {
    let model = Arc::new(
        ScriptedModel::new("openai")
            .reply("not json", TokenUsage::new(10, 2))
            .reply(r#"{"sentiment": "positive"}"#, TokenUsage::new(10, 2))
            .reply(
                r#"{"sentiment": "positive", "score": 11}"#,
                TokenUsage::new(10, 2),
            )
            .reply(
                r#"{"sentiment": "positive", "score": 1}"#,
                TokenUsage::new(10, 2),
            ),
    );
    let agent = classifier(model.clone()).max_reasks(2);
    let err = run_agent(
        Arc::new(agent),
        vec![Message::user("meh")],
        Default::default(),
    )
    .await
    .unwrap_err();
    match err.agent_error() {
        Some(AgentError::InvalidStructuredOutput {
            agent,
            attempts,
            problems,
        }) => {
            assert_eq!(agent, "classify");
            assert_eq!(*attempts, 3);
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(problems[0].starts_with("/score: "), "{problems:?}");
        }
        other => panic!("expected InvalidStructuredOutput, got {other:?}"),
    }
    // Three calls: the first and two re-asks; the fourth reply is never asked for.
    assert_eq!(model.calls(), 3);
    let third = &model.requests()[2].messages;
    assert!(
        third[4].content.contains("required property"),
        "{}",
        third[4].content
    );
}

#[tokio::test]
async fn template_and_schema_errors_are_typed() {
    let model = Arc::new(ScriptedModel::new("openai").reply("x", TokenUsage::new(1, 1)));
    let agent = SimpleAgent::new(
        "s",
        model.clone(),
        "gpt-4o-mini",
        PromptTemplate::new("t", "{{ topic }}").unwrap(),
    );
    let err = run_agent(
        Arc::new(agent),
        vec![Message::user("x")],
        Default::default(),
    )
    .await
    .unwrap_err();
    match err.agent_error() {
        Some(AgentError::Template {
            template, source, ..
        }) => {
            assert_eq!(template, "t");
            assert_eq!(source.kind, TemplateErrorKind::Undefined);
        }
        other => panic!("expected a template error, got {other:?}"),
    }
    assert_eq!(model.calls(), 0);

    let bad = SimpleAgent::new("s", model, "m", PromptTemplate::new("t", "x").unwrap())
        .output_schema(json!({"type": "no-such-type"}));
    assert!(matches!(bad, Err(AgentError::InvalidSchema { .. })));
}
