//! [`SimpleAgent`]: one model call from a prompt template, with optional
//! structured output checked against a JSON Schema.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use flowtrace_core::model::{ResponseFormat, Role};
use flowtrace_core::{Agent, AgentOutput, ChatModel, ChatRequest, Message, NodeContext, NodeError};
use serde_json::{Map, Value};

use super::{AgentError, PromptTemplate};

/// How many times a [`SimpleAgent`] asks again after a reply that does not
/// match its output schema, unless configured otherwise.
pub const DEFAULT_MAX_REASKS: u32 = 2;

/// The most schema problems reported for one reply (to the model when
/// re-asking, and in [`AgentError::InvalidStructuredOutput`]).
pub const MAX_OUTPUT_PROBLEMS: usize = 8;

/// What a [`SimpleAgent`] produced: the agent output and, with an output
/// schema, the reply parsed as JSON (valid against the schema).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct SimpleOutput {
    /// The answer (its text is the model's last reply).
    pub output: AgentOutput,
    /// The reply as JSON, when the agent has an output schema.
    pub value: Option<Value>,
}

#[derive(Clone)]
struct OutputSchema {
    schema: Value,
    validator: Arc<jsonschema::Validator>,
}

/// One model call: a [`PromptTemplate`] rendered with the conversation and
/// variables becomes the user message; optionally the reply must be JSON
/// matching a JSON Schema.
///
/// The template sees `input` (the text of the conversation's last user
/// message, or `""`), `conversation` (every message: `role`, `content`, …),
/// the agent's [`var`](Self::var)s and the call's own variables
/// ([`run_with`](Self::run_with)), later ones overriding earlier ones. The
/// rendered prompt replaces the conversation's last message when that is a
/// user message (it is usually built from it through `{{ input }}`), and is
/// appended otherwise.
///
/// With an [output schema](Self::output_schema) the request asks for JSON
/// (`response_format`), the reply is parsed (a Markdown code fence around it
/// is tolerated) and validated; on a mismatch the agent shows the model its
/// reply's problems and asks again, at most [`max_reasks`](Self::max_reasks)
/// times, then fails with [`AgentError::InvalidStructuredOutput`].
///
/// ```
/// use std::sync::Arc;
/// use flowtrace_agents::agents::{PromptTemplate, SimpleAgent, run_agent};
/// use flowtrace_core::testing::ScriptedModel;
/// use flowtrace_core::{Message, RunConfig, TokenUsage};
/// use serde_json::json;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let model = Arc::new(
///     ScriptedModel::new("openai")
///         .reply(r#"{"sentiment": "great"}"#, TokenUsage::new(30, 5)) // not in the enum
///         .reply(r#"{"sentiment": "positive"}"#, TokenUsage::new(60, 5)),
/// );
/// let agent = SimpleAgent::new(
///     "classify",
///     model.clone(),
///     "gpt-4o-mini",
///     PromptTemplate::new("classify", "Classify the sentiment of: {{ input }}").unwrap(),
/// )
/// .output_schema(json!({
///     "type": "object",
///     "properties": {"sentiment": {"enum": ["positive", "negative", "neutral"]}},
///     "required": ["sentiment"]
/// }))
/// .unwrap();
/// let run = run_agent(Arc::new(agent), vec![Message::user("I love it")], RunConfig::new()).await.unwrap();
/// assert_eq!(run.output.text, r#"{"sentiment": "positive"}"#);
/// assert_eq!(run.output.turns, 2); // asked again once
/// assert_eq!(model.requests()[0].messages[0].content, "Classify the sentiment of: I love it");
/// # });
/// ```
pub struct SimpleAgent {
    name: String,
    model: Arc<dyn ChatModel>,
    model_name: String,
    system: Option<String>,
    template: PromptTemplate,
    vars: Map<String, Value>,
    output: Option<OutputSchema>,
    max_reasks: u32,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
}

impl fmt::Debug for SimpleAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimpleAgent")
            .field("name", &self.name)
            .field("model", &self.model_name)
            .field("template", &self.template)
            .field("output_schema", &self.output.as_ref().map(|o| &o.schema))
            .field("max_reasks", &self.max_reasks)
            .finish_non_exhaustive()
    }
}

impl SimpleAgent {
    /// An agent named `name` calling `model_name` on `model` with the prompt
    /// `template`; free-text output, [`DEFAULT_MAX_REASKS`] re-asks once an
    /// output schema is set.
    pub fn new(
        name: impl Into<String>,
        model: Arc<dyn ChatModel>,
        model_name: impl Into<String>,
        template: PromptTemplate,
    ) -> Self {
        Self {
            name: name.into(),
            model,
            model_name: model_name.into(),
            system: None,
            template,
            vars: Map::new(),
            output: None,
            max_reasks: DEFAULT_MAX_REASKS,
            max_tokens: None,
            temperature: None,
        }
    }

    /// Sets the system prompt.
    #[must_use]
    pub fn system(mut self, system: impl Into<String>) -> Self {
        self.system = Some(system.into());
        self
    }

    /// Sets a template variable for every call.
    #[must_use]
    pub fn var(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    /// Requires the reply to be JSON matching `schema`.
    ///
    /// # Errors
    /// [`AgentError::InvalidSchema`] when `schema` is not a valid JSON
    /// Schema.
    pub fn output_schema(mut self, schema: Value) -> Result<Self, AgentError> {
        let validator =
            jsonschema::validator_for(&schema).map_err(|e| AgentError::InvalidSchema {
                agent: self.name.clone(),
                message: e.to_string(),
            })?;
        self.output = Some(OutputSchema {
            schema,
            validator: Arc::new(validator),
        });
        Ok(self)
    }

    /// Sets how many times a reply that does not match the output schema is
    /// followed by another request.
    #[must_use]
    pub fn max_reasks(mut self, reasks: u32) -> Self {
        self.max_reasks = reasks;
        self
    }

    /// Sets `max_tokens` of every model call.
    #[must_use]
    pub fn max_tokens(mut self, tokens: u32) -> Self {
        self.max_tokens = Some(tokens);
        self
    }

    /// Sets the sampling temperature.
    #[must_use]
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// The re-ask limit.
    pub fn get_max_reasks(&self) -> u32 {
        self.max_reasks
    }

    /// The output schema, if any.
    pub fn get_output_schema(&self) -> Option<&Value> {
        self.output.as_ref().map(|o| &o.schema)
    }

    /// The template's variables for `conversation` and the call's `vars`.
    fn template_vars(
        &self,
        vars: &Map<String, Value>,
        conversation: &[Message],
    ) -> Result<Value, NodeError> {
        let input = conversation
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let mut all = Map::new();
        all.insert("input".into(), Value::String(input));
        all.insert("conversation".into(), serde_json::to_value(conversation)?);
        all.extend(self.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        all.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(Value::Object(all))
    }

    /// Runs the agent with extra template variables `vars` (overriding the
    /// agent's own and `input` / `conversation`).
    ///
    /// # Errors
    /// [`AgentError::Template`], [`AgentError::InvalidStructuredOutput`], or
    /// the model call's error, in a [`NodeError`].
    ///
    /// # Cancel safety
    /// Dropping the future abandons the current model call.
    pub async fn run_with(
        &self,
        vars: &Map<String, Value>,
        conversation: Vec<Message>,
        ctx: &NodeContext,
    ) -> Result<SimpleOutput, NodeError> {
        let prompt = self
            .template
            .render(&self.template_vars(vars, &conversation)?)
            .map_err(|source| AgentError::Template {
                agent: self.name.clone(),
                template: self.template.name().to_string(),
                source,
            })?;
        let mut messages = conversation;
        if messages.last().is_some_and(|m| m.role == Role::User) {
            messages.pop();
        }
        messages.push(Message::user(prompt));
        let mut request = ChatRequest::new(self.model_name.clone());
        request.system.clone_from(&self.system);
        request.max_tokens = self.max_tokens;
        request.temperature = self.temperature;
        request.messages = messages.into();
        if let Some(output) = &self.output {
            request.response_format = Some(ResponseFormat::JsonSchema {
                name: "output".to_string(),
                schema: output.schema.clone(),
                strict: false,
            });
        }
        let attempts = self.max_reasks.saturating_add(1);
        let mut problems = Vec::new();
        for attempt in 1..=attempts {
            let response = ctx.chat(self.model.as_ref(), request.clone()).await?;
            let reply = response.to_message();
            let Some(output) = &self.output else {
                return Ok(SimpleOutput {
                    output: AgentOutput {
                        messages: vec![reply],
                        text: response.text,
                        turns: attempt,
                    },
                    value: None,
                });
            };
            match check(output, &response.text) {
                Ok(value) => {
                    return Ok(SimpleOutput {
                        output: AgentOutput {
                            messages: vec![reply],
                            text: response.text,
                            turns: attempt,
                        },
                        value: Some(value),
                    });
                }
                Err(found) => problems = found,
            }
            request.messages.push(reply);
            request.messages.push(Message::user(reask(&problems)));
        }
        Err(AgentError::InvalidStructuredOutput {
            agent: self.name.clone(),
            attempts,
            problems,
        }
        .into())
    }
}

/// The reply parsed and validated, or what is wrong with it.
fn check(output: &OutputSchema, text: &str) -> Result<Value, Vec<String>> {
    let value: Value = serde_json::from_str(strip_fence(text))
        .map_err(|e| vec![format!("the reply is not valid JSON: {e}")])?;
    let problems: Vec<String> = output
        .validator
        .iter_errors(&value)
        .take(MAX_OUTPUT_PROBLEMS)
        .map(|e| {
            let at = e.instance_path().to_string();
            let at = if at.is_empty() { "/".to_string() } else { at };
            format!("{at}: {e}")
        })
        .collect();
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(problems)
    }
}

/// The follow-up message after a reply that did not match the schema.
fn reask(problems: &[String]) -> String {
    let mut text = String::from("Your reply does not match the required JSON Schema. Problems:\n");
    for p in problems {
        text.push_str("- ");
        text.push_str(p);
        text.push('\n');
    }
    text.push_str("Reply again with only the corrected JSON, nothing else.");
    text
}

/// `text` without a surrounding Markdown code fence (```` ```json … ``` ````).
pub(crate) fn strip_fence(text: &str) -> &str {
    let t = text.trim();
    let Some(rest) = t.strip_prefix("```") else {
        return t;
    };
    let Some(body) = rest.strip_suffix("```") else {
        return t;
    };
    // Drop the info string (`json`) on the opening line.
    match body.find('\n') {
        Some(i) => body.get(i + 1..).unwrap_or("").trim(),
        None => body.trim(),
    }
}

#[async_trait]
impl Agent for SimpleAgent {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(
        &self,
        conversation: Vec<Message>,
        ctx: &NodeContext,
    ) -> Result<AgentOutput, NodeError> {
        self.run_with(&Map::new(), conversation, ctx)
            .await
            .map(|o| o.output)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn fences_are_stripped() {
        assert_eq!(strip_fence("```json\n{\"a\": 1}\n```"), "{\"a\": 1}");
        assert_eq!(strip_fence("```\n[1]\n```"), "[1]");
        assert_eq!(strip_fence("  {\"a\": 1} "), "{\"a\": 1}");
        assert_eq!(strip_fence("```{}```"), "{}");
        assert_eq!(strip_fence("```unclosed"), "```unclosed");
    }

    #[test]
    fn problems_name_the_field() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"age": {"type": "integer"}},
            "required": ["age", "name"]
        });
        let output = OutputSchema {
            validator: Arc::new(jsonschema::validator_for(&schema).unwrap()),
            schema,
        };
        let problems = check(&output, r#"{"age": "x"}"#).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems.iter().any(|p| p.starts_with("/age: ")),
            "{problems:?}"
        );
        assert!(problems.iter().any(|p| p.contains("name")), "{problems:?}");
        let bad = check(&output, "not json").unwrap_err();
        assert!(bad[0].starts_with("the reply is not valid JSON"), "{bad:?}");
        assert_eq!(
            check(&output, "```json\n{\"age\": 3, \"name\": \"a\"}\n```").unwrap(),
            serde_json::json!({"age": 3, "name": "a"})
        );
    }
}
