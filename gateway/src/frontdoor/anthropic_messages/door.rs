//! The Messages door around the pipeline: a request prepared once, built per entry
//! (passed through to `anthropic` entries, converted for the others) with the translation
//! of its answer.

use std::sync::Arc;

use serde_json::Value;

use crate::frontdoor::{pivot, pivot_replay_state, Built, Inbound, Prepared, PreparedMessages};
use crate::routing::Entry;
use perpetuo_wire::anthropic::messages::{to_chat, tool_map, StreamEncoder};
use perpetuo_wire::lazy_json::LazyJson;
use perpetuo_wire::translation::{Encoder, Translation};
use perpetuo_wire::{Adapter, Call, ProviderKind, StreamState, Unsupported};

/// The request converted to the chat shape once, for the entries that need it, and the
/// headers forwarded to Anthropic's.
pub fn prepare(
    request: &LazyJson,
    version: Option<String>,
    beta: Option<String>,
) -> PreparedMessages {
    let mut note = None;
    let chat = to_chat(request.raw()).map(|(chat, dropped)| {
        note = dropped.note().map(Arc::from);
        chat
    });
    PreparedMessages {
        pivot: pivot(chat),
        version,
        beta,
        note,
    }
}

/// `POST /v1/messages/count_tokens`: the prompt's tokens, counted with the tokenizer.
pub fn count_tokens(request: LazyJson) -> Value {
    let chat = match to_chat(request.raw()) {
        Ok((chat, _)) => chat,
        Err(_) => request.into_value(),
    };
    let mut n = perpetuo_wire::tokens::prompt(&chat);
    if let Some(tools) = chat.get("tools") {
        n = n.saturating_add(perpetuo_wire::tokens::count(&tools.to_string()));
    }
    serde_json::json!({"input_tokens": n})
}

/// The request for one entry: passed through to `anthropic` entries, converted for the
/// others.
pub fn build(
    inbound: &Inbound<'_>,
    entry: &Entry,
    key: &str,
    served: &str,
) -> Result<Built, Unsupported> {
    let adapter = Adapter::for_kind(entry.kind);
    let Prepared::Messages(prepared) = inbound.prepared else {
        return Err(Unsupported("not a Messages request".into()));
    };
    if adapter == Adapter::Anthropic {
        let request = perpetuo_wire::anthropic::passthrough_request(
            &entry.upstream.path_prefix,
            key,
            &inbound.call,
            served,
            prepared.version.as_deref(),
            prepared.beta.as_deref(),
        )?;
        let state = StreamState::passthrough(served);
        return Ok(Built {
            request,
            translation: translation(inbound, adapter, state, served, prepared),
        });
    }
    let (request, state) = inbound.pivot_request(adapter, entry, key, served)?;
    Ok(Built {
        request,
        translation: translation(inbound, adapter, state, served, prepared),
    })
}

/// The translation of an answer from an entry of `adapter`'s format: Anthropic's events
/// as they are, the others' re-encoded.
fn translation(
    inbound: &Inbound<'_>,
    adapter: Adapter,
    state: StreamState,
    served: &str,
    prepared: &PreparedMessages,
) -> Translation {
    if adapter == Adapter::Anthropic {
        return Translation::new(adapter, state, Encoder::AnthropicRaw, served);
    }
    let tools = tool_map(inbound.call.request.raw());
    let encoder = Encoder::Messages(StreamEncoder::new(served).with_tools(tools));
    Translation::new(adapter, state, encoder, served).with_note(prepared.note.clone())
}

/// The translation of a stored answer from an entry of `kind`, as [`build`] makes it for
/// a live one.
pub fn replay(
    inbound: &Inbound<'_>,
    call: &Call<'_>,
    kind: ProviderKind,
    served: &str,
) -> Result<Translation, Unsupported> {
    let Prepared::Messages(prepared) = inbound.prepared else {
        return Err(Unsupported("not a Messages request".into()));
    };
    let adapter = Adapter::for_kind(kind);
    let state = match adapter {
        Adapter::Anthropic => StreamState::passthrough(served),
        _ => pivot_replay_state(adapter, &prepared.pivot, call, served)?,
    };
    Ok(translation(inbound, adapter, state, served, prepared))
}
