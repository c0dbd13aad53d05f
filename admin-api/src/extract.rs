//! Extractors: the authenticated user, JSON bodies and query strings with our rejection
//! shape, and workspace path ids that answer 404 for anything not a member's.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

/// The user a valid bearer token names.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    pub id: Uuid,
}

impl<S> FromRequestParts<S> for AuthUser
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized("missing_token"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized("missing_token"))?;
        let claims = state
            .jwt
            .verify(token)
            .map_err(|_| ApiError::Unauthorized("invalid_token"))?;
        Ok(AuthUser { id: claims.sub })
    }
}

/// `axum::Json` with errors in our shape.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

fn json_rejection(rej: JsonRejection) -> ApiError {
    match rej.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::UnsupportedMediaType("expected content-type: application/json".into())
        }
        _ => match rej {
            JsonRejection::JsonDataError(e) => {
                ApiError::BadRequest("invalid_body", describe(&e.body_text()))
            }
            JsonRejection::JsonSyntaxError(_) => {
                ApiError::BadRequest("invalid_json", "request body is not valid JSON".into())
            }
            other => ApiError::BadRequest("invalid_body", describe(&other.body_text())),
        },
    }
}

/// Keeps serde's useful part ("missing field `email`") without axum's preamble.
fn describe(text: &str) -> String {
    text.rsplit_once(": ")
        .map(|(_, tail)| tail.to_string())
        .unwrap_or_else(|| text.to_string())
}

/// Parses a path segment as an id; anything else is simply not found.
pub fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound)
}
