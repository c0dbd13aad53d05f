//! Stored responses (`store`, the Responses API's default): kept per workspace for a
//! retention, continued by `previous_response_id`, read and deleted by id. Another
//! workspace's responses are never found.
//!
//! A stored response is one turn: its Response object, its input items, and the chat
//! messages it added to the conversation, linked to the turn it continues. Continuing a
//! response reads the chain of turns back to the first; each turn carries the size and
//! length of its conversation, so a conversation past the cap is refused before it is
//! read. A workspace's stored bytes are counted (by the database, on every write) against
//! a quota checked before the provider is called.

use std::time::Duration;

use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::auth::AuthedKey;
use crate::errors::{ErrorKind, GatewayError};
use crate::metrics;

pub mod purge;
use perpetuo_core::db::{self, responses};

/// Most turns in one conversation: a conversation this long cannot be continued, so
/// reading one walks at most this many rows.
pub const MAX_TURNS: i32 = 10_000;

/// Longest response id looked up; no stored id is longer, so a longer one is unknown
/// without asking the database.
const MAX_ID_BYTES: usize = 256;

/// Where the Responses API keeps stored responses, for how long, and how much.
pub struct ResponseStore {
    pub pool: db::Pool,
    pub retention: Duration,
    /// Largest conversation that can still be continued (`RESPONSES_MAX_CONVERSATION_BYTES`):
    /// a turn whose conversation passes it is stored without its messages and cannot be
    /// continued, so no tenant grows one without end and no request reads more history.
    pub max_conversation_bytes: usize,
    /// Bytes a workspace may keep stored (`RESPONSES_WORKSPACE_QUOTA_BYTES`; 0: no quota).
    pub workspace_quota_bytes: u64,
    /// Longest wait for the database on a stored-response read or write
    /// (`DB_READ_TIMEOUT_MS`).
    pub db_timeout: Duration,
}

/// The stored turn a request continues.
#[derive(Debug, Clone)]
pub struct Parent {
    pub id: String,
    pub depth: i32,
    pub conversation_bytes: i64,
}

/// What storing one answer needs besides the answer.
#[derive(Debug, Clone)]
pub struct ToStore {
    pub input_items: Value,
    /// This turn's input as chat messages (the answer is added when it is stored).
    pub turn: Vec<Value>,
    /// The turn it continues.
    pub previous: Option<Parent>,
}

/// A finished answer waiting to be stored.
pub struct Pending {
    pub to_store: ToStore,
    pub response: Value,
    /// The assistant's answer as a chat message, the end of the turn.
    pub message: Value,
}

/// The conversation a request continues, read from its stored turns.
#[derive(Debug, Default)]
pub struct Continued {
    /// The conversation before this request, as chat messages.
    pub history: Vec<Value>,
    pub parent: Option<Parent>,
}

/// Bytes of a value serialized as compact JSON, counted without building the text.
fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

fn as_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn conversation_too_long() -> GatewayError {
    GatewayError::bad_request(
        ErrorKind::ConversationTooLong,
        "The conversation of this response is too long to continue; start a new one.",
    )
}

impl ResponseStore {
    /// What a request needs from the store before any provider is called (run after its
    /// limits): when it will be stored (`storing`, with a body of `body_len` bytes), room
    /// under the workspace's quota; when it names a `previous_response_id`, the
    /// conversation it continues — refused unread when it is past the cap.
    pub async fn open(
        &self,
        key: &AuthedKey,
        request: &Value,
        storing: bool,
        body_len: usize,
    ) -> Result<Continued, GatewayError> {
        let previous = request.get("previous_response_id").and_then(Value::as_str);
        if let Some(id) = previous.filter(|id| id.len() > MAX_ID_BYTES) {
            return Err(GatewayError::response_not_found(id));
        }
        let quota =
            (storing && self.workspace_quota_bytes > 0).then_some(self.workspace_quota_bytes);
        if quota.is_none() && previous.is_none() {
            return Ok(Continued::default());
        }
        let workspace = key.workspace_id;
        let pool = &self.pool;
        let opened = db::with_timeout(self.db_timeout, async {
            let client = pool.get().await?;
            if let Some(quota) = quota {
                let used =
                    u64::try_from(responses::stored_bytes(&client, workspace).await?).unwrap_or(0);
                if used.saturating_add(body_len as u64) > quota {
                    return Ok(Err(GatewayError::responses_quota_exceeded(quota)));
                }
            }
            let Some(id) = previous else {
                return Ok(Ok(Continued::default()));
            };
            let Some(head) = responses::head(&client, workspace, id).await? else {
                return Ok(Err(GatewayError::response_not_found(id)));
            };
            if !head.continuable
                || head.depth >= MAX_TURNS
                || head.conversation_bytes > as_i64(self.max_conversation_bytes)
            {
                return Ok(Err(conversation_too_long()));
            }
            let turns = responses::conversation(&client, workspace, id, head.depth).await?;
            let mut history = Vec::new();
            for turn in turns {
                match turn {
                    Some(Value::Array(messages)) => history.extend(messages),
                    _ => return Ok(Err(conversation_too_long())),
                }
            }
            Ok(Ok(Continued {
                history,
                parent: Some(Parent {
                    id: id.to_string(),
                    depth: head.depth,
                    conversation_bytes: head.conversation_bytes,
                }),
            }))
        })
        .await;
        opened.map_err(|_| GatewayError::store_unavailable())?
    }

    /// Stores a finished answer as one turn; a failure is logged and counted, and the
    /// answer still goes out (only a later `previous_response_id` would miss it).
    pub async fn store(&self, key: &AuthedKey, request_id: Uuid, pending: Pending) {
        let Some(id) = pending.response["id"].as_str() else {
            return;
        };
        let ToStore {
            input_items,
            turn,
            previous,
        } = pending.to_store;
        let mut turn = turn;
        turn.push(pending.message);
        let turn = Value::Array(turn);
        let turn_bytes = as_i64(json_len(&turn));
        let (depth, before) = previous.as_ref().map_or((1, 0), |p| {
            (p.depth.saturating_add(1), p.conversation_bytes)
        });
        let conversation_bytes = before.saturating_add(turn_bytes);
        // Past the cap the conversation cannot be continued: its messages are not kept.
        let continuable =
            conversation_bytes <= as_i64(self.max_conversation_bytes) && depth < MAX_TURNS;
        let stored_bytes = as_i64(json_len(&pending.response))
            .saturating_add(as_i64(json_len(&input_items)))
            .saturating_add(if continuable { turn_bytes } else { 0 });
        let row = responses::NewTurn {
            id,
            workspace_id: key.workspace_id,
            api_key_id: Some(key.id),
            expires_at: OffsetDateTime::now_utc() + self.retention,
            previous_response_id: previous.as_ref().map(|p| p.id.as_str()),
            depth,
            response: &pending.response,
            input_items: &input_items,
            turn: continuable.then_some(&turn),
            conversation_bytes,
            stored_bytes,
        };
        let pool = &self.pool;
        let stored = db::with_timeout(self.db_timeout, async {
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
    /// answer's JSON body. Each reads only the column it answers with, never the
    /// conversation.
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
        if id.len() > MAX_ID_BYTES {
            return Err(GatewayError::response_not_found(id));
        }
        let pool = &self.pool;
        let workspace = key.workspace_id;
        let body = db::with_timeout(self.db_timeout, async {
            let client = pool.get().await?;
            if method == "DELETE" {
                let deleted = responses::delete(&client, workspace, id).await?;
                return Ok(
                    deleted.then(|| json!({"id": id, "object": "response", "deleted": true}))
                );
            }
            if items {
                let found = responses::input_items(&client, workspace, id).await?;
                return Ok(found.map(|items| items_page(&items)));
            }
            responses::response(&client, workspace, id).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_len_counts_the_compact_text() {
        let v = json!({"role": "user", "content": ["é", 1, null]});
        assert_eq!(json_len(&v), serde_json::to_vec(&v).unwrap().len());
    }
}
