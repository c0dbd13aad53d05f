//! Model prices and per-request cost. The table (`conf/pricing.toml`) is embedded and can
//! be replaced by a file; prices are USD per million tokens per token class, and costs
//! are integer nano-USD. A model missing from the table has no cost (`None`), never 0 —
//! unless the operator sets one price for every unpriced model.
//!
//! A name is priced by an exact entry, an entry's explicit `aliases`, or an entry plus a
//! version suffix (a date `-2024-08-06` / `-20250929` / `@20240620`, `-latest`, or a
//! three-digit revision `-001`): never by a bare prefix, which would price `gpt-5-pro`
//! as `gpt-5`.

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

/// One model's row in the file: its price and the other names it goes by.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    input: f64,
    output: f64,
    #[serde(default)]
    cached_input: Option<f64>,
    #[serde(default)]
    cache_write: Option<f64>,
    #[serde(default)]
    aliases: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PricingFile {
    unit: String,
    source_date: String,
    models: HashMap<String, FileEntry>,
}

#[derive(Debug, Clone)]
pub struct Pricing {
    pub source_date: String,
    models: HashMap<String, ModelPrice>,
    /// Alias → the entry it names.
    aliases: HashMap<String, String>,
    /// The price of every model the table does not name, when the operator set one.
    unpriced: Option<ModelPrice>,
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

pub use perpetuo_wire::TokenCounts;

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
        let mut models = HashMap::with_capacity(file.models.len());
        let mut aliases = HashMap::new();
        for (name, e) in file.models {
            let all = [Some(e.input), Some(e.output), e.cached_input, e.cache_write];
            if all.iter().flatten().any(|v| !v.is_finite() || *v < 0.0) {
                return Err(PricingError::Parse(format!(
                    "{name}: prices must be non-negative numbers"
                )));
            }
            for alias in e.aliases {
                if let Some(other) = aliases.insert(alias.clone(), name.clone()) {
                    return Err(PricingError::Parse(format!(
                        "alias {alias} names both {other} and {name}"
                    )));
                }
            }
            models.insert(
                name,
                ModelPrice {
                    input: e.input,
                    output: e.output,
                    cached_input: e.cached_input,
                    cache_write: e.cache_write,
                },
            );
        }
        if let Some(alias) = aliases.keys().find(|a| models.contains_key(*a)) {
            return Err(PricingError::Parse(format!(
                "{alias} is both a model and an alias"
            )));
        }
        Ok(Self {
            source_date: file.source_date,
            models,
            aliases,
            unpriced: None,
        })
    }

    /// Charges every model the table does not name at `usd_per_mtok` per million tokens,
    /// input and output alike.
    pub fn with_unpriced(mut self, usd_per_mtok: f64) -> Self {
        self.unpriced = Some(ModelPrice {
            input: usd_per_mtok,
            output: usd_per_mtok,
            cached_input: None,
            cache_write: None,
        });
        self
    }

    /// Every priced model name, in order.
    pub fn model_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.models.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The price of `model`: by name, alias or a versioned name (module doc), else the
    /// operator's price for unpriced models, if set.
    pub fn price(&self, model: &str) -> Option<&ModelPrice> {
        self.named(model)
            .or_else(|| self.named(unversioned(model)?))
            .or(self.unpriced.as_ref())
    }

    fn named(&self, name: &str) -> Option<&ModelPrice> {
        self.models.get(name).or_else(|| {
            self.aliases
                .get(name)
                .and_then(|entry| self.models.get(entry))
        })
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

/// `model` without a version suffix, when it has one: `-YYYY-MM-DD`, `-YYYYMMDD`,
/// `@YYYYMMDD`, `-latest` or a three-digit revision `-NNN`.
fn unversioned(model: &str) -> Option<&str> {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(base) = model.strip_suffix("-latest") {
        return Some(base).filter(|b| !b.is_empty());
    }
    if let Some((base, v)) = model.rsplit_once('@') {
        return (digits(v, 8) && !base.is_empty()).then_some(base);
    }
    let (base, last) = model.rsplit_once('-')?;
    if digits(last, 8) || digits(last, 3) {
        return Some(base).filter(|b| !b.is_empty());
    }
    // -YYYY-MM-DD
    let (base, dd) = (base, last);
    let (base, mm) = base.rsplit_once('-')?;
    let (base, yyyy) = base.rsplit_once('-')?;
    (digits(yyyy, 4) && digits(mm, 2) && digits(dd, 2) && !base.is_empty()).then_some(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A provider's usage is clamped per class (`perpetuo_wire::MAX_TOKENS_PER_REQUEST`)
    /// before it is priced: even the largest clamped counts make a cost that fits a row.
    #[test]
    fn the_largest_clamped_usage_has_a_cost_that_fits() {
        let p = Pricing::embedded().unwrap();
        let max = perpetuo_wire::MAX_TOKENS_PER_REQUEST;
        for (cached, written) in [(0, 0), (max, 0), (0, max), (max / 2, max / 2)] {
            let t = TokenCounts {
                prompt_tokens: max,
                completion_tokens: max,
                cached_tokens: cached,
                cache_write_tokens: written,
            };
            for model in ["gpt-4o", "claude-sonnet-4-5", "gemini-2.5-pro"] {
                let cost = p.cost_nusd(model, &t).unwrap();
                assert!((0..i64::MAX / 1000).contains(&cost), "{model}: {cost}");
            }
        }
    }

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
    fn families_are_explicit_never_a_bare_prefix() {
        let p = Pricing::embedded().unwrap();
        let input = |m: &str| p.price(m).map(|x| x.input);
        // Variants of another price are not their base model.
        assert_eq!(input("gpt-5-pro"), Some(15.0));
        assert_eq!(input("o3-pro"), Some(20.0));
        assert_ne!(input("gpt-5-pro"), input("gpt-5"));
        assert_eq!(input("gpt-5-ultra"), None);
        assert_eq!(input("o3-deep"), None);
        // Versions of a model are that model.
        assert_eq!(input("gpt-4o-2024-08-06"), input("gpt-4o"));
        assert_eq!(
            input("claude-sonnet-4-5-20250929"),
            input("claude-sonnet-4-5")
        );
        assert_eq!(input("claude-3-5-haiku-latest"), input("claude-3-5-haiku"));
        assert_eq!(
            input("claude-3-7-sonnet@20250219"),
            input("claude-3-7-sonnet")
        );
        assert_eq!(input("gemini-2.0-flash-001"), input("gemini-2.0-flash"));
        assert_eq!(input("gpt-4o-2024-08"), None);
        assert_eq!(input("-latest"), None);
        // An alias names its entry.
        assert_eq!(input("chatgpt-4o-latest"), Some(5.0));
    }

    #[test]
    fn the_operators_price_covers_only_unpriced_models() {
        let p = Pricing::embedded().unwrap().with_unpriced(2.0);
        let t = TokenCounts {
            prompt_tokens: 1_000_000,
            completion_tokens: 1_000_000,
            ..TokenCounts::default()
        };
        assert_eq!(p.cost_nusd("my-private-model", &t), Some(4_000_000_000));
        assert_eq!(p.cost_nusd("gpt-4o-mini", &t), Some(750_000_000));
    }

    #[test]
    fn aliases_must_be_unique() {
        let table = |a: &str| {
            format!("unit = \"usd_per_million_tokens\"\nsource_date = \"x\"\n[models.a]\ninput = 1.0\noutput = 1.0\naliases = [\"{a}\"]\n[models.b]\ninput = 1.0\noutput = 1.0\naliases = [\"x\"]")
        };
        assert!(Pricing::parse(&table("y")).is_ok());
        assert!(Pricing::parse(&table("x")).is_err());
        assert!(Pricing::parse(&table("b")).is_err());
    }

    #[test]
    fn bad_tables_are_refused() {
        assert!(Pricing::parse("unit = \"usd\"\nsource_date = \"x\"\n[models]").is_err());
        assert!(Pricing::parse("unit = \"usd_per_million_tokens\"\nsource_date = \"x\"\n[models.a]\ninput = -1.0\noutput = 1.0").is_err());
        assert!(Pricing::parse("unit = \"usd_per_million_tokens\"\nsource_date = \"x\"\n[models.a]\ninput = 1.0\noutput = 1.0\nextra = 2").is_err());
    }
}
