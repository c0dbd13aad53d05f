//! `provider_keys`: a workspace's provider entries — where requests go, in which order and
//! share, for which models, within which quota. An entry's provider keys are its pool, in
//! `provider_entry_keys` (see `entry_keys`), each sealed for the entry this module's
//! [`ProviderEntry::binding`] describes.

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{DbError, Sql};
use crate::crypto::KeyBinding;
use crate::provider::ProviderKind;

pub const NAME_UNIQUE: &str = "provider_keys_workspace_id_name_key";

#[derive(Debug, Clone)]
pub struct ProviderEntry {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub kind: ProviderKind,
    pub name: String,
    pub base_url: Option<String>,
    pub priority: i32,
    /// Share of its priority's traffic, relative to the others' (0: standby).
    pub weight: i32,
    pub enabled: bool,
    pub models: Vec<String>,
    pub model_map: BTreeMap<String, String>,
    /// The deployment's own requests per minute, when it has a fixed quota.
    pub quota_rpm: Option<i32>,
    /// The deployment's own tokens per minute, when it has a fixed quota.
    pub quota_tpm: Option<i64>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl ProviderEntry {
    /// What the sealed keys of this entry's pool are bound to.
    pub fn binding(&self) -> KeyBinding<'_> {
        KeyBinding {
            entry_id: self.id,
            workspace_id: self.workspace_id,
            kind: self.kind,
            base_url: self.base_url.as_deref(),
        }
    }
}

const COLUMNS: &str = "id, workspace_id, kind, name, base_url, priority, weight, enabled, models, \
                       model_map, quota_rpm, quota_tpm, created_at, updated_at";

fn from_row(row: &Row) -> ProviderEntry {
    let kind: String = row.get("kind");
    let Json(model_map): Json<BTreeMap<String, String>> = row
        .try_get("model_map")
        .unwrap_or_else(|_| Json(BTreeMap::new()));
    ProviderEntry {
        id: row.get("id"),
        workspace_id: row.get("workspace_id"),
        kind: kind.parse().unwrap_or(ProviderKind::OpenaiCompatible),
        name: row.get("name"),
        base_url: row.get("base_url"),
        priority: row.get("priority"),
        weight: row.get("weight"),
        enabled: row.get("enabled"),
        models: row.get("models"),
        model_map,
        quota_rpm: row.get("quota_rpm"),
        quota_tpm: row.get("quota_tpm"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    }
}

/// A new entry (or an entry's new state); `id` is chosen by the caller because the sealed
/// keys of its pool are bound to it.
#[derive(Debug, Clone)]
pub struct NewProvider {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub kind: ProviderKind,
    pub name: String,
    pub base_url: Option<String>,
    pub priority: i32,
    pub weight: i32,
    pub enabled: bool,
    pub models: Vec<String>,
    pub model_map: BTreeMap<String, String>,
    pub quota_rpm: Option<i32>,
    pub quota_tpm: Option<i64>,
}

/// The 12 written columns of an entry, in the order the statements below use.
fn write_params<'a>(
    p: &'a NewProvider,
    kind: &'a &'static str,
    model_map: &'a Json<&'a BTreeMap<String, String>>,
) -> [&'a (dyn ToSql + Sync); 12] {
    [
        &p.id,
        &p.workspace_id,
        kind,
        &p.name,
        &p.base_url,
        &p.priority,
        &p.enabled,
        &p.models,
        model_map,
        &p.weight,
        &p.quota_rpm,
        &p.quota_tpm,
    ]
}

pub fn new_id() -> Uuid {
    super::new_id()
}

pub async fn insert(db: &impl GenericClient, p: &NewProvider) -> Result<ProviderEntry, DbError> {
    let sql = format!(
        "INSERT INTO provider_keys (id, workspace_id, kind, name, base_url, priority, enabled,
             models, model_map, weight, quota_rpm, quota_tpm)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         RETURNING {COLUMNS}"
    );
    let (kind, model_map) = (p.kind.as_str(), Json(&p.model_map));
    let row = db
        .traced_query_one(&sql, &write_params(p, &kind, &model_map))
        .await?;
    Ok(from_row(&row))
}

/// Entries of a workspace by priority (then age).
pub async fn list(db: &impl GenericClient, workspace: Uuid) -> Result<Vec<ProviderEntry>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM provider_keys WHERE workspace_id = $1 ORDER BY priority, created_at, id"
    );
    let rows = db.traced_query(&sql, &[&workspace]).await?;
    Ok(rows.iter().map(from_row).collect())
}

pub async fn get(
    db: &impl GenericClient,
    workspace: Uuid,
    id: Uuid,
) -> Result<Option<ProviderEntry>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM provider_keys WHERE workspace_id = $1 AND id = $2");
    let row = db.traced_query_opt(&sql, &[&workspace, &id]).await?;
    Ok(row.as_ref().map(from_row))
}

/// [`get`], locking the row until the transaction ends: changes to the entry's pool take
/// it first, so two of them (two keys added at once, say) see each other's result.
pub async fn lock(
    db: &impl GenericClient,
    workspace: Uuid,
    id: Uuid,
) -> Result<Option<ProviderEntry>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM provider_keys WHERE workspace_id = $1 AND id = $2 FOR UPDATE"
    );
    let row = db.traced_query_opt(&sql, &[&workspace, &id]).await?;
    Ok(row.as_ref().map(from_row))
}

/// Replaces the editable fields of an entry (the caller merges a partial update onto the
/// current row first). Returns `None` when the entry is not in this workspace.
pub async fn update(
    db: &impl GenericClient,
    p: &NewProvider,
) -> Result<Option<ProviderEntry>, DbError> {
    let sql = format!(
        "UPDATE provider_keys SET kind = $3, name = $4, base_url = $5, priority = $6, enabled = $7,
             models = $8, model_map = $9, weight = $10, quota_rpm = $11, quota_tpm = $12,
             updated_at = now()
         WHERE workspace_id = $2 AND id = $1 RETURNING {COLUMNS}"
    );
    let (kind, model_map) = (p.kind.as_str(), Json(&p.model_map));
    let row = db
        .traced_query_opt(&sql, &write_params(p, &kind, &model_map))
        .await?;
    Ok(row.as_ref().map(from_row))
}

pub async fn delete(db: &impl GenericClient, workspace: Uuid, id: Uuid) -> Result<bool, DbError> {
    let n = db
        .traced_execute(
            "DELETE FROM provider_keys WHERE workspace_id = $1 AND id = $2",
            &[&workspace, &id],
        )
        .await?;
    Ok(n == 1)
}
