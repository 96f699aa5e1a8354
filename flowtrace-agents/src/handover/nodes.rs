//! The `handover` and `finish` sink nodes and the router between them, for
//! conversational [`JsonState`] graphs.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

use flowtrace_core::{END, GraphBuilder, JsonState, Node, NodeContext, NodeOutput, NodeResult};

use super::error::HandoverError;
use super::policy::{HandoverPolicy, Signals, Trigger, truncate_at_char};
use super::reason::{Confidence, HandoverReason};
use super::record::{
    DEFAULT_CONTEXT_MESSAGES, HandoverContext, HandoverRecord, MAX_CONTEXT_FIELDS,
    MAX_CONTEXT_MESSAGES, MAX_SUMMARY_LEN,
};

/// The state fields the policy, the router and the sink nodes read and
/// write.
pub mod keys {
    /// Read: the model's confidence (a decimal in `[0, 1]` or a
    /// percentage, as a number or a string).
    pub const CONFIDENCE: &str = "confidence";
    /// Read: the user's latest message (a string). When absent, the last
    /// `{"role": "user", "content": ...}` entry of [`MESSAGES`] is used.
    pub const USER_MESSAGE: &str = "user_message";
    /// Read: the conversation, an array of messages (any JSON; the usual
    /// shape is `{"role", "content"}`).
    pub const MESSAGES: &str = "messages";
    /// Read: how many errors happened in a row (a non-negative integer).
    pub const CONSECUTIVE_ERRORS: &str = "consecutive_errors";
    /// Read: the agent's own decision to hand over: `true`, a string
    /// saying why, or an object with `reason`, `summary` and
    /// `required_skills`. `false` or `null` mean no.
    pub const AGENT_HANDOVER: &str = "agent_handover";
    /// Read: skills the human needs (an array of strings).
    pub const REQUIRED_SKILLS: &str = "required_skills";
    /// Read: a summary of the conversation (a string).
    pub const SUMMARY: &str = "summary";
    /// Read: the agent's final answer; its presence routes to `finish`.
    pub const ANSWER: &str = "answer";
    /// Written by the handover node: the [`HandoverRecord`](super::HandoverRecord).
    pub const HANDOVER: &str = "handover";
    /// Written by the sink nodes: `finished` or `handover`.
    pub const STATUS: &str = "status";
    /// Written by the finish node: the final answer.
    pub const FINAL_ANSWER: &str = "final_answer";
}

/// The id of the handover sink node added by [`add_sinks`].
pub const HANDOVER_NODE: &str = "handover";
/// The id of the finish sink node added by [`add_sinks`].
pub const FINISH_NODE: &str = "finish";

/// The router's branch labels.
pub mod routes {
    /// A trigger fired: go to the handover node.
    pub const HANDOVER: &str = "handover";
    /// The state holds an answer: go to the finish node.
    pub const FINISH: &str = "finish";
    /// Neither: continue the conversation.
    pub const CONTINUE: &str = "continue";
}

/// Reads the policy's [`Signals`] from a state (see [`keys`]).
pub fn signals_from_state(state: &JsonState) -> Result<Signals<'_>, HandoverError> {
    let mut signals = Signals::new();
    if let Some(v) = state.get(keys::CONFIDENCE).filter(|v| !v.is_null()) {
        signals = signals.confidence(Confidence::from_json(v)?);
    }
    match state.get(keys::USER_MESSAGE) {
        Some(Value::String(s)) => signals = signals.user_message(s),
        Some(Value::Null) | None => {
            if let Some(text) = last_user_message(state) {
                signals = signals.user_message(text);
            }
        }
        Some(_) => {
            return Err(HandoverError::InvalidField {
                field: keys::USER_MESSAGE,
                message: "expected a string".into(),
            });
        }
    }
    match state.get(keys::CONSECUTIVE_ERRORS) {
        None | Some(Value::Null) => {}
        Some(v) => {
            let n = v.as_u64().ok_or_else(|| HandoverError::InvalidField {
                field: keys::CONSECUTIVE_ERRORS,
                message: "expected a non-negative integer".into(),
            })?;
            signals = signals.consecutive_errors(u32::try_from(n).unwrap_or(u32::MAX));
        }
    }
    match state.get(keys::AGENT_HANDOVER) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => signals = signals.agent_decision("the agent asked for a human"),
        Some(Value::String(why)) => signals = signals.agent_decision(why),
        Some(Value::Object(o)) => {
            let why = o
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("the agent asked for a human");
            signals = signals.agent_decision(why);
        }
        Some(_) => {
            return Err(HandoverError::InvalidField {
                field: keys::AGENT_HANDOVER,
                message: "expected a boolean, a string or an object".into(),
            });
        }
    }
    Ok(signals)
}

fn last_user_message(state: &JsonState) -> Option<&str> {
    state
        .get(keys::MESSAGES)?
        .as_array()?
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?
        .get("content")?
        .as_str()
}

/// The policy's decision on a state, failing safe: a field the policy
/// cannot read hands over, with the reason that field stands for
/// (an unreadable confidence is low confidence; an unreadable error count
/// is consecutive errors; anything else is the agent's decision) and the
/// problem as the detail.
pub fn evaluate_state(policy: &HandoverPolicy, state: &JsonState) -> Option<Trigger> {
    match signals_from_state(state) {
        Ok(signals) => policy.evaluate(&signals),
        Err(e) => {
            let reason = match &e {
                HandoverError::InvalidConfidence { .. } => HandoverReason::LowConfidence,
                HandoverError::InvalidField {
                    field: keys::CONSECUTIVE_ERRORS,
                    ..
                } => HandoverReason::ConsecutiveErrors,
                _ => HandoverReason::AgentDecision,
            };
            Some(Trigger::new(reason, e.to_string()))
        }
    }
}

/// A router for [`GraphBuilder::add_conditional_edges`]: [`routes::HANDOVER`]
/// when the policy fires on the state (see [`evaluate_state`]),
/// [`routes::FINISH`] when the state holds a non-null [`keys::ANSWER`], and
/// [`routes::CONTINUE`] otherwise.
pub fn router(policy: Arc<HandoverPolicy>) -> impl Fn(&JsonState) -> &'static str + Send + Sync {
    move |state: &JsonState| {
        if evaluate_state(&policy, state).is_some() {
            routes::HANDOVER
        } else if state.get(keys::ANSWER).is_some_and(|v| !v.is_null()) {
            routes::FINISH
        } else {
            routes::CONTINUE
        }
    }
}

/// Adds the [`router`] after `from`: to [`HANDOVER_NODE`], [`FINISH_NODE`]
/// or `continue_to`. Add the sink nodes with [`add_sinks`].
///
/// ```
/// use std::sync::Arc;
/// use flowtrace_agents::handover::{self, HandoverNode, HandoverPolicy};
/// use flowtrace_core::{GraphBuilder, JsonState, NodeOutput, node_fn};
///
/// let policy = Arc::new(HandoverPolicy::builder().max_consecutive_errors(2).build().unwrap());
/// let builder = GraphBuilder::<JsonState>::new("support")
///     .add_node("agent", node_fn(|_s: Arc<JsonState>, _ctx| async move { Ok(NodeOutput::none()) }))
///     .set_entry("agent");
/// let builder = handover::add_router(builder, "agent", policy.clone(), "agent");
/// let graph = handover::add_sinks(builder, HandoverNode::new(policy)).compile().unwrap();
/// # let _ = graph;
/// ```
pub fn add_router(
    builder: GraphBuilder<JsonState>,
    from: &str,
    policy: Arc<HandoverPolicy>,
    continue_to: &str,
) -> GraphBuilder<JsonState> {
    builder.add_conditional_edges(
        from,
        router(policy),
        [
            (routes::HANDOVER, HANDOVER_NODE.to_owned()),
            (routes::FINISH, FINISH_NODE.to_owned()),
            (routes::CONTINUE, continue_to.to_owned()),
        ],
    )
}

/// Adds the sink nodes [`HANDOVER_NODE`] (`handover`) and [`FINISH_NODE`]
/// ([`FinishNode`]), each ending the run.
pub fn add_sinks(
    builder: GraphBuilder<JsonState>,
    handover: HandoverNode,
) -> GraphBuilder<JsonState> {
    builder
        .add_node(HANDOVER_NODE, handover)
        .add_node(FINISH_NODE, FinishNode)
        .add_edge(HANDOVER_NODE, END)
        .add_edge(FINISH_NODE, END)
}

/// The handover sink: builds a [`HandoverRecord`] from the state, writes it
/// to [`keys::HANDOVER`] (and `handover` to [`keys::STATUS`]), and emits
/// the `handover` event. Route to [`END`] after it.
///
/// The reason is the policy's trigger on the state ([`evaluate_state`]);
/// a graph that routes here with no trigger firing is taken as the agent's
/// decision. Required skills are the node's defaults, then
/// [`keys::REQUIRED_SKILLS`], then those of an [`keys::AGENT_HANDOVER`]
/// object. The context carries [`keys::SUMMARY`] (or the agent object's
/// `summary`), the last messages of [`keys::MESSAGES`] and the configured
/// fields.
#[derive(Clone, Debug)]
pub struct HandoverNode {
    policy: Arc<HandoverPolicy>,
    context_messages: usize,
    fields: Vec<String>,
    skills: Vec<String>,
}

impl HandoverNode {
    /// A handover node deciding the reason with `policy`, keeping the last
    /// [`DEFAULT_CONTEXT_MESSAGES`] messages.
    pub fn new(policy: Arc<HandoverPolicy>) -> Self {
        Self {
            policy,
            context_messages: DEFAULT_CONTEXT_MESSAGES,
            fields: Vec::new(),
            skills: Vec::new(),
        }
    }

    /// Keeps the last `n` messages in the context (at most
    /// [`MAX_CONTEXT_MESSAGES`]; more is read as that).
    #[must_use]
    pub fn context_messages(mut self, n: usize) -> Self {
        self.context_messages = n.min(MAX_CONTEXT_MESSAGES);
        self
    }

    /// Copies these state fields into the context (the first
    /// [`MAX_CONTEXT_FIELDS`]; fields absent from the state are left out).
    #[must_use]
    pub fn context_fields<I, S>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.fields = fields
            .into_iter()
            .take(MAX_CONTEXT_FIELDS)
            .map(Into::into)
            .collect();
        self
    }

    /// Skills every handover from this node requires.
    #[must_use]
    pub fn required_skills<I, S>(mut self, skills: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.skills = skills.into_iter().map(Into::into).collect();
        self
    }

    /// The record this node writes for `state`.
    pub fn record(&self, state: &JsonState) -> HandoverRecord {
        let trigger = evaluate_state(&self.policy, state).unwrap_or_else(|| {
            Trigger::new(
                HandoverReason::AgentDecision,
                "the graph routed to handover",
            )
        });
        let agent = state.get(keys::AGENT_HANDOVER).and_then(Value::as_object);
        let skills = self
            .skills
            .iter()
            .cloned()
            .chain(string_list(state.get(keys::REQUIRED_SKILLS)))
            .chain(string_list(agent.and_then(|o| o.get("required_skills"))));
        let mut summary = state
            .get(keys::SUMMARY)
            .and_then(Value::as_str)
            .or_else(|| agent.and_then(|o| o.get("summary")).and_then(Value::as_str))
            .map(str::to_owned);
        if let Some(s) = summary.as_mut() {
            truncate_at_char(s, MAX_SUMMARY_LEN);
        }
        let last_messages = state
            .get(keys::MESSAGES)
            .and_then(Value::as_array)
            .map(|all| all[all.len().saturating_sub(self.context_messages)..].to_vec())
            .unwrap_or_default();
        let fields: Map<String, Value> = self
            .fields
            .iter()
            .filter_map(|k| state.get(k).map(|v| (k.clone(), v.clone())))
            .collect();
        HandoverRecord::new(&trigger)
            .with_skills(skills)
            .with_context(HandoverContext {
                summary,
                last_messages,
                fields,
                ..HandoverContext::default()
            })
    }
}

/// The strings of a JSON array; anything else yields none.
fn string_list(v: Option<&Value>) -> impl Iterator<Item = String> + '_ {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
}

#[async_trait]
impl Node<JsonState> for HandoverNode {
    async fn run(&self, state: Arc<JsonState>, ctx: NodeContext) -> NodeResult<Map<String, Value>> {
        let record = self.record(&state);
        ctx.emit(record.to_event());
        let mut update = Map::new();
        update.insert(keys::HANDOVER.into(), serde_json::to_value(&record)?);
        update.insert(keys::STATUS.into(), Value::String("handover".into()));
        Ok(NodeOutput::update(update))
    }
}

/// The finish sink: copies [`keys::ANSWER`] (or `null`) to
/// [`keys::FINAL_ANSWER`] and writes `finished` to [`keys::STATUS`]. Route
/// to [`END`] after it.
#[derive(Clone, Copy, Debug, Default)]
pub struct FinishNode;

#[async_trait]
impl Node<JsonState> for FinishNode {
    async fn run(
        &self,
        state: Arc<JsonState>,
        _ctx: NodeContext,
    ) -> NodeResult<Map<String, Value>> {
        let mut update = Map::new();
        update.insert(
            keys::FINAL_ANSWER.into(),
            state.get(keys::ANSWER).cloned().unwrap_or(Value::Null),
        );
        update.insert(keys::STATUS.into(), Value::String("finished".into()));
        Ok(NodeOutput::update(update))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state(v: Value) -> JsonState {
        let mut s = JsonState::new();
        if let Value::Object(m) = v {
            s.values = m;
        }
        s
    }

    fn policy() -> Arc<HandoverPolicy> {
        Arc::new(
            HandoverPolicy::builder()
                .confidence_below("0.5".parse().unwrap())
                .user_phrases(["human"])
                .max_consecutive_errors(2)
                .build()
                .unwrap(),
        )
    }

    #[test]
    fn router_reads_the_state() {
        let r = router(policy());
        assert_eq!(r(&state(json!({}))), routes::CONTINUE);
        assert_eq!(r(&state(json!({"answer": "42"}))), routes::FINISH);
        assert_eq!(r(&state(json!({"answer": null}))), routes::CONTINUE);
        assert_eq!(
            r(&state(json!({"confidence": 0.4, "answer": "x"}))),
            routes::HANDOVER
        );
        assert_eq!(r(&state(json!({"confidence": "0.5"}))), routes::CONTINUE);
        assert_eq!(
            r(&state(json!({"consecutive_errors": 2}))),
            routes::HANDOVER
        );
        assert_eq!(
            r(&state(json!({"agent_handover": false}))),
            routes::CONTINUE
        );
        assert_eq!(
            r(&state(json!({"agent_handover": "VIP"}))),
            routes::HANDOVER
        );
        assert_eq!(
            r(&state(json!({"messages": [
                {"role": "user", "content": "a human please"},
                {"role": "assistant", "content": "sure"}
            ]}))),
            routes::HANDOVER
        );
        // The explicit field wins over the messages.
        assert_eq!(
            r(&state(
                json!({"user_message": "thanks", "messages": [{"role": "user", "content": "human"}]})
            )),
            routes::CONTINUE
        );
    }

    #[test]
    fn unreadable_fields_fail_safe() {
        let p = policy();
        let t = evaluate_state(&p, &state(json!({"confidence": "very"}))).unwrap();
        assert_eq!(t.reason, HandoverReason::LowConfidence);
        let t = evaluate_state(&p, &state(json!({"consecutive_errors": -1}))).unwrap();
        assert_eq!(t.reason, HandoverReason::ConsecutiveErrors);
        let t = evaluate_state(&p, &state(json!({"user_message": 3}))).unwrap();
        assert_eq!(t.reason, HandoverReason::AgentDecision);
        assert!(t.detail.contains("user_message"));
    }

    #[test]
    fn record_collects_context() {
        let node = HandoverNode::new(policy())
            .context_messages(2)
            .context_fields(["order_id", "missing"])
            .required_skills(["support"]);
        let s = state(json!({
            "messages": [
                {"role": "user", "content": "one"},
                {"role": "assistant", "content": "two"},
                {"role": "user", "content": "three"}
            ],
            "order_id": "A-9",
            "required_skills": ["billing", "support"],
            "agent_handover": {"reason": "refund above limit", "summary": "wants 900 EUR back", "required_skills": ["refunds"]}
        }));
        let rec = node.record(&s);
        assert_eq!(rec.reason, HandoverReason::AgentDecision);
        assert_eq!(rec.context.trigger, "refund above limit");
        assert_eq!(rec.required_skills, ["support", "billing", "refunds"]);
        assert_eq!(rec.context.summary.as_deref(), Some("wants 900 EUR back"));
        assert_eq!(rec.context.last_messages.len(), 2);
        assert_eq!(rec.context.last_messages[1]["content"], "three");
        assert_eq!(rec.context.fields.len(), 1);
        assert_eq!(rec.context.fields["order_id"], "A-9");
        let plain = HandoverNode::new(policy()).record(&JsonState::new());
        assert_eq!(plain.context.trigger, "the graph routed to handover");
        assert_eq!(
            HandoverNode::new(policy())
                .context_messages(1000)
                .context_messages,
            MAX_CONTEXT_MESSAGES
        );
    }
}
