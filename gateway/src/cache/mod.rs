//! The response cache: successful, complete answers served again without a provider
//! call, per workspace, on every front door; kept in process or shared through Redis
//! ([`store`]); identical requests in flight coalesced ([`flights`]).
//!
//! What a request does with it is decided once ([`decide`]): the workspace's mode (or its
//! key's), then the request's own `Cache-Control` (`no-store`, `no-cache`, `max-age`) and
//! `x-perpetuo-cache-ttl`. The key ([`key`]) holds the workspace and its cache
//! generation, so two workspaces never share an entry and a purge is a new generation.
//! An entry keeps the provider's answer as it came ([`entry`]); a hit replays it through
//! the door's translation, as a live answer is ([`replay`]).

pub mod entry;
pub mod flights;
pub mod key;
pub mod record;
pub mod replay;
pub mod store;

use std::sync::Arc;

use perpetuo_core::db::workspaces::{CacheMode, MAX_CACHE_TTL_SECONDS};
use pingora::proxy::Session;

use crate::errors::{ErrorKind, GatewayError};
use entry::Stored;
use flights::Flights;
pub use key::Key;
pub use perpetuo_core::db::logs::CacheResult;
use store::Store;

/// The header that says what the cache did.
pub const RESULT_HEADER: &str = "x-perpetuo-cache";
/// The header that sets a stored entry's TTL (capped by the workspace's).
pub const TTL_HEADER: &str = "x-perpetuo-cache-ttl";

/// What the cache did and holds for one request, in its context.
pub struct Use {
    pub outcome: CacheResult,
    /// A hit's age, seconds.
    pub age: Option<u64>,
    /// What a hit saved: what the provider charged for the answer (nano-USD).
    pub saved_nusd: Option<i64>,
    /// Where a fresh answer is stored, and its TTL (seconds).
    pub store: Option<(Key, u32)>,
    /// The live answer, kept for the store and shared with followers.
    pub recorder: Option<record::Recorder>,
}

impl Use {
    pub fn new(outcome: CacheResult) -> Self {
        Self {
            outcome,
            age: None,
            saved_nusd: None,
            store: None,
            recorder: None,
        }
    }
}

/// What the cache does for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The cache is off for this key: no lookup, no header.
    Off,
    /// Not read, not written (`no-store`, or not asked for in `opt_in`).
    Bypass,
    Use(Plan),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Look the answer up (not `no-cache`).
    pub read: bool,
    /// Only an entry at most this old, seconds (`max-age`).
    pub max_age: Option<u64>,
    /// The stored answer's TTL, seconds.
    pub ttl: u32,
}

/// The request headers the decision reads.
#[derive(Debug, Default, Clone, Copy)]
pub struct Asked<'a> {
    pub cache_control: Option<&'a str>,
    pub ttl: Option<&'a str>,
}

impl<'a> Asked<'a> {
    pub fn of(session: &'a Session) -> Self {
        let header = |name: &str| session.get_header(name).and_then(|v| v.to_str().ok());
        Asked {
            cache_control: header("cache-control"),
            ttl: header(TTL_HEADER),
        }
    }
}

fn bad_header(message: String) -> GatewayError {
    GatewayError::bad_request(ErrorKind::InvalidCacheHeader, message)
}

/// Seconds in a header: a whole number, at most `max` (larger values are `max`).
fn seconds(v: &str, what: &str, max: u64) -> Result<u64, GatewayError> {
    let v = v.trim();
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        let shown: String = v.chars().take(32).collect();
        return Err(bad_header(format!(
            "{what} must be a whole number of seconds, not {shown:?}."
        )));
    }
    Ok(v.parse::<u64>().unwrap_or(u64::MAX).min(max))
}

/// What the cache does for a request, from the mode that applies to its key (the
/// workspace's, or the key's own) and what the request asks. A malformed header is the
/// client's error (400).
pub fn decide(mode: CacheMode, ttl: u32, asked: Asked<'_>) -> Result<Decision, GatewayError> {
    if mode == CacheMode::Off {
        return Ok(Decision::Off);
    }
    let (mut no_store, mut no_cache, mut max_age) = (false, false, None);
    for directive in asked.cache_control.unwrap_or("").split(',') {
        let directive = directive.trim();
        let (name, value) = match directive.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (directive, None),
        };
        match name.to_ascii_lowercase().as_str() {
            "no-store" => no_store = true,
            "no-cache" => no_cache = true,
            "max-age" => {
                let v = value.unwrap_or("");
                let max = u64::from(MAX_CACHE_TTL_SECONDS);
                max_age = Some(seconds(v, "Cache-Control max-age", max)?);
            }
            // Other directives say nothing to this cache.
            _ => {}
        }
    }
    let asked_ttl = match asked.ttl {
        Some(v) => {
            let n = seconds(v, TTL_HEADER, u64::from(MAX_CACHE_TTL_SECONDS))?;
            if n == 0 {
                return Err(bad_header(format!(
                    "{TTL_HEADER} must be at least 1 second."
                )));
            }
            Some(u32::try_from(n).unwrap_or(MAX_CACHE_TTL_SECONDS))
        }
        None => None,
    };
    let asks = max_age.is_some() || no_cache || asked_ttl.is_some();
    if no_store || (mode == CacheMode::OptIn && !asks) {
        return Ok(Decision::Bypass);
    }
    let ttl = ttl.clamp(1, MAX_CACHE_TTL_SECONDS);
    Ok(Decision::Use(Plan {
        read: !no_cache,
        max_age,
        ttl: asked_ttl.map_or(ttl, |t| t.min(ttl)),
    }))
}

/// The gateway's response cache.
pub struct ResponseCache {
    store: Store,
    pub flights: Arc<Flights>,
    /// Largest answer stored, bytes.
    pub max_entry_bytes: usize,
}

impl ResponseCache {
    pub fn new(store: Store, max_entry_bytes: usize) -> Self {
        Self {
            store,
            flights: Arc::new(Flights::default()),
            max_entry_bytes,
        }
    }

    /// The entry under `key`, if it may be served now to a request accepting entries at
    /// most `max_age` seconds old.
    pub async fn get(&self, key: &Key, max_age: Option<u64>, now_ms: i64) -> Option<Arc<Stored>> {
        let started = std::time::Instant::now();
        let found = self.store.get(key).await;
        crate::metrics::CACHE_LOOKUP.observe(started.elapsed().as_secs_f64());
        found.filter(|s| s.fresh(now_ms) && max_age.is_none_or(|m| s.age_s(now_ms) <= m))
    }

    pub async fn put(&self, key: Key, stored: Stored) {
        if stored.weight() <= self.max_entry_bytes.saturating_add(256) {
            self.store.put(key, Arc::new(stored)).await;
        }
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    i64::try_from(perpetuo_core::clock::unix_ms()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked<'a>(cc: Option<&'a str>, ttl: Option<&'a str>) -> Asked<'a> {
        Asked {
            cache_control: cc,
            ttl,
        }
    }

    fn plan(d: Decision) -> Plan {
        match d {
            Decision::Use(p) => p,
            other => panic!("expected a plan, got {other:?}"),
        }
    }

    #[test]
    fn the_mode_and_the_request_decide() {
        assert_eq!(
            decide(CacheMode::Off, 60, asked(Some("max-age=5"), None)).unwrap(),
            Decision::Off
        );
        let on = plan(decide(CacheMode::On, 60, Asked::default()).unwrap());
        assert_eq!(
            on,
            Plan {
                read: true,
                max_age: None,
                ttl: 60
            }
        );
        assert_eq!(
            decide(CacheMode::On, 60, asked(Some("no-store"), None)).unwrap(),
            Decision::Bypass
        );
        let fresh = plan(decide(CacheMode::On, 60, asked(Some("No-Cache"), None)).unwrap());
        assert!(!fresh.read);
        let young =
            plan(decide(CacheMode::On, 60, asked(Some("private, max-age=10"), None)).unwrap());
        assert_eq!(young.max_age, Some(10));
        // In opt_in a request asks with max-age, no-cache or a TTL; otherwise it bypasses.
        assert_eq!(
            decide(CacheMode::OptIn, 60, Asked::default()).unwrap(),
            Decision::Bypass
        );
        assert!(matches!(
            decide(CacheMode::OptIn, 60, asked(Some("max-age=0"), None)).unwrap(),
            Decision::Use(_)
        ));
        assert!(matches!(
            decide(CacheMode::OptIn, 60, asked(None, Some("30"))).unwrap(),
            Decision::Use(_)
        ));
    }

    #[test]
    fn the_ttl_asked_is_capped_by_the_workspaces_and_bad_values_are_refused() {
        assert_eq!(
            plan(decide(CacheMode::On, 60, asked(None, Some("30"))).unwrap()).ttl,
            30
        );
        assert_eq!(
            plan(decide(CacheMode::On, 60, asked(None, Some("99999999999999"))).unwrap()).ttl,
            60
        );
        for bad in ["0", "-1", "1.5", "abc", ""] {
            let e = decide(CacheMode::On, 60, asked(None, Some(bad))).unwrap_err();
            assert_eq!(e.status, 400, "{bad}");
        }
        let e = decide(CacheMode::On, 60, asked(Some("max-age=soon"), None)).unwrap_err();
        assert_eq!(e.code, ErrorKind::InvalidCacheHeader);
        // A huge max-age is the longest there is, not an overflow.
        let p = plan(
            decide(
                CacheMode::On,
                60,
                asked(Some("max-age=99999999999999999999"), None),
            )
            .unwrap(),
        );
        assert_eq!(p.max_age, Some(u64::from(MAX_CACHE_TTL_SECONDS)));
    }
}
