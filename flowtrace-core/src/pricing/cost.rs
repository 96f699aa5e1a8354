//! Exact money and token arithmetic.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign};

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const PICOS_PER_USD: u64 = 1_000_000_000_000;
const MICROS_PER_USD: u64 = 1_000_000;

/// An amount of US dollars, held exactly as an integer number of picodollars
/// (10⁻¹² USD).
///
/// Every price FlowTrace accepts has at most six decimal places per million
/// tokens, so the cost of any number of tokens is an exact integer number of
/// picodollars: no rounding ever happens, and totals equal the exact sum of
/// their parts. Arithmetic saturates at about 18.4 million dollars instead of
/// wrapping.
///
/// It serializes as a decimal string (`"0.000150"` style, trailing zeros
/// trimmed) so JSON consumers never see a binary floating-point value.
///
/// ```
/// use flowtrace_core::Cost;
/// let a: Cost = "0.10".parse().unwrap();
/// let b: Cost = "0.20".parse().unwrap();
/// assert_eq!((a + b).to_string(), "$0.30");
/// assert_eq!(a + b, "0.3".parse().unwrap());
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cost(u64);

impl Cost {
    /// Zero dollars.
    pub const ZERO: Cost = Cost(0);

    /// A cost of `picos` picodollars.
    pub const fn from_picodollars(picos: u64) -> Self {
        Cost(picos)
    }

    /// A cost of `micros` microdollars (10⁻⁶ USD).
    pub const fn from_microdollars(micros: u64) -> Self {
        Cost(micros.saturating_mul(PICOS_PER_USD / MICROS_PER_USD))
    }

    /// The amount in picodollars.
    pub const fn picodollars(self) -> u64 {
        self.0
    }

    /// Whether the amount is zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Adds, saturating at the maximum representable amount.
    pub const fn saturating_add(self, other: Cost) -> Cost {
        Cost(self.0.saturating_add(other.0))
    }

    /// Subtracts, stopping at zero.
    pub const fn saturating_sub(self, other: Cost) -> Cost {
        Cost(self.0.saturating_sub(other.0))
    }

    /// The amount as an `f64` number of dollars, for display and plotting only:
    /// never accumulate these.
    pub fn as_usd_f64(self) -> f64 {
        self.0 as f64 / PICOS_PER_USD as f64
    }

    /// The exact decimal representation in dollars without a currency sign,
    /// trailing zeros trimmed (`"0.00015"`, `"12"`).
    pub fn to_decimal_string(self) -> String {
        let whole = self.0 / PICOS_PER_USD;
        let frac = self.0 % PICOS_PER_USD;
        if frac == 0 {
            return whole.to_string();
        }
        let digits = format!("{frac:012}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl fmt::Display for Cost {
    /// Dollars with at least two decimals and no trailing zeros beyond them:
    /// `$0.00`, `$1.50`, `$0.000375`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / PICOS_PER_USD;
        let frac = self.0 % PICOS_PER_USD;
        let digits = format!("{frac:012}");
        let trimmed = digits.trim_end_matches('0');
        let shown = if trimmed.len() < 2 {
            &digits[..2]
        } else {
            trimmed
        };
        write!(f, "${whole}.{shown}")
    }
}

impl fmt::Debug for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cost({self})")
    }
}

/// A decimal amount could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid amount {input:?}: {reason}")]
#[non_exhaustive]
pub struct ParseAmountError {
    /// The text that was rejected.
    pub input: String,
    /// Why it was rejected.
    pub reason: &'static str,
}

/// Parses a non-negative decimal with at most `scale` fractional digits into
/// an integer count of 10⁻`scale` units.
pub(crate) fn parse_decimal(input: &str, scale: u32) -> Result<u64, ParseAmountError> {
    let err = |reason| ParseAmountError {
        input: input.to_string(),
        reason,
    };
    let s = input.trim().trim_start_matches('$');
    if s.is_empty() {
        return Err(err("empty"));
    }
    if s.starts_with('-') {
        return Err(err("must not be negative"));
    }
    let (whole, frac) = match s.split_once('.') {
        Some((w, f)) => (w, f),
        None => (s, ""),
    };
    if whole.is_empty() && frac.is_empty() {
        return Err(err("no digits"));
    }
    if !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("not a plain decimal number"));
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > scale as usize {
        return Err(err("too many decimal places"));
    }
    let unit = 10u64.pow(scale);
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| err("too large"))?
    };
    let mut frac_units: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| err("too large"))?
    };
    frac_units *= 10u64.pow(scale - frac.len() as u32);
    whole
        .checked_mul(unit)
        .and_then(|w| w.checked_add(frac_units))
        .ok_or_else(|| err("too large"))
}

/// Turns a JSON float into the decimal text it was written as (shortest
/// round-trip representation), so `0.15` parses as exactly fifteen cents.
pub(crate) fn float_to_decimal_text(v: f64) -> String {
    let s = format!("{v}");
    if s.contains('e') || s.contains('E') {
        // Very small or very large numbers: render with fixed notation.
        format!("{v:.12}")
    } else {
        s
    }
}

impl std::str::FromStr for Cost {
    type Err = ParseAmountError;
    /// Parses dollars (`"0.25"`, `"$3"`), up to twelve decimal places.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_decimal(s, 12).map(Cost)
    }
}

impl Add for Cost {
    type Output = Cost;
    fn add(self, rhs: Cost) -> Cost {
        self.saturating_add(rhs)
    }
}

impl AddAssign for Cost {
    fn add_assign(&mut self, rhs: Cost) {
        *self = self.saturating_add(rhs);
    }
}

impl Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(iter: I) -> Cost {
        iter.fold(Cost::ZERO, Add::add)
    }
}

impl<'a> Sum<&'a Cost> for Cost {
    fn sum<I: Iterator<Item = &'a Cost>>(iter: I) -> Cost {
        iter.copied().sum()
    }
}

impl Serialize for Cost {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_decimal_string())
    }
}

struct DecimalVisitor {
    scale: u32,
}

impl Visitor<'_> for DecimalVisitor {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a non-negative decimal number with at most {} decimal places",
            self.scale
        )
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        parse_decimal(v, self.scale).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        v.checked_mul(10u64.pow(self.scale))
            .ok_or_else(|| E::custom("amount too large"))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v)
            .map_err(|_| E::custom("amount must not be negative"))
            .and_then(|v| self.visit_u64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        if !v.is_finite() {
            return Err(E::custom("amount must be finite"));
        }
        parse_decimal(&float_to_decimal_text(v), self.scale).map_err(E::custom)
    }
}

pub(crate) fn deserialize_decimal<'de, D: Deserializer<'de>>(
    d: D,
    scale: u32,
) -> Result<u64, D::Error> {
    d.deserialize_any(DecimalVisitor { scale })
}

impl<'de> Deserialize<'de> for Cost {
    /// Accepts a decimal string or a JSON number of dollars.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_decimal(d, 12).map(Cost)
    }
}

/// Token counts of one model call, one step or a whole run.
///
/// `input_tokens` counts every prompt token, including those served from the
/// provider's prompt cache (`cached_input_tokens`) and those written to it
/// (`cache_write_tokens`); both are subsets of `input_tokens` billed at their
/// own price.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Prompt tokens, cached ones included.
    #[serde(default)]
    pub input_tokens: u64,
    /// Completion tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Prompt tokens read from the provider's cache (part of `input_tokens`).
    #[serde(default)]
    pub cached_input_tokens: u64,
    /// Prompt tokens written to the provider's cache (part of `input_tokens`).
    #[serde(default)]
    pub cache_write_tokens: u64,
}

impl TokenUsage {
    /// Usage with the given input and output token counts and no caching.
    pub const fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Self {
            input_tokens,
            output_tokens,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
        }
    }

    /// Input plus output tokens.
    pub const fn total(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    /// Whether no token was counted.
    pub const fn is_zero(&self) -> bool {
        self.input_tokens == 0 && self.output_tokens == 0
    }
}

impl Add for TokenUsage {
    type Output = TokenUsage;
    fn add(self, o: TokenUsage) -> TokenUsage {
        TokenUsage {
            input_tokens: self.input_tokens.saturating_add(o.input_tokens),
            output_tokens: self.output_tokens.saturating_add(o.output_tokens),
            cached_input_tokens: self
                .cached_input_tokens
                .saturating_add(o.cached_input_tokens),
            cache_write_tokens: self.cache_write_tokens.saturating_add(o.cache_write_tokens),
        }
    }
}

impl AddAssign for TokenUsage {
    fn add_assign(&mut self, o: TokenUsage) {
        *self = *self + o;
    }
}

impl Sum for TokenUsage {
    fn sum<I: Iterator<Item = TokenUsage>>(iter: I) -> TokenUsage {
        iter.fold(TokenUsage::default(), Add::add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_exactly() {
        let c: Cost = "0.000150".parse().unwrap();
        assert_eq!(c.picodollars(), 150_000_000);
        assert_eq!(c.to_string(), "$0.00015");
        assert_eq!(c.to_decimal_string(), "0.00015");
        assert_eq!(Cost::ZERO.to_string(), "$0.00");
        assert_eq!("1.5".parse::<Cost>().unwrap().to_string(), "$1.50");
        assert_eq!("$3".parse::<Cost>().unwrap().to_decimal_string(), "3");
    }

    #[test]
    fn rejects_bad_amounts_with_reason() {
        assert_eq!(
            "-1".parse::<Cost>().unwrap_err().reason,
            "must not be negative"
        );
        assert_eq!(
            "0.0000000000001".parse::<Cost>().unwrap_err().reason,
            "too many decimal places"
        );
        assert!("abc".parse::<Cost>().is_err());
        assert!("".parse::<Cost>().is_err());
        assert!("99999999999999999999".parse::<Cost>().is_err());
    }

    #[test]
    fn ten_thousand_tenths_of_a_cent_sum_exactly() {
        // 0.001 * 10_000 == 10 exactly; with f64 accumulation this drifts.
        let step: Cost = "0.001".parse().unwrap();
        let total: Cost = std::iter::repeat_n(step, 10_000).sum();
        assert_eq!(total, "10".parse().unwrap());
        let mut f = 0.0f64;
        for _ in 0..10_000 {
            f += 0.001;
        }
        assert_ne!(f, 10.0, "f64 accumulation is inexact, Cost is not");
    }

    #[test]
    fn serde_uses_decimal_strings_and_accepts_numbers() {
        let c: Cost = "0.25".parse().unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"0.25\"");
        let from_num: Cost = serde_json::from_str("0.25").unwrap();
        assert_eq!(from_num, c);
        let from_int: Cost = serde_json::from_str("2").unwrap();
        assert_eq!(from_int.to_decimal_string(), "2");
        assert!(serde_json::from_str::<Cost>("-0.5").is_err());
    }

    #[test]
    fn usage_adds_fieldwise() {
        let a = TokenUsage {
            input_tokens: 10,
            output_tokens: 5,
            cached_input_tokens: 2,
            cache_write_tokens: 1,
        };
        let s: TokenUsage = [a, a].into_iter().sum();
        assert_eq!(s.input_tokens, 20);
        assert_eq!(s.cached_input_tokens, 4);
        assert_eq!(s.total(), 30);
    }
}
