//! Provider kinds and their default endpoints: the closed set the adapters dispatch on.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Openai,
    Anthropic,
    Gemini,
    OpenaiCompatible,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 4] = [
        ProviderKind::Openai,
        ProviderKind::Anthropic,
        ProviderKind::Gemini,
        ProviderKind::OpenaiCompatible,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::OpenaiCompatible => "openai_compatible",
        }
    }

    /// Whether a public model name is this kind's own (by the provider's naming), for
    /// listing the models of an entry that serves any model. `openai_compatible` servers
    /// name their models freely: none is theirs by name.
    pub fn names_model(self, model: &str) -> bool {
        match self {
            ProviderKind::Openai => ["gpt-", "o1", "o3", "o4", "text-embedding-", "chatgpt-"]
                .iter()
                .any(|p| model.starts_with(p)),
            ProviderKind::Anthropic => model.starts_with("claude-"),
            ProviderKind::Gemini => model.starts_with("gemini-"),
            ProviderKind::OpenaiCompatible => false,
        }
    }

    /// The public endpoint used when an entry has no `base_url`.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::Openai => Some("https://api.openai.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com/v1"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com/v1beta"),
            ProviderKind::OpenaiCompatible => None,
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("kind must be one of openai, anthropic, gemini, openai_compatible")]
pub struct UnknownKind;

impl FromStr for ProviderKind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProviderKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or(UnknownKind)
    }
}
