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
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::dto::ListOf;
use super::member_workspace;
use crate::error::{ApiError, FieldErrors};
use crate::extract::{parse_id, ApiJson, AuthUser};
use crate::state::AppState;

const MAX_MODELS: usize = 500;
const DNS_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
const MAX_KEY_LEN: usize = 4096;
const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1_000_000..=1_000_000;

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderDto {
    pub id: Uuid,
    /// openai, anthropic, gemini or openai_compatible.
    pub kind: String,
    pub name: String,
    pub base_url: Option<String>,
    /// Last four characters of the provider key; the key itself is never returned.
    pub key_last4: String,
    /// Lower is tried first; equal priorities share load.
    pub priority: i32,
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
            id: p.id,
            kind: p.kind.as_str().to_string(),
            name: p.name,
            base_url: p.base_url,
            key_last4: p.key_last4,
            priority: p.priority,
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

/// Create body (kind, name, api_key required) or update body (any subset).
#[derive(Debug, Deserialize, ToSchema)]
pub struct ProviderInput {
    pub kind: Option<String>,
    pub name: Option<String>,
    /// Write-only provider key.
    pub api_key: Option<String>,
    /// Required for openai_compatible; otherwise overrides the provider's public endpoint.
    /// `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub base_url: Option<Option<String>>,
    pub priority: Option<i32>,
    pub enabled: Option<bool>,
    pub models: Option<Vec<String>>,
    pub model_map: Option<BTreeMap<String, String>>,
}

/// The validated fields of an entry, before sealing.
struct Fields {
    kind: ProviderKind,
    name: String,
    base_url: Option<String>,
    priority: i32,
    enabled: bool,
    models: Vec<String>,
    model_map: BTreeMap<String, String>,
}

fn clean_models(models: Vec<String>, errs: &mut FieldErrors) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for m in models.into_iter().map(|m| m.trim().to_string()) {
        if m.is_empty() || m.len() > 200 {
            errs.add("models", "each model must be 1 to 200 characters");
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
        if k.is_empty() || v.is_empty() || k.len() > 200 || v.len() > 200 {
            errs.add("model_map", "names must be 1 to 200 characters");
        } else {
            out.insert(k, v);
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
) -> Result<(Fields, Option<String>), ApiError> {
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
    } else if name.chars().count() > 100 {
        errs.add("name", "must be at most 100 characters");
    }
    let api_key = input.api_key.map(|k| k.trim().to_string());
    match (&api_key, current) {
        (None, None) => errs.add("api_key", "is required"),
        (Some(k), _) if k.is_empty() => errs.add("api_key", "must not be empty"),
        (Some(k), _) if k.len() > MAX_KEY_LEN => errs.add("api_key", "is too long"),
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
            enabled,
            models,
            model_map,
        },
        api_key,
    ))
}

/// Static URL policy, then what the host resolves to. A name that does not resolve from
/// here is accepted: the gateway checks the addresses again before every connection.
async fn check_base_url(state: &AppState, raw: &str) -> Result<String, String> {
    let url = state
        .upstream_policy
        .parse_base_url(raw)
        .map_err(|e| e.to_string())?;
    if let Some(url::Host::Domain(host)) = url.url().host() {
        let lookup = state.resolver.resolve_checked(host, &state.upstream_policy);
        match tokio::time::timeout(DNS_CHECK_TIMEOUT, lookup).await {
            Ok(Err(ResolveError::Policy(e))) => return Err(e.to_string()),
            Ok(Ok(_)) | Ok(Err(ResolveError::Lookup(_))) | Err(_) => {}
        }
    }
    Ok(url.as_str().to_string())
}

fn seal(state: &AppState, key: &str, id: Uuid) -> Result<crypto::Sealed, ApiError> {
    state
        .master_key
        .seal(key, id.as_bytes())
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
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<ListOf<ProviderDto>>, ApiError> {
    let ws = member_workspace(&state, user, &id).await?;
    let client = state.pool.get().await.map_err(DbError::from)?;
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
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ProviderInput>,
) -> Result<(StatusCode, Json<ProviderDto>), ApiError> {
    let ws = member_workspace(&state, user, &id).await?;
    let (f, key) = validate(&state, body, None).await?;
    let key = key.ok_or_else(|| ApiError::field("api_key", "is required"))?;
    let pid = db::providers::new_id();
    let row = NewProvider {
        id: pid,
        workspace_id: ws.id,
        kind: f.kind,
        name: f.name,
        base_url: f.base_url,
        sealed: seal(&state, &key, pid)?,
        key_last4: crypto::last4(&key),
        priority: f.priority,
        enabled: f.enabled,
        models: f.models,
        model_map: f.model_map,
    };
    let client = state.pool.get().await.map_err(DbError::from)?;
    let created = db::providers::insert(&client, &row)
        .await
        .map_err(name_conflict)?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// Change a provider entry; fields left out keep their value, `api_key` replaces the key.
#[utoipa::path(put, path = "/workspaces/{id}/providers/{pid}", tag = "providers", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id"), ("pid" = String, Path, description = "provider entry id")),
    request_body = ProviderInput,
    responses((status = 200, body = ProviderDto), (status = 400, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, pid)): Path<(String, String)>,
    ApiJson(body): ApiJson<ProviderInput>,
) -> Result<Json<ProviderDto>, ApiError> {
    let ws = member_workspace(&state, user, &id).await?;
    let pid = parse_id(&pid)?;
    let client = state.pool.get().await.map_err(DbError::from)?;
    let current = db::providers::get(&client, ws.id, pid)
        .await?
        .ok_or(ApiError::NotFound)?;
    let (f, key) = validate(&state, body, Some(&current)).await?;
    let (sealed, key_last4) = match key {
        Some(k) => (seal(&state, &k, pid)?, crypto::last4(&k)),
        None => (current.sealed.clone(), current.key_last4.clone()),
    };
    let row = NewProvider {
        id: pid,
        workspace_id: ws.id,
        kind: f.kind,
        name: f.name,
        base_url: f.base_url,
        sealed,
        key_last4,
        priority: f.priority,
        enabled: f.enabled,
        models: f.models,
        model_map: f.model_map,
    };
    let updated = db::providers::update(&client, &row)
        .await
        .map_err(name_conflict)?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(updated.into()))
}

/// Remove a provider entry.
#[utoipa::path(delete, path = "/workspaces/{id}/providers/{pid}", tag = "providers", security(("bearer" = [])),
    params(("id" = String, Path, description = "workspace id"), ("pid" = String, Path, description = "provider entry id")),
    responses((status = 204), (status = 404, body = crate::error::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, pid)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let ws = member_workspace(&state, user, &id).await?;
    let pid = parse_id(&pid)?;
    let client = state.pool.get().await.map_err(DbError::from)?;
    if db::providers::delete(&client, ws.id, pid).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}
