//! Routing: a workspace's usable provider entries ([`entries`]), the order candidates are
//! tried in ([`order`]), and which failures fall back and the circuit breaker
//! ([`breaker`]).

pub mod breaker;
pub mod entries;
pub mod order;

pub use breaker::{should_fall_back, Admission, Breakers, Connect, Failure, MAX_RETRY_AFTER};
pub use entries::{Entry, EntryCache, Upstream};
pub use order::{order, split_pinned, Turns};
