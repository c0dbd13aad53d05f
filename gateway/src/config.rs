//! Gateway configuration: addresses, secrets and limits from the environment (and `.env`),
//! Pingora server settings from `conf/gateway.yaml` (embedded; a file may replace it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use perpetuo_core::config;
use perpetuo_core::crypto::MasterKey;
use perpetuo_core::db::StatementTimeout;
use perpetuo_core::forwarded::{TrustedProxies, TRUSTED_PROXIES};
use perpetuo_core::telemetry::TelemetrySettings;
use perpetuo_core::upstream::UpstreamPolicy;
use perpetuo_core::Secret;

pub const EMBEDDED_SERVER_CONF: &str = include_str!("../../conf/gateway.yaml");

/// Largest stored conversation that can still be continued, in bytes.
pub const RESPONSES_MAX_CONVERSATION_BYTES: &str = "RESPONSES_MAX_CONVERSATION_BYTES";
/// Bytes of stored responses a workspace may keep.
pub const RESPONSES_WORKSPACE_QUOTA_BYTES: &str = "RESPONSES_WORKSPACE_QUOTA_BYTES";

fn millis(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| "must be a whole number of milliseconds".into())
}

/// A wait a request may spend on the database: 1 ms to 10 minutes.
fn db_read_timeout(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(ms) if (1..=600_000).contains(&ms) => Ok(Duration::from_millis(ms)),
        _ => Err("must be a whole number of milliseconds from 1 to 600000".into()),
    }
}

fn usd_per_mtok(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=100_000.0).contains(&v) => Ok(v),
        _ => Err("must be a price in USD per million tokens, from 0 to 100000".into()),
    }
}

fn redis_url(s: &str) -> Result<Secret<String>, String> {
    match s.split_once("://") {
        Some(("redis" | "rediss" | "unix", _)) => Ok(Secret::new(s.to_string())),
        _ => Err("must be a redis://, rediss:// or unix:// URL".into()),
    }
}

/// Every setting of the gateway, grouped by topic.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "perpetuo-gateway",
    about = "Perpetuo's OpenAI-compatible LLM gateway"
)]
pub struct Config {
    #[command(flatten)]
    pub server: ServerSettings,
    #[command(flatten)]
    pub clients: ClientSettings,
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[command(flatten)]
    pub upstream: UpstreamSettings,
    #[command(flatten)]
    pub caches: CacheSettings,
    #[command(flatten)]
    pub limits: LimitSettings,
    #[command(flatten)]
    pub response_cache: ResponseCacheSettings,
    #[command(flatten)]
    pub logs: LogSettings,
    #[command(flatten)]
    pub responses: ResponseSettings,
    #[command(flatten)]
    pub tracing: TelemetrySettings,
}

/// The listeners, the Pingora settings and shutdown.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Server")]
pub struct ServerSettings {
    /// Address of the OpenAI-compatible proxy.
    #[arg(long, env = "GATEWAY_ADDR", default_value = "127.0.0.1:8000")]
    pub gateway_addr: SocketAddr,
    /// Address of the Prometheus endpoint.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9091")]
    pub metrics_addr: SocketAddr,
    /// Pingora server settings (YAML); the embedded conf/gateway.yaml when unset.
    #[arg(long, env = "GATEWAY_SERVER_CONF")]
    pub server_conf: Option<PathBuf>,
    /// Overrides the shutdown grace period of the server settings, in seconds.
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS")]
    pub shutdown_grace_seconds: Option<u64>,
}

/// What one client connection or request may hold.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Clients")]
pub struct ClientSettings {
    /// Most open client connections.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 8192)]
    pub max_connections: usize,
    /// Most open client connections from one IP address (0: no per-address cap).
    #[arg(long, env = "MAX_CONNECTIONS_PER_IP", default_value_t = 1024)]
    pub max_connections_per_ip: usize,
    /// Load balancers and proxies in front of the gateway (comma-separated CIDRs or
    /// addresses): for requests from them the client address is read from
    /// `X-Forwarded-For`, their connections are not capped per address, and each client
    /// behind them is capped per request instead. Empty trusts nobody.
    #[arg(long, env = TRUSTED_PROXIES, default_value = "", value_parser = config::trusted_proxies)]
    pub trusted_proxies: TrustedProxies,
    /// Most requests in flight from one client behind a trusted proxy (IPv6 by /64); past
    /// it 429 (0: no cap).
    #[arg(long, env = "MAX_REQUESTS_PER_CLIENT", default_value_t = 1024)]
    pub max_requests_per_client: usize,
    /// Time a client has to send a request's whole header, from its first byte (or from
    /// connecting), ms.
    #[arg(long, env = "HEADER_READ_TIMEOUT_MS", default_value = "10000", value_parser = millis)]
    pub header_read_timeout: Duration,
    /// Time a client has to send a request's whole body, from its first read, ms; past
    /// it the request is answered 408 and the connection closed.
    #[arg(long, env = "BODY_READ_TIMEOUT_MS", default_value = "30000", value_parser = millis)]
    pub body_read_timeout: Duration,
    /// How long a kept-alive client connection may wait for its next request, ms.
    #[arg(long, env = "KEEPALIVE_IDLE_TIMEOUT_MS", default_value = "60000", value_parser = millis)]
    pub keepalive_idle_timeout: Duration,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_body_bytes: usize,
}

/// PostgreSQL and the master key that opens provider keys.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Database")]
pub struct DatabaseSettings {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", value_parser = config::database_url, hide_env_values = true)]
    pub database_url: Secret<String>,
    /// 32-byte key (base64) that opens sealed provider keys.
    #[arg(long, env = "PERPETUO_MASTER_KEY", value_parser = config::master_key, hide_env_values = true)]
    pub master_key: MasterKey,
    /// During a master-key rotation, the key being replaced: provider keys sealed under it
    /// still open until `perpetuo-admin rotate-master-key` has re-sealed them.
    #[arg(long, env = "PERPETUO_MASTER_KEY_PREVIOUS", value_parser = config::master_key, hide_env_values = true)]
    pub master_key_previous: Option<MasterKey>,
    /// Maximum database connections for everything but key and entry loads: log writes,
    /// stored responses, log partitions, budget re-seeds, `last_used_at`.
    #[arg(long, env = "GATEWAY_DB_POOL_SIZE", default_value_t = 8)]
    pub db_pool_size: usize,
    /// Maximum database connections for the request path's key and provider-entry loads
    /// (cache misses), apart from the others so that no log write or stored response
    /// waits in front of them.
    #[arg(long, env = "AUTH_POOL_SIZE", default_value_t = 4, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub auth_pool_size: usize,
    /// Longest one statement of the gateway's database connections may run before
    /// PostgreSQL cancels it, ms (0: no limit is set). Log partition maintenance has its own.
    #[arg(long, env = config::DB_STATEMENT_TIMEOUT_MS, default_value_t = StatementTimeout::DEFAULT,
          value_parser = config::statement_timeout)]
    pub db_statement_timeout: StatementTimeout,
    /// Longest a request waits for a database call it cannot do without (reading its key
    /// or its workspace's provider entries on a cache miss, reading or storing a stored
    /// response) before it is answered 503, ms. A key or entry confirmed within
    /// `KEY_CACHE_STALE_MS` is served stale instead.
    #[arg(long, env = "DB_READ_TIMEOUT_MS", default_value = "5000", value_parser = db_read_timeout)]
    pub db_read_timeout: Duration,
}

/// Calls to providers: where they may go, their timeouts, the breaker.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Providers")]
pub struct UpstreamSettings {
    /// CIDRs where provider base URLs may point although private or loopback.
    #[arg(long, env = "ALLOWED_PRIVATE_UPSTREAMS", default_value = "", value_parser = config::upstream_policy)]
    pub allowed_private_upstreams: UpstreamPolicy,
    /// TCP (and TLS) connect timeout per attempt, ms.
    #[arg(long, env = "UPSTREAM_CONNECT_TIMEOUT_MS", default_value = "5000", value_parser = millis)]
    pub connect_timeout: Duration,
    /// Time allowed from the start of an attempt to the provider's first body chunk, ms.
    #[arg(long, env = "UPSTREAM_TTFB_TIMEOUT_MS", default_value = "60000", value_parser = millis)]
    pub ttfb_timeout: Duration,
    /// Longest silence between two body chunks of a provider's answer, ms.
    #[arg(long, env = "UPSTREAM_IDLE_TIMEOUT_MS", default_value = "300000", value_parser = millis)]
    pub idle_timeout: Duration,
    /// Longest a whole answer may take, from the request's arrival to its last byte, ms.
    #[arg(long, env = "MAX_ANSWER_DURATION_MS", default_value = "1800000", value_parser = millis)]
    pub max_answer_duration: Duration,
    /// Longest single stream event accepted from a provider, bytes.
    #[arg(long, env = "MAX_STREAM_EVENT_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_stream_event_bytes: usize,
    /// Consecutive failures that open an entry's circuit breaker.
    #[arg(long, env = "BREAKER_THRESHOLD", default_value_t = 5)]
    pub breaker_threshold: u32,
    /// How long an open breaker skips its entry before letting one probe through, ms.
    #[arg(long, env = "BREAKER_COOLDOWN_MS", default_value = "30000", value_parser = millis)]
    pub breaker_cooldown: Duration,
}

/// Cached keys and provider entries.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Key and entry caches")]
pub struct CacheSettings {
    /// How long a valid key stays cached, ms.
    #[arg(long, env = "KEY_CACHE_TTL_MS", default_value = "60000", value_parser = millis)]
    pub key_cache_ttl: Duration,
    /// How long an unknown key stays cached as unknown, ms.
    #[arg(long, env = "KEY_CACHE_NEGATIVE_TTL_MS", default_value = "5000", value_parser = millis)]
    pub key_cache_negative_ttl: Duration,
    /// Valid keys cached (and as many stale copies kept for an outage).
    #[arg(long, env = "KEY_CACHE_CAPACITY", default_value_t = 100_000)]
    pub key_cache_capacity: u64,
    /// Unknown keys cached as unknown; kept apart, so they never evict valid keys.
    #[arg(long, env = "KEY_CACHE_UNKNOWN_CAPACITY", default_value_t = 10_000)]
    pub key_cache_unknown_capacity: u64,
    /// Key lookups that reach the database and find no usable key, per client address
    /// (IPv6: per /64) and minute; past it such lookups get 429 without a query (0: no
    /// budget).
    #[arg(long, env = "FAILED_KEY_LOOKUPS_PER_MINUTE", default_value_t = 100)]
    pub failed_key_lookups_per_minute: u32,
    /// How long after the database last confirmed a key (or a workspace's provider
    /// entries) it is still used while the database fails, ms (0: never).
    #[arg(long, env = "KEY_CACHE_STALE_MS", default_value = "900000", value_parser = millis)]
    pub key_cache_stale: Duration,
    /// How long a workspace's provider entries stay cached (notifications refresh them
    /// sooner), ms.
    #[arg(long, env = "ENTRY_CACHE_TTL_MS", default_value = "300000", value_parser = millis)]
    pub entry_cache_ttl: Duration,
}

/// Shared limits (Redis) and the pricing table.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Limits and prices")]
pub struct LimitSettings {
    /// Redis shared by every gateway for limits; unset: limits are kept in process.
    #[arg(long, env = "REDIS_URL", value_parser = redis_url, hide_env_values = true)]
    pub redis_url: Option<Secret<String>>,
    /// Longest a request waits for Redis before limiting locally, ms.
    #[arg(long, env = "REDIS_DEADLINE_MS", default_value = "20", value_parser = millis)]
    pub redis_deadline: Duration,
    /// Gateways sharing the limits: each leases blocks of `limit / (8 × this)` from Redis,
    /// and allows this share of a limit while Redis is unreachable.
    #[arg(long, env = "GATEWAY_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub gateway_replicas: u32,
    /// Prefix of the gateway's Redis keys.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "perpetuo:")]
    pub redis_key_prefix: String,
    /// Pricing table (TOML); the embedded conf/pricing.toml when unset.
    #[arg(long, env = "PRICING_FILE")]
    pub pricing_file: Option<String>,
    /// Price (USD per million tokens, input and output alike) charged for models the
    /// pricing table does not name; unset: such models cost nothing and are refused to
    /// keys and workspaces with a spend budget (403 `model_not_priced`).
    #[arg(long, env = "UNPRICED_MODEL_USD_PER_MTOK", value_parser = usd_per_mtok)]
    pub unpriced_model_usd_per_mtok: Option<f64>,
}

/// The response cache.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Response cache")]
pub struct ResponseCacheSettings {
    /// Bytes of answers the in-process cache holds (when `CACHE_REDIS_URL` is unset).
    #[arg(long, env = "CACHE_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub cache_max_bytes: u64,
    /// Largest answer stored, bytes; larger answers are served but not stored.
    #[arg(long, env = "CACHE_MAX_ENTRY_BYTES", default_value_t = 1024 * 1024)]
    pub cache_max_entry_bytes: usize,
    /// Redis that every gateway shares the cache through (not the limits' `REDIS_URL`:
    /// cache entries must never push the limits' state out); unset: the cache is kept
    /// in process. Waits for it are bounded by `REDIS_DEADLINE_MS`.
    #[arg(long, env = "CACHE_REDIS_URL", value_parser = redis_url, hide_env_values = true)]
    pub cache_redis_url: Option<Secret<String>>,
}

/// The log queue, the spool and log retention.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Logs and spool")]
pub struct LogSettings {
    /// Capacity of the log queue (records); beyond it records are counted as dropped.
    #[arg(long, env = "LOG_QUEUE_CAPACITY", default_value_t = 50_000)]
    pub log_queue_capacity: usize,
    /// Directory of the gateway's local state: the log spool (records waiting for
    /// PostgreSQL) and its reject file. One directory per gateway process.
    #[arg(long, env = "DATA_DIR", default_value = "/var/lib/perpetuo")]
    pub data_dir: PathBuf,
    /// Largest size of the log spool, in bytes; records past it are dropped and counted.
    #[arg(long, env = "LOG_SPOOL_MAX_BYTES", default_value_t = 1024 * 1024 * 1024)]
    pub log_spool_max_bytes: u64,
    /// Days of request logs kept (whole monthly partitions are dropped past it; usage
    /// counters are kept); 0 keeps them forever.
    #[arg(long, env = "LOG_RETENTION_DAYS", default_value_t = 90)]
    pub log_retention_days: u32,
}

/// The Responses API's stored responses.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Stored responses")]
pub struct ResponseSettings {
    /// Days a stored Responses API answer is kept (for `GET /v1/responses/{id}` and
    /// `previous_response_id`).
    #[arg(long, env = "RESPONSES_RETENTION_DAYS", default_value_t = 30)]
    pub responses_retention_days: u32,
    /// Largest stored conversation (the chat messages of every turn through a response)
    /// that `previous_response_id` may still continue, in bytes; a turn whose conversation
    /// passes it is stored without its messages and cannot be continued.
    #[arg(long, env = RESPONSES_MAX_CONVERSATION_BYTES, default_value_t = 4 * 1024 * 1024)]
    pub responses_max_conversation_bytes: usize,
    /// Bytes of stored responses one workspace may keep; past it, requests that would be
    /// stored are refused (413 `responses_quota_exceeded`) before any provider is called.
    /// 0: no quota.
    #[arg(long, env = RESPONSES_WORKSPACE_QUOTA_BYTES, default_value_t = 1024 * 1024 * 1024)]
    pub responses_workspace_quota_bytes: u64,
}

impl DatabaseSettings {
    /// The master key, holding the previous one too during a rotation.
    pub fn master_keys(&self) -> MasterKey {
        self.master_key
            .with_optional_previous(self.master_key_previous.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_read_timeout_is_bounded() {
        assert_eq!(db_read_timeout("1"), Ok(Duration::from_millis(1)));
        assert_eq!(db_read_timeout("600000"), Ok(Duration::from_secs(600)));
        for bad in ["0", "600001", "-1", "1.5", "", "18446744073709551616"] {
            assert!(db_read_timeout(bad).is_err(), "{bad}");
        }
    }
}
