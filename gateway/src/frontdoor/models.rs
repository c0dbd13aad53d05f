//! `GET /v1/models`: the models a workspace's entries serve, in OpenAI's list shape, or
//! in Anthropic's for Anthropic's clients.

use std::collections::BTreeMap;
use std::sync::Arc;

use perpetuo_core::pricing::Pricing;
use perpetuo_core::provider::ProviderKind;
use serde_json::{json, Value};

use crate::model_lists::ModelLists;
use crate::routing::Entry;
use crate::upstream::Upstreams;

/// Where a listed model's name came from, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    /// An entry names it (`models` or `model_map`).
    Entry,
    /// The provider of an OpenAI-compatible entry that serves any model lists it.
    Provider,
    /// The pricing table has it for an entry's kind that serves any model (the provider
    /// may serve others).
    PricingTable,
}

/// Lists the workspace's models: those its entries name, those the providers of its
/// OpenAI-compatible entries that serve any model list (asked concurrently, briefly
/// cached), and the pricing table's for the other kinds that serve any model.
pub async fn list(
    entries: &[Arc<Entry>],
    pricing: &Pricing,
    lists: &ModelLists,
    upstreams: &Upstreams,
) -> Value {
    let open = entries.iter().filter(|e| e.models.is_empty());
    let asked = open
        .clone()
        .filter(|e| e.kind == ProviderKind::OpenaiCompatible)
        .map(|e| async move { (e, lists.of(e, upstreams).await) });
    let provided = futures::future::join_all(asked).await;

    let mut seen: BTreeMap<String, (&'static str, Source)> = BTreeMap::new();
    let mut note = |name: &str, kind: ProviderKind, source: Source| {
        let listed = seen
            .entry(name.to_string())
            .or_insert((kind.as_str(), source));
        if source < listed.1 {
            *listed = (kind.as_str(), source);
        }
    };
    for e in entries {
        for m in e.models.iter().chain(e.model_map.keys()) {
            note(m, e.kind, Source::Entry);
        }
    }
    for (e, names) in &provided {
        for m in names.iter().flat_map(|n| n.iter()) {
            note(m, e.kind, Source::Provider);
        }
    }
    for e in open {
        for m in pricing
            .model_names()
            .into_iter()
            .filter(|m| e.kind.names_model(m))
        {
            note(m, e.kind, Source::PricingTable);
        }
    }
    let data: Vec<Value> = seen
        .into_iter()
        .map(|(id, (owner, source))| {
            let mut model = json!({"id": id, "object": "model", "created": 0, "owned_by": owner});
            match source {
                Source::Entry => {}
                Source::Provider => model["perpetuo_listed_from"] = json!("provider"),
                Source::PricingTable => model["perpetuo_listed_from"] = json!("pricing_table"),
            }
            model
        })
        .collect();
    json!({"object": "list", "data": data})
}

/// The list in Anthropic's shape (`GET /v1/models` of the Messages API): one page holding
/// every model, in name order (no creation time is known: `created_at` is the epoch).
pub fn anthropic_shape(openai: &Value) -> Value {
    let data: Vec<Value> = openai["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            json!({
                "type": "model",
                "id": m["id"],
                "display_name": m["id"],
                "created_at": "1970-01-01T00:00:00Z",
            })
        })
        .collect();
    let first = data.first().map_or(Value::Null, |m| m["id"].clone());
    let last = data.last().map_or(Value::Null, |m| m["id"].clone());
    json!({"data": data, "has_more": false, "first_id": first, "last_id": last})
}
