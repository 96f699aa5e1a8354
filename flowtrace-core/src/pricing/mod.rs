//! Prices of models and exact cost computation.
//!
//! A [`Pricing`] answers "what does this provider's model cost per million
//! tokens"; [`ModelPrice::cost`] turns a [`TokenUsage`] into an exact
//! [`Cost`]. [`PriceTable`] is the default implementation: a built-in table
//! for common models that JSON can extend or override.

mod cost;
mod table;

pub use cost::{Cost, ParseAmountError, TokenUsage};
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
    /// is a single integer multiplication.
    pub const fn cost_of(self, tokens: u64) -> Cost {
        Cost::from_picodollars(tokens.saturating_mul(self.0))
    }
}

impl std::str::FromStr for PerMillion {
    type Err = ParseAmountError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        cost::parse_decimal(s, 6).map(PerMillion)
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
        cost::deserialize_decimal(d, 6).map(PerMillion)
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
    /// assert_eq!(price.cost(&usage), "0.00024".parse::<Cost>().unwrap());
    /// ```
    pub fn cost(&self, usage: &TokenUsage) -> Cost {
        let cached = usage.cached_input_tokens.min(usage.input_tokens);
        let written = usage
            .cache_write_tokens
            .min(usage.input_tokens.saturating_sub(cached));
        let uncached = usage.input_tokens - cached - written;
        self.input_per_million.cost_of(uncached)
            + self
                .cached_input_per_million
                .unwrap_or(self.input_per_million)
                .cost_of(cached)
            + self
                .cache_write_per_million
                .unwrap_or(self.input_per_million)
                .cost_of(written)
            + self.output_per_million.cost_of(usage.output_tokens)
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
