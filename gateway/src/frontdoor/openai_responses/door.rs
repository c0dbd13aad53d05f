//! The Responses door around the pipeline: the request prepared once (after the stored
//! conversation it continues), built per entry (passed through to OpenAI itself unless it
//! continues a stored conversation, converted for the others), with the translation of
//! its answer, which hands a finished answer over for storing.

use std::sync::Arc;

use perpetuo_core::provider::ProviderKind;
use serde_json::Value;

use crate::frontdoor::{pivot, pivot_replay_state, Built, Inbound, Prepared, PreparedResponses};
use crate::routing::Entry;
use crate::stored_responses::{Continued, ToStore};
use perpetuo_wire::lazy_json::LazyJson;
use perpetuo_wire::openai::responses::request::PROMPT_CACHE_KEY;
use perpetuo_wire::openai::responses::{
    convert, input_items, response_id, Echo, Reader, StreamEncoder,
};
use perpetuo_wire::translation::{Encoder, Translation};
use perpetuo_wire::{Adapter, Call, StreamState, Unsupported};

/// Whether the answer to `request` is stored (`store`, true unless it says false).
pub fn storing(request: &Value) -> bool {
    request.get("store") != Some(&Value::Bool(false))
}

/// The request converted to the chat shape after the stored conversation it continues,
/// and what to store.
pub fn prepare(request: &LazyJson, continued: Continued) -> PreparedResponses {
    let conversion = convert(request.raw(), &continued.history);
    let to_store = storing(request).then(|| ToStore {
        input_items: Value::Array(input_items(request)),
        // A request only OpenAI can take (built-in tools) is still stored; its turn then
        // holds what can be expressed as chat: its answer. System messages are left out:
        // later turns do not replay them.
        turn: match &conversion.input {
            Ok(input) => input
                .iter()
                .filter(|m| m["role"] != "system")
                .cloned()
                .collect(),
            Err(_) => Vec::new(),
        },
        previous: continued.parent,
    });
    PreparedResponses {
        pivot: pivot(conversion.chat),
        response_id: response_id(),
        to_store,
        dropped: conversion.dropped,
    }
}

/// The log row's note for a converted request sent to an entry of `kind`: what the
/// conversion left out, and the cache hint where the kind has no such thing.
fn note(dropped: &[&'static str], kind: ProviderKind, chat: Option<&Value>) -> Option<Arc<str>> {
    let mut left_out = dropped.to_vec();
    let hint = chat.is_some_and(|c| c.get(PROMPT_CACHE_KEY).is_some());
    if hint && matches!(kind, ProviderKind::Gemini | ProviderKind::OpenaiCompatible) {
        left_out.push(PROMPT_CACHE_KEY);
    }
    (!left_out.is_empty())
        .then(|| Arc::from(format!("{} dropped in translation", left_out.join(", "))))
}

pub fn build(
    inbound: &Inbound<'_>,
    entry: &Entry,
    key: &str,
    served: &str,
) -> Result<Built, Unsupported> {
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
            key,
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
    let (request, state) = inbound.pivot_request(adapter, entry, key, served)?;
    Ok(Built {
        request,
        translation: translated(inbound, prepared, adapter, entry.kind, state, served),
    })
}

/// The translation of a translated answer: chat events re-encoded as the Responses
/// sequence, under the new response's id, noting what the conversion dropped for `kind`.
fn translated(
    inbound: &Inbound<'_>,
    prepared: &PreparedResponses,
    adapter: Adapter,
    kind: ProviderKind,
    state: StreamState,
    served: &str,
) -> Translation {
    let note = note(
        &prepared.dropped,
        kind,
        inbound.prepared.pivot().map(|p| &***p),
    );
    let id = prepared.response_id.clone();
    let encoder = Encoder::Responses(StreamEncoder::new(Echo::new(
        id,
        inbound.call.request.raw(),
        served,
    )));
    Translation::new(adapter, state, encoder, served)
        .storing(prepared.to_store.is_some())
        .with_note(note)
}

/// The translation of a stored answer from an entry of `kind`, as [`build`] makes it for
/// a live one.
pub fn replay(
    inbound: &Inbound<'_>,
    call: &Call<'_>,
    kind: ProviderKind,
    served: &str,
) -> Result<Translation, Unsupported> {
    let Prepared::Responses(prepared) = inbound.prepared else {
        return Err(Unsupported("not a Responses request".into()));
    };
    let adapter = Adapter::for_kind(kind);
    if kind == ProviderKind::Openai && inbound.call.request.get("previous_response_id").is_none() {
        let state = StreamState::passthrough(served);
        let encoder = Encoder::ResponsesRaw(Reader::default());
        return Ok(
            Translation::new(adapter, state, encoder, served).storing(prepared.to_store.is_some())
        );
    }
    let state = pivot_replay_state(adapter, &prepared.pivot, call, served)?;
    Ok(translated(inbound, prepared, adapter, kind, state, served))
}
