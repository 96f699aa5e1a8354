//! Why a conversation goes to a human, and how sure the model was.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::HandoverError;

/// Why a conversation was handed over to a human. Serialized in
/// `snake_case`, as in the `handover` event's `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HandoverReason {
    /// The model's confidence fell below the policy's threshold.
    LowConfidence,
    /// The user asked for a human.
    UserRequest,
    /// Too many errors in a row.
    ConsecutiveErrors,
    /// The agent itself decided a human should take over.
    AgentDecision,
}

impl HandoverReason {
    /// Every reason, in declaration order.
    pub const ALL: [HandoverReason; 4] = [
        HandoverReason::LowConfidence,
        HandoverReason::UserRequest,
        HandoverReason::ConsecutiveErrors,
        HandoverReason::AgentDecision,
    ];

    /// The serialized name (`low_confidence`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            HandoverReason::LowConfidence => "low_confidence",
            HandoverReason::UserRequest => "user_request",
            HandoverReason::ConsecutiveErrors => "consecutive_errors",
            HandoverReason::AgentDecision => "agent_decision",
        }
    }
}

impl fmt::Display for HandoverReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The longest confidence text [`Confidence::from_str`] reads, in bytes.
pub const MAX_CONFIDENCE_TEXT_LEN: usize = 32;

/// A model's confidence, exact, in thousandths (per mille): `0` is none,
/// `1000` is certain. Parsed from decimal text without going through `f64`,
/// so `0.7` is exactly 700 and comparisons never suffer rounding.
///
/// ```
/// use flowtrace_agents::handover::Confidence;
/// let c: Confidence = "0.85".parse().unwrap();
/// assert_eq!(c.per_mille(), 850);
/// assert_eq!("85%".parse::<Confidence>().unwrap(), c);
/// assert!("1.5".parse::<Confidence>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Confidence(u16);

impl Confidence {
    /// Certainty.
    pub const MAX: Confidence = Confidence(1000);
    /// No confidence at all.
    pub const ZERO: Confidence = Confidence(0);

    /// A confidence of `per_mille` thousandths; `None` above 1000.
    pub const fn from_per_mille(per_mille: u16) -> Option<Self> {
        if per_mille > 1000 {
            None
        } else {
            Some(Confidence(per_mille))
        }
    }

    /// The confidence in thousandths.
    pub const fn per_mille(self) -> u16 {
        self.0
    }

    /// Reads a confidence from a JSON value: a number or a string, either a
    /// decimal fraction in `[0, 1]` (`0.85`) or a percentage (`"85%"`).
    /// Numbers are read from their decimal text, never via `f64`
    /// arithmetic.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, HandoverError> {
        match value {
            serde_json::Value::Number(n) => n.to_string().parse(),
            serde_json::Value::String(s) => s.parse(),
            other => Err(HandoverError::InvalidConfidence {
                text: json_type(other).to_owned(),
            }),
        }
    }
}

fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

impl fmt::Display for Confidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

impl FromStr for Confidence {
    type Err = HandoverError;

    /// Parses `0.85`, `1`, `.5`, `0.8512` (digits past the third decimal
    /// are truncated, never rounded up) or a percentage `85%` / `85.5%`.
    /// Surrounding whitespace is ignored; text longer than
    /// [`MAX_CONFIDENCE_TEXT_LEN`] is refused.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || HandoverError::InvalidConfidence {
            text: s.chars().take(MAX_CONFIDENCE_TEXT_LEN).collect(),
        };
        if s.len() > MAX_CONFIDENCE_TEXT_LEN {
            return Err(bad());
        }
        let t = s.trim();
        let (t, percent) = match t.strip_suffix('%') {
            Some(rest) => (rest.trim_end(), true),
            None => (t, false),
        };
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        if (int.is_empty() && frac.is_empty())
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        // Thousandths of a fraction, or tenths of a percent: both are the
        // integer part times 1000 (or 10) plus the leading fraction digits.
        let (int_scale, frac_digits) = if percent { (10u32, 1) } else { (1000u32, 3) };
        let int_value: u32 = if int.is_empty() {
            0
        } else {
            // At most 32 digits; anything above 1000 is refused below, so
            // saturating is exact enough.
            int.bytes().fold(0u32, |acc, b| {
                acc.saturating_mul(10).saturating_add(u32::from(b - b'0'))
            })
        };
        let mut frac_value = 0u32;
        for i in 0..frac_digits {
            let d = frac.as_bytes().get(i).map_or(0, |b| u32::from(b - b'0'));
            frac_value = frac_value * 10 + d;
        }
        let total = int_value
            .saturating_mul(int_scale)
            .saturating_add(frac_value);
        u16::try_from(total)
            .ok()
            .and_then(Confidence::from_per_mille)
            .ok_or_else(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reasons_serialize_snake_case() {
        for r in HandoverReason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), json!(r.as_str()));
            assert_eq!(r.to_string(), r.as_str());
        }
        assert_eq!(HandoverReason::LowConfidence.as_str(), "low_confidence");
    }

    #[test]
    fn confidence_parses_exactly() {
        let p = |s: &str| s.parse::<Confidence>().map(Confidence::per_mille);
        assert_eq!(p("0.7").unwrap(), 700);
        assert_eq!(p("0.1").unwrap(), 100);
        assert_eq!(p(".5").unwrap(), 500);
        assert_eq!(p("1").unwrap(), 1000);
        assert_eq!(p("1.000").unwrap(), 1000);
        assert_eq!(p("0.8519").unwrap(), 851);
        assert_eq!(p(" 42% ").unwrap(), 420);
        assert_eq!(p("42.5%").unwrap(), 425);
        assert_eq!(p("0").unwrap(), 0);
        for bad in [
            "",
            ".",
            "-0.1",
            "1.001",
            "101%",
            "abc",
            "0.5.5",
            "1e-1",
            "99999999999",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
        assert!(p(&"0".repeat(40)).is_err());
        assert_eq!(
            Confidence::from_json(&json!(0.35)).unwrap().per_mille(),
            350
        );
        assert_eq!(
            Confidence::from_json(&json!("0.35")).unwrap().per_mille(),
            350
        );
        assert_eq!(Confidence::from_json(&json!(1)).unwrap(), Confidence::MAX);
        assert!(Confidence::from_json(&json!(true)).is_err());
        assert_eq!(
            Confidence::from_per_mille(250).unwrap().to_string(),
            "0.250"
        );
        assert!(Confidence::from_per_mille(1001).is_none());
    }

    proptest::proptest! {
        #[test]
        fn confidence_display_round_trips(pm in 0u16..=1000) {
            let c = Confidence::from_per_mille(pm).unwrap();
            proptest::prop_assert_eq!(c.to_string().parse::<Confidence>().unwrap(), c);
        }

        #[test]
        fn confidence_parser_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<Confidence>();
        }
    }
}
