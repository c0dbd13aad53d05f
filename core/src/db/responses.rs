//! `stored_responses`: answers of the gateway's Responses API kept for
//! `GET /v1/responses/{id}` and `previous_response_id`, per workspace, until they expire.
//! Each row is one turn: its Response, its input items, what it added to the conversation
//! (`turn`) and the turn it continues; a conversation is the chain of turns back to its
//! first. `stored_response_bytes` (kept by triggers) holds each workspace's stored bytes.

use deadpool_postgres::GenericClient;
use serde_json::Value;
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::{DbError, Sql};

/// A turn to store.
pub struct NewTurn<'a> {
    pub id: &'a str,
    pub workspace_id: Uuid,
    pub api_key_id: Option<Uuid>,
    pub expires_at: OffsetDateTime,
    /// The turn this one continues (same workspace), if any.
    pub previous_response_id: Option<&'a str>,
    /// Turns in the conversation through this one (1 for a first turn).
    pub depth: i32,
    pub response: &'a Value,
    pub input_items: &'a Value,
    /// The chat messages this turn added; `None` when the conversation cannot be continued.
    pub turn: Option<&'a Value>,
    /// Bytes of the conversation through this turn.
    pub conversation_bytes: i64,
    /// Bytes this row holds, counted against the workspace's quota.
    pub stored_bytes: i64,
}

pub async fn insert(db: &impl GenericClient, r: &NewTurn<'_>) -> Result<(), DbError> {
    db.traced_execute(
        "INSERT INTO stored_responses \
         (id, workspace_id, api_key_id, expires_at, previous_response_id, depth, response, \
          input_items, turn, conversation_bytes, stored_bytes) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING",
        &[
            &r.id,
            &r.workspace_id,
            &r.api_key_id,
            &r.expires_at,
            &r.previous_response_id,
            &r.depth,
            r.response,
            r.input_items,
            &r.turn,
            &r.conversation_bytes,
            &r.stored_bytes,
        ],
    )
    .await?;
    Ok(())
}

/// What continuing a stored response needs to know before reading its conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub depth: i32,
    pub conversation_bytes: i64,
    /// Whether its conversation was kept (false past the cap when it was stored).
    pub continuable: bool,
}

/// A workspace's live (not expired, not deleted) stored response, without its contents.
pub async fn head(
    db: &impl GenericClient,
    workspace: Uuid,
    id: &str,
) -> Result<Option<Head>, DbError> {
    let row = db
        .traced_query_opt(
            "SELECT depth, conversation_bytes, turn IS NOT NULL FROM stored_responses \
             WHERE id = $1 AND workspace_id = $2 AND expires_at > now()",
            &[&id, &workspace],
        )
        .await?;
    Ok(row.map(|r| Head {
        depth: r.get(0),
        conversation_bytes: r.get(1),
        continuable: r.get(2),
    }))
}

/// The turns of the conversation through `id`, first turn first, at most `max_turns` of
/// them (a turn whose messages were not kept is `None`). Expired and deleted turns that
/// `id` continues are part of it.
pub async fn conversation(
    db: &impl GenericClient,
    workspace: Uuid,
    id: &str,
    max_turns: i32,
) -> Result<Vec<Option<Value>>, DbError> {
    let rows = db
        .traced_query(
            "WITH RECURSIVE chain (previous, turn, n) AS ( \
                 SELECT previous_response_id, turn, 1 FROM stored_responses \
                 WHERE id = $1 AND workspace_id = $2 \
               UNION ALL \
                 SELECT s.previous_response_id, s.turn, c.n + 1 \
                 FROM chain c JOIN stored_responses s ON s.id = c.previous \
                 WHERE s.workspace_id = $2 AND c.n < $3 \
             ) SELECT turn FROM chain ORDER BY n DESC",
            &[&id, &workspace, &max_turns],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A workspace's live stored Response object (only that column is read).
pub async fn response(
    db: &impl GenericClient,
    workspace: Uuid,
    id: &str,
) -> Result<Option<Value>, DbError> {
    let row = db
        .traced_query_opt(
            "SELECT response FROM stored_responses \
             WHERE id = $1 AND workspace_id = $2 AND expires_at > now()",
            &[&id, &workspace],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// A workspace's live stored response's input items (only that column is read).
pub async fn input_items(
    db: &impl GenericClient,
    workspace: Uuid,
    id: &str,
) -> Result<Option<Value>, DbError> {
    let row = db
        .traced_query_opt(
            "SELECT input_items FROM stored_responses \
             WHERE id = $1 AND workspace_id = $2 AND expires_at > now()",
            &[&id, &workspace],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// Deletes a workspace's live stored response; whether there was one. A response that
/// other turns continue is hidden instead (expired at once, its Response and input items
/// dropped) and keeps its turn for them until the purge finds nothing continuing it.
pub async fn delete(db: &impl GenericClient, workspace: Uuid, id: &str) -> Result<bool, DbError> {
    let deleted = db
        .traced_execute(
            "DELETE FROM stored_responses s \
             WHERE id = $1 AND workspace_id = $2 AND expires_at > now() \
             AND NOT EXISTS (SELECT 1 FROM stored_responses c WHERE c.previous_response_id = s.id)",
            &[&id, &workspace],
        )
        .await;
    match deleted {
        Ok(n) if n > 0 => return Ok(true),
        Ok(_) => {}
        // A turn continuing it was stored meanwhile: hide it like the others.
        Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => {}
        Err(e) => return Err(e.into()),
    }
    let hidden = db
        .traced_execute(
            "UPDATE stored_responses SET expires_at = now(), response = 'null', \
             input_items = '[]', stored_bytes = coalesce(octet_length(turn::text), 0) \
             WHERE id = $1 AND workspace_id = $2 AND expires_at > now()",
            &[&id, &workspace],
        )
        .await?;
    Ok(hidden > 0)
}

/// Deletes up to `limit` expired (or deleted) turns that no other turn continues; how
/// many went. A turn continued by others goes in a later call, once they have gone.
/// Rows another purge is deleting are skipped, so gateways purging at once never wait on
/// each other.
pub async fn purge_expired(db: &impl GenericClient, limit: i64) -> Result<u64, DbError> {
    Ok(db
        .traced_execute(
            "DELETE FROM stored_responses WHERE id IN ( \
                 SELECT id FROM stored_responses s WHERE expires_at <= now() \
                 AND NOT EXISTS (SELECT 1 FROM stored_responses c WHERE c.previous_response_id = s.id) \
                 LIMIT $1 FOR UPDATE SKIP LOCKED)",
            &[&limit],
        )
        .await?)
}

/// Bytes a workspace has stored (0 when it has stored nothing).
pub async fn stored_bytes(db: &impl GenericClient, workspace: Uuid) -> Result<i64, DbError> {
    let row = db
        .traced_query_opt(
            "SELECT bytes FROM stored_response_bytes WHERE workspace_id = $1",
            &[&workspace],
        )
        .await?;
    Ok(row.map_or(0, |r| r.get(0)))
}
