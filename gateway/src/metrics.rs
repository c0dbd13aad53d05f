//! Prometheus metrics, registered in the default registry, and the `/metrics` endpoint
//! that serves it in the text format (gzip when asked). Labels are short fixed strings
//! only (route, provider kind, status class, reason) — never keys, users, workspaces or
//! messages.

use std::sync::LazyLock;

use crate::outcome::ErrorKind;
use perpetuo_core::db::logs::SkipReason;

use async_trait::async_trait;
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::modules::http::compression::ResponseCompressionBuilder;
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;
use prometheus::{
    CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    TextEncoder,
};

const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

// Metric definitions are static: an invalid one is a bug that every test run reports at
// start-up, so construction may panic; registration errors (duplicates) are ignored.
#[allow(clippy::expect_used)]
mod build {
    use super::*;

    pub fn register<T: prometheus::core::Collector + Clone + 'static>(m: T) -> T {
        let _ = prometheus::register(Box::new(m.clone()));
        m
    }

    pub fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    pub fn float_counter_vec(name: &str, help: &str, labels: &[&str]) -> CounterVec {
        register(CounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    pub fn histogram(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
        register(HistogramVec::new(opts, labels).expect("valid metric"))
    }

    pub fn histogram_with(
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        register(HistogramVec::new(opts, labels).expect("valid metric"))
    }

    pub fn int_counter(name: &str, help: &str) -> IntCounter {
        register(IntCounter::new(name, help).expect("valid metric"))
    }

    pub fn gauge(name: &str, help: &str) -> IntGauge {
        register(IntGauge::new(name, help).expect("valid metric"))
    }
}

use build::{counter_vec, float_counter_vec, gauge, histogram, int_counter};

/// Buckets of `gen_ai_client_token_usage`, the semantic conventions' advice.
const TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

pub static TRACE_SPANS_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    int_counter(
        "perpetuo_trace_spans_dropped_total",
        "Finished spans that never reached the OTLP collector: the export queue was full, \
         or their export failed or passed OTEL_EXPORTER_OTLP_TIMEOUT.",
    )
});
/// GenAI semantic conventions' `gen_ai.client.token.usage`, labelled by operation,
/// provider and token type only.
pub static GENAI_TOKEN_USAGE: LazyLock<HistogramVec> = LazyLock::new(|| {
    build::histogram_with(
        "gen_ai_client_token_usage",
        "Tokens used per provider answer (GenAI semantic conventions), by operation, \
         provider and token type (input, output).",
        &[
            "gen_ai_operation_name",
            "gen_ai_provider_name",
            "gen_ai_token_type",
        ],
        TOKEN_BUCKETS,
    )
});
/// `gen_ai.server.time_to_first_token`: streamed answers only.
pub static GENAI_TIME_TO_FIRST_TOKEN: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "gen_ai_server_time_to_first_token_seconds",
        "Time from a streamed request's arrival to its first token sent (GenAI semantic \
         conventions), by operation and provider.",
        &["gen_ai_operation_name", "gen_ai_provider_name"],
    )
});
/// `gen_ai.server.request.duration`: requests a provider answered.
pub static GENAI_REQUEST_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "gen_ai_server_request_duration_seconds",
        "Duration of requests a provider answered (GenAI semantic conventions), by \
         operation and provider.",
        &["gen_ai_operation_name", "gen_ai_provider_name"],
    )
});

pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "perpetuo_requests_total",
        "Requests by route, provider kind and status class.",
        &["route", "provider_kind", "status_class"],
    )
});
pub static REQUEST_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "perpetuo_request_duration_seconds",
        "Whole request latency.",
        &["route"],
    )
});
pub static UPSTREAM_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "perpetuo_upstream_duration_seconds",
        "Latency of each upstream attempt until its end.",
        &["provider_kind"],
    )
});
pub static TTFB: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "perpetuo_ttfb_seconds",
        "Time from request start to the first byte sent to the client.",
        &["provider_kind"],
    )
});
pub static FALLBACKS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "perpetuo_fallbacks_total",
        "Attempts that failed over to the next provider, by reason.",
        &["reason"],
    )
});
pub static BREAKER_OPENED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "perpetuo_breaker_opened_total",
        "Circuit breaker openings.",
        &["provider_kind"],
    )
});
pub static ROUTE_DECISIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "perpetuo_route_decisions_total",
        "Entries or pool keys routing passed by (quota: the provider's reported headroom or \
         the entry's own quota could not cover the request; breaker: its circuit breaker \
         was open; weight: another of the tier was preferred by the balancing), and \
         requests refused because every key was out of headroom (exhausted).",
        &["reason"],
    )
});
pub static HEADROOM_SHARE_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    int_counter(
        "perpetuo_headroom_share_dropped_total",
        "Provider headroom reports not shared with the other gateways (the queue to Redis \
         was full) or not understood when received.",
    )
});
pub static TOKENS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "perpetuo_tokens_total",
        "Tokens counted, by direction (prompt, completion).",
        &["provider_kind", "direction"],
    )
});
pub static COST: LazyLock<CounterVec> = LazyLock::new(|| {
    float_counter_vec(
        "perpetuo_cost_usd_total",
        "Cost of served requests in USD.",
        &["provider_kind"],
    )
});
pub static UNPRICED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "perpetuo_unpriced_requests_total",
        "Served requests whose model has no price.",
        &["provider_kind"],
    )
});
pub static KEY_CACHE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "perpetuo_key_cache_total",
        "API key cache lookups.",
        &["result"],
    )
});
pub static KEY_LOOKUPS_REFUSED: LazyLock<IntCounter> = LazyLock::new(|| {
    int_counter(
        "perpetuo_key_lookups_refused_total",
        "Key lookups refused without a database query because the client's address used \
         up its failed-lookup budget.",
    )
});
pub static STALE_KEYS_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    int_counter(
        "perpetuo_key_cache_stale_dropped_total",
        "Stale key copies dropped after the change listener reconnected, because the \
         database no longer confirms their key.",
    )
});
pub static LIMIT_REFUSALS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "perpetuo_limit_refusals_total",
        "Requests refused by a key or workspace limit, by limit kind and scope.",
        &["limit", "scope"],
    )
});
pub static LIMIT_FALLBACKS: LazyLock<IntCounter> = LazyLock::new(|| {
    int_counter(
        "perpetuo_limit_fallbacks_total",
        "Limit checks made locally because the shared store (Redis) was down or slow.",
    )
});
pub static LIMIT_SETTLE_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    int_counter(
        "perpetuo_limit_settlements_dropped_total",
        "Spend of settlements for the shared store that could not be kept: its queue and \
         the spend kept aside past it were both full.",
    )
});
pub static LIMIT_SETTLE_PENDING: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "perpetuo_limit_settlements_pending",
        "Settlements waiting for the shared store (Redis).",
    )
});
pub static LIMIT_REDIS_SLOW: LazyLock<IntCounter> = LazyLock::new(|| {
    int_counter(
        "perpetuo_limit_redis_slow_total",
        "Calls to the shared store (Redis) that got no answer in time; requests use the \
         local counters until it answers a ping.",
    )
});
pub static LIMIT_RESEEDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "perpetuo_limit_reseeds_total",
        "Budget spend read from PostgreSQL for a scope the shared store held no state for, \
         by result.",
        &["result"],
    )
});
pub static LIMIT_LEASE_CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "perpetuo_limit_lease_calls_total",
        "Calls to the shared store (Redis) for leased blocks of limits, by reason: a request \
         waiting for a block, a refill in the background, the heartbeat, an idle scope \
         giving back what it does not use, a lease forgotten.",
        &["reason"],
    )
});
pub static LIMIT_LEASES: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "perpetuo_limit_leases",
        "Scopes (keys, workspaces, provider entry quotas) this gateway holds a lease of \
         blocks on, at the last heartbeat.",
    )
});
pub static LOG_QUEUE_DEPTH: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "perpetuo_log_queue_depth",
        "Log records waiting to be written.",
    )
});
pub static LOG_WRITTEN: LazyLock<IntCounter> = LazyLock::new(|| {
    int_counter(
        "perpetuo_log_rows_written_total",
        "Request log rows written.",
    )
});
pub static LOG_DROPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "perpetuo_log_rows_dropped_total",
        "Request log records that could not be written.",
        &["reason"],
    )
});
pub static LOG_REJECTED: LazyLock<IntCounter> = LazyLock::new(|| {
    int_counter(
        "perpetuo_log_rows_rejected_total",
        "Request log rows PostgreSQL refused (set aside in the spool's reject file).",
    )
});
pub static LOG_SPOOLED: LazyLock<IntCounter> = LazyLock::new(|| {
    int_counter(
        "perpetuo_log_rows_spooled_total",
        "Request log records written to the local spool while the database was away or slow.",
    )
});
pub static LOG_REPLAYED: LazyLock<IntCounter> = LazyLock::new(|| {
    int_counter(
        "perpetuo_log_rows_replayed_total",
        "Spooled request log records replayed into the database.",
    )
});
pub static LOG_SPOOL_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "perpetuo_log_spool_bytes",
        "Bytes of request log records waiting in the local spool.",
    )
});
pub static LOG_SPOOL_TORN: LazyLock<IntCounter> = LazyLock::new(|| {
    int_counter(
        "perpetuo_log_spool_torn_records_total",
        "Damaged spool records skipped on replay (a write cut short by a crash).",
    )
});
pub static PARTITION_MAINTENANCE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "perpetuo_log_partition_maintenance_total",
        "Runs of the log partition maintenance, by result.",
        &["result"],
    )
});
pub static LISTENER_RECONNECTS: LazyLock<IntCounter> = LazyLock::new(|| {
    int_counter(
        "perpetuo_listener_reconnects_total",
        "Reconnections of the change-notification listener.",
    )
});
pub static LISTENER_UP: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "perpetuo_listener_up",
        "1 while the change-notification listener listens and its caches hear every change \
         (set once what was cached before it listened is cleared), 0 while it connects.",
    )
});

pub static ENTRY_CACHE_STALE: LazyLock<IntCounter> = LazyLock::new(|| {
    int_counter(
        "perpetuo_entry_cache_stale_total",
        "Provider-entry lists served from the stale store while the database failed.",
    )
});
pub static RESPONSES_NOT_STORED: LazyLock<IntCounter> = LazyLock::new(|| {
    int_counter(
        "perpetuo_responses_not_stored_total",
        "Responses API answers that could not be stored (the answer still went out).",
    )
});
pub static OPEN_CONNECTIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "perpetuo_open_connections",
        "Client connections open on the gateway.",
    )
});
pub static CONNECTIONS_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "perpetuo_connections_refused_total",
        "Client connections closed at once because a connection cap was reached, by cap.",
        &["cap"],
    )
});

pub static CACHE_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "perpetuo_cache_requests_total",
        "Requests through a workspace whose response cache is on, by what the cache did: \
         hit, miss or bypass.",
        &["result"],
    )
});
pub static CACHE_BYTES: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "perpetuo_cache_bytes",
        "Bytes of answers held by this gateway's in-process response cache (0 when the \
         cache is in Redis).",
    )
});
pub static CACHE_SAVED: LazyLock<prometheus::Counter> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    let c = prometheus::Counter::new(
        "perpetuo_cache_saved_usd_total",
        "What the providers would have charged for the answers served from the cache, USD.",
    )
    .expect("valid metric");
    build::register(c)
});
pub static CACHE_COALESCED: LazyLock<IntCounter> = LazyLock::new(|| {
    int_counter(
        "perpetuo_cache_coalesced_total",
        "Requests answered from an identical request in flight instead of a provider call.",
    )
});
pub static CACHE_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "perpetuo_cache_errors_total",
        "Cache store calls that failed or ran past their deadline (the request went on \
         without the cache), by operation.",
        &["op"],
    )
});
pub static CACHE_LOOKUP: LazyLock<prometheus::Histogram> = LazyLock::new(|| {
    #[allow(clippy::expect_used)]
    let h = prometheus::Histogram::with_opts(
        HistogramOpts::new(
            "perpetuo_cache_lookup_seconds",
            "Time to look an answer up in the response cache.",
        )
        .buckets(vec![
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
        ]),
    )
    .expect("valid metric");
    build::register(h)
});

pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        499 => "499",
        400..=498 => "4xx",
        _ => "5xx",
    }
}

/// Touches every family so `/metrics` lists them from the start.
pub fn init() {
    LazyLock::force(&REQUESTS);
    LazyLock::force(&REQUEST_DURATION);
    LazyLock::force(&UPSTREAM_DURATION);
    LazyLock::force(&TTFB);
    // The outcome labels come from the one vocabulary (`ErrorKind`), each series at 0
    // from the start so that rates and alerts see it before its first event.
    for kind in ErrorKind::ATTEMPT_FAILURES {
        FALLBACKS.with_label_values(&[kind.as_str()]);
    }
    LazyLock::force(&BREAKER_OPENED);
    for reason in SkipReason::ALL {
        ROUTE_DECISIONS.with_label_values(&[reason.as_str()]);
    }
    ROUTE_DECISIONS.with_label_values(&["exhausted"]);
    LazyLock::force(&HEADROOM_SHARE_DROPPED);
    LazyLock::force(&TRACE_SPANS_DROPPED);
    LazyLock::force(&GENAI_TOKEN_USAGE);
    LazyLock::force(&GENAI_TIME_TO_FIRST_TOKEN);
    LazyLock::force(&GENAI_REQUEST_DURATION);
    LazyLock::force(&TOKENS);
    LazyLock::force(&COST);
    LazyLock::force(&UNPRICED);
    LazyLock::force(&KEY_CACHE);
    LazyLock::force(&KEY_LOOKUPS_REFUSED);
    LazyLock::force(&STALE_KEYS_DROPPED);
    for (_, limit) in ErrorKind::LIMIT_REFUSALS {
        for scope in ["key", "workspace", "entry"] {
            LIMIT_REFUSALS.with_label_values(&[limit, scope]);
        }
    }
    LazyLock::force(&LIMIT_FALLBACKS);
    LazyLock::force(&LIMIT_SETTLE_DROPPED);
    LazyLock::force(&LIMIT_SETTLE_PENDING);
    LazyLock::force(&LIMIT_REDIS_SLOW);
    for r in ["read", "failed"] {
        LIMIT_RESEEDS.with_label_values(&[r]);
    }
    for r in ["wait", "refill", "heartbeat", "return", "forget"] {
        LIMIT_LEASE_CALLS.with_label_values(&[r]);
    }
    LazyLock::force(&LIMIT_LEASES);
    LazyLock::force(&LOG_QUEUE_DEPTH);
    LazyLock::force(&LOG_WRITTEN);
    LazyLock::force(&LOG_DROPPED);
    LazyLock::force(&LISTENER_RECONNECTS);
    LazyLock::force(&LISTENER_UP);
    LazyLock::force(&LOG_REJECTED);
    LazyLock::force(&LOG_SPOOLED);
    LazyLock::force(&LOG_REPLAYED);
    LazyLock::force(&LOG_SPOOL_BYTES);
    LazyLock::force(&LOG_SPOOL_TORN);
    for r in ["ok", "error"] {
        PARTITION_MAINTENANCE.with_label_values(&[r]);
    }
    for r in ["hit", "miss", "stale"] {
        KEY_CACHE.with_label_values(&[r]);
    }
    for r in ["queue_full", "spool_full", "spool_failed"] {
        LOG_DROPPED.with_label_values(&[r]);
    }
    LazyLock::force(&OPEN_CONNECTIONS);
    LazyLock::force(&ENTRY_CACHE_STALE);
    LazyLock::force(&RESPONSES_NOT_STORED);
    for cap in ["total", "per_ip"] {
        CONNECTIONS_REFUSED.with_label_values(&[cap]);
    }
    for r in [
        "connect",
        "timeout",
        "status_429",
        "provider_auth",
        "status_5xx",
        "early_end",
        "stream_error",
        "upstream_refused_by_policy",
    ] {
        FALLBACKS.with_label_values(&[r]);
    }
    for r in ["hit", "miss", "bypass"] {
        CACHE_REQUESTS.with_label_values(&[r]);
    }
    LazyLock::force(&CACHE_BYTES);
    LazyLock::force(&CACHE_SAVED);
    LazyLock::force(&CACHE_COALESCED);
    for op in ["read", "write"] {
        CACHE_ERRORS.with_label_values(&[op]);
    }
    LazyLock::force(&CACHE_LOOKUP);
    for k in perpetuo_core::provider::ProviderKind::ALL {
        BREAKER_OPENED.with_label_values(&[k.as_str()]);
        UNPRICED.with_label_values(&[k.as_str()]);
    }
}

/// The `/metrics` endpoint (any path): every registered metric in Prometheus' text
/// format. Written here rather than taken from `pingora-prometheus`, whose `prometheus`
/// dependency brings the protobuf encoder, one of the larger crates of a first build,
/// which nothing here uses.
pub struct Endpoint;

#[async_trait]
impl ServeHttp for Endpoint {
    async fn response(&self, _session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let encoder = TextEncoder::new();
        let mut body = Vec::new();
        let status = match encoder.encode(&prometheus::gather(), &mut body) {
            Ok(()) => 200,
            Err(_) => {
                body.clear();
                500
            }
        };
        http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, encoder.format_type())
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .unwrap_or_else(|_| http::Response::new(Vec::new()))
    }
}

/// The listening service of [`Endpoint`], compressing its answers (gzip level 7) for
/// clients that accept it.
pub fn http_service() -> Service<HttpServer<Endpoint>> {
    let mut server = HttpServer::new_app(Endpoint);
    server.add_module(ResponseCompressionBuilder::enable(7));
    Service::new("Prometheus metric HTTP".to_string(), server)
}
