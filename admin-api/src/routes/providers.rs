//! A workspace's provider entries. The provider key is write-only: it is sealed before it
//! reaches the database and responses show only its last four characters.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use perpetuo_core::crypto;
use perpetuo_core::db::providers::{NewProvider, ProviderEntry};
use perpetuo_core::db::{self, DbError};
use perpetuo_core::dns::ResolveError;
use perpetuo_core::provider::ProviderKind;
use perpetuo_core::text;
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::dto::ListOf;
use crate::access::{snapshot, Member};
use crate::error::{ApiError, FieldErrors};
use crate::extract::{parse_id, ApiJson, Conn};
use crate::state::AppState;

const MAX_MODELS: usize = 500;
const MAX_NAME_CHARS: usize = 100;
const MAX_MODEL_CHARS: usize = 256;
const DNS_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
const MAX_KEY_LEN: usize = 4096;
const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1_000_000..=1_000_000;
const WEIGHT_RANGE: std::ops::RangeInclusive<i32> = 0..=1000;

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderDto {
    pub id: Uuid,
    /// openai, anthropic, gemini or openai_compatible.
    pub kind: String,
    pub name: String,
    pub base_url: Option<String>,
    /// Last four characters of the provider key; the key itself is never returned. Empty
    /// for an entry without a key.
    pub key_last4: String,
    /// Whether the entry sends a provider key (an `openai_compatible` entry may have none).
    pub has_key: bool,
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
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<ProviderEntry> for ProviderDto {
    fn from(p: ProviderEntry) -> Self {
        Self {
            has_key: p.has_key(),
            id: p.id,
            kind: p.kind.as_str().to_string(),
            name: p.name,
            base_url: p.base_url,
            key_last4: p.key_last4,
            priority: p.priority,
            weight: p.weight,
            enabled: p.enabled,
            models: p.models,
            model_map: p.model_map,
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

/// Create body (kind and name required; api_key too, except for an `openai_compatible`
/// server that needs none) or update body (any subset).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderInput {
    #[schema(pattern = "^(openai|anthropic|gemini|openai_compatible)$")]
    pub kind: Option<String>,
    /// 1 to 100 printable characters (it is sent in the `x-perpetuo-provider` header).
    #[schema(min_length = 1, max_length = 100)]
    pub name: Option<String>,
    /// Write-only provider key (visible ASCII). Required again when `kind` or `base_url`
    /// changes. Left out (or `null`) for an `openai_compatible` server that needs no key
    /// (Ollama, vLLM, llama.cpp): no `Authorization` header is sent; on an update `null`
    /// removes the key.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 4096)]
    pub api_key: Option<Option<String>>,
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
}

/// What a write does to the entry's provider key.
enum KeyChange {
    /// Left out: a new entry has none, an existing one keeps its own.
    Keep,
    /// `null`: the entry sends no key.
    Remove,
    Set(String),
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

/// Merges `input` onto `current` (or onto defaults for a new entry) and validates the result.
async fn validate(
    state: &AppState,
    input: ProviderInput,
    current: Option<&ProviderEntry>,
) -> Result<(Fields, KeyChange), ApiError> {
    let mut errs = FieldErrors::default();
    let kind = match (input.kind.as_deref(), current) {
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
    let name = match (input.name, current) {
        (Some(n), _) => n.trim().to_string(),
        (None, Some(c)) => c.name.clone(),
        (None, None) => String::new(),
    };
    if name.is_empty() {
        errs.add("name", "is required");
    } else if let Err(msg) = check_text(&name, MAX_NAME_CHARS) {
        errs.add("name", msg);
    }
    let key = match input.api_key {
        None => KeyChange::Keep,
        Some(None) => KeyChange::Remove,
        Some(Some(k)) => KeyChange::Set(k.trim().to_string()),
    };
    match &key {
        KeyChange::Set(k) if k.is_empty() => errs.add(
            "api_key",
            "must not be empty (leave it out for a server that needs no key)",
        ),
        KeyChange::Set(k) if k.len() > MAX_KEY_LEN => errs.add("api_key", "is too long"),
        // It is sent in a request header: visible ASCII only.
        KeyChange::Set(k) if !k.bytes().all(|b| b.is_ascii_graphic()) => errs.add(
            "api_key",
            "must contain only visible ASCII characters (no spaces or control characters)",
        ),
        _ => {}
    }
    let keyless = match &key {
        KeyChange::Set(_) => false,
        KeyChange::Remove => true,
        KeyChange::Keep => current.is_none_or(|c| !c.has_key()),
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
    let base_url = match (input.base_url, current) {
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
    let priority = input
        .priority
        .or(current.map(|c| c.priority))
        .unwrap_or(100);
    if !PRIORITY_RANGE.contains(&priority) {
        errs.add("priority", "must be between -1000000 and 1000000");
    }
    let weight = input.weight.or(current.map(|c| c.weight)).unwrap_or(1);
    if !WEIGHT_RANGE.contains(&weight) {
        errs.add("weight", "must be between 0 (standby) and 1000");
    }
    let models = clean_models(
        input
            .models
            .or_else(|| current.map(|c| c.models.clone()))
            .unwrap_or_default(),
        &mut errs,
    );
    let model_map = clean_map(
        input
            .model_map
            .or_else(|| current.map(|c| c.model_map.clone()))
            .unwrap_or_default(),
        &mut errs,
    );
    let enabled = input.enabled.or(current.map(|c| c.enabled)).unwrap_or(true);
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
        },
        key,
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

/// Seals `key` for the entry `f` describes.
fn seal(
    state: &AppState,
    key: &str,
    entry_id: Uuid,
    workspace_id: Uuid,
    f: &Fields,
) -> Result<crypto::Sealed, ApiError> {
    let binding = crypto::KeyBinding {
        entry_id,
        workspace_id,
        kind: f.kind,
        base_url: f.base_url.as_deref(),
    };
    state
        .master_key
        .seal(key, &binding)
        .map_err(ApiError::internal)
}

fn name_conflict(e: DbError) -> ApiError {
    if e.unique_violation() == Some(db::providers::NAME_UNIQUE) {
        ApiError::Conflict("a provider with this name already exists in the workspace".into())
    } else {
        e.into()
    }
}

/// Provider entries by priority.
#[utoipa::path(get, path = "/workspaces/{id}/providers", tag = "providers", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id")),
    responses((status = 200, body = ListOf<ProviderDto>), (status = 404, body = crate::error::ErrorBody)))]
pub async fn list(
    Conn(client): Conn,
    member: Member,
) -> Result<Json<ListOf<ProviderDto>>, ApiError> {
    let ws = &member.workspace;
    let rows = db::providers::list(&client, ws.id).await?;
    Ok(Json(ListOf {
        data: rows.into_iter().map(Into::into).collect(),
    }))
}

/// Add a provider entry.
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
    let (f, key) = validate(&state, body, None).await?;
    let key = match key {
        KeyChange::Set(k) => k,
        KeyChange::Keep | KeyChange::Remove => String::new(),
    };
    let pid = db::providers::new_id();
    let row = NewProvider {
        id: pid,
        workspace_id: ws.id,
        sealed: seal(&state, &key, pid, ws.id, &f)?,
        key_last4: crypto::last4(&key),
        kind: f.kind,
        name: f.name,
        base_url: f.base_url,
        priority: f.priority,
        weight: f.weight,
        enabled: f.enabled,
        models: f.models,
        model_map: f.model_map,
    };
    let mut client = state.pool.get().await.map_err(DbError::from)?;
    let tx = client.transaction().await.map_err(DbError::from)?;
    let created: ProviderDto = db::providers::insert(&tx, &row)
        .await
        .map_err(name_conflict)?
        .into();
    let entry = member.audit(
        "provider.created",
        "provider",
        created.id,
        None,
        snapshot(&created),
    );
    db::audit::record(&tx, &entry).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Change a provider entry; fields left out keep their value, `api_key` replaces the key.
/// Changing `kind` or `base_url` requires `api_key` too (400 `api_key_required`).
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
    let (f, key) = validate(&state, body, Some(&current)).await?;
    // The sealed key is bound to where it is sent: moving it takes the key again, so a
    // stolen admin token alone cannot point an existing key at another server.
    let moved = f.kind != current.kind || f.base_url != current.base_url;
    let key = match key {
        KeyChange::Keep if moved && current.has_key() => {
            return Err(ApiError::field_code(
                "api_key_required",
                "api_key",
                "is required when kind or base_url changes",
            ))
        }
        // No key to protect: the empty one is bound to the new place.
        KeyChange::Keep if moved => Some(String::new()),
        KeyChange::Keep => None,
        KeyChange::Remove => Some(String::new()),
        KeyChange::Set(k) => Some(k),
    };
    let (sealed, key_last4) = match key {
        Some(k) => (seal(&state, &k, pid, ws.id, &f)?, crypto::last4(&k)),
        None => (current.sealed.clone(), current.key_last4.clone()),
    };
    let row = NewProvider {
        id: pid,
        workspace_id: ws.id,
        sealed,
        key_last4,
        kind: f.kind,
        name: f.name,
        base_url: f.base_url,
        priority: f.priority,
        weight: f.weight,
        enabled: f.enabled,
        models: f.models,
        model_map: f.model_map,
    };
    let before = snapshot(&ProviderDto::from(current));
    let tx = client.transaction().await.map_err(DbError::from)?;
    let updated: ProviderDto = db::providers::update(&tx, &row)
        .await
        .map_err(name_conflict)?
        .ok_or(ApiError::NotFound)?
        .into();
    let entry = member.audit(
        "provider.updated",
        "provider",
        pid,
        before,
        snapshot(&updated),
    );
    db::audit::record(&tx, &entry).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(Json(updated))
}

/// Remove a provider entry.
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
    let current = db::providers::get(&tx, ws.id, pid)
        .await?
        .ok_or(ApiError::NotFound)?;
    if !db::providers::delete(&tx, ws.id, pid).await? {
        return Err(ApiError::NotFound);
    }
    let before = snapshot(&ProviderDto::from(current));
    let entry = member.audit("provider.deleted", "provider", pid, before, None);
    db::audit::record(&tx, &entry).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(StatusCode::NO_CONTENT)
}
