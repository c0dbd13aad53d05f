//! Provider adapters: synchronous transforms between the client's OpenAI-format request
//! and a provider's wire format — build path, headers and body; decode a response body;
//! decode one stream event into what the client receives. Pingora does the I/O.

pub mod openai;

use bytes::Bytes;
use perpetuo_core::pricing::TokenCounts;

use crate::sse::Event;

/// The gateway's OpenAI-compatible routes that reach providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Chat,
    Embeddings,
}

impl Route {
    pub fn label(self) -> &'static str {
        match self {
            Route::Chat => "chat",
            Route::Embeddings => "embeddings",
        }
    }
}

/// A request ready for one provider entry.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

/// Token usage reported by a provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
}

impl Usage {
    pub fn counts(&self) -> TokenCounts {
        TokenCounts {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cached_tokens: self.cached_tokens,
            cache_write_tokens: self.cache_write_tokens,
        }
    }
}

/// What a stream has shown so far.
#[derive(Debug, Default, Clone)]
pub struct StreamState {
    /// The client asked for the usage chunk itself.
    pub client_wants_usage: bool,
    pub usage: Option<Usage>,
    /// Characters of generated content seen, for estimating usage when none is sent.
    pub content_chars: usize,
    pub saw_done: bool,
}

/// What one decoded stream event gives the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutput {
    Forward(Bytes),
    Drop,
}

/// Decodes one stream event of an OpenAI-format provider.
pub fn decode_event(state: &mut StreamState, event: &Event) -> EventOutput {
    openai::decode_event(state, event)
}

/// Rough token estimate (≈ 4 characters per token) for providers that report no usage.
pub fn estimate_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}
