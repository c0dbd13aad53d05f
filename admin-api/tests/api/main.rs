//! Admin API integration tests: the real application on 127.0.0.1:0 against a fresh
//! PostgreSQL database per test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helpers;

mod api_keys;
mod auth;
mod commands;
mod errors;
mod governance;
mod headers;
mod invitations;
mod limits;
mod logs;
mod openapi;
mod pools;
mod providers;
mod sessions;
mod statement_timeout;
mod teams;
mod text_inputs;
mod throttling;
mod usage;
mod workspaces;
