//! Delivery of the chosen answer through the door's encoder: a stream event by event, a
//! body as it arrives, or — when the door rewrites it — read whole (bounded) and sent
//! rewritten. A stream that breaks after the commit ends with the door's error event and
//! never its proper end.

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;
use pingora::{Error, ErrorType};
use std::time::Instant;

use crate::errors::GatewayError;
use crate::frontdoor::Encoder;
use crate::metrics;
use crate::providers::{Adapter, StreamState};
use crate::proxy::body::Chunks;
use crate::proxy::ctx::{Ctx, Stop};
use crate::proxy::respond::{self, Framing};
use crate::proxy::Gateway;
use crate::sse::Framer;
use crate::upstream::Ready;

/// Largest answer body kept aside to read its usage, or read whole to rewrite it.
const MAX_KEPT_BODY: usize = 8 * 1024 * 1024;

/// Writes one piece of the answer; a failed write means the client is gone.
async fn send(session: &mut Session, piece: Bytes) -> Result<(), Stop> {
    if piece.is_empty() {
        return Ok(());
    }
    session
        .write_response_body(Some(piece), false)
        .await
        .map_err(|_| Stop::ClientGone)
}

/// Writes one piece of a stream; when the client is gone, what the stream showed is kept
/// for the record.
async fn send_stream(
    session: &mut Session,
    ctx: &mut Ctx,
    state: &StreamState,
    piece: Bytes,
) -> Result<(), Stop> {
    let sent = send(session, piece).await;
    if sent.is_err() {
        ctx.take_stream(state);
    }
    sent
}

/// Ends the answer's body.
async fn end(session: &mut Session) -> Result<(), Stop> {
    session
        .write_response_body(None, true)
        .await
        .map_err(|_| Stop::ClientGone)
}

impl Ctx {
    /// What a stream showed (its usage and text), for the record, whatever ends it.
    fn take_stream(&mut self, state: &StreamState) {
        self.usage = state.usage;
        self.content = state.content.clone();
    }
}

impl Gateway {
    /// Streams a ready answer to the client, chunk by chunk, through the door's encoder.
    pub(crate) async fn deliver(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        mut ready: Box<Ready>,
        adapter: Adapter,
        mut state: StreamState,
        mut encoder: Box<dyn Encoder>,
    ) -> Result<(), Stop> {
        let status = ready.header.status.as_u16();
        ctx.status = status;
        let content_type = ready
            .header
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string();
        let sse = status < 300 && content_type.starts_with("text/event-stream");
        if !sse && encoder.rewrites_whole_body(adapter) {
            return self
                .deliver_whole(session, ctx, ready, adapter, encoder.as_mut())
                .await;
        }
        let header = if sse {
            respond::header(
                ctx,
                status,
                "text/event-stream; charset=utf-8",
                Framing::Chunked,
            )
        } else {
            let framing = match ready.header.headers.get("content-length") {
                Some(length) => Framing::Declared(length),
                None => Framing::Chunked,
            };
            respond::header(ctx, status, &content_type, framing)
        };
        session
            .write_response_header(header.map_err(Stop::Abort)?, false)
            .await
            .map_err(|_| Stop::ClientGone)?;
        ctx.ttfb = Some(ctx.start.elapsed());

        let mut framer = Framer::with_limit(self.upstreams.max_event_bytes);
        let mut kept = Chunks::default();
        let mut next = ready.first.take();
        let mut done = ready.done;
        let answer_deadline =
            tokio::time::Instant::from_std(ctx.start + self.upstreams.timeouts.answer);
        loop {
            if let Some(chunk) = next.take() {
                let out = if sse {
                    let Ok(events) = framer.push(&chunk) else {
                        return self
                            .end_broken_stream(
                                session,
                                ctx,
                                &state,
                                encoder.as_mut(),
                                "upstream_event_too_large",
                            )
                            .await;
                    };
                    let mut out = BytesMut::new();
                    for event in events {
                        encoder.event(adapter, &mut state, &event, &mut out);
                    }
                    out.freeze()
                } else {
                    if kept.len() + chunk.len() <= MAX_KEPT_BODY {
                        kept.push(chunk.clone());
                    }
                    chunk
                };
                send_stream(session, ctx, &state, out).await?;
            }
            if done {
                break;
            }
            let read = tokio::select! {
                r = ready.session.read_response_body() => r,
                _ = session.read_body_or_idle(true) => {
                    ctx.take_stream(&state);
                    return Err(Stop::ClientGone);
                }
                _ = tokio::time::sleep_until(answer_deadline) => {
                    if !sse {
                        self.midstream_failure(ctx, "answer_too_long");
                        return Err(Stop::Abort(Error::explain(ErrorType::ReadTimedout, "answer too long")));
                    }
                    return self
                        .end_broken_stream(session, ctx, &state, encoder.as_mut(), "answer_too_long")
                        .await;
                }
            };
            match read {
                Ok(Some(chunk)) => next = Some(chunk),
                Ok(None) => done = true,
                Err(e) if !sse => {
                    self.midstream_failure(ctx, "upstream_error_midstream");
                    return Err(Stop::Abort(e));
                }
                Err(_) => {
                    return self
                        .end_broken_stream(
                            session,
                            ctx,
                            &state,
                            encoder.as_mut(),
                            "upstream_error_midstream",
                        )
                        .await;
                }
            }
        }
        if !sse {
            // Passed on as it came: read afterwards for its usage.
            let served = ctx.model_served.as_deref().unwrap_or("");
            let (usage, content) = adapter
                .decode_response(&kept.into_bytes(), served)
                .usage_and_content();
            ctx.usage = usage;
            ctx.content = content;
            end(session).await?;
            self.upstreams.release(ready).await;
            return Ok(());
        }
        if let Some(rest) = framer.finish() {
            let mut out = BytesMut::new();
            encoder.event(adapter, &mut state, &rest, &mut out);
            send_stream(session, ctx, &state, out.freeze()).await?;
        }
        match encoder.finish(adapter, &mut state) {
            Ok(finished) => {
                ctx.take_stream(&state);
                if let (Some(pending), Some(key)) = (finished.store, &ctx.key) {
                    Box::pin(self.responses.store(key, ctx.request_id, pending)).await;
                }
                for piece in finished.tail {
                    send(session, piece).await?;
                }
                end(session).await?;
                self.upstreams.release(ready).await;
                Ok(())
            }
            Err(_) => {
                self.end_broken_stream(
                    session,
                    ctx,
                    &state,
                    encoder.as_mut(),
                    "upstream_error_midstream",
                )
                .await
            }
        }
    }

    /// A stream that broke after the commit (`kind` says how): the client gets the door's
    /// error event (unless the provider's own was already passed on) and never the
    /// stream's proper end.
    async fn end_broken_stream(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        state: &StreamState,
        encoder: &mut dyn Encoder,
        kind: &'static str,
    ) -> Result<(), Stop> {
        self.midstream_failure(ctx, kind);
        ctx.take_stream(state);
        let message = match kind {
            "answer_too_long" => "The answer ran past the gateway's time limit.",
            "upstream_event_too_large" => "The provider sent a stream event that is too large.",
            _ => "The provider's stream broke off.",
        };
        if let Some(event) = encoder.broken(state, message, kind) {
            let _ = session.write_response_body(Some(event), false).await;
        }
        let _ = session.write_response_body(None, true).await;
        Ok(())
    }

    /// The serving entry failed after its answer was committed: it counts against the
    /// entry's breaker, and the request is recorded as a 502 of this kind.
    fn midstream_failure(&self, ctx: &mut Ctx, kind: &'static str) {
        if let Some(entry) = &ctx.served_by {
            if self.breakers.failure(entry.id, Instant::now(), None) {
                metrics::BREAKER_OPENED
                    .with_label_values(&[entry.kind.as_str()])
                    .inc();
            }
        }
        ctx.error_kind = Some(kind);
        ctx.status = 502;
    }

    /// A non-stream answer the door rewrites: read whole (bounded), rewritten, sent.
    async fn deliver_whole(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        mut ready: Box<Ready>,
        adapter: Adapter,
        encoder: &mut dyn Encoder,
    ) -> Result<(), Stop> {
        let status = ready.header.status.as_u16();
        let mut body = Chunks::default();
        if let Some(first) = ready.first.take() {
            body.push(first);
        }
        let mut done = ready.done;
        let answer_deadline =
            tokio::time::Instant::from_std(ctx.start + self.upstreams.timeouts.answer);
        while !done {
            let read = tokio::select! {
                r = ready.session.read_response_body() => r,
                _ = session.read_body_or_idle(true) => return Err(Stop::ClientGone),
                _ = tokio::time::sleep_until(answer_deadline) => {
                    self.midstream_failure(ctx, "answer_too_long");
                    return Err(GatewayError::upstream_timeout().into());
                }
            };
            match read {
                Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_KEPT_BODY => body.push(chunk),
                Ok(None) => done = true,
                Ok(Some(_)) | Err(_) => {
                    self.midstream_failure(ctx, "upstream_error_midstream");
                    return Err(GatewayError::upstream_failed().into());
                }
            }
        }
        let served = ctx.model_served.as_deref().unwrap_or("");
        let whole = encoder.whole(adapter, status, body.into_bytes(), served);
        ctx.usage = whole.usage;
        ctx.content = whole.content;
        if let (Some(pending), Some(key)) = (whole.store, &ctx.key) {
            Box::pin(self.responses.store(key, ctx.request_id, pending)).await;
        }
        let header = respond::header(
            ctx,
            status,
            "application/json",
            Framing::Length(whole.body.len()),
        )
        .map_err(Stop::Abort)?;
        session
            .write_response_header(header, false)
            .await
            .map_err(|_| Stop::ClientGone)?;
        ctx.ttfb = Some(ctx.start.elapsed());
        session
            .write_response_body(Some(whole.body), true)
            .await
            .map_err(|_| Stop::ClientGone)?;
        self.upstreams.release(ready).await;
        Ok(())
    }
}
