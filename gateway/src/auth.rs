//! API key authentication from a cache: bearer key → SHA-256 → moka → database on a miss,
//! with concurrent misses for one key coalesced into one query. `last_used_at` is
//! collected here and written in batches by a background task.
//!
//! Valid keys and unknown keys are cached apart, each bounded: no number of unknown keys
//! evicts a valid one. Lookups that reach the database and find no usable key are
//! budgeted per client address ([`failures`]); past the budget such lookups are refused
//! without a query.
//!
//! Change notifications refresh what they name: a key, or a workspace's keys. A fill that
//! a change overtook is not kept ([`generations`]).
//!
//! Outages: a key the database confirmed valid within the stale window
//! (`KEY_CACHE_STALE_MS`) is still accepted when the database fails (errors or times
//! out) after the key's cache entry expired. Only a database error serves it. The stale
//! copy of a key goes when the key is revoked, deleted, re-keyed, moved or its expiry
//! changes (a notification saying so, or the database answering "no such usable key"),
//! and nothing else empties it: after the change listener reconnects, the copies are
//! checked against the database and only those of keys no longer usable go.

mod failures;
mod generations;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::Expiry;
use perpetuo_core::apikey::{self, KeyHash};
use perpetuo_core::db::{self, Pool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::metrics;
use generations::Generations;
use perpetuo_core::db::api_keys::KeyCacheMode;
use perpetuo_core::policy::{Policy, Seed};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthedKey {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub expires_at: Option<OffsetDateTime>,
    /// The key's and its workspace's limits, loaded with the key.
    pub policy: Policy,
    /// The key's own response cache mode (`inherit`: its workspace's).
    pub cache_mode: KeyCacheMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    Invalid,
    Unavailable,
    /// The client's address used up its failed-lookup budget; its window ends in this
    /// long.
    Throttled(Duration),
}

/// While the database fails, a key served from the stale store is cached this long, so
/// each key costs the database at most one attempt per interval.
const STALE_RECHECK: Duration = Duration::from_secs(1);

/// Stale copies checked against the database per query after a reconnection.
const REVALIDATE_CHUNK: usize = 1000;

/// How the key cache is sized and timed.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a valid key is cached.
    pub ttl: Duration,
    /// How long an unknown key is cached as unknown.
    pub negative_ttl: Duration,
    /// How long after its last confirmation a valid key is still served while the
    /// database fails (zero: never).
    pub stale: Duration,
    /// Valid keys kept, fresh and stale each.
    pub capacity: u64,
    /// Unknown keys kept.
    pub unknown_capacity: u64,
    /// Lookups that reach the database and find no usable key, per client address group
    /// and minute (zero: no budget).
    pub failed_lookups_per_minute: u32,
    /// Longest wait for the database on a cache miss before answering 503
    /// (`DB_READ_TIMEOUT_MS`).
    pub db_timeout: Duration,
}

/// A valid key as the fresh cache holds it.
#[derive(Clone)]
struct Fresh {
    key: Arc<AuthedKey>,
    /// Served from the stale store because the database failed.
    stale: bool,
    /// The key's generation when the fill that produced it began.
    generation: u64,
}

struct Ttl {
    positive: Duration,
}

impl Expiry<KeyHash, Fresh> for Ttl {
    fn expire_after_create(
        &self,
        _key: &KeyHash,
        value: &Fresh,
        _now: Instant,
    ) -> Option<Duration> {
        Some(if value.stale {
            STALE_RECHECK.min(self.positive)
        } else {
            self.positive
        })
    }
}

/// Why a fill produced no valid key.
#[derive(Debug, Clone, Copy)]
enum NoKey {
    /// The database knows no usable key by this hash.
    Unknown,
    /// The database could not be asked.
    Failed,
    /// The address of the request that would have asked it spent its failed-lookup
    /// budget: retry after this long.
    Throttled(Duration),
}

pub struct KeyCache {
    fresh: Cache<KeyHash, Fresh>,
    /// Keys the database knows no usable key for; apart from `fresh`, so that a flood of
    /// unknown keys evicts only unknown keys.
    unknown: Cache<KeyHash, ()>,
    /// Keys last confirmed valid by the database, kept for the stale window; read only
    /// when the database fails.
    stale: Cache<KeyHash, Arc<AuthedKey>>,
    serve_stale: bool,
    generations: Arc<Generations>,
    failures: failures::Budget,
    /// Key loads on the request path.
    pool: Pool,
    /// Background work: `last_used_at`, the stale store's check after a reconnection.
    background: Pool,
    /// Longest wait for one database read.
    db_timeout: Duration,
    used: Mutex<HashSet<Uuid>>,
}

impl KeyCache {
    /// `pool` serves the request path's key loads only; `background` the rest.
    pub fn new(pool: Pool, background: Pool, settings: Settings) -> Self {
        let min = Duration::from_millis(1);
        Self {
            fresh: Cache::builder()
                .max_capacity(settings.capacity)
                .expire_after(Ttl {
                    positive: settings.ttl.max(min),
                })
                .support_invalidation_closures()
                .build(),
            unknown: Cache::builder()
                .max_capacity(settings.unknown_capacity)
                .time_to_live(settings.negative_ttl.max(min))
                .build(),
            stale: Cache::builder()
                .max_capacity(settings.capacity)
                .time_to_live(settings.stale.max(min))
                .build(),
            serve_stale: !settings.stale.is_zero(),
            generations: Arc::new(Generations::default()),
            failures: failures::Budget::new(settings.failed_lookups_per_minute),
            pool,
            background,
            db_timeout: settings.db_timeout,
            used: Mutex::new(HashSet::new()),
        }
    }

    /// The key for a bearer token sent from `client`.
    pub async fn authenticate(
        &self,
        token: &str,
        client: IpAddr,
    ) -> Result<Arc<AuthedKey>, AuthError> {
        if !apikey::looks_like_key(token) {
            return Err(AuthError::Invalid);
        }
        let hash = KeyHash::of(token);
        let key = if let Some(e) = self.fresh.get(&hash).await {
            metrics::KEY_CACHE.with_label_values(&["hit"]).inc();
            e.key
        } else if self.unknown.contains_key(&hash) {
            metrics::KEY_CACHE.with_label_values(&["hit"]).inc();
            return Err(AuthError::Invalid);
        } else {
            // The miss path (a database read, the stale copy) is boxed so that its large
            // future is not carried inside every request's future.
            Box::pin(self.load_miss(hash, client)).await?
        };
        if key
            .expires_at
            .is_some_and(|e| e <= OffsetDateTime::now_utc())
        {
            return Err(AuthError::Invalid);
        }
        if let Ok(mut used) = self.used.lock() {
            used.insert(key.id);
        }
        Ok(key)
    }

    /// A key in neither cache: read from the database (within the client address's
    /// failed-lookup budget), or its stale copy when the database is unavailable and stale
    /// serving is on.
    async fn load_miss(&self, hash: KeyHash, client: IpAddr) -> Result<Arc<AuthedKey>, AuthError> {
        // A fill that a change to its key overtook is not kept and is read again: the
        // second read begins after that change was committed. A second overtaken read
        // is answered (the request came before the change was heard) but not kept.
        let mut overtaken = None;
        for round in 0..2 {
            let filled = self.fill(hash, client).await;
            // A miss is a request answered by a lookup; one refused by the budget is not.
            if round == 0 && !matches!(filled, Err(NoKey::Throttled(_))) {
                metrics::KEY_CACHE.with_label_values(&["miss"]).inc();
            }
            match filled {
                Ok(entry) => {
                    if self.generations.seen(&hash).any == entry.generation {
                        return Ok(entry.key);
                    }
                    self.fresh.invalidate(&hash).await;
                    overtaken = Some(entry.key);
                }
                Err(NoKey::Unknown) => return Err(AuthError::Invalid),
                Err(NoKey::Throttled(wait)) => return Err(AuthError::Throttled(wait)),
                Err(NoKey::Failed) => return self.stale_copy(hash).await,
            }
        }
        overtaken.ok_or(AuthError::Unavailable)
    }

    /// One fill of the fresh cache for `hash`, shared by every request waiting for it. The
    /// one read of the database is what the failed-lookup budget counts, charged to the
    /// address of the request that makes it: requests waiting for the same fill reach no
    /// database, so a burst of first requests with one valid key spends nothing. When that
    /// address is past its budget, the requests waiting for the same key are refused with
    /// it (they share the fill's outcome; they hold the same key, so the same workspace).
    async fn fill(&self, hash: KeyHash, client: IpAddr) -> Result<Fresh, NoKey> {
        let pool = self.pool.clone();
        let db_timeout = self.db_timeout;
        let stale = self.stale.clone();
        let unknown = self.unknown.clone();
        let generations = self.generations.clone();
        let failures = &self.failures;
        self.fresh
            .try_get_with(hash, async move {
                let reservation = failures.reserve(client, Instant::now()).map_err(|wait| {
                    metrics::KEY_LOOKUPS_REFUSED.inc();
                    NoKey::Throttled(wait)
                })?;
                let seen = generations.seen(&hash);
                let loaded = load(&pool, db_timeout, &hash)
                    .await
                    .map_err(|_| NoKey::Failed);
                // Only a lookup that found no usable key spends the budget.
                if !matches!(loaded, Ok(None)) {
                    reservation.refund();
                }
                let loaded = loaded?;
                match loaded {
                    Some(key) => {
                        stale.insert(hash, key.clone()).await;
                        if generations.seen(&hash).revocations != seen.revocations {
                            stale.invalidate(&hash).await;
                        }
                        Ok(Fresh {
                            key,
                            stale: false,
                            generation: seen.any,
                        })
                    }
                    None => {
                        // The database itself says the key is not usable.
                        stale.invalidate(&hash).await;
                        unknown.insert(hash, ()).await;
                        if generations.seen(&hash).any != seen.any {
                            unknown.invalidate(&hash).await;
                        }
                        Err(NoKey::Unknown)
                    }
                }
            })
            .await
            .map_err(|e| *e)
    }

    /// The key's stale copy, while the database fails.
    async fn stale_copy(&self, hash: KeyHash) -> Result<Arc<AuthedKey>, AuthError> {
        if !self.serve_stale {
            return Err(AuthError::Unavailable);
        }
        let seen = self.generations.seen(&hash);
        let key = self.stale.get(&hash).await.ok_or(AuthError::Unavailable)?;
        metrics::KEY_CACHE.with_label_values(&["stale"]).inc();
        let entry = Fresh {
            key: key.clone(),
            stale: true,
            generation: seen.any,
        };
        self.fresh.insert(hash, entry).await;
        if self.generations.seen(&hash).any != seen.any {
            self.fresh.invalidate(&hash).await;
        }
        Ok(key)
    }

    /// The key was revoked, deleted, re-keyed, moved, or its expiry changed: every copy
    /// goes, the stale one too.
    pub async fn invalidate(&self, hash: &KeyHash) {
        self.generations.bump(hash, true);
        self.fresh.invalidate(hash).await;
        self.unknown.invalidate(hash).await;
        self.stale.invalidate(hash).await;
    }

    /// Another change to the key (limits, models, a new key): it is read again on its
    /// next use; its stale copy stays.
    pub async fn refresh(&self, hash: &KeyHash) {
        self.generations.bump(hash, false);
        self.fresh.invalidate(hash).await;
        self.unknown.invalidate(hash).await;
    }

    /// A workspace's limits changed: its keys are read again on their next use; other
    /// workspaces' keys and every stale copy stay.
    pub fn refresh_workspace(&self, workspace: Uuid) {
        self.generations.bump_all();
        let dropped = self
            .fresh
            .invalidate_entries_if(move |_, e| e.key.workspace_id == workspace);
        if dropped.is_err() {
            self.invalidate_all();
        }
    }

    /// Every key is read again on its next use (changes may have gone unheard); the
    /// stale copies stay, for an outage — see [`KeyCache::revalidate_stale`].
    pub fn invalidate_all(&self) {
        self.generations.bump_all();
        self.fresh.invalidate_all();
        self.unknown.invalidate_all();
    }

    /// Whether any key, known or unknown, was looked up and is still held.
    /// (Read from the entries themselves: `entry_count` lags recent insertions.)
    pub fn holds_any(&self) -> bool {
        self.fresh.iter().next().is_some()
            || self.unknown.iter().next().is_some()
            || self.stale.iter().next().is_some()
    }

    /// Checks every stale copy against the database and drops those whose key is no
    /// longer usable (a revocation that went unheard). Returns how many went.
    pub async fn revalidate_stale(&self) -> Result<u64, db::DbError> {
        let hashes: Vec<KeyHash> = self.stale.iter().map(|(h, _)| *h).collect();
        let mut dropped = 0;
        for chunk in hashes.chunks(REVALIDATE_CHUNK) {
            let usable = db::with_timeout(self.db_timeout, async {
                let client = self.background.get().await?;
                db::api_keys::usable_hashes(&client, chunk, OffsetDateTime::now_utc()).await
            })
            .await?;
            let usable: HashSet<KeyHash> = usable.into_iter().collect();
            for hash in chunk.iter().filter(|h| !usable.contains(*h)) {
                self.invalidate(hash).await;
                dropped += 1;
            }
        }
        metrics::STALE_KEYS_DROPPED.inc_by(dropped);
        Ok(dropped)
    }

    /// Writes `last_used_at` for every key used since the last call.
    pub async fn flush_last_used(&self) -> Result<u64, db::DbError> {
        let ids: Vec<Uuid> = match self.used.lock() {
            Ok(mut used) => used.drain().collect(),
            Err(_) => return Ok(0),
        };
        if ids.is_empty() {
            return Ok(0);
        }
        let client = self.background.get().await?;
        db::api_keys::touch_last_used(&client, &ids, OffsetDateTime::now_utc()).await
    }
}

/// Reads a key within `timeout` ([`db::read_within`]).
async fn load(
    pool: &Pool,
    timeout: Duration,
    hash: &KeyHash,
) -> Result<Option<Arc<AuthedKey>>, db::DbError> {
    db::read_within(pool, timeout, async |client| read(client, hash).await).await
}

async fn read(client: &db::Client, hash: &KeyHash) -> Result<Option<Arc<AuthedKey>>, db::DbError> {
    let now = perpetuo_core::clock::now_utc();
    let Some(k) = db::api_keys::find_by_hash(client, hash)
        .await?
        .filter(|k| k.is_active(now))
    else {
        return Ok(None);
    };
    let workspace = db::limits::workspace(client, k.workspace_id)
        .await?
        .unwrap_or_default();
    // A budget's spend so far comes from the usage counters, so that a restart or a lost
    // shared store does not hand the key a fresh budget.
    let key_seed = match k.limits.budget_nusd {
        Some(_) => Some(
            seed(
                client,
                k.workspace_id,
                Some(k.id),
                k.limits.budget_period,
                now,
            )
            .await?,
        ),
        None => None,
    };
    let workspace_seed = match workspace.budget_nusd {
        Some(_) => Some(seed(client, k.workspace_id, None, workspace.budget_period, now).await?),
        None => None,
    };
    Ok(Some(Arc::new(AuthedKey {
        id: k.id,
        workspace_id: k.workspace_id,
        expires_at: k.expires_at,
        cache_mode: k.cache_mode,
        policy: Policy {
            key: k.limits,
            workspace,
            allowed_models: k.allowed_models,
            key_seed,
            workspace_seed,
        },
    })))
}

async fn seed(
    client: &db::Client,
    workspace: Uuid,
    key: Option<Uuid>,
    period: db::limits::Period,
    now: OffsetDateTime,
) -> Result<Seed, db::DbError> {
    let period_start = period.start(now);
    let spent_nusd = db::limits::spend_since(client, workspace, key, period_start).await?;
    Ok(Seed {
        period_start,
        spent_nusd,
    })
}
