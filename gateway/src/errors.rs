//! Gateway errors in OpenAI's shape (`{"error":{"message","type","code"}}`), so SDKs raise
//! the matching exception. This is the only place that maps an error to HTTP.

use serde_json::json;

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
    /// OpenAI's `code`; also the `error_kind` of the log row.
    pub code: &'static str,
    pub message: String,
    pub source: Source,
    /// `Retry-After`, in seconds, when the client may try again later.
    pub retry_after_s: Option<u64>,
}

impl GatewayError {
    fn new(
        status: u16,
        err_type: &'static str,
        code: &'static str,
        message: impl Into<String>,
        source: Source,
    ) -> Self {
        Self {
            status,
            err_type,
            code,
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
                429,
                "rate_limit_error",
                "client_concurrency_limit",
                "Too many requests in flight from this client (MAX_REQUESTS_PER_CLIENT).",
                Source::Client,
            )
        }
    }

    pub fn not_found(path: &str) -> Self {
        Self::new(
            404,
            "invalid_request_error",
            "not_found",
            format!("Unknown route: {path}"),
            Source::Client,
        )
    }

    /// A known route asked with a method it does not answer.
    pub fn method_not_allowed(method: &str, path: &str, allow: &str) -> Self {
        Self::new(
            405,
            "invalid_request_error",
            "method_not_allowed",
            format!("{path} does not answer {method}; it answers {allow}."),
            Source::Client,
        )
    }

    pub fn missing_key() -> Self {
        Self::new(
            401,
            "invalid_request_error",
            "missing_api_key",
            "You didn't provide an API key. Send it as Authorization: Bearer <key>.",
            Source::Client,
        )
    }

    pub fn invalid_key() -> Self {
        Self::new(
            401,
            "invalid_request_error",
            "invalid_api_key",
            "Incorrect API key provided.",
            Source::Client,
        )
    }

    pub fn auth_unavailable() -> Self {
        Self::new(
            503,
            "server_error",
            "auth_unavailable",
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
                429,
                "rate_limit_error",
                "too_many_invalid_keys",
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
            413,
            "invalid_request_error",
            "request_too_large",
            format!("Request body exceeds the limit of {limit} bytes."),
            Source::Client,
        )
    }

    /// The request body did not arrive in time.
    pub fn body_timeout(limit: std::time::Duration) -> Self {
        Self::new(
            408,
            "invalid_request_error",
            "request_timeout",
            format!(
                "The request body did not arrive within {} ms.",
                limit.as_millis()
            ),
            Source::Client,
        )
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, "invalid_request_error", code, message, Source::Client)
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::new(
            404,
            "invalid_request_error",
            "model_not_found",
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
            404,
            "invalid_request_error",
            "not_found",
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
            413,
            "invalid_request_error",
            "responses_quota_exceeded",
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
            503,
            "server_error",
            "routing_unavailable",
            "The workspace's providers could not be read right now; retry shortly.",
            Source::Internal,
        )
    }

    /// Stored responses could not be read or written right now.
    pub fn store_unavailable() -> Self {
        Self::new(
            503,
            "server_error",
            "store_unavailable",
            "Stored responses could not be reached right now; retry shortly.",
            Source::Internal,
        )
    }

    pub fn providers_unavailable() -> Self {
        Self::new(
            503,
            "server_error",
            "providers_unavailable",
            "Every provider for this model is cooling down after failures; retry shortly.",
            Source::Upstream,
        )
    }

    pub fn rate_limited() -> Self {
        Self::new(
            429,
            "rate_limit_error",
            "rate_limit_exceeded",
            "Every provider for this model is rate limited; retry later.",
            Source::Upstream,
        )
    }

    /// A key or workspace limit refused the request; `what` names the limit.
    pub fn limit_exceeded(what: &str, scope: &str, limit: u64, retry_after_s: u64) -> Self {
        Self::new(
            429,
            "rate_limit_error",
            "rate_limit_exceeded",
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
            429,
            "insufficient_quota",
            "insufficient_quota",
            format!("The spend budget of this {scope} for the current {period} is used up."),
            Source::Client,
        )
    }

    pub fn model_not_allowed(model: &str) -> Self {
        Self::new(
            403,
            "invalid_request_error",
            "model_not_allowed",
            format!("This API key is not allowed to use the model `{model}`."),
            Source::Client,
        )
    }

    /// A budget applies and the model has no price, so it could not be charged.
    pub fn model_not_priced(model: &str) -> Self {
        Self::new(
            403,
            "invalid_request_error",
            "model_not_priced",
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
            504,
            "server_error",
            "upstream_timeout",
            "The provider did not answer in time.",
            Source::Upstream,
        )
    }

    pub fn upstream_failed() -> Self {
        Self::new(
            502,
            "server_error",
            "upstream_error",
            "Every provider for this model failed.",
            Source::Upstream,
        )
    }

    pub fn internal() -> Self {
        Self::new(
            500,
            "server_error",
            "internal_error",
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
        json!({"error": {"message": self.message, "type": self.err_type, "code": self.code, "param": null}})
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
