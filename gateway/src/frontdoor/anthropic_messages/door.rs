//! The Messages door around the pipeline: a request prepared once, built per entry
//! (passed through to `anthropic` entries, converted for the others) with the translation
//! of its answer.

use serde_json::Value;

use crate::frontdoor::{pivot, Built, Inbound, Prepared, PreparedMessages};
use crate::routing::Entry;
use perpetuo_wire::anthropic::messages::{to_chat, StreamEncoder};
use perpetuo_wire::lazy_json::LazyJson;
use perpetuo_wire::translation::{Encoder, Translation};
use perpetuo_wire::{Adapter, StreamState, Unsupported};

/// The note on the log row of a converted request whose thinking blocks were dropped.
const THINKING_DROPPED: &str = "thinking blocks dropped in translation";

/// The request converted to the chat shape once, for the entries that need it, and the
/// headers forwarded to Anthropic's.
pub fn prepare(
    request: &LazyJson,
    version: Option<String>,
    beta: Option<String>,
) -> PreparedMessages {
    let mut note = None;
    let chat = to_chat(request.raw()).map(|(chat, dropped)| {
        if dropped.thinking {
            note = Some(THINKING_DROPPED);
        }
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
pub fn build(inbound: &Inbound<'_>, entry: &Entry, served: &str) -> Result<Built, Unsupported> {
    let adapter = Adapter::for_kind(entry.kind);
    let Prepared::Messages(prepared) = inbound.prepared else {
        return Err(Unsupported("not a Messages request".into()));
    };
    if adapter == Adapter::Anthropic {
        let request = perpetuo_wire::anthropic::passthrough_request(
            &entry.upstream.path_prefix,
            entry.key.expose(),
            &inbound.call,
            served,
            prepared.version.as_deref(),
            prepared.beta.as_deref(),
        )?;
        let state = StreamState::passthrough(served);
        return Ok(Built {
            request,
            translation: Translation::new(adapter, state, Encoder::AnthropicRaw, served),
        });
    }
    let (request, state) = inbound.pivot_request(adapter, entry, served)?;
    let encoder = Encoder::Messages(StreamEncoder::new(served));
    Ok(Built {
        request,
        translation: Translation::new(adapter, state, encoder, served).with_note(prepared.note),
    })
}
