//! The admin API's one error type and its one mapping to HTTP:
//! `{"error":{"code","message","fields"?}}`. Internal details never reach the body; they
//! ride in a response extension for the logging middleware.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use perpetuo_core::db::DbError;
use perpetuo_core::password::PasswordError;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Validation {
        message: String,
        fields: BTreeMap<String, String>,
    },
    /// A validation failure with its own code, for callers that must tell it apart.
    #[error("{message}")]
    InvalidField {
        code: &'static str,
        message: String,
        fields: BTreeMap<String, String>,
    },
    #[error("{1}")]
    BadRequest(&'static str, String),
    #[error("{}", .0.message())]
    Unauthorized(AuthError),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    /// A conflict with its own code, e.g. removing the last owner.
    #[error("{message}")]
    ConflictCode { code: &'static str, message: String },
    /// Not allowed, with its own code: a role too low, an unverified email, signup closed
    /// by the operator.
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("too many attempts; try again later")]
    RateLimited { retry_after: Duration },
    #[error("the server is busy; try again shortly")]
    Busy { retry_after: Duration },
    #[error("service unavailable")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

/// Why a request was not authenticated; each has its own code and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    MissingToken,
    InvalidToken,
    InvalidCredentials,
    InvalidRefreshToken,
}

impl AuthError {
    pub fn code(self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::InvalidToken => "invalid_token",
            AuthError::InvalidCredentials => "invalid_credentials",
            AuthError::InvalidRefreshToken => "invalid_refresh_token",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            AuthError::MissingToken => {
                "authentication required: send Authorization: Bearer <token>"
            }
            AuthError::InvalidToken => "token is invalid, expired or revoked",
            AuthError::InvalidCredentials => "email or password is incorrect",
            AuthError::InvalidRefreshToken => "refresh token is invalid, expired or revoked",
        }
    }
}

/// How long a client is told to wait when password hashing is saturated.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, String>>,
}

/// Set on responses whose cause must be logged (never sent to the client).
#[derive(Debug, Clone)]
pub struct LoggedCause(pub String);

impl ApiError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut fields = BTreeMap::new();
        fields.insert(field.to_string(), message.clone());
        ApiError::Validation {
            message: format!("{field}: {message}"),
            fields,
        }
    }

    /// A 400 with `code` and one field error.
    pub fn field_code(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        let mut fields = BTreeMap::new();
        fields.insert(field.to_string(), message.clone());
        ApiError::InvalidField {
            code,
            message: format!("{field}: {message}"),
            fields,
        }
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::Forbidden {
            code,
            message: message.into(),
        }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::ConflictCode {
            code,
            message: message.into(),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::Internal(e.to_string())
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Validation { .. } => (StatusCode::BAD_REQUEST, "validation_error"),
            ApiError::InvalidField { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::BadRequest(code, _) => (StatusCode::BAD_REQUEST, code),
            ApiError::Unauthorized(why) => (StatusCode::UNAUTHORIZED, why.code()),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::ConflictCode { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::Forbidden { code, .. } => (StatusCode::FORBIDDEN, code),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

/// Collects field errors from a validation pass.
#[derive(Debug, Default)]
pub struct FieldErrors(BTreeMap<String, String>);

impl FieldErrors {
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0
            .entry(field.to_string())
            .or_insert_with(|| message.into());
    }

    pub fn into_result(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let message = self
            .0
            .iter()
            .map(|(f, m)| format!("{f}: {m}"))
            .collect::<Vec<_>>()
            .join("; ");
        Err(ApiError::Validation {
            message,
            fields: self.0,
        })
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        // A statement cancelled by the statement timeout: the database is too busy (or a
        // lock is held) to answer in time, which a retry later may not meet.
        if e.is_unavailable() || matches!(e, DbError::StatementTimeout) {
            ApiError::Unavailable(e.to_string())
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl From<PasswordError> for ApiError {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::Busy => ApiError::Busy {
                retry_after: BUSY_RETRY_AFTER,
            },
            other => ApiError::internal(other),
        }
    }
}

/// `Retry-After` in whole seconds, rounded up and at least 1.
fn retry_after_header(wait: Duration) -> HeaderValue {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let retry_after = match &self {
            ApiError::RateLimited { retry_after } | ApiError::Busy { retry_after } => {
                Some(retry_after_header(*retry_after))
            }
            _ => None,
        };
        let (message, fields, cause) = match self {
            ApiError::Validation { message, fields }
            | ApiError::InvalidField {
                message, fields, ..
            } => (message, Some(fields), None),
            ApiError::Internal(cause) => ("internal error".to_string(), None, Some(cause)),
            ApiError::Unavailable(cause) => (
                "service temporarily unavailable".to_string(),
                None,
                Some(cause),
            ),
            other => (other.to_string(), None, None),
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message,
                fields,
            },
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(cause) = cause {
            resp.extensions_mut().insert(LoggedCause(cause));
        }
        if let Some(wait) = retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, wait);
        }
        resp
    }
}
