//! The conversation state machine a host application drives: who owns the
//! conversation (the AI or a human) and how it moves between them.

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};

use flowtrace_core::trace::Timestamp;

use super::error::TransitionError;

/// The history a [`Conversation`] keeps unless configured otherwise.
pub const DEFAULT_HISTORY: usize = 256;
/// The most transitions a [`Conversation`] may keep; older ones are dropped
/// (and counted).
pub const MAX_HISTORY: usize = 10_000;

/// Where a conversation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationState {
    /// Nothing has happened yet.
    New,
    /// The AI owns the conversation.
    AiProcessing,
    /// A handover was decided; no human queue has it yet.
    Handover,
    /// Waiting in a queue for a human.
    PendingHuman,
    /// A human owns the conversation.
    HumanActive,
    /// Given back to the AI by a human (or for lack of one).
    BackToAi,
    /// Done. Terminal.
    Resolved,
}

impl ConversationState {
    /// Every state.
    pub const ALL: [ConversationState; 7] = [
        ConversationState::New,
        ConversationState::AiProcessing,
        ConversationState::Handover,
        ConversationState::PendingHuman,
        ConversationState::HumanActive,
        ConversationState::BackToAi,
        ConversationState::Resolved,
    ];

    /// The serialized name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConversationState::New => "new",
            ConversationState::AiProcessing => "ai_processing",
            ConversationState::Handover => "handover",
            ConversationState::PendingHuman => "pending_human",
            ConversationState::HumanActive => "human_active",
            ConversationState::BackToAi => "back_to_ai",
            ConversationState::Resolved => "resolved",
        }
    }

    /// Whether no event leaves this state.
    pub const fn is_terminal(self) -> bool {
        matches!(self, ConversationState::Resolved)
    }
}

impl fmt::Display for ConversationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationEvent {
    /// The user wrote.
    UserMessage,
    /// The AI answered.
    AiReplied,
    /// A handover was decided (by the policy, the user or the agent).
    HandoverRequested,
    /// The handover was put in a human queue.
    Queued,
    /// A human took the conversation.
    HumanAssigned,
    /// The human answered.
    HumanReplied,
    /// The conversation goes back to the AI.
    ReturnToAi,
    /// The conversation is done.
    Resolve,
}

impl ConversationEvent {
    /// Every event.
    pub const ALL: [ConversationEvent; 8] = [
        ConversationEvent::UserMessage,
        ConversationEvent::AiReplied,
        ConversationEvent::HandoverRequested,
        ConversationEvent::Queued,
        ConversationEvent::HumanAssigned,
        ConversationEvent::HumanReplied,
        ConversationEvent::ReturnToAi,
        ConversationEvent::Resolve,
    ];

    /// The serialized name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConversationEvent::UserMessage => "user_message",
            ConversationEvent::AiReplied => "ai_replied",
            ConversationEvent::HandoverRequested => "handover_requested",
            ConversationEvent::Queued => "queued",
            ConversationEvent::HumanAssigned => "human_assigned",
            ConversationEvent::HumanReplied => "human_replied",
            ConversationEvent::ReturnToAi => "return_to_ai",
            ConversationEvent::Resolve => "resolve",
        }
    }
}

impl fmt::Display for ConversationEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state `event` leads to from `state`, or an error naming both:
///
/// | from \ event     | user_message  | ai_replied    | handover_requested | queued        | human_assigned | human_replied | return_to_ai | resolve  |
/// |------------------|---------------|---------------|--------------------|---------------|----------------|---------------|--------------|----------|
/// | `new`            | ai_processing |               | handover           |               |                |               |              |          |
/// | `ai_processing`  | ai_processing | ai_processing | handover           |               |                |               |              | resolved |
/// | `handover`       | handover      |               |                    | pending_human | human_active   |               | back_to_ai   | resolved |
/// | `pending_human`  | pending_human |               |                    |               | human_active   |               | back_to_ai   | resolved |
/// | `human_active`   | human_active  |               |                    |               |                | human_active  | back_to_ai   | resolved |
/// | `back_to_ai`     | ai_processing | ai_processing | handover           |               |                |               |              | resolved |
/// | `resolved`       |               |               |                    |               |                |               |              |          |
///
/// Every empty cell is a [`TransitionError`]. `resolved` is terminal: a
/// user writing again after resolution starts a new [`Conversation`] (the
/// host links them); re-opening would blur what was resolved and by whom.
///
/// ```
/// use flowtrace_agents::handover::{transition, ConversationEvent as E, ConversationState as S};
/// assert_eq!(transition(S::New, E::UserMessage), Ok(S::AiProcessing));
/// let err = transition(S::Resolved, E::UserMessage).unwrap_err();
/// assert_eq!(err.to_string(), "conversation event user_message is not allowed in state resolved");
/// ```
pub fn transition(
    state: ConversationState,
    event: ConversationEvent,
) -> Result<ConversationState, TransitionError> {
    use ConversationEvent as E;
    use ConversationState as S;
    let next = match (state, event) {
        (S::New, E::UserMessage) => S::AiProcessing,
        (S::New, E::HandoverRequested) => S::Handover,

        (S::AiProcessing, E::UserMessage | E::AiReplied) => S::AiProcessing,
        (S::AiProcessing, E::HandoverRequested) => S::Handover,
        (S::AiProcessing, E::Resolve) => S::Resolved,

        (S::Handover, E::UserMessage) => S::Handover,
        (S::Handover, E::Queued) => S::PendingHuman,
        (S::Handover, E::HumanAssigned) => S::HumanActive,
        (S::Handover, E::ReturnToAi) => S::BackToAi,
        (S::Handover, E::Resolve) => S::Resolved,

        (S::PendingHuman, E::UserMessage) => S::PendingHuman,
        (S::PendingHuman, E::HumanAssigned) => S::HumanActive,
        (S::PendingHuman, E::ReturnToAi) => S::BackToAi,
        (S::PendingHuman, E::Resolve) => S::Resolved,

        (S::HumanActive, E::UserMessage | E::HumanReplied) => S::HumanActive,
        (S::HumanActive, E::ReturnToAi) => S::BackToAi,
        (S::HumanActive, E::Resolve) => S::Resolved,

        (S::BackToAi, E::UserMessage | E::AiReplied) => S::AiProcessing,
        (S::BackToAi, E::HandoverRequested) => S::Handover,
        (S::BackToAi, E::Resolve) => S::Resolved,

        (state, event) => return Err(TransitionError { state, event }),
    };
    Ok(next)
}

/// One applied transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Transition {
    /// When it was applied.
    pub at: Timestamp,
    /// The state before.
    pub from: ConversationState,
    /// The event.
    pub event: ConversationEvent,
    /// The state after.
    pub to: ConversationState,
}

/// A conversation's state and its recent transitions. Refused events leave
/// both unchanged.
///
/// ```
/// use flowtrace_agents::handover::{Conversation, ConversationEvent as E, ConversationState as S};
/// let mut c = Conversation::new();
/// c.apply(E::UserMessage).unwrap();
/// c.apply(E::HandoverRequested).unwrap();
/// c.apply(E::Queued).unwrap();
/// assert_eq!(c.apply(E::HumanAssigned), Ok(S::HumanActive));
/// assert!(c.apply(E::AiReplied).is_err());
/// assert_eq!(c.state(), S::HumanActive);
/// assert_eq!(c.history().len(), 4);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    state: ConversationState,
    history: VecDeque<Transition>,
    max_history: usize,
    dropped: u64,
}

impl Default for Conversation {
    fn default() -> Self {
        Self::new()
    }
}

impl Conversation {
    /// A new conversation keeping the last [`DEFAULT_HISTORY`] transitions.
    pub fn new() -> Self {
        Self::with_history(DEFAULT_HISTORY)
    }

    /// A new conversation keeping the last `n` transitions (at most
    /// [`MAX_HISTORY`]; more is read as that).
    pub fn with_history(n: usize) -> Self {
        Self {
            state: ConversationState::New,
            history: VecDeque::new(),
            max_history: n.min(MAX_HISTORY),
            dropped: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> ConversationState {
        self.state
    }

    /// The kept transitions, oldest first.
    pub fn history(&self) -> &VecDeque<Transition> {
        &self.history
    }

    /// How many older transitions were dropped from the history.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Applies `event` now.
    pub fn apply(
        &mut self,
        event: ConversationEvent,
    ) -> Result<ConversationState, TransitionError> {
        self.apply_at(event, Timestamp::now())
    }

    /// Applies `event`, recording it at `at`.
    pub fn apply_at(
        &mut self,
        event: ConversationEvent,
        at: Timestamp,
    ) -> Result<ConversationState, TransitionError> {
        let to = transition(self.state, event)?;
        if self.max_history > 0 {
            if self.history.len() >= self.max_history {
                self.history.pop_front();
                self.dropped += 1;
            }
            self.history.push_back(Transition {
                at,
                from: self.state,
                event,
                to,
            });
        } else {
            self.dropped += 1;
        }
        self.state = to;
        Ok(to)
    }
}
