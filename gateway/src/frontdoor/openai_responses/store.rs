//! Stored responses (`store`, the Responses API's default): kept per workspace for a
//! retention, continued by `previous_response_id`, read and deleted by id. Another
//! workspace's responses are never found.

use std::time::Duration;

use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::auth::AuthedKey;
use crate::errors::GatewayError;
use crate::metrics;
use perpetuo_core::db::{self, responses};

/// Longest wait for the database on a stored-response read or write.
const DB_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the Responses API keeps stored responses, and for how long.
pub struct ResponseStore {
    pub pool: db::Pool,
    pub retention: Duration,
    /// Largest conversation kept with a response (the request body limit): a chain of
    /// turns grows its conversation with every answer, and past this it is not kept (and
    /// cannot be continued), so no tenant can grow one without end.
    pub max_conversation_bytes: usize,
}

/// What storing one answer needs besides the answer.
#[derive(Debug, Clone)]
pub struct ToStore {
    pub input_items: Value,
    /// The conversation before the answer, as chat messages.
    pub conversation: Vec<Value>,
}

/// A finished answer waiting to be stored.
pub struct Pending {
    pub to_store: ToStore,
    pub response: Value,
    /// The assistant's answer as a chat message, appended to the conversation.
    pub message: Value,
}

impl ResponseStore {
    /// The stored conversation a request continues (`previous_response_id`), empty when
    /// it names none.
    pub async fn previous_conversation(
        &self,
        key: &AuthedKey,
        request: &Value,
    ) -> Result<Vec<Value>, GatewayError> {
        let Some(previous) = request.get("previous_response_id").and_then(Value::as_str) else {
            return Ok(Vec::new());
        };
        let pool = &self.pool;
        let found = db::with_timeout(DB_TIMEOUT, async {
            let client = pool.get().await?;
            responses::find(&client, key.workspace_id, previous).await
        })
        .await
        .map_err(|_| GatewayError::store_unavailable())?;
        match found {
            Some(stored) => match stored.conversation {
                Value::Array(messages) => Ok(messages),
                // Stored without its conversation: it outgrew the body limit.
                _ => Err(GatewayError::bad_request(
                    "conversation_too_long",
                    "The conversation of this response is too long to continue; start a new one.",
                )),
            },
            None => Err(GatewayError::response_not_found(previous)),
        }
    }

    /// Stores a finished answer; a failure is logged and counted, and the answer still
    /// goes out (only a later `previous_response_id` would miss it).
    pub async fn store(&self, key: &AuthedKey, request_id: Uuid, pending: Pending) {
        let Some(id) = pending.response["id"].as_str() else {
            return;
        };
        let mut conversation = pending.to_store.conversation;
        conversation.push(pending.message);
        let mut conversation = Value::Array(conversation);
        if serde_json::to_vec(&conversation).map_or(true, |b| b.len() > self.max_conversation_bytes)
        {
            conversation = Value::Null;
        }
        let row = responses::NewStoredResponse {
            id,
            workspace_id: key.workspace_id,
            api_key_id: Some(key.id),
            expires_at: OffsetDateTime::now_utc() + self.retention,
            response: &pending.response,
            input_items: &pending.to_store.input_items,
            conversation: &conversation,
        };
        let pool = &self.pool;
        let stored = db::with_timeout(DB_TIMEOUT, async {
            let client = pool.get().await?;
            responses::insert(&client, &row).await
        })
        .await;
        if let Err(e) = stored {
            metrics::RESPONSES_NOT_STORED.inc();
            tracing::warn!(request = %request_id, error = %e, "response not stored");
        }
    }

    /// `GET|DELETE /v1/responses/{id}` and `GET /v1/responses/{id}/input_items`: the
    /// answer's JSON body.
    pub async fn serve(
        &self,
        key: &AuthedKey,
        method: &str,
        path: &str,
    ) -> Result<Value, GatewayError> {
        let rest = path.trim_start_matches("/v1/responses/");
        let (id, items) = match rest.strip_suffix("/input_items") {
            Some(id) => (id, true),
            None => (rest, false),
        };
        if id.is_empty() || id.contains('/') || (items && method != "GET") {
            return Err(GatewayError::not_found(path));
        }
        let pool = &self.pool;
        let workspace = key.workspace_id;
        let body = db::with_timeout(DB_TIMEOUT, async {
            let client = pool.get().await?;
            if method == "DELETE" {
                let deleted = responses::delete(&client, workspace, id).await?;
                return Ok(
                    deleted.then(|| json!({"id": id, "object": "response", "deleted": true}))
                );
            }
            let found = responses::find(&client, workspace, id).await?;
            Ok(found.map(|r| {
                if items {
                    items_page(&r.input_items)
                } else {
                    r.response
                }
            }))
        })
        .await
        .map_err(|_| GatewayError::store_unavailable())?;
        body.ok_or_else(|| GatewayError::response_not_found(id))
    }
}

/// A stored response's input items as one list page.
fn items_page(items: &Value) -> Value {
    let data = items.as_array().cloned().unwrap_or_default();
    json!({"object": "list", "first_id": data.first().map(|i| i["id"].clone()),
           "last_id": data.last().map(|i| i["id"].clone()), "has_more": false, "data": data})
}
