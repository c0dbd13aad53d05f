//! A workspace's provider entries. An entry's provider keys are its pool (see
//! `provider_keys`): write-only, sealed before they reach the database, shown only by
//! their last four characters. The entry's body sets the pool whole — `api_key` (a pool
//! of one) or `keys` — and its quota.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use perpetuo_core::db::entry_keys::{self, EntryKey};
use perpetuo_core::db::providers::{NewProvider, ProviderEntry};
use perpetuo_core::db::{self, DbError};
use perpetuo_core::dns::ResolveError;
use perpetuo_core::provider::ProviderKind;
use perpetuo_core::{text, Secret};
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::dto::ListOf;
use super::provider_keys::{pool_of, pool_of_one, seal_pool, KeyInput, PoolKey, ProviderKeyDto};
use crate::access::{snapshot, Member};
use crate::error::{ApiError, FieldErrors};
use crate::extract::{parse_id, ApiJson, Conn};
use crate::state::AppState;

const MAX_MODELS: usize = 500;
const MAX_NAME_CHARS: usize = 100;
const MAX_MODEL_CHARS: usize = 256;
const DNS_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1_000_000..=1_000_000;
const WEIGHT_RANGE: std::ops::RangeInclusive<i32> = 0..=1000;
const QUOTA_RPM_RANGE: std::ops::RangeInclusive<i64> = 1..=1_000_000_000;
const QUOTA_TPM_RANGE: std::ops::RangeInclusive<i64> = 1..=1_000_000_000_000;

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderDto {
    pub id: Uuid,
    /// openai, anthropic, gemini or openai_compatible.
    pub kind: String,
    pub name: String,
    pub base_url: Option<String>,
    /// Last four characters of the entry's first key; the keys themselves are never
    /// returned. Empty for an entry without keys.
    pub key_last4: String,
    /// Whether the entry has provider keys (an `openai_compatible` entry may have none).
    pub has_key: bool,
    /// The entry's pool of provider keys, oldest first.
    pub keys: Vec<ProviderKeyDto>,
    /// Lower is tried first; equal priorities share load.
    pub priority: i32,
    /// This entry's share of its priority's traffic, relative to the others' (0: standby,
    /// used only when the others of its priority fail).
    pub weight: i32,
    pub enabled: bool,
    /// Models this entry serves; empty means any model.
    pub models: Vec<String>,
    /// Requested model → model sent to this provider.
    pub model_map: BTreeMap<String, String>,
    /// The deployment's own quota, if it has one.
    pub quota: QuotaDto,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// An entry's quota: the requests and tokens per minute its deployment allows (a fixed
/// allocation, such as Azure's or a provisioned throughput); null for no quota.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct QuotaDto {
    /// Requests per minute.
    #[schema(required = true, minimum = 1, maximum = 1000000000)]
    pub rpm: Option<i64>,
    /// Tokens (prompt + completion) per minute.
    #[schema(required = true, minimum = 1, maximum = 1000000000000_i64)]
    pub tpm: Option<i64>,
}

impl ProviderDto {
    /// The answer for `entry` whose pool is `keys` (oldest first).
    fn new(p: ProviderEntry, keys: Vec<EntryKey>) -> Self {
        Self {
            has_key: !keys.is_empty(),
            key_last4: keys
                .first()
                .map(|k| k.key_last4.clone())
                .unwrap_or_default(),
            keys: keys.into_iter().map(Into::into).collect(),
            id: p.id,
            kind: p.kind.as_str().to_string(),
            name: p.name,
            base_url: p.base_url,
            priority: p.priority,
            weight: p.weight,
            enabled: p.enabled,
            models: p.models,
            model_map: p.model_map,
            quota: QuotaDto {
                rpm: p.quota_rpm.map(i64::from),
                tpm: p.quota_tpm,
            },
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Create body (kind and name required; a pool of keys too, except for an
/// `openai_compatible` server that needs none) or update body (any subset).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderInput {
    #[schema(pattern = "^(openai|anthropic|gemini|openai_compatible)$")]
    pub kind: Option<String>,
    /// 1 to 100 printable characters (it is sent in the `x-perpetuo-provider` header).
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// Write-only provider key (visible ASCII): the entry's pool becomes this one key,
    /// labelled `default`. Not with `keys`. The pool is required again when `kind` or
    /// `base_url` changes. Left out (or `null`) for an `openai_compatible` server that
    /// needs no key (Ollama, vLLM, llama.cpp): no `Authorization` header is sent; on an
    /// update `null` removes every key.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 4096)]
    pub api_key: Option<Option<Secret<String>>>,
    /// The entry's whole pool of keys (at most 32), replacing the one it has. Not with
    /// `api_key`; `null` is the same as leaving it out. An empty pool only for
    /// `openai_compatible`.
    #[schema(max_items = 32)]
    pub keys: Option<Vec<KeyInput>>,
    /// Required for openai_compatible; otherwise overrides the provider's public endpoint.
    /// `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub base_url: Option<Option<String>>,
    #[schema(minimum = -1_000_000, maximum = 1_000_000)]
    pub priority: Option<i32>,
    /// Share of the priority's traffic (default 1; 0 = standby, used only on failure).
    #[schema(minimum = 0, maximum = 1000)]
    pub weight: Option<i32>,
    pub enabled: Option<bool>,
    /// Model names (each 1 to 256 printable characters); empty means any model.
    pub models: Option<Vec<String>>,
    /// Requested model → model sent to this provider (names as in `models`).
    pub model_map: Option<BTreeMap<String, String>>,
    /// The deployment's own quota; a field left out keeps its value, `null` removes it
    /// (`"quota": null` removes both).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<QuotaInput>)]
    pub quota: Option<Option<QuotaInput>>,
}

/// An entry's quota to change; a field left out keeps its value, `null` removes it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaInput {
    /// Requests per minute, 1 to 1000000000.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1000000000)]
    pub rpm: Option<Option<i64>>,
    /// Tokens per minute, 1 to 1000000000000.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 1000000000000_i64)]
    pub tpm: Option<Option<i64>>,
}

/// What a write does to the entry's pool of keys.
enum PoolChange {
    /// Left out: a new entry has none, an existing one keeps its own.
    Keep,
    /// The pool becomes these keys (none: the entry sends no key).
    Replace(Vec<PoolKey>),
}

/// The validated fields of an entry, before sealing.
struct Fields {
    kind: ProviderKind,
    name: String,
    base_url: Option<String>,
    priority: i32,
    weight: i32,
    enabled: bool,
    models: Vec<String>,
    model_map: BTreeMap<String, String>,
    quota_rpm: Option<i32>,
    quota_tpm: Option<i64>,
}

/// A name shown in headers and logs: trimmed, 1 to `max` characters, all printable.
fn check_text(s: &str, max: usize) -> Result<(), String> {
    text::check_name(s, max).map_err(|e| e.to_string())
}

fn clean_models(models: Vec<String>, errs: &mut FieldErrors) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in models.into_iter().map(|m| m.trim().to_string()) {
        if let Err(msg) = check_text(&m, MAX_MODEL_CHARS) {
            errs.add("models", format!("each model {msg}"));
        } else if !out.contains(&m) {
            out.push(m);
        }
    }
    if out.len() > MAX_MODELS {
        errs.add("models", format!("at most {MAX_MODELS} models"));
    }
    out
}

fn clean_map(map: BTreeMap<String, String>, errs: &mut FieldErrors) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        match check_text(&k, MAX_MODEL_CHARS).and(check_text(&v, MAX_MODEL_CHARS)) {
            Err(msg) => errs.add("model_map", format!("each model name {msg}")),
            Ok(()) => {
                out.insert(k, v);
            }
        }
    }
    if out.len() > MAX_MODELS {
        errs.add("model_map", format!("at most {MAX_MODELS} entries"));
    }
    out
}

/// The quota `input` leaves on an entry whose quota is `current`; a bad value is named in
/// `errs`.
fn merge_quota(
    input: Option<Option<QuotaInput>>,
    current: (Option<i32>, Option<i64>),
    errs: &mut FieldErrors,
) -> (Option<i32>, Option<i64>) {
    let q = match input {
        None => return current,
        Some(None) => return (None, None),
        Some(Some(q)) => q,
    };
    let rpm = match q.rpm {
        None => current.0,
        Some(None) => None,
        Some(Some(n)) => match i32::try_from(n) {
            Ok(n) if QUOTA_RPM_RANGE.contains(&i64::from(n)) => Some(n),
            _ => {
                errs.add(
                    "quota.rpm",
                    "must be an integer from 1 to 1000000000 (null for no quota)",
                );
                None
            }
        },
    };
    let tpm = match q.tpm {
        None => current.1,
        Some(None) => None,
        Some(Some(n)) if QUOTA_TPM_RANGE.contains(&n) => Some(n),
        Some(Some(_)) => {
            errs.add(
                "quota.tpm",
                "must be an integer from 1 to 1000000000000 (null for no quota)",
            );
            None
        }
    };
    (rpm, tpm)
}

/// Merges `input` onto `current` (an entry and its pool; none for a new entry) and
/// validates the result.
async fn validate(
    state: &AppState,
    input: ProviderInput,
    current: Option<(&ProviderEntry, &[EntryKey])>,
) -> Result<(Fields, PoolChange), ApiError> {
    let mut errs = FieldErrors::default();
    let entry = current.map(|(e, _)| e);
    let kind = match (input.kind.as_deref(), entry) {
        (Some(k), _) => k
            .parse::<ProviderKind>()
            .map_err(|e| errs.add("kind", e.to_string()))
            .ok(),
        (None, Some(c)) => Some(c.kind),
        (None, None) => {
            errs.add("kind", "is required");
            None
        }
    };
    let name = match (input.name, entry) {
        (Some(n), _) => n.trim().to_string(),
        (None, Some(c)) => c.name.clone(),
        (None, None) => String::new(),
    };
    if name.is_empty() {
        errs.add("name", "is required");
    } else if let Err(msg) = check_text(&name, MAX_NAME_CHARS) {
        errs.add("name", msg);
    }
    let pool = match (input.api_key, input.keys) {
        (Some(_), Some(_)) => {
            for field in ["api_key", "keys"] {
                errs.add(
                    field,
                    "send either api_key (a pool of one key) or keys (the whole pool), not both",
                );
            }
            PoolChange::Keep
        }
        (None, None) => PoolChange::Keep,
        (Some(None), None) => PoolChange::Replace(Vec::new()),
        (Some(Some(k)), None) => PoolChange::Replace(pool_of_one(k.expose(), &mut errs)),
        (None, Some(keys)) => PoolChange::Replace(pool_of(keys, &mut errs)),
    };
    let keyless = match &pool {
        PoolChange::Replace(keys) => keys.is_empty(),
        PoolChange::Keep => current.is_none_or(|(_, keys)| keys.is_empty()),
    };
    match kind {
        Some(k) if keyless && k != ProviderKind::OpenaiCompatible => errs.add(
            "api_key",
            format!(
                "is required for {} entries (only openai_compatible may have none)",
                k.as_str()
            ),
        ),
        _ => {}
    }
    let base_url = match (input.base_url, entry) {
        (Some(b), _) => b.map(|b| b.trim().to_string()).filter(|b| !b.is_empty()),
        (None, Some(c)) => c.base_url.clone(),
        (None, None) => None,
    };
    let base_url = match base_url {
        Some(raw) => match check_base_url(state, &raw).await {
            Ok(url) => Some(url),
            Err(msg) => {
                errs.add("base_url", msg);
                None
            }
        },
        None => {
            if kind == Some(ProviderKind::OpenaiCompatible) {
                errs.add("base_url", "is required for openai_compatible");
            }
            None
        }
    };
    let priority = input.priority.or(entry.map(|c| c.priority)).unwrap_or(100);
    if !PRIORITY_RANGE.contains(&priority) {
        errs.add("priority", "must be between -1000000 and 1000000");
    }
    let weight = input.weight.or(entry.map(|c| c.weight)).unwrap_or(1);
    if !WEIGHT_RANGE.contains(&weight) {
        errs.add("weight", "must be between 0 (standby) and 1000");
    }
    let models = clean_models(
        input
            .models
            .or_else(|| entry.map(|c| c.models.clone()))
            .unwrap_or_default(),
        &mut errs,
    );
    let model_map = clean_map(
        input
            .model_map
            .or_else(|| entry.map(|c| c.model_map.clone()))
            .unwrap_or_default(),
        &mut errs,
    );
    let enabled = input.enabled.or(entry.map(|c| c.enabled)).unwrap_or(true);
    let (quota_rpm, quota_tpm) = merge_quota(
        input.quota,
        entry.map_or((None, None), |c| (c.quota_rpm, c.quota_tpm)),
        &mut errs,
    );
    errs.into_result()?;
    let kind = kind.ok_or_else(|| ApiError::internal("kind validated without value"))?;
    Ok((
        Fields {
            kind,
            name,
            base_url,
            priority,
            weight,
            enabled,
            models,
            model_map,
            quota_rpm,
            quota_tpm,
        },
        pool,
    ))
}

/// Static URL policy, then what the host resolves to (with the private-range and the
/// `http://` rules). A public `https://` name that does not resolve from here is accepted:
/// the gateway's network may see it, and it checks the addresses before every connection.
/// A name that is acceptable only for what it resolves to (`http://`, `localhost`, a
/// dotless compose service) must resolve now.
async fn check_base_url(state: &AppState, raw: &str) -> Result<String, String> {
    let url = state
        .upstream_policy
        .parse_base_url(raw)
        .map_err(|e| e.to_string())?;
    if let Some(host) = url.domain() {
        let lookup = state
            .resolver
            .resolve_checked(host, &state.upstream_policy, url.plaintext());
        match tokio::time::timeout(DNS_CHECK_TIMEOUT, lookup).await {
            Ok(Ok(_)) => {}
            Ok(Err(ResolveError::Policy(e))) => return Err(e.to_string()),
            Ok(Err(ResolveError::Lookup(_))) | Err(_) if url.needs_resolution() => {
                return Err(format!(
                    "host `{host}` does not resolve from the admin API; a plain-http or local \
                     host name is accepted only once it resolves to an address that \
                     ALLOWED_PRIVATE_UPSTREAMS lists"
                ))
            }
            Ok(Err(ResolveError::Lookup(_))) | Err(_) => {}
        }
    }
    Ok(url.as_str().to_string())
}

impl Fields {
    /// The entry row these fields make for entry `id` of `workspace`.
    fn row(self, id: Uuid, workspace_id: Uuid) -> NewProvider {
        NewProvider {
            id,
            workspace_id,
            kind: self.kind,
            name: self.name,
            base_url: self.base_url,
            priority: self.priority,
            weight: self.weight,
            enabled: self.enabled,
            models: self.models,
            model_map: self.model_map,
            quota_rpm: self.quota_rpm,
            quota_tpm: self.quota_tpm,
        }
    }
}

fn name_conflict(e: DbError) -> ApiError {
    if e.unique_violation() == Some(db::providers::NAME_UNIQUE) {
        ApiError::Conflict("a provider with this name already exists in the workspace".into())
    } else {
        e.into()
    }
}

/// Provider entries by priority, each with its pool of keys.
#[utoipa::path(get, path = "/workspaces/{id}/providers", tag = "providers", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = ListOf<ProviderDto>), (status = 404, body = crate::error::ErrorBody)))]
pub async fn list(
    Conn(client): Conn,
    member: Member,
) -> Result<Json<ListOf<ProviderDto>>, ApiError> {
    let ws = &member.workspace;
    let rows = db::providers::list(&client, ws.id).await?;
    let mut pools: HashMap<Uuid, Vec<EntryKey>> = HashMap::new();
    for key in entry_keys::list_for_workspace(&client, ws.id).await? {
        pools.entry(key.entry_id).or_default().push(key);
    }
    Ok(Json(ListOf {
        data: rows
            .into_iter()
            .map(|p| {
                let keys = pools.remove(&p.id).unwrap_or_default();
                ProviderDto::new(p, keys)
            })
            .collect(),
    }))
}

/// Add a provider entry with its pool of keys (`api_key` or `keys`).
#[utoipa::path(post, path = "/workspaces/{id}/providers", tag = "providers", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id")), request_body = ProviderInput,
    responses((status = 201, body = ProviderDto), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    member: Member,
    ApiJson(body): ApiJson<ProviderInput>,
) -> Result<(StatusCode, Json<ProviderDto>), ApiError> {
    let ws = &member.workspace;
    member.require_verified(&state)?;
    let (f, pool) = validate(&state, body, None).await?;
    let pool = match pool {
        PoolChange::Replace(keys) => keys,
        PoolChange::Keep => Vec::new(),
    };
    let pid = db::providers::new_id();
    let row = f.row(pid, ws.id);
    let mut client = state.pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let entry = db::providers::insert(&tx, &row)
        .await
        .map_err(name_conflict)?;
    let sealed = seal_pool(&state, &pool, &entry.binding())?;
    let keys = entry_keys::replace_all(&tx, ws.id, pid, &sealed).await?;
    let created = ProviderDto::new(entry, keys);
    let audit = member.audit(
        "provider.created",
        "provider",
        created.id,
        None,
        snapshot(&created),
    );
    db::audit::record(&tx, &audit).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Change a provider entry; fields left out keep their value, `api_key` or `keys` replaces
/// the whole pool of keys (`PATCH …/keys/{key_id}` and its neighbours change one key).
/// Changing `kind` or `base_url` requires the pool again (400 `api_key_required`) unless
/// the entry has no keys.
#[utoipa::path(put, path = "/workspaces/{id}/providers/{pid}", tag = "providers", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id"), ("pid" = String, Path, description = "provider entry id")),
    request_body = ProviderInput,
    responses((status = 200, body = ProviderDto), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    member: Member,
    Path((_id, pid)): Path<(String, String)>,
    ApiJson(body): ApiJson<ProviderInput>,
) -> Result<Json<ProviderDto>, ApiError> {
    let ws = &member.workspace;
    let pid = parse_id(&pid)?;
    let mut client = state.pool.get().await.map_err(DbError::from)?;
    let current = db::providers::get(&client, ws.id, pid)
        .await?
        .ok_or(ApiError::NotFound)?;
    let current_keys = entry_keys::list_for_entry(&client, ws.id, pid).await?;
    let (f, pool) = validate(&state, body, Some((&current, &current_keys))).await?;

    let tx = client.transaction().await.map_err(DbError::from)?;
    // Taken again under the entry's lock: a key added meanwhile is seen.
    let current = db::providers::lock(&tx, ws.id, pid)
        .await?
        .ok_or(ApiError::NotFound)?;
    let current_keys = entry_keys::list_for_entry(&tx, ws.id, pid).await?;
    // The sealed keys are bound to where they are sent: moving them takes the keys again,
    // so a stolen admin token alone cannot point existing keys at another server.
    let moved = f.kind != current.kind || f.base_url != current.base_url;
    if moved && matches!(pool, PoolChange::Keep) && !current_keys.is_empty() {
        return Err(ApiError::field_code(
            "api_key_required",
            "api_key",
            "is required when kind or base_url changes (or keys, the whole pool)",
        ));
    }
    let before = snapshot(&ProviderDto::new(current, current_keys.clone()));
    let updated = db::providers::update(&tx, &f.row(pid, ws.id))
        .await
        .map_err(name_conflict)?
        .ok_or(ApiError::NotFound)?;
    let keys = match pool {
        PoolChange::Keep => current_keys,
        PoolChange::Replace(pool) => {
            let sealed = seal_pool(&state, &pool, &updated.binding())?;
            entry_keys::replace_all(&tx, ws.id, pid, &sealed).await?
        }
    };
    let updated = ProviderDto::new(updated, keys);
    let audit = member.audit(
        "provider.updated",
        "provider",
        pid,
        before,
        snapshot(&updated),
    );
    db::audit::record(&tx, &audit).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(updated))
}

/// Remove a provider entry and its keys.
#[utoipa::path(delete, path = "/workspaces/{id}/providers/{pid}", tag = "providers", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id"), ("pid" = String, Path, description = "provider entry id")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete(
    Conn(mut client): Conn,
    member: Member,
    Path((_id, pid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let ws = &member.workspace;
    let pid = parse_id(&pid)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let current = db::providers::lock(&tx, ws.id, pid)
        .await?
        .ok_or(ApiError::NotFound)?;
    let keys = entry_keys::list_for_entry(&tx, ws.id, pid).await?;
    if !db::providers::delete(&tx, ws.id, pid).await? {
        return Err(ApiError::NotFound);
    }
    let before = snapshot(&ProviderDto::new(current, keys));
    let audit = member.audit("provider.deleted", "provider", pid, before, None);
    db::audit::record(&tx, &audit).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(StatusCode::NO_CONTENT)
}
