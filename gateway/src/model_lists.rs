//! The models an OpenAI-compatible entry that serves any model says it serves: its
//! provider's own `GET /models`, asked with the entry's key and cached briefly per entry
//! (entries belong to one workspace, so a list never crosses workspaces). Bounded in
//! size, time and count; a provider that does not answer is listed without them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::Expiry;
use serde::Deserialize;
use uuid::Uuid;

use crate::routing::Entry;
use crate::upstream::Upstreams;

/// How long a provider's list is kept, and a failure to get one (so a provider that is
/// down is not asked on every listing).
const LISTED_FOR: Duration = Duration::from_secs(60);
const FAILED_FOR: Duration = Duration::from_secs(10);
/// Longest wait for a provider's list.
const ASK_WITHIN: Duration = Duration::from_secs(2);
const MAX_LIST_BYTES: usize = 1024 * 1024;
const MAX_MODELS: usize = 2_000;
const MAX_NAME_BYTES: usize = 256;
const MAX_ENTRIES_CACHED: u64 = 10_000;

/// A provider's model names; `None` when it could not be read.
type Listed = Option<Arc<[String]>>;

pub struct ModelLists {
    cache: Cache<Uuid, Listed>,
}

struct ListTtl;

impl Expiry<Uuid, Listed> for ListTtl {
    fn expire_after_create(&self, _: &Uuid, listed: &Listed, _: Instant) -> Option<Duration> {
        Some(if listed.is_some() {
            LISTED_FOR
        } else {
            FAILED_FOR
        })
    }
}

impl Default for ModelLists {
    fn default() -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(MAX_ENTRIES_CACHED)
                .expire_after(ListTtl)
                .build(),
        }
    }
}

impl ModelLists {
    /// The entry's provider's model names (concurrent askers of one entry share one call).
    pub async fn of(&self, entry: &Entry, upstreams: &Upstreams) -> Listed {
        self.cache.get_with(entry.id, ask(entry, upstreams)).await
    }
}

async fn ask(entry: &Entry, upstreams: &Upstreams) -> Listed {
    let auth = perpetuo_wire::openai::bearer(entry.any_key());
    let path = format!("{}/models", entry.upstream.path_prefix);
    let body = upstreams
        .get(entry, &path, &auth, MAX_LIST_BYTES, ASK_WITHIN)
        .await?;
    names(&body).map(Arc::from)
}

#[derive(Deserialize)]
struct ModelList<'a> {
    #[serde(borrow)]
    data: Vec<Model<'a>>,
}

#[derive(Deserialize)]
struct Model<'a> {
    id: std::borrow::Cow<'a, str>,
}

/// The ids of an OpenAI-shaped model list, at most [`MAX_MODELS`], each a plausible name.
fn names(body: &[u8]) -> Option<Vec<String>> {
    let list: ModelList<'_> = serde_json::from_slice(body).ok()?;
    Some(
        list.data
            .into_iter()
            .map(|m| m.id)
            .filter(|id| !id.is_empty() && id.len() <= MAX_NAME_BYTES)
            .filter(|id| !id.chars().any(char::is_control))
            .take(MAX_MODELS)
            .map(|id| id.into_owned())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_is_read_and_bounded() {
        let body = br#"{"object":"list","data":[{"id":"llama3","object":"model"},{"id":"","object":"model"},{"id":"a\nb"},{"id":"qwen"}]}"#;
        assert_eq!(names(body).unwrap(), ["llama3", "qwen"]);
        assert!(names(b"<html>").is_none());
        let many: Vec<serde_json::Value> = (0..MAX_MODELS + 5)
            .map(|i| serde_json::json!({"id": format!("m{i}")}))
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({"data": many})).unwrap();
        assert_eq!(names(&body).unwrap().len(), MAX_MODELS);
    }
}
