//! The response cache's stages of the pipeline: what the cache does for the request, its
//! key, serving a hit or an identical request's answer in flight, and storing a fresh
//! answer once it ended properly. How answers are kept, keyed and replayed is
//! `crate::cache`'s; this writes them to the client.

use std::sync::Arc;

use bytes::Bytes;
use pingora::proxy::Session;

use super::ctx::{Ctx, Stop};
use super::deliver::{header, send};
use super::respond::Framing;
use super::Services;
use crate::auth::AuthedKey;
use crate::cache::entry::{Head, Stored};
use crate::cache::flights::{Following, Next};
use crate::cache::key::{self, Key, Scope};
use crate::cache::record::Recorder;
use crate::cache::replay::replay;
use crate::cache::{self, Asked, CacheResult, Decision};
use crate::errors::GatewayError;
use crate::frontdoor::{Door, Inbound, Prepared};
use crate::metrics;
use crate::routing::Routes;
use perpetuo_wire::replay::{Identity, Rewriter};
use perpetuo_wire::translation::{Break, Shape};

impl Services {
    /// What the cache does for this request: the key's mode (or its workspace's) and the
    /// request's cache headers.
    pub(crate) fn cache_decision(
        &self,
        session: &Session,
        key: &AuthedKey,
        routes: &Routes,
    ) -> Result<Decision, GatewayError> {
        let mode = key.cache_mode.resolve(routes.cache.mode);
        cache::decide(mode, routes.cache.ttl_seconds, Asked::of(session))
    }

    /// The request's cache key; `None` when the request cannot be keyed (its continued
    /// conversation could not be resolved).
    pub(crate) fn cache_key(
        &self,
        session: &Session,
        ctx: &Ctx,
        routes: &Routes,
        inbound: &Inbound<'_>,
    ) -> Option<Key> {
        let workspace = ctx.key.as_ref()?.workspace_id;
        let header = |name| session.get_header(name).and_then(|v| v.to_str().ok());
        let headers: Vec<(&'static str, Option<&str>)> = match inbound.door {
            Door::Messages => vec![
                ("anthropic-version", header("anthropic-version")),
                ("anthropic-beta", header("anthropic-beta")),
            ],
            _ => Vec::new(),
        };
        // A continued Responses conversation is keyed on what it resolved to.
        let resolved = match inbound.prepared {
            Prepared::Responses(r)
                if inbound.call.request.get("previous_response_id").is_some() =>
            {
                Some(r.pivot.as_ref().ok()?.raw().clone())
            }
            _ => None,
        };
        let canonical = key::canonical(inbound.call.request.raw(), inbound.door)?;
        Some(key::key(
            &Scope {
                workspace,
                generation: routes.cache.generation,
                door: inbound.door,
                headers: &headers,
                resolved: resolved.as_deref(),
            },
            &canonical,
        ))
    }

    /// Serves a stored answer; `false` when it cannot be given in the shape asked (the
    /// request then misses).
    pub(crate) async fn serve_hit(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        inbound: &Inbound<'_>,
        stored: Arc<Stored>,
    ) -> Result<bool, Stop> {
        let stream = inbound.call.stream;
        let now = cache::now_ms();
        let door = |kind, stream| {
            inbound
                .door
                .replay(inbound, kind, &stored.head.served, stream)
                .ok()
        };
        let Some(replayed) = replay(
            &stored,
            stream,
            now / 1000,
            self.upstreams.max_event_bytes,
            door,
        ) else {
            return Ok(false);
        };
        let head = &stored.head;
        ctx.model_served = Some(head.served.clone());
        ctx.status = replayed.status;
        if let Some(c) = &mut ctx.cache {
            c.outcome = CacheResult::Hit;
            c.age = Some(stored.age_s(now));
            c.saved_nusd = head.cost_nusd;
        }
        ctx.translation = Some(replayed.translation);
        self.store_answer(ctx, inbound.prepared.to_store()).await;
        self.write_replayed(
            session,
            ctx,
            replayed.status,
            &replayed.content_type,
            replayed.stream,
            replayed.pieces,
        )
        .await?;
        Ok(true)
    }

    async fn write_replayed(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        status: u16,
        content_type: &str,
        stream: bool,
        pieces: Vec<Bytes>,
    ) -> Result<(), Stop> {
        if stream {
            header(session, ctx, status, content_type, Framing::Chunked).await?;
            for p in pieces {
                send(session, p).await?;
            }
        } else {
            let body = match <[Bytes; 1]>::try_from(pieces) {
                Ok([one]) => one,
                Err(pieces) => Bytes::from(pieces.concat()),
            };
            header(
                session,
                ctx,
                status,
                content_type,
                Framing::Length(body.len()),
            )
            .await?;
            send(session, body).await?;
        }
        session
            .write_response_body(None, true)
            .await
            .map_err(|_| Stop::ClientGone)
    }

    /// Answers the request from an identical one in flight: its answer as the leader
    /// receives it. `false` when the leader had none to share in time (or it broke before
    /// a body was given): the request then goes on its own.
    pub(crate) async fn follow(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        inbound: &Inbound<'_>,
        mut following: Following,
    ) -> Result<bool, Stop> {
        let deadline = tokio::time::Instant::now() + self.upstreams.timeouts.ttfb;
        let answering = tokio::select! {
            a = following.answering(deadline) => a,
            _ = session.read_body_or_idle(true) => return Err(Stop::ClientGone),
        };
        let Some(answering) = answering else {
            return Ok(false);
        };
        let stream = inbound.call.stream;
        let Ok(mut t) = inbound
            .door
            .replay(inbound, answering.kind, &answering.served, stream)
        else {
            return Ok(false);
        };
        let shape = t.begin(
            answering.status,
            &answering.content_type,
            self.upstreams.max_event_bytes,
        );
        // Answered by the leader's provider call: a hit, whose age is none.
        if let Some(c) = &mut ctx.cache {
            c.outcome = CacheResult::Hit;
            c.age = Some(0);
        }
        let now_s = cache::now_ms() / 1000;
        let mut identity: Option<Rewriter> = None;
        let mut body: Vec<Bytes> = Vec::new();
        if shape == Shape::Stream {
            header(
                session,
                ctx,
                answering.status,
                "text/event-stream; charset=utf-8",
                Framing::Chunked,
            )
            .await?;
        }
        let deadline = tokio::time::Instant::from_std(ctx.start + self.upstreams.timeouts.answer);
        let broke = 'read: loop {
            let next = tokio::select! {
                n = following.next() => n,
                _ = session.read_body_or_idle(true) => return Err(Stop::ClientGone),
                _ = tokio::time::sleep_until(deadline) => break Some(Break::TooLong),
            };
            let pieces = match next {
                Next::Pieces(pieces) => pieces,
                Next::Done => break None,
                Next::Broken => break Some(Break::Midstream),
            };
            for p in pieces {
                let rewriter = identity.get_or_insert_with(|| {
                    let old = Identity::of(&p, stream);
                    old.rewriter(&old.fresh(now_s))
                });
                match t.push(rewriter.apply(&p)) {
                    Ok(out) if shape == Shape::Stream => send(session, out).await?,
                    Ok(out) => body.push(out),
                    Err(kind) => break 'read Some(kind),
                }
            }
        };
        ctx.model_served = Some(answering.served.clone());
        ctx.status = answering.status;
        if let Some(kind) = broke {
            if shape != Shape::Stream {
                // Nothing was given yet: the request goes on its own.
                if let Some(c) = &mut ctx.cache {
                    c.outcome = CacheResult::Miss;
                    c.age = None;
                }
                return Ok(false);
            }
            metrics::CACHE_COALESCED.inc();
            let end = t.broken(kind);
            ctx.translation = Some(t);
            ctx.error_kind = Some(kind.into());
            ctx.status = 502;
            let _ = session.write_response_body(Some(end), false).await;
            let _ = session.write_response_body(None, true).await;
            return Ok(true);
        }
        metrics::CACHE_COALESCED.inc();
        let rest = t.finish().unwrap_or_default();
        ctx.translation = Some(t);
        self.store_answer(ctx, inbound.prepared.to_store()).await;
        if shape == Shape::Stream {
            send(session, rest).await?;
            session
                .write_response_body(None, true)
                .await
                .map_err(|_| Stop::ClientGone)?;
        } else {
            body.push(rest);
            let content_type = match shape {
                Shape::Whole => "application/json".to_string(),
                _ => answering.content_type.clone(),
            };
            self.write_replayed(session, ctx, answering.status, &content_type, false, body)
                .await?;
        }
        Ok(true)
    }

    /// Stores the answer just delivered (as `recorder` kept it), when it is a complete
    /// success the request may store (`ctx.cache` holds its key).
    pub(crate) async fn cache_answer(&self, ctx: &mut Ctx, recorder: Recorder) {
        let Some((key, ttl)) = ctx.cache.as_mut().and_then(|c| c.store.take()) else {
            return;
        };
        let Some(pieces) = recorder.finish() else {
            return;
        };
        let (Some(entry), Some(served), Some(t)) =
            (&ctx.served_by, &ctx.model_served, &ctx.translation)
        else {
            return;
        };
        if !(200..300).contains(&ctx.status) {
            return;
        }
        let usage = t.usage().unwrap_or_default().clamped();
        let streamed = ctx.streamed;
        let identity = pieces
            .first()
            .map(|p| Identity::of(p, streamed))
            .unwrap_or_default();
        let stored = Stored {
            head: Head {
                kind: entry.kind,
                served: served.clone(),
                status: ctx.status,
                content_type: if streamed {
                    "text/event-stream".into()
                } else {
                    "application/json".into()
                },
                streamed,
                id: identity.id,
                created: identity.created,
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                cached_tokens: usage.cached_tokens,
                cache_write_tokens: usage.cache_write_tokens,
                cost_nusd: self.pricing.cost_nusd(served, &usage.counts()),
                stored_at_ms: cache::now_ms(),
                ttl_s: ttl,
            },
            pieces,
        };
        self.cache.put(key, stored).await;
    }
}
