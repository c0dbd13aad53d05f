//! Front doors: the client-facing APIs the gateway speaks. Each is a decoder and an
//! encoder around one pipeline (authenticate → route → limit → prepare → attempt with
//! fallback → deliver → record, in `crate::pipeline`): which routes it answers, where its
//! key comes from, its error shape, how its request is prepared once ([`prepare`]) and
//! built for one entry ([`Door::build`]), and how the answer is encoded back (its
//! [`perpetuo_wire::translation::Encoder`]). Front doors never see provider wire formats, except to pass a request
//! through unchanged to a provider of their own format; the provider adapters speak
//! OpenAI's chat format as the pivot.
//!
//! A new front door is one module here: its variant of [`Door`], its `prepare` arm and its
//! `build`, returning its own encoder.

pub mod anthropic_messages;
pub mod models;
pub mod openai_chat;
pub mod openai_responses;

use std::sync::Arc;

use bytes::Bytes;
use pingora::proxy::Session;
use serde_json::Value;

use crate::auth::AuthedKey;
use crate::errors::GatewayError;
use crate::routing::Entry;
use crate::stored_responses::{ResponseStore, ToStore};
use perpetuo_core::provider::ProviderKind;
use perpetuo_wire::lazy_json::LazyJson;
use perpetuo_wire::openai::responses::request::PROMPT_CACHE_KEY;
use perpetuo_wire::translation::Translation;
use perpetuo_wire::{Adapter, Call, Route, StreamState, Unsupported, UpstreamRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// OpenAI Chat Completions, `POST /v1/chat/completions`.
    Chat,
    /// OpenAI Embeddings, `POST /v1/embeddings`.
    Embeddings,
    /// Anthropic Messages, `POST /v1/messages`.
    Messages,
    /// OpenAI Responses, `POST /v1/responses`.
    Responses,
}

impl Door {
    /// The door for a proxied route.
    pub fn for_route(method: &str, path: &str) -> Option<Self> {
        match (method, path) {
            ("POST", "/v1/chat/completions") => Some(Door::Chat),
            ("POST", "/v1/embeddings") => Some(Door::Embeddings),
            ("POST", "/v1/messages") => Some(Door::Messages),
            ("POST", "/v1/responses") => Some(Door::Responses),
            _ => None,
        }
    }

    /// The `route` of log rows and metrics.
    pub fn label(self) -> &'static str {
        self.route().as_str()
    }

    /// The door as the log row's `route` names it.
    pub fn route(self) -> perpetuo_core::db::logs::Route {
        use perpetuo_core::db::logs::Route;
        match self {
            Door::Chat => Route::Chat,
            Door::Embeddings => Route::Embeddings,
            Door::Messages => Route::Messages,
            Door::Responses => Route::Responses,
        }
    }

    /// What the provider adapters are asked to do (in OpenAI's terms).
    pub fn operation(self) -> Route {
        match self {
            Door::Chat | Door::Messages | Door::Responses => Route::Chat,
            Door::Embeddings => Route::Embeddings,
        }
    }

    /// Whether answers may stream.
    pub fn streams(self) -> bool {
        self != Door::Embeddings
    }

    /// A gateway error in this door's shape.
    pub fn error_body(self, err: &GatewayError) -> Bytes {
        match self {
            Door::Messages => {
                perpetuo_wire::anthropic::messages::error_body(err.status, &err.message)
            }
            Door::Chat | Door::Embeddings | Door::Responses => Bytes::from(err.body()),
        }
    }

    /// The request for one entry sent with `key` (`""`: none), its stream state and how
    /// its answer is encoded.
    pub fn build(
        self,
        inbound: &Inbound<'_>,
        entry: &Entry,
        key: &str,
        served: &str,
    ) -> Result<Built, Unsupported> {
        match self {
            Door::Chat | Door::Embeddings => openai_chat::build(inbound, entry, key, served),
            Door::Messages => anthropic_messages::door::build(inbound, entry, key, served),
            Door::Responses => openai_responses::door::build(inbound, entry, key, served),
        }
    }
}

impl Door {
    /// The translation of a stored answer from an entry of `kind`, for this request as
    /// asked (`stream`), as [`Door::build`] makes it for a live answer.
    pub fn replay(
        self,
        inbound: &Inbound<'_>,
        kind: ProviderKind,
        served: &str,
        stream: bool,
    ) -> Result<Translation, Unsupported> {
        let call = Call {
            stream,
            ..inbound.call
        };
        match self {
            Door::Chat | Door::Embeddings => Ok(openai_chat::replay(&call, kind, served)),
            Door::Messages => anthropic_messages::door::replay(inbound, &call, kind, served),
            Door::Responses => openai_responses::door::replay(inbound, &call, kind, served),
        }
    }
}

/// A request built for one entry: what is sent, and the translation of its answer.
pub struct Built {
    pub request: UpstreamRequest,
    pub translation: Translation,
}

/// The request in the OpenAI chat shape (and its bytes), for a door that does not speak it
/// itself: converted once, and refused per entry only where an entry needs it.
pub type Pivot = Result<Arc<LazyJson>, Unsupported>;

/// What a door prepared once per request, for every attempt: one variant per door.
pub enum Prepared {
    /// Chat completions and embeddings: the request goes as it is.
    AsIs,
    Messages(PreparedMessages),
    Responses(PreparedResponses),
}

/// The Messages door's request.
pub struct PreparedMessages {
    /// For entries that are not Anthropic's.
    pub pivot: Pivot,
    /// Anthropic's version and beta headers, forwarded to anthropic entries.
    pub version: Option<String>,
    pub beta: Option<String>,
    /// What the conversion dropped, for the log row.
    pub note: Option<Arc<str>>,
}

/// The Responses door's request.
pub struct PreparedResponses {
    /// After the stored conversation it continues, for entries that are not OpenAI's.
    pub pivot: Pivot,
    /// The new response's id.
    pub response_id: String,
    /// What to store with the answer (`store` not false).
    pub to_store: Option<ToStore>,
    /// What the conversion left out, for the log row's note.
    pub dropped: Vec<&'static str>,
}

impl Prepared {
    /// The request as chat messages (and its bytes), for estimating its tokens.
    pub fn pivot(&self) -> Option<&Arc<LazyJson>> {
        self.pivot_result().and_then(|p| p.as_ref().ok())
    }

    fn pivot_result(&self) -> Option<&Pivot> {
        match self {
            Prepared::AsIs => None,
            Prepared::Messages(m) => Some(&m.pivot),
            Prepared::Responses(r) => Some(&r.pivot),
        }
    }

    /// What the Responses door stores with the answer.
    pub fn to_store(&self) -> Option<&ToStore> {
        match self {
            Prepared::Responses(r) => r.to_store.as_ref(),
            _ => None,
        }
    }
}

/// Decodes a door's request once: whatever every attempt shares (conversions, stored
/// history, forwarded headers). Runs after the request's limits: a request refused by
/// them never reads a stored conversation.
pub async fn prepare(
    door: Door,
    session: &Session,
    request: &LazyJson,
    key: &AuthedKey,
    store: &ResponseStore,
) -> Result<Prepared, GatewayError> {
    let header = |name: &str| {
        session
            .get_header(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let prepared = match door {
        Door::Chat | Door::Embeddings => Prepared::AsIs,
        Door::Messages => Prepared::Messages(anthropic_messages::door::prepare(
            request,
            header("anthropic-version"),
            header("anthropic-beta"),
        )),
        Door::Responses => {
            // Boxed: database reads that chat requests should not carry in their future.
            let storing = openai_responses::door::storing(request);
            let continued =
                Box::pin(store.open(key, request, storing, request.raw().len())).await?;
            Prepared::Responses(openai_responses::door::prepare(request, continued))
        }
    };
    Ok(prepared)
}

/// The pivot chat request and its bytes, from a door's conversion.
pub(crate) fn pivot(chat: Result<Value, Unsupported>) -> Pivot {
    chat.and_then(|chat| {
        let raw = serde_json::to_vec(&chat).map_err(|e| Unsupported(e.to_string()))?;
        Ok(Arc::new(LazyJson::parsed(chat, Bytes::from(raw))))
    })
}

/// The stream state a stored answer from an entry of `adapter`'s format is replayed with,
/// on a door whose request that entry got as the chat `pivot`.
pub(crate) fn pivot_replay_state(
    adapter: Adapter,
    pivot: &Pivot,
    call: &Call<'_>,
    served: &str,
) -> Result<StreamState, Unsupported> {
    let chat = pivot.as_ref().map_err(Clone::clone)?;
    let call = Call {
        request: chat,
        ..*call
    };
    Ok(adapter.replay_state(&call, served))
}

/// What the client asked for, as every attempt needs it.
pub struct Inbound<'a> {
    pub door: Door,
    pub call: Call<'a>,
    pub prepared: &'a Prepared,
    /// The request's numbers (completion cap, choices), for its token estimate.
    pub numbers: perpetuo_wire::lazy_json::Numbers,
}

impl Inbound<'_> {
    /// The tokens the request is expected to use (prompt and completion), as the limits
    /// estimate them.
    pub fn estimated_tokens(&self, pricing: &perpetuo_core::pricing::Pricing) -> u64 {
        let request = self.call.request;
        crate::limits::Estimate::of(request, self.numbers, None, pricing).tokens
    }

    /// The door's request in the OpenAI chat shape, built for one entry by its adapter.
    pub fn pivot_request(
        &self,
        adapter: Adapter,
        entry: &Entry,
        key: &str,
        served: &str,
    ) -> Result<(UpstreamRequest, StreamState), Unsupported> {
        let chat = match self.prepared.pivot_result() {
            Some(Ok(chat)) => chat,
            Some(Err(e)) => return Err(e.clone()),
            None => return Err(Unsupported("no request".into())),
        };
        // OpenAI's cache hint is OpenAI's own: a compatible server may refuse it.
        let stripped;
        let chat = match chat.get(PROMPT_CACHE_KEY) {
            Some(_) if entry.kind == ProviderKind::OpenaiCompatible => {
                let mut value = Value::clone(chat);
                if let Some(obj) = value.as_object_mut() {
                    obj.remove(PROMPT_CACHE_KEY);
                }
                stripped = pivot(Ok(value))?;
                &stripped
            }
            _ => chat,
        };
        let call = Call {
            request: chat,
            ..self.call
        };
        adapter.build_request(&entry.upstream.path_prefix, key, &call, served)
    }
}

/// The client's Perpetuo key: `Authorization: Bearer` everywhere, and Anthropic's
/// `x-api-key` as well on doors that Anthropic clients use.
pub fn credentials(session: &Session, door: Option<Door>) -> Option<&str> {
    let header = |name: &str| session.get_header(name).and_then(|v| v.to_str().ok());
    let bearer = header("authorization").and_then(|v| {
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .map(str::trim)
    });
    match door {
        Some(Door::Messages) => bearer.or_else(|| header("x-api-key").map(str::trim)),
        _ => bearer,
    }
    .filter(|k| !k.is_empty())
}
