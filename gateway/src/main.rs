//! `perpetuo-gateway`: wires configuration, caches, the proxy, metrics and background
//! services into a Pingora server, runs it, then writes the log records still queued.

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use perpetuo_core::db;
use perpetuo_core::dns::Resolver;
use perpetuo_core::pricing::Pricing;
use perpetuo_gateway::auth::{self, KeyCache};
use perpetuo_gateway::background::{self, Lowered};
use perpetuo_gateway::clients::Clients;
use perpetuo_gateway::config::{Config, EMBEDDED_SERVER_CONF};
use perpetuo_gateway::data_dir::DataDir;
use perpetuo_gateway::downstream::{Guarded, Limits, Slots};
use perpetuo_gateway::frontdoor::openai_responses::purge::ResponsePurge;
use perpetuo_gateway::invalidation::{Invalidator, LastUsedFlusher};
use perpetuo_gateway::limits;
use perpetuo_gateway::log_spool::Spool;
use perpetuo_gateway::log_writer::{self, LogWriter};
use perpetuo_gateway::metrics;
use perpetuo_gateway::partitions::PartitionMaintainer;
use perpetuo_gateway::proxy::body::BodyLimits;
use perpetuo_gateway::proxy::{Gateway, ResponseStore};
use perpetuo_gateway::routing::{Breakers, EntryCache, Turns};
use perpetuo_gateway::shutdown::{Shutdown, ShutdownClock};
use perpetuo_gateway::upstream::{Timeouts, Upstreams};
use pingora::connectors::http::Connector;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;

// mimalloc: fewer allocator costs per request than glibc malloc (see bench/README.md).
// `--features system-alloc` leaves it out, for heap profilers that hook malloc.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Read and write buffer of each client connection.
const CLIENT_READ_BUFFER: usize = 8 * 1024;
const CLIENT_WRITE_BUFFER: usize = 1460;

fn fail(msg: impl std::fmt::Display) -> std::process::ExitCode {
    tracing::error!("{msg}");
    std::process::ExitCode::FAILURE
}

fn main() -> std::process::ExitCode {
    let _ = dotenvy::dotenv();
    if let Err(e) = perpetuo_core::logging::init() {
        eprintln!("{e}");
        return std::process::ExitCode::FAILURE;
    }
    let config = Config::parse();
    metrics::init();
    // Before anything reads the spool; held until the process ends.
    let data_dir = match DataDir::lock(&config.data_dir) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };

    let yaml = match &config.server_conf {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(y) => y,
            Err(e) => {
                return fail(format!(
                    "GATEWAY_SERVER_CONF: cannot read {}: {e}",
                    path.display()
                ))
            }
        },
        None => EMBEDDED_SERVER_CONF.to_string(),
    };
    let mut conf = match ServerConf::from_yaml(&yaml) {
        Ok(c) => c,
        Err(e) => return fail(format!("server settings are invalid: {e}")),
    };
    if let Some(grace) = config.shutdown_grace_seconds {
        conf.grace_period_seconds = Some(grace);
    }
    let pricing = match &config.pricing_file {
        Some(path) => Pricing::from_file(path),
        None => Pricing::embedded(),
    };
    let pricing = match (pricing, config.unpriced_model_usd_per_mtok) {
        (Ok(p), Some(usd)) => p.with_unpriced(usd),
        (Ok(p), None) => p,
        (Err(e), _) => return fail(format!("PRICING_FILE: {e}")),
    };
    let driver = match background::database_driver() {
        Ok(d) => d,
        Err(e) => return fail(format!("cannot start the database thread: {e}")),
    };
    let pool = match db::pool_with(
        config.database_url.expose(),
        db::PoolSettings {
            max_size: config.db_pool_size,
            statement_timeout: config.db_statement_timeout,
            driver: Some(driver.clone()),
        },
    ) {
        Ok(p) => p,
        Err(e) => return fail(format!("DATABASE_URL: {e}")),
    };

    // The request path's own connections: a cache miss never queues behind log writes.
    let auth_pool = match db::pool_with(
        config.database_url.expose(),
        db::PoolSettings {
            max_size: config.auth_pool_size,
            statement_timeout: config.db_statement_timeout,
            driver: Some(driver),
        },
    ) {
        Ok(p) => p,
        Err(e) => return fail(format!("DATABASE_URL: {e}")),
    };

    let keys = Arc::new(KeyCache::new(
        auth_pool.clone(),
        pool.clone(),
        auth::Settings {
            ttl: config.key_cache_ttl,
            negative_ttl: config.key_cache_negative_ttl,
            stale: config.key_cache_stale,
            capacity: config.key_cache_capacity,
            unknown_capacity: config.key_cache_unknown_capacity,
            failed_lookups_per_minute: config.failed_key_lookups_per_minute,
        },
    ));
    let spool = match Spool::open(data_dir.path(), config.log_spool_max_bytes) {
        Ok(s) => Arc::new(tokio::sync::Mutex::new(s)),
        Err(e) => {
            return fail(format!(
                "DATA_DIR: cannot use {} for the log spool: {e}",
                data_dir.path().display()
            ))
        }
    };
    let master_key = match &config.master_key_previous {
        Some(previous) => config.master_key.clone().with_previous(previous),
        None => config.master_key.clone(),
    };
    let entries = Arc::new(EntryCache::new(
        auth_pool,
        master_key,
        config.entry_cache_ttl,
        config.key_cache_stale,
    ));
    let (sink, rx) = log_writer::channel(config.log_queue_capacity);
    let connector = Connector::new(Some(
        pingora::connectors::ConnectorOptions::from_server_conf(&conf),
    ));
    let redis = match &config.redis_url {
        Some(url) => {
            let settings = limits::RedisSettings {
                deadline: config.redis_deadline,
                replicas: config.gateway_replicas,
                prefix: config.redis_key_prefix.clone(),
                slot_ttl: config.max_answer_duration + std::time::Duration::from_secs(60),
            };
            match limits::RedisStore::new(url.expose(), settings, pool.clone()) {
                Ok(store) => Some(Arc::new(store)),
                Err(e) => return fail(format!("REDIS_URL: {e}")),
            }
        }
        None => None,
    };
    let limiter = Arc::new(match &redis {
        Some(store) => limits::Limiter::shared(store.clone()),
        None => limits::Limiter::default(),
    });
    let clients = Clients::new(
        config.trusted_proxies.clone(),
        config.max_requests_per_client,
    );
    // Pingora's default grace period when the settings name none.
    let grace = Duration::from_secs(conf.grace_period_seconds.unwrap_or(300));
    let shutdown = Arc::new(Shutdown::new(grace));
    let gateway = Gateway {
        shutdown: shutdown.clone(),
        clients: clients.clone(),
        keys: keys.clone(),
        entries: entries.clone(),
        breakers: Breakers::new(config.breaker_threshold, config.breaker_cooldown)
            .with_probe_timeout(config.connect_timeout + config.ttfb_timeout),
        turns: Turns::default(),
        upstreams: Upstreams {
            connector,
            resolver: Resolver::from_system(),
            policy: config.allowed_private_upstreams.clone(),
            timeouts: Timeouts {
                connect: config.connect_timeout,
                ttfb: config.ttfb_timeout,
                idle: config.idle_timeout,
                answer: config.max_answer_duration,
            },
            max_event_bytes: config.max_stream_event_bytes,
        },
        pricing: Arc::new(pricing),
        sink,
        body: BodyLimits {
            max_bytes: config.max_body_bytes,
            timeout: config.body_read_timeout,
        },
        responses: ResponseStore {
            pool: pool.clone(),
            retention: std::time::Duration::from_secs(
                u64::from(config.responses_retention_days) * 86_400,
            ),
            max_conversation_bytes: config.responses_max_conversation_bytes,
            workspace_quota_bytes: config.responses_workspace_quota_bytes,
        },
        limiter: limiter.clone(),
    };

    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let conf = server.configuration.clone();
    let slots = Slots::new(
        Limits {
            max_connections: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
            header_timeout: config.header_read_timeout,
            keepalive_idle: config.keepalive_idle_timeout,
        },
        clients,
    );
    let guarded = Guarded {
        app: Arc::new(pingora::proxy::http_proxy(&conf, gateway)),
        slots,
    };
    let mut proxy = pingora::services::listening::Service::new("perpetuo gateway".into(), guarded);
    // A client connection's read buffer: Pingora's default is 64 KiB per connection; a
    // request header fits in far less, and larger bodies are read straight into the
    // body buffer. Smaller keeps thousands of open streams light (bench/README.md).
    proxy.add_listener(
        ListenerConfig::tcp(config.gateway_addr.to_string()).l4_buffer(L4BufferSettings::new(
            CLIENT_READ_BUFFER,
            CLIENT_WRITE_BUFFER,
        )),
    );
    let mut metrics_service = pingora_prometheus::prometheus_http_service();
    metrics_service.add_tcp(&config.metrics_addr.to_string());
    metrics_service.threads = Some(1);
    server.add_service(proxy);
    server.add_service(metrics_service);
    server.add_service(background_service(
        "log writer",
        Lowered(LogWriter {
            pool: pool.clone(),
            rx: rx.clone(),
            spool: spool.clone(),
        }),
    ));
    server.add_service(background_service(
        "log partitions",
        Lowered(PartitionMaintainer {
            pool: pool.clone(),
            retention_days: config.log_retention_days,
        }),
    ));
    server.add_service(background_service(
        "stored responses purge",
        Lowered(ResponsePurge { pool: pool.clone() }),
    ));
    server.add_service(background_service(
        "change listener",
        Lowered(Invalidator {
            database_url: config.database_url.expose().clone(),
            keys: keys.clone(),
            entries,
        }),
    ));
    server.add_service(background_service(
        "last used",
        Lowered(LastUsedFlusher { keys }),
    ));
    if let Some(store) = redis {
        server.add_service(background_service(
            "shared limits",
            limits::RedisLink { store },
        ));
    }
    server.add_service(background_service(
        "shutdown clock",
        ShutdownClock(shutdown),
    ));
    tracing::info!(gateway = %config.gateway_addr, metrics = %config.metrics_addr, "gateway starting");
    server.run(RunArgs::default());

    // Every service has stopped: write (or spool) what is still queued on a private runtime.
    let draining = std::time::Instant::now();
    let drained = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| {
            rt.block_on(async {
                let settings = db::PoolSettings {
                    max_size: 2,
                    statement_timeout: config.db_statement_timeout,
                    driver: None,
                };
                let pool = match db::pool_with(config.database_url.expose(), settings) {
                    Ok(p) => p,
                    Err(_) => return 0,
                };
                log_writer::drain(&pool, &rx, &spool).await
            })
        });
    match drained {
        Ok(n) => tracing::info!(
            records = n,
            ms = draining.elapsed().as_millis() as u64,
            "final log records written"
        ),
        Err(e) => return fail(format!("final log drain failed: {e}")),
    }
    drop(data_dir);
    std::process::ExitCode::SUCCESS
}
