//! Perpetuo admin API (axum): accounts, workspaces, provider entries, API keys, logs and
//! usage, plus `/openapi.json` and the built dashboard. It meets the gateway only in the
//! database.

pub mod access;
pub mod accounts;
pub mod commands;
pub mod config;
pub mod error;
pub mod extract;
pub mod jwt;
pub mod mail;
pub mod openapi;
pub mod routes;
pub mod startup;
pub mod state;
pub mod teams;
pub mod throttle;
pub mod traces;
