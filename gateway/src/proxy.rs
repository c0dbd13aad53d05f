//! The Pingora phase glue: `request_filter` hands the exchange to the pipeline
//! ([`Services::dispatch`]) and answers its early exits; `logging` turns the outcome into
//! metrics and exactly one log record.

use async_trait::async_trait;
use pingora::proxy::{ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};
use tracing::Instrument;

use crate::errors::ErrorKind;
use crate::frontdoor::Door;
use crate::metrics;
use crate::pipeline::ctx::{Ctx, Stop};
use crate::pipeline::respond;
use crate::pipeline::trace::Trace;
use crate::pipeline::Services;

/// Pingora's proxy: the pipeline's services behind its phases.
pub struct Gateway {
    pub services: Services,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(self.services.sink.clone(), self.services.pricing.clone())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
        // Every line logged while the request runs carries its id (a warn-level span, so
        // it is on whenever warnings are).
        let req = session.req_header();
        if Door::for_route(req.method.as_str(), req.uri.path()).is_some() {
            ctx.trace = Trace::begin(self.services.tracer.as_ref(), session);
        }
        let span = tracing::warn_span!(
            "request",
            request_id = %ctx.request_id,
            trace_id = tracing::field::Empty
        );
        if let Some(trace_id) = ctx.trace.trace_id() {
            span.record("trace_id", trace_id);
        }
        match self.services.dispatch(session, ctx).instrument(span).await {
            Ok(()) => Ok(true),
            Err(Stop::Respond(err)) => {
                ctx.status = err.status;
                ctx.error_kind = Some(err.code);
                ctx.retry_after = err.retry_after_s;
                let body = ctx.error_shape.error_body(&err);
                let _ = respond::json(session, ctx, err.status, body).await;
                Ok(true)
            }
            Err(Stop::ClientGone) if self.services.shutdown.cut_off() => {
                // The shutdown cut the connection, as it cuts a request it drops.
                ctx.status = 503;
                ctx.error_kind = Some(ErrorKind::CancelledAtShutdown);
                Ok(true)
            }
            Err(Stop::ClientGone) => {
                ctx.status = 499;
                ctx.error_kind = Some(ErrorKind::ClientDisconnected);
                Ok(true)
            }
            Err(Stop::Abort(e)) => {
                if ctx.error_kind.is_none() {
                    ctx.error_kind = Some(ErrorKind::InternalError);
                }
                Err(e)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Ctx,
    ) -> pingora::Result<Box<HttpPeer>> {
        // Every request is answered in `request_filter`.
        Err(Error::explain(
            ErrorType::InternalError,
            "no upstream phase in this gateway",
        ))
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, _error: &Error) -> bool {
        ctx.status == 499 || ctx.error_kind == Some(ErrorKind::UpstreamErrorMidstream)
    }

    async fn logging(&self, _session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let route = ctx.door.map_or("other", Door::label);
        let kind = ctx.served_by.as_ref().map_or("none", |e| e.kind.as_str());
        metrics::REQUESTS
            .with_label_values(&[route, kind, metrics::status_class(ctx.status)])
            .inc();
        metrics::REQUEST_DURATION
            .with_label_values(&[route])
            .observe(ctx.start.elapsed().as_secs_f64());
        if let Some(t) = ctx.ttfb {
            metrics::TTFB
                .with_label_values(&[kind])
                .observe(t.as_secs_f64());
        }
        ctx.log();
        // The request's shared limits are settled before its connection is reused.
        ctx.limits.apply().await;
        if let Some(q) = &ctx.entry_quota {
            q.apply().await;
        }
    }
}
