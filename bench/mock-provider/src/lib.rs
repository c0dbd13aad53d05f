//! Mock LLM provider for Perpetuo's integration and load tests, speaking real upstream wire formats.
//!
//! One server speaks three formats on one port: OpenAI's (chat completions,
//! embeddings, models under [`MockProvider::base_url`]), Anthropic's Messages API
//! (`POST /v1/messages`, under [`MockProvider::anthropic_base_url`]) and Gemini's
//! `generateContent` / `streamGenerateContent` (under [`MockProvider::gemini_base_url`]).
//!
//! The same implementation serves two purposes:
//!
//! * integration tests start it in-process with [`MockProvider::start`] (bound to
//!   `127.0.0.1:0` by default), point the gateway at [`MockProvider::base_url`] and
//!   then assert on what the gateway sent upstream ([`MockProvider::requests`]) and on
//!   how streams ended ([`MockProvider::completed`], [`MockProvider::cancelled`]);
//! * load tests run the `mock-provider` binary on a fixed address.
//!
//! What a request gets back is a [`Behavior`]: either the override set with
//! [`MockProvider::set_behavior`], or the one named inside the request's `model`
//! (see [`Behavior::from_model`]; for Gemini the model in the path), or a normal,
//! deterministic success. Each format shows a behaviour in its own error and stream
//! shapes.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use mock_provider::{Behavior, MockConfig, MockProvider};
//!
//! let mock = MockProvider::start(MockConfig::default()).await?;
//! let base = mock.base_url(); // "http://127.0.0.1:PORT/v1"
//! mock.set_behavior(Some(Behavior::Status(429)));
//! // ... drive the gateway against `base` ...
//! assert_eq!(mock.hits(), 0);
//! # let _ = base;
//! # Ok(())
//! # }
//! ```
//!
//! Modules: one per wire format ([`openai`], [`anthropic`], [`gemini`]), plus the
//! shared [`behavior`] selection, the scripted [`tool_call`] exchange, the scripted
//! coding-agent session of [`agent`], [`sse`]
//! writing, request [`record`]ing, an OTLP/HTTP trace collector ([`otlp`], for the
//! tracing benchmark) and the [`server`] itself.

pub mod agent;
pub mod anthropic;
pub mod behavior;
pub mod gemini;
pub mod openai;
pub mod otlp;
pub mod quota;
pub mod record;
mod reply;
pub mod responses;
pub mod server;
pub mod sse;
pub mod tool_call;

pub use agent::AgentScript;
pub use anthropic::{expected_anthropic_usage, AnthropicUsage};
pub use behavior::Behavior;
pub use gemini::{expected_gemini_usage, GeminiUsage};
pub use openai::{embedding_for, expected_embedding_usage, expected_usage, Usage};
pub use otlp::OtlpStats;
pub use quota::RateLimit;
pub use record::RecordedRequest;
pub use server::{MockConfig, MockProvider, DEFAULT_CONTENT};
