//! A workspace's audit log: every change made through the admin API, newest first; and an
//! account's own events outside any workspace (failed logins, password resets).

use std::collections::HashMap;
use std::net::IpAddr;

use axum::extract::Query;
use axum::Json;
use perpetuo_core::db::{self, audit::Entry};
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::dto::ListOf;
use crate::access::Member;
use crate::error::{ApiError, FieldErrors};
use crate::extract::{AuthUser, Conn};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 200;

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryDto {
    pub id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub actor_id: Option<Uuid>,
    pub actor_email: Option<String>,
    #[schema(value_type = Option<String>)]
    pub ip: Option<IpAddr>,
    /// `resource.verb`: provider.created, api_key.revoked, member.invited, …
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    /// Non-secret fields before the change (null for a creation).
    pub before: Option<Value>,
    /// Non-secret fields after the change (null for a deletion).
    pub after: Option<Value>,
}

impl From<Entry> for AuditEntryDto {
    fn from(e: Entry) -> Self {
        Self {
            id: e.id,
            created_at: e.created_at,
            actor_id: e.actor_id,
            actor_email: e.actor_email,
            ip: e.ip,
            action: e.action,
            target_type: e.target_type,
            target_id: e.target_id,
            before: e.before,
            after: e.after,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPageDto {
    pub data: Vec<AuditEntryDto>,
    pub page: u32,
    pub limit: u32,
    pub total: i64,
}

/// The workspace's audit log, newest first.
#[utoipa::path(get, path = "/workspaces/{id}/audit", tag = "audit", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id"),
           ("page" = Option<u32>, Query, description = "page number, from 1"),
           ("limit" = Option<u32>, Query, description = "entries per page, 1 to 200 (default 50)"),
           ("actor" = Option<String>, Query, description = "user id of the actor"),
           ("action" = Option<String>, Query, description = "an action (`member.invited`), or a resource followed by a dot (`member.`)")),
    responses((status = 200, body = AuditPageDto), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn list(
    member: Member,
    Conn(client): Conn,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<AuditPageDto>, ApiError> {
    let mut errs = FieldErrors::default();
    let mut page = 1u32;
    let mut limit = DEFAULT_LIMIT;
    if let Some(p) = q.get("page") {
        match p.parse::<u32>() {
            Ok(p) if (1..=1_000_000).contains(&p) => page = p,
            _ => errs.add("page", "must be an integer of at least 1"),
        }
    }
    if let Some(l) = q.get("limit") {
        match l.parse::<u32>() {
            Ok(l) if (1..=MAX_LIMIT).contains(&l) => limit = l,
            _ => errs.add("limit", format!("must be an integer from 1 to {MAX_LIMIT}")),
        }
    }
    let mut filter = db::audit::Filter::default();
    if let Some(a) = q.get("actor").filter(|a| !a.is_empty()) {
        match Uuid::parse_str(a) {
            Ok(id) => filter.actor = Some(id),
            Err(_) => errs.add("actor", "must be a user id"),
        }
    }
    if let Some(a) = q.get("action").filter(|a| !a.is_empty()) {
        if a.len() > 100
            || !a
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
        {
            errs.add("action", "must be an action name such as member.invited");
        } else {
            filter.action = Some(a.clone());
        }
    }
    errs.into_result()?;
    let offset = i64::from(page - 1) * i64::from(limit);
    let (rows, total) = db::audit::list(
        &client,
        member.workspace.id,
        &filter,
        i64::from(limit),
        offset,
    )
    .await?;
    Ok(Json(AuditPageDto {
        data: rows.into_iter().map(Into::into).collect(),
        page,
        limit,
        total,
    }))
}

/// Events of an account kept outside any workspace.
const ACCOUNT_EVENTS: i64 = 50;

/// The caller's own account events (failed logins, password resets), newest 50.
#[utoipa::path(get, path = "/auth/events", tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = ListOf<AuditEntryDto>), (status = 401, body = crate::error::ErrorBody)))]
pub async fn account_events(
    user: AuthUser,
    Conn(client): Conn,
) -> Result<Json<ListOf<AuditEntryDto>>, ApiError> {
    let rows = db::audit::for_account(&client, user.id, ACCOUNT_EVENTS).await?;
    Ok(Json(ListOf {
        data: rows.into_iter().map(Into::into).collect(),
    }))
}
