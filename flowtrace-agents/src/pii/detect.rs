//! Finding personal data in text: emails, phone numbers, SSN-like numbers
//! and Luhn-checked card numbers.

use std::fmt;
use std::sync::{Arc, LazyLock};

use regex::{Regex, RegexSet};
use serde::{Deserialize, Serialize};

use super::credentials;
use super::error::PiiError;

/// A kind of personal data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PiiKind {
    /// An email address.
    Email,
    /// A phone number: international (`+` then 8 to 15 digits) or the
    /// North American `NNN-NNN-NNNN` shape (with `(NNN)`, spaces or dots).
    Phone,
    /// An SSN-like number, `NNN-NN-NNNN` (area not 000, 666 or 9xx, group
    /// not 00, serial not 0000).
    Ssn,
    /// A payment card number: 13 to 19 digits, optionally grouped with
    /// spaces or dashes, with a major network's prefix (2, 3, 4, 5 or 6)
    /// and a valid Luhn check digit.
    Card,
}

impl PiiKind {
    /// Every kind.
    pub const ALL: [PiiKind; 4] = [PiiKind::Email, PiiKind::Phone, PiiKind::Ssn, PiiKind::Card];

    /// The mask written in its place (`[REDACTED_EMAIL]`, …).
    pub const fn mask(self) -> &'static str {
        match self {
            PiiKind::Email => "[REDACTED_EMAIL]",
            PiiKind::Phone => "[REDACTED_PHONE]",
            PiiKind::Ssn => "[REDACTED_SSN]",
            PiiKind::Card => "[REDACTED_CARD]",
        }
    }

    /// The token prefix (`EMAIL` in `[EMAIL_1]`).
    pub const fn token_prefix(self) -> &'static str {
        match self {
            PiiKind::Email => "EMAIL",
            PiiKind::Phone => "PHONE",
            PiiKind::Ssn => "SSN",
            PiiKind::Card => "CARD",
        }
    }

    pub(crate) const fn index(self) -> usize {
        match self {
            PiiKind::Email => 0,
            PiiKind::Phone => 1,
            PiiKind::Ssn => 2,
            PiiKind::Card => 3,
        }
    }
}

impl fmt::Display for PiiKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PiiKind::Email => "email",
            PiiKind::Phone => "phone",
            PiiKind::Ssn => "ssn",
            PiiKind::Card => "card",
        })
    }
}

/// One piece of personal data found in a text: its kind and byte range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PiiMatch {
    /// What it is.
    pub kind: PiiKind,
    /// Its first byte.
    pub start: usize,
    /// One past its last byte.
    pub end: usize,
}

impl PiiMatch {
    /// The matched text within the text it was found in.
    pub fn as_str<'t>(&self, text: &'t str) -> &'t str {
        text.get(self.start..self.end).unwrap_or_default()
    }
}

/// Whether `digits` (ASCII digits only) passes the Luhn check. Anything
/// else, or fewer than two digits, fails.
///
/// ```
/// use flowtrace_agents::pii::luhn_valid;
/// assert!(luhn_valid("4111111111111111"));
/// assert!(!luhn_valid("4111111111111112"));
/// ```
pub fn luhn_valid(digits: &str) -> bool {
    if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let dd = d * 2;
                if dd > 9 { dd - 9 } else { dd }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A major card network's prefix: Mastercard 2221–2720 and 51–55, Amex
/// 34/37, Diners 30/36/38, JCB 35, Visa 4, Maestro/Mastercard 5x, Discover
/// and UnionPay 6x.
fn card_prefix_ok(digits: &str) -> bool {
    let b = digits.as_bytes();
    match b.first() {
        Some(b'4' | b'5' | b'6') => true,
        Some(b'3') => matches!(b.get(1), Some(b'0' | b'4' | b'5' | b'6' | b'7' | b'8')),
        Some(b'2') => digits
            .get(..4)
            .and_then(|p| p.parse::<u16>().ok())
            .is_some_and(|p| (2221..=2720).contains(&p)),
        _ => false,
    }
}

// ===== Patterns =====

const EMAIL: &str = r"\b[A-Za-z0-9][A-Za-z0-9._%+\-]*@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}\b";
const SSN: &str = r"\b(\d{3})-(\d{2})-(\d{4})\b";
/// A whole run of digits joined by single spaces or dashes; the card
/// numbers are then looked for among its digit groups.
const CARD: &str = r"\b\d(?:[ \-]?\d){12,}\b";
const PHONE_INTL: &str = r"\+\d{1,3}[ .\-]?(?:\(\d{1,4}\)[ .\-]?)?\d{1,4}(?:[ .\-]?\d{1,4}){1,5}\b";
const PHONE_LOCAL: &str = r"(?:\(\d{3}\)[ .\-]?|\b\d{3}[ .\-])\d{3}[ .\-]\d{4}\b";

/// The compiled patterns, shared by every detector.
#[derive(Debug)]
pub(crate) struct Patterns {
    /// Any PII or credential pattern: the cheap first pass.
    pub(crate) any: RegexSet,
    email: Regex,
    ssn: Regex,
    card: Regex,
    phone_intl: Regex,
    phone_local: Regex,
    pub(crate) credentials: credentials::Patterns,
}

fn compile() -> Result<Arc<Patterns>, PiiError> {
    let re = |name: &'static str, p: &str| {
        Regex::new(p).map_err(|source| PiiError::Pattern { name, source })
    };
    let credentials = credentials::Patterns::compile()?;
    let mut all: Vec<&str> = vec![EMAIL, SSN, CARD, PHONE_INTL, PHONE_LOCAL];
    all.extend(credentials::PATTERNS);
    Ok(Arc::new(Patterns {
        any: RegexSet::new(all).map_err(|source| PiiError::Pattern {
            name: "any",
            source,
        })?,
        email: re("email", EMAIL)?,
        ssn: re("ssn", SSN)?,
        card: re("card", CARD)?,
        phone_intl: re("phone_intl", PHONE_INTL)?,
        phone_local: re("phone_local", PHONE_LOCAL)?,
        credentials,
    }))
}

static PATTERNS: LazyLock<Result<Arc<Patterns>, PiiError>> = LazyLock::new(compile);

pub(crate) fn patterns() -> Result<Arc<Patterns>, PiiError> {
    PATTERNS.as_ref().map(Arc::clone).map_err(Clone::clone)
}

/// Finds personal data in text. Cheap to create and clone (the compiled
/// patterns are shared).
///
/// ```
/// use flowtrace_agents::pii::{Detector, PiiKind};
/// let d = Detector::new().unwrap();
/// let text = "mail ana@example.com or call +44 20 7946 0958, card 4111 1111 1111 1111";
/// let kinds: Vec<PiiKind> = d.find(text).iter().map(|m| m.kind).collect();
/// assert_eq!(kinds, [PiiKind::Email, PiiKind::Phone, PiiKind::Card]);
/// assert!(d.find("order 2024-06-01, id 123456, total 1,299.00").is_empty());
/// ```
#[derive(Clone, Debug)]
pub struct Detector {
    patterns: Arc<Patterns>,
}

impl Detector {
    /// A detector; fails only if the built-in patterns do not compile.
    pub fn new() -> Result<Self, PiiError> {
        Ok(Self {
            patterns: patterns()?,
        })
    }

    pub(crate) fn patterns(&self) -> &Patterns {
        &self.patterns
    }

    /// Every piece of personal data in `text`, in order, without overlaps
    /// (at one position the longest match wins). Scans all of `text`; the
    /// redactor bounds the length it passes in.
    pub fn find(&self, text: &str) -> Vec<PiiMatch> {
        let mut found = Vec::new();
        self.find_into(text, &mut found);
        resolve_overlaps(&mut found);
        found
    }

    /// Appends every candidate match (overlaps included) to `out`.
    pub(crate) fn find_into(&self, text: &str, out: &mut Vec<PiiMatch>) {
        let p = &self.patterns;
        let push =
            |out: &mut Vec<PiiMatch>, kind, start, end| out.push(PiiMatch { kind, start, end });
        for m in p.email.find_iter(text) {
            push(out, PiiKind::Email, m.start(), m.end());
        }
        for c in p.ssn.captures_iter(text) {
            let (Some(all), Some(area), Some(group), Some(serial)) =
                (c.get(0), c.get(1), c.get(2), c.get(3))
            else {
                continue;
            };
            let (area, group, serial) = (area.as_str(), group.as_str(), serial.as_str());
            if area != "000"
                && area != "666"
                && !area.starts_with('9')
                && group != "00"
                && serial != "0000"
            {
                push(out, PiiKind::Ssn, all.start(), all.end());
            }
        }
        for m in p.card.find_iter(text) {
            card_matches(text, m.start(), m.end(), out);
        }
        for m in p.phone_intl.find_iter(text) {
            let digits = m.as_str().bytes().filter(u8::is_ascii_digit).count();
            if (8..=15).contains(&digits) {
                push(out, PiiKind::Phone, m.start(), m.end());
            }
        }
        for m in p.phone_local.find_iter(text) {
            push(out, PiiKind::Phone, m.start(), m.end());
        }
    }
}

/// Within a run of digit groups, from each group the longest run of whole
/// groups that is a valid card number (so a card next to other numbers is
/// still found).
fn card_matches(text: &str, start: usize, end: usize, out: &mut Vec<PiiMatch>) {
    let span = &text[start..end];
    // Digit groups: (byte start, byte end) relative to `span`.
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut group_start = None;
    for (i, b) in span.bytes().enumerate() {
        match (b.is_ascii_digit(), group_start) {
            (true, None) => group_start = Some(i),
            (false, Some(s)) => {
                groups.push((s, i));
                group_start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = group_start {
        groups.push((s, span.len()));
    }
    let mut i = 0;
    let mut digits = String::with_capacity(19);
    while i < groups.len() {
        // The longest run of whole groups from `i` that is a card.
        let mut found = None;
        digits.clear();
        for (j, &(s, e)) in groups.iter().enumerate().skip(i) {
            digits.push_str(&span[s..e]);
            if digits.len() > 19 {
                break;
            }
            if digits.len() >= 13 && card_prefix_ok(&digits) && luhn_valid(&digits) {
                found = Some(j);
            }
        }
        // Every start is tried, even inside a found card: the caller keeps
        // one of overlapping matches (another kind may win the first).
        if let Some(j) = found {
            out.push(PiiMatch {
                kind: PiiKind::Card,
                start: start + groups[i].0,
                end: start + groups[j].1,
            });
        }
        i += 1;
    }
}

/// Sorts by start and drops every match overlapping an earlier kept one
/// (at the same start, the longest is kept).
pub(crate) fn resolve_overlaps(found: &mut Vec<PiiMatch>) {
    found.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
    let mut kept_end = 0;
    found.retain(|m| {
        if m.start >= kept_end {
            kept_end = m.end;
            true
        } else {
            false
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(PiiKind, String)> {
        Detector::new()
            .unwrap()
            .find(text)
            .iter()
            .map(|m| (m.kind, m.as_str(text).to_owned()))
            .collect()
    }

    #[test]
    fn luhn() {
        for ok in [
            "4111111111111111",
            "5555555555554444",
            "378282246310005",
            "6011111111111117",
            "79927398713",
        ] {
            assert!(luhn_valid(ok), "{ok}");
        }
        for bad in [
            "4111111111111112",
            "1234567812345678",
            "",
            "0",
            "41111x1111111111",
        ] {
            assert!(!luhn_valid(bad), "{bad}");
        }
    }

    #[test]
    fn cards_are_found_only_when_valid() {
        for card in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "5555 5555 5555 4444",
            "3782 822463 10005",
            "6011 1111 1111 1117",
            "2223 0031 2200 3222",
            "4222222222222",
        ] {
            assert_eq!(
                kinds(&format!("pay with {card} today")),
                [(PiiKind::Card, card.to_owned())],
                "{card}"
            );
        }
        for not_card in [
            "4111 1111 1111 1112",
            "1234 5678 1234 5670",
            "1733412345678",
            "0000 0000 0000 0000",
            "4111 1111 111",
        ] {
            assert!(
                kinds(not_card).iter().all(|(k, _)| *k != PiiKind::Card),
                "{not_card}"
            );
        }
        // A card next to other numbers is still found.
        assert_eq!(
            kinds("4111 1111 1111 1111 5"),
            [(PiiKind::Card, "4111 1111 1111 1111".to_owned())]
        );
        assert_eq!(
            kinds("12 34 4000 0000 0000 6 7 8 9 10"),
            [(PiiKind::Card, "4000 0000 0000 6".to_owned())]
        );
        assert_eq!(
            kinds("123-45-6789 4000 0000 0000 6"),
            [
                (PiiKind::Ssn, "123-45-6789".to_owned()),
                (PiiKind::Card, "4000 0000 0000 6".to_owned())
            ]
        );
    }

    #[test]
    fn emails_phones_and_ssns() {
        assert_eq!(
            kinds("Ana.B+x@mail.example.co.uk!"),
            [(PiiKind::Email, "Ana.B+x@mail.example.co.uk".into())]
        );
        assert_eq!(
            kinds("call (555) 123-4567"),
            [(PiiKind::Phone, "(555) 123-4567".into())]
        );
        assert_eq!(
            kinds("call 555.123.4567."),
            [(PiiKind::Phone, "555.123.4567".into())]
        );
        assert_eq!(
            kinds("tel +1 555 123 4567"),
            [(PiiKind::Phone, "+1 555 123 4567".into())]
        );
        assert_eq!(
            kinds("tel +33 6 12 34 56 78"),
            [(PiiKind::Phone, "+33 6 12 34 56 78".into())]
        );
        assert_eq!(
            kinds("tel +4915112345678"),
            [(PiiKind::Phone, "+4915112345678".into())]
        );
        assert_eq!(
            kinds("ssn 123-45-6789"),
            [(PiiKind::Ssn, "123-45-6789".into())]
        );
        for not_ssn in [
            "000-12-3456",
            "666-12-3456",
            "912-12-3456",
            "123-00-4567",
            "123-45-0000",
        ] {
            assert!(kinds(not_ssn).is_empty(), "{not_ssn}");
        }
    }

    #[test]
    fn ordinary_numbers_are_left_alone() {
        for text in [
            "2024-06-01",
            "01/06/2024 12:30:45",
            "2026-12-05T22:33:48.123456Z",
            "version 1.2.3",
            "invoice INV-2024-00017",
            "order #123456789",
            "total 1,234,567.89 EUR",
            "unix 1733412345 and 1733412345678",
            "uuid 550e8400-e29b-41d4-a716-446655440000",
            "step 3 of 10, 42 tokens, +5 points",
            "ip 192.168.100.200",
            "user@localhost",
            "x = 12345678901234567890123",
        ] {
            assert!(kinds(text).is_empty(), "{text}: {:?}", kinds(text));
        }
    }

    #[test]
    fn overlaps_keep_the_longest_at_a_position() {
        let mut m = vec![
            PiiMatch {
                kind: PiiKind::Phone,
                start: 5,
                end: 9,
            },
            PiiMatch {
                kind: PiiKind::Card,
                start: 0,
                end: 10,
            },
            PiiMatch {
                kind: PiiKind::Email,
                start: 10,
                end: 12,
            },
        ];
        resolve_overlaps(&mut m);
        assert_eq!(
            m.iter().map(|m| m.kind).collect::<Vec<_>>(),
            [PiiKind::Card, PiiKind::Email]
        );
    }
}
