//! Routing: a workspace's usable provider entries (cached, invalidated by notifications),
//! the order candidates are tried in (priority, with equal priorities sharing load), the
//! circuit breaker, and which failures fall back.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::future::Cache;
use perpetuo_core::crypto::MasterKey;
use perpetuo_core::db::{self, Pool};
use perpetuo_core::provider::ProviderKind;
use perpetuo_core::Secret;
use uuid::Uuid;

use crate::metrics;
use crate::providers::{Adapter, Route};

/// Where an entry's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path of the base URL without a trailing slash, e.g. `/v1`.
    pub path_prefix: String,
}

impl Upstream {
    pub fn parse(base_url: &str) -> Option<Self> {
        let url = url::Url::parse(base_url).ok()?;
        let tls = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        Some(Self {
            tls,
            host: url
                .host_str()?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: url.port_or_known_default()?,
            path_prefix: url.path().trim_end_matches('/').to_string(),
        })
    }

    /// Value of the `Host` header.
    pub fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// A provider entry ready for requests: its key opened once and kept behind `Secret`.
#[derive(Debug)]
pub struct Entry {
    pub id: Uuid,
    pub name: String,
    pub kind: ProviderKind,
    pub upstream: Upstream,
    pub key: Secret<String>,
    pub priority: i32,
    pub models: Vec<String>,
    pub model_map: BTreeMap<String, String>,
}

impl Entry {
    pub fn serves(&self, model: &str) -> bool {
        self.models.is_empty()
            || self.models.iter().any(|m| m == model)
            || self.model_map.contains_key(model)
    }

    pub fn served_model<'a>(&'a self, requested: &'a str) -> &'a str {
        self.model_map
            .get(requested)
            .map(String::as_str)
            .unwrap_or(requested)
    }
}

/// A workspace's entries as the cache holds them.
#[derive(Clone)]
struct Loaded {
    entries: Arc<Vec<Arc<Entry>>>,
    /// Served from the stale store because the database failed.
    stale: bool,
}

struct EntryTtl {
    fresh: Duration,
}

/// While the database fails, stale entries are cached this long, so a hung database
/// costs one attempt per workspace per second, not one per request.
const STALE_RECHECK: Duration = Duration::from_secs(1);

impl moka::Expiry<Uuid, Loaded> for EntryTtl {
    fn expire_after_create(&self, _key: &Uuid, value: &Loaded, _now: Instant) -> Option<Duration> {
        Some(if value.stale {
            STALE_RECHECK.min(self.fresh)
        } else {
            self.fresh
        })
    }
}

/// A workspace's usable entries, cached (bounded, expiring, invalidated by change
/// notifications). Like the key cache, it keeps what the database last said for a stale
/// window and serves that only while the database fails, so cached keys do not find
/// their workspace without entries during an outage.
pub struct EntryCache {
    cache: Cache<Uuid, Loaded>,
    stale: Cache<Uuid, Arc<Vec<Arc<Entry>>>>,
    serve_stale: bool,
    pool: Pool,
    master_key: MasterKey,
}

const MAX_WORKSPACES: u64 = 50_000;

impl EntryCache {
    /// `ttl`: how long entries are cached; `stale`: how long the last entries the
    /// database gave are kept for an outage (zero: never served stale).
    pub fn new(pool: Pool, master_key: MasterKey, ttl: Duration, stale: Duration) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(MAX_WORKSPACES)
                .expire_after(EntryTtl { fresh: ttl })
                .build(),
            stale: Cache::builder()
                .max_capacity(MAX_WORKSPACES)
                .time_to_live(stale.max(Duration::from_millis(1)))
                .build(),
            serve_stale: !stale.is_zero(),
            pool,
            master_key,
        }
    }

    /// Enabled entries of a workspace by priority.
    pub async fn entries(&self, workspace: Uuid) -> Result<Arc<Vec<Arc<Entry>>>, Arc<db::DbError>> {
        if let Some(loaded) = self.cache.get(&workspace).await {
            return Ok(loaded.entries);
        }
        // The miss path is boxed so that its large future is not carried inside every
        // request's future.
        Box::pin(self.load_miss(workspace)).await
    }

    /// A workspace not in the cache: read from the database (one load however many
    /// requests wait for it), or its stale copy when the database is unavailable.
    async fn load_miss(&self, workspace: Uuid) -> Result<Arc<Vec<Arc<Entry>>>, Arc<db::DbError>> {
        let pool = self.pool.clone();
        let key = self.master_key.clone();
        let stale = self.stale.clone();
        let serve_stale = self.serve_stale;
        self.cache
            .try_get_with(workspace, async move {
                match load(&pool, &key, workspace).await {
                    Ok(entries) => {
                        stale.insert(workspace, entries.clone()).await;
                        Ok(Loaded {
                            entries,
                            stale: false,
                        })
                    }
                    Err(e) if serve_stale => match stale.get(&workspace).await {
                        Some(entries) => {
                            metrics::ENTRY_CACHE_STALE.inc();
                            Ok(Loaded {
                                entries,
                                stale: true,
                            })
                        }
                        None => Err(e),
                    },
                    Err(e) => Err(e),
                }
            })
            .await
            .map(|l| l.entries)
    }

    pub async fn invalidate(&self, workspace: Uuid) {
        self.cache.invalidate(&workspace).await;
        self.stale.invalidate(&workspace).await;
    }

    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
        self.stale.invalidate_all();
    }
}

/// Longest wait for the database when a workspace's entries are loaded.
const DB_TIMEOUT: Duration = Duration::from_secs(5);

/// Loads a workspace's entries within [`DB_TIMEOUT`]. A connection whose read did not
/// finish in time is closed rather than returned to the pool: its server process may
/// still be busy (waiting for a lock, say), and the next load would queue behind it.
async fn load(
    pool: &Pool,
    master_key: &MasterKey,
    workspace: Uuid,
) -> Result<Arc<Vec<Arc<Entry>>>, db::DbError> {
    let deadline = tokio::time::Instant::now() + DB_TIMEOUT;
    let client = tokio::time::timeout_at(deadline, pool.get())
        .await
        .map_err(|_| db::DbError::Timeout)??;
    let rows =
        match tokio::time::timeout_at(deadline, db::providers::list(&client, workspace)).await {
            Ok(rows) => rows?,
            Err(_) => {
                drop(db::Client::take(client));
                return Err(db::DbError::Timeout);
            }
        };
    drop(client);
    let mut out = Vec::new();
    for row in rows.into_iter().filter(|r| r.enabled) {
        let Some(base) = row.base_url.as_deref().or(row.kind.default_base_url()) else {
            continue;
        };
        let Some(upstream) = Upstream::parse(base) else {
            tracing::warn!(entry = %row.id, "provider entry has an unusable base URL; skipped");
            continue;
        };
        // Opened by the format the row records: rows not yet re-sealed still open.
        let key = match master_key.open(&row.sealed, &row.binding()) {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(entry = %row.id, error = %e, "provider key does not open; entry skipped");
                continue;
            }
        };
        out.push(Arc::new(Entry {
            id: row.id,
            name: row.name,
            kind: row.kind,
            upstream,
            key,
            priority: row.priority,
            models: row.models,
            model_map: row.model_map,
        }));
    }
    Ok(Arc::new(out))
}

/// Splits `kind/model` into a pinned kind and the model; other names are returned whole.
pub fn split_pinned(model: &str) -> (Option<ProviderKind>, &str) {
    if let Some((prefix, rest)) = model.split_once('/') {
        if let Ok(kind) = prefix.parse::<ProviderKind>() {
            if !rest.is_empty() {
                return (Some(kind), rest);
            }
        }
    }
    (None, model)
}

/// Candidates for `model` in the order to try: by priority; within one priority, rotated
/// by `turn` so that equal entries share the load.
pub fn order(
    entries: &[Arc<Entry>],
    model: &str,
    pinned: Option<ProviderKind>,
    route: Route,
    turn: usize,
) -> Vec<Arc<Entry>> {
    let mut matching: Vec<Arc<Entry>> = entries
        .iter()
        .filter(|e| {
            Adapter::for_kind(e.kind).supports(route)
                && pinned.is_none_or(|k| k == e.kind)
                && e.serves(model)
        })
        .cloned()
        .collect();
    matching.sort_by_key(|e| e.priority);
    let mut out = Vec::with_capacity(matching.len());
    let mut i = 0;
    while i < matching.len() {
        let p = matching[i].priority;
        let j = matching[i..]
            .iter()
            .position(|e| e.priority != p)
            .map_or(matching.len(), |k| i + k);
        let mut group = matching[i..j].to_vec();
        let len = group.len();
        group.rotate_left(turn % len);
        out.extend(group);
        i = j;
    }
    out
}

/// A global turn counter for sharing load between equal priorities.
#[derive(Debug, Default)]
pub struct Turns(AtomicUsize);

impl Turns {
    pub fn next(&self) -> usize {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Connect,
    Timeout,
    Status(u16),
    /// The response broke before its first content.
    EarlyEnd,
    /// The stream reported an error before its first content.
    StreamError,
    /// The entry's address is private or loopback and `ALLOWED_PRIVATE_UPSTREAMS` does
    /// not allow it.
    RefusedByPolicy,
}

impl Failure {
    /// Whether the failure says something about the entry (and so counts toward its
    /// breaker). A 403 is often about the request — a model this key may not use — and a
    /// name a client chose must never take an entry out of service for everyone.
    pub fn counts_against_entry(self) -> bool {
        self != Failure::Status(403)
    }

    pub fn reason(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Timeout => "timeout",
            Failure::Status(429) => "status_429",
            Failure::Status(401 | 403) => "provider_auth",
            Failure::Status(_) => "status_5xx",
            Failure::EarlyEnd => "early_end",
            Failure::StreamError => "stream_error",
            Failure::RefusedByPolicy => "upstream_refused_by_policy",
        }
    }
}

/// Whether a provider status means "try the next entry" (429, 5xx, provider auth failure).
/// Other 4xx are the client's fault and are returned as they are.
pub fn should_fall_back(status: u16) -> bool {
    status == 429 || status == 401 || status == 403 || status >= 500
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// The cool-down has ended; `probe_until` is set while one probe is out.
    HalfOpen {
        probe_until: Option<Instant>,
    },
}

/// Per-entry circuit breaker: after `threshold` consecutive failures (or a 429 with
/// `Retry-After`) the entry is skipped until the cool-down ends; then one probe goes
/// through, and its outcome closes or re-opens the breaker. A probe that never reports
/// (its client left, its task was dropped) frees the half-open slot when its
/// [`Admission`] is dropped, and a probe older than `probe_timeout` no longer blocks
/// the next one: no entry can stay skipped for ever.
pub struct Breakers {
    states: Mutex<HashMap<Uuid, State>>,
    threshold: u32,
    cooldown: Duration,
    probe_timeout: Duration,
}

pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Leave to try an entry now. For a half-open breaker's probe, dropping it without
/// reporting an outcome hands the probe to the next request.
#[must_use]
pub struct Admission<'a> {
    breakers: &'a Breakers,
    id: Uuid,
    probe: bool,
}

impl Admission<'_> {
    pub fn success(mut self) {
        self.probe = false;
        self.breakers.success(self.id);
    }

    /// Records a failure; true when it opened the breaker.
    pub fn failure(mut self, now: Instant, retry_after: Option<Duration>) -> bool {
        self.probe = false;
        self.breakers.failure(self.id, now, retry_after)
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.breakers.release_probe(self.id);
        }
    }
}

impl Breakers {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            states: Mutex::new(HashMap::new()),
            threshold: threshold.max(1),
            cooldown,
            probe_timeout: cooldown,
        }
    }

    /// How long one probe may stay out before another is let through.
    pub fn with_probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout;
        self
    }

    /// Whether `id` may be tried now (claims the probe of a half-open breaker).
    pub fn allow(&self, id: Uuid, now: Instant) -> Option<Admission<'_>> {
        // A poisoned lock (a panic while it was held) fails open: routing keeps working
        // without breakers rather than refusing every request.
        let Ok(mut states) = self.states.lock() else {
            return Some(self.admission(id, false));
        };
        let state = states.entry(id).or_insert(State::Closed { failures: 0 });
        let probe = State::HalfOpen {
            probe_until: Some(now + self.probe_timeout),
        };
        match *state {
            State::Closed { .. } => Some(self.admission(id, false)),
            State::Open { until } if now >= until => {
                *state = probe;
                Some(self.admission(id, true))
            }
            State::Open { .. } => None,
            State::HalfOpen {
                probe_until: Some(t),
            } if now < t => None,
            State::HalfOpen { .. } => {
                *state = probe;
                Some(self.admission(id, true))
            }
        }
    }

    fn admission(&self, id: Uuid, probe: bool) -> Admission<'_> {
        Admission {
            breakers: self,
            id,
            probe,
        }
    }

    fn release_probe(&self, id: Uuid) {
        if let Ok(mut states) = self.states.lock() {
            if let Some(state @ State::HalfOpen { .. }) = states.get_mut(&id) {
                *state = State::HalfOpen { probe_until: None };
            }
        }
    }

    pub fn success(&self, id: Uuid) {
        if let Ok(mut states) = self.states.lock() {
            states.insert(id, State::Closed { failures: 0 });
        }
    }

    /// Records a failure; returns true when this failure opened the breaker.
    pub fn failure(&self, id: Uuid, now: Instant, retry_after: Option<Duration>) -> bool {
        let Ok(mut states) = self.states.lock() else {
            return false;
        };
        let state = states.entry(id).or_insert(State::Closed { failures: 0 });
        let open_for = |d: Duration| State::Open { until: now + d };
        let (next, opened) = match (*state, retry_after) {
            (_, Some(ra)) => (
                open_for(ra.min(MAX_RETRY_AFTER)),
                !matches!(*state, State::Open { .. }),
            ),
            (State::Closed { failures }, None) if failures + 1 >= self.threshold => {
                (open_for(self.cooldown), true)
            }
            (State::Closed { failures }, None) => (
                State::Closed {
                    failures: failures + 1,
                },
                false,
            ),
            (State::HalfOpen { .. }, None) => (open_for(self.cooldown), true),
            (open @ State::Open { .. }, None) => (open, false),
        };
        *state = next;
        opened
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, priority: i32, models: &[&str]) -> Arc<Entry> {
        Arc::new(Entry {
            id: Uuid::now_v7(),
            name: name.into(),
            kind: ProviderKind::Openai,
            upstream: Upstream::parse("https://api.openai.com/v1").unwrap(),
            key: Secret::new("k".into()),
            priority,
            models: models.iter().map(|m| m.to_string()).collect(),
            model_map: BTreeMap::new(),
        })
    }

    #[test]
    fn orders_by_priority_and_rotates_equals() {
        let es = vec![
            entry("c", 2, &[]),
            entry("a1", 1, &[]),
            entry("a2", 1, &[]),
            entry("x", 0, &["other"]),
        ];
        let names = |turn| {
            order(&es, "gpt", None, Route::Chat, turn)
                .iter()
                .map(|e| e.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(0), vec!["a1", "a2", "c"]);
        assert_eq!(names(1), vec!["a2", "a1", "c"]);
        assert_eq!(names(2), vec!["a1", "a2", "c"]);
        assert_eq!(order(&es, "other", None, Route::Chat, 0)[0].name, "x");
        assert!(order(&es, "gpt", Some(ProviderKind::Anthropic), Route::Chat, 0).is_empty());
    }

    #[test]
    fn pinned_kinds() {
        assert_eq!(
            split_pinned("anthropic/claude-sonnet-4-5"),
            (Some(ProviderKind::Anthropic), "claude-sonnet-4-5")
        );
        assert_eq!(
            split_pinned("meta-llama/Llama-3"),
            (None, "meta-llama/Llama-3")
        );
        assert_eq!(split_pinned("gpt-4o"), (None, "gpt-4o"));
    }

    #[test]
    fn fallback_rules() {
        for s in [429, 500, 502, 503, 504, 529, 401, 403] {
            assert!(should_fall_back(s), "{s}");
        }
        for s in [200, 400, 404, 409, 413, 422] {
            assert!(!should_fall_back(s), "{s}");
        }
    }

    #[test]
    fn breaker_opens_cools_down_and_probes_once() {
        let b = Breakers::new(2, Duration::from_secs(10));
        let id = Uuid::now_v7();
        let t0 = Instant::now();
        assert!(!b.allow(id, t0).unwrap().failure(t0, None));
        assert!(
            b.allow(id, t0).unwrap().failure(t0, None),
            "second failure opens"
        );
        assert!(b.allow(id, t0 + Duration::from_secs(5)).is_none());
        let later = t0 + Duration::from_secs(11);
        let probe = b.allow(id, later).expect("one probe after the cool-down");
        assert!(b.allow(id, later).is_none(), "only one");
        assert!(probe.failure(later, None), "a failed probe re-opens");
        assert!(b.allow(id, later + Duration::from_secs(1)).is_none());
        let again = later + Duration::from_secs(11);
        b.allow(id, again).unwrap().success();
        assert!(
            b.allow(id, again).is_some() && b.allow(id, again).is_some(),
            "closed after a good probe"
        );
        assert!(
            b.failure(id, again, Some(Duration::from_secs(3))),
            "429 + Retry-After opens at once"
        );
        assert!(b.allow(id, again + Duration::from_secs(2)).is_none());
        assert!(b.allow(id, again + Duration::from_secs(3)).is_some());
    }

    #[test]
    fn an_abandoned_or_endless_probe_does_not_skip_the_entry_for_ever() {
        let b =
            Breakers::new(1, Duration::from_secs(10)).with_probe_timeout(Duration::from_secs(60));
        let id = Uuid::now_v7();
        let t0 = Instant::now();
        assert!(b.allow(id, t0).unwrap().failure(t0, None));
        let t1 = t0 + Duration::from_secs(11);
        // The probe's client leaves: its admission is dropped without an outcome.
        drop(b.allow(id, t1).expect("probe"));
        let probe = b.allow(id, t1).expect("the next request probes");
        // This probe never reports: another may go once the probe timeout has passed.
        assert!(b.allow(id, t1 + Duration::from_secs(59)).is_none());
        let next = b
            .allow(id, t1 + Duration::from_secs(60))
            .expect("probe deadline");
        next.success();
        drop(probe);
        assert!(b.allow(id, t1 + Duration::from_secs(61)).is_some());
    }

    #[test]
    fn upstream_parsing() {
        let u = Upstream::parse("http://127.0.0.1:9000/v1/").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path_prefix.as_str()),
            (false, "127.0.0.1", 9000, "/v1")
        );
        assert_eq!(u.authority(), "127.0.0.1:9000");
        let u = Upstream::parse("https://api.openai.com/v1").unwrap();
        assert_eq!((u.port, u.authority()), (443, "api.openai.com".to_string()));
    }
}
