//! What an API key may do, as the gateway loads it with the key: the key's and its
//! workspace's limits, the key's model allow-list, and each budget period's spend as
//! PostgreSQL knew it then (the seed). The gateway's limiter checks requests against it.

use time::OffsetDateTime;

use crate::db::limits::Limits;

/// What the key carries from the database for its limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub key: Limits,
    pub workspace: Limits,
    /// Exact names and `prefix*` patterns; empty allows all.
    pub allowed_models: Vec<String>,
    /// Spend recorded in PostgreSQL for the key's / workspace's period, when loaded.
    pub key_seed: Option<Seed>,
    pub workspace_seed: Option<Seed>,
}

/// Spend of one budget period as PostgreSQL knew it when the key was loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed {
    pub period_start: OffsetDateTime,
    pub spent_nusd: i64,
}

impl Policy {
    pub fn is_unlimited(&self) -> bool {
        self.key.is_empty() && self.workspace.is_empty() && self.allowed_models.is_empty()
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.allowed_models.is_empty()
            || self
                .allowed_models
                .iter()
                .any(|p| match p.strip_suffix('*') {
                    Some(prefix) => model.starts_with(prefix),
                    None => p == model,
                })
    }

    /// Whether a spend budget applies (the key's or its workspace's): then every model
    /// served must have a price, or the budget would not be a hard stop.
    pub fn has_budget(&self) -> bool {
        self.key.budget_nusd.is_some() || self.workspace.budget_nusd.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_allow_exact_names_and_prefixes() {
        let p = Policy {
            allowed_models: vec!["gpt-4o-mini".into(), "claude-*".into()],
            ..Policy::default()
        };
        assert!(p.allows_model("gpt-4o-mini"));
        assert!(p.allows_model("claude-3-haiku"));
        assert!(!p.allows_model("gpt-4o"));
        assert!(!p.allows_model("gpt-4o-mini-2"));
        assert!(Policy::default().allows_model("anything"));
    }
}
