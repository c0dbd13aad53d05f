//! `provider_keys`: a workspace's provider entries. The provider key is stored sealed
//! (see `crypto`); only its last four characters are kept in clear for display.

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::Row;
use uuid::Uuid;

use super::DbError;
use crate::crypto::{self, KeyBinding, MasterKey, SealError, Sealed};
use crate::provider::ProviderKind;

pub const NAME_UNIQUE: &str = "provider_keys_workspace_id_name_key";

#[derive(Debug, Clone)]
pub struct ProviderEntry {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub kind: ProviderKind,
    pub name: String,
    pub base_url: Option<String>,
    pub sealed: Sealed,
    pub key_last4: String,
    pub priority: i32,
    /// Share of its priority's traffic, relative to the others' (0: standby).
    pub weight: i32,
    pub enabled: bool,
    pub models: Vec<String>,
    pub model_map: BTreeMap<String, String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl ProviderEntry {
    /// Whether the entry sends a provider key. A keyless entry (an OpenAI-compatible
    /// server that needs none) keeps the empty key, sealed and bound like any other, so
    /// re-sealing and the key checks treat every row alike.
    pub fn has_key(&self) -> bool {
        !self.key_last4.is_empty()
    }

    /// What this row's sealed key is bound to.
    pub fn binding(&self) -> KeyBinding<'_> {
        KeyBinding {
            entry_id: self.id,
            workspace_id: self.workspace_id,
            kind: self.kind,
            base_url: self.base_url.as_deref(),
        }
    }
}

const COLUMNS: &str =
    "id, workspace_id, kind, name, base_url, sealed_key, key_nonce, key_version, aad_version, \
                       key_last4, priority, weight, enabled, models, model_map, created_at, updated_at";

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
        sealed: Sealed {
            ciphertext: row.get("sealed_key"),
            nonce: row.get("key_nonce"),
            version: row.get("key_version"),
            aad_version: row.get("aad_version"),
        },
        key_last4: row.get("key_last4"),
        priority: row.get("priority"),
        weight: row.get("weight"),
        enabled: row.get("enabled"),
        models: row.get("models"),
        model_map,
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    }
}

/// A new entry; `id` is chosen by the caller because the sealed key is bound to it.
#[derive(Debug, Clone)]
pub struct NewProvider {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub kind: ProviderKind,
    pub name: String,
    pub base_url: Option<String>,
    pub sealed: Sealed,
    pub key_last4: String,
    pub priority: i32,
    pub weight: i32,
    pub enabled: bool,
    pub models: Vec<String>,
    pub model_map: BTreeMap<String, String>,
}

/// The 15 written columns of an entry, in the order the statements below use.
fn write_params<'a>(
    p: &'a NewProvider,
    kind: &'a &'static str,
    model_map: &'a Json<&'a BTreeMap<String, String>>,
) -> [&'a (dyn ToSql + Sync); 15] {
    [
        &p.id,
        &p.workspace_id,
        kind,
        &p.name,
        &p.base_url,
        &p.sealed.ciphertext,
        &p.sealed.nonce,
        &p.sealed.version,
        &p.key_last4,
        &p.priority,
        &p.enabled,
        &p.models,
        model_map,
        &p.sealed.aad_version,
        &p.weight,
    ]
}

pub fn new_id() -> Uuid {
    super::new_id()
}

pub async fn insert(db: &impl GenericClient, p: &NewProvider) -> Result<ProviderEntry, DbError> {
    let sql = format!(
        "INSERT INTO provider_keys (id, workspace_id, kind, name, base_url, sealed_key, key_nonce,
             key_version, key_last4, priority, enabled, models, model_map, aad_version, weight)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
         RETURNING {COLUMNS}"
    );
    let (kind, model_map) = (p.kind.as_str(), Json(&p.model_map));
    let row = db
        .query_one(&sql, &write_params(p, &kind, &model_map))
        .await?;
    Ok(from_row(&row))
}

/// Entries of a workspace by priority (then age).
pub async fn list(db: &impl GenericClient, workspace: Uuid) -> Result<Vec<ProviderEntry>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM provider_keys WHERE workspace_id = $1 ORDER BY priority, created_at, id"
    );
    let rows = db.query(&sql, &[&workspace]).await?;
    Ok(rows.iter().map(from_row).collect())
}

pub async fn get(
    db: &impl GenericClient,
    workspace: Uuid,
    id: Uuid,
) -> Result<Option<ProviderEntry>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM provider_keys WHERE workspace_id = $1 AND id = $2");
    let row = db.query_opt(&sql, &[&workspace, &id]).await?;
    Ok(row.as_ref().map(from_row))
}

/// Replaces the editable fields of an entry (the caller merges a partial update onto the
/// current row first). Returns `None` when the entry is not in this workspace.
pub async fn update(
    db: &impl GenericClient,
    p: &NewProvider,
) -> Result<Option<ProviderEntry>, DbError> {
    let sql = format!(
        "UPDATE provider_keys SET kind = $3, name = $4, base_url = $5, sealed_key = $6, key_nonce = $7,
             key_version = $8, key_last4 = $9, priority = $10, enabled = $11, models = $12,
             model_map = $13, aad_version = $14, weight = $15, updated_at = now()
         WHERE workspace_id = $2 AND id = $1 RETURNING {COLUMNS}"
    );
    let (kind, model_map) = (p.kind.as_str(), Json(&p.model_map));
    let row = db
        .query_opt(&sql, &write_params(p, &kind, &model_map))
        .await?;
    Ok(row.as_ref().map(from_row))
}

pub async fn delete(db: &impl GenericClient, workspace: Uuid, id: Uuid) -> Result<bool, DbError> {
    let n = db
        .execute(
            "DELETE FROM provider_keys WHERE workspace_id = $1 AND id = $2",
            &[&workspace, &id],
        )
        .await?;
    Ok(n == 1)
}

#[derive(Debug, thiserror::Error)]
pub enum ResealError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("provider entry {entry}: {source}")]
    Seal { entry: Uuid, source: SealError },
}

impl From<tokio_postgres::Error> for ResealError {
    fn from(e: tokio_postgres::Error) -> Self {
        ResealError::Db(e.into())
    }
}

/// Re-seals every entry still sealed under an older associated-data format with the
/// current one (see `crypto`), in one transaction: either every such row is re-sealed or
/// none is (a row that does not open with `master_key` aborts the whole run). Running it
/// again finds nothing to do. Returns how many rows were re-sealed.
pub async fn reseal_old_formats(
    client: &mut deadpool_postgres::Client,
    master_key: &MasterKey,
) -> Result<usize, ResealError> {
    let tx = client.transaction().await?;
    let sql = format!(
        "SELECT {COLUMNS} FROM provider_keys WHERE aad_version <> $1 ORDER BY id FOR UPDATE"
    );
    let rows = tx.query(&sql, &[&crypto::AAD_CURRENT]).await?;
    let mut done = 0;
    for entry in rows.iter().map(from_row) {
        let seal_err = |source| ResealError::Seal {
            entry: entry.id,
            source,
        };
        let key = master_key
            .open(&entry.sealed, &entry.binding())
            .map_err(seal_err)?;
        let sealed = master_key
            .seal(key.expose(), &entry.binding())
            .map_err(seal_err)?;
        tx.execute(
            "UPDATE provider_keys SET sealed_key = $2, key_nonce = $3, key_version = $4,
                 aad_version = $5
             WHERE id = $1",
            &[
                &entry.id,
                &sealed.ciphertext,
                &sealed.nonce,
                &sealed.version,
                &sealed.aad_version,
            ],
        )
        .await?;
        done += 1;
    }
    tx.commit().await?;
    Ok(done)
}

/// Every entry of every workspace, by id (configuration checks read them to see that
/// their keys open).
pub async fn all(db: &impl GenericClient) -> Result<Vec<ProviderEntry>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM provider_keys ORDER BY id");
    let rows = db.query(&sql, &[]).await?;
    Ok(rows.iter().map(from_row).collect())
}

/// What a master-key rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rows re-sealed under the current key.
    pub resealed: usize,
    /// Rows already sealed under the current key (and format), left as they were.
    pub already_current: usize,
}

/// Re-seals every entry not yet under `master_key`'s current key (and current format),
/// opening it with the previous key `master_key` holds, in one transaction: a row that
/// opens under neither key aborts the run and changes nothing. Rows that already open under
/// the current key are left alone, so running it again re-seals nothing.
pub async fn rotate_master_key(
    client: &mut deadpool_postgres::Client,
    master_key: &MasterKey,
) -> Result<Rotation, ResealError> {
    let tx = client.transaction().await?;
    let sql = format!("SELECT {COLUMNS} FROM provider_keys ORDER BY id FOR UPDATE");
    let rows = tx.query(&sql, &[]).await?;
    let mut done = Rotation {
        resealed: 0,
        already_current: 0,
    };
    for entry in rows.iter().map(from_row) {
        let binding = entry.binding();
        if entry.sealed.aad_version == crypto::AAD_CURRENT
            && master_key.open_current(&entry.sealed, &binding).is_ok()
        {
            done.already_current += 1;
            continue;
        }
        let seal_err = |source| ResealError::Seal {
            entry: entry.id,
            source,
        };
        let key = master_key.open(&entry.sealed, &binding).map_err(seal_err)?;
        let sealed = master_key.seal(key.expose(), &binding).map_err(seal_err)?;
        tx.execute(
            "UPDATE provider_keys SET sealed_key = $2, key_nonce = $3, key_version = $4,
                 aad_version = $5
             WHERE id = $1",
            &[
                &entry.id,
                &sealed.ciphertext,
                &sealed.nonce,
                &sealed.version,
                &sealed.aad_version,
            ],
        )
        .await?;
        done.resealed += 1;
    }
    tx.commit().await?;
    Ok(done)
}

/// For tests and audits: the raw sealed column of every entry.
pub async fn raw_sealed_columns(db: &impl GenericClient) -> Result<Vec<Vec<u8>>, DbError> {
    let rows = db
        .query("SELECT sealed_key FROM provider_keys", &[])
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
