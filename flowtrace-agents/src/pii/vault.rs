//! The per-run vault of tokenized values, for the host application only.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use regex::Regex;

use super::detect::PiiKind;

/// The entries a vault holds unless configured otherwise.
pub const DEFAULT_VAULT_ENTRIES: usize = 10_000;
/// The most entries a vault may hold.
pub const MAX_VAULT_ENTRIES: usize = 1_000_000;

#[derive(Default)]
struct Inner {
    by_value: HashMap<(PiiKind, String), String>,
    by_token: HashMap<String, String>,
    next: [u64; 4],
    overflowed: u64,
}

/// Maps stable tokens (`[EMAIL_1]`, `[CARD_2]`, …) back to the values they
/// replaced in a run's events, for the host application: events carry only
/// the tokens, never the vault's contents. The same value always gets the
/// same token within a vault. Use one vault per run.
///
/// The vault holds at most its capacity; once full, new values are masked
/// (`[REDACTED_EMAIL]`, …) instead of tokenized, and counted in
/// [`overflowed`](Self::overflowed). Its `Debug` output shows only counts.
///
/// ```
/// use flowtrace_agents::pii::{PiiKind, Vault};
/// let vault = Vault::new();
/// let t = vault.tokenize(PiiKind::Email, "ana@example.com");
/// assert_eq!(t, "[EMAIL_1]");
/// assert_eq!(vault.tokenize(PiiKind::Email, "ana@example.com"), t);
/// assert_eq!(vault.reveal("[EMAIL_1]").as_deref(), Some("ana@example.com"));
/// assert_eq!(vault.reveal_text("write to [EMAIL_1]"), "write to ana@example.com");
/// ```
pub struct Vault {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("Vault")
            .field("entries", &inner.by_token.len())
            .field("capacity", &self.capacity)
            .field("overflowed", &inner.overflowed)
            .finish()
    }
}

impl Default for Vault {
    fn default() -> Self {
        Self::new()
    }
}

impl Vault {
    /// An empty vault holding up to [`DEFAULT_VAULT_ENTRIES`].
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_VAULT_ENTRIES)
    }

    /// An empty vault holding up to `capacity` entries (at most
    /// [`MAX_VAULT_ENTRIES`]; more is read as that).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.min(MAX_VAULT_ENTRIES),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The maps stay consistent even if a holder panicked: every update
        // inserts into both before returning.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The token for `value` of `kind`: its existing one, a new one, or the
    /// kind's mask when the vault is full.
    pub fn tokenize(&self, kind: PiiKind, value: &str) -> String {
        let mut inner = self.lock();
        if let Some(t) = inner.by_value.get(&(kind, value.to_owned())) {
            return t.clone();
        }
        if inner.by_token.len() >= self.capacity {
            inner.overflowed += 1;
            return kind.mask().to_owned();
        }
        let slot = &mut inner.next[kind.index()];
        *slot += 1;
        let token = format!("[{}_{}]", kind.token_prefix(), *slot);
        inner
            .by_value
            .insert((kind, value.to_owned()), token.clone());
        inner.by_token.insert(token.clone(), value.to_owned());
        token
    }

    /// The value `token` stands for.
    pub fn reveal(&self, token: &str) -> Option<String> {
        self.lock().by_token.get(token).cloned()
    }

    /// `text` with every known token replaced by its value (to show a
    /// reply to the user it concerns); unknown tokens are left as they are.
    pub fn reveal_text(&self, text: &str) -> String {
        static TOKEN: std::sync::LazyLock<Option<Regex>> =
            std::sync::LazyLock::new(|| Regex::new(r"\[(?:EMAIL|PHONE|SSN|CARD)_\d{1,20}\]").ok());
        let Some(re) = TOKEN.as_ref() else {
            return text.to_owned();
        };
        let inner = self.lock();
        re.replace_all(text, |c: &regex::Captures<'_>| {
            let t = c.get(0).map_or("", |m| m.as_str());
            inner
                .by_token
                .get(t)
                .cloned()
                .unwrap_or_else(|| t.to_owned())
        })
        .into_owned()
    }

    /// How many values it holds.
    pub fn len(&self) -> usize {
        self.lock().by_token.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most values it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many values were masked because the vault was full.
    pub fn overflowed(&self) -> u64 {
        self.lock().overflowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stable_per_kind_and_bounded() {
        let v = Vault::with_capacity(3);
        assert_eq!(v.tokenize(PiiKind::Email, "a@x.io"), "[EMAIL_1]");
        assert_eq!(v.tokenize(PiiKind::Phone, "555-123-4567"), "[PHONE_1]");
        assert_eq!(v.tokenize(PiiKind::Email, "b@x.io"), "[EMAIL_2]");
        assert_eq!(v.tokenize(PiiKind::Email, "a@x.io"), "[EMAIL_1]");
        assert_eq!(
            v.tokenize(PiiKind::Card, "4111111111111111"),
            "[REDACTED_CARD]"
        );
        assert_eq!(v.overflowed(), 1);
        assert_eq!(v.len(), 3);
        assert_eq!(v.reveal("[EMAIL_2]").as_deref(), Some("b@x.io"));
        assert_eq!(v.reveal("[EMAIL_9]"), None);
        assert_eq!(
            v.reveal_text("[EMAIL_1], [PHONE_1], [EMAIL_7]"),
            "a@x.io, 555-123-4567, [EMAIL_7]"
        );
        let dbg = format!("{v:?}");
        assert!(!dbg.contains("a@x.io"), "{dbg}");
        assert!(dbg.contains("entries: 3"));
        assert_eq!(
            Vault::with_capacity(usize::MAX).capacity(),
            MAX_VAULT_ENTRIES
        );
    }
}
