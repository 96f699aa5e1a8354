//! The default price table.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{ModelPrice, PerMillion, Pricing};

/// The date the built-in prices were taken from the providers' public price
/// pages.
pub const BUILTIN_PRICES_AS_OF: &str = "2025-08-15";

/// (provider, model, input, cached input, cache write, output), dollars per
/// million tokens in microdollars.
const BUILTIN: &[(&str, &str, u64, u64, u64, u64)] = &[
    // OpenAI: cached input is discounted, cache writes cost nothing extra.
    ("openai", "gpt-5", 1_250_000, 125_000, 1_250_000, 10_000_000),
    ("openai", "gpt-5-mini", 250_000, 25_000, 250_000, 2_000_000),
    ("openai", "gpt-5-nano", 50_000, 5_000, 50_000, 400_000),
    (
        "openai", "gpt-4.1", 2_000_000, 500_000, 2_000_000, 8_000_000,
    ),
    (
        "openai",
        "gpt-4.1-mini",
        400_000,
        100_000,
        400_000,
        1_600_000,
    ),
    ("openai", "gpt-4.1-nano", 100_000, 25_000, 100_000, 400_000),
    (
        "openai", "gpt-4o", 2_500_000, 1_250_000, 2_500_000, 10_000_000,
    ),
    ("openai", "gpt-4o-mini", 150_000, 75_000, 150_000, 600_000),
    ("openai", "o3", 2_000_000, 500_000, 2_000_000, 8_000_000),
    (
        "openai", "o3-mini", 1_100_000, 550_000, 1_100_000, 4_400_000,
    ),
    (
        "openai", "o4-mini", 1_100_000, 275_000, 1_100_000, 4_400_000,
    ),
    // Anthropic: cache reads at 0.1x input, 5-minute cache writes at 1.25x.
    (
        "anthropic",
        "claude-opus-4-1",
        15_000_000,
        1_500_000,
        18_750_000,
        75_000_000,
    ),
    (
        "anthropic",
        "claude-opus-4",
        15_000_000,
        1_500_000,
        18_750_000,
        75_000_000,
    ),
    (
        "anthropic",
        "claude-sonnet-4",
        3_000_000,
        300_000,
        3_750_000,
        15_000_000,
    ),
    (
        "anthropic",
        "claude-3-7-sonnet",
        3_000_000,
        300_000,
        3_750_000,
        15_000_000,
    ),
    (
        "anthropic",
        "claude-3-5-sonnet",
        3_000_000,
        300_000,
        3_750_000,
        15_000_000,
    ),
    (
        "anthropic",
        "claude-3.5-sonnet",
        3_000_000,
        300_000,
        3_750_000,
        15_000_000,
    ),
    (
        "anthropic",
        "claude-3-5-haiku",
        800_000,
        80_000,
        1_000_000,
        4_000_000,
    ),
    (
        "anthropic",
        "claude-3-haiku",
        250_000,
        30_000,
        300_000,
        1_250_000,
    ),
    // Simulated (the offline `simulated` provider): priced like the real
    // models of the same name, so demo runs show realistic costs.
    (
        "simulated",
        "gpt-4o-mini",
        150_000,
        75_000,
        150_000,
        600_000,
    ),
    (
        "simulated",
        "gpt-4o",
        2_500_000,
        1_250_000,
        2_500_000,
        10_000_000,
    ),
    (
        "simulated",
        "gpt-4.1-mini",
        400_000,
        100_000,
        400_000,
        1_600_000,
    ),
    (
        "simulated",
        "claude-3-5-haiku",
        800_000,
        80_000,
        1_000_000,
        4_000_000,
    ),
    (
        "simulated",
        "claude-sonnet-4",
        3_000_000,
        300_000,
        3_750_000,
        15_000_000,
    ),
    (
        "simulated",
        "claude-3-5-sonnet",
        3_000_000,
        300_000,
        3_750_000,
        15_000_000,
    ),
];

/// A table of model prices keyed by provider and model.
///
/// Lookups try the exact model name first, then the longest known model name
/// that prefixes it at a `-` boundary, so dated snapshots such as
/// `gpt-4o-mini-2024-07-18` or `claude-sonnet-4-20250514` find their family's
/// price.
///
/// The JSON form maps `"provider/model"` to a price:
///
/// ```
/// use flowtrace_core::{PriceTable, Pricing};
/// let table = PriceTable::builtin().with_overrides_json(r#"{
///     "openai/gpt-4o-mini": {"input_per_million": 0.1, "output_per_million": 0.4, "cached_input_per_million": 0.05},
///     "acme/house-model": {"input_per_million": "1.25", "output_per_million": "5"}
/// }"#).unwrap();
/// assert_eq!(table.price("openai", "gpt-4o-mini").unwrap().input_per_million.microdollars(), 100_000);
/// assert!(table.price("acme", "house-model-v2").is_some());
/// ```
#[derive(Clone, Debug, Default)]
pub struct PriceTable {
    by_provider: HashMap<String, HashMap<String, ModelPrice>>,
    as_of: Option<String>,
}

/// The accepted JSON document shapes.
#[derive(Deserialize)]
#[serde(untagged)]
enum PriceDocument {
    Wrapped {
        #[serde(default)]
        as_of: Option<String>,
        models: BTreeMap<String, ModelPrice>,
    },
    Flat(BTreeMap<String, ModelPrice>),
}

/// A price table could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PriceTableError {
    /// The document is not valid JSON of the expected shape.
    #[error("invalid price table JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A key is not of the form `provider/model`.
    #[error("invalid price table key {key:?}: expected \"provider/model\"")]
    BadKey {
        /// The offending key.
        key: String,
    },
}

impl PriceTable {
    /// An empty table: every lookup misses.
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-in prices of current OpenAI and Anthropic models, taken on
    /// [`BUILTIN_PRICES_AS_OF`].
    pub fn builtin() -> Self {
        let mut t = Self {
            by_provider: HashMap::new(),
            as_of: Some(BUILTIN_PRICES_AS_OF.to_string()),
        };
        for &(provider, model, input, cached, write, output) in BUILTIN {
            t.insert(
                provider,
                model,
                ModelPrice::new(
                    PerMillion::from_microdollars(input),
                    PerMillion::from_microdollars(output),
                )
                .with_cached_input(PerMillion::from_microdollars(cached))
                .with_cache_write(PerMillion::from_microdollars(write)),
            );
        }
        t
    }

    /// Parses a table from JSON: either `{"provider/model": price, …}` or
    /// `{"as_of": "date", "models": {"provider/model": price, …}}`.
    pub fn from_json(json: &str) -> Result<Self, PriceTableError> {
        Self::new().with_overrides_json(json)
    }

    /// Adds or replaces the prices in `json` (same shapes as [`from_json`](Self::from_json)).
    pub fn with_overrides_json(mut self, json: &str) -> Result<Self, PriceTableError> {
        let (as_of, models) = match serde_json::from_str::<PriceDocument>(json)? {
            PriceDocument::Wrapped { as_of, models } => (as_of, models),
            PriceDocument::Flat(models) => (None, models),
        };
        for (key, price) in models {
            let (provider, model) = key
                .split_once('/')
                .filter(|(p, m)| !p.is_empty() && !m.is_empty())
                .ok_or_else(|| PriceTableError::BadKey { key: key.clone() })?;
            self.insert(provider, model, price);
        }
        if as_of.is_some() {
            self.as_of = as_of;
        }
        Ok(self)
    }

    /// Adds or replaces one price.
    pub fn insert(&mut self, provider: &str, model: &str, price: ModelPrice) {
        self.by_provider
            .entry(provider.to_string())
            .or_default()
            .insert(model.to_string(), price);
    }

    /// Builder form of [`insert`](Self::insert).
    pub fn with_price(mut self, provider: &str, model: &str, price: ModelPrice) -> Self {
        self.insert(provider, model, price);
        self
    }

    /// The date the prices were taken, when known.
    pub fn as_of(&self) -> Option<&str> {
        self.as_of.as_deref()
    }

    /// Every entry as `"provider/model" → price`, sorted.
    pub fn entries(&self) -> BTreeMap<String, ModelPrice> {
        self.by_provider
            .iter()
            .flat_map(|(p, models)| {
                models
                    .iter()
                    .map(move |(m, price)| (format!("{p}/{m}"), *price))
            })
            .collect()
    }

    /// The table as JSON in the wrapped shape (with `as_of`).
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            as_of: Option<&'a str>,
            models: BTreeMap<String, ModelPrice>,
        }
        serde_json::to_string_pretty(&Out {
            as_of: self.as_of(),
            models: self.entries(),
        })
        .unwrap_or_default()
    }
}

impl Pricing for PriceTable {
    fn price(&self, provider: &str, model: &str) -> Option<ModelPrice> {
        let models = self.by_provider.get(provider)?;
        if let Some(p) = models.get(model) {
            return Some(*p);
        }
        // Longest family name that prefixes the model at a '-' boundary.
        models
            .iter()
            .filter(|(name, _)| {
                model.len() > name.len()
                    && model.starts_with(name.as_str())
                    && model.as_bytes().get(name.len()) == Some(&b'-')
            })
            .max_by_key(|(name, _)| name.len())
            .map(|(_, p)| *p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cost, TokenUsage};

    #[test]
    fn builtin_prices_dated_snapshots_by_family() {
        let t = PriceTable::builtin();
        let mini = t.price("openai", "gpt-4o-mini-2024-07-18").unwrap();
        assert_eq!(mini.input_per_million.microdollars(), 150_000);
        let big = t.price("openai", "gpt-4o-2024-08-06").unwrap();
        assert_eq!(big.input_per_million.microdollars(), 2_500_000);
        assert!(t.price("openai", "gpt-4").is_none());
        assert!(t.price("nobody", "gpt-4o").is_none());
        assert_eq!(t.as_of(), Some(BUILTIN_PRICES_AS_OF));
    }

    #[test]
    fn anthropic_cache_tokens_are_billed_at_their_prices() {
        let t = PriceTable::builtin();
        let p = t.price("anthropic", "claude-sonnet-4-20250514").unwrap();
        let usage = TokenUsage {
            input_tokens: 3_000,
            cached_input_tokens: 1_000,
            cache_write_tokens: 1_000,
            output_tokens: 100,
        };
        // 1000×3 + 1000×0.30 + 1000×3.75 + 100×15 = 8550 µ$ / 1e6 tokens
        assert_eq!(p.cost(&usage), Ok("0.00855".parse::<Cost>().unwrap()));
    }

    #[test]
    fn json_round_trip_and_bad_keys() {
        let t = PriceTable::builtin();
        let back = PriceTable::from_json(&t.to_json()).unwrap();
        assert_eq!(back.entries(), t.entries());
        assert_eq!(back.as_of(), t.as_of());
        let err = PriceTable::from_json(
            r#"{"gpt-4o": {"input_per_million": 1, "output_per_million": 2}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("\"gpt-4o\""), "{err}");
        let err = PriceTable::from_json(
            r#"{"a/b": {"input_per_million": 0.0000001, "output_per_million": 2}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("invalid price table JSON"),
            "{err}"
        );
    }
}
