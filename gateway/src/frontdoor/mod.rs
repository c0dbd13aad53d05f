//! Front doors: the client-facing APIs the gateway speaks. Each is a decoder and an
//! encoder around one pipeline (authenticate → route → attempt with fallback → deliver →
//! record): which routes it answers, where its key comes from, its error shape, and how
//! an answer in OpenAI's chat format (the pivot the provider adapters speak) is encoded
//! back. Front doors never see provider wire formats, except to pass a request through
//! unchanged to a provider of their own format.

pub mod anthropic_messages;
pub mod openai_responses;
#[cfg(test)]
mod tests;

use bytes::Bytes;
use pingora::proxy::Session;

use crate::errors::GatewayError;
use crate::providers::Route;

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
        match self {
            Door::Chat => "chat",
            Door::Embeddings => "embeddings",
            Door::Messages => "messages",
            Door::Responses => "responses",
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
            Door::Messages => anthropic_messages::error_body(err.status, &err.message),
            Door::Chat | Door::Embeddings | Door::Responses => Bytes::from(err.body()),
        }
    }
}

/// The start of a chat request translated from another door: the client's `model`, the
/// converted `messages`, and the fields that only change name (`(from, to)` pairs).
pub(crate) fn chat_request(
    request: &serde_json::Value,
    messages: Vec<serde_json::Value>,
    renamed: &[(&str, &str)],
) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    out.insert(
        "model".into(),
        request.get("model").cloned().unwrap_or_default(),
    );
    out.insert("messages".into(), serde_json::Value::Array(messages));
    for (from, to) in renamed {
        if let Some(v) = request.get(*from).filter(|v| !v.is_null()) {
            out.insert((*to).into(), v.clone());
        }
    }
    out
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
