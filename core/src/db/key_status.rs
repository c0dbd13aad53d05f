//! `gateway_key_status`: what each gateway knows of the provider keys it used lately —
//! its breaker and the headroom the provider reported — one row per key per gateway,
//! replaced in place every few seconds; rows nobody refreshed are swept.

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{DbError, Sql};

/// One key's state as one gateway knows it. `key_id` is a pool key's id, or the entry's
/// for an entry without keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatus {
    pub key_id: Uuid,
    pub entry_id: Uuid,
    pub workspace_id: Uuid,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    pub remaining_requests: Option<i64>,
    pub remaining_tokens: Option<i64>,
    pub reset_at: Option<OffsetDateTime>,
}

/// Replaces `gateway`'s rows with `rows` (one statement; keys it no longer reports keep
/// their last row until swept).
pub async fn publish(
    db: &impl GenericClient,
    gateway: Uuid,
    rows: &[KeyStatus],
) -> Result<u64, DbError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let keys: Vec<Uuid> = rows.iter().map(|r| r.key_id).collect();
    let entries: Vec<Uuid> = rows.iter().map(|r| r.entry_id).collect();
    let workspaces: Vec<Uuid> = rows.iter().map(|r| r.workspace_id).collect();
    let breakers: Vec<&str> = rows.iter().map(|r| r.breaker).collect();
    let requests: Vec<Option<i64>> = rows.iter().map(|r| r.remaining_requests).collect();
    let tokens: Vec<Option<i64>> = rows.iter().map(|r| r.remaining_tokens).collect();
    let resets: Vec<Option<OffsetDateTime>> = rows.iter().map(|r| r.reset_at).collect();
    Ok(db
        .traced_execute(
            "INSERT INTO gateway_key_status AS s (gateway_id, key_id, entry_id, workspace_id,
                 breaker, remaining_requests, remaining_tokens, reset_at, updated_at)
             SELECT $1, k, e, w, b, rq, rt, ra, now()
             FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::int8[],
                         $7::int8[], $8::timestamptz[]) AS t(k, e, w, b, rq, rt, ra)
             ON CONFLICT (workspace_id, key_id, gateway_id) DO UPDATE SET
                 entry_id = EXCLUDED.entry_id, breaker = EXCLUDED.breaker,
                 remaining_requests = EXCLUDED.remaining_requests,
                 remaining_tokens = EXCLUDED.remaining_tokens,
                 reset_at = EXCLUDED.reset_at, updated_at = EXCLUDED.updated_at",
            &[
                &gateway,
                &keys,
                &entries,
                &workspaces,
                &breakers,
                &requests,
                &tokens,
                &resets,
            ],
        )
        .await?)
}

/// Deletes the rows nobody refreshed for `age` (a gateway gone, a key no longer used).
pub async fn sweep(db: &impl GenericClient, age: std::time::Duration) -> Result<u64, DbError> {
    let seconds = age.as_secs_f64();
    Ok(db
        .traced_execute(
            "DELETE FROM gateway_key_status
             WHERE updated_at < now() - make_interval(secs => $1)",
            &[&seconds],
        )
        .await?)
}
