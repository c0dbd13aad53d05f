//! Extractors: the authenticated user, a database connection, the client address, JSON
//! bodies with our rejection shape, and path ids that answer 404 for anything malformed.
//! The workspace member of a request is `access::Member`.

use std::net::{IpAddr, SocketAddr};

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use perpetuo_core::db::{self, DbError};
use perpetuo_core::forwarded::TrustedProxies;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::{ApiError, AuthError};
use crate::state::AppState;

/// The user a valid bearer token names, and the live session it was issued for.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    pub id: Uuid,
    pub session: Uuid,
}

impl<S> FromRequestParts<S> for AuthUser
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // Already checked by `access::enforce` for this request.
        if let Some(user) = parts.extensions.get::<AuthUser>() {
            return Ok(*user);
        }
        let state = AppState::from_ref(state);
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized(AuthError::MissingToken))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized(AuthError::MissingToken))?;
        let claims = state
            .jwt
            .verify(token)
            .map_err(|_| ApiError::Unauthorized(AuthError::InvalidToken))?;
        // A signature proves who issued the token, not that its session is still open.
        let client = state.pool.get().await.map_err(DbError::from)?;
        if !db::sessions::is_active(&client, claims.sid, claims.sub).await? {
            return Err(ApiError::Unauthorized(AuthError::InvalidToken));
        }
        Ok(AuthUser {
            id: claims.sub,
            session: claims.sid,
        })
    }
}

/// A pooled database connection; 503 when the database cannot be reached.
pub struct Conn(pub db::Client);

impl<S> FromRequestParts<S> for Conn
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let client = state.pool.get().await.map_err(DbError::from)?;
        Ok(Conn(client))
    }
}

/// The client's address: the peer of the TCP connection, or, when that peer is one of
/// `TRUSTED_PROXIES`, the client its `X-Forwarded-For` names
/// ([`TrustedProxies::client_addr`]). Anyone else's header is ignored, since any client
/// can send one. The credential and invitation throttles count per this address, and
/// the audit log records it.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

/// The [`ClientIp`] of a request, `None` when it was served without connection info.
pub fn client_ip(parts: &Parts, trusted: &TrustedProxies) -> Option<IpAddr> {
    let ConnectInfo(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>()?;
    let forwarded = parts
        .headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .map(|v| v.as_bytes());
    Some(trusted.client_addr(peer.ip(), forwarded))
}

const X_FORWARDED_FOR: &str = "x-forwarded-for";

impl<S> FromRequestParts<S> for ClientIp
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        client_ip(parts, &state.trusted_proxies)
            .map(ClientIp)
            .ok_or_else(|| ApiError::internal("served without connection info"))
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
                let text = describe(&e.body_text());
                match unknown_field(&text) {
                    // A typo must never be taken as a setting that worked.
                    Some((field, expected)) => ApiError::field_code(
                        "unknown_field",
                        &field,
                        format!("is not a field of this request; expected {expected}"),
                    ),
                    None => ApiError::BadRequest("invalid_body", text),
                }
            }
            JsonRejection::JsonSyntaxError(_) => {
                ApiError::BadRequest("invalid_json", "request body is not valid JSON".into())
            }
            other => ApiError::BadRequest("invalid_body", describe(&other.body_text())),
        },
    }
}

/// The field serde's "unknown field `x`, expected …" names (cut to a readable length:
/// it is the client's text), and what was expected.
fn unknown_field(text: &str) -> Option<(String, &str)> {
    let (field, rest) = text.strip_prefix("unknown field `")?.split_once('`')?;
    let expected = rest.strip_prefix(", expected ")?;
    let expected = expected
        .rsplit_once(" at line ")
        .map_or(expected, |(e, _)| e);
    let field = match field.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &field[..cut]),
        None => field.to_string(),
    };
    Some((field, expected))
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
