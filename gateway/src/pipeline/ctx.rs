//! Per-request state, filled in by the pipeline's stages and read by `logging`, which
//! turns it into exactly one log record (or `Drop`, when the request was cut off).

use std::sync::Arc;
use std::time::{Duration, Instant};

use perpetuo_core::db::logs::{Attempt, Skip, SkipReason};
use perpetuo_core::pricing::Pricing;
use perpetuo_wire::lazy_json::LazyJson;
use pingora::Error;
use time::OffsetDateTime;
use uuid::Uuid;

use super::record;
use super::trace::Trace;
use crate::auth::AuthedKey;
use crate::errors::{ErrorKind, GatewayError};
use crate::frontdoor::Door;
use crate::limits;
use crate::log_writer::LogSink;
use crate::routing::{Entry, PoolKey};

/// Skips a log row names at most (the metric counts them all).
const MAX_SKIPS: usize = 32;
use perpetuo_wire::translation::Translation;

/// Per-request state.
pub struct Ctx {
    pub(crate) start: Instant,
    pub(crate) started_at: OffsetDateTime,
    pub(crate) request_id: Uuid,
    /// The front door of a proxied request (`None` for the other routes, not logged).
    pub(crate) door: Option<Door>,
    pub(crate) key: Option<Arc<AuthedKey>>,
    pub(crate) model_requested: Option<String>,
    pub(crate) model_served: Option<String>,
    pub(crate) served_by: Option<Arc<Entry>>,
    /// The pool key that served (its id and label).
    pub(crate) served_key: Option<(Uuid, String)>,
    /// Entries or keys routing passed by, with why.
    pub(crate) skipped: Vec<Skip>,
    pub(crate) attempts: Vec<Attempt>,
    pub(crate) status: u16,
    pub(crate) error_kind: Option<ErrorKind>,
    pub(crate) streamed: bool,
    /// The request in the chat shape, for estimating its tokens when no usage came.
    pub(crate) request: Option<Arc<LazyJson>>,
    /// The served attempt's translation, once its answer was delivered (or cut off):
    /// the usage and text it showed.
    pub(crate) translation: Option<Translation>,
    pub(crate) ttfb: Option<Duration>,
    /// Set once the request's record has been handed to the log writer.
    pub(crate) logged: bool,
    /// The front door whose shape errors are written in.
    pub(crate) error_shape: Door,
    /// What the gateway changed in the request, for the log row.
    pub(crate) note: Option<std::sync::Arc<str>>,
    sink: LogSink,
    pricing: Arc<Pricing>,
    /// The key's limits: the permit held while the request runs, or the refusal.
    pub(crate) limits: limits::Gate,
    /// The serving entry's own quota, when it has one: settled like the key's limits.
    pub(crate) entry_quota: Option<limits::Gate>,
    /// Who sent the request (behind a trusted proxy: read from `X-Forwarded-For`).
    pub(crate) client: Option<std::net::IpAddr>,
    /// The request's place among its client's requests in flight (behind a trusted proxy).
    pub(crate) client_slot: Option<crate::clients::ClientSlot>,
    /// `Retry-After` of an error answer, in seconds.
    pub(crate) retry_after: Option<u64>,
    /// `Allow` of a 405 answer.
    pub(crate) allow: Option<&'static str>,
    /// What the response cache did (`None`: it is off for this request's key).
    pub(crate) cache: Option<Box<crate::cache::Use>>,
    /// The request's trace: the client's context, and its spans when tracing is on.
    pub(crate) trace: Trace,
    /// The workspace lets message content into its spans.
    pub(crate) capture_content: bool,
}

impl Ctx {
    pub fn new(sink: LogSink, pricing: Arc<Pricing>) -> Self {
        Self {
            start: Instant::now(),
            started_at: OffsetDateTime::now_utc(),
            request_id: Uuid::now_v7(),
            door: None,
            key: None,
            model_requested: None,
            model_served: None,
            served_by: None,
            served_key: None,
            skipped: Vec::new(),
            attempts: Vec::new(),
            status: 0,
            error_kind: None,
            streamed: false,
            request: None,
            translation: None,
            ttfb: None,
            logged: false,
            error_shape: Door::Chat,
            note: None,
            sink,
            pricing,
            limits: limits::Gate::default(),
            entry_quota: None,
            client: None,
            client_slot: None,
            retry_after: None,
            allow: None,
            cache: None,
            trace: Trace::default(),
            capture_content: false,
        }
    }

    /// The workspace of the request's key (nil before it is known).
    pub(crate) fn workspace_id(&self) -> Uuid {
        self.key.as_ref().map_or(Uuid::nil(), |k| k.workspace_id)
    }

    /// Routing passed `entry` (or one key of its pool) by, for `reason`.
    pub(crate) fn skip(&mut self, entry: &Entry, key: Option<&PoolKey>, reason: SkipReason) {
        crate::metrics::ROUTE_DECISIONS
            .with_label_values(&[reason.as_str()])
            .inc();
        if self.skipped.len() < MAX_SKIPS {
            self.skipped.push(Skip {
                entry: entry.name.clone(),
                key: key.map(|k| k.label.clone()),
                reason,
            });
        }
    }

    /// `entry`, with `key` from its pool, answered (or was asked when the client left).
    pub(crate) fn serve(&mut self, entry: &Arc<Entry>, key: Option<&PoolKey>, served: String) {
        self.served_by = Some(entry.clone());
        self.served_key = key.map(|k| (k.id, k.label.clone()));
        self.model_served = Some(served);
    }

    /// Hands the request's one record to the log writer (nothing for unlogged routes).
    pub fn log(&mut self) {
        if self.logged {
            return;
        }
        self.logged = true;
        if let Some(record) = record::build(self, &self.pricing) {
            record::finish_trace(self, &record);
            self.sink.send(record);
        }
    }
}

/// How a request ended early.
pub enum Stop {
    /// Answer with this error (nothing sent yet).
    Respond(GatewayError),
    /// The client went away.
    ClientGone,
    /// A committed non-stream answer broke: close without completing the body.
    Abort(Box<Error>),
}

impl From<GatewayError> for Stop {
    fn from(e: GatewayError) -> Self {
        Stop::Respond(e)
    }
}

impl Drop for Ctx {
    /// A request whose task was dropped before `logging` ran — cut off when the shutdown
    /// grace period ended — still gets its one record.
    fn drop(&mut self) {
        if self.logged || self.door.is_none() {
            return;
        }
        self.error_kind = Some(ErrorKind::CancelledAtShutdown);
        // Whatever had been sent, the answer did not reach its end.
        if self.status == 0 || self.status == 200 {
            self.status = 503;
        }
        self.log();
    }
}
