//! Perpetuo's wire formats, as pure transforms: no I/O, no database, no Pingora (and no
//! dependency on `perpetuo-core`, which depends on this crate).
//!
//! Provider adapters translate between the client's OpenAI-format request and a
//! provider's wire format — build path, headers and body; decode a response body; decode
//! one stream event into zero or more OpenAI-format events; close a stream — dispatched by
//! `match` over the closed [`Adapter`] enum. One module per provider kind ([`openai`],
//! [`anthropic`], [`gemini`]) holds its adapter and the mappers of the front door that
//! speaks its format ([`anthropic::messages`], [`openai::responses`]). A
//! [`translation::Translation`] puts an adapter, its stream state and a door's encoder
//! together for one attempt's answer. JSON is read through typed serde views
//! ([`lenient`]: borrowed strings, unknown shapes kept as raw JSON), never by walking a
//! `serde_json::Value` by key, except where an unknown shape is passed through.

pub mod anthropic;
pub mod gemini;
pub mod kind;
pub mod lazy_json;
pub mod lenient;
pub mod messages;
pub mod openai;
pub mod replay;
pub mod sse;
pub mod tokens;
pub mod tool_names;
pub mod translation;

#[cfg(test)]
mod door_tests;
#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;

use bytes::Bytes;
use serde_json::Value;

pub use kind::ProviderKind;
use lazy_json::LazyJson;
use openai::chunk;
use sse::Event;

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
    /// Asks for a stream of events (SSE) rather than one body.
    pub stream: bool,
}

impl UpstreamRequest {
    /// A JSON POST with the provider's auth header(s), asking for SSE when streaming.
    pub fn json(
        path: String,
        auth: Vec<(&'static str, String)>,
        body: Bytes,
        stream: bool,
    ) -> Self {
        let accept = if stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        let mut headers = auth;
        headers.push(("content-type", "application/json".into()));
        headers.push(("accept", accept.into()));
        Self {
            path,
            headers,
            body,
            stream,
        }
    }
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

/// Token usage reported by a provider, in OpenAI's terms: `prompt_tokens` includes cached
/// and cache-write tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
}

/// Most tokens one request is counted for, per class. No model takes or writes this many
/// in one request; a provider that reports more (a bug or a hostile server) is clamped,
/// so its numbers cannot overflow a log row, a counter or a cost.
pub const MAX_TOKENS_PER_REQUEST: u64 = 100_000_000;

impl Usage {
    /// The same usage with every count clamped to [`MAX_TOKENS_PER_REQUEST`].
    pub fn clamped(self) -> Self {
        let c = |n: u64| n.min(MAX_TOKENS_PER_REQUEST);
        Self {
            prompt_tokens: c(self.prompt_tokens),
            completion_tokens: c(self.completion_tokens),
            cached_tokens: c(self.cached_tokens),
            cache_write_tokens: c(self.cache_write_tokens),
        }
    }

    pub fn counts(&self) -> TokenCounts {
        TokenCounts {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            cached_tokens: self.cached_tokens,
            cache_write_tokens: self.cache_write_tokens,
        }
    }

    /// OpenAI's `usage` object.
    pub fn to_openai(&self) -> Value {
        serde_json::json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens.saturating_add(self.completion_tokens),
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        })
    }
}

/// What the client asked for, as every attempt needs it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub route: Route,
    /// The request body: its bytes as the client sent them, the top-level fields, and the
    /// tree when read as a `Value`.
    pub request: &'a LazyJson,
    /// The requested model, without a `kind/` pin.
    pub model: &'a str,
    pub stream: bool,
}

/// A request the gateway refuses to translate, with the reason (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

/// A refusal to translate, with its reason.
pub fn unsupported(reason: impl Into<String>) -> Unsupported {
    Unsupported(reason.into())
}

/// What a stream has shown so far.
#[derive(Debug, Default, Clone)]
pub struct StreamState {
    /// The client asked for the usage chunk itself.
    pub client_wants_usage: bool,
    pub usage: Option<Usage>,
    /// Generated text seen, for estimating usage when none is sent.
    pub content: Generated,
    /// The provider ended the stream the way its format says a stream ends.
    pub finished: bool,
    /// The provider sent an error event (already passed on to the client).
    pub errored: bool,
    /// Identity of the chunks the gateway writes for translated streams.
    pub meta: chunk::Meta,
    /// Whether the first (role) chunk has been written.
    pub started: bool,
    /// Translated tool calls so far: provider block index → OpenAI tool call index.
    pub tool_blocks: Vec<(u64, usize)>,
    pub tool_calls: usize,
    pub saw_tool_call: bool,
}

impl StreamState {
    /// The state of an answer passed through unchanged (read only for its usage).
    pub fn passthrough(served: &str) -> Self {
        Self {
            meta: chunk::Meta::new(served),
            ..Default::default()
        }
    }
}

/// Generated text kept for a token estimate, bounded in memory.
#[derive(Debug, Default, Clone)]
pub struct Generated {
    text: String,
    overflow_chars: usize,
}

const MAX_KEPT_TEXT: usize = 1024 * 1024;

impl Generated {
    pub fn push(&mut self, s: &str) {
        if self.text.len() + s.len() <= MAX_KEPT_TEXT {
            self.text.push_str(s);
        } else {
            self.overflow_chars += s.chars().count();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty() && self.overflow_chars == 0
    }

    /// The text kept (the first MiB of what was generated).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Estimated tokens of everything generated.
    pub fn tokens(&self) -> u64 {
        tokens::count(&self.text) + estimate_tokens(self.overflow_chars)
    }
}

/// What one provider stream event means while the answer is held before its first token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Nothing a user would see yet: a role-only chunk, `message_start`, a ping, an empty
    /// text block, reasoning the client is not shown. Kept and replayed once committed.
    Preamble,
    /// The first thing a user would see: text, a tool call, a refusal, a finish (or
    /// something the gateway cannot read, which it will not hold back).
    Content,
    /// The provider reported an error in the stream before any content.
    Error,
}

/// A stream that ended without its format's proper end (or after an error event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokenStream;

/// A translated non-stream response.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The body to send; `None` sends the provider's bytes unchanged.
    pub body: Option<Bytes>,
    pub usage: Option<Usage>,
    pub content: Generated,
}

impl Decoded {
    pub fn usage_and_content(self) -> (Option<Usage>, Generated) {
        (self.usage, self.content)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapter {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Adapter {
    pub fn for_kind(kind: ProviderKind) -> Self {
        match kind {
            ProviderKind::Openai | ProviderKind::OpenaiCompatible => Adapter::OpenAi,
            ProviderKind::Anthropic => Adapter::Anthropic,
            ProviderKind::Gemini => Adapter::Gemini,
        }
    }

    pub fn supports(self, route: Route) -> bool {
        match route {
            Route::Chat => true,
            Route::Embeddings => self == Adapter::OpenAi,
        }
    }

    /// Whether response bodies are rewritten (and so must be read whole when not streamed).
    pub fn translates(self) -> bool {
        self != Adapter::OpenAi
    }

    /// Builds the request for one entry (`prefix` of its base URL, its `key`, the model
    /// it serves) and the initial stream state.
    pub fn build_request(
        self,
        prefix: &str,
        key: &str,
        call: &Call<'_>,
        served_model: &str,
    ) -> Result<(UpstreamRequest, StreamState), Unsupported> {
        let Call {
            request, stream, ..
        } = *call;
        let mut state = StreamState {
            meta: chunk::Meta::new(served_model),
            ..Default::default()
        };
        let req = match self {
            Adapter::OpenAi => {
                let (req, wants) = openai::build_request(prefix, key, call, served_model)?;
                state.client_wants_usage = wants;
                req
            }
            Adapter::Anthropic => {
                state.client_wants_usage = request.include_usage();
                anthropic::build_request(prefix, key, request.raw(), served_model, stream)?
            }
            Adapter::Gemini => {
                state.client_wants_usage = request.include_usage();
                gemini::build_request(prefix, key, request.raw(), served_model, stream)?
            }
        };
        Ok((req, state))
    }

    /// The stream state a stored answer from an entry of this format is replayed with,
    /// for `call`: what [`Self::build_request`] would start with, without building the
    /// request.
    pub fn replay_state(self, call: &Call<'_>, served_model: &str) -> StreamState {
        let wants = match self {
            Adapter::OpenAi => call.stream && call.request.include_usage(),
            Adapter::Anthropic | Adapter::Gemini => call.request.include_usage(),
        };
        StreamState {
            client_wants_usage: wants,
            meta: chunk::Meta::new(served_model),
            ..Default::default()
        }
    }

    /// Decodes a whole (non-stream) success body.
    pub fn decode_response(self, body: &[u8], served_model: &str) -> Decoded {
        match self {
            Adapter::OpenAi => {
                let (usage, content) = openai::decode_response(body);
                Decoded {
                    body: None,
                    usage,
                    content,
                }
            }
            Adapter::Anthropic => anthropic::decode_response(body, served_model),
            Adapter::Gemini => gemini::decode_response(body, served_model),
        }
    }

    /// Decodes one stream event into the OpenAI-format events the client receives.
    pub fn decode_event(self, state: &mut StreamState, event: &Event) -> Vec<Bytes> {
        match self {
            Adapter::OpenAi => openai::decode_event(state, event).into_iter().collect(),
            Adapter::Anthropic => anthropic::decode_event(state, event),
            Adapter::Gemini => gemini::decode_event(state, event),
        }
    }

    /// Classifies one provider stream event for the hold before the first token.
    pub fn signal(self, event: &Event) -> Signal {
        (self.classifier())(event)
    }

    /// [`Adapter::signal`] as a function of the event alone.
    pub fn classifier(self) -> fn(&Event) -> Signal {
        match self {
            Adapter::OpenAi => openai::signal,
            Adapter::Anthropic => anthropic::signal,
            Adapter::Gemini => gemini::signal,
        }
    }

    /// What to write when the provider's stream has ended; `Err` when it ended without
    /// the format's proper end (a broken stream).
    pub fn finish_stream(self, state: &mut StreamState) -> Result<Vec<Bytes>, BrokenStream> {
        match self {
            Adapter::OpenAi => Ok(Vec::new()),
            Adapter::Anthropic | Adapter::Gemini => {
                if !state.finished || state.errored {
                    return Err(BrokenStream);
                }
                let mut out = Vec::new();
                if state.client_wants_usage {
                    if let Some(u) = state.usage {
                        out.push(chunk::usage_event(&state.meta, &u));
                    }
                }
                out.push(chunk::done());
                Ok(out)
            }
        }
    }

    /// A provider's error body in OpenAI's shape.
    pub fn error_body(self, status: u16, body: &[u8]) -> Option<Bytes> {
        match self {
            Adapter::OpenAi => None,
            Adapter::Anthropic => Some(anthropic::error_body(status, body)),
            Adapter::Gemini => Some(gemini::error_body(status, body)),
        }
    }
}

/// Rough token estimate (≈ 4 characters per token), for counts the tokenizer cannot see.
pub fn estimate_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}
