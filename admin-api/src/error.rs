//! The admin API's one error type and its one mapping to HTTP:
//! `{"error":{"code","message","fields"?}}`. Internal details never reach the body; they
//! ride in a response extension for the logging middleware.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use perpetuo_core::db::DbError;
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
    #[error("authentication required")]
    Unauthorized(&'static str),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("service unavailable")]
    Unavailable(String),
    #[error("internal error")]
    Internal(String),
}

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

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::Internal(e.to_string())
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Validation { .. } => (StatusCode::BAD_REQUEST, "validation_error"),
            ApiError::InvalidField { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::BadRequest(code, _) => (StatusCode::BAD_REQUEST, code),
            ApiError::Unauthorized(code) => (StatusCode::UNAUTHORIZED, code),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
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
        if e.is_unavailable() {
            ApiError::Unavailable(e.to_string())
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
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
            ApiError::Unauthorized(code) => (
                match code {
                    "invalid_token" => "token is invalid or expired",
                    "invalid_credentials" => "email or password is incorrect",
                    _ => "authentication required: send Authorization: Bearer <token>",
                }
                .to_string(),
                None,
                None,
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
        resp
    }
}
