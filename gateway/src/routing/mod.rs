//! Routing: a workspace's usable provider entries ([`entries`]), the order candidates are
//! tried in ([`order`]), how one priority's entries share its traffic ([`balance`]) and
//! which requests stick to one entry ([`sticky`]), and which failures fall back and the
//! circuit breaker ([`breaker`]).

pub mod balance;
pub mod breaker;
pub mod entries;
pub mod order;
pub mod sticky;

pub use balance::Balancer;
pub use breaker::{should_fall_back, Admission, Breakers, Connect, Failure, MAX_RETRY_AFTER};
pub use entries::{Entry, EntryCache, Routes, Upstream};
pub use order::{order, split_pinned};
