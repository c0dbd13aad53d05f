//! Workspaces the caller belongs to: list, create (caller becomes owner), get, rename and
//! set the workspace's limits, routing, response cache and tracing (`PUT`, or `PATCH` for
//! only the fields sent), empty its response cache, delete.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use perpetuo_core::db::{self, DbError};
use serde::Deserialize;
use utoipa::ToSchema;

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::dto::{CacheInput, LimitsDto, ListOf, RoutingInput, TracingDto, WorkspaceDto};
use crate::access::{snapshot, Member};
use crate::error::{ApiError, FieldErrors};
use crate::extract::{ApiJson, AuthUser, Conn};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceInput {
    /// 1 to 100 printable characters; required on create and on `PUT`.
    #[schema(required = true, value_type = String, min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// Limits shared by every key of the workspace (`PUT` only; absent: unchanged).
    pub limits: Option<LimitsDto>,
    /// How each priority's entries share its traffic (`PUT` only; absent: unchanged).
    pub routing: Option<RoutingInput>,
    /// The response cache (`PUT` only; absent: unchanged).
    pub cache: Option<CacheInput>,
    /// What exported trace spans may carry (`PUT` only; absent: unchanged).
    pub tracing: Option<TracingDto>,
}

/// `PATCH /workspaces/{id}`: only the fields sent change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspacePatch {
    /// 1 to 100 printable characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    pub limits: Option<LimitsDto>,
    pub routing: Option<RoutingInput>,
    pub cache: Option<CacheInput>,
    pub tracing: Option<TracingDto>,
}

fn parse_name(name: Option<&str>) -> Result<String, ApiError> {
    let name = name.map(|n| n.trim().to_string()).unwrap_or_default();
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
    Conn(client): Conn,
    user: AuthUser,
) -> Result<Json<ListOf<WorkspaceDto>>, ApiError> {
    let rows = db::workspaces::list_for_user(&client, user.id).await?;
    Ok(Json(ListOf {
        data: rows.into_iter().map(Into::into).collect(),
    }))
}

/// Create a workspace; the caller becomes its owner.
#[utoipa::path(post, path = "/workspaces", tag = "workspaces", security(("bearer" = [])), request_body = WorkspaceInput,
    responses((status = 201, body = WorkspaceDto), (status = 400, body = crate::error::ErrorBody)))]
pub async fn create(
    Conn(mut client): Conn,
    user: AuthUser,
    ApiJson(body): ApiJson<WorkspaceInput>,
) -> Result<(StatusCode, Json<WorkspaceDto>), ApiError> {
    let name = parse_name(body.name.as_deref())?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let ws = db::workspaces::create(&tx, &name, user.id).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok((StatusCode::CREATED, Json(ws.into())))
}

/// One workspace.
#[utoipa::path(get, path = "/workspaces/{id}", tag = "workspaces", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = WorkspaceDto), (status = 404, body = crate::error::ErrorBody)))]
pub async fn get(member: Member, Conn(client): Conn) -> Result<Json<WorkspaceDto>, ApiError> {
    Ok(Json(described(&client, member.workspace.clone()).await?))
}

/// The workspace with its settings.
async fn described(
    db: &impl db::GenericClient,
    ws: perpetuo_core::db::workspaces::Workspace,
) -> Result<WorkspaceDto, ApiError> {
    let id = ws.id;
    let mut dto = WorkspaceDto::from(ws);
    dto.limits = db::limits::workspace(db, id).await?.map(Into::into);
    dto.routing = Some(db::workspaces::routing(db, id).await?.into());
    dto.cache = Some(db::workspaces::cache(db, id).await?.into());
    dto.tracing = Some(db::workspaces::tracing(db, id).await?.into());
    Ok(dto)
}

/// Rename a workspace and set its limits, routing and response cache.
#[utoipa::path(put, path = "/workspaces/{id}", tag = "workspaces", security(("bearer" = [])), request_body = WorkspaceInput,
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = WorkspaceDto), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn update(
    member: Member,
    Conn(mut client): Conn,
    ApiJson(body): ApiJson<WorkspaceInput>,
) -> Result<Json<WorkspaceDto>, ApiError> {
    let name = parse_name(body.name.as_deref())?;
    let patch = WorkspacePatch {
        name: Some(name),
        limits: body.limits,
        routing: body.routing,
        cache: body.cache,
        tracing: body.tracing,
    };
    apply(&member, &mut client, patch).await.map(Json)
}

/// Change only the fields sent: name, limits, routing, cache (and within routing and
/// cache, only the fields sent).
#[utoipa::path(patch, path = "/workspaces/{id}", tag = "workspaces", security(("bearer" = [])), request_body = WorkspacePatch,
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = WorkspaceDto), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn patch(
    member: Member,
    Conn(mut client): Conn,
    ApiJson(body): ApiJson<WorkspacePatch>,
) -> Result<Json<WorkspaceDto>, ApiError> {
    apply(&member, &mut client, body).await.map(Json)
}

/// Validates every field sent, then writes them in one transaction, audited.
async fn apply(
    member: &Member,
    client: &mut db::Client,
    patch: WorkspacePatch,
) -> Result<WorkspaceDto, ApiError> {
    let ws = &member.workspace;
    let name = match patch.name.as_deref() {
        Some(n) => Some(parse_name(Some(n))?),
        None => None,
    };
    let mut errs = FieldErrors::default();
    let limits = patch.limits.as_ref().map(|l| l.parse("limits", &mut errs));
    let tx = client.transaction().await.map_err(DbError::from)?;
    let current_routing = db::workspaces::routing(&tx, ws.id).await?;
    let routing = patch
        .routing
        .as_ref()
        .map(|r| r.merge(current_routing, &mut errs));
    let current_cache = db::workspaces::cache(&tx, ws.id).await?;
    let cache = patch
        .cache
        .as_ref()
        .map(|c| c.merge(current_cache, &mut errs));
    let current_tracing = db::workspaces::tracing(&tx, ws.id).await?;
    let tracing = patch.tracing.as_ref().map(|t| t.merge(current_tracing));
    errs.into_result()?;
    let before = described(&tx, ws.clone()).await?;
    if let Some(name) = &name {
        db::workspaces::rename(&tx, ws.id, name).await?;
    }
    if let Some(l) = &limits {
        db::limits::set_workspace(&tx, ws.id, l).await?;
    }
    if let Some(routing) = routing.filter(|r| *r != current_routing) {
        db::workspaces::set_routing(&tx, ws.id, routing).await?;
    }
    if let Some(cache) = cache.filter(|c| *c != current_cache) {
        db::workspaces::set_cache(&tx, ws.id, cache.mode, cache.ttl_seconds).await?;
    }
    if let Some(tracing) = tracing.filter(|t| *t != current_tracing) {
        db::workspaces::set_tracing(&tx, ws.id, tracing).await?;
    }
    let current = db::workspaces::get_for_user(&tx, ws.id, member.user.id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let dto = described(&tx, current).await?;
    let entry = member.audit(
        "workspace.updated",
        "workspace",
        ws.id,
        snapshot(&before),
        snapshot(&dto),
    );
    db::audit::record(&tx, &entry).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(dto)
}

/// Empty the workspace's response cache in every gateway: the workspace's cache
/// generation, part of every cache key, moves on (gateways hear of it within a second), so
/// no answer stored before is served again; the old entries age out.
#[utoipa::path(delete, path = "/workspaces/{id}/cache", tag = "workspaces", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 204, description = "the cache is empty"),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn purge_cache(member: Member, Conn(mut client): Conn) -> Result<StatusCode, ApiError> {
    let ws = &member.workspace;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let generation = db::workspaces::purge_cache(&tx, ws.id).await?;
    let entry = member.audit(
        "workspace.cache_purged",
        "workspace",
        ws.id,
        None,
        Some(serde_json::json!({ "cache_generation": generation })),
    );
    db::audit::record(&tx, &entry).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedWorkspace {
    pub id: Uuid,
    /// API keys revoked by the deletion; gateways stop accepting them within a second.
    pub revoked_api_keys: u64,
    /// When the workspace's logs, usage counters and audit entries will be dropped.
    #[serde(with = "time::serde::rfc3339")]
    pub data_purged_after: OffsetDateTime,
}

/// Delete the workspace: its API keys are revoked at once, its providers, members and
/// invitations go with it; its logs and usage counters are kept for
/// `DELETED_WORKSPACE_RETENTION_DAYS`, then dropped.
#[utoipa::path(delete, path = "/workspaces/{id}", tag = "workspaces", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = DeletedWorkspace), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    member: Member,
    Conn(mut client): Conn,
) -> Result<Json<DeletedWorkspace>, ApiError> {
    let ws = &member.workspace;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let before = WorkspaceDto::from(ws.clone());
    let revoked = db::workspaces::delete(&tx, ws.id, member.user.id).await?;
    let entry = member.audit(
        "workspace.deleted",
        "workspace",
        ws.id,
        snapshot(&before),
        Some(serde_json::json!({ "revoked_api_keys": revoked })),
    );
    db::audit::record(&tx, &entry).await?;
    tx.commit().await.map_err(DbError::from)?;
    let days = i64::from(state.deleted_retention_days);
    Ok(Json(DeletedWorkspace {
        id: ws.id,
        revoked_api_keys: revoked,
        data_purged_after: OffsetDateTime::now_utc() + time::Duration::days(days),
    }))
}
