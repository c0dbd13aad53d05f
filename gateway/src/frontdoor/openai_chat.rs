//! OpenAI's Chat Completions (`/v1/chat/completions`) and Embeddings (`/v1/embeddings`):
//! the provider adapters' own pivot format, so the door builds each entry's request with
//! its adapter and passes the adapter's OpenAI-format answer on unchanged.

use super::{Built, Inbound};
use crate::routing::Entry;
use perpetuo_wire::translation::{Encoder, Translation};
use perpetuo_wire::{Adapter, Call, ProviderKind, Unsupported};

/// The request for one entry, translated by its adapter when it is not OpenAI's.
pub fn build(
    inbound: &Inbound<'_>,
    entry: &Entry,
    key: &str,
    served: &str,
) -> Result<Built, Unsupported> {
    let adapter = Adapter::for_kind(entry.kind);
    let (request, state) =
        adapter.build_request(&entry.upstream.path_prefix, key, &inbound.call, served)?;
    Ok(Built {
        request,
        translation: Translation::new(adapter, state, Encoder::Chat, served),
    })
}

/// The translation of a stored answer from an entry of `kind`, as [`build`] makes it for
/// a live one.
pub fn replay(call: &Call<'_>, kind: ProviderKind, served: &str) -> Translation {
    let adapter = Adapter::for_kind(kind);
    let state = adapter.replay_state(call, served);
    Translation::new(adapter, state, Encoder::Chat, served)
}
