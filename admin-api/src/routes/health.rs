//! `GET /healthz` (database reachable) and `GET /meta` (what the dashboard needs to know).

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// Health of the admin API and its database.
#[utoipa::path(get, path = "/healthz", tag = "meta",
    responses((status = 200, body = Health), (status = 503, body = crate::error::ErrorBody)))]
pub async fn healthz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    perpetuo_core::db::ping(&state.pool)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Json(Health {
        status: "ok".into(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Meta {
    /// Base URL of the OpenAI-compatible gateway (clients use `{gateway_url}/v1`).
    pub gateway_url: String,
    /// Whether `POST /auth/signup` creates accounts (`SIGNUP_ENABLED`); when false the
    /// dashboard hides its signup form.
    pub signup_enabled: bool,
}

/// Public facts the dashboard needs: the gateway URL for quickstart snippets and whether
/// signup is open.
#[utoipa::path(get, path = "/meta", tag = "meta", responses((status = 200, body = Meta)))]
pub async fn meta(State(state): State<AppState>) -> Json<Meta> {
    Json(Meta {
        gateway_url: state.gateway_url.clone(),
        signup_enabled: state.signup_enabled,
    })
}
