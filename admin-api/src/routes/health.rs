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
    /// Where a request's trace is shown (`TRACE_URL_TEMPLATE`, with `{trace_id}` to fill
    /// in from a log row's `trace_id`); null when none is configured.
    pub trace_url_template: Option<String>,
}

/// Public facts the dashboard needs: the gateway URL for quickstart snippets, whether
/// signup is open, and where a trace is shown.
#[utoipa::path(get, path = "/meta", tag = "meta", responses((status = 200, body = Meta)))]
pub async fn meta(State(state): State<AppState>) -> Json<Meta> {
    Json(Meta {
        gateway_url: state.gateway_url.clone(),
        signup_enabled: state.signup_enabled,
        trace_url_template: state.trace_url_template.clone(),
    })
}
