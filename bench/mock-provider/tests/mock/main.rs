//! Integration tests of the mock provider, driven over HTTP with a real client.

// Test helpers fail loudly, like the test functions themselves (see clippy.toml).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod anthropic;
mod binary;
mod chat;
mod counters;
mod embeddings;
mod errors;
mod fragment;
mod gemini;
mod openai_tools;
mod routes;
mod streaming;
mod support;
