//! Workspaces the caller belongs to: list, create (caller becomes owner), get, rename and
//! set the workspace's limits.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use perpetuo_core::db::{self, DbError};
use serde::Deserialize;
use utoipa::ToSchema;

use super::dto::{LimitsDto, ListOf, WorkspaceDto};
use super::member_workspace;
use crate::error::{ApiError, FieldErrors};
use crate::extract::{ApiJson, AuthUser};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
pub struct WorkspaceInput {
    /// 1 to 100 printable characters; required on create and on `PUT`.
    #[schema(required = true, value_type = String, min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// Limits shared by every key of the workspace (`PUT` only; absent: unchanged).
    pub limits: Option<LimitsDto>,
}

fn parse_name(input: &WorkspaceInput) -> Result<String, ApiError> {
    let name = input
        .name
        .as_deref()
        .map(|n| n.trim().to_string())
        .unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::field("name", "is required"));
    }
    perpetuo_core::text::check_name(&name, 100)
        .map_err(|e| ApiError::field("name", e.to_string()))?;
    Ok(name)
}

/// Workspaces the caller is a member of.
#[utoipa::path(get, path = "/workspaces", tag = "workspaces", security(("bearer" = [])),
    responses((status = 200, body = ListOf<WorkspaceDto>), (status = 401, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<ListOf<WorkspaceDto>>, ApiError> {
    let client = state.pool.get().await.map_err(DbError::from)?;
    let rows = db::workspaces::list_for_user(&client, user.id).await?;
    Ok(Json(ListOf {
        data: rows.into_iter().map(Into::into).collect(),
    }))
}

/// Create a workspace; the caller becomes its owner.
#[utoipa::path(post, path = "/workspaces", tag = "workspaces", security(("bearer" = [])), request_body = WorkspaceInput,
    responses((status = 201, body = WorkspaceDto), (status = 400, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<WorkspaceInput>,
) -> Result<(StatusCode, Json<WorkspaceDto>), ApiError> {
    let name = parse_name(&body)?;
    let mut client = state.pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let ws = db::workspaces::create(&tx, &name, user.id).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok((StatusCode::CREATED, Json(ws.into())))
}

/// One workspace.
#[utoipa::path(get, path = "/workspaces/{id}", tag = "workspaces", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = WorkspaceDto), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<WorkspaceDto>, ApiError> {
    let ws = member_workspace(&state, user, &id).await?;
    let client = state.pool.get().await.map_err(DbError::from)?;
    let limits = db::limits::workspace(&client, ws.id).await?;
    let mut dto = WorkspaceDto::from(ws);
    dto.limits = limits.map(Into::into);
    Ok(Json(dto))
}

/// Rename a workspace.
#[utoipa::path(put, path = "/workspaces/{id}", tag = "workspaces", security(("bearer" = [])), request_body = WorkspaceInput,
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = WorkspaceDto), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<WorkspaceInput>,
) -> Result<Json<WorkspaceDto>, ApiError> {
    let ws = member_workspace(&state, user, &id).await?;
    let name = parse_name(&body)?;
    let mut errs = FieldErrors::default();
    let limits = body.limits.as_ref().map(|l| l.parse("limits", &mut errs));
    errs.into_result()?;
    let mut client = state.pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    db::workspaces::rename(&tx, ws.id, &name).await?;
    if let Some(l) = &limits {
        db::limits::set_workspace(&tx, ws.id, l).await?;
    }
    let ws = db::workspaces::get_for_user(&tx, ws.id, user.id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let limits = db::limits::workspace(&tx, ws.id).await?;
    tx.commit().await.map_err(DbError::from)?;
    let mut dto = WorkspaceDto::from(ws);
    dto.limits = limits.map(Into::into);
    Ok(Json(dto))
}
