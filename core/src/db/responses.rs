//! `stored_responses`: answers of the gateway's Responses API kept for
//! `GET /v1/responses/{id}` and `previous_response_id`, per workspace, until they expire.

use deadpool_postgres::GenericClient;
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use super::DbError;

#[derive(Debug, Clone)]
pub struct StoredResponse {
    pub id: String,
    pub workspace_id: Uuid,
    pub response: Value,
    pub input_items: Value,
    pub conversation: Value,
}

pub struct NewStoredResponse<'a> {
    pub id: &'a str,
    pub workspace_id: Uuid,
    pub api_key_id: Option<Uuid>,
    pub expires_at: OffsetDateTime,
    pub response: &'a Value,
    pub input_items: &'a Value,
    pub conversation: &'a Value,
}

pub async fn insert(db: &impl GenericClient, r: &NewStoredResponse<'_>) -> Result<(), DbError> {
    db.execute(
        "INSERT INTO stored_responses \
         (id, workspace_id, api_key_id, expires_at, response, input_items, conversation) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
        &[
            &r.id,
            &r.workspace_id,
            &r.api_key_id,
            &r.expires_at,
            r.response,
            r.input_items,
            r.conversation,
        ],
    )
    .await?;
    Ok(())
}

/// A workspace's stored response, unless it expired (another workspace's is `None`).
pub async fn find(
    db: &impl GenericClient,
    workspace: Uuid,
    id: &str,
) -> Result<Option<StoredResponse>, DbError> {
    let row = db
        .query_opt(
            "SELECT id, workspace_id, response, input_items, conversation FROM stored_responses \
             WHERE id = $1 AND workspace_id = $2 AND expires_at > now()",
            &[&id, &workspace],
        )
        .await?;
    Ok(row.map(|r| StoredResponse {
        id: r.get(0),
        workspace_id: r.get(1),
        response: r.get(2),
        input_items: r.get(3),
        conversation: r.get(4),
    }))
}

/// Deletes a workspace's stored response; whether there was one.
pub async fn delete(db: &impl GenericClient, workspace: Uuid, id: &str) -> Result<bool, DbError> {
    let n = db
        .execute(
            "DELETE FROM stored_responses WHERE id = $1 AND workspace_id = $2",
            &[&id, &workspace],
        )
        .await?;
    Ok(n > 0)
}

/// Deletes expired responses, at most `limit` at a time; how many went.
pub async fn purge_expired(db: &impl GenericClient, limit: i64) -> Result<u64, DbError> {
    Ok(db
        .execute(
            "DELETE FROM stored_responses WHERE id IN \
             (SELECT id FROM stored_responses WHERE expires_at <= now() LIMIT $1)",
            &[&limit],
        )
        .await?)
}
