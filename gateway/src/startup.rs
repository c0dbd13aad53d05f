//! Builds the gateway from its configuration and runs it: the Pingora server and its
//! settings, the database pools, the caches, the limiter, the proxy behind its connection
//! guard, the metrics endpoint and the background services; after the server stops, the
//! last log records are written. `main` only reads the configuration and calls [`run`].

use std::sync::Arc;
use std::time::Duration;

use perpetuo_core::db::{self, Pool};
use perpetuo_core::dns::Resolver;
use perpetuo_core::pricing::Pricing;
use pingora::connectors::http::Connector;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::background::background_service;

use crate::auth::{self, KeyCache};
use crate::background::{self, Lowered};
use crate::cache::store::{RedisCache, Store};
use crate::cache::ResponseCache;
use crate::clients::Clients;
use crate::config::{Config, EMBEDDED_SERVER_CONF};
use crate::data_dir::DataDir;
use crate::downstream::{Guarded, Limits, Slots};
use crate::invalidation::{Invalidator, LastUsedFlusher};
use crate::limits::{self, Limiter, RedisStore};
use crate::log_spool::Spool;
use crate::log_writer::{self, LogWriter};
use crate::model_lists::ModelLists;
use crate::partitions::PartitionMaintainer;
use crate::pipeline::body::BodyLimits;
use crate::pipeline::{ResponseStore, Services};
use crate::proxy::Gateway;
use crate::routing::status::StatusPublisher;
use crate::routing::{shared_headroom, Headrooms};
use crate::routing::{Balancer, Breakers, EntryCache};
use crate::shutdown::{ClockedSignals, Shutdown};
use crate::stored_responses::purge::ResponsePurge;
use crate::upstream::{Timeouts, Upstreams};

/// Read and write buffer of each client connection: Pingora's default is 64 KiB per
/// connection; a request header fits in far less, and larger bodies are read straight
/// into the body buffer. Smaller keeps thousands of open streams light (bench/README.md).
const CLIENT_READ_BUFFER: usize = 8 * 1024;
const CLIENT_WRITE_BUFFER: usize = 1460;

/// Why the gateway could not start (or finish); the message names the setting at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(String);

impl StartupError {
    fn new(msg: impl std::fmt::Display) -> Self {
        Self(msg.to_string())
    }
}

/// Runs the gateway until it is told to stop, then writes what is still queued.
pub fn run(config: Config) -> Result<(), StartupError> {
    // The tokenizer (for requests whose provider reports no usage, and for a client that
    // left) loads on a thread of its own: loaded on first use it held a proxy thread, and
    // every request queued on it, for up to a second. (A test build may leave it to its
    // first use: `perpetuo_core::test_build::LAZY_TOKENIZER`.)
    if !perpetuo_core::test_build::lazy_tokenizer() {
        let _ = std::thread::Builder::new()
            .name("tokenizer".into())
            .spawn(perpetuo_wire::tokens::preload);
    }
    // Before anything reads the spool; held until the process ends.
    let data_dir = DataDir::lock(&config.logs.data_dir).map_err(StartupError::new)?;
    let conf = server_conf(&config)?;
    let pools = Pools::open(&config)?;
    let spool = Spool::open(data_dir.path(), config.logs.log_spool_max_bytes)
        .map(|s| Arc::new(tokio::sync::Mutex::new(s)))
        .map_err(|e| {
            StartupError::new(format!(
                "DATA_DIR: cannot use {} for the log spool: {e}",
                data_dir.path().display()
            ))
        })?;
    let (sink, rx) = log_writer::channel(config.logs.log_queue_capacity);
    let keys = Arc::new(key_cache(&config, &pools));
    let entries = Arc::new(EntryCache::new(
        pools.auth.clone(),
        config.database.master_keys(),
        config.caches.entry_cache_ttl,
        config.caches.key_cache_stale,
        config.database.db_read_timeout,
    ));
    let redis = redis_store(&config, &pools)?;
    let leases = redis
        .as_ref()
        .map(|store| Arc::new(limits::Leases::new(store.clone())));
    let (headrooms, headroom_link) = headrooms(&config)?;
    let breakers = Arc::new(
        Breakers::new(
            config.upstream.breaker_threshold,
            config.upstream.breaker_cooldown,
        )
        .with_probe_timeout(config.upstream.connect_timeout + config.upstream.ttfb_timeout),
    );
    let clients = Clients::new(
        config.clients.trusted_proxies.clone(),
        config.clients.max_requests_per_client,
    );
    // Pingora's default grace period when the settings name none.
    let grace = Duration::from_secs(conf.grace_period_seconds.unwrap_or(300));
    let shutdown = Arc::new(Shutdown::new(grace));
    let telemetry = perpetuo_core::telemetry::start_exporter(
        &config.tracing,
        "perpetuo-gateway",
        std::sync::Arc::new(|n| crate::metrics::TRACE_SPANS_DROPPED.inc_by(n)),
    )
    .map_err(StartupError::new)?
    .map(Arc::new);
    let hearing = Arc::new(crate::invalidation::Hearing::default());
    let services = Services {
        hearing: hearing.clone(),
        tracer: telemetry.clone(),
        shutdown: shutdown.clone(),
        clients: clients.clone(),
        keys: keys.clone(),
        entries: entries.clone(),
        breakers: breakers.clone(),
        balancer: Balancer::default(),
        headrooms: headrooms.clone(),
        upstreams: upstreams(&config, &conf),
        pricing: Arc::new(pricing(&config)?),
        model_lists: ModelLists::default(),
        sink,
        body: BodyLimits {
            max_bytes: config.clients.max_body_bytes,
            timeout: config.clients.body_read_timeout,
        },
        responses: ResponseStore {
            pool: pools.main.clone(),
            retention: Duration::from_secs(
                u64::from(config.responses.responses_retention_days) * 86_400,
            ),
            max_conversation_bytes: config.responses.responses_max_conversation_bytes,
            workspace_quota_bytes: config.responses.responses_workspace_quota_bytes,
            db_timeout: config.database.db_read_timeout,
        },
        cache: response_cache(&config)?,
        limiter: Arc::new(match (&redis, &leases) {
            (Some(store), Some(leases)) => Limiter::shared(store.clone(), leases.clone()),
            _ => Limiter::default(),
        }),
    };
    let gateway = Gateway { services };

    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let conf = server.configuration.clone();
    let slots = Slots::new(
        Limits {
            max_connections: config.clients.max_connections,
            max_per_ip: config.clients.max_connections_per_ip,
            header_timeout: config.clients.header_read_timeout,
            keepalive_idle: config.clients.keepalive_idle_timeout,
        },
        clients,
    );
    let guarded = Guarded {
        app: Arc::new(pingora::proxy::http_proxy(&conf, gateway)),
        slots,
    };
    let mut proxy = pingora::services::listening::Service::new("perpetuo gateway".into(), guarded);
    proxy.add_listener(
        ListenerConfig::tcp(config.server.gateway_addr.to_string()).l4_buffer(
            L4BufferSettings::new(CLIENT_READ_BUFFER, CLIENT_WRITE_BUFFER),
        ),
    );
    let mut metrics_service = crate::metrics::http_service();
    metrics_service.add_tcp(&config.server.metrics_addr.to_string());
    metrics_service.threads = Some(1);
    server.add_service(proxy);
    server.add_service(metrics_service);
    server.add_service(background_service(
        "log writer",
        Lowered(LogWriter {
            pool: pools.main.clone(),
            rx: rx.clone(),
            spool: spool.clone(),
        }),
    ));
    server.add_service(background_service(
        "log partitions",
        Lowered(PartitionMaintainer {
            pool: pools.main.clone(),
            retention_days: config.logs.log_retention_days,
        }),
    ));
    server.add_service(background_service(
        "stored responses purge",
        Lowered(ResponsePurge {
            pool: pools.main.clone(),
        }),
    ));
    server.add_service(background_service(
        "change listener",
        Lowered(Invalidator {
            database_url: config.database.database_url.expose().clone(),
            keys: keys.clone(),
            entries,
            hearing: hearing.clone(),
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
    if let Some(leases) = leases {
        server.add_service(background_service(
            "shared limit leases",
            limits::LeaseKeeper { leases },
        ));
    }
    server.add_service(background_service(
        "key status",
        Lowered(StatusPublisher {
            gateway: uuid::Uuid::now_v7(),
            headrooms,
            breakers,
            pool: pools.main.clone(),
        }),
    ));
    if let Some(link) = headroom_link {
        server.add_service(background_service("shared headroom", link));
    }
    tracing::info!(
        gateway = %config.server.gateway_addr,
        metrics = %config.server.metrics_addr,
        "gateway starting"
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(ClockedSignals(shutdown)),
    });

    // The spans still queued leave before the process ends, within the export timeout.
    if let Some(t) = &telemetry {
        t.shutdown(config.tracing.otel_exporter_otlp_timeout);
    }

    final_drain(&config, &rx, &spool)?;
    drop(data_dir);
    Ok(())
}

/// The Pingora server settings: the embedded `conf/gateway.yaml` or the file named, with
/// the grace period overridden when set.
fn server_conf(config: &Config) -> Result<ServerConf, StartupError> {
    let yaml = match &config.server.server_conf {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            StartupError::new(format!(
                "GATEWAY_SERVER_CONF: cannot read {}: {e}",
                path.display()
            ))
        })?,
        None => EMBEDDED_SERVER_CONF.to_string(),
    };
    let mut conf = ServerConf::from_yaml(&yaml)
        .map_err(|e| StartupError::new(format!("server settings are invalid: {e}")))?;
    if let Some(grace) = config.server.shutdown_grace_seconds {
        conf.grace_period_seconds = Some(grace);
    }
    Ok(conf)
}

/// The pricing table, with the operator's price for unpriced models when set.
fn pricing(config: &Config) -> Result<Pricing, StartupError> {
    let table = match &config.limits.pricing_file {
        Some(path) => Pricing::from_file(path),
        None => Pricing::embedded(),
    }
    .map_err(|e| StartupError::new(format!("PRICING_FILE: {e}")))?;
    Ok(match config.limits.unpriced_model_usd_per_mtok {
        Some(usd) => table.with_unpriced(usd),
        None => table,
    })
}

/// The gateway's two pools, both driven on the database thread: the request path's (key
/// and entry loads, so a cache miss never queues behind a log write) and the rest's.
struct Pools {
    main: Pool,
    auth: Pool,
}

impl Pools {
    fn open(config: &Config) -> Result<Self, StartupError> {
        let driver = background::database_driver()
            .map_err(|e| StartupError::new(format!("cannot start the database thread: {e}")))?;
        let db = &config.database;
        let pool = |max_size| {
            db::pool_with(
                db.database_url.expose(),
                db::PoolSettings {
                    max_size,
                    statement_timeout: db.db_statement_timeout,
                    driver: Some(driver.clone()),
                },
            )
            .map_err(|e| StartupError::new(format!("DATABASE_URL: {e}")))
        };
        Ok(Self {
            main: pool(db.db_pool_size)?,
            auth: pool(db.auth_pool_size)?,
        })
    }
}

fn key_cache(config: &Config, pools: &Pools) -> KeyCache {
    let c = &config.caches;
    KeyCache::new(
        pools.auth.clone(),
        pools.main.clone(),
        auth::Settings {
            ttl: c.key_cache_ttl,
            negative_ttl: c.key_cache_negative_ttl,
            stale: c.key_cache_stale,
            capacity: c.key_cache_capacity,
            unknown_capacity: c.key_cache_unknown_capacity,
            failed_lookups_per_minute: c.failed_key_lookups_per_minute,
            db_timeout: config.database.db_read_timeout,
        },
    )
}

/// What each provider key has left; with `REDIS_URL`, shared with the other gateways
/// through the returned link.
fn headrooms(
    config: &Config,
) -> Result<(Arc<Headrooms>, Option<shared_headroom::Link>), StartupError> {
    let Some(url) = &config.limits.redis_url else {
        return Ok((Arc::new(Headrooms::default()), None));
    };
    let client = redis::Client::open(url.expose().as_str())
        .map_err(|e| StartupError::new(format!("REDIS_URL: {e}")))?;
    let (share, link) = shared_headroom::link(client, &config.limits.redis_key_prefix);
    let headrooms = Arc::new(Headrooms::shared(share));
    let _ = link.headrooms.set(headrooms.clone());
    Ok((headrooms, Some(link)))
}

/// The shared limits' store, when `REDIS_URL` is set.
fn redis_store(config: &Config, pools: &Pools) -> Result<Option<Arc<RedisStore>>, StartupError> {
    let Some(url) = &config.limits.redis_url else {
        return Ok(None);
    };
    let settings = limits::RedisSettings {
        deadline: config.limits.redis_deadline,
        replicas: config.limits.gateway_replicas,
        prefix: config.limits.redis_key_prefix.clone(),
        slot_ttl: config.upstream.max_answer_duration + Duration::from_secs(60),
    };
    RedisStore::new(url.expose(), settings, pools.main.clone())
        .map(|store| Some(Arc::new(store)))
        .map_err(|e| StartupError::new(format!("REDIS_URL: {e}")))
}

/// The response cache: in process, or in Redis when `CACHE_REDIS_URL` is set.
fn response_cache(config: &Config) -> Result<ResponseCache, StartupError> {
    let c = &config.response_cache;
    let store = match &c.cache_redis_url {
        None => Store::memory(c.cache_max_bytes),
        Some(url) => Store::Redis(Box::new(
            RedisCache::new(
                url.expose(),
                config.limits.redis_key_prefix.clone(),
                config.limits.redis_deadline,
                c.cache_max_entry_bytes,
            )
            .map_err(|e| StartupError::new(format!("CACHE_REDIS_URL: {e}")))?,
        )),
    };
    Ok(ResponseCache::new(store, c.cache_max_entry_bytes))
}

/// How providers are reached: the pooled connector, DNS, the private-address policy and
/// the timeouts.
fn upstreams(config: &Config, conf: &ServerConf) -> Upstreams {
    let u = &config.upstream;
    Upstreams {
        connector: Connector::new(Some(
            pingora::connectors::ConnectorOptions::from_server_conf(conf),
        )),
        resolver: Resolver::from_system(),
        policy: u.allowed_private_upstreams.clone(),
        timeouts: Timeouts {
            connect: u.connect_timeout,
            ttfb: u.ttfb_timeout,
            idle: u.idle_timeout,
            answer: u.max_answer_duration,
        },
        max_event_bytes: u.max_stream_event_bytes,
    }
}

/// Every service has stopped: writes (or spools) what is still queued, on a private
/// runtime.
fn final_drain(
    config: &Config,
    rx: &log_writer::SharedReceiver,
    spool: &log_writer::SharedSpool,
) -> Result<(), StartupError> {
    let draining = std::time::Instant::now();
    let drained = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map(|rt| {
            rt.block_on(async {
                let settings = db::PoolSettings {
                    max_size: 2,
                    statement_timeout: config.database.db_statement_timeout,
                    driver: None,
                };
                let pool = match db::pool_with(config.database.database_url.expose(), settings) {
                    Ok(p) => p,
                    Err(_) => return 0,
                };
                log_writer::drain(&pool, rx, spool).await
            })
        })
        .map_err(|e| StartupError::new(format!("final log drain failed: {e}")))?;
    tracing::info!(
        records = drained,
        ms = draining.elapsed().as_millis() as u64,
        "final log records written"
    );
    Ok(())
}
