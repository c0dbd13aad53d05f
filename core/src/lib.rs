//! Perpetuo core: what the gateway and the admin API share — typed configuration pieces,
//! secrets, crypto, key formats, upstream URL policy, and database access.
//! It depends on neither binary and knows nothing of Pingora or axum.

pub mod apikey;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod db;
pub mod dns;
pub mod email;
pub mod forwarded;
pub mod logging;
pub mod otlp;
pub mod password;
pub mod policy;
pub mod pricing;
pub mod provider;
pub mod secret;
pub mod telemetry;
pub mod test_build;
pub mod text;
pub mod token;
pub mod trace_context;
pub mod upstream;

#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use secret::Secret;
