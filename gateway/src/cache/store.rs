//! Where answers are kept: in this process (moka, weighted by bytes, each entry expiring
//! at its own TTL), or in Redis so every gateway shares them (one compressed value per
//! entry, under the key prefix, with its TTL). A Redis that is slow or away makes the
//! cache miss within the deadline — counted, never a failed request — and a write that
//! cannot be made is dropped.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::Expiry;
use redis::aio::MultiplexedConnection;
use tokio::sync::Semaphore;

use super::entry::Stored;
use super::key::Key;
use crate::metrics;

/// Redis writes in flight at most; past it a write is dropped (the next miss writes it).
const REDIS_WRITES: usize = 64;

/// How long after a failed connection attempt the next is made (requests meanwhile miss
/// without waiting).
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Longest a background connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Each entry lives for its own TTL.
struct PerEntry;

impl Expiry<Key, Arc<Stored>> for PerEntry {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &Arc<Stored>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(u64::from(value.head.ttl_s)))
    }
}

/// The store of one gateway.
pub enum Store {
    Memory(Cache<Key, Arc<Stored>>),
    Redis(Box<RedisCache>),
}

impl Store {
    /// In process, holding at most `max_bytes` of answers.
    pub fn memory(max_bytes: u64) -> Self {
        Store::Memory(
            Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_k: &Key, v: &Arc<Stored>| u32::try_from(v.weight()).unwrap_or(u32::MAX))
                .expire_after(PerEntry)
                .build(),
        )
    }

    pub async fn get(&self, key: &Key) -> Option<Arc<Stored>> {
        match self {
            Store::Memory(c) => c.get(key).await,
            Store::Redis(r) => r.get(key).await.map(Arc::new),
        }
    }

    pub async fn put(&self, key: Key, value: Arc<Stored>) {
        match self {
            Store::Memory(c) => {
                c.insert(key, value).await;
                metrics::CACHE_BYTES.set(i64::try_from(c.weighted_size()).unwrap_or(i64::MAX));
            }
            Store::Redis(r) => r.put(key, value),
        }
    }
}

/// Answers in Redis.
pub struct RedisCache {
    client: redis::Client,
    conn: Arc<Mutex<Conn>>,
    prefix: String,
    deadline: Duration,
    /// Largest answer kept, bytes (a value that would decompress past it is ignored).
    max_entry_bytes: usize,
    writes: Arc<Semaphore>,
}

#[derive(Default)]
struct Conn {
    live: Option<MultiplexedConnection>,
    /// A connection is being made in the background.
    connecting: bool,
    failed_at: Option<Instant>,
}

impl RedisCache {
    pub fn new(
        url: &str,
        prefix: String,
        deadline: Duration,
        max_entry_bytes: usize,
    ) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            conn: Arc::new(Mutex::new(Conn::default())),
            prefix,
            deadline,
            max_entry_bytes,
            writes: Arc::new(Semaphore::new(REDIS_WRITES)),
        })
    }

    fn name(&self, key: &Key) -> String {
        format!("{}cache:{}", self.prefix, key.hex())
    }

    /// The live connection. Without one a request never waits to connect: one attempt
    /// at a time is made in the background (at most one a second after a failure), and
    /// the request misses.
    fn connection(&self) -> Option<MultiplexedConnection> {
        let mut c = self.conn.lock().ok()?;
        if let Some(live) = &c.live {
            return Some(live.clone());
        }
        if c.connecting || c.failed_at.is_some_and(|t| t.elapsed() < RECONNECT_AFTER) {
            return None;
        }
        c.connecting = true;
        let (client, slot) = (self.client.clone(), self.conn.clone());
        tokio::spawn(async move {
            let made =
                tokio::time::timeout(CONNECT_TIMEOUT, client.get_multiplexed_async_connection())
                    .await;
            if let Ok(mut c) = slot.lock() {
                c.connecting = false;
                match made {
                    Ok(Ok(conn)) => {
                        c.live = Some(conn);
                        c.failed_at = None;
                    }
                    _ => c.failed_at = Some(Instant::now()),
                }
            }
        });
        None
    }

    /// Forgets a connection that failed (not one that was only slow).
    fn broken(&self) {
        if let Ok(mut c) = self.conn.lock() {
            c.live = None;
            c.failed_at = Some(Instant::now());
        }
    }

    async fn get(&self, key: &Key) -> Option<Stored> {
        let Some(mut conn) = self.connection() else {
            metrics::CACHE_ERRORS.with_label_values(&["read"]).inc();
            return None;
        };
        let name = self.name(key);
        let got = tokio::time::timeout(
            self.deadline,
            redis::cmd("GET")
                .arg(&name)
                .query_async::<Option<Vec<u8>>>(&mut conn),
        )
        .await;
        match got {
            Ok(Ok(value)) => value.and_then(|v| Stored::decode(&v, self.max_entry_bytes)),
            Ok(Err(_)) => {
                self.broken();
                metrics::CACHE_ERRORS.with_label_values(&["read"]).inc();
                None
            }
            Err(_) => {
                // Slow, not lost: the connection stays.
                metrics::CACHE_ERRORS.with_label_values(&["read"]).inc();
                None
            }
        }
    }

    /// Writes in the background, bounded in number and in time.
    fn put(&self, key: Key, value: Arc<Stored>) {
        let Ok(permit) = self.writes.clone().try_acquire_owned() else {
            metrics::CACHE_ERRORS.with_label_values(&["write"]).inc();
            return;
        };
        let Some(mut conn) = self.connection() else {
            metrics::CACHE_ERRORS.with_label_values(&["write"]).inc();
            return;
        };
        let name = self.name(&key);
        let ttl_ms = u64::from(value.head.ttl_s) * 1000;
        let deadline = self.deadline.max(Duration::from_millis(250));
        // Compressed off the request's own path: its answer is not held for it.
        tokio::spawn(async move {
            let _permit = permit;
            let Some(encoded) = value.encode() else {
                return;
            };
            let mut cmd = redis::cmd("SET");
            cmd.arg(&name).arg(encoded).arg("PX").arg(ttl_ms.max(1));
            let set = cmd.query_async::<()>(&mut conn);
            if !matches!(tokio::time::timeout(deadline, set).await, Ok(Ok(()))) {
                metrics::CACHE_ERRORS.with_label_values(&["write"]).inc();
            }
        });
    }
}
