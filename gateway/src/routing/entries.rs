//! A workspace's usable provider entries: where each sends its requests, its key opened
//! once, cached per workspace (bounded, expiring, invalidated by change notifications) with
//! a stale copy served only while the database fails.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use moka::future::Cache;
use perpetuo_core::crypto::MasterKey;
use perpetuo_core::db::workspaces::{CacheSettings, Routing, TracingSettings};
use perpetuo_core::db::{self, Pool};
use perpetuo_core::provider::ProviderKind;
use perpetuo_core::Secret;
use uuid::Uuid;

use super::balance::EntryStats;
use crate::metrics;

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

/// One key of an entry's pool, opened once and kept behind `Secret`.
#[derive(Debug)]
pub struct PoolKey {
    pub id: Uuid,
    pub label: String,
    /// Share of the entry's traffic, relative to its other keys' (0: standby, used only
    /// when the others cannot take the request).
    pub weight: u32,
    pub secret: Secret<String>,
}

/// An entry's own quota (a deployment's fixed capacity), enforced like a key's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
}

/// A provider entry ready for requests.
#[derive(Debug)]
pub struct Entry {
    pub id: Uuid,
    pub name: String,
    pub kind: ProviderKind,
    pub upstream: Upstream,
    /// Its provider keys, enabled ones only; none for a server that needs no key.
    pub keys: Vec<PoolKey>,
    pub quota: Option<Quota>,
    pub priority: i32,
    /// Share of its priority's traffic, relative to the others' (0: standby, tried only
    /// after the others of its priority).
    pub weight: u32,
    pub models: Vec<String>,
    pub model_map: BTreeMap<String, String>,
    /// This entry's balancing state, found once per load rather than per request.
    pub balance: OnceLock<Arc<EntryStats>>,
}

/// A workspace's usable entries by priority, and how each priority shares its traffic.
#[derive(Debug, Default)]
pub struct Routes {
    pub routing: Routing,
    /// The workspace's response cache settings (its generation is part of every key).
    pub cache: CacheSettings,
    /// What the workspace lets into exported spans (message content, when it opts in).
    pub tracing: TracingSettings,
    pub entries: Vec<Arc<Entry>>,
}

impl Entry {
    pub fn serves(&self, model: &str) -> bool {
        self.models.is_empty()
            || self.models.iter().any(|m| m == model)
            || self.model_map.contains_key(model)
    }

    /// A key to list the provider's models with (the first of the pool; `""`: none).
    pub fn any_key(&self) -> &str {
        self.keys.first().map_or("", |k| k.secret.expose())
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
    routes: Arc<Routes>,
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
    stale: Cache<Uuid, Arc<Routes>>,
    serve_stale: bool,
    pool: Pool,
    /// Longest wait for the database when a workspace's entries are loaded.
    db_timeout: Duration,
    master_key: MasterKey,
}

const MAX_WORKSPACES: u64 = 50_000;

impl EntryCache {
    /// `ttl`: how long entries are cached; `stale`: how long the last entries the
    /// database gave are kept for an outage (zero: never served stale); `db_timeout`:
    /// the longest wait for the database on a miss.
    pub fn new(
        pool: Pool,
        master_key: MasterKey,
        ttl: Duration,
        stale: Duration,
        db_timeout: Duration,
    ) -> Self {
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
            db_timeout,
            master_key,
        }
    }

    /// Enabled entries of a workspace by priority.
    pub async fn entries(&self, workspace: Uuid) -> Result<Arc<Routes>, Arc<db::DbError>> {
        if let Some(loaded) = self.cache.get(&workspace).await {
            return Ok(loaded.routes);
        }
        // The miss path is boxed so that its large future is not carried inside every
        // request's future.
        Box::pin(self.load_miss(workspace)).await
    }

    /// A workspace not in the cache: read from the database (one load however many
    /// requests wait for it), or its stale copy when the database is unavailable.
    async fn load_miss(&self, workspace: Uuid) -> Result<Arc<Routes>, Arc<db::DbError>> {
        let pool = self.pool.clone();
        let key = self.master_key.clone();
        let stale = self.stale.clone();
        let serve_stale = self.serve_stale;
        let db_timeout = self.db_timeout;
        self.cache
            .try_get_with(workspace, async move {
                match load(&pool, db_timeout, &key, workspace).await {
                    Ok(routes) => {
                        stale.insert(workspace, routes.clone()).await;
                        Ok(Loaded {
                            routes,
                            stale: false,
                        })
                    }
                    Err(e) if serve_stale => match stale.get(&workspace).await {
                        Some(routes) => {
                            metrics::ENTRY_CACHE_STALE.inc();
                            Ok(Loaded {
                                routes,
                                stale: true,
                            })
                        }
                        None => Err(e),
                    },
                    Err(e) => Err(e),
                }
            })
            .await
            .map(|l| l.routes)
    }

    pub async fn invalidate(&self, workspace: Uuid) {
        self.cache.invalidate(&workspace).await;
        self.stale.invalidate(&workspace).await;
    }

    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
        self.stale.invalidate_all();
    }

    /// Whether any workspace's entries were loaded (and not yet dropped).
    /// (Read from the entries themselves: `entry_count` lags recent insertions.)
    pub fn holds_any(&self) -> bool {
        self.cache.iter().next().is_some() || self.stale.iter().next().is_some()
    }
}

/// Loads a workspace's entries within `timeout` ([`db::read_within`]).
async fn load(
    pool: &Pool,
    timeout: Duration,
    master_key: &MasterKey,
    workspace: Uuid,
) -> Result<Arc<Routes>, db::DbError> {
    let (rows, keys, routing, cache, tracing) =
        db::read_within(pool, timeout, async |client: &db::Client| {
            let rows = db::providers::list(client, workspace).await?;
            let keys = db::entry_keys::list_for_workspace(client, workspace).await?;
            let routing = db::workspaces::routing(client, workspace).await?;
            let cache = db::workspaces::cache(client, workspace).await?;
            let tracing = db::workspaces::tracing(client, workspace).await?;
            Ok((rows, keys, routing, cache, tracing))
        })
        .await?;
    // Each entry's pool, oldest key first.
    let mut pools: std::collections::HashMap<Uuid, Vec<db::entry_keys::EntryKey>> =
        std::collections::HashMap::new();
    for key in keys {
        pools.entry(key.entry_id).or_default().push(key);
    }
    let mut out = Vec::new();
    for row in rows.into_iter().filter(|r| r.enabled) {
        let Some(base) = row.base_url.as_deref().or(row.kind.default_base_url()) else {
            continue;
        };
        let Some(upstream) = Upstream::parse(base) else {
            tracing::warn!(entry = %row.id, "provider entry has an unusable base URL; skipped");
            continue;
        };
        // The entry's pool: its enabled keys that open. An entry with keys of which none
        // is usable is skipped (sending none would only earn the provider's 401); one
        // without any key sends none.
        let pool = pools.remove(&row.id).unwrap_or_default();
        let had_keys = !pool.is_empty();
        let mut keys = Vec::with_capacity(pool.len());
        for k in pool.into_iter().filter(|k| k.enabled) {
            // Opened by the format the row records: rows not yet re-sealed still open.
            match master_key.open(&k.sealed, &row.binding()) {
                Ok(secret) => keys.push(PoolKey {
                    id: k.id,
                    label: k.label,
                    weight: u32::try_from(k.weight).unwrap_or(1),
                    secret,
                }),
                Err(e) => {
                    tracing::error!(entry = %row.id, key = %k.id, error = %e, "provider key does not open; key skipped");
                }
            }
        }
        if had_keys && keys.is_empty() {
            tracing::warn!(entry = %row.id, "no key of the provider entry is usable; entry skipped");
            continue;
        }
        let quota = (row.quota_rpm.is_some() || row.quota_tpm.is_some()).then(|| Quota {
            rpm: row
                .quota_rpm
                .and_then(|v| u32::try_from(v).ok())
                .filter(|&v| v > 0),
            tpm: row
                .quota_tpm
                .and_then(|v| u64::try_from(v).ok())
                .filter(|&v| v > 0),
        });
        out.push(Arc::new(Entry {
            id: row.id,
            name: row.name,
            kind: row.kind,
            upstream,
            keys,
            quota,
            priority: row.priority,
            weight: u32::try_from(row.weight).unwrap_or(1),
            models: row.models,
            model_map: row.model_map,
            balance: OnceLock::new(),
        }));
    }
    Ok(Arc::new(Routes {
        routing,
        cache,
        tracing,
        entries: out,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

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
