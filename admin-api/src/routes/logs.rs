//! Request logs of a workspace: filtered, paginated, newest first.

use std::collections::HashMap;

use axum::extract::Query;
use axum::Json;
use perpetuo_core::db;
use perpetuo_core::db::logs::{Attempt, LogQuery, LogRecord};
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::dto::{parse_time, usd};
use crate::access::Member;
use crate::error::{ApiError, FieldErrors};
use crate::extract::Conn;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptDto {
    pub provider_id: Uuid,
    pub provider_name: String,
    /// Upstream status; null when no response arrived (connect error, timeout).
    pub status: Option<u16>,
    pub latency_ms: u32,
    pub error_kind: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogDto {
    /// The request id (also sent to the client as `x-request-id`).
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub api_key_id: Option<Uuid>,
    pub provider_id: Option<Uuid>,
    pub provider_name: Option<String>,
    pub provider_kind: Option<String>,
    pub route: String,
    pub model_requested: Option<String>,
    pub model_served: Option<String>,
    pub status: i16,
    pub error_kind: Option<String>,
    pub streamed: bool,
    pub prompt_tokens: i32,
    pub completion_tokens: i32,
    pub total_tokens: i32,
    /// USD; null when the model has no known price.
    pub cost_usd: Option<f64>,
    /// provider, estimated or none.
    pub usage_source: String,
    pub latency_ms: i32,
    pub ttfb_ms: Option<i32>,
    pub attempts: Vec<AttemptDto>,
    /// What the gateway changed in the request (e.g. dropped thinking blocks), if anything.
    pub note: Option<String>,
}

impl From<Attempt> for AttemptDto {
    fn from(a: Attempt) -> Self {
        Self {
            provider_id: a.provider_id,
            provider_name: a.provider_name,
            status: a.status,
            latency_ms: a.latency_ms,
            error_kind: a.error_kind,
        }
    }
}

impl From<LogRecord> for LogDto {
    fn from(r: LogRecord) -> Self {
        Self {
            id: r.id,
            created_at: r.created_at,
            api_key_id: r.api_key_id,
            provider_id: r.provider_id,
            provider_name: r.provider_name,
            provider_kind: r.provider_kind,
            note: r.note,
            route: r.route,
            model_requested: r.model_requested,
            model_served: r.model_served,
            status: r.status,
            error_kind: r.error_kind,
            streamed: r.streamed,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            total_tokens: r.total_tokens,
            cost_usd: r.cost_nusd.map(usd),
            usage_source: r.usage_source.as_str().to_string(),
            latency_ms: r.latency_ms,
            ttfb_ms: r.ttfb_ms,
            attempts: r.attempts.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogPageDto {
    pub data: Vec<LogDto>,
    pub page: u32,
    pub limit: u32,
    /// Rows matching the filters, over all pages.
    pub total: i64,
}

fn parse_query(workspace_id: Uuid, q: &HashMap<String, String>) -> Result<LogQuery, ApiError> {
    let mut errs = FieldErrors::default();
    let mut out = LogQuery {
        workspace_id,
        page: 1,
        limit: DEFAULT_LIMIT,
        ..Default::default()
    };
    if let Some(p) = q.get("page") {
        match p.parse::<u32>() {
            Ok(p) if (1..=1_000_000).contains(&p) => out.page = p,
            _ => errs.add("page", "must be an integer of at least 1"),
        }
    }
    if let Some(l) = q.get("limit") {
        match l.parse::<u32>() {
            Ok(l) if (1..=MAX_LIMIT).contains(&l) => out.limit = l,
            _ => errs.add("limit", format!("must be an integer from 1 to {MAX_LIMIT}")),
        }
    }
    if let Some(p) = q.get("provider").filter(|p| !p.is_empty()) {
        match Uuid::parse_str(p) {
            Ok(id) => out.provider_id = Some(id),
            Err(_) => errs.add("provider", "must be a provider id"),
        }
    }
    out.model = q.get("model").filter(|m| !m.is_empty()).cloned();
    // PostgreSQL refuses NUL in text, so no logged model holds one: 400, not a failed query.
    if out.model.as_deref().is_some_and(|m| m.contains('\0')) {
        errs.add("model", "must not contain NUL characters");
    }
    if let Some(s) = q.get("status").filter(|s| !s.is_empty()) {
        match s.parse::<i16>() {
            Ok(s) if (100..=599).contains(&s) => out.status = Some(s),
            _ => errs.add("status", "must be an HTTP status code"),
        }
    }
    for (field, slot) in [("from", &mut out.from), ("to", &mut out.to)] {
        if let Some(raw) = q.get(field).filter(|s| !s.is_empty()) {
            match parse_time(field, raw) {
                Ok(t) => *slot = Some(t),
                Err(_) => errs.add(field, "must be an RFC 3339 timestamp"),
            }
        }
    }
    if let (Some(f), Some(t)) = (out.from, out.to) {
        if f >= t {
            errs.add("from", "must be before to");
        }
    }
    errs.into_result()?;
    Ok(out)
}

/// Logs of the workspace, newest first.
#[utoipa::path(get, path = "/workspaces/{id}/logs", tag = "logs", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id"),
           ("page" = Option<u32>, Query, description = "page number, from 1"),
           ("limit" = Option<u32>, Query, description = "rows per page, 1 to 200 (default 50)"),
           ("provider" = Option<String>, Query, description = "provider entry id"),
           ("model" = Option<String>, Query, description = "requested model"),
           ("status" = Option<i16>, Query, description = "HTTP status sent to the client"),
           ("from" = Option<String>, Query, description = "RFC 3339, inclusive"),
           ("to" = Option<String>, Query, description = "RFC 3339, exclusive")),
    responses((status = 200, body = LogPageDto), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn list(
    Conn(client): Conn,
    member: Member,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<LogPageDto>, ApiError> {
    let ws = &member.workspace;
    let query = parse_query(ws.id, &q)?;
    let page = db::logs::list(&client, &query).await?;
    Ok(Json(LogPageDto {
        data: page.rows.into_iter().map(Into::into).collect(),
        page: query.page,
        limit: query.limit,
        total: page.total,
    }))
}
