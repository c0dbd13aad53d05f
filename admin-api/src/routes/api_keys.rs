//! A workspace's Perpetuo API keys: the plaintext is returned once, at creation.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use perpetuo_core::apikey;
use perpetuo_core::db::{self, DbError};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use perpetuo_core::db::limits::{Governed, KeySettings, SetBy};
use perpetuo_core::email::Email;

use super::dto::{parse_time, usd, ApiKeyDto, LimitsDto};
use crate::access::{insufficient, snapshot, Member};
use crate::error::{ApiError, FieldErrors};
use crate::extract::{parse_id, ApiJson, Conn};
use crate::state::AppState;
use perpetuo_core::db::api_keys::{ApiKey, KeyCacheMode, KeyPosition};
use perpetuo_core::db::workspaces::Role;

/// A new key: its name and its settings (those of [`KeySettingsInput`]). The fields are
/// spelled out rather than flattened so that unknown fields are refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyInput {
    /// 1 to 100 printable characters.
    #[schema(required = true, value_type = String, min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// RFC 3339; the key stops working at this time (null: never).
    pub expires_at: Option<String>,
    pub limits: Option<LimitsDto>,
    /// Exact model names and `prefix*` patterns; empty or absent allows every model.
    pub allowed_models: Option<Vec<String>>,
    /// A label shown with the key's logs.
    pub label: Option<String>,
    /// The email of the key's owner.
    pub owner_email: Option<String>,
    /// The response-cache mode of requests through this key: `inherit` (default: the
    /// workspace's), `off`, `on` or `opt_in`.
    #[schema(pattern = "^(inherit|off|on|opt_in)$")]
    pub cache_mode: Option<String>,
}

impl ApiKeyInput {
    /// The name, and the settings a later `PUT` may change.
    fn split(self) -> (Option<String>, KeySettingsInput) {
        let settings = KeySettingsInput {
            expires_at: self.expires_at,
            limits: self.limits,
            allowed_models: self.allowed_models,
            label: self.label,
            owner_email: self.owner_email,
            cache_mode: self.cache_mode,
        };
        (self.name, settings)
    }
}

/// What can be set on a key at creation and changed later (`PUT` replaces all of it).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeySettingsInput {
    /// RFC 3339; the key stops working at this time (null: never).
    pub expires_at: Option<String>,
    pub limits: Option<LimitsDto>,
    /// Exact model names and `prefix*` patterns; empty or absent allows every model.
    pub allowed_models: Option<Vec<String>>,
    /// A label shown with the key's logs.
    pub label: Option<String>,
    /// The email of the key's owner.
    pub owner_email: Option<String>,
    /// The response-cache mode of requests through this key: `inherit` (default: the
    /// workspace's), `off`, `on` or `opt_in`.
    #[schema(pattern = "^(inherit|off|on|opt_in)$")]
    pub cache_mode: Option<String>,
}

/// Most model patterns on one key.
const MAX_ALLOWED_MODELS: usize = 100;

impl KeySettingsInput {
    fn parse(&self, errs: &mut FieldErrors) -> KeySettings {
        let expires_at = match self.expires_at.as_deref() {
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
        let limits = self
            .limits
            .as_ref()
            .map(|l| l.parse("limits", errs))
            .unwrap_or_default();
        let allowed_models: Vec<String> = self
            .allowed_models
            .iter()
            .flatten()
            .map(|m| m.trim().to_string())
            .collect();
        if allowed_models.len() > MAX_ALLOWED_MODELS {
            errs.add(
                "allowed_models",
                format!("at most {MAX_ALLOWED_MODELS} entries"),
            );
        }
        for m in &allowed_models {
            let body = m.strip_suffix('*').unwrap_or(m);
            if m.is_empty()
                || body.contains('*')
                || perpetuo_core::text::check_name(m, 200).is_err()
            {
                errs.add(
                    "allowed_models",
                    "each entry is a model name or a prefix followed by one trailing `*`",
                );
            }
        }
        let label = self
            .label
            .as_deref()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string);
        if let Some(l) = &label {
            if let Err(e) = perpetuo_core::text::check_name(l, 100) {
                errs.add("label", e.to_string());
            }
        }
        let owner_email = match self.owner_email.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(raw) => match Email::parse(raw) {
                Ok(e) => Some(e.as_str().to_string()),
                Err(e) => {
                    errs.add("owner_email", e.to_string());
                    None
                }
            },
        };
        let cache_mode = match self.cache_mode.as_deref() {
            None => KeyCacheMode::Inherit,
            Some(m) => KeyCacheMode::parse(m.trim()).unwrap_or_else(|| {
                errs.add("cache_mode", "must be inherit, off, on or opt_in");
                KeyCacheMode::Inherit
            }),
        };
        KeySettings {
            limits,
            allowed_models,
            expires_at,
            label,
            owner_email,
            cache_mode,
        }
    }
}

/// Members manage the keys they created; admins and owners manage every key.
fn may_manage(member: &Member, key: &ApiKey) -> Result<(), ApiError> {
    if member.role() >= Role::Admin || key.created_by == Some(member.user.id) {
        Ok(())
    } else {
        Err(insufficient(Role::Admin, member.role()))
    }
}

/// The key, if it is in the workspace and the member may manage it (404, then 403).
async fn managed_key(
    db: &impl db::GenericClient,
    member: &Member,
    kid: uuid::Uuid,
) -> Result<ApiKey, ApiError> {
    let key = db::api_keys::get(db, member.workspace.id, kid)
        .await?
        .ok_or(ApiError::NotFound)?;
    may_manage(member, &key)?;
    Ok(key)
}

/// A governed setting a member may not change, and the role that set it.
type Refusal = (Governed, Role);

/// Who has set the governed settings once `role` has replaced `key`'s with `to`: each
/// one that changes becomes `role`'s. Admins and owners change anything; a member may
/// not change a setting an admin or owner set (the first such is the error).
fn govern(role: Role, key: &ApiKey, to: &KeySettings) -> Result<SetBy, Refusal> {
    let mut set_by = key.set_by;
    for what in key.changes(to) {
        match set_by.get(what) {
            Some(by) if by >= Role::Admin && role < Role::Admin => return Err((what, by)),
            _ => set_by.set(what, role),
        }
    }
    Ok(set_by)
}

fn governed_by_admin((what, by): Refusal) -> ApiError {
    ApiError::forbidden(
        "governed_by_admin",
        format!(
            "the key's {} were set by an {by}: only an admin or owner can change them",
            what.field()
        ),
    )
}

/// A key's limits with what it has used: requests and tokens over the last minute (from
/// its log rows) and spend in the budget period (from the usage counters). Gateways
/// count in memory ahead of these figures, which trail by the log writer's batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyLimitsDto {
    pub limits: LimitsDto,
    pub workspace_limits: LimitsDto,
    pub allowed_models: Vec<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    pub usage: KeyUsageDto,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyUsageDto {
    pub requests_last_minute: i64,
    pub tokens_last_minute: i64,
    /// Spend of this key in its budget period, USD.
    pub spend_usd: f64,
    #[serde(with = "time::serde::rfc3339")]
    pub period_start: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub period_end: OffsetDateTime,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub api_key: ApiKeyDto,
    /// The plaintext key; shown only in this response.
    pub key: String,
}

/// A page of keys: `next_cursor` names the page of older keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyPageDto {
    /// Newest first.
    pub data: Vec<ApiKeyDto>,
    /// Pass as `cursor` for the next page of older keys; null on the last page, and when
    /// the whole list was asked for (no `limit` nor `cursor`).
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// Rows per page when only `cursor` is given, and at most.
const KEYS_DEFAULT_LIMIT: i64 = 50;
const KEYS_MAX_LIMIT: i64 = 500;

/// A key-list cursor is opaque to clients: base64url (no padding) of `k`, the last key's
/// `created_at` in microseconds since the epoch (big-endian i64) and its id (16 bytes).
mod cursor {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use perpetuo_core::db::api_keys::KeyPosition;
    use time::OffsetDateTime;
    use uuid::Uuid;

    const TAG: u8 = b'k';
    const LEN: usize = 1 + 8 + 16;
    const MAX_TEXT: usize = 64;

    pub fn encode(at: KeyPosition) -> String {
        let micros = (at.created_at.unix_timestamp_nanos() / 1_000) as i64;
        let mut bytes = Vec::with_capacity(LEN);
        bytes.push(TAG);
        bytes.extend_from_slice(&micros.to_be_bytes());
        bytes.extend_from_slice(at.id.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The position a cursor names; `None` when it is not one this server made.
    pub fn decode(text: &str) -> Option<KeyPosition> {
        if text.len() > MAX_TEXT {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        let (&tag, rest) = bytes.split_first()?;
        if tag != TAG || rest.len() != LEN - 1 {
            return None;
        }
        let (micros, id) = rest.split_at(8);
        let micros = i64::from_be_bytes(micros.try_into().ok()?);
        Some(KeyPosition {
            created_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
                .ok()?,
            id: Uuid::from_slice(id).ok()?,
        })
    }
}

/// API keys of the workspace, newest first: all of them, or a page at a time when `limit`
/// or `cursor` is given (follow `next_cursor`).
#[utoipa::path(get, path = "/workspaces/{id}/api-keys", tag = "api-keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id"),
           ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "keys per page, \
             1 to 500 (50 when only `cursor` is given); with neither `limit` nor `cursor`, \
             every key in one answer"),
           ("cursor" = Option<String>, Query, max_length = 64, description = "an earlier \
             answer's `next_cursor`: the page of older keys; opaque")),
    responses((status = 200, body = ApiKeyPageDto), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn list(
    Conn(client): Conn,
    member: Member,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<ApiKeyPageDto>, ApiError> {
    let ws = &member.workspace;
    let mut errs = FieldErrors::default();
    let limit = q
        .get("limit")
        .filter(|l| !l.is_empty())
        .map(|l| match l.parse::<i64>() {
            Ok(l) if (1..=KEYS_MAX_LIMIT).contains(&l) => l,
            _ => {
                errs.add(
                    "limit",
                    format!("must be an integer from 1 to {KEYS_MAX_LIMIT}"),
                );
                KEYS_DEFAULT_LIMIT
            }
        });
    let after = q.get("cursor").filter(|c| !c.is_empty()).map(|c| {
        cursor::decode(c)
            .ok_or_else(|| errs.add("cursor", "must be a next_cursor from an earlier answer"))
    });
    errs.into_result()?;
    let after = after.transpose().ok().flatten();
    if limit.is_none() && after.is_none() {
        let rows = db::api_keys::list(&client, ws.id).await?;
        return Ok(Json(ApiKeyPageDto {
            data: rows.into_iter().map(Into::into).collect(),
            next_cursor: None,
        }));
    }
    let limit = limit.unwrap_or(KEYS_DEFAULT_LIMIT);
    // One row more than the page says whether another follows.
    let mut rows = db::api_keys::list_page(&client, ws.id, after, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = rows.last().filter(|_| more).map(|k| {
        cursor::encode(KeyPosition {
            created_at: k.created_at,
            id: k.id,
        })
    });
    Ok(Json(ApiKeyPageDto {
        data: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// Create a key; the response is the only place the plaintext appears.
#[utoipa::path(post, path = "/workspaces/{id}/api-keys", tag = "api-keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id")), request_body = ApiKeyInput,
    responses((status = 201, body = CreatedApiKey), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    member: Member,
    ApiJson(body): ApiJson<ApiKeyInput>,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    let ws = &member.workspace;
    member.require_verified(&state)?;
    let mut errs = FieldErrors::default();
    let (name, settings) = body.split();
    let name = name.map(|n| n.trim().to_string()).unwrap_or_default();
    if name.is_empty() {
        errs.add("name", "is required");
    } else if let Err(e) = perpetuo_core::text::check_name(&name, 100) {
        errs.add("name", e.to_string());
    }
    let settings = settings.parse(&mut errs);
    errs.into_result()?;
    let key = apikey::generate();
    let mut client = state.pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let row = db::api_keys::insert(
        &tx,
        ws.id,
        &name,
        &key,
        Some(member.user.id),
        settings.expires_at,
    )
    .await?;
    db::limits::set_key(&tx, ws.id, row.id, &settings, &SetBy::all(member.role())).await?;
    let row: ApiKeyDto = db::api_keys::get(&tx, ws.id, row.id)
        .await?
        .ok_or(ApiError::NotFound)?
        .into();
    let entry = member.audit("api_key.created", "api_key", row.id, None, snapshot(&row));
    db::audit::record(&tx, &entry).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedApiKey {
            api_key: row,
            key: key.plaintext.expose().clone(),
        }),
    ))
}

/// Replace a key's limits, allowed models, expiry, cache mode and metadata; gateways apply
/// them within a second. A member may change only the limits, allowed models, expiry and
/// cache mode that a member set: one an admin or owner set answers 403 `governed_by_admin` and nothing
/// changes (sending it unchanged is fine).
#[utoipa::path(put, path = "/workspaces/{id}/api-keys/{kid}", tag = "api-keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id"), ("kid" = String, Path, description = "API key id")),
    request_body = KeySettingsInput,
    responses((status = 200, body = ApiKeyDto), (status = 400, body = crate::error::ErrorBody),
              (status = 403, description = "not the caller's key (`insufficient_role`), or a setting an admin set (`governed_by_admin`)", body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn update(
    Conn(mut client): Conn,
    member: Member,
    Path((_id, kid)): Path<(String, String)>,
    ApiJson(body): ApiJson<KeySettingsInput>,
) -> Result<Json<ApiKeyDto>, ApiError> {
    let ws = &member.workspace;
    let kid = parse_id(&kid)?;
    let mut errs = FieldErrors::default();
    let settings = body.parse(&mut errs);
    let tx = client.transaction().await.map_err(DbError::from)?;
    let key = db::api_keys::get_for_update(&tx, ws.id, kid)
        .await?
        .ok_or(ApiError::NotFound)?;
    may_manage(&member, &key)?;
    errs.into_result()?;
    let set_by = govern(member.role(), &key, &settings).map_err(governed_by_admin)?;
    let before: ApiKeyDto = key.into();
    if !db::limits::set_key(&tx, ws.id, kid, &settings, &set_by).await? {
        return Err(ApiError::NotFound);
    }
    let row: ApiKeyDto = db::api_keys::get(&tx, ws.id, kid)
        .await?
        .ok_or(ApiError::NotFound)?
        .into();
    let entry = member.audit(
        "api_key.updated",
        "api_key",
        kid,
        snapshot(&before),
        snapshot(&row),
    );
    db::audit::record(&tx, &entry).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(row))
}

/// A key's limits and current consumption, for scripts that watch a key. Members read
/// only the keys they created, as for every other key route.
#[utoipa::path(get, path = "/workspaces/{id}/api-keys/{kid}/limits", tag = "api-keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id"), ("kid" = String, Path, description = "API key id")),
    responses((status = 200, body = KeyLimitsDto), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)))]
pub async fn limits(
    Conn(client): Conn,
    member: Member,
    Path((_id, kid)): Path<(String, String)>,
) -> Result<Json<KeyLimitsDto>, ApiError> {
    let ws = &member.workspace;
    let kid = parse_id(&kid)?;
    let key = managed_key(&client, &member, kid).await?;
    let workspace = db::limits::workspace(&client, ws.id)
        .await?
        .unwrap_or_default();
    let now = OffsetDateTime::now_utc();
    let period = key.limits.budget_period;
    let (start, end) = (period.start(now), period.end(now));
    let spent = db::limits::spend_since(&client, ws.id, Some(kid), start).await?;
    let recent = db::limits::last_minute(&client, ws.id, kid).await?;
    Ok(Json(KeyLimitsDto {
        limits: key.limits.into(),
        workspace_limits: workspace.into(),
        allowed_models: key.allowed_models,
        expires_at: key.expires_at,
        usage: KeyUsageDto {
            requests_last_minute: recent.requests,
            tokens_last_minute: recent.tokens,
            spend_usd: usd(spent),
            period_start: start,
            period_end: end,
        },
    }))
}

/// Revoke a key; gateways stop accepting it within a second.
#[utoipa::path(post, path = "/workspaces/{id}/api-keys/{kid}/revoke", tag = "api-keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id"), ("kid" = String, Path, description = "API key id")),
    responses((status = 200, body = ApiKeyDto), (status = 404, body = crate::error::ErrorBody)))]
pub async fn revoke(
    Conn(mut client): Conn,
    member: Member,
    Path((_id, kid)): Path<(String, String)>,
) -> Result<Json<ApiKeyDto>, ApiError> {
    let ws = &member.workspace;
    let kid = parse_id(&kid)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let before: ApiKeyDto = managed_key(&tx, &member, kid).await?.into();
    let row: ApiKeyDto = db::api_keys::revoke(&tx, ws.id, kid)
        .await?
        .ok_or(ApiError::NotFound)?
        .into();
    let entry = member.audit(
        "api_key.revoked",
        "api_key",
        kid,
        snapshot(&before),
        snapshot(&row),
    );
    db::audit::record(&tx, &entry).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(row))
}

/// Delete a key.
#[utoipa::path(delete, path = "/workspaces/{id}/api-keys/{kid}", tag = "api-keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id"), ("kid" = String, Path, description = "API key id")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete(
    Conn(mut client): Conn,
    member: Member,
    Path((_id, kid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let ws = &member.workspace;
    let kid = parse_id(&kid)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let before: ApiKeyDto = managed_key(&tx, &member, kid).await?.into();
    if !db::api_keys::delete(&tx, ws.id, kid).await? {
        return Err(ApiError::NotFound);
    }
    let entry = member.audit("api_key.deleted", "api_key", kid, snapshot(&before), None);
    db::audit::record(&tx, &entry).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use perpetuo_core::db::limits::Limits;
    use time::macros::datetime;

    fn key(set_by: SetBy) -> ApiKey {
        ApiKey {
            id: uuid::Uuid::nil(),
            workspace_id: uuid::Uuid::nil(),
            name: "k".into(),
            prefix: "pp-".into(),
            created_at: datetime!(2026-01-01 0:00 UTC),
            last_used_at: None,
            revoked_at: None,
            expires_at: Some(datetime!(2030-01-01 0:00:00.123456 UTC)),
            limits: Limits {
                rpm: Some(10),
                ..Limits::default()
            },
            allowed_models: vec!["a".into(), "b*".into()],
            label: None,
            owner_email: None,
            cache_mode: KeyCacheMode::Inherit,
            created_by: None,
            created_by_email: None,
            set_by,
        }
    }

    fn same(k: &ApiKey) -> KeySettings {
        KeySettings {
            limits: k.limits,
            allowed_models: k.allowed_models.clone(),
            expires_at: k.expires_at,
            label: Some("a new label".into()),
            owner_email: None,
            cache_mode: k.cache_mode,
        }
    }

    #[test]
    fn a_member_changes_only_what_a_member_set() {
        use Role::{Admin, Member, Owner};
        let admin_limits = SetBy {
            limits: Some(Admin),
            allowed_models: Some(Member),
            expires_at: None,
            cache_mode: Some(Admin),
        };
        let loosen = |s: &mut KeySettings| s.limits.rpm = Some(1000);
        let unlimit = |s: &mut KeySettings| s.limits = Limits::default();
        let models = |s: &mut KeySettings| s.allowed_models = vec!["*".into()];
        let reorder =
            |s: &mut KeySettings| s.allowed_models = vec!["b*".into(), "a".into(), "a".into()];
        let expiry = |s: &mut KeySettings| s.expires_at = None;
        // The same instant with nanoseconds the database does not keep.
        let nanos = |s: &mut KeySettings| {
            s.expires_at = Some(datetime!(2030-01-01 0:00:00.123456789 UTC));
        };
        let nothing = |_: &mut KeySettings| {};
        let cache_on = |s: &mut KeySettings| s.cache_mode = KeyCacheMode::On;
        type Change = fn(&mut KeySettings);
        // (caller, who set what, change, outcome)
        let cases: Vec<(Role, SetBy, Change, Result<SetBy, Refusal>)> = vec![
            (Member, admin_limits, loosen, Err((Governed::Limits, Admin))),
            (
                Member,
                admin_limits,
                unlimit,
                Err((Governed::Limits, Admin)),
            ),
            (
                Member,
                SetBy::all(Owner),
                expiry,
                Err((Governed::ExpiresAt, Owner)),
            ),
            (Member, admin_limits, nothing, Ok(admin_limits)),
            (
                Member,
                admin_limits,
                cache_on,
                Err((Governed::CacheMode, Admin)),
            ),
            (Member, SetBy::all(Member), cache_on, Ok(SetBy::all(Member))),
            (
                Admin,
                SetBy::all(Owner),
                cache_on,
                Ok(SetBy {
                    cache_mode: Some(Admin),
                    ..SetBy::all(Owner)
                }),
            ),
            (Member, admin_limits, reorder, Ok(admin_limits)),
            (
                Member,
                admin_limits,
                models,
                Ok(SetBy {
                    allowed_models: Some(Member),
                    ..admin_limits
                }),
            ),
            (
                Member,
                admin_limits,
                expiry,
                Ok(SetBy {
                    expires_at: Some(Member),
                    ..admin_limits
                }),
            ),
            (Member, SetBy::all(Admin), nanos, Ok(SetBy::all(Admin))),
            (
                Member,
                SetBy::default(),
                loosen,
                Ok(SetBy {
                    limits: Some(Member),
                    ..SetBy::default()
                }),
            ),
            (
                Admin,
                SetBy::all(Owner),
                loosen,
                Ok(SetBy {
                    limits: Some(Admin),
                    ..SetBy::all(Owner)
                }),
            ),
            (
                Owner,
                admin_limits,
                unlimit,
                Ok(SetBy {
                    limits: Some(Owner),
                    ..admin_limits
                }),
            ),
        ];
        for (i, (role, set_by, change, want)) in cases.into_iter().enumerate() {
            let k = key(set_by);
            let mut to = same(&k);
            change(&mut to);
            assert_eq!(govern(role, &k, &to), want, "case {i}");
        }
    }
}
