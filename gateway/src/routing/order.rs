//! The order candidates are tried in: entries that serve the model on the route (and the
//! pinned kind), by priority; within one priority, as the workspace's strategy shares its
//! traffic ([`Balancer`]).

use std::sync::Arc;

use perpetuo_core::provider::ProviderKind;

use super::{Balancer, Entry, Routes};
use perpetuo_wire::{Adapter, Route};

/// Splits `kind/model` into a pinned kind and the model; other names are returned whole.
pub fn split_pinned(model: &str) -> (Option<ProviderKind>, &str) {
    if let Some((prefix, rest)) = model.split_once('/') {
        if let Ok(kind) = prefix.parse::<ProviderKind>() {
            if !rest.is_empty() {
                return (Some(kind), rest);
            }
        }
    }
    (None, model)
}

/// Candidates for `model` in the order to try: by priority; within one priority, in the
/// order `balancer` gives for the workspace's routing (and the request's `sticky` key).
pub fn order(
    routes: &Routes,
    model: &str,
    pinned: Option<ProviderKind>,
    route: Route,
    balancer: &Balancer,
    sticky: Option<u64>,
) -> Vec<Arc<Entry>> {
    let mut matching: Vec<Arc<Entry>> = routes
        .entries
        .iter()
        .filter(|e| {
            Adapter::for_kind(e.kind).supports(route)
                && pinned.is_none_or(|k| k == e.kind)
                && e.serves(model)
        })
        .cloned()
        .collect();
    // Stable: entries of one priority keep the database's order (age), which the
    // balancer's state is kept by.
    matching.sort_by_key(|e| e.priority);
    for tier in matching.chunk_by_mut(|a, b| a.priority == b.priority) {
        balancer.arrange(routes.routing, tier, sticky);
    }
    matching
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Upstream;
    use std::collections::BTreeMap;
    use uuid::Uuid;

    fn entry(name: &str, priority: i32, models: &[&str]) -> Arc<Entry> {
        Arc::new(Entry {
            id: Uuid::now_v7(),
            name: name.into(),
            kind: ProviderKind::Openai,
            upstream: Upstream::parse("https://api.openai.com/v1").unwrap(),
            keys: Vec::new(),
            quota: None,
            priority,
            weight: 1,
            models: models.iter().map(|m| m.to_string()).collect(),
            model_map: BTreeMap::new(),
            balance: Default::default(),
        })
    }

    #[test]
    fn orders_by_priority_and_rotates_equals() {
        let routes = Routes {
            cache: Default::default(),
            tracing: Default::default(),
            routing: Default::default(),
            entries: vec![
                entry("c", 2, &[]),
                entry("a1", 1, &[]),
                entry("a2", 1, &[]),
                entry("x", 0, &["other"]),
            ],
        };
        let b = Balancer::default();
        let names = || {
            order(&routes, "gpt", None, Route::Chat, &b, None)
                .iter()
                .map(|e| e.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(), vec!["a1", "a2", "c"]);
        assert_eq!(names(), vec!["a2", "a1", "c"]);
        assert_eq!(names(), vec!["a1", "a2", "c"]);
        assert_eq!(
            order(&routes, "other", None, Route::Chat, &b, None)[0].name,
            "x"
        );
        assert!(order(
            &routes,
            "gpt",
            Some(ProviderKind::Anthropic),
            Route::Chat,
            &b,
            None
        )
        .is_empty());
    }

    #[test]
    fn pinned_kinds() {
        assert_eq!(
            split_pinned("anthropic/claude-sonnet-4-5"),
            (Some(ProviderKind::Anthropic), "claude-sonnet-4-5")
        );
        assert_eq!(
            split_pinned("meta-llama/Llama-3"),
            (None, "meta-llama/Llama-3")
        );
        assert_eq!(split_pinned("gpt-4o"), (None, "gpt-4o"));
    }
}
