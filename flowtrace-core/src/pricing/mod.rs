//! Prices of models and exact cost computation.
//!
//! A [`Pricing`] answers "what does this provider's model cost per million
//! tokens"; [`ModelPrice::cost`] turns a [`TokenUsage`] into an exact
//! [`Cost`]. [`PriceTable`] is the default implementation: a built-in table
//! for common models that JSON can extend or override.

mod cost;
mod ledger;
mod table;

pub use cost::{Cost, CostOverflow, ParseAmountError, TokenUsage};
pub(crate) use ledger::{Amount, Ledger};
pub use table::{BUILTIN_PRICES_AS_OF, PriceTable, PriceTableError};

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A price in US dollars per million tokens, held exactly as an integer
/// number of microdollars per million tokens (at most six decimal places).
///
/// ```
/// use flowtrace_core::pricing::PerMillion;
/// let p: PerMillion = "0.075".parse().unwrap();
/// assert_eq!(p.microdollars(), 75_000);
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PerMillion(u64);

impl PerMillion {
    /// Free.
    pub const ZERO: PerMillion = PerMillion(0);

    /// A price of `micros` microdollars per million tokens.
    pub const fn from_microdollars(micros: u64) -> Self {
        PerMillion(micros)
    }

    /// The price in microdollars per million tokens.
    pub const fn microdollars(self) -> u64 {
        self.0
    }

    /// The exact cost of `tokens` tokens at this price.
    ///
    /// One microdollar per million tokens is one picodollar per token, so this
    /// is a single integer multiplication. It cannot overflow: the product of
    /// two `u64`s is below `u128::MAX`, so it is exact for every input.
    pub const fn cost_of(self, tokens: u64) -> Cost {
        // Lossless widenings; (2⁶⁴ − 1)² < 2¹²⁸.
        Cost::from_picodollars(tokens as u128 * self.0 as u128)
    }
}

impl std::str::FromStr for PerMillion {
    type Err = ParseAmountError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let micros = cost::parse_decimal(s, 6)?;
        u64::try_from(micros)
            .map(PerMillion)
            .map_err(|_| ParseAmountError {
                input: s.to_string(),
                reason: cost::TOO_LARGE,
            })
    }
}

impl fmt::Display for PerMillion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1_000_000;
        let frac = self.0 % 1_000_000;
        if frac == 0 {
            write!(f, "${whole}/M")
        } else {
            let digits = format!("{frac:06}");
            write!(f, "${whole}.{}/M", digits.trim_end_matches('0'))
        }
    }
}

impl fmt::Debug for PerMillion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PerMillion({self})")
    }
}

impl Serialize for PerMillion {
    /// Serializes as a JSON number of dollars per million tokens (exact: at
    /// most six decimals, which `f64` represents in its shortest form).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self.to_string();
        let plain = text.trim_start_matches('$').trim_end_matches("/M");
        match plain.parse::<f64>() {
            Ok(v) => serializer.serialize_f64(v),
            Err(_) => serializer.serialize_str(plain),
        }
    }
}

impl<'de> Deserialize<'de> for PerMillion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let micros = cost::deserialize_decimal(d, 6)?;
        u64::try_from(micros)
            .map(PerMillion)
            .map_err(|_| serde::de::Error::custom(format!("price {}", cost::TOO_LARGE)))
    }
}

/// What one model costs, per million tokens of each kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPrice {
    /// Uncached prompt tokens.
    pub input_per_million: PerMillion,
    /// Prompt tokens read from the provider's cache. Defaults to the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_million: Option<PerMillion>,
    /// Prompt tokens written to the provider's cache. Defaults to the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_million: Option<PerMillion>,
    /// Completion tokens.
    pub output_per_million: PerMillion,
}

impl ModelPrice {
    /// A price with the given input and output prices and cache prices equal
    /// to the input price.
    pub const fn new(input: PerMillion, output: PerMillion) -> Self {
        Self {
            input_per_million: input,
            cached_input_per_million: None,
            cache_write_per_million: None,
            output_per_million: output,
        }
    }

    /// Sets the price of cached prompt tokens.
    pub const fn with_cached_input(mut self, price: PerMillion) -> Self {
        self.cached_input_per_million = Some(price);
        self
    }

    /// Sets the price of prompt tokens written to the cache.
    pub const fn with_cache_write(mut self, price: PerMillion) -> Self {
        self.cache_write_per_million = Some(price);
        self
    }

    /// The exact cost of `usage` at this price.
    ///
    /// ```
    /// use flowtrace_core::{Cost, TokenUsage};
    /// use flowtrace_core::pricing::{ModelPrice, PerMillion};
    /// // gpt-4o-mini: $0.15 in, $0.075 cached, $0.60 out per million tokens
    /// let price = ModelPrice::new(PerMillion::from_microdollars(150_000), PerMillion::from_microdollars(600_000))
    ///     .with_cached_input(PerMillion::from_microdollars(75_000));
    /// let usage = TokenUsage { input_tokens: 1_000, cached_input_tokens: 400, output_tokens: 200, ..Default::default() };
    /// // (600 × 0.15 + 400 × 0.075 + 200 × 0.60) / 1,000,000 = $0.00024
    /// assert_eq!(price.cost(&usage)?, "0.00024".parse::<Cost>()?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`CostOverflow`] when the total would pass [`Cost::MAX`] (about
    /// 3.4 × 10²⁶ dollars), which takes token counts and prices near
    /// `u64::MAX`; each kind of token alone always fits.
    pub fn cost(&self, usage: &TokenUsage) -> Result<Cost, CostOverflow> {
        let cached = usage.cached_input_tokens.min(usage.input_tokens);
        let written = usage
            .cache_write_tokens
            .min(usage.input_tokens.saturating_sub(cached));
        let uncached = usage.input_tokens - cached - written;
        [
            self.input_per_million.cost_of(uncached),
            self.cached_input_per_million
                .unwrap_or(self.input_per_million)
                .cost_of(cached),
            self.cache_write_per_million
                .unwrap_or(self.input_per_million)
                .cost_of(written),
            self.output_per_million.cost_of(usage.output_tokens),
        ]
        .into_iter()
        .try_fold(Cost::ZERO, Cost::checked_add)
        .ok_or(CostOverflow)
    }
}

/// Looks up the price of a provider's model.
///
/// Implement it to plug in prices from your own billing system; the default
/// is [`PriceTable::builtin`].
pub trait Pricing: Send + Sync + fmt::Debug {
    /// The price of `model` served by `provider`, or `None` when unknown.
    fn price(&self, provider: &str, model: &str) -> Option<ModelPrice>;
}

impl<P: Pricing + ?Sized> Pricing for std::sync::Arc<P> {
    fn price(&self, provider: &str, model: &str) -> Option<ModelPrice> {
        (**self).price(provider, model)
    }
}

/// What to do when a model call's model has no price.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MissingPrice {
    /// Count the call as free and emit a warning `log` event (the default).
    #[default]
    ZeroWithWarning,
    /// Fail the call (and its step, permanently) with [`crate::Error::MissingPrice`].
    Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cost_of_any_token_count_at_any_price_is_exact() {
        let max = PerMillion::from_microdollars(u64::MAX);
        assert_eq!(
            max.cost_of(u64::MAX).picodollars(),
            u128::from(u64::MAX) * u128::from(u64::MAX)
        );
        // Past the old u64 picodollar ceiling ($18.4M): 10¹² tokens at $100/M.
        let price = ModelPrice::new("100".parse().unwrap(), PerMillion::ZERO);
        assert_eq!(
            price.cost(&TokenUsage::new(1_000_000_000_000, 0)),
            Ok("100000000".parse().unwrap())
        );
    }

    #[test]
    fn a_usage_whose_cost_passes_cost_max_is_an_error() {
        let max = PerMillion::from_microdollars(u64::MAX);
        let price = ModelPrice::new(max, max);
        let usage = TokenUsage::new(u64::MAX, u64::MAX);
        assert_eq!(price.cost(&usage), Err(CostOverflow));
        // Input alone fits, whatever its split between cache kinds.
        let split = TokenUsage {
            input_tokens: u64::MAX,
            cached_input_tokens: u64::MAX / 3,
            cache_write_tokens: u64::MAX / 3,
            output_tokens: 0,
        };
        assert_eq!(
            price.cost(&split).map(Cost::picodollars),
            Ok(u128::from(u64::MAX) * u128::from(u64::MAX))
        );
    }

    #[test]
    fn prices_beyond_u64_microdollars_are_rejected() {
        let err = "18446744073709.551616".parse::<PerMillion>().unwrap_err();
        assert_eq!(err.reason, cost::TOO_LARGE);
        assert_eq!(
            "18446744073709.551615".parse::<PerMillion>(),
            Ok(PerMillion::from_microdollars(u64::MAX))
        );
        let err = serde_json::from_str::<PerMillion>("\"18446744073709.551616\"").unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
    }
}
