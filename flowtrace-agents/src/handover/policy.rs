//! When to hand a conversation over: the configurable triggers.

use regex::{Regex, RegexBuilder};

use super::error::HandoverError;
use super::reason::{Confidence, HandoverReason};

/// The most user phrases a policy may hold.
pub const MAX_USER_PHRASES: usize = 64;
/// The longest user phrase, in bytes.
pub const MAX_PHRASE_LEN: usize = 128;
/// How much of a user message is searched for the phrases, in bytes: the
/// first this many (cut at a character boundary); the rest is not searched.
/// Asking for a human is short and comes early, and this keeps the check
/// cheap on pasted documents.
pub const MAX_SCANNED_MESSAGE_BYTES: usize = 4096;
/// The longest trigger detail kept in a [`Trigger`], in bytes.
pub const MAX_DETAIL_LEN: usize = 256;

/// Phrases that ask for a human in English, for
/// [`HandoverPolicyBuilder::user_phrases`].
pub const DEFAULT_USER_PHRASES: &[&str] = &[
    "human",
    "real person",
    "live agent",
    "human agent",
    "speak to someone",
    "talk to someone",
    "representative",
    "operator",
];

/// What the policy looks at to decide. Build one per turn.
///
/// ```
/// use flowtrace_agents::handover::{Confidence, Signals};
/// let signals = Signals::new()
///     .confidence(Confidence::from_per_mille(420).unwrap())
///     .user_message("can I talk to a human please")
///     .consecutive_errors(0);
/// # let _ = signals;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Signals<'a> {
    confidence: Option<Confidence>,
    user_message: Option<&'a str>,
    consecutive_errors: u32,
    agent_decision: Option<&'a str>,
}

impl<'a> Signals<'a> {
    /// No signals: nothing triggers.
    pub fn new() -> Self {
        Self::default()
    }

    /// The model's confidence in its latest answer.
    pub fn confidence(mut self, confidence: Confidence) -> Self {
        self.confidence = Some(confidence);
        self
    }

    /// The user's latest message.
    pub fn user_message(mut self, text: &'a str) -> Self {
        self.user_message = Some(text);
        self
    }

    /// How many errors happened in a row, up to now.
    pub fn consecutive_errors(mut self, n: u32) -> Self {
        self.consecutive_errors = n;
        self
    }

    /// The agent decided to hand over, saying why.
    pub fn agent_decision(mut self, why: &'a str) -> Self {
        self.agent_decision = Some(why);
        self
    }
}

/// A fired trigger: the reason and a short human-readable detail.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Trigger {
    /// Why.
    pub reason: HandoverReason,
    /// What exactly fired (the phrase, the confidence, the error count, the
    /// agent's words), at most [`MAX_DETAIL_LEN`] bytes.
    pub detail: String,
}

impl Trigger {
    /// A trigger for `reason` with `detail` (cut to [`MAX_DETAIL_LEN`]).
    pub fn new(reason: HandoverReason, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        truncate_at_char(&mut detail, MAX_DETAIL_LEN);
        Self { reason, detail }
    }
}

/// Cuts `s` to at most `max` bytes, at a character boundary.
pub(crate) fn truncate_at_char(s: &mut String, max: usize) {
    if s.len() > max {
        let cut = floor_char_boundary(s, max);
        s.truncate(cut);
    }
}

/// The largest char boundary `<= max` in `s`.
pub(crate) fn floor_char_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    let mut i = max;
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// When to hand a conversation over to a human. Build with
/// [`HandoverPolicy::builder`].
///
/// Triggers are checked in this order and the first that fires wins:
/// 1. the user asked for a human (a configured phrase, matched
///    case-insensitively on word boundaries in the first
///    [`MAX_SCANNED_MESSAGE_BYTES`] of the message);
/// 2. the agent decided to hand over (when allowed);
/// 3. at least N consecutive errors;
/// 4. the model's confidence is strictly below the threshold.
///
/// ```
/// use flowtrace_agents::handover::{Confidence, HandoverPolicy, HandoverReason, Signals};
/// let policy = HandoverPolicy::builder()
///     .confidence_below("0.6".parse().unwrap())
///     .user_phrases(["human", "real person"])
///     .max_consecutive_errors(3)
///     .build()
///     .unwrap();
/// let fired = policy
///     .evaluate(&Signals::new().user_message("Let me talk to a HUMAN."))
///     .unwrap();
/// assert_eq!(fired.reason, HandoverReason::UserRequest);
/// // "humane" is not "human": phrases match whole words only.
/// assert!(policy.evaluate(&Signals::new().user_message("be humane")).is_none());
/// let low = Signals::new().confidence(Confidence::from_per_mille(599).unwrap());
/// assert_eq!(policy.evaluate(&low).unwrap().reason, HandoverReason::LowConfidence);
/// ```
#[derive(Clone, Debug)]
pub struct HandoverPolicy {
    confidence_below: Option<Confidence>,
    phrases: Vec<String>,
    matcher: Option<Regex>,
    max_consecutive_errors: Option<u32>,
    agent_decision: bool,
}

impl Default for HandoverPolicy {
    /// Only the agent's own decision triggers.
    fn default() -> Self {
        Self {
            confidence_below: None,
            phrases: Vec::new(),
            matcher: None,
            max_consecutive_errors: None,
            agent_decision: true,
        }
    }
}

impl HandoverPolicy {
    /// A builder with no trigger but the agent's own decision.
    pub fn builder() -> HandoverPolicyBuilder {
        HandoverPolicyBuilder::default()
    }

    /// The first trigger that fires on `signals`, if any.
    pub fn evaluate(&self, signals: &Signals<'_>) -> Option<Trigger> {
        if let (Some(matcher), Some(text)) = (&self.matcher, signals.user_message) {
            let scanned = &text[..floor_char_boundary(text, MAX_SCANNED_MESSAGE_BYTES)];
            if let Some(m) = matcher.find(scanned) {
                return Some(Trigger::new(
                    HandoverReason::UserRequest,
                    format!("the user asked for a human ({:?})", m.as_str()),
                ));
            }
        }
        if self.agent_decision
            && let Some(why) = signals.agent_decision
        {
            return Some(Trigger::new(HandoverReason::AgentDecision, why));
        }
        if let Some(max) = self.max_consecutive_errors
            && signals.consecutive_errors >= max
        {
            return Some(Trigger::new(
                HandoverReason::ConsecutiveErrors,
                format!(
                    "{} consecutive errors (limit {max})",
                    signals.consecutive_errors
                ),
            ));
        }
        if let (Some(threshold), Some(c)) = (self.confidence_below, signals.confidence)
            && c < threshold
        {
            return Some(Trigger::new(
                HandoverReason::LowConfidence,
                format!("confidence {c} below {threshold}"),
            ));
        }
        None
    }

    /// Whether `text` asks for a human (the user-phrase trigger alone).
    pub fn asks_for_human(&self, text: &str) -> bool {
        let scanned = &text[..floor_char_boundary(text, MAX_SCANNED_MESSAGE_BYTES)];
        self.matcher.as_ref().is_some_and(|m| m.is_match(scanned))
    }

    /// The confidence threshold, if that trigger is on.
    pub fn get_confidence_below(&self) -> Option<Confidence> {
        self.confidence_below
    }

    /// The user phrases.
    pub fn get_user_phrases(&self) -> &[String] {
        &self.phrases
    }

    /// The consecutive-error limit, if that trigger is on.
    pub fn get_max_consecutive_errors(&self) -> Option<u32> {
        self.max_consecutive_errors
    }

    /// Whether the agent's own decision triggers.
    pub fn get_agent_decision(&self) -> bool {
        self.agent_decision
    }
}

/// Builds a [`HandoverPolicy`]; every trigger but the agent's decision is
/// off until set.
#[derive(Clone, Debug)]
#[must_use]
pub struct HandoverPolicyBuilder {
    confidence_below: Option<Confidence>,
    phrases: Vec<String>,
    max_consecutive_errors: Option<u32>,
    agent_decision: bool,
}

impl Default for HandoverPolicyBuilder {
    fn default() -> Self {
        Self {
            confidence_below: None,
            phrases: Vec::new(),
            max_consecutive_errors: None,
            agent_decision: true,
        }
    }
}

impl HandoverPolicyBuilder {
    /// Hands over when the model's confidence is strictly below `threshold`.
    pub fn confidence_below(mut self, threshold: Confidence) -> Self {
        self.confidence_below = Some(threshold);
        self
    }

    /// Hands over when the user's message contains one of `phrases`
    /// (replacing earlier ones). Matching ignores case, treats any run of
    /// whitespace in a phrase as matching any whitespace, and needs word
    /// boundaries at the phrase's ends. See [`DEFAULT_USER_PHRASES`].
    pub fn user_phrases<I, P>(mut self, phrases: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.phrases = phrases.into_iter().map(Into::into).collect();
        self
    }

    /// Hands over after `n` consecutive errors (`n >= 1`; 0 is read as 1).
    pub fn max_consecutive_errors(mut self, n: u32) -> Self {
        self.max_consecutive_errors = Some(n.max(1));
        self
    }

    /// Whether the agent's own decision hands over (on by default).
    pub fn agent_decision(mut self, allowed: bool) -> Self {
        self.agent_decision = allowed;
        self
    }

    /// The policy; fails on an empty or too long phrase, or too many.
    pub fn build(self) -> Result<HandoverPolicy, HandoverError> {
        if self.phrases.len() > MAX_USER_PHRASES {
            return Err(HandoverError::LimitExceeded {
                setting: "user_phrases",
                value: self.phrases.len(),
                limit: MAX_USER_PHRASES,
            });
        }
        let mut alternatives = Vec::with_capacity(self.phrases.len());
        for (index, phrase) in self.phrases.iter().enumerate() {
            if phrase.len() > MAX_PHRASE_LEN {
                return Err(HandoverError::LimitExceeded {
                    setting: "user phrase length",
                    value: phrase.len(),
                    limit: MAX_PHRASE_LEN,
                });
            }
            let words: Vec<&str> = phrase.split_whitespace().collect();
            let (Some(first), Some(last)) = (words.first(), words.last()) else {
                return Err(HandoverError::EmptyPhrase { index });
            };
            let body = words
                .iter()
                .map(|w| regex::escape(w))
                .collect::<Vec<_>>()
                .join(r"\s+");
            let starts_word = first.chars().next().is_some_and(is_word_char);
            let ends_word = last.chars().last().is_some_and(is_word_char);
            alternatives.push(format!(
                "{}{}{}",
                if starts_word { r"\b" } else { "" },
                body,
                if ends_word { r"\b" } else { "" }
            ));
        }
        let matcher = if alternatives.is_empty() {
            None
        } else {
            let pattern = format!("(?:{})", alternatives.join("|"));
            Some(
                RegexBuilder::new(&pattern)
                    .case_insensitive(true)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|source| HandoverError::Phrases { source })?,
            )
        };
        Ok(HandoverPolicy {
            confidence_below: self.confidence_below,
            phrases: self.phrases,
            matcher,
            max_consecutive_errors: self.max_consecutive_errors,
            agent_decision: self.agent_decision,
        })
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HandoverPolicy {
        HandoverPolicy::builder()
            .confidence_below(Confidence::from_per_mille(500).unwrap())
            .user_phrases(DEFAULT_USER_PHRASES.iter().copied())
            .max_consecutive_errors(3)
            .build()
            .unwrap()
    }

    #[test]
    fn phrases_match_case_insensitively_on_word_boundaries() {
        let p = policy();
        for yes in [
            "I want a HUMAN",
            "human!",
            "get me a real   person now",
            "Real\nPerson please",
            "can I speak to someone?",
            "Operator.",
        ] {
            assert!(p.asks_for_human(yes), "{yes}");
        }
        for no in [
            "humanity is great",
            "inhuman",
            "a realperson",
            "cooperator",
            "representatives",
            "",
        ] {
            assert!(!p.asks_for_human(no), "{no}");
        }
    }

    #[test]
    fn phrase_beyond_the_scanned_prefix_is_ignored() {
        let p = policy();
        let mut long = "x".repeat(MAX_SCANNED_MESSAGE_BYTES);
        long.push_str(" human");
        assert!(!p.asks_for_human(&long));
        let mut early = String::from("human ");
        early.push_str(&"é".repeat(MAX_SCANNED_MESSAGE_BYTES));
        assert!(p.asks_for_human(&early));
    }

    #[test]
    fn triggers_fire_in_order() {
        let p = policy();
        let low = Confidence::from_per_mille(499).unwrap();
        let ok = Confidence::from_per_mille(500).unwrap();
        assert_eq!(p.evaluate(&Signals::new().confidence(ok)), None);
        assert_eq!(
            p.evaluate(&Signals::new().confidence(low)).unwrap().reason,
            HandoverReason::LowConfidence
        );
        assert_eq!(p.evaluate(&Signals::new().consecutive_errors(2)), None);
        let t = p
            .evaluate(&Signals::new().consecutive_errors(3).confidence(low))
            .unwrap();
        assert_eq!(t.reason, HandoverReason::ConsecutiveErrors);
        assert_eq!(t.detail, "3 consecutive errors (limit 3)");
        let t = p
            .evaluate(
                &Signals::new()
                    .agent_decision("refund over limit")
                    .consecutive_errors(9),
            )
            .unwrap();
        assert_eq!(t.reason, HandoverReason::AgentDecision);
        let t = p
            .evaluate(
                &Signals::new()
                    .agent_decision("x")
                    .user_message("human please"),
            )
            .unwrap();
        assert_eq!(t.reason, HandoverReason::UserRequest);
        let no_agent = HandoverPolicy::builder()
            .agent_decision(false)
            .build()
            .unwrap();
        assert_eq!(no_agent.evaluate(&Signals::new().agent_decision("x")), None);
        assert_eq!(
            HandoverPolicy::default().evaluate(&Signals::new().user_message("human")),
            None
        );
    }

    #[test]
    fn builder_limits() {
        let many = (0..=MAX_USER_PHRASES).map(|i| format!("p{i}"));
        assert!(matches!(
            HandoverPolicy::builder().user_phrases(many).build(),
            Err(HandoverError::LimitExceeded {
                setting: "user_phrases",
                ..
            })
        ));
        assert!(matches!(
            HandoverPolicy::builder()
                .user_phrases(["a".repeat(MAX_PHRASE_LEN + 1)])
                .build(),
            Err(HandoverError::LimitExceeded { .. })
        ));
        assert!(matches!(
            HandoverPolicy::builder().user_phrases(["ok", "  "]).build(),
            Err(HandoverError::EmptyPhrase { index: 1 })
        ));
        // Regex metacharacters are literal.
        let p = HandoverPolicy::builder()
            .user_phrases(["a.b (c)?"])
            .build()
            .unwrap();
        assert!(p.asks_for_human("x A.B (C)? y"));
        assert!(!p.asks_for_human("axb c"));
        assert_eq!(
            Trigger::new(HandoverReason::AgentDecision, "é".repeat(300))
                .detail
                .len(),
            256
        );
    }

    proptest::proptest! {
        #[test]
        fn any_message_is_evaluated_without_panicking(s in "\\PC{0,200}") {
            let _ = policy().evaluate(&Signals::new().user_message(&s));
        }

        #[test]
        fn a_phrase_is_found_wherever_it_sits(pre in "[a-z ]{0,30}", post in "[a-z ]{0,30}") {
            let text = format!("{pre} real person {post}");
            proptest::prop_assert!(policy().asks_for_human(&text));
        }
    }
}
