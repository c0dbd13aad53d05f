//! Delivery of the chosen answer: I/O only. The attempt's [`Translation`] decides how the
//! body is read (a stream event by event, a body as it arrives, or a body read whole and
//! rewritten) and what the client receives of each chunk; this moves the bytes, under
//! the answer's deadline, and settles how it ended. A stream that breaks after the commit
//! ends with the door's error event and never its proper end.

use bytes::Bytes;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};
use std::time::Instant;

use super::ctx::{Ctx, Stop};
use super::respond::{self, Framing};
use super::Services;
use crate::cache::flights::Answering;
use crate::cache::record::Recorder;
use crate::errors::GatewayError;
use crate::metrics;
use crate::stored_responses::{Pending, ToStore};
use crate::upstream::Ready;
use perpetuo_wire::translation::{Break, Shape, Translation};

/// Writes one piece of the answer; a failed write means the client is gone.
pub(super) async fn send(session: &mut Session, piece: Bytes) -> Result<(), Stop> {
    if piece.is_empty() {
        return Ok(());
    }
    session
        .write_response_body(Some(piece), false)
        .await
        .map_err(|_| Stop::ClientGone)
}

/// How the provider's answer ended.
enum End {
    /// Properly: what is still to be sent.
    Complete(Bytes),
    /// Broken (the read error, when there was one).
    Broke(Break, Option<Box<Error>>),
    ClientGone,
    /// Properly, and the client, which had its end, left before the provider closed.
    Delivered,
}

/// Writes the answer's header; the time to it is the request's time to first byte.
pub(super) async fn header(
    session: &mut Session,
    ctx: &mut Ctx,
    status: u16,
    content_type: &str,
    framing: Framing<'_>,
) -> Result<(), Stop> {
    let header = respond::header(ctx, status, content_type, framing).map_err(Stop::Abort)?;
    session
        .write_response_header(header, false)
        .await
        .map_err(|_| Stop::ClientGone)?;
    ctx.ttfb = Some(ctx.start.elapsed());
    Ok(())
}

impl Services {
    /// Sends a ready answer to the client through the attempt's translation; `to_store`
    /// is what storing its finished answer needs besides the answer.
    pub(crate) async fn deliver(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        mut ready: Box<Ready>,
        mut translation: Translation,
        to_store: Option<&ToStore>,
    ) -> Result<(), Stop> {
        let status = ready.header.status.as_u16();
        ctx.status = status;
        let headers = &ready.header.headers;
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string();
        let shape = translation.begin(status, &content_type, self.upstreams.max_event_bytes);
        // Kept for the cache (and shared with identical requests waiting for it) when the
        // request may be stored.
        let mut recorder = ctx.cache.as_mut().and_then(|c| c.recorder.take());
        if let (Some(r), Some(entry), Some(served)) =
            (&mut recorder, &ctx.served_by, &ctx.model_served)
        {
            r.begin(Answering {
                kind: entry.kind,
                served: served.clone(),
                status,
                content_type: content_type.clone(),
            });
        }
        match (shape, headers.get("content-length")) {
            (Shape::Stream, _) => {
                let sse = "text/event-stream; charset=utf-8";
                header(session, ctx, status, sse, Framing::Chunked).await?
            }
            (Shape::Pass, Some(length)) => {
                let framing = Framing::Declared(length);
                header(session, ctx, status, &content_type, framing).await?
            }
            (Shape::Pass, None) => {
                header(session, ctx, status, &content_type, Framing::Chunked).await?
            }
            // Sent once the body is rewritten, with its length.
            (Shape::Whole, _) => {}
        }
        // A body of declared length is complete for the client once that many bytes are
        // sent: from then on its next request may already be arriving, and is not read.
        let declared = match (shape, ready.header.headers.get("content-length")) {
            (Shape::Pass, Some(v)) => v.to_str().ok().and_then(|v| v.parse::<usize>().ok()),
            _ => None,
        };
        let end = self
            .pump(
                session,
                ctx,
                &mut ready,
                &mut translation,
                recorder.as_mut(),
                declared,
            )
            .await;
        // From here the request keeps the translation: its record reads the usage.
        let translation = ctx.translation.insert(translation);
        let rest = match end {
            End::Complete(rest) => rest,
            End::ClientGone => return Err(Stop::ClientGone),
            End::Delivered => {
                self.store_answer(ctx, to_store).await;
                if let Some(recorder) = recorder {
                    self.cache_answer(ctx, recorder).await;
                }
                return Ok(());
            }
            End::Broke(kind, error) => {
                let event = (shape == Shape::Stream).then(|| translation.broken(kind));
                self.midstream_failure(ctx, kind);
                return broke(session, shape, kind, event, error).await;
            }
        };
        self.store_answer(ctx, to_store).await;
        if let Some(recorder) = recorder {
            self.cache_answer(ctx, recorder).await;
        }
        if shape == Shape::Whole {
            let framing = Framing::Length(rest.len());
            header(session, ctx, status, "application/json", framing).await?;
            session
                .write_response_body(Some(rest), true)
                .await
                .map_err(|_| Stop::ClientGone)?;
        } else {
            send(session, rest).await?;
            session
                .write_response_body(None, true)
                .await
                .map_err(|_| Stop::ClientGone)?;
        }
        self.upstreams.release(ready).await;
        Ok(())
    }

    /// Stores a finished Responses answer (the Responses door, `store` not false) before
    /// the client hears it is complete, so a follow-up naming it finds it.
    pub(super) async fn store_answer(&self, ctx: &mut Ctx, to_store: Option<&ToStore>) {
        let answer = ctx.translation.as_mut().and_then(Translation::take_answer);
        if let (Some(answer), Some(to_store), Some(key)) = (answer, to_store, &ctx.key) {
            let pending = Pending {
                to_store: to_store.clone(),
                response: answer.response,
                message: answer.message,
            };
            Box::pin(self.responses.store(key, ctx.request_id, pending)).await;
        }
    }

    /// Reads the answer to its end through the translation, sending what it gives as it
    /// comes, within the answer's deadline.
    async fn pump(
        &self,
        session: &mut Session,
        ctx: &Ctx,
        ready: &mut Ready,
        translation: &mut Translation,
        mut recorder: Option<&mut Recorder>,
        declared: Option<usize>,
    ) -> End {
        let deadline = tokio::time::Instant::from_std(ctx.start + self.upstreams.timeouts.answer);
        // One timer for the whole answer, not one registered and dropped per chunk.
        let past_deadline = tokio::time::sleep_until(deadline);
        tokio::pin!(past_deadline);
        let mut next = ready.first.take();
        let mut done = ready.done;
        let mut sent = 0usize;
        loop {
            if let Some(chunk) = next.take() {
                if let Some(r) = recorder.as_deref_mut() {
                    r.push(&chunk);
                }
                match translation.push(chunk) {
                    Ok(out) => {
                        sent = sent.saturating_add(out.len());
                        if send(session, out).await.is_err() {
                            return End::ClientGone;
                        }
                    }
                    Err(kind) => return End::Broke(kind, None),
                }
            }
            if done {
                break;
            }
            let client_has_all = declared.is_some_and(|n| sent >= n);
            let client_gone = async {
                if client_has_all {
                    std::future::pending::<()>().await;
                }
                let _ = session.read_body_or_idle(true).await;
            };
            let read = tokio::select! {
                r = ready.session.read_response_body() => r,
                // A client that hangs up once it has the stream's end (agents do) was
                // answered in full: the answer is finished without it.
                _ = client_gone => {
                    if !translation.client_has_end() {
                        return End::ClientGone;
                    }
                    return match translation.finish() {
                        Ok(_) => End::Delivered,
                        Err(kind) => End::Broke(kind, None),
                    };
                }
                _ = &mut past_deadline => return End::Broke(Break::TooLong, None),
            };
            match read {
                Ok(Some(chunk)) => next = Some(chunk),
                Ok(None) => done = true,
                Err(e) => return End::Broke(Break::Midstream, Some(e)),
            }
        }
        match translation.finish() {
            Ok(rest) => End::Complete(rest),
            Err(kind) => End::Broke(kind, None),
        }
    }

    /// The serving entry failed after its answer was committed: it counts against the
    /// entry's breaker, and the request is recorded as a 502 of this kind.
    fn midstream_failure(&self, ctx: &mut Ctx, kind: Break) {
        if let Some(entry) = &ctx.served_by {
            if self.breakers.failure(entry.id, Instant::now(), None) {
                metrics::BREAKER_OPENED
                    .with_label_values(&[entry.kind.as_str()])
                    .inc();
            }
        }
        ctx.error_kind = Some(kind.into());
        ctx.status = 502;
    }
}

/// How an answer that broke after the commit ends for the client: a stream with the
/// door's closing `event` and never its proper end; a body passed on is cut (`error`, or
/// the deadline); a body to rewrite was not sent yet, so the client gets an error.
async fn broke(
    session: &mut Session,
    shape: Shape,
    kind: Break,
    event: Option<Bytes>,
    error: Option<Box<Error>>,
) -> Result<(), Stop> {
    match (shape, error) {
        (Shape::Stream, _) => {
            if let Some(event) = event.filter(|e| !e.is_empty()) {
                let _ = session.write_response_body(Some(event), false).await;
            }
            let _ = session.write_response_body(None, true).await;
            Ok(())
        }
        (Shape::Whole, _) if kind == Break::TooLong => Err(GatewayError::upstream_timeout().into()),
        (Shape::Whole, _) => Err(GatewayError::upstream_failed().into()),
        (Shape::Pass, Some(e)) => Err(Stop::Abort(e)),
        (Shape::Pass, None) => Err(Stop::Abort(Error::explain(
            ErrorType::ReadTimedout,
            "answer too long",
        ))),
    }
}
