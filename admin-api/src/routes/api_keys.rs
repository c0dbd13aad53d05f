//! A workspace's Perpetuo API keys: the plaintext is returned once, at creation.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use perpetuo_core::apikey;
use perpetuo_core::db::{self, DbError};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::dto::{parse_time, ApiKeyDto, ListOf};
use super::member_workspace;
use crate::error::{ApiError, FieldErrors};
use crate::extract::{parse_id, ApiJson, AuthUser};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
pub struct ApiKeyInput {
    pub name: Option<String>,
    /// RFC 3339; the key stops working at this time.
    pub expires_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub api_key: ApiKeyDto,
    /// The plaintext key; shown only in this response.
    pub key: String,
}

/// API keys of the workspace, newest first.
#[utoipa::path(get, path = "/workspaces/{id}/api-keys", tag = "api-keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = ListOf<ApiKeyDto>), (status = 404, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<ListOf<ApiKeyDto>>, ApiError> {
    let ws = member_workspace(&state, user, &id).await?;
    let client = state.pool.get().await.map_err(DbError::from)?;
    let rows = db::api_keys::list(&client, ws.id).await?;
    Ok(Json(ListOf {
        data: rows.into_iter().map(Into::into).collect(),
    }))
}

/// Create a key; the response is the only place the plaintext appears.
#[utoipa::path(post, path = "/workspaces/{id}/api-keys", tag = "api-keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id")), request_body = ApiKeyInput,
    responses((status = 201, body = CreatedApiKey), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ApiKeyInput>,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    let ws = member_workspace(&state, user, &id).await?;
    let mut errs = FieldErrors::default();
    let name = body.name.map(|n| n.trim().to_string()).unwrap_or_default();
    if name.is_empty() {
        errs.add("name", "is required");
    } else if let Err(e) = perpetuo_core::text::check_name(&name, 100) {
        errs.add("name", e.to_string());
    }
    let expires_at = match body.expires_at.as_deref() {
        None => None,
        Some(raw) => match parse_time("expires_at", raw) {
            Ok(t) if t <= OffsetDateTime::now_utc() => {
                errs.add("expires_at", "must be in the future");
                None
            }
            Ok(t) => Some(t),
            Err(_) => {
                errs.add("expires_at", "must be an RFC 3339 timestamp");
                None
            }
        },
    };
    errs.into_result()?;
    let key = apikey::generate();
    let client = state.pool.get().await.map_err(DbError::from)?;
    let row = db::api_keys::insert(&client, ws.id, &name, &key, Some(user.id), expires_at).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            api_key: row.into(),
            key: key.plaintext.expose().clone(),
        }),
    ))
}

/// Revoke a key; gateways stop accepting it within a second.
#[utoipa::path(post, path = "/workspaces/{id}/api-keys/{kid}/revoke", tag = "api-keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id"), ("kid" = String, Path, description = "API key id")),
    responses((status = 200, body = ApiKeyDto), (status = 404, body = crate::error::ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, kid)): Path<(String, String)>,
) -> Result<Json<ApiKeyDto>, ApiError> {
    let ws = member_workspace(&state, user, &id).await?;
    let kid = parse_id(&kid)?;
    let client = state.pool.get().await.map_err(DbError::from)?;
    let row = db::api_keys::revoke(&client, ws.id, kid)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(row.into()))
}

/// Delete a key.
#[utoipa::path(delete, path = "/workspaces/{id}/api-keys/{kid}", tag = "api-keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id"), ("kid" = String, Path, description = "API key id")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, kid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let ws = member_workspace(&state, user, &id).await?;
    let kid = parse_id(&kid)?;
    let client = state.pool.get().await.map_err(DbError::from)?;
    if db::api_keys::delete(&client, ws.id, kid).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}
