//! Properties: Luhn-valid numbers are always found, redaction is
//! idempotent, and redacted text never holds the original email.

use std::sync::Arc;

use flowtrace_agents::pii::{Detector, PiiKind, PiiRedactor, RedactionMode, Vault, luhn_valid};
use proptest::prelude::*;

/// The Luhn check digit for `body`.
fn check_digit(body: &[u8]) -> u8 {
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(*d);
            if i % 2 == 0 {
                let dd = d * 2;
                if dd > 9 { dd - 9 } else { dd }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// A Luhn-valid card number of 13 to 19 digits with a Visa, Mastercard or
/// Discover prefix, optionally grouped by 4 with spaces or dashes.
fn card() -> impl Strategy<Value = (String, String)> {
    (
        prop::sample::select(vec![vec![4u8], vec![5, 1], vec![5, 5], vec![6, 0, 1, 1]]),
        13usize..=19,
        prop::collection::vec(0u8..10, 19),
        prop::sample::select(vec!["", " ", "-"]),
    )
        .prop_map(|(prefix, len, fill, sep)| {
            let mut body = prefix.clone();
            body.extend(&fill[..len - 1 - prefix.len()]);
            let check = check_digit(&body);
            body.push(check);
            let digits: String = body.iter().map(|d| char::from(b'0' + d)).collect();
            let grouped = digits
                .as_bytes()
                .chunks(4)
                .map(|c| std::str::from_utf8(c).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(sep);
            (digits, grouped)
        })
}

fn email() -> impl Strategy<Value = String> {
    (
        "[a-z][a-z0-9._]{0,12}[a-z0-9]",
        "[a-z][a-z0-9-]{0,10}[a-z0-9]",
        "(com|org|io|de|co\\.uk)",
    )
        .prop_map(|(user, host, tld)| format!("{user}@{host}.{tld}"))
}

/// Ordinary words and numbers around the values.
fn filler() -> impl Strategy<Value = String> {
    "[a-zA-Z ,.:;!?]{0,40}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn luhn_valid_cards_are_always_found((digits, grouped) in card(), pre in filler(), post in filler()) {
        prop_assert!(luhn_valid(&digits));
        let text = format!("{pre} {grouped} {post}");
        let found = Detector::new().unwrap().find(&text);
        prop_assert_eq!(found.len(), 1, "{}", text);
        prop_assert_eq!(found[0].kind, PiiKind::Card);
        prop_assert_eq!(found[0].as_str(&text), grouped.as_str());
        let masked = PiiRedactor::new(RedactionMode::Mask).unwrap().redact_text(&text);
        prop_assert!(!masked.contains(&grouped) && masked.contains("[REDACTED_CARD]"));
    }

    #[test]
    fn a_changed_check_digit_is_not_a_card((digits, _) in card(), bump in 1u8..10) {
        let mut bytes = digits.into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = b'0' + (bytes[last] - b'0' + bump) % 10;
        let text = String::from_utf8(bytes).unwrap_or_default();
        let found = Detector::new().unwrap().find(&text);
        prop_assert!(found.iter().all(|m| m.kind != PiiKind::Card), "{}", text);
    }

    #[test]
    fn redacted_text_never_holds_the_email(
        e in email(),
        pre in filler(),
        post in filler(),
        (_, card) in card(),
    ) {
        let text = format!("{pre} <{e}> {post} {card}");
        for mode in [RedactionMode::Mask, RedactionMode::Tokenize(Arc::new(Vault::new()))] {
            let out = PiiRedactor::new(mode).unwrap().redact_text(&text);
            prop_assert!(!out.contains(&e), "{} -> {}", text, out);
            prop_assert!(!out.contains(&card), "{} -> {}", text, out);
        }
    }

    #[test]
    fn redaction_is_idempotent(
        parts in prop::collection::vec(
            prop_oneof![
                filler(),
                email(),
                card().prop_map(|(_, g)| g),
                Just("123-45-6789".to_owned()),
                Just("(555) 123-4567".to_owned()),
                Just("Bearer abcdefgh12345678".to_owned()),
                Just("password=hunter22".to_owned()),
                "[0-9 .:/-]{0,20}",
                "\\PC{0,20}",
            ],
            0..12,
        )
    ) {
        let text = parts.join(" ");
        let vault = Arc::new(Vault::new());
        for r in [
            PiiRedactor::new(RedactionMode::Mask).unwrap(),
            PiiRedactor::new(RedactionMode::Off).unwrap(),
            PiiRedactor::new(RedactionMode::Tokenize(vault.clone())).unwrap(),
        ] {
            let once = r.redact_text(&text);
            let twice = r.redact_text(&once);
            prop_assert_eq!(&once, &twice, "from {}", text);
        }
    }
}
