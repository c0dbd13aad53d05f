//! Route handlers, one module per resource: parse → `perpetuo_core::db` → DTO.

pub mod api_keys;
pub mod auth;
pub mod dto;
pub mod health;
pub mod logs;
pub mod providers;
pub mod usage;
pub mod workspaces;

use perpetuo_core::db::workspaces::Workspace;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::extract::{parse_id, AuthUser};
use crate::state::AppState;

/// Every API route, documented from the same handlers that serve it.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::meta))
        .routes(routes!(auth::signup))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::change_password))
        .routes(routes!(auth::me))
        .routes(routes!(workspaces::list, workspaces::create))
        .routes(routes!(workspaces::get, workspaces::update))
        .routes(routes!(providers::list, providers::create))
        .routes(routes!(providers::update, providers::delete))
        .routes(routes!(api_keys::list, api_keys::create))
        .routes(routes!(api_keys::revoke))
        .routes(routes!(api_keys::limits))
        .routes(routes!(api_keys::update, api_keys::delete))
        .routes(routes!(logs::list))
        .routes(routes!(usage::summary))
        .routes(routes!(usage::by_provider))
}

/// The workspace if the user is a member; 404 otherwise, revealing nothing.
pub async fn member_workspace(
    state: &AppState,
    user: AuthUser,
    raw_id: &str,
) -> Result<Workspace, ApiError> {
    let id = parse_id(raw_id)?;
    let client = state
        .pool
        .get()
        .await
        .map_err(perpetuo_core::db::DbError::from)?;
    perpetuo_core::db::workspaces::get_for_user(&client, id, user.id)
        .await?
        .ok_or(ApiError::NotFound)
}
