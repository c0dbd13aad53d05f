//! Perpetuo gateway: an OpenAI-compatible LLM proxy on Pingora. `main` only wires; each
//! concern has its module. The gateway meets the admin API only in the database.

pub mod auth;
pub mod background;
pub mod cache;
pub mod clients;
pub mod config;
pub mod data_dir;
pub mod downstream;
pub mod errors;
pub mod frontdoor;
pub mod invalidation;
pub mod limits;
pub mod log_spool;
pub mod log_writer;
pub mod metrics;
pub mod model_lists;
pub mod outcome;
pub mod partitions;
pub mod pipeline;
pub mod proxy;
pub mod routing;
#[cfg(test)]
mod saved_inputs;
pub mod shutdown;
pub mod startup;
pub mod stored_responses;
pub mod upstream;
pub mod validate;
