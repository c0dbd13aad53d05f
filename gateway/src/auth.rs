//! API key authentication from a cache: bearer key → SHA-256 → moka (bounded, positive and
//! negative TTLs) → database on a miss, with concurrent misses for one key coalesced into
//! one query. Entries are invalidated by change notifications. `last_used_at` is
//! collected here and written in batches by a background task.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::Expiry;
use perpetuo_core::apikey::{self, KeyHash};
use perpetuo_core::db::{self, Pool};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::metrics;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthedKey {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub expires_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    Invalid,
    Unavailable,
}

/// Longest wait for the database on a cache miss before answering 503.
const DB_TIMEOUT: Duration = Duration::from_secs(5);

/// `None` caches "no such usable key".
type Entry = Option<Arc<AuthedKey>>;

struct Ttl {
    positive: Duration,
    negative: Duration,
}

impl Expiry<KeyHash, Entry> for Ttl {
    fn expire_after_create(
        &self,
        _key: &KeyHash,
        value: &Entry,
        _now: Instant,
    ) -> Option<Duration> {
        Some(if value.is_some() {
            self.positive
        } else {
            self.negative
        })
    }
}

pub struct KeyCache {
    cache: Cache<KeyHash, Entry>,
    pool: Pool,
    used: Mutex<HashSet<Uuid>>,
}

impl KeyCache {
    pub fn new(pool: Pool, positive: Duration, negative: Duration) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(100_000)
                .expire_after(Ttl { positive, negative })
                .build(),
            pool,
            used: Mutex::new(HashSet::new()),
        }
    }

    pub async fn authenticate(&self, token: &str) -> Result<Arc<AuthedKey>, AuthError> {
        if !apikey::looks_like_key(token) {
            return Err(AuthError::Invalid);
        }
        let hash = KeyHash::of(token);
        let entry = match self.cache.get(&hash).await {
            Some(e) => {
                metrics::KEY_CACHE.with_label_values(&["hit"]).inc();
                e
            }
            None => {
                metrics::KEY_CACHE.with_label_values(&["miss"]).inc();
                let pool = self.pool.clone();
                self.cache
                    .try_get_with(hash, async move {
                        db::with_timeout(DB_TIMEOUT, load(&pool, &hash)).await
                    })
                    .await
                    .map_err(|_| AuthError::Unavailable)?
            }
        };
        let key = entry.ok_or(AuthError::Invalid)?;
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

    pub async fn invalidate(&self, hash: &KeyHash) {
        self.cache.invalidate(hash).await;
    }

    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
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
        let client = self.pool.get().await?;
        db::api_keys::touch_last_used(&client, &ids, OffsetDateTime::now_utc()).await
    }
}

async fn load(pool: &Pool, hash: &KeyHash) -> Result<Entry, db::DbError> {
    let client = pool.get().await?;
    let row = db::api_keys::find_by_hash(&client, hash).await?;
    Ok(row
        .filter(|k| k.is_active(OffsetDateTime::now_utc()))
        .map(|k| {
            Arc::new(AuthedKey {
                id: k.id,
                workspace_id: k.workspace_id,
                expires_at: k.expires_at,
            })
        }))
}
