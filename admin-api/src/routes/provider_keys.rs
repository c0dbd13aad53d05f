//! The pool of provider keys of an entry: listed with what gateways and logs say of each,
//! added, changed and removed one at a time. A key is write-only: it is sealed for its
//! entry before it reaches the database, and answers show only its last four characters.
//! The checks and seals here also serve the entry's own body (`api_key` or `keys`).

use std::collections::HashSet;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use perpetuo_core::crypto;
use perpetuo_core::db::entry_keys::{self, EntryKey, KeyChanges, NewEntryKey, MAX_PER_ENTRY};
use perpetuo_core::db::{self, DbError};
use perpetuo_core::provider::ProviderKind;
use perpetuo_core::{text, Secret};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::dto::ListOf;
use crate::access::{snapshot, Member};
use crate::error::{ApiError, FieldErrors};
use crate::extract::{parse_id, ApiJson, Conn};
use crate::state::AppState;

/// Longest provider key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 4096;
const MAX_LABEL_CHARS: usize = 100;
const WEIGHT_RANGE: std::ops::RangeInclusive<i32> = 0..=1000;
/// The label of the key an entry's `api_key` makes.
pub const DEFAULT_LABEL: &str = "default";
/// Log rows counted into a key's share of traffic.
const TRAFFIC_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Gateway reports older than this are not shown (gateways refresh theirs every few
/// seconds; an older row is a gateway that stopped).
const REPORT_FRESH: Duration = Duration::from_secs(30);

/// One provider key of an entry, as answered; the key itself is never returned.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderKeyDto {
    pub id: Uuid,
    /// Unique in the entry; shown in log rows.
    pub label: String,
    /// Share of the entry's traffic, relative to its other keys' (0: standby, used only
    /// when the entry's other keys are out).
    pub weight: i32,
    pub enabled: bool,
    /// Last four characters of the key.
    pub key_last4: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// What gateways and logs say of the key (shown by `GET …/providers/{pid}/keys`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<KeyStatusDto>,
}

impl From<EntryKey> for ProviderKeyDto {
    fn from(k: EntryKey) -> Self {
        Self {
            id: k.id,
            label: k.label,
            weight: k.weight,
            enabled: k.enabled,
            key_last4: k.key_last4,
            created_at: k.created_at,
            updated_at: k.updated_at,
            status: None,
        }
    }
}

/// A key's traffic and health: its requests of the last 24 hours and their share of the
/// entry's, and what the gateways that used it in the last 30 seconds report (taken
/// together: the worst breaker, the smallest headroom, the latest reset; null and 0 when
/// no gateway reported it).
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyStatusDto {
    /// Log rows of the last 24 hours this key served.
    pub requests_24h: i64,
    /// `requests_24h` ÷ the entry's requests over all its keys in that time (0 when none).
    #[schema(minimum = 0, maximum = 1)]
    pub share: f64,
    /// `closed` (serving), `half_open` (being tried again) or `open` (passed over).
    #[schema(required = true, pattern = "^(closed|half_open|open)$")]
    pub breaker: Option<String>,
    /// Requests left in the provider's window, as its rate-limit headers said.
    #[schema(required = true)]
    pub remaining_requests: Option<i64>,
    /// Tokens left in the provider's window, as its rate-limit headers said.
    #[schema(required = true)]
    pub remaining_tokens: Option<i64>,
    /// When the provider's window resets.
    #[schema(required = true)]
    #[serde(with = "time::serde::rfc3339::option")]
    pub reset_at: Option<OffsetDateTime>,
    /// How many gateways reported the key.
    pub gateways: i64,
}

/// The status of each of `keys` (of `entry`), in their order.
async fn statuses(
    db: &impl db::GenericClient,
    workspace: Uuid,
    entry: Uuid,
    keys: &[EntryKey],
) -> Result<Vec<KeyStatusDto>, DbError> {
    let ids: Vec<Uuid> = keys.iter().map(|k| k.id).collect();
    let traffic = entry_keys::requests_by_key(db, workspace, entry, &ids, TRAFFIC_WINDOW).await?;
    let reports = entry_keys::gateway_reports(db, workspace, &ids, REPORT_FRESH).await?;
    let total: i64 = traffic.values().sum();
    Ok(ids
        .iter()
        .map(|id| {
            let requests = traffic.get(id).copied().unwrap_or(0);
            let report = reports.get(id);
            KeyStatusDto {
                requests_24h: requests,
                share: if total > 0 {
                    requests as f64 / total as f64
                } else {
                    0.0
                },
                breaker: report.map(|r| r.breaker.as_str().to_string()),
                remaining_requests: report.and_then(|r| r.remaining_requests),
                remaining_tokens: report.and_then(|r| r.remaining_tokens),
                reset_at: report.and_then(|r| r.reset_at),
                gateways: report.map_or(0, |r| r.gateways),
            }
        })
        .collect())
}

/// A key of an entry's pool, sent whole in the entry's `keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyInput {
    /// The provider key, write-only (visible ASCII).
    #[schema(required = true, value_type = String, min_length = 1, max_length = 4096)]
    pub key: Option<Secret<String>>,
    /// 1 to 100 printable characters, unique in the entry (default `key-1`, `key-2`… by
    /// position).
    #[schema(min_length = 1, max_length = 100)]
    pub label: Option<String>,
    /// Share of the entry's traffic (default 1; 0 = standby, used only when the entry's
    /// other keys are out).
    #[schema(minimum = 0, maximum = 1000)]
    pub weight: Option<i32>,
    /// Default true.
    pub enabled: Option<bool>,
}

/// A key to add to an entry's pool.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyInput {
    /// The provider key, write-only (visible ASCII).
    #[schema(required = true, value_type = String, min_length = 1, max_length = 4096)]
    pub key: Option<Secret<String>>,
    /// 1 to 100 printable characters, unique in the entry.
    #[schema(required = true, value_type = String, min_length = 1, max_length = 100)]
    pub label: Option<String>,
    /// Share of the entry's traffic (default 1; 0 = standby).
    #[schema(minimum = 0, maximum = 1000)]
    pub weight: Option<i32>,
    /// Default true.
    pub enabled: Option<bool>,
}

/// Changes to a key; a field left out keeps its value. The key itself is not changed:
/// add the new key and remove the old one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    /// 1 to 100 printable characters, unique in the entry.
    #[schema(min_length = 1, max_length = 100)]
    pub label: Option<String>,
    /// Share of the entry's traffic (0 = standby).
    #[schema(minimum = 0, maximum = 1000)]
    pub weight: Option<i32>,
    pub enabled: Option<bool>,
}

/// A checked key, before it is sealed.
pub struct PoolKey {
    pub key: Secret<String>,
    pub label: String,
    pub weight: i32,
    pub enabled: bool,
}

/// A provider key as sent: trimmed, 1 to [`MAX_KEY_LEN`] bytes of visible ASCII (it is
/// sent in a request header). A problem is named under `field`.
pub fn check_key(raw: &str, field: &str, errs: &mut FieldErrors) -> Secret<String> {
    let key = raw.trim();
    if key.is_empty() {
        errs.add(
            field,
            "must not be empty (leave it out for a server that needs no key)",
        );
    } else if key.len() > MAX_KEY_LEN {
        errs.add(field, "is too long");
    } else if !key.bytes().all(|b| b.is_ascii_graphic()) {
        errs.add(
            field,
            "must contain only visible ASCII characters (no spaces or control characters)",
        );
    }
    Secret::new(key.to_string())
}

/// A label: trimmed, 1 to 100 printable characters.
fn check_label(raw: &str, field: &str, errs: &mut FieldErrors) -> String {
    let label = raw.trim().to_string();
    if let Err(e) = text::check_name(&label, MAX_LABEL_CHARS) {
        errs.add(field, e.to_string());
    }
    label
}

fn check_weight(weight: Option<i32>, field: &str, errs: &mut FieldErrors) -> i32 {
    let weight = weight.unwrap_or(1);
    if !WEIGHT_RANGE.contains(&weight) {
        errs.add(field, "must be between 0 (standby) and 1000");
    }
    weight
}

/// The pool an entry's `api_key` makes: one key labelled [`DEFAULT_LABEL`].
pub fn pool_of_one(raw: &str, errs: &mut FieldErrors) -> Vec<PoolKey> {
    vec![PoolKey {
        key: check_key(raw, "api_key", errs),
        label: DEFAULT_LABEL.to_string(),
        weight: 1,
        enabled: true,
    }]
}

/// The pool an entry's `keys` makes, checked (problems under `keys.<i>.<field>`). A key
/// without a label is `key-<position>`, or the next number free of the labels given.
pub fn pool_of(keys: Vec<KeyInput>, errs: &mut FieldErrors) -> Vec<PoolKey> {
    if keys.len() > MAX_PER_ENTRY {
        errs.add(
            "keys",
            format!("an entry holds at most {MAX_PER_ENTRY} keys"),
        );
    }
    let given: HashSet<String> = keys
        .iter()
        .filter_map(|k| k.label.as_deref().map(|l| l.trim().to_string()))
        .collect();
    let mut used = HashSet::new();
    let mut next = 1;
    let mut out = Vec::with_capacity(keys.len());
    for (i, k) in keys.into_iter().enumerate() {
        let at = |field: &str| format!("keys.{i}.{field}");
        let key = match k.key {
            Some(key) => check_key(key.expose(), &at("key"), errs),
            None => {
                errs.add(&at("key"), "is required");
                Secret::new(String::new())
            }
        };
        let label = match k.label {
            Some(label) => check_label(&label, &at("label"), errs),
            None => {
                next = next.max(i + 1);
                while given.contains(&format!("key-{next}")) {
                    next += 1;
                }
                next += 1;
                format!("key-{}", next - 1)
            }
        };
        if !used.insert(label.clone()) {
            errs.add(&at("label"), "is the label of another key of this entry");
        }
        out.push(PoolKey {
            key,
            label,
            weight: check_weight(k.weight, &at("weight"), errs),
            enabled: k.enabled.unwrap_or(true),
        });
    }
    out
}

/// Seals every key of `pool` for the entry `binding` describes.
pub fn seal_pool(
    state: &AppState,
    pool: &[PoolKey],
    binding: &crypto::KeyBinding<'_>,
) -> Result<Vec<NewEntryKey>, ApiError> {
    pool.iter()
        .map(|k| {
            Ok(NewEntryKey {
                id: entry_keys::new_id(),
                label: k.label.clone(),
                weight: k.weight,
                enabled: k.enabled,
                sealed: state
                    .master_key
                    .seal(k.key.expose(), binding)
                    .map_err(ApiError::internal)?,
                key_last4: crypto::last4(k.key.expose()),
            })
        })
        .collect()
}

fn label_conflict(e: DbError) -> ApiError {
    if e.unique_violation() == Some(entry_keys::LABEL_UNIQUE) {
        ApiError::conflict("label_taken", "another key of this entry has this label")
    } else {
        e.into()
    }
}

/// What the audit log keeps of a key: its entry and its answer, never the key.
#[derive(Serialize)]
struct KeyAudit<'a> {
    entry_id: Uuid,
    #[serde(flatten)]
    key: &'a ProviderKeyDto,
}

fn audit_snapshot(entry_id: Uuid, key: &ProviderKeyDto) -> Option<serde_json::Value> {
    snapshot(&KeyAudit { entry_id, key })
}

/// The keys of an entry, oldest first, each with its `status`.
#[utoipa::path(get, path = "/workspaces/{id}/providers/{pid}/keys", tag = "providers", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id"), ("pid" = String, Path, description = "provider entry id")),
    responses((status = 200, body = ListOf<ProviderKeyDto>), (status = 404, body = crate::error::ErrorBody)))]
pub async fn list(
    Conn(client): Conn,
    member: Member,
    Path((_id, pid)): Path<(String, String)>,
) -> Result<Json<ListOf<ProviderKeyDto>>, ApiError> {
    let ws = member.workspace.id;
    let pid = parse_id(&pid)?;
    db::providers::get(&client, ws, pid)
        .await?
        .ok_or(ApiError::NotFound)?;
    let keys = entry_keys::list_for_entry(&client, ws, pid).await?;
    let statuses = statuses(&client, ws, pid, &keys).await?;
    Ok(Json(ListOf {
        data: keys
            .into_iter()
            .zip(statuses)
            .map(|(k, status)| ProviderKeyDto {
                status: Some(status),
                ..k.into()
            })
            .collect(),
    }))
}

/// Add a key to an entry's pool: at most 32 keys (400 `too_many_keys`), labels unique in
/// the entry (409 `label_taken`).
#[utoipa::path(post, path = "/workspaces/{id}/providers/{pid}/keys", tag = "providers", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id"), ("pid" = String, Path, description = "provider entry id")),
    request_body = NewKeyInput,
    responses((status = 201, body = ProviderKeyDto), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    member: Member,
    Path((_id, pid)): Path<(String, String)>,
    ApiJson(body): ApiJson<NewKeyInput>,
) -> Result<(StatusCode, Json<ProviderKeyDto>), ApiError> {
    let ws = member.workspace.id;
    let pid = parse_id(&pid)?;
    member.require_verified(&state)?;
    let mut errs = FieldErrors::default();
    let key = match &body.key {
        Some(k) => check_key(k.expose(), "key", &mut errs),
        None => {
            errs.add("key", "is required");
            Secret::new(String::new())
        }
    };
    let label = match &body.label {
        Some(l) => check_label(l, "label", &mut errs),
        None => {
            errs.add("label", "is required");
            String::new()
        }
    };
    let weight = check_weight(body.weight, "weight", &mut errs);
    errs.into_result()?;
    let pool = [PoolKey {
        key,
        label,
        weight,
        enabled: body.enabled.unwrap_or(true),
    }];

    let mut client = state.pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let entry = db::providers::lock(&tx, ws, pid)
        .await?
        .ok_or(ApiError::NotFound)?;
    if entry_keys::list_for_entry(&tx, ws, pid).await?.len() >= MAX_PER_ENTRY {
        return Err(ApiError::field_code(
            "too_many_keys",
            "key",
            format!("an entry holds at most {MAX_PER_ENTRY} keys: remove one first"),
        ));
    }
    let sealed = seal_pool(&state, &pool, &entry.binding())?;
    let row = sealed
        .first()
        .ok_or_else(|| ApiError::internal("no key sealed"))?;
    let created: ProviderKeyDto = entry_keys::insert(&tx, ws, pid, row)
        .await
        .map_err(label_conflict)?
        .into();
    let audit = member.audit(
        "provider_key.created",
        "provider_key",
        created.id,
        None,
        audit_snapshot(pid, &created),
    );
    db::audit::record(&tx, &audit).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Change a key's label, weight or switch; the other keys of the entry are left as they
/// are.
#[utoipa::path(patch, path = "/workspaces/{id}/providers/{pid}/keys/{key_id}", tag = "providers", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id"), ("pid" = String, Path, description = "provider entry id"),
           ("key_id" = String, Path, description = "key id")),
    request_body = KeyPatch,
    responses((status = 200, body = ProviderKeyDto), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    member: Member,
    Path((_id, pid, key_id)): Path<(String, String, String)>,
    ApiJson(body): ApiJson<KeyPatch>,
) -> Result<Json<ProviderKeyDto>, ApiError> {
    let ws = member.workspace.id;
    let (pid, key_id) = (parse_id(&pid)?, parse_id(&key_id)?);
    let mut errs = FieldErrors::default();
    let changes = KeyChanges {
        label: body
            .label
            .as_deref()
            .map(|l| check_label(l, "label", &mut errs)),
        weight: body
            .weight
            .map(|w| check_weight(Some(w), "weight", &mut errs)),
        enabled: body.enabled,
    };
    errs.into_result()?;

    let mut client = state.pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    db::providers::lock(&tx, ws, pid)
        .await?
        .ok_or(ApiError::NotFound)?;
    let before: ProviderKeyDto = entry_keys::get(&tx, ws, pid, key_id)
        .await?
        .ok_or(ApiError::NotFound)?
        .into();
    let updated: ProviderKeyDto = entry_keys::update(&tx, ws, pid, key_id, &changes)
        .await
        .map_err(label_conflict)?
        .ok_or(ApiError::NotFound)?
        .into();
    let audit = member.audit(
        "provider_key.updated",
        "provider_key",
        key_id,
        audit_snapshot(pid, &before),
        audit_snapshot(pid, &updated),
    );
    db::audit::record(&tx, &audit).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(updated))
}

/// Remove a key from an entry's pool. An entry of another kind than `openai_compatible`
/// keeps at least one key: removing its last one is 409 `last_key`.
#[utoipa::path(delete, path = "/workspaces/{id}/providers/{pid}/keys/{key_id}", tag = "providers", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id"), ("pid" = String, Path, description = "provider entry id"),
           ("key_id" = String, Path, description = "key id")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn delete(
    Conn(mut client): Conn,
    member: Member,
    Path((_id, pid, key_id)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let ws = member.workspace.id;
    let (pid, key_id) = (parse_id(&pid)?, parse_id(&key_id)?);
    let tx = client.transaction().await.map_err(DbError::from)?;
    let entry = db::providers::lock(&tx, ws, pid)
        .await?
        .ok_or(ApiError::NotFound)?;
    let keys = entry_keys::list_for_entry(&tx, ws, pid).await?;
    let key = keys
        .iter()
        .find(|k| k.id == key_id)
        .cloned()
        .ok_or(ApiError::NotFound)?;
    if keys.len() == 1 && entry.kind != ProviderKind::OpenaiCompatible {
        return Err(ApiError::conflict(
            "last_key",
            format!(
                "this is the entry's last key, and a {} entry needs one: add another key \
                 first, or delete the entry",
                entry.kind.as_str()
            ),
        ));
    }
    if !entry_keys::delete(&tx, ws, pid, key_id).await? {
        return Err(ApiError::NotFound);
    }
    let before = audit_snapshot(pid, &ProviderKeyDto::from(key));
    let audit = member.audit("provider_key.deleted", "provider_key", key_id, before, None);
    db::audit::record(&tx, &audit).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(StatusCode::NO_CONTENT)
}
