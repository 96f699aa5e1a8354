//! [`EpisodicStore`]: past goals, the plan tried, and how it ended.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{MemoryError, MemoryErrorKind};

/// The episodes an [`InMemoryEpisodicStore`] keeps unless configured
/// otherwise; past it the oldest are forgotten.
pub const DEFAULT_EPISODE_CAPACITY: usize = 1_000;

/// The longest goal an [`InMemoryEpisodicStore`] records, in bytes.
pub const MAX_GOAL_BYTES: usize = 16 * 1024;

/// The most keywords taken from one goal (the first distinct ones).
pub const MAX_KEYWORDS: usize = 64;

/// The most episodes one lookup returns, whatever limit is asked for.
pub const MAX_LOOKUP_RESULTS: usize = 100;

/// How an episode ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
#[non_exhaustive]
pub enum EpisodeOutcome {
    /// The goal was reached.
    Succeeded {
        /// The answer given.
        answer: String,
    },
    /// The plan failed.
    Failed {
        /// Why.
        reason: String,
    },
}

impl EpisodeOutcome {
    /// Whether the goal was reached.
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Succeeded { .. })
    }
}

/// One past attempt at a goal: the goal, the plan tried (as JSON), and how
/// it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Episode {
    /// The goal.
    pub goal: String,
    /// The plan tried.
    pub plan: serde_json::Value,
    /// How it ended.
    pub outcome: EpisodeOutcome,
}

impl Episode {
    /// An episode.
    pub fn new(goal: impl Into<String>, plan: serde_json::Value, outcome: EpisodeOutcome) -> Self {
        Self {
            goal: goal.into(),
            plan,
            outcome,
        }
    }
}

/// Past episodes, looked up by goal.
///
/// # Contract
/// `record` and the lookups may run concurrently. Lookups return the most
/// recent matches first, at most `limit` (and at most
/// [`MAX_LOOKUP_RESULTS`]). Retries are the caller's job.
#[async_trait]
pub trait EpisodicStore: Send + Sync {
    /// Records an episode.
    ///
    /// # Cancel safety
    /// Dropping the future may or may not have recorded it.
    async fn record(&self, episode: Episode) -> Result<(), MemoryError>;

    /// The episodes whose goal equals `goal` (ignoring case and runs of
    /// whitespace), most recent first.
    async fn exact(&self, goal: &str, limit: usize) -> Result<Vec<Episode>, MemoryError>;

    /// The episodes whose goal shares keywords with `goal` (see
    /// [`keywords`]): exact matches first, then by the number of shared
    /// keywords, most recent first among equals. Episodes sharing none are
    /// not returned.
    async fn similar(&self, goal: &str, limit: usize) -> Result<Vec<Episode>, MemoryError>;
}

/// Words too common to tell goals apart.
const STOPWORDS: &[&str] = &[
    "about", "and", "are", "but", "can", "could", "did", "does", "for", "from", "has", "have",
    "how", "into", "its", "not", "off", "our", "out", "please", "should", "that", "the", "them",
    "then", "there", "these", "this", "those", "was", "were", "what", "when", "where", "which",
    "who", "why", "will", "with", "would", "you", "your",
];

/// The keywords of `text`: its distinct words of three or more letters or
/// digits, lowercased, without common stop words, at most
/// [`MAX_KEYWORDS`] (the first ones).
///
/// ```
/// use flowtrace_agents::memory::keywords;
/// let k = keywords("What is the weather in Paris, and in PARIS tomorrow?");
/// assert_eq!(k.into_iter().collect::<Vec<_>>(), ["paris", "tomorrow", "weather"]);
/// ```
pub fn keywords(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for word in text.split(|c: char| !c.is_alphanumeric()) {
        if out.len() >= MAX_KEYWORDS {
            break;
        }
        if word.chars().count() < 3 {
            continue;
        }
        let word = word.to_lowercase();
        if STOPWORDS.binary_search(&word.as_str()).is_ok() {
            continue;
        }
        out.insert(word);
    }
    out
}

/// `goal` lowercased with runs of whitespace made one space.
fn normalize(goal: &str) -> String {
    goal.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

#[derive(Debug)]
struct Stored {
    episode: Episode,
    normalized: String,
    keywords: BTreeSet<String>,
}

/// An [`EpisodicStore`] in process memory, keeping the most recent
/// [`capacity`](Self::with_capacity) episodes.
///
/// ```
/// use flowtrace_agents::memory::{Episode, EpisodeOutcome, EpisodicStore, InMemoryEpisodicStore};
/// use serde_json::json;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = InMemoryEpisodicStore::new();
/// store.record(Episode::new(
///     "Book a flight to Paris",
///     json!({"steps": [{"tool": "search_flights"}]}),
///     EpisodeOutcome::Succeeded { answer: "booked AF123".into() },
/// )).await.unwrap();
/// let similar = store.similar("Find a cheap flight to Paris", 3).await.unwrap();
/// assert_eq!(similar.len(), 1);
/// assert!(store.exact("book a flight  to PARIS", 3).await.unwrap()[0].outcome.is_success());
/// # });
/// ```
pub struct InMemoryEpisodicStore {
    capacity: usize,
    episodes: Mutex<VecDeque<Stored>>,
}

impl fmt::Debug for InMemoryEpisodicStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryEpisodicStore")
            .field("capacity", &self.capacity)
            .field("episodes", &self.lock().len())
            .finish()
    }
}

impl Default for InMemoryEpisodicStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryEpisodicStore {
    /// A store of at most [`DEFAULT_EPISODE_CAPACITY`] episodes.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_EPISODE_CAPACITY)
    }

    /// A store of at most `capacity` episodes (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            episodes: Mutex::new(VecDeque::new()),
        }
    }

    /// How many episodes are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no episode is kept.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Stored>> {
        // Plain data: a poisoned lock still has valid data.
        self.episodes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl EpisodicStore for InMemoryEpisodicStore {
    /// # Errors
    /// [`MemoryErrorKind::LimitExceeded`] for a goal over
    /// [`MAX_GOAL_BYTES`].
    async fn record(&self, episode: Episode) -> Result<(), MemoryError> {
        if episode.goal.len() > MAX_GOAL_BYTES {
            return Err(MemoryError::new(
                MemoryErrorKind::LimitExceeded,
                format!(
                    "the goal is {} bytes long (MAX_GOAL_BYTES is {MAX_GOAL_BYTES})",
                    episode.goal.len()
                ),
            ));
        }
        let stored = Stored {
            normalized: normalize(&episode.goal),
            keywords: keywords(&episode.goal),
            episode,
        };
        let mut episodes = self.lock();
        while episodes.len() >= self.capacity {
            episodes.pop_front();
        }
        episodes.push_back(stored);
        Ok(())
    }

    async fn exact(&self, goal: &str, limit: usize) -> Result<Vec<Episode>, MemoryError> {
        let wanted = normalize(goal);
        Ok(self
            .lock()
            .iter()
            .rev()
            .filter(|s| s.normalized == wanted)
            .take(limit.min(MAX_LOOKUP_RESULTS))
            .map(|s| s.episode.clone())
            .collect())
    }

    async fn similar(&self, goal: &str, limit: usize) -> Result<Vec<Episode>, MemoryError> {
        let wanted = normalize(goal);
        let words = keywords(goal);
        let episodes = self.lock();
        // (exact, shared keywords, recency) — larger is better.
        let mut scored: Vec<(bool, usize, usize)> = episodes
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let exact = s.normalized == wanted;
                let shared = s.keywords.intersection(&words).count();
                (exact || shared > 0).then_some((exact, shared, i))
            })
            .collect();
        scored.sort_unstable_by(|a, b| b.cmp(a));
        Ok(scored
            .into_iter()
            .take(limit.min(MAX_LOOKUP_RESULTS))
            .filter_map(|(_, _, i)| episodes.get(i).map(|s| s.episode.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn stopwords_are_sorted_for_binary_search() {
        let mut sorted = STOPWORDS.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, STOPWORDS);
    }

    #[test]
    fn keywords_are_bounded() {
        let text: String = (0..200).map(|i| format!("word{i} ")).collect();
        assert_eq!(keywords(&text).len(), MAX_KEYWORDS);
        assert!(keywords("a an to of is").is_empty());
    }
}
