//! What a human receives: the handover record and its context.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use flowtrace_core::EventKind;

use super::policy::Trigger;
use super::reason::HandoverReason;

/// The most recent messages a context may carry.
pub const MAX_CONTEXT_MESSAGES: usize = 100;
/// The messages a context carries unless configured otherwise.
pub const DEFAULT_CONTEXT_MESSAGES: usize = 10;
/// The most state fields a context may copy.
pub const MAX_CONTEXT_FIELDS: usize = 32;
/// The most required skills a record keeps; further ones are dropped.
pub const MAX_REQUIRED_SKILLS: usize = 16;
/// The longest skill name kept, in bytes; longer ones are cut.
pub const MAX_SKILL_LEN: usize = 64;
/// The longest summary kept, in bytes; a longer one is cut.
pub const MAX_SUMMARY_LEN: usize = 4096;

/// What a human needs to pick the conversation up.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HandoverContext {
    /// What fired, in words (`confidence 0.420 below 0.600`, …).
    pub trigger: String,
    /// A summary of the conversation so far, when one was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The last messages of the conversation, oldest first, at most the
    /// configured number (itself at most [`MAX_CONTEXT_MESSAGES`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_messages: Vec<Value>,
    /// Any other state fields the handover was configured to copy.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub fields: Map<String, Value>,
}

/// A conversation handed over to a human: why, who can take it, and what
/// they need to know. Written into the state by the handover node and
/// emitted as a `handover` event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HandoverRecord {
    /// Why.
    pub reason: HandoverReason,
    /// Skills the human needs (at most [`MAX_REQUIRED_SKILLS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_skills: Vec<String>,
    /// What the human needs to know.
    pub context: HandoverContext,
}

impl HandoverRecord {
    /// A record for `trigger` with no skills and only the trigger's detail
    /// as context.
    pub fn new(trigger: &Trigger) -> Self {
        Self {
            reason: trigger.reason,
            required_skills: Vec::new(),
            context: HandoverContext {
                trigger: trigger.detail.clone(),
                ..HandoverContext::default()
            },
        }
    }

    /// Adds required skills, deduplicated, each cut to [`MAX_SKILL_LEN`],
    /// keeping at most [`MAX_REQUIRED_SKILLS`].
    #[must_use]
    pub fn with_skills<I, S>(mut self, skills: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        for skill in skills {
            if self.required_skills.len() >= MAX_REQUIRED_SKILLS {
                break;
            }
            let mut skill: String = skill.into();
            super::policy::truncate_at_char(&mut skill, MAX_SKILL_LEN);
            let skill = skill.trim().to_owned();
            if !skill.is_empty() && !self.required_skills.contains(&skill) {
                self.required_skills.push(skill);
            }
        }
        self
    }

    /// Sets the context, keeping the trigger's detail.
    #[must_use]
    pub fn with_context(mut self, context: HandoverContext) -> Self {
        let trigger = std::mem::take(&mut self.context.trigger);
        self.context = HandoverContext { trigger, ..context };
        self
    }

    /// The `handover` event for this record.
    pub fn to_event(&self) -> EventKind {
        EventKind::Handover {
            reason: self.reason.as_str().to_owned(),
            required_skills: self.required_skills.clone(),
            context: serde_json::to_value(&self.context).unwrap_or(Value::Null),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_serialize_and_become_events() {
        let t = Trigger::new(HandoverReason::UserRequest, "asked for a human");
        let mut fields = Map::new();
        fields.insert("order".into(), json!("A-17"));
        let rec = HandoverRecord::new(&t)
            .with_skills(["billing", "billing", " ", "refunds"])
            .with_context(HandoverContext {
                summary: Some("wants a refund".into()),
                last_messages: vec![json!({"role": "user", "content": "human please"})],
                fields,
                ..HandoverContext::default()
            });
        let v = serde_json::to_value(&rec).unwrap();
        assert_eq!(
            v,
            json!({
                "reason": "user_request",
                "required_skills": ["billing", "refunds"],
                "context": {
                    "trigger": "asked for a human",
                    "summary": "wants a refund",
                    "last_messages": [{"role": "user", "content": "human please"}],
                    "fields": {"order": "A-17"}
                }
            })
        );
        let back: HandoverRecord = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, rec);
        match rec.to_event() {
            EventKind::Handover {
                reason,
                required_skills,
                context,
            } => {
                assert_eq!(reason, "user_request");
                assert_eq!(required_skills, ["billing", "refunds"]);
                assert_eq!(context, v["context"]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn skills_are_bounded() {
        let t = Trigger::new(HandoverReason::AgentDecision, "x");
        let rec = HandoverRecord::new(&t)
            .with_skills((0..50).map(|i| format!("s{i}")))
            .with_skills(["y".repeat(100)]);
        assert_eq!(rec.required_skills.len(), MAX_REQUIRED_SKILLS);
        let rec = HandoverRecord::new(&t).with_skills(["y".repeat(100)]);
        assert_eq!(rec.required_skills[0].len(), MAX_SKILL_LEN);
    }
}
