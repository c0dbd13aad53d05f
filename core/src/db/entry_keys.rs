//! `provider_entry_keys`: the pool of provider keys of each entry. Every key is stored
//! sealed (see `crypto`) with its entry's [`KeyBinding`] — entry id, workspace, kind and
//! base URL; the key's own id is not part of it — and only its last four characters are
//! kept in clear for display. A key has a label (unique in its entry), a weight (its share
//! of the entry's traffic; 0 is a standby key) and a switch. An entry without keys (an
//! OpenAI-compatible server that needs none) has no row here.
//!
//! The sealing helpers (re-sealing older formats, rotating the master key, reading every
//! key with what it is bound to) work on this table.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{DbError, Sql};
use crate::crypto::{self, KeyBinding, MasterKey, SealError, Sealed};
use crate::provider::ProviderKind;

/// The constraint that keeps labels unique within an entry.
pub const LABEL_UNIQUE: &str = "provider_entry_keys_entry_label_key";

/// Most keys one entry holds (checked by the admin API).
pub const MAX_PER_ENTRY: usize = 32;

/// One provider key of an entry's pool.
#[derive(Debug, Clone)]
pub struct EntryKey {
    pub id: Uuid,
    pub entry_id: Uuid,
    pub workspace_id: Uuid,
    /// 1 to 100 printable characters, unique in the entry.
    pub label: String,
    /// Share of the entry's traffic, relative to its other keys' (0: standby, used only
    /// when the entry's other keys are out).
    pub weight: i32,
    pub enabled: bool,
    pub sealed: Sealed,
    pub key_last4: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl EntryKey {
    /// What this key's seal is bound to: its entry, with the entry's `kind` and `base_url`.
    pub fn binding<'a>(&self, kind: ProviderKind, base_url: Option<&'a str>) -> KeyBinding<'a> {
        KeyBinding {
            entry_id: self.entry_id,
            workspace_id: self.workspace_id,
            kind,
            base_url,
        }
    }
}

/// A key to store in an entry's pool, already sealed for the entry.
#[derive(Debug, Clone)]
pub struct NewEntryKey {
    pub id: Uuid,
    pub label: String,
    pub weight: i32,
    pub enabled: bool,
    pub sealed: Sealed,
    pub key_last4: String,
}

/// What an update of a key changes; `None` keeps the value.
#[derive(Debug, Clone, Default)]
pub struct KeyChanges {
    pub label: Option<String>,
    pub weight: Option<i32>,
    pub enabled: Option<bool>,
}

const COLUMNS: &str = "id, entry_id, workspace_id, label, weight, enabled, sealed_key, key_nonce, \
                       key_version, aad_version, key_last4, created_at, updated_at";

/// [`COLUMNS`] of the table aliased `k`, for statements that join the entry.
const K_COLUMNS: &str = "k.id, k.entry_id, k.workspace_id, k.label, k.weight, k.enabled, \
                         k.sealed_key, k.key_nonce, k.key_version, k.aad_version, k.key_last4, \
                         k.created_at, k.updated_at";

fn from_row(row: &Row) -> EntryKey {
    EntryKey {
        id: row.get("id"),
        entry_id: row.get("entry_id"),
        workspace_id: row.get("workspace_id"),
        label: row.get("label"),
        weight: row.get("weight"),
        enabled: row.get("enabled"),
        sealed: Sealed {
            ciphertext: row.get("sealed_key"),
            nonce: row.get("key_nonce"),
            version: row.get("key_version"),
            aad_version: row.get("aad_version"),
        },
        key_last4: row.get("key_last4"),
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    }
}

/// A new key id.
pub fn new_id() -> Uuid {
    super::new_id()
}

/// The keys of one entry, oldest first.
pub async fn list_for_entry(
    db: &impl GenericClient,
    workspace: Uuid,
    entry: Uuid,
) -> Result<Vec<EntryKey>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM provider_entry_keys WHERE workspace_id = $1 AND entry_id = $2
         ORDER BY created_at, id"
    );
    let rows = db.traced_query(&sql, &[&workspace, &entry]).await?;
    Ok(rows.iter().map(from_row).collect())
}

/// Every key of a workspace's entries, by entry, then oldest first: one read for all the
/// pools of a workspace.
pub async fn list_for_workspace(
    db: &impl GenericClient,
    workspace: Uuid,
) -> Result<Vec<EntryKey>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM provider_entry_keys WHERE workspace_id = $1
         ORDER BY entry_id, created_at, id"
    );
    let rows = db.traced_query(&sql, &[&workspace]).await?;
    Ok(rows.iter().map(from_row).collect())
}

/// One key of an entry.
pub async fn get(
    db: &impl GenericClient,
    workspace: Uuid,
    entry: Uuid,
    id: Uuid,
) -> Result<Option<EntryKey>, DbError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM provider_entry_keys
         WHERE workspace_id = $1 AND entry_id = $2 AND id = $3"
    );
    let row = db
        .traced_query_opt(&sql, &[&workspace, &entry, &id])
        .await?;
    Ok(row.as_ref().map(from_row))
}

/// Adds a key to the pool of `entry` (a label already in the pool is a unique violation
/// of [`LABEL_UNIQUE`]).
pub async fn insert(
    db: &impl GenericClient,
    workspace: Uuid,
    entry: Uuid,
    key: &NewEntryKey,
) -> Result<EntryKey, DbError> {
    let sql = format!(
        "INSERT INTO provider_entry_keys (id, entry_id, workspace_id, label, weight, enabled,
             sealed_key, key_nonce, key_version, aad_version, key_last4)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         RETURNING {COLUMNS}"
    );
    let row = db
        .traced_query_one(
            &sql,
            &[
                &key.id,
                &entry,
                &workspace,
                &key.label,
                &key.weight,
                &key.enabled,
                &key.sealed.ciphertext,
                &key.sealed.nonce,
                &key.sealed.version,
                &key.sealed.aad_version,
                &key.key_last4,
            ],
        )
        .await?;
    Ok(from_row(&row))
}

/// Changes a key's label, weight or switch; `None` when the key is not in this entry.
pub async fn update(
    db: &impl GenericClient,
    workspace: Uuid,
    entry: Uuid,
    id: Uuid,
    changes: &KeyChanges,
) -> Result<Option<EntryKey>, DbError> {
    let sql = format!(
        "UPDATE provider_entry_keys SET label = COALESCE($4, label),
             weight = COALESCE($5, weight), enabled = COALESCE($6, enabled), updated_at = now()
         WHERE workspace_id = $1 AND entry_id = $2 AND id = $3
         RETURNING {COLUMNS}"
    );
    let row = db
        .traced_query_opt(
            &sql,
            &[
                &workspace,
                &entry,
                &id,
                &changes.label,
                &changes.weight,
                &changes.enabled,
            ],
        )
        .await?;
    Ok(row.as_ref().map(from_row))
}

/// Removes a key from its entry's pool; whether it was there.
pub async fn delete(
    db: &impl GenericClient,
    workspace: Uuid,
    entry: Uuid,
    id: Uuid,
) -> Result<bool, DbError> {
    let n = db
        .traced_execute(
            "DELETE FROM provider_entry_keys WHERE workspace_id = $1 AND entry_id = $2 AND id = $3",
            &[&workspace, &entry, &id],
        )
        .await?;
    Ok(n == 1)
}

/// Replaces the whole pool of `entry` with `keys` (in their order; none leaves the entry
/// without keys): what a change of the entry's kind or base URL, which binds every key
/// anew, or a pool sent whole does. Run it in the transaction that changes the entry.
pub async fn replace_all(
    db: &impl GenericClient,
    workspace: Uuid,
    entry: Uuid,
    keys: &[NewEntryKey],
) -> Result<Vec<EntryKey>, DbError> {
    db.traced_execute(
        "DELETE FROM provider_entry_keys WHERE workspace_id = $1 AND entry_id = $2",
        &[&workspace, &entry],
    )
    .await?;
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        out.push(insert(db, workspace, entry, key).await?);
    }
    // Inserted in one transaction, the keys share `created_at`; their ids are time-ordered,
    // so the pool still lists in the order given.
    Ok(out)
}

/// A key with what its seal is bound to: its entry's kind and base URL.
#[derive(Debug, Clone)]
pub struct BoundKey {
    pub key: EntryKey,
    /// The entry's name, for messages.
    pub entry_name: String,
    pub kind: ProviderKind,
    pub base_url: Option<String>,
}

impl BoundKey {
    /// What the key's seal is bound to.
    pub fn binding(&self) -> KeyBinding<'_> {
        self.key.binding(self.kind, self.base_url.as_deref())
    }
}

fn bound_from_row(row: &Row) -> BoundKey {
    let kind: String = row.get("kind");
    BoundKey {
        key: from_row(row),
        entry_name: row.get("entry_name"),
        kind: kind.parse().unwrap_or(ProviderKind::OpenaiCompatible),
        base_url: row.get("base_url"),
    }
}

/// Every key of every workspace with what it is bound to, by key id (configuration checks
/// read them to see that they open).
pub async fn all(db: &impl GenericClient) -> Result<Vec<BoundKey>, DbError> {
    let sql = format!(
        "SELECT {K_COLUMNS}, e.kind, e.base_url, e.name AS entry_name
         FROM provider_entry_keys k JOIN provider_keys e ON e.id = k.entry_id
         ORDER BY k.id"
    );
    let rows = db.traced_query(&sql, &[]).await?;
    Ok(rows.iter().map(bound_from_row).collect())
}

/// Why a re-seal or a rotation changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ResealError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// A key that does not open (or cannot be sealed again); named by ids and label, never
    /// by its value.
    #[error("provider key `{label}` ({key}) of entry {entry}: {source}")]
    Seal {
        entry: Uuid,
        key: Uuid,
        label: String,
        source: SealError,
    },
}

impl From<tokio_postgres::Error> for ResealError {
    fn from(e: tokio_postgres::Error) -> Self {
        ResealError::Db(e.into())
    }
}

/// Every key, with what it is bound to, locked until the transaction ends (so the
/// entry's kind or base URL cannot change under a re-seal); `filter` is a condition on
/// the key row `k`.
async fn lock_bound(
    tx: &deadpool_postgres::Transaction<'_>,
    filter: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<BoundKey>, DbError> {
    let sql = format!(
        "SELECT {K_COLUMNS}, e.kind, e.base_url, e.name AS entry_name
         FROM provider_entry_keys k JOIN provider_keys e ON e.id = k.entry_id
         WHERE {filter} ORDER BY k.id FOR UPDATE"
    );
    let rows = tx.traced_query(&sql, params).await?;
    Ok(rows.iter().map(bound_from_row).collect())
}

/// Opens `bound` with `master_key` and seals it again under the current key and format.
async fn reseal_one(
    tx: &deadpool_postgres::Transaction<'_>,
    master_key: &MasterKey,
    bound: &BoundKey,
) -> Result<(), ResealError> {
    let seal_err = |source| ResealError::Seal {
        entry: bound.key.entry_id,
        key: bound.key.id,
        label: bound.key.label.clone(),
        source,
    };
    let binding = bound.binding();
    let key = master_key
        .open(&bound.key.sealed, &binding)
        .map_err(seal_err)?;
    let sealed = master_key.seal(key.expose(), &binding).map_err(seal_err)?;
    tx.traced_execute(
        "UPDATE provider_entry_keys SET sealed_key = $2, key_nonce = $3, key_version = $4,
             aad_version = $5
         WHERE id = $1",
        &[
            &bound.key.id,
            &sealed.ciphertext,
            &sealed.nonce,
            &sealed.version,
            &sealed.aad_version,
        ],
    )
    .await?;
    Ok(())
}

/// Re-seals every key still sealed under an older associated-data format with the
/// current one (see `crypto`), in one transaction: either every such key is re-sealed or
/// none is (a key that does not open with `master_key` aborts the whole run). Running it
/// again finds nothing to do. Returns how many keys were re-sealed.
pub async fn reseal_old_formats(
    client: &mut deadpool_postgres::Client,
    master_key: &MasterKey,
) -> Result<usize, ResealError> {
    let tx = client.transaction().await?;
    let keys = lock_bound(&tx, "k.aad_version <> $1", &[&crypto::AAD_CURRENT]).await?;
    for bound in &keys {
        reseal_one(&tx, master_key, bound).await?;
    }
    tx.commit().await?;
    Ok(keys.len())
}

/// What a master-key rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Keys re-sealed under the current master key.
    pub resealed: usize,
    /// Keys already sealed under the current master key (and format), left as they were.
    pub already_current: usize,
}

/// Re-seals every key not yet under `master_key`'s current key (and current format),
/// opening it with the previous key `master_key` holds, in one transaction: a key that
/// opens under neither aborts the run and changes nothing. Keys that already open under
/// the current key are left alone, so running it again re-seals nothing.
pub async fn rotate_master_key(
    client: &mut deadpool_postgres::Client,
    master_key: &MasterKey,
) -> Result<Rotation, ResealError> {
    let tx = client.transaction().await?;
    let keys = lock_bound(&tx, "true", &[]).await?;
    let mut done = Rotation {
        resealed: 0,
        already_current: 0,
    };
    for bound in &keys {
        if bound.key.sealed.aad_version == crypto::AAD_CURRENT
            && master_key
                .open_current(&bound.key.sealed, &bound.binding())
                .is_ok()
        {
            done.already_current += 1;
            continue;
        }
        reseal_one(&tx, master_key, bound).await?;
        done.resealed += 1;
    }
    tx.commit().await?;
    Ok(done)
}

/// For tests and audits: the raw sealed column of every key.
pub async fn raw_sealed_columns(db: &impl GenericClient) -> Result<Vec<Vec<u8>>, DbError> {
    let rows = db
        .traced_query("SELECT sealed_key FROM provider_entry_keys", &[])
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A breaker's state as gateways report it, from the best to the worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Breaker {
    /// The key serves.
    Closed,
    /// The key is being tried again after it failed.
    HalfOpen,
    /// The key failed and is passed over for now.
    Open,
}

impl Breaker {
    pub fn as_str(self) -> &'static str {
        match self {
            Breaker::Closed => "closed",
            Breaker::HalfOpen => "half_open",
            Breaker::Open => "open",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Breaker::Closed, Breaker::HalfOpen, Breaker::Open]
            .into_iter()
            .find(|b| b.as_str() == s)
    }
}

/// What the gateways that reported a key lately know of it, taken together: the worst
/// breaker, the smallest headroom, the latest reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayReport {
    /// How many gateways reported the key.
    pub gateways: i64,
    pub breaker: Breaker,
    /// Requests the provider said are left in its window (the smallest reported).
    pub remaining_requests: Option<i64>,
    /// Tokens the provider said are left in its window (the smallest reported).
    pub remaining_tokens: Option<i64>,
    /// When the provider's window resets (the latest reported).
    pub reset_at: Option<OffsetDateTime>,
}

fn smallest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What gateways reported of `keys` within the last `fresh`, by key; a key no gateway
/// reported in that time is absent. Rows of gateway status are written by the gateways.
pub async fn gateway_reports(
    db: &impl GenericClient,
    workspace: Uuid,
    keys: &[Uuid],
    fresh: std::time::Duration,
) -> Result<std::collections::HashMap<Uuid, GatewayReport>, DbError> {
    let rows = db
        .traced_query(
            "SELECT key_id, breaker, remaining_requests, remaining_tokens, reset_at
             FROM gateway_key_status
             WHERE workspace_id = $1 AND key_id = ANY($2)
               AND updated_at >= now() - make_interval(secs => $3)",
            &[&workspace, &keys, &fresh.as_secs_f64()],
        )
        .await?;
    let mut out: std::collections::HashMap<Uuid, GatewayReport> = Default::default();
    for row in rows {
        // A state this build does not know is taken as the worst.
        let breaker = Breaker::parse(row.get("breaker")).unwrap_or(Breaker::Open);
        let report = GatewayReport {
            gateways: 1,
            breaker,
            remaining_requests: row.get("remaining_requests"),
            remaining_tokens: row.get("remaining_tokens"),
            reset_at: row.get("reset_at"),
        };
        out.entry(row.get("key_id"))
            .and_modify(|r| {
                r.gateways += 1;
                r.breaker = r.breaker.max(report.breaker);
                r.remaining_requests = smallest(r.remaining_requests, report.remaining_requests);
                r.remaining_tokens = smallest(r.remaining_tokens, report.remaining_tokens);
                r.reset_at = r.reset_at.max(report.reset_at);
            })
            .or_insert(report);
    }
    Ok(out)
}

/// How many requests of the last `window` each of `keys` of `entry` served (the log rows
/// naming it); a key without any is absent.
pub async fn requests_by_key(
    db: &impl GenericClient,
    workspace: Uuid,
    entry: Uuid,
    keys: &[Uuid],
    window: std::time::Duration,
) -> Result<std::collections::HashMap<Uuid, i64>, DbError> {
    let rows = db
        .traced_query(
            "SELECT provider_key_id, count(*) FROM request_logs
             WHERE workspace_id = $1 AND created_at >= now() - make_interval(secs => $4)
               AND provider_id = $2 AND provider_key_id = ANY($3)
             GROUP BY provider_key_id",
            &[&workspace, &entry, &keys, &window.as_secs_f64()],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
