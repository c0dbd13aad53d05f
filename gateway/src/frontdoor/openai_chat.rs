//! OpenAI's Chat Completions (`/v1/chat/completions`) and Embeddings (`/v1/embeddings`):
//! the provider adapters' own pivot format, so the door builds each entry's request with
//! its adapter and passes the adapter's OpenAI-format answer on unchanged.

use bytes::{Bytes, BytesMut};

use super::{whole_as_chat, Built, Encoder, Finished, Inbound, Whole};
use crate::providers::{self, Adapter, BrokenStream, StreamState, Unsupported};
use crate::routing::Entry;
use crate::sse::Event;

/// The request for one entry, translated by its adapter when it is not OpenAI's.
pub fn build(inbound: &Inbound<'_>, entry: &Entry, served: &str) -> Result<Built, Unsupported> {
    let adapter = Adapter::for_kind(entry.kind);
    let (request, state) = adapter.build_request(
        &entry.upstream.path_prefix,
        entry.key.expose(),
        &inbound.call,
        served,
    )?;
    Ok(Built {
        request,
        state,
        encoder: Box::new(ChatEncoder),
    })
}

/// The adapter's OpenAI-format chunks, as they are.
pub struct ChatEncoder;

impl Encoder for ChatEncoder {
    fn rewrites_whole_body(&self, adapter: Adapter) -> bool {
        adapter.translates()
    }

    fn event(
        &mut self,
        adapter: Adapter,
        state: &mut StreamState,
        event: &Event,
        out: &mut BytesMut,
    ) {
        for piece in adapter.decode_event(state, event) {
            out.extend_from_slice(&piece);
        }
    }

    fn finish(
        &mut self,
        adapter: Adapter,
        state: &mut StreamState,
    ) -> Result<Finished, BrokenStream> {
        adapter.finish_stream(state).map(Finished::tail)
    }

    fn broken(&mut self, state: &StreamState, message: &str, kind: &str) -> Option<Bytes> {
        (!state.errored).then(|| providers::chunk::error_event(message, "server_error", kind))
    }

    fn whole(&mut self, adapter: Adapter, status: u16, body: Bytes, served: &str) -> Whole {
        whole_as_chat(adapter, status, body, served)
    }
}
