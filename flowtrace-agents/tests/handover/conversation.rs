//! The conversation state machine: every valid transition, every invalid
//! pair, and random event sequences.

use flowtrace_agents::handover::{
    Conversation, ConversationEvent as E, ConversationState as S, DEFAULT_HISTORY, MAX_HISTORY,
    transition,
};
use flowtrace_core::trace::Timestamp;
use proptest::prelude::*;

/// The full table, written out independently of the implementation.
const VALID: &[(S, E, S)] = &[
    (S::New, E::UserMessage, S::AiProcessing),
    (S::New, E::HandoverRequested, S::Handover),
    (S::AiProcessing, E::UserMessage, S::AiProcessing),
    (S::AiProcessing, E::AiReplied, S::AiProcessing),
    (S::AiProcessing, E::HandoverRequested, S::Handover),
    (S::AiProcessing, E::Resolve, S::Resolved),
    (S::Handover, E::UserMessage, S::Handover),
    (S::Handover, E::Queued, S::PendingHuman),
    (S::Handover, E::HumanAssigned, S::HumanActive),
    (S::Handover, E::ReturnToAi, S::BackToAi),
    (S::Handover, E::Resolve, S::Resolved),
    (S::PendingHuman, E::UserMessage, S::PendingHuman),
    (S::PendingHuman, E::HumanAssigned, S::HumanActive),
    (S::PendingHuman, E::ReturnToAi, S::BackToAi),
    (S::PendingHuman, E::Resolve, S::Resolved),
    (S::HumanActive, E::UserMessage, S::HumanActive),
    (S::HumanActive, E::HumanReplied, S::HumanActive),
    (S::HumanActive, E::ReturnToAi, S::BackToAi),
    (S::HumanActive, E::Resolve, S::Resolved),
    (S::BackToAi, E::UserMessage, S::AiProcessing),
    (S::BackToAi, E::AiReplied, S::AiProcessing),
    (S::BackToAi, E::HandoverRequested, S::Handover),
    (S::BackToAi, E::Resolve, S::Resolved),
];

fn expected(state: S, event: E) -> Option<S> {
    VALID
        .iter()
        .find(|(s, e, _)| *s == state && *e == event)
        .map(|(_, _, to)| *to)
}

#[test]
fn every_valid_transition_is_taken() {
    for &(from, event, to) in VALID {
        assert_eq!(transition(from, event), Ok(to), "{from} + {event}");
    }
}

#[test]
fn every_other_pair_is_refused_naming_both() {
    let mut refused = 0;
    for state in S::ALL {
        for event in E::ALL {
            match expected(state, event) {
                Some(to) => assert_eq!(transition(state, event), Ok(to)),
                None => {
                    let err = transition(state, event).unwrap_err();
                    assert_eq!((err.state, err.event), (state, event));
                    let text = err.to_string();
                    assert!(
                        text.contains(state.as_str()) && text.contains(event.as_str()),
                        "{text}"
                    );
                    refused += 1;
                }
            }
        }
    }
    assert_eq!(refused, S::ALL.len() * E::ALL.len() - VALID.len());
}

#[test]
fn states_and_events_serialize_snake_case() {
    for s in S::ALL {
        assert_eq!(
            serde_json::to_value(s).unwrap(),
            serde_json::json!(s.as_str())
        );
    }
    for e in E::ALL {
        assert_eq!(
            serde_json::to_value(e).unwrap(),
            serde_json::json!(e.as_str())
        );
    }
    assert_eq!(S::PendingHuman.as_str(), "pending_human");
    assert_eq!(S::BackToAi.as_str(), "back_to_ai");
    assert_eq!(E::HandoverRequested.as_str(), "handover_requested");
}

#[test]
fn a_full_conversation_keeps_timestamped_history() {
    let mut c = Conversation::new();
    let script = [
        E::UserMessage,
        E::AiReplied,
        E::UserMessage,
        E::HandoverRequested,
        E::Queued,
        E::UserMessage,
        E::HumanAssigned,
        E::HumanReplied,
        E::ReturnToAi,
        E::UserMessage,
        E::AiReplied,
        E::Resolve,
    ];
    for (i, e) in script.into_iter().enumerate() {
        c.apply_at(e, Timestamp::from_unix_micros(i as i64 * 1_000))
            .unwrap();
    }
    assert_eq!(c.state(), S::Resolved);
    assert_eq!(c.history().len(), script.len());
    assert_eq!(c.history()[4].from, S::Handover);
    assert_eq!(c.history()[4].to, S::PendingHuman);
    assert_eq!(c.history()[4].at, Timestamp::from_unix_micros(4_000));
    assert_eq!(c.dropped(), 0);
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["state"], "resolved");
    assert_eq!(json["history"][0]["event"], "user_message");
    let back: Conversation = serde_json::from_value(json).unwrap();
    assert_eq!(back, c);
}

#[test]
fn history_is_bounded() {
    let mut c = Conversation::with_history(3);
    c.apply(E::UserMessage).unwrap();
    for _ in 0..10 {
        c.apply(E::AiReplied).unwrap();
    }
    assert_eq!(c.history().len(), 3);
    assert_eq!(c.dropped(), 8);
    let mut none = Conversation::with_history(0);
    none.apply(E::UserMessage).unwrap();
    assert!(none.history().is_empty());
    assert_eq!(none.dropped(), 1);
    let mut default = Conversation::new();
    default.apply(E::UserMessage).unwrap();
    for _ in 0..DEFAULT_HISTORY + 5 {
        default.apply(E::AiReplied).unwrap();
    }
    assert_eq!(default.history().len(), DEFAULT_HISTORY);
    assert_eq!(default.dropped(), 6);
    let mut huge = Conversation::with_history(usize::MAX);
    for _ in 0..3 {
        let _ = huge.apply(E::UserMessage);
    }
    assert!(huge.history().len() <= MAX_HISTORY);
}

fn any_event() -> impl Strategy<Value = E> {
    proptest::sample::select(E::ALL.to_vec())
}

proptest! {
    /// Any event sequence only moves along the table, a refused event
    /// changes nothing, and once resolved every event is refused.
    #[test]
    fn random_sequences_follow_the_table(events in proptest::collection::vec(any_event(), 0..200)) {
        let mut c = Conversation::with_history(50);
        let mut applied = 0u64;
        for e in events {
            let before = c.state();
            let len_before = c.history().len();
            match c.apply(e) {
                Ok(to) => {
                    prop_assert_eq!(Some(to), expected(before, e));
                    prop_assert!(!before.is_terminal());
                    prop_assert_eq!(c.state(), to);
                    prop_assert_eq!(c.history().back().map(|t| (t.from, t.event, t.to)), Some((before, e, to)));
                    applied += 1;
                }
                Err(err) => {
                    prop_assert_eq!(expected(before, e), None);
                    prop_assert_eq!((err.state, err.event), (before, e));
                    prop_assert_eq!(c.state(), before);
                    prop_assert_eq!(c.history().len(), len_before);
                }
            }
            prop_assert!(S::ALL.contains(&c.state()));
            prop_assert!(c.history().len() <= 50);
            if before == S::Resolved {
                prop_assert_eq!(c.state(), S::Resolved);
            }
        }
        prop_assert_eq!(c.history().len() as u64 + c.dropped(), applied);
        // Consecutive transitions chain.
        for w in c.history().iter().collect::<Vec<_>>().windows(2) {
            prop_assert_eq!(w[0].to, w[1].from);
        }
    }
}
