//! Routing: a workspace's usable provider entries ([`entries`]), the order candidates are
//! tried in ([`order`]), how one priority's entries share its traffic ([`balance`]) and
//! which requests stick to one entry ([`sticky`]), which failures fall back and the
//! circuit breaker ([`breaker`]), and what each provider key has left ([`headroom`]).

pub mod balance;
pub mod breaker;
pub mod entries;
pub mod headroom;
pub mod order;
pub mod shared_headroom;
pub mod status;
pub mod sticky;

pub use balance::Balancer;
pub use breaker::{should_fall_back, Admission, Breakers, Connect, Failure, MAX_RETRY_AFTER};
pub use entries::{Entry, EntryCache, PoolKey, Quota, Routes, Upstream};
pub use headroom::Headrooms;
pub use order::{order, split_pinned};
