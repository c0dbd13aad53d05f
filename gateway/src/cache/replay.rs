//! A stored answer served again: given a fresh identity, then translated for the door as
//! a live answer is. The same shape replays the provider's own pieces (a stream event by
//! event, as the provider split it); a stream asked of a stored body gets the door's
//! stream built from the whole answer (one content event, then the end); a body asked of
//! a stored stream gets the answer the stream adds up to. Pure: bytes in, pieces out.

use bytes::Bytes;
use serde::Deserialize;

use perpetuo_wire::openai::chunk::Meta;
use perpetuo_wire::replay::{chunks_from_completion, completion_from_chunks};
use perpetuo_wire::sse::Framer;
use perpetuo_wire::translation::{Encoder, Shape, Translation};
use perpetuo_wire::{Adapter, ProviderKind, StreamState};

use super::entry::Stored;

const SSE: &str = "text/event-stream; charset=utf-8";
const JSON: &str = "application/json";

/// The door's answer from a stored one.
pub struct Replayed {
    pub status: u16,
    pub content_type: String,
    /// What the client receives, piece by piece (a stream's events; a body, whole).
    pub pieces: Vec<Bytes>,
    pub stream: bool,
    /// The translation it went through: the usage the answer shows.
    pub translation: Translation,
}

/// Replays `stored` for a request that asks for a stream or not. `door(kind, stream)` is
/// the door's translation of an answer from an entry of `kind`, as the live path builds
/// it. `None` when this entry cannot give that shape (the request then misses).
pub fn replay(
    stored: &Stored,
    stream: bool,
    now_s: i64,
    max_event_bytes: usize,
    door: impl Fn(ProviderKind, bool) -> Option<Translation>,
) -> Option<Replayed> {
    let head = &stored.head;
    let old = head.identity();
    let rewriter = old.rewriter(&old.fresh(now_s));
    let pieces: Vec<Bytes> = stored.pieces.iter().map(|p| rewriter.apply(p)).collect();
    let usage = head.usage();
    let (translation, status, content_type, pieces) = match (head.streamed, stream) {
        (true, true) | (false, false) => {
            let mut t = door(head.kind, stream)?;
            if usage.prompt_tokens + usage.completion_tokens > 0 {
                // Stored with the usage its answer stated: a body passed on unchanged is
                // not read again for it.
                t = t.knowing_usage(usage);
            }
            (t, head.status, head.content_type.clone(), pieces)
        }
        (true, false) => {
            let own = door(head.kind, false)?;
            if own.passes_responses() {
                // OpenAI's Responses events end with the whole response.
                (
                    own,
                    head.status,
                    JSON.to_string(),
                    vec![completed_response(&pieces)?],
                )
            } else {
                let chat = as_chat(head.kind, &head.served, &pieces, max_event_bytes)?;
                let body = completion_from_chunks(&chat)?;
                (
                    door(ProviderKind::OpenaiCompatible, false)?,
                    head.status,
                    JSON.to_string(),
                    vec![body],
                )
            }
        }
        (false, true) => {
            if door(head.kind, true)?.passes_responses() {
                return None;
            }
            let body = Bytes::from(pieces.concat());
            let decoded = Adapter::for_kind(head.kind).decode_response(&body, &head.served);
            let completion = decoded.body.unwrap_or(body);
            let events = chunks_from_completion(&completion)?;
            (
                door(ProviderKind::OpenaiCompatible, true)?,
                head.status,
                SSE.to_string(),
                vec![events],
            )
        }
    };
    run(translation, status, &content_type, pieces, max_event_bytes)
}

/// A stream of any kind's events as OpenAI chat events, usage included.
fn as_chat(
    kind: ProviderKind,
    served: &str,
    pieces: &[Bytes],
    max_event_bytes: usize,
) -> Option<Bytes> {
    let state = StreamState {
        client_wants_usage: true,
        meta: Meta::new(served),
        ..Default::default()
    };
    let t = Translation::new(Adapter::for_kind(kind), state, Encoder::Chat, served);
    let out = run(t, 200, SSE, pieces.to_vec(), max_event_bytes)?;
    Some(Bytes::from(out.pieces.concat()))
}

/// The `response` of a Responses stream's `response.completed` event.
fn completed_response(pieces: &[Bytes]) -> Option<Bytes> {
    #[derive(Deserialize)]
    struct Completed<'a> {
        #[serde(borrow, rename = "type")]
        kind: &'a str,
        #[serde(borrow)]
        response: &'a serde_json::value::RawValue,
    }
    let mut framer = Framer::new();
    let mut events = framer.push(&pieces.concat()).ok()?;
    events.extend(framer.finish());
    events.iter().rev().find_map(|e| {
        let data = e.data.as_deref()?;
        let c: Completed<'_> = serde_json::from_str(data).ok()?;
        (c.kind == "response.completed")
            .then(|| Bytes::copy_from_slice(c.response.get().as_bytes()))
    })
}

/// Pieces through a translation, as the live path delivers them.
fn run(
    mut t: Translation,
    status: u16,
    content_type: &str,
    pieces: Vec<Bytes>,
    max_event_bytes: usize,
) -> Option<Replayed> {
    let shape = t.begin(status, content_type, max_event_bytes);
    let mut out = Vec::with_capacity(pieces.len() + 1);
    for p in pieces {
        let sent = t.push(p).ok()?;
        if !sent.is_empty() {
            out.push(sent);
        }
    }
    let rest = t.finish().ok()?;
    if !rest.is_empty() {
        out.push(rest);
    }
    let stream = shape == Shape::Stream;
    let content_type = match shape {
        Shape::Stream => SSE.to_string(),
        Shape::Whole => JSON.to_string(),
        Shape::Pass => content_type.to_string(),
    };
    Some(Replayed {
        status,
        content_type,
        pieces: out,
        stream,
        translation: t,
    })
}
