//! Exact money and token arithmetic.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign};

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const PICOS_PER_USD: u128 = 1_000_000_000_000;
const PICOS_PER_MICRO: u128 = 1_000_000;

/// An amount of US dollars, held exactly as an integer number of picodollars
/// (10⁻¹² USD) in a `u128`.
///
/// Every price FlowTrace accepts has at most six decimal places per million
/// tokens, so the cost of any number of tokens is an exact integer number of
/// picodollars: no rounding ever happens, and totals equal the exact sum of
/// their parts.
///
/// # Range and overflow
/// The largest amount, [`Cost::MAX`], is about 3.4 × 10²⁶ dollars
/// (`340282366920938463463374607.431768211455`): the cost of any `u64`
/// number of tokens at any `u64` price fits, and so does any sum of real
/// charges. Overflow is never silent:
/// - [`checked_add`](Cost::checked_add) and [`checked_mul`](Cost::checked_mul)
///   return `None`, and pricing a usage
///   ([`ModelPrice::cost`](crate::pricing::ModelPrice::cost)) returns a
///   [`CostOverflow`] error;
/// - parsing and deserializing reject larger amounts with an error;
/// - `+`, `+=` and [`Sum`] never panic: should a sum ever pass `Cost::MAX`,
///   which takes amounts no pricing of `u64` token counts produces, they
///   stop at `Cost::MAX` and log the overflow at `ERROR` level through
///   `tracing`. Add untrusted amounts with `checked_add` (or
///   `iter.try_fold(Cost::ZERO, Cost::checked_add)`) to handle it yourself.
///
/// The only other non-exact operation is
/// [`saturating_sub`](Cost::saturating_sub), which stops at zero.
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
/// assert_eq!(Cost::MAX.checked_add(Cost::from_picodollars(1)), None);
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cost(u128);

impl Cost {
    /// Zero dollars.
    pub const ZERO: Cost = Cost(0);

    /// The largest amount: `u128::MAX` picodollars, about 3.4 × 10²⁶ dollars.
    pub const MAX: Cost = Cost(u128::MAX);

    /// A cost of `picos` picodollars.
    pub const fn from_picodollars(picos: u128) -> Self {
        Cost(picos)
    }

    /// A cost of `micros` microdollars (10⁻⁶ USD). Exact for every `u64`.
    pub const fn from_microdollars(micros: u64) -> Self {
        // Lossless widening; u64::MAX × 10⁶ is far below u128::MAX.
        Cost(micros as u128 * PICOS_PER_MICRO)
    }

    /// The amount in picodollars.
    pub const fn picodollars(self) -> u128 {
        self.0
    }

    /// Whether the amount is zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Adds, or `None` if the sum would pass [`Cost::MAX`].
    pub const fn checked_add(self, other: Cost) -> Option<Cost> {
        match self.0.checked_add(other.0) {
            Some(v) => Some(Cost(v)),
            None => None,
        }
    }

    /// Multiplies by `n` (say, a number of identical calls), or `None` if
    /// the product would pass [`Cost::MAX`].
    pub const fn checked_mul(self, n: u128) -> Option<Cost> {
        match self.0.checked_mul(n) {
            Some(v) => Some(Cost(v)),
            None => None,
        }
    }

    /// Subtracts, or `None` if `other` is larger (a `Cost` is never negative).
    pub const fn checked_sub(self, other: Cost) -> Option<Cost> {
        match self.0.checked_sub(other.0) {
            Some(v) => Some(Cost(v)),
            None => None,
        }
    }

    /// Subtracts, stopping at zero.
    ///
    /// Meant for taking one amount off another that should contain it, such
    /// as giving back a budget reservation or computing what is left under
    /// a limit: there, "nothing left" is the right answer when `other` is
    /// larger.
    pub const fn saturating_sub(self, other: Cost) -> Cost {
        Cost(self.0.saturating_sub(other.0))
    }

    /// The amount as an `f64` number of dollars, for display and plotting only:
    /// never accumulate these (and large amounts lose their cents).
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
            digits.get(..2).unwrap_or("00")
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

/// A computation on money would have passed [`Cost::MAX`] (about 3.4 × 10²⁶
/// dollars).
///
/// Returned instead of a clamped or wrapped amount, so a total is either
/// exact or an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error(
    "cost overflow: the amount would exceed the largest representable cost, {}",
    Cost::MAX
)]
#[non_exhaustive]
pub struct CostOverflow;

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

/// Why an amount beyond the representable range is rejected.
pub(crate) const TOO_LARGE: &str = "too large: beyond the largest representable amount";

/// Parses a non-negative decimal with at most `scale` fractional digits into
/// an integer count of 10⁻`scale` units.
pub(crate) fn parse_decimal(input: &str, scale: u32) -> Result<u128, ParseAmountError> {
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
    let unit = 10u128.pow(scale);
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| err(TOO_LARGE))?
    };
    // At most `scale` (≤ 12) digits: always fits.
    let frac_units: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse()
            .map_err(|_| err("not a plain decimal number"))?
    };
    let frac_units = frac_units * 10u128.pow(scale - frac.len() as u32);
    whole
        .checked_mul(unit)
        .and_then(|w| w.checked_add(frac_units))
        .ok_or_else(|| err(TOO_LARGE))
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
    /// Parses dollars (`"0.25"`, `"$3"`), up to twelve decimal places and up
    /// to [`Cost::MAX`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_decimal(s, 12).map(Cost)
    }
}

/// Logs a `+`/`Sum` overflow and returns the clamped amount (see the
/// "Range and overflow" section of [`Cost`]).
#[cold]
fn overflowed() -> Cost {
    tracing::error!(
        max = %Cost::MAX,
        "cost overflow: a sum of costs passed Cost::MAX and was clamped to it; \
         use Cost::checked_add to handle this"
    );
    Cost::MAX
}

impl Add for Cost {
    type Output = Cost;
    /// Exact; see the "Range and overflow" section of [`Cost`] for the sum
    /// that cannot be represented.
    fn add(self, rhs: Cost) -> Cost {
        self.checked_add(rhs).unwrap_or_else(overflowed)
    }
}

impl AddAssign for Cost {
    fn add_assign(&mut self, rhs: Cost) {
        *self = *self + rhs;
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
    type Value = u128;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a non-negative decimal number with at most {} decimal places",
            self.scale
        )
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u128, E> {
        parse_decimal(v, self.scale).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u128, E> {
        self.visit_u128(u128::from(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<u128, E> {
        v.checked_mul(10u128.pow(self.scale))
            .ok_or_else(|| E::custom(format!("amount {TOO_LARGE}")))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u128, E> {
        self.visit_i128(i128::from(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<u128, E> {
        u128::try_from(v)
            .map_err(|_| E::custom("amount must not be negative"))
            .and_then(|v| self.visit_u128(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u128, E> {
        if !v.is_finite() {
            return Err(E::custom("amount must be finite"));
        }
        parse_decimal(&float_to_decimal_text(v), self.scale).map_err(E::custom)
    }
}

pub(crate) fn deserialize_decimal<'de, D: Deserializer<'de>>(
    d: D,
    scale: u32,
) -> Result<u128, D::Error> {
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
        assert_eq!(
            "999999999999999999999999999"
                .parse::<Cost>()
                .unwrap_err()
                .reason,
            TOO_LARGE
        );
    }

    #[test]
    fn sums_past_the_old_u64_ceiling_are_exact() {
        // u64 picodollars topped out at about $18.4M and saturated there.
        let big: Cost = "20000000".parse().unwrap();
        let total = big + Cost::from_picodollars(1);
        assert_eq!(total.to_decimal_string(), "20000000.000000000001");
        assert_eq!(total.to_string(), "$20000000.000000000001");
        assert_eq!(total.picodollars(), 20_000_000 * PICOS_PER_USD + 1);
        let many: Cost = std::iter::repeat_n(total, 1_000).sum();
        assert_eq!(many.to_decimal_string(), "20000000000.000000001");
        assert_eq!(
            big.checked_mul(1_000_000),
            Some("20000000000000".parse().unwrap())
        );
    }

    #[test]
    fn a_25_digit_amount_round_trips() {
        let text = "1234567890123456789012345.678901234567";
        let c: Cost = text.parse().unwrap();
        assert_eq!(c.to_decimal_string(), text);
        assert_eq!(c.to_string(), format!("${text}"));
        assert_eq!(c.to_string().parse::<Cost>().unwrap(), c);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<Cost>(&json).unwrap(), c);
    }

    #[test]
    fn overflow_beyond_u128_is_an_error_not_a_saturation() {
        let max = "340282366920938463463374607.431768211455";
        assert_eq!(Cost::MAX.to_decimal_string(), max);
        assert_eq!(max.parse::<Cost>().unwrap(), Cost::MAX);
        let err = "340282366920938463463374607.431768211456"
            .parse::<Cost>()
            .unwrap_err();
        assert_eq!(err.reason, TOO_LARGE);
        assert!(err.to_string().contains("too large"), "{err}");
        assert!("1000000000000000000000000000".parse::<Cost>().is_err());
        let err = serde_json::from_str::<Cost>("\"340282366920938463463374608\"").unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");

        let one = Cost::from_picodollars(1);
        assert_eq!(Cost::MAX.checked_add(one), None);
        assert_eq!(Cost::MAX.checked_add(Cost::ZERO), Some(Cost::MAX));
        assert_eq!(Cost::MAX.checked_mul(2), None);
        assert_eq!(Cost::ZERO.checked_sub(one), None);
        assert_eq!(Cost::ZERO.saturating_sub(one), Cost::ZERO);
        assert_eq!(
            [Cost::MAX, one]
                .into_iter()
                .try_fold(Cost::ZERO, Cost::checked_add),
            None
        );
        // `+` never panics: it clamps, and logs the overflow.
        assert_eq!(Cost::MAX + one, Cost::MAX);
    }

    proptest::proptest! {
        #[test]
        fn parse_inverts_display(picos in proptest::prelude::any::<u128>()) {
            let c = Cost::from_picodollars(picos);
            proptest::prop_assert_eq!(c.to_string().parse::<Cost>().unwrap(), c);
            proptest::prop_assert_eq!(c.to_decimal_string().parse::<Cost>().unwrap(), c);
            let json = serde_json::to_string(&c).unwrap();
            proptest::prop_assert_eq!(serde_json::from_str::<Cost>(&json).unwrap(), c);
        }

        #[test]
        fn checked_add_is_exact_or_none(a in proptest::prelude::any::<u128>(), b in proptest::prelude::any::<u128>()) {
            let sum = Cost::from_picodollars(a).checked_add(Cost::from_picodollars(b));
            proptest::prop_assert_eq!(sum.map(Cost::picodollars), a.checked_add(b));
        }
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
        // Past u64 as a JSON number: read as a float, written exactly.
        let from_big: Cost = serde_json::from_str("25000000000000000000").unwrap();
        assert_eq!(from_big.to_decimal_string(), "25000000000000000000");
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
