//! The Responses door around the pipeline: the request prepared once (after the stored
//! conversation it continues), built per entry (passed through to OpenAI itself unless it
//! continues a stored conversation, converted for the others), with the translation of
//! its answer, which hands a finished answer over for storing.

use perpetuo_core::provider::ProviderKind;
use serde_json::Value;

use crate::frontdoor::{pivot, Built, Inbound, Prepared, PreparedResponses};
use crate::routing::Entry;
use crate::stored_responses::{Continued, ToStore};
use perpetuo_wire::lazy_json::LazyJson;
use perpetuo_wire::openai::responses::{
    chat_from, input_items, input_messages, response_id, Echo, Reader, ResponsesRequest,
    StreamEncoder,
};
use perpetuo_wire::translation::{Encoder, Translation};
use perpetuo_wire::{Adapter, StreamState, Unsupported};

/// Whether the answer to `request` is stored (`store`, true unless it says false).
pub fn storing(request: &Value) -> bool {
    request.get("store") != Some(&Value::Bool(false))
}

/// The request converted to the chat shape after the stored conversation it continues,
/// and what to store.
pub fn prepare(request: &LazyJson, continued: Continued) -> PreparedResponses {
    let typed = ResponsesRequest::read(request.raw());
    let input = typed
        .as_ref()
        .map_err(Clone::clone)
        .and_then(input_messages);
    let to_store = storing(request).then(|| ToStore {
        input_items: Value::Array(input_items(request)),
        // A request only OpenAI can take (built-in tools) is still stored; its turn then
        // holds what can be expressed as chat: its answer. System messages are left out:
        // later turns do not replay them.
        turn: match &input {
            Ok(input) => input
                .iter()
                .filter(|m| m["role"] != "system")
                .cloned()
                .collect(),
            Err(_) => Vec::new(),
        },
        previous: continued.parent,
    });
    let chat = typed.and_then(|typed| chat_from(&typed, &continued.history, input?));
    PreparedResponses {
        pivot: pivot(chat),
        response_id: response_id(),
        to_store,
    }
}

pub fn build(inbound: &Inbound<'_>, entry: &Entry, served: &str) -> Result<Built, Unsupported> {
    let adapter = Adapter::for_kind(entry.kind);
    let Prepared::Responses(prepared) = inbound.prepared else {
        return Err(Unsupported("not a Responses request".into()));
    };
    let storing = prepared.to_store.is_some();
    if entry.kind == ProviderKind::Openai
        && inbound.call.request.get("previous_response_id").is_none()
    {
        let request = perpetuo_wire::openai::responses_request(
            &entry.upstream.path_prefix,
            entry.key.expose(),
            &inbound.call,
            served,
        )?;
        let state = StreamState::passthrough(served);
        let encoder = Encoder::ResponsesRaw(Reader::default());
        return Ok(Built {
            request,
            translation: Translation::new(adapter, state, encoder, served).storing(storing),
        });
    }
    let (request, state) = inbound.pivot_request(adapter, entry, served)?;
    let id = prepared.response_id.clone();
    let encoder = Encoder::Responses(StreamEncoder::new(Echo::new(
        id,
        inbound.call.request.raw(),
        served,
    )));
    Ok(Built {
        request,
        translation: Translation::new(adapter, state, encoder, served).storing(storing),
    })
}
