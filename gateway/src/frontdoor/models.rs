//! `GET /v1/models`: the models a workspace's entries serve, in OpenAI's list shape.

use std::collections::BTreeMap;

use perpetuo_core::pricing::Pricing;
use serde_json::{json, Value};

use crate::routing::Entry;

/// Models the entries name, and — for entries that serve any model — the pricing table's
/// models of their kind, marked as such (the provider may serve others).
pub fn list(entries: &[std::sync::Arc<Entry>], pricing: &Pricing) -> Value {
    let mut seen = BTreeMap::new();
    for e in entries {
        for m in e.models.iter().chain(e.model_map.keys()) {
            seen.insert(m.clone(), (e.kind.as_str(), false));
        }
    }
    for e in entries.iter().filter(|e| e.models.is_empty()) {
        for m in pricing.model_names() {
            if e.kind.names_model(m) {
                seen.entry(m.to_string()).or_insert((e.kind.as_str(), true));
            }
        }
    }
    let data: Vec<Value> = seen
        .into_iter()
        .map(|(id, (owner, from_pricing))| {
            let mut model = json!({"id": id, "object": "model", "created": 0, "owned_by": owner});
            if from_pricing {
                model["perpetuo_listed_from"] = json!("pricing_table");
            }
            model
        })
        .collect();
    json!({"object": "list", "data": data})
}
