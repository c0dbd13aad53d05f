//! Model prices and per-request cost. The table (`conf/pricing.toml`) is embedded and can
//! be replaced by a file; prices are USD per million tokens per token class, and costs
//! are integer nano-USD. A model missing from the table has no cost (`None`), never 0.

use std::collections::HashMap;

use serde::Deserialize;

const EMBEDDED: &str = include_str!("../../conf/pricing.toml");
const UNIT: &str = "usd_per_million_tokens";

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input: f64,
    pub output: f64,
    #[serde(default)]
    pub cached_input: Option<f64>,
    #[serde(default)]
    pub cache_write: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PricingFile {
    unit: String,
    source_date: String,
    models: HashMap<String, ModelPrice>,
}

#[derive(Debug, Clone)]
pub struct Pricing {
    pub source_date: String,
    models: HashMap<String, ModelPrice>,
}

#[derive(Debug, thiserror::Error)]
pub enum PricingError {
    #[error("cannot read pricing file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("pricing table is invalid: {0}")]
    Parse(String),
}

/// Token counts of one request, by class. `prompt_tokens` includes cached and
/// cache-write tokens, as OpenAI reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
}

impl Pricing {
    pub fn embedded() -> Result<Self, PricingError> {
        Self::parse(EMBEDDED)
    }

    pub fn from_file(path: &str) -> Result<Self, PricingError> {
        let text = std::fs::read_to_string(path).map_err(|source| PricingError::Read {
            path: path.to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, PricingError> {
        let file: PricingFile =
            toml::from_str(text).map_err(|e| PricingError::Parse(e.to_string()))?;
        if file.unit != UNIT {
            return Err(PricingError::Parse(format!("unit must be \"{UNIT}\"")));
        }
        for (name, p) in &file.models {
            let all = [Some(p.input), Some(p.output), p.cached_input, p.cache_write];
            if all.iter().flatten().any(|v| !v.is_finite() || *v < 0.0) {
                return Err(PricingError::Parse(format!(
                    "{name}: prices must be non-negative numbers"
                )));
            }
        }
        Ok(Self {
            source_date: file.source_date,
            models: file.models,
        })
    }

    /// The price of `model`: an exact entry, else the longest entry that is a prefix of
    /// it followed by `-` (dated or tagged variants).
    /// Every priced model name, in order.
    pub fn model_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.models.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    pub fn price(&self, model: &str) -> Option<&ModelPrice> {
        if let Some(p) = self.models.get(model) {
            return Some(p);
        }
        self.models
            .iter()
            .filter(|(name, _)| {
                model.len() > name.len()
                    && model.starts_with(name.as_str())
                    && model.as_bytes()[name.len()] == b'-'
            })
            .max_by_key(|(name, _)| name.len())
            .map(|(_, p)| p)
    }

    /// Cost in nano-USD, or `None` when the model has no price.
    pub fn cost_nusd(&self, model: &str, t: &TokenCounts) -> Option<i64> {
        let p = self.price(model)?;
        let cached = t.cached_tokens.min(t.prompt_tokens);
        let written = t.cache_write_tokens.min(t.prompt_tokens - cached);
        let plain = t.prompt_tokens - cached - written;
        // USD per million tokens = 1000 nano-USD per token.
        let nusd = 1000.0
            * (plain as f64 * p.input
                + cached as f64 * p.cached_input.unwrap_or(p.input)
                + written as f64 * p.cache_write.unwrap_or(p.input)
                + t.completion_tokens as f64 * p.output);
        Some(nusd.round() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_table_prices_every_token_class() {
        let p = Pricing::embedded().unwrap();
        let t = TokenCounts {
            prompt_tokens: 1_000_000,
            completion_tokens: 1_000_000,
            cached_tokens: 0,
            cache_write_tokens: 0,
        };
        assert_eq!(p.cost_nusd("gpt-4o-mini", &t), Some(750_000_000));
        assert_eq!(p.cost_nusd("gpt-4o-mini-2024-07-18", &t), Some(750_000_000));
        assert_eq!(p.cost_nusd("gpt-4o-2024-08-06", &t), Some(12_500_000_000));
        let cached = TokenCounts {
            prompt_tokens: 1000,
            completion_tokens: 10,
            cached_tokens: 400,
            cache_write_tokens: 100,
        };
        // 500 × 3 + 400 × 0.3 + 100 × 3.75 + 10 × 15 = 2145 micro-USD… in nano-USD ×1000.
        assert_eq!(
            p.cost_nusd("claude-sonnet-4-5-20250929", &cached),
            Some(2_145_000)
        );
        assert_eq!(p.cost_nusd("my-private-model", &t), None);
        assert!(p.price("gpt").is_none());
    }

    #[test]
    fn bad_tables_are_refused() {
        assert!(Pricing::parse("unit = \"usd\"\nsource_date = \"x\"\n[models]").is_err());
        assert!(Pricing::parse("unit = \"usd_per_million_tokens\"\nsource_date = \"x\"\n[models.a]\ninput = -1.0\noutput = 1.0").is_err());
        assert!(Pricing::parse("unit = \"usd_per_million_tokens\"\nsource_date = \"x\"\n[models.a]\ninput = 1.0\noutput = 1.0\nextra = 2").is_err());
    }
}
