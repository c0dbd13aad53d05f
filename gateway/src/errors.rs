//! Gateway errors in OpenAI's shape (`{"error":{"message","type","code"}}`), so SDKs raise
//! the matching exception. This is the only place that maps an error to HTTP.

use serde_json::json;

pub use crate::outcome::ErrorKind;

/// Where an error comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Client,
    Upstream,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    pub status: u16,
    /// OpenAI's `type`.
    pub err_type: &'static str,
    /// OpenAI's `code` (its label); also the `error_kind` of the log row.
    pub code: ErrorKind,
    pub message: String,
    pub source: Source,
    /// `Retry-After`, in seconds, when the client may try again later.
    pub retry_after_s: Option<u64>,
}

impl GatewayError {
    /// An answer of `kind`: its status and OpenAI `type` are the kind's.
    fn new(kind: ErrorKind, message: impl Into<String>, source: Source) -> Self {
        Self {
            status: kind.status().unwrap_or(500),
            err_type: kind.openai_type(),
            code: kind,
            message: message.into(),
            source,
            retry_after_s: None,
        }
    }

    /// One client behind a trusted proxy has too many requests in flight.
    pub fn client_busy() -> Self {
        Self {
            retry_after_s: Some(1),
            ..Self::new(
                ErrorKind::ClientConcurrencyLimit,
                "Too many requests in flight from this client (MAX_REQUESTS_PER_CLIENT).",
                Source::Client,
            )
        }
    }

    pub fn not_found(path: &str) -> Self {
        Self::new(
            ErrorKind::NotFound,
            format!("Unknown route: {path}"),
            Source::Client,
        )
    }

    /// A known route asked with a method it does not answer.
    pub fn method_not_allowed(method: &str, path: &str, allow: &str) -> Self {
        Self::new(
            ErrorKind::MethodNotAllowed,
            format!("{path} does not answer {method}; it answers {allow}."),
            Source::Client,
        )
    }

    /// A WebSocket upgrade of a route the gateway answers over HTTP only. `426 Upgrade
    /// Required` is what makes Codex drop its WebSocket transport for the session and send
    /// the same turn over HTTP at once, without retrying.
    pub fn websocket_not_supported(path: &str) -> Self {
        Self::new(
            ErrorKind::WebsocketNotSupported,
            format!("{path} is served over HTTP only: send the request as a POST."),
            Source::Client,
        )
    }

    pub fn missing_key() -> Self {
        Self::new(
            ErrorKind::MissingApiKey,
            "You didn't provide an API key. Send it as Authorization: Bearer <key>.",
            Source::Client,
        )
    }

    pub fn invalid_key() -> Self {
        Self::new(
            ErrorKind::InvalidApiKey,
            "Incorrect API key provided.",
            Source::Client,
        )
    }

    pub fn auth_unavailable() -> Self {
        Self::new(
            ErrorKind::AuthUnavailable,
            "The key could not be checked right now; retry shortly.",
            Source::Internal,
        )
    }

    /// The client's address sent too many keys the database does not know; lookups that
    /// would reach the database resume when its window ends.
    pub fn too_many_failed_lookups(retry_after_s: u64) -> Self {
        Self {
            retry_after_s: Some(retry_after_s),
            ..Self::new(
                ErrorKind::TooManyInvalidKeys,
                format!(
                    "Too many requests with invalid API keys from this address. \
                     Please try again in {retry_after_s}s."
                ),
                Source::Client,
            )
        }
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            ErrorKind::RequestTooLarge,
            format!("Request body exceeds the limit of {limit} bytes."),
            Source::Client,
        )
    }

    /// The request body did not arrive in time.
    pub fn body_timeout(limit: std::time::Duration) -> Self {
        Self::new(
            ErrorKind::RequestTimeout,
            format!(
                "The request body did not arrive within {} ms.",
                limit.as_millis()
            ),
            Source::Client,
        )
    }

    /// The request itself is wrong: `kind` says how (a 400 kind).
    pub fn bad_request(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::new(kind, message, Source::Client)
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            ErrorKind::ModelNotFound,
            format!("No provider of this workspace serves the model `{model}`."),
            Source::Client,
        )
    }

    pub fn response_not_found(id: &str) -> Self {
        // The id comes from the client: at most its first 256 bytes are echoed.
        let mut end = id.len().min(256);
        while !id.is_char_boundary(end) {
            end -= 1;
        }
        Self::new(
            ErrorKind::NotFound,
            format!("No stored response with id '{}'.", &id[..end]),
            Source::Client,
        )
    }

    /// The workspace's stored responses fill its quota, so this answer could not be
    /// stored. 413, not 429: the room comes back only as stored responses expire or are
    /// deleted, so retrying (which SDKs do by themselves on a 429) does not help; the
    /// client should send `store: false` or delete stored responses.
    pub fn responses_quota_exceeded(quota: u64) -> Self {
        Self::new(
            ErrorKind::ResponsesQuotaExceeded,
            format!(
                "This workspace's stored responses fill its quota of {quota} bytes: send \
                 `store: false`, or delete stored responses (DELETE /v1/responses/{{id}})."
            ),
            Source::Client,
        )
    }

    /// The workspace's provider entries could not be read (database unreachable and
    /// nothing cached).
    pub fn routing_unavailable() -> Self {
        Self::new(
            ErrorKind::RoutingUnavailable,
            "The workspace's providers could not be read right now; retry shortly.",
            Source::Internal,
        )
    }

    /// Stored responses could not be read or written right now.
    pub fn store_unavailable() -> Self {
        Self::new(
            ErrorKind::StoreUnavailable,
            "Stored responses could not be reached right now; retry shortly.",
            Source::Internal,
        )
    }

    pub fn providers_unavailable() -> Self {
        Self::new(
            ErrorKind::ProvidersUnavailable,
            "Every provider for this model is cooling down after failures; retry shortly.",
            Source::Upstream,
        )
    }

    /// Every key of every entry for the model is out of the headroom its provider
    /// reported, until `retry_after_s` from now: no provider was called.
    pub fn providers_exhausted(retry_after_s: u64) -> Self {
        Self {
            retry_after_s: Some(retry_after_s),
            ..Self::new(
                ErrorKind::RateLimitExceeded,
                format!(
                    "Every provider key for this model is out of its rate limit; retry in \
                     {retry_after_s}s."
                ),
                Source::Upstream,
            )
        }
    }

    pub fn rate_limited() -> Self {
        Self::new(
            ErrorKind::RateLimitExceeded,
            "Every provider for this model is rate limited; retry later.",
            Source::Upstream,
        )
    }

    /// A key or workspace limit refused the request; `what` names the limit.
    pub fn limit_exceeded(what: &str, scope: &str, limit: u64, retry_after_s: u64) -> Self {
        Self::new(
            ErrorKind::RateLimitExceeded,
            format!(
                "Rate limit reached for {what} on this {scope}: limit {limit}. \
                 Please try again in {retry_after_s}s."
            ),
            Source::Client,
        )
    }

    /// The key's or workspace's spend budget for the period is used up.
    pub fn budget_exhausted(scope: &str, period: &str) -> Self {
        Self::new(
            ErrorKind::InsufficientQuota,
            format!("The spend budget of this {scope} for the current {period} is used up."),
            Source::Client,
        )
    }

    pub fn model_not_allowed(model: &str) -> Self {
        Self::new(
            ErrorKind::ModelNotAllowed,
            format!("This API key is not allowed to use the model `{model}`."),
            Source::Client,
        )
    }

    /// A budget applies and the model has no price, so it could not be charged.
    pub fn model_not_priced(model: &str) -> Self {
        Self::new(
            ErrorKind::ModelNotPriced,
            format!(
                "The model `{model}` has no price in this gateway's pricing table, and a \
                 spend budget applies to this API key or its workspace, so it cannot be \
                 charged. An operator can price it (PRICING_FILE) or set \
                 UNPRICED_MODEL_USD_PER_MTOK."
            ),
            Source::Client,
        )
    }

    pub fn upstream_timeout() -> Self {
        Self::new(
            ErrorKind::UpstreamTimeout,
            "The provider did not answer in time.",
            Source::Upstream,
        )
    }

    pub fn upstream_failed() -> Self {
        Self::new(
            ErrorKind::UpstreamError,
            "Every provider for this model failed.",
            Source::Upstream,
        )
    }

    pub fn internal() -> Self {
        Self::new(
            ErrorKind::InternalError,
            "Internal error.",
            Source::Internal,
        )
    }

    /// The message followed by the attempts it sums up: `Message. Attempts: detail.`
    pub fn with_attempts(mut self, detail: &str) -> Self {
        if !detail.is_empty() {
            self.message = format!("{} Attempts: {detail}.", self.message);
        }
        self
    }

    pub fn body(&self) -> Vec<u8> {
        json!({"error": {"message": self.message, "type": self.err_type, "code": self.code.as_str(), "param": null}})
            .to_string()
            .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_shape() {
        let v: serde_json::Value =
            serde_json::from_slice(&GatewayError::invalid_key().body()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "invalid_api_key");
        assert!(v["error"]["message"].is_string());
    }
}
