//! Handing a conversation over to a human.
//!
//! - [`HandoverPolicy`] decides when: the model's [`Confidence`] below a
//!   threshold, the user asking for a human, N consecutive errors, or the
//!   agent's own decision ([`HandoverReason`]).
//! - [`HandoverRecord`] is what the human receives: the reason, the skills
//!   needed and the context (summary, last messages, chosen fields).
//! - In a [`JsonState`](flowtrace_core::JsonState) graph, [`add_router`]
//!   sends each turn to [`HandoverNode`], [`FinishNode`] or back to the
//!   agent, and [`add_sinks`] adds those two nodes, each ending the run;
//!   the handover node writes the record into the state ([`keys::HANDOVER`])
//!   and emits the `handover` event.
//! - [`Conversation`] is the state machine the host application drives
//!   across runs: `new`, `ai_processing`, `handover`, `pending_human`,
//!   `human_active`, `back_to_ai`, `resolved` ([`transition`]).

mod conversation;
mod error;
mod nodes;
mod policy;
mod reason;
mod record;

pub use conversation::{
    Conversation, ConversationEvent, ConversationState, DEFAULT_HISTORY, MAX_HISTORY, Transition,
    transition,
};
pub use error::{HandoverError, TransitionError};
pub use nodes::{
    FINISH_NODE, FinishNode, HANDOVER_NODE, HandoverNode, add_router, add_sinks, evaluate_state,
    keys, router, routes, signals_from_state,
};
pub use policy::{
    DEFAULT_USER_PHRASES, HandoverPolicy, HandoverPolicyBuilder, MAX_DETAIL_LEN, MAX_PHRASE_LEN,
    MAX_SCANNED_MESSAGE_BYTES, MAX_USER_PHRASES, Signals, Trigger,
};
pub use reason::{Confidence, HandoverReason, MAX_CONFIDENCE_TEXT_LEN};
pub use record::{
    DEFAULT_CONTEXT_MESSAGES, HandoverContext, HandoverRecord, MAX_CONTEXT_FIELDS,
    MAX_CONTEXT_MESSAGES, MAX_REQUIRED_SKILLS, MAX_SKILL_LEN, MAX_SUMMARY_LEN,
};
