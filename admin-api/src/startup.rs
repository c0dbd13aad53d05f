//! Builds the application: state, router (API, `/openapi.json`, dashboard), middleware,
//! listener. Tests use the same code on `127.0.0.1:0`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::handler::HandlerWithoutStateExt;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use opentelemetry_sdk::trace::SdkTracer;
use perpetuo_core::db;
use perpetuo_core::dns::Resolver;
use perpetuo_core::password::Hasher;
use perpetuo_core::telemetry::{Dropped, TelemetryError, Tracing};
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Config;
use crate::error::{ApiError, LoggedCause};
use crate::jwt::JwtKeys;
use crate::openapi::ApiDoc;
use crate::state::{AppState, Inner};
use crate::throttle::{AuthThrottle, InvitationThrottle};

pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The dashboard loads only its own scripts, styles, images and API, with no inline script
/// or style: React and the charts library set styles through the DOM (`element.style`),
/// which `style-src 'self'` allows, and the end-to-end test fails on any violation.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; font-src 'self'; \
    connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("database: {0}")]
    Db(#[from] db::DbError),
    #[error("re-sealing provider keys: {0}")]
    Reseal(#[from] db::entry_keys::ResealError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Serve(std::io::Error),
    #[error("CORS_ALLOWED_ORIGINS: `{0}` is not a valid origin")]
    Cors(String),
    #[error("{0}")]
    Mail(#[from] crate::mail::MailError),
    #[error("{0}")]
    Telemetry(#[from] TelemetryError),
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    pool: db::Pool,
    hasher: Hasher,
    deleted_retention_days: u32,
    telemetry: Option<Tracing>,
    export_timeout: Duration,
}

/// `perpetuo-admin migrate`: schema migrations, then provider keys sealed under an older
/// associated-data format are re-sealed (one transaction; a key that does not open with
/// the master key fails the command and changes nothing). Running it again is a no-op.
pub async fn migrate_only(config: &Config) -> Result<(), StartupError> {
    let pool = db::pool(config.database_url.expose(), 2)?;
    let applied = db::migrate::run(&pool).await?;
    tracing::info!(applied, "migrations applied");
    let resealed = reseal(&pool, &config.master_keys()).await?;
    tracing::info!(resealed, "provider keys re-sealed");
    Ok(())
}

async fn reseal(
    pool: &db::Pool,
    master_key: &perpetuo_core::crypto::MasterKey,
) -> Result<usize, db::entry_keys::ResealError> {
    let mut client = pool.get().await.map_err(db::DbError::from)?;
    db::entry_keys::reseal_old_formats(&mut client, master_key).await
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        Self::build_with_resolver(config, Resolver::from_system()).await
    }

    /// [`Application::build`] resolving provider hosts with `resolver` (a test's resolver
    /// knows names the machine does not).
    pub async fn build_with_resolver(
        config: Config,
        resolver: Resolver,
    ) -> Result<Self, StartupError> {
        // Migrations may run long (an index over a large table), so they and the re-seal
        // get connections of their own without the statement timeout, closed after.
        let setup = db::pool(config.database_url.expose(), 2)?;
        let applied = db::migrate::run(&setup).await?;
        tracing::info!(applied, "migrations applied");
        // Not fatal: the gateway opens rows of the older format too, and the error (which
        // names the entry, never the key) tells the operator what to look at.
        match reseal(&setup, &config.master_keys()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(resealed = n, "provider keys re-sealed"),
            Err(e) => tracing::error!(error = %e, "provider keys not re-sealed"),
        }
        setup.close();
        let pool = db::pool_with(
            config.database_url.expose(),
            db::PoolSettings {
                max_size: config.db_pool_size,
                statement_timeout: config.db_statement_timeout,
                driver: None,
            },
        )?;
        let auth = &config.auth;
        let hasher = Hasher::new(
            auth.hash_concurrency,
            Duration::from_millis(auth.hash_wait_ms),
        );
        if let Err(e) = hasher.warm_up().await {
            tracing::warn!("password hasher warm-up: {e}");
        }
        let mailer = crate::mail::Mailer::new(&config.teams)?;
        if !mailer.is_configured() {
            tracing::info!("SMTP_URL is not set: emailed links are written to this log");
        }
        let state = AppState {
            inner: Arc::new(Inner {
                pool: pool.clone(),
                jwt: JwtKeys::new(
                    config.jwt_secret.expose().as_bytes(),
                    config.jwt_ttl_seconds,
                ),
                refresh_ttl_seconds: i64::try_from(auth.refresh_ttl_seconds)
                    .unwrap_or(i64::MAX / 2),
                hasher: hasher.clone(),
                throttle: AuthThrottle::new(auth.rate_per_ip, auth.rate_per_account),
                invitation_throttle: InvitationThrottle::new(
                    config.teams.invitation_rate_per_inviter,
                    config.teams.invitation_rate_per_workspace,
                ),
                trusted_proxies: config.trusted_proxies.clone(),
                master_key: config.master_keys(),
                signup_enabled: config.auth.signup_enabled,
                upstream_policy: config.allowed_private_upstreams.clone(),
                resolver,
                gateway_url: config.gateway_url(),
                trace_url_template: config.trace_url_template.clone().filter(|t| !t.is_empty()),
                mailer,
                public_url: config.public_url(),
                verification_required: config.teams.verification_required(),
                resend_cooldown_seconds: i64::try_from(
                    config.teams.verification_resend_cooldown_seconds,
                )
                .unwrap_or(i64::MAX / 2),
                deleted_retention_days: config.teams.deleted_workspace_retention_days,
            }),
        };
        let telemetry = match config.tracing.otel_exporter_otlp_endpoint.url() {
            Some(_) => {
                perpetuo_core::telemetry::start(&config.tracing, "perpetuo-admin", dropped_spans())?
            }
            None => None,
        };
        let tracer = telemetry.as_ref().map(|t| t.tracer.clone());
        if let Some(tracer) = &tracer {
            db::traced::enable(tracer.clone(), config.database_url.expose());
        }
        let router = app(state, &config, tracer)?;
        let listener = TcpListener::bind(config.admin_addr)
            .await
            .map_err(|source| StartupError::Bind {
                addr: config.admin_addr,
                source,
            })?;
        Ok(Self {
            listener,
            router,
            pool,
            hasher,
            deleted_retention_days: config.teams.deleted_workspace_retention_days,
            telemetry,
            export_timeout: config.tracing.otel_exporter_otlp_timeout,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The password hasher the server uses (its [`Hasher::runs`] counts argon2id work).
    pub fn hasher(&self) -> Hasher {
        self.hasher.clone()
    }

    pub async fn run_until_stopped(self) -> Result<(), StartupError> {
        // The peer address is the client's, unless the peer is a trusted proxy.
        let service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        let serve = axum::serve(self.listener, service).with_graceful_shutdown(shutdown_signal());
        // The purge never ends on its own; it stops with the server.
        let served = tokio::select! {
            served = serve => served.map_err(StartupError::Serve),
            () = crate::teams::purge_loop(self.pool, self.deleted_retention_days) => Ok(()),
        };
        // The spans still queued leave before the process ends, within the export timeout.
        if let Some(t) = self.telemetry {
            let timeout = self.export_timeout;
            let _ = tokio::task::spawn_blocking(move || t.shutdown(timeout)).await;
        }
        served
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}

/// Counts the spans tracing could not export, and says so in the log once a minute at
/// most (the admin API has no metrics endpoint).
fn dropped_spans() -> Dropped {
    let count = Arc::new(AtomicU64::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            every.tick().await;
            let n = seen.swap(0, Ordering::Relaxed);
            if n > 0 {
                tracing::warn!(
                    dropped = n,
                    "trace spans dropped in the last minute (the collector refused, was slow \
                     or the export queue was full)"
                );
            }
        }
    });
    Arc::new(move |n| {
        count.fetch_add(n, Ordering::Relaxed);
    })
}

/// The whole HTTP surface; with a tracer, every API request in its SERVER span.
pub fn app(
    state: AppState,
    config: &Config,
    tracer: Option<SdkTracer>,
) -> Result<Router, StartupError> {
    let (api, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(crate::routes::router())
        .split_for_parts();
    crate::openapi::finish(&mut doc);
    crate::access::document(&mut doc);
    let doc = Arc::new(doc);
    let mut api = api
        .route(
            "/openapi.json",
            get(move || async move { Json(doc.as_ref().clone()) }),
        )
        // Every route above answers to `access::RULES`.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::access::enforce,
        ));
    // Outside access control, so that its database statements are the span's children.
    if let Some(tracer) = tracer {
        api = api.route_layer(middleware::from_fn_with_state(
            tracer,
            crate::traces::server_span,
        ));
    }
    let mut router = api
        .with_state(state)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .fallback_service(dashboard(config))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(log_errors));
    if let Some(cors) = cors(&config.cors_allowed_origins)? {
        router = router.layer(cors);
    }
    Ok(security_headers(router))
}

/// Headers on every response, API and dashboard alike: no framing, no MIME sniffing, no
/// referrer, and a content security policy the built dashboard satisfies.
fn security_headers(router: Router) -> Router {
    let headers = [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    headers
        .into_iter()
        .fold(router, |r, (name, value): (HeaderName, HeaderValue)| {
            r.layer(SetResponseHeaderLayer::overriding(name, value))
        })
}

/// Serves the built dashboard: `/` and its asset files (client routes are hash routes, so
/// nothing else is ever asked for). Any other path or method is a JSON 404.
fn dashboard(config: &Config) -> axum::routing::MethodRouter {
    let not_found = || async { ApiError::NotFound };
    if config.dashboard_dir.join("index.html").is_file() {
        let files =
            ServeDir::new(&config.dashboard_dir).not_found_service(not_found.into_service());
        axum::routing::get_service(files).fallback(not_found)
    } else {
        axum::routing::any(not_found)
    }
}

pub(crate) fn cors(origins: &str) -> Result<Option<CorsLayer>, StartupError> {
    let list: Vec<HeaderValue> = origins
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| HeaderValue::from_str(o).map_err(|_| StartupError::Cors(o.to_string())))
        .collect::<Result<_, _>>()?;
    if list.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(list))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                axum::http::header::AUTHORIZATION,
                axum::http::header::CONTENT_TYPE,
            ]),
    ))
}

/// Logs each failed request once, with the cause the response body leaves out.
async fn log_errors(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    if let Some(LoggedCause(cause)) = resp.extensions().get::<LoggedCause>() {
        tracing::error!(%method, %path, status = resp.status().as_u16(), %cause, "request failed");
    }
    resp.into_response()
}
