//! Route handlers, one module per resource: parse → `perpetuo_core::db` → DTO. Who may
//! call each route is `access::RULES`, applied before any handler runs.

pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod dto;
pub mod health;
pub mod invitations;
pub mod logs;
pub mod members;
pub mod provider_keys;
pub mod providers;
pub mod usage;
pub mod workspaces;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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
        .routes(routes!(auth::verify_email))
        .routes(routes!(auth::resend_verification))
        .routes(routes!(auth::request_password_reset))
        .routes(routes!(auth::confirm_password_reset))
        .routes(routes!(invitations::accept))
        .routes(routes!(workspaces::list, workspaces::create))
        .routes(routes!(
            workspaces::get,
            workspaces::update,
            workspaces::patch,
            workspaces::delete
        ))
        .routes(routes!(workspaces::purge_cache))
        .routes(routes!(members::list))
        .routes(routes!(members::update, members::remove))
        .routes(routes!(members::leave))
        .routes(routes!(members::transfer))
        .routes(routes!(invitations::list, invitations::create))
        .routes(routes!(invitations::revoke))
        .routes(routes!(audit::list))
        .routes(routes!(audit::account_events))
        .routes(routes!(providers::list, providers::create))
        .routes(routes!(providers::update, providers::delete))
        .routes(routes!(provider_keys::list, provider_keys::create))
        .routes(routes!(provider_keys::update, provider_keys::delete))
        .routes(routes!(api_keys::list, api_keys::create))
        .routes(routes!(api_keys::revoke))
        .routes(routes!(api_keys::limits))
        .routes(routes!(api_keys::update, api_keys::delete))
        .routes(routes!(logs::list))
        .routes(routes!(usage::summary))
        .routes(routes!(usage::by_provider))
}
