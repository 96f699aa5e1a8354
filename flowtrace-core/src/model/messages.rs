//! [`Messages`]: a conversation that requests share instead of copying.

use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::request::Message;

/// The messages of a [`ChatRequest`](super::ChatRequest): a list that reads
/// like a slice (`len`, `iter`, indexing, `for m in &messages`) and clones
/// in O(1), sharing its buffer.
///
/// Appending ([`push`](Self::push), [`extend`](Extend::extend)) copies the
/// buffer only when another clone still holds it; a loop that builds each
/// turn's request from one history, and lets the request go once the model
/// answered, never copies old messages (a tool-calling agent costs what its
/// conversation holds, not that times the number of turns). Whatever keeps
/// a clone keeps the buffer it saw: a trace sink that stores every
/// `llm.request` event makes each later append copy once. Serialized as a
/// plain array.
///
/// ```
/// use flowtrace_core::Message;
/// use flowtrace_core::model::Messages;
///
/// let mut history = Messages::from(vec![Message::user("hi")]);
/// let sent = history.clone(); // shares the buffer
/// assert!(history.shares_buffer_with(&sent));
/// drop(sent);
/// history.push(Message::assistant("hello")); // no copy: nobody else holds it
/// assert_eq!(history.len(), 2);
/// assert_eq!(history[1].content, "hello");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Messages(Arc<Vec<Message>>);

impl Messages {
    /// No messages.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `message`, copying the buffer first only if a clone still
    /// shares it.
    pub fn push(&mut self, message: Message) {
        Arc::make_mut(&mut self.0).push(message);
    }

    /// The messages, mutably (copying the buffer first only if a clone
    /// still shares it).
    pub fn make_mut(&mut self) -> &mut Vec<Message> {
        Arc::make_mut(&mut self.0)
    }

    /// The messages as a slice.
    pub fn as_slice(&self) -> &[Message] {
        &self.0
    }

    /// The messages from position `from` on, as a `Vec` (copies them).
    pub fn tail(&self, from: usize) -> Vec<Message> {
        self.0
            .get(from..)
            .map(<[Message]>::to_vec)
            .unwrap_or_default()
    }

    /// The messages as a `Vec`: taken without copying when nobody else
    /// shares the buffer.
    pub fn into_vec(self) -> Vec<Message> {
        Arc::unwrap_or_clone(self.0)
    }

    /// Whether `self` and `other` share one buffer (so neither was copied
    /// from the other).
    pub fn shares_buffer_with(&self, other: &Messages) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Deref for Messages {
    type Target = [Message];

    fn deref(&self) -> &[Message] {
        &self.0
    }
}

impl From<Vec<Message>> for Messages {
    fn from(messages: Vec<Message>) -> Self {
        Self(Arc::new(messages))
    }
}

impl From<Messages> for Vec<Message> {
    fn from(messages: Messages) -> Self {
        messages.into_vec()
    }
}

impl FromIterator<Message> for Messages {
    fn from_iter<I: IntoIterator<Item = Message>>(iter: I) -> Self {
        Self::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl Extend<Message> for Messages {
    fn extend<I: IntoIterator<Item = Message>>(&mut self, iter: I) {
        Arc::make_mut(&mut self.0).extend(iter);
    }
}

impl<'a> IntoIterator for &'a Messages {
    type Item = &'a Message;
    type IntoIter = std::slice::Iter<'a, Message>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a mut Messages {
    type Item = &'a mut Message;
    type IntoIter = std::slice::IterMut<'a, Message>;

    fn into_iter(self) -> Self::IntoIter {
        Arc::make_mut(&mut self.0).iter_mut()
    }
}

impl PartialEq<[Message]> for Messages {
    fn eq(&self, other: &[Message]) -> bool {
        self.as_slice() == other
    }
}

impl<const N: usize> PartialEq<[Message; N]> for Messages {
    fn eq(&self, other: &[Message; N]) -> bool {
        self.as_slice() == other
    }
}

impl PartialEq<Vec<Message>> for Messages {
    fn eq(&self, other: &Vec<Message>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_and_appends_copy_only_when_shared() {
        let mut history = Messages::from(vec![Message::user("a")]);
        let sent = history.clone();
        assert!(history.shares_buffer_with(&sent));
        history.push(Message::assistant("b"));
        // `sent` still held the buffer: the append copied, `sent` is unchanged.
        assert!(!history.shares_buffer_with(&sent));
        assert_eq!(sent, [Message::user("a")]);
        drop(sent);
        let before = history.as_ptr();
        let sent = history.clone();
        drop(sent);
        history.make_mut().reserve(0);
        assert_eq!(history.as_ptr(), before, "a unique buffer is not copied");
    }

    #[test]
    fn serializes_as_a_plain_array() {
        let m = Messages::from(vec![Message::user("a")]);
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(
            json,
            serde_json::to_value(vec![Message::user("a")]).unwrap()
        );
        let back: Messages = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
        assert_eq!(m.tail(0), vec![Message::user("a")]);
        assert!(m.tail(5).is_empty());
    }
}
