//! The Messages door around the pipeline: a request prepared once, built per entry
//! (passed through to `anthropic` entries, converted for the others), and the answer's
//! encoders.

use bytes::{Bytes, BytesMut};
use serde_json::Value;

use super::{error_event, from_completion, from_openai_error, to_chat, StreamEncoder};
use crate::frontdoor::{
    pivot, reencode, reencode_finish, whole_as_chat, Built, Encoder, Finished, Inbound, Prepared,
    Whole,
};
use crate::providers::{self, Adapter, BrokenStream, StreamState, Unsupported};
use crate::routing::Entry;
use crate::sse::Event;

/// The note on the log row of a converted request whose thinking blocks were dropped.
const THINKING_DROPPED: &str = "thinking blocks dropped in translation";

/// The request converted to the chat shape once, for the entries that need it.
pub fn prepare(request: &Value) -> Prepared {
    let mut note = None;
    let chat = to_chat(request).map(|(chat, dropped)| {
        if dropped.thinking {
            note = Some(THINKING_DROPPED);
        }
        chat
    });
    Prepared {
        pivot: pivot(chat),
        note,
        ..Prepared::default()
    }
}

/// `POST /v1/messages/count_tokens`: the prompt's tokens, counted with the tokenizer.
pub fn count_tokens(request: Value) -> Value {
    let chat = to_chat(&request).map(|(chat, _)| chat).unwrap_or(request);
    let mut n = providers::tokens::prompt(&chat);
    if let Some(tools) = chat.get("tools") {
        n = n.saturating_add(providers::tokens::count(&tools.to_string()));
    }
    serde_json::json!({"input_tokens": n})
}

/// The request for one entry: passed through to `anthropic` entries, converted for the
/// others.
pub fn build(inbound: &Inbound<'_>, entry: &Entry, served: &str) -> Result<Built, Unsupported> {
    let adapter = Adapter::for_kind(entry.kind);
    if adapter == Adapter::Anthropic {
        let request = providers::anthropic::passthrough_request(
            &entry.upstream.path_prefix,
            entry.key.expose(),
            &inbound.call,
            served,
            inbound.prepared.anthropic_version.as_deref(),
            inbound.prepared.anthropic_beta.as_deref(),
        )?;
        return Ok(Built {
            request,
            state: StreamState::passthrough(served),
            encoder: Box::new(Passthrough),
        });
    }
    let (request, state) = inbound.pivot_request(adapter, entry, served)?;
    Ok(Built {
        request,
        state,
        encoder: Box::new(Converted {
            events: StreamEncoder::new(served),
            note: inbound.prepared.note,
        }),
    })
}

/// Anthropic's own answer, unchanged (the adapter still reads it, for usage and for
/// whether the stream ended properly).
struct Passthrough;

impl Encoder for Passthrough {
    fn rewrites_whole_body(&self, _adapter: Adapter) -> bool {
        false
    }

    fn event(
        &mut self,
        adapter: Adapter,
        state: &mut StreamState,
        event: &Event,
        out: &mut BytesMut,
    ) {
        let _ = adapter.decode_event(state, event);
        out.extend_from_slice(&event.raw);
    }

    fn finish(
        &mut self,
        adapter: Adapter,
        state: &mut StreamState,
    ) -> Result<Finished, BrokenStream> {
        adapter
            .finish_stream(state)
            .map(|_| Finished::tail(Vec::new()))
    }

    fn broken(&mut self, state: &StreamState, message: &str, _kind: &str) -> Option<Bytes> {
        (!state.errored).then(|| error_event(502, message))
    }
}

/// The adapter's OpenAI chat answer encoded as a Messages response or event sequence.
struct Converted {
    events: StreamEncoder,
    note: Option<&'static str>,
}

impl Encoder for Converted {
    fn rewrites_whole_body(&self, _adapter: Adapter) -> bool {
        true
    }

    fn event(
        &mut self,
        adapter: Adapter,
        state: &mut StreamState,
        event: &Event,
        out: &mut BytesMut,
    ) {
        reencode(adapter, state, event, out, &mut self.events);
    }

    fn finish(
        &mut self,
        adapter: Adapter,
        state: &mut StreamState,
    ) -> Result<Finished, BrokenStream> {
        let mut tail = reencode_finish(adapter, state, &mut self.events)?;
        tail.extend(self.events.finish());
        if self.events.complete() {
            Ok(Finished::tail(tail))
        } else {
            Err(BrokenStream)
        }
    }

    fn broken(&mut self, _state: &StreamState, message: &str, _kind: &str) -> Option<Bytes> {
        (!self.events.errored).then(|| error_event(502, message))
    }

    fn whole(&mut self, adapter: Adapter, status: u16, body: Bytes, served: &str) -> Whole {
        let mut whole = whole_as_chat(adapter, status, body, served);
        whole.body = if status < 300 {
            let completion: Value = serde_json::from_slice(&whole.body).unwrap_or(Value::Null);
            Bytes::from(from_completion(&completion, served, whole.usage.as_ref()).to_string())
        } else {
            from_openai_error(status, &whole.body)
        };
        whole
    }

    fn note(&self) -> Option<&'static str> {
        self.note
    }
}
