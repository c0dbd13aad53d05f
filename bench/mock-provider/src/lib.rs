//! Mock LLM provider for Perpetuo's integration and load tests, speaking real upstream wire formats.
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
//! (see [`Behavior::from_model`]), or a normal, deterministic success.
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
//! Modules: one per wire format ([`openai`]), plus the shared [`behavior`] selection,
//! [`sse`] writing, request [`record`]ing and the [`server`] itself.

pub mod behavior;
pub mod openai;
pub mod record;
pub mod server;
pub mod sse;

pub use behavior::Behavior;
pub use openai::{embedding_for, expected_embedding_usage, expected_usage, Usage};
pub use record::RecordedRequest;
pub use server::{MockConfig, MockProvider, DEFAULT_CONTENT};
