//! Gateway integration tests: the real `perpetuo-gateway` binary on free ports, a fresh
//! PostgreSQL database per test, and in-process mock providers speaking OpenAI's formats.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fault_kit;
mod harness;
mod redis_kit;

mod agents;
mod auth;
mod balancing;
mod cache;
mod canary;
mod connections;
mod containment;
mod durability;
mod fallback;
mod faults;
mod first_token;
mod headroom;
mod hostile;
mod isolation;
mod key_cache;
mod kinds;
mod leases;
mod lifecycle;
mod limits;
mod log_partitions;
mod messages;
mod pingora_patches;
mod proxying;
mod responses;
mod sdk;
mod sealing;
mod shared_limits;
mod stored_responses;
mod streaming;
mod tracing;
mod upstream_names;
