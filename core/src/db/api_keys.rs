//! `api_keys`: Perpetuo keys, stored as SHA-256 behind a unique index.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::limits::{self, Governed, KeySettings, Limits, SetBy};
use super::workspaces::{CacheMode, Role};
use super::{DbError, Sql};
use crate::apikey::{KeyHash, NewApiKey};

/// A key's own response-cache mode: the workspace's, or one of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyCacheMode {
    #[default]
    Inherit,
    Off,
    On,
    OptIn,
}

impl KeyCacheMode {
    pub const ALL: [KeyCacheMode; 4] = [
        KeyCacheMode::Inherit,
        KeyCacheMode::Off,
        KeyCacheMode::On,
        KeyCacheMode::OptIn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyCacheMode::Inherit => "inherit",
            KeyCacheMode::Off => "off",
            KeyCacheMode::On => "on",
            KeyCacheMode::OptIn => "opt_in",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// The mode a request through this key runs under, given its workspace's.
    pub fn resolve(self, workspace: CacheMode) -> CacheMode {
        match self {
            KeyCacheMode::Inherit => workspace,
            KeyCacheMode::Off => CacheMode::Off,
            KeyCacheMode::On => CacheMode::On,
            KeyCacheMode::OptIn => CacheMode::OptIn,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiKey {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub name: String,
    pub prefix: String,
    pub created_at: OffsetDateTime,
    pub last_used_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
    pub expires_at: Option<OffsetDateTime>,
    pub limits: Limits,
    /// Exact names and `prefix*` patterns; empty allows every model.
    pub allowed_models: Vec<String>,
    pub label: Option<String>,
    pub owner_email: Option<String>,
    /// The response-cache mode of requests through this key.
    pub cache_mode: KeyCacheMode,
    /// The user who created the key (`None` once that account is deleted).
    pub created_by: Option<Uuid>,
    pub created_by_email: Option<String>,
    /// Who last set the governed settings.
    pub set_by: SetBy,
}

impl ApiKey {
    /// Whether the key may be used at `now`.
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }

    /// The governed settings that `to` would change. Allowed models compare as a set,
    /// and an expiry at microsecond precision (what the database keeps).
    pub fn changes(&self, to: &KeySettings) -> Vec<Governed> {
        let models = |m: &[String]| {
            let mut m = m.to_vec();
            m.sort();
            m.dedup();
            m
        };
        let micros =
            |t: Option<OffsetDateTime>| t.map(|t| t.unix_timestamp_nanos().div_euclid(1000));
        Governed::ALL
            .into_iter()
            .filter(|g| match g {
                Governed::Limits => to.limits != self.limits,
                Governed::AllowedModels => {
                    models(&to.allowed_models) != models(&self.allowed_models)
                }
                Governed::ExpiresAt => micros(to.expires_at) != micros(self.expires_at),
                Governed::CacheMode => to.cache_mode != self.cache_mode,
            })
            .collect()
    }
}

const COLUMNS: &str = "id, workspace_id, name, prefix, created_at, last_used_at, revoked_at, \
     expires_at, rpm_limit, tpm_limit, concurrency_limit, budget_nusd, budget_period, \
     allowed_models, label, owner_email, cache_mode, created_by, \
     limits_set_by, allowed_models_set_by, expires_at_set_by, cache_mode_set_by, \
     (SELECT u.email FROM users u WHERE u.id = api_keys.created_by) AS created_by_email";

fn from_row(row: &Row) -> ApiKey {
    ApiKey {
        id: row.get("id"),
        workspace_id: row.get("workspace_id"),
        name: row.get("name"),
        prefix: row.get("prefix"),
        created_at: row.get("created_at"),
        last_used_at: row.get("last_used_at"),
        revoked_at: row.get("revoked_at"),
        expires_at: row.get("expires_at"),
        limits: limits::from_row(row),
        allowed_models: row.get("allowed_models"),
        label: row.get("label"),
        owner_email: row.get("owner_email"),
        // The column's CHECK admits only the four modes.
        cache_mode: KeyCacheMode::parse(row.get("cache_mode")).unwrap_or_default(),
        created_by: row.get("created_by"),
        created_by_email: row.get("created_by_email"),
        set_by: SetBy {
            limits: role(row, "limits_set_by"),
            allowed_models: role(row, "allowed_models_set_by"),
            expires_at: role(row, "expires_at_set_by"),
            cache_mode: role(row, "cache_mode_set_by"),
        },
    }
}

fn role(row: &Row, column: &str) -> Option<Role> {
    row.get::<_, Option<&str>>(column).and_then(Role::parse)
}

pub async fn insert(
    db: &impl GenericClient,
    workspace: Uuid,
    name: &str,
    key: &NewApiKey,
    created_by: Option<Uuid>,
    expires_at: Option<OffsetDateTime>,
) -> Result<ApiKey, DbError> {
    let sql = format!(
        "INSERT INTO api_keys (id, workspace_id, name, prefix, key_hash, created_by, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    );
    let row = db
        .traced_query_one(
            &sql,
            &[
                &super::new_id(),
                &workspace,
                &name,
                &key.prefix,
                &key.hash.0.as_slice(),
                &created_by,
                &expires_at,
            ],
        )
        .await?;
    Ok(from_row(&row))
}

pub async fn list(db: &impl GenericClient, workspace: Uuid) -> Result<Vec<ApiKey>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM api_keys WHERE workspace_id = $1 ORDER BY created_at DESC, id DESC"
    );
    let rows = db.traced_query(&sql, &[&workspace]).await?;
    Ok(rows.iter().map(from_row).collect())
}

/// A key's place in the listing order (newest first: `created_at`, then `id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPosition {
    pub created_at: OffsetDateTime,
    pub id: Uuid,
}

/// Up to `limit` keys of the workspace, newest first, older than `after` when given. Reads
/// only the page (the listing's index), however many keys the workspace has.
pub async fn list_page(
    db: &impl GenericClient,
    workspace: Uuid,
    after: Option<KeyPosition>,
    limit: i64,
) -> Result<Vec<ApiKey>, DbError> {
    // The timestamp bound alone can use the (workspace_id, created_at DESC) index.
    let rows = match after {
        None => {
            let sql = format!(
                "SELECT {COLUMNS} FROM api_keys WHERE workspace_id = $1
                 ORDER BY created_at DESC, id DESC LIMIT $2"
            );
            db.traced_query(&sql, &[&workspace, &limit]).await?
        }
        Some(at) => {
            let sql = format!(
                "SELECT {COLUMNS} FROM api_keys WHERE workspace_id = $1
                 AND created_at <= $2 AND (created_at < $2 OR id < $3)
                 ORDER BY created_at DESC, id DESC LIMIT $4"
            );
            db.traced_query(&sql, &[&workspace, &at.created_at, &at.id, &limit])
                .await?
        }
    };
    Ok(rows.iter().map(from_row).collect())
}

pub async fn get(
    db: &impl GenericClient,
    workspace: Uuid,
    id: Uuid,
) -> Result<Option<ApiKey>, DbError> {
    let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE workspace_id = $1 AND id = $2");
    let row = db.traced_query_opt(&sql, &[&workspace, &id]).await?;
    Ok(row.as_ref().map(from_row))
}

/// The key, locked until the end of the transaction (a change checked against what it
/// holds cannot race another change).
pub async fn get_for_update(
    db: &impl GenericClient,
    workspace: Uuid,
    id: Uuid,
) -> Result<Option<ApiKey>, DbError> {
    let sql =
        format!("SELECT {COLUMNS} FROM api_keys WHERE workspace_id = $1 AND id = $2 FOR UPDATE");
    let row = db.traced_query_opt(&sql, &[&workspace, &id]).await?;
    Ok(row.as_ref().map(from_row))
}

/// Revokes a key (idempotent: a revoked key keeps its first revocation time).
pub async fn revoke(
    db: &impl GenericClient,
    workspace: Uuid,
    id: Uuid,
) -> Result<Option<ApiKey>, DbError> {
    let sql = format!(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now())
         WHERE workspace_id = $1 AND id = $2 RETURNING {COLUMNS}"
    );
    let row = db.traced_query_opt(&sql, &[&workspace, &id]).await?;
    Ok(row.as_ref().map(from_row))
}

/// Revokes every live key `user` created in the workspace (a member leaving or removed);
/// returns the keys revoked.
pub async fn revoke_created_by(
    db: &impl GenericClient,
    workspace: Uuid,
    user: Uuid,
) -> Result<Vec<ApiKey>, DbError> {
    let sql = format!(
        "UPDATE api_keys SET revoked_at = now()
         WHERE workspace_id = $1 AND created_by = $2 AND revoked_at IS NULL RETURNING {COLUMNS}"
    );
    let rows = db.traced_query(&sql, &[&workspace, &user]).await?;
    Ok(rows.iter().map(from_row).collect())
}

pub async fn delete(db: &impl GenericClient, workspace: Uuid, id: Uuid) -> Result<bool, DbError> {
    let n = db
        .traced_execute(
            "DELETE FROM api_keys WHERE workspace_id = $1 AND id = $2",
            &[&workspace, &id],
        )
        .await?;
    Ok(n == 1)
}

/// The key with this hash, whatever its state; the caller checks `is_active`.
pub async fn find_by_hash(
    db: &impl GenericClient,
    hash: &KeyHash,
) -> Result<Option<ApiKey>, DbError> {
    let sql = format!("SELECT {COLUMNS}, key_hash FROM api_keys WHERE key_hash = $1");
    let row = db.traced_query_opt(&sql, &[&hash.0.as_slice()]).await?;
    Ok(row.and_then(|r| {
        let stored: Vec<u8> = r.get("key_hash");
        let stored = KeyHash::from_slice(&stored)?;
        stored.ct_eq(hash).then(|| from_row(&r))
    }))
}

/// Of `hashes`, those whose key exists and may be used at `now` (not revoked, not
/// expired). Gateways check the keys they keep for an outage with it.
pub async fn usable_hashes(
    db: &impl GenericClient,
    hashes: &[KeyHash],
    now: OffsetDateTime,
) -> Result<Vec<KeyHash>, DbError> {
    if hashes.is_empty() {
        return Ok(Vec::new());
    }
    let raw: Vec<&[u8]> = hashes.iter().map(|h| h.0.as_slice()).collect();
    let rows = db
        .traced_query(
            "SELECT key_hash FROM api_keys
             WHERE key_hash = ANY($1) AND revoked_at IS NULL
               AND (expires_at IS NULL OR expires_at > $2)",
            &[&raw, &now],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| KeyHash::from_slice(r.get::<_, &[u8]>(0)))
        .collect())
}

/// Records use of several keys in one statement (gateways batch this).
pub async fn touch_last_used(
    db: &impl GenericClient,
    ids: &[Uuid],
    at: OffsetDateTime,
) -> Result<u64, DbError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let n = db
        .traced_execute(
            "UPDATE api_keys SET last_used_at = $2
             WHERE id = ANY($1) AND (last_used_at IS NULL OR last_used_at < $2)",
            &[&ids, &at],
        )
        .await?;
    Ok(n)
}

/// For tests and audits: every stored key hash.
pub async fn raw_hashes(db: &impl GenericClient) -> Result<Vec<Vec<u8>>, DbError> {
    let rows = db
        .traced_query("SELECT key_hash FROM api_keys", &[])
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
