//! One closed vocabulary for how a request can end other than with a clean answer: the
//! gateway's own error codes, an attempt's failure, a break mid-answer, a limit's refusal.
//! Each kind's label is the `error_kind` of the log row, the `code` of the client's error
//! and the value of the metric labels that name outcomes — the same strings as ever, which
//! alerts, dashboards and saved log filters depend on (a test pins the set). Nothing
//! compares an outcome as a string.

use perpetuo_wire::translation::Break;

/// Declares the kinds with their labels, and `ALL`.
macro_rules! kinds {
    ($($(#[$doc:meta])* $kind:ident = $label:literal,)+) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorKind {
            $($(#[$doc])* $kind,)+
        }

        impl ErrorKind {
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$kind,)+];

            /// The kind's name in logs, error bodies and metric labels.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorKind::$kind => $label,)+
                }
            }
        }
    };
}

kinds! {
    // The request itself.
    InvalidBody = "invalid_body",
    InvalidJson = "invalid_json",
    JsonTooDeep = "json_too_deep",
    DuplicateField = "duplicate_field",
    InvalidNumber = "invalid_number",
    MissingModel = "missing_model",
    InvalidModel = "invalid_model",
    /// A cache header (`Cache-Control`, `x-perpetuo-cache-ttl`) that cannot be read.
    InvalidCacheHeader = "invalid_cache_header",
    /// No entry can take the request as it is (a door's feature no provider has).
    UnsupportedRequest = "unsupported_request",
    ConversationTooLong = "conversation_too_long",
    NotFound = "not_found",
    MethodNotAllowed = "method_not_allowed",
    /// A WebSocket upgrade: the gateway speaks HTTP only (clients then fall back to it).
    WebsocketNotSupported = "websocket_not_supported",
    ModelNotFound = "model_not_found",
    RequestTooLarge = "request_too_large",
    RequestTimeout = "request_timeout",
    ResponsesQuotaExceeded = "responses_quota_exceeded",
    // Who asks.
    MissingApiKey = "missing_api_key",
    InvalidApiKey = "invalid_api_key",
    TooManyInvalidKeys = "too_many_invalid_keys",
    ClientConcurrencyLimit = "client_concurrency_limit",
    // Limits.
    ModelNotAllowed = "model_not_allowed",
    ModelNotPriced = "model_not_priced",
    ConcurrencyLimit = "concurrency_limit",
    RateLimitRpm = "rate_limit_rpm",
    RateLimitTpm = "rate_limit_tpm",
    BudgetExceeded = "budget_exceeded",
    /// The client's error code for a refused rate (its log row says which).
    RateLimitExceeded = "rate_limit_exceeded",
    /// The client's error code for a used-up budget.
    InsufficientQuota = "insufficient_quota",
    // What the gateway could not reach.
    AuthUnavailable = "auth_unavailable",
    RoutingUnavailable = "routing_unavailable",
    StoreUnavailable = "store_unavailable",
    ProvidersUnavailable = "providers_unavailable",
    // Every attempt failed.
    UpstreamTimeout = "upstream_timeout",
    UpstreamError = "upstream_error",
    // One attempt's failure (an attempt's row, `perpetuo_fallbacks_total{reason}`).
    Connect = "connect",
    Timeout = "timeout",
    Status429 = "status_429",
    ProviderAuth = "provider_auth",
    Status5xx = "status_5xx",
    EarlyEnd = "early_end",
    StreamError = "stream_error",
    UpstreamRefusedByPolicy = "upstream_refused_by_policy",
    // How an answer under way ended.
    ClientDisconnected = "client_disconnected",
    CancelledAtShutdown = "cancelled_at_shutdown",
    AnswerTooLong = "answer_too_long",
    UpstreamEventTooLarge = "upstream_event_too_large",
    UpstreamErrorMidstream = "upstream_error_midstream",
    InternalError = "internal_error",
}

impl ErrorKind {
    /// The status a client gets for this kind as its error; `None` for the kinds that are
    /// not a client's answer (an attempt's failure, a break mid-answer, a limit's detail).
    pub fn status(self) -> Option<u16> {
        use ErrorKind::*;
        Some(match self {
            InvalidBody | InvalidJson | JsonTooDeep | DuplicateField | InvalidNumber
            | MissingModel | InvalidModel | InvalidCacheHeader | UnsupportedRequest
            | ConversationTooLong => 400,
            MissingApiKey | InvalidApiKey => 401,
            ModelNotAllowed | ModelNotPriced => 403,
            NotFound | ModelNotFound => 404,
            MethodNotAllowed => 405,
            WebsocketNotSupported => 426,
            RequestTimeout => 408,
            RequestTooLarge | ResponsesQuotaExceeded => 413,
            TooManyInvalidKeys | ClientConcurrencyLimit | RateLimitExceeded | InsufficientQuota => {
                429
            }
            ClientDisconnected => 499,
            InternalError => 500,
            UpstreamError => 502,
            AuthUnavailable | RoutingUnavailable | StoreUnavailable | ProvidersUnavailable
            | CancelledAtShutdown => 503,
            UpstreamTimeout => 504,
            Connect
            | Timeout
            | Status429
            | ProviderAuth
            | Status5xx
            | EarlyEnd
            | StreamError
            | UpstreamRefusedByPolicy
            | ConcurrencyLimit
            | RateLimitRpm
            | RateLimitTpm
            | BudgetExceeded
            | AnswerTooLong
            | UpstreamEventTooLarge
            | UpstreamErrorMidstream => return None,
        })
    }

    /// OpenAI's error `type` for this kind's answer, which the SDKs map to exceptions.
    pub fn openai_type(self) -> &'static str {
        match self {
            ErrorKind::InsufficientQuota => "insufficient_quota",
            k if k.status() == Some(429) => "rate_limit_error",
            k if k.status().is_some_and(|s| s >= 500) => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// Whether the same request may succeed if sent again later (a limit, a provider or
    /// a dependency of the gateway that may recover), as opposed to one that must change.
    pub fn retryable(self) -> bool {
        use ErrorKind::*;
        matches!(
            self,
            TooManyInvalidKeys
                | ClientConcurrencyLimit
                | RateLimitExceeded
                | ConcurrencyLimit
                | RateLimitRpm
                | RateLimitTpm
                | AuthUnavailable
                | RoutingUnavailable
                | StoreUnavailable
                | ProvidersUnavailable
                | UpstreamTimeout
                | UpstreamError
                | Connect
                | Timeout
                | Status429
                | ProviderAuth
                | Status5xx
                | EarlyEnd
                | StreamError
                | UpstreamErrorMidstream
                | CancelledAtShutdown
                | RequestTimeout
        )
    }

    /// The kinds an attempt can fail with (each a value of
    /// `perpetuo_fallbacks_total{reason}`).
    pub const ATTEMPT_FAILURES: [ErrorKind; 8] = [
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Status429,
        ErrorKind::ProviderAuth,
        ErrorKind::Status5xx,
        ErrorKind::EarlyEnd,
        ErrorKind::StreamError,
        ErrorKind::UpstreamRefusedByPolicy,
    ];

    /// The limits that refuse requests, with their `perpetuo_limit_refusals_total{kind}`
    /// label.
    pub const LIMIT_REFUSALS: [(ErrorKind, &'static str); 6] = [
        (ErrorKind::ConcurrencyLimit, "concurrency"),
        (ErrorKind::RateLimitRpm, "rpm"),
        (ErrorKind::RateLimitTpm, "tpm"),
        (ErrorKind::BudgetExceeded, "budget"),
        (ErrorKind::ModelNotPriced, "unpriced"),
        (ErrorKind::ModelNotAllowed, "model"),
    ];

    /// The `perpetuo_limit_refusals_total{kind}` label of a limit's refusal.
    pub fn limit_label(self) -> Option<&'static str> {
        Self::LIMIT_REFUSALS
            .iter()
            .find(|(k, _)| *k == self)
            .map(|(_, label)| *label)
    }
}

impl From<Break> for ErrorKind {
    fn from(b: Break) -> Self {
        match b {
            Break::TooLong => ErrorKind::AnswerTooLong,
            Break::EventTooLarge => ErrorKind::UpstreamEventTooLarge,
            Break::Midstream => ErrorKind::UpstreamErrorMidstream,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Alerts, Grafana panels and saved log filters name these: a kind may be added, but
    /// none renamed or removed.
    #[test]
    fn the_labels_are_the_ones_logs_and_metrics_have_always_had() {
        let mut labels: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        labels.sort_unstable();
        assert_eq!(
            labels,
            [
                "answer_too_long",
                "auth_unavailable",
                "budget_exceeded",
                "cancelled_at_shutdown",
                "client_concurrency_limit",
                "client_disconnected",
                "concurrency_limit",
                "connect",
                "conversation_too_long",
                "duplicate_field",
                "early_end",
                "insufficient_quota",
                "internal_error",
                "invalid_api_key",
                "invalid_body",
                "invalid_cache_header",
                "invalid_json",
                "invalid_model",
                "invalid_number",
                "json_too_deep",
                "method_not_allowed",
                "missing_api_key",
                "missing_model",
                "model_not_allowed",
                "model_not_found",
                "model_not_priced",
                "not_found",
                "provider_auth",
                "providers_unavailable",
                "rate_limit_exceeded",
                "rate_limit_rpm",
                "rate_limit_tpm",
                "request_timeout",
                "request_too_large",
                "responses_quota_exceeded",
                "routing_unavailable",
                "status_429",
                "status_5xx",
                "store_unavailable",
                "stream_error",
                "timeout",
                "too_many_invalid_keys",
                "unsupported_request",
                "upstream_error",
                "upstream_error_midstream",
                "upstream_event_too_large",
                "upstream_refused_by_policy",
                "upstream_timeout",
                "websocket_not_supported",
            ]
        );
        let labels: Vec<&str> = ErrorKind::LIMIT_REFUSALS.iter().map(|(_, l)| *l).collect();
        assert_eq!(
            labels,
            ["concurrency", "rpm", "tpm", "budget", "unpriced", "model"]
        );
        for b in [Break::TooLong, Break::EventTooLarge, Break::Midstream] {
            assert_eq!(
                ErrorKind::from(b).as_str(),
                b.label(),
                "a break keeps its label"
            );
        }
    }

    #[test]
    fn every_answer_kind_has_its_status_and_openai_type() {
        assert_eq!(ErrorKind::UpstreamError.status(), Some(502));
        assert_eq!(
            ErrorKind::InsufficientQuota.openai_type(),
            "insufficient_quota"
        );
        assert_eq!(
            ErrorKind::RateLimitExceeded.openai_type(),
            "rate_limit_error"
        );
        assert_eq!(ErrorKind::StoreUnavailable.openai_type(), "server_error");
        assert_eq!(
            ErrorKind::InvalidApiKey.openai_type(),
            "invalid_request_error"
        );
        for k in ErrorKind::ATTEMPT_FAILURES {
            assert_eq!(k.status(), None, "{k:?} is an attempt's, not an answer");
            assert!(k.retryable() || k == ErrorKind::UpstreamRefusedByPolicy);
        }
    }
}
