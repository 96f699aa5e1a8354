//! Errors of the handover module.

use super::conversation::{ConversationEvent, ConversationState};

/// A handover policy, record or state field that could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandoverError {
    /// A confidence that is not a decimal in `[0, 1]` or a percentage.
    #[error("invalid confidence {text:?}: expected a decimal in [0, 1] or a percentage")]
    InvalidConfidence {
        /// The text (cut to `MAX_CONFIDENCE_TEXT_LEN` characters).
        text: String,
    },
    /// A policy setting over its limit.
    #[error("handover policy: {setting} is {value}, over the limit of {limit}")]
    LimitExceeded {
        /// The setting (`user_phrases`, `phrase length`, `context_messages`, …).
        setting: &'static str,
        /// The value given.
        value: usize,
        /// The limit (a `pub const` of this module).
        limit: usize,
    },
    /// An empty user phrase.
    #[error("handover policy: user phrase {index} is empty")]
    EmptyPhrase {
        /// Its position in the list.
        index: usize,
    },
    /// The user phrases could not be compiled into a matcher.
    #[error("handover policy: the user phrases cannot be compiled")]
    Phrases {
        /// The cause.
        #[source]
        source: regex::Error,
    },
    /// A state field with the wrong type.
    #[error("state field {field:?} is invalid: {message}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// A conversation event that is not allowed in the conversation's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("conversation event {event} is not allowed in state {state}")]
#[non_exhaustive]
pub struct TransitionError {
    /// The state the conversation was in (and still is).
    pub state: ConversationState,
    /// The refused event.
    pub event: ConversationEvent,
}
