//! The order candidates are tried in: entries that serve the model on the route (and the
//! pinned kind), by priority; equal priorities take turns so they share the load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use perpetuo_core::provider::ProviderKind;

use super::Entry;
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

/// Candidates for `model` in the order to try: by priority; within one priority, rotated
/// by `turn` so that equal entries share the load.
pub fn order(
    entries: &[Arc<Entry>],
    model: &str,
    pinned: Option<ProviderKind>,
    route: Route,
    turn: usize,
) -> Vec<Arc<Entry>> {
    let mut matching: Vec<Arc<Entry>> = entries
        .iter()
        .filter(|e| {
            Adapter::for_kind(e.kind).supports(route)
                && pinned.is_none_or(|k| k == e.kind)
                && e.serves(model)
        })
        .cloned()
        .collect();
    matching.sort_by_key(|e| e.priority);
    let mut out = Vec::with_capacity(matching.len());
    let mut i = 0;
    while i < matching.len() {
        let p = matching[i].priority;
        let j = matching[i..]
            .iter()
            .position(|e| e.priority != p)
            .map_or(matching.len(), |k| i + k);
        let mut group = matching[i..j].to_vec();
        let len = group.len();
        group.rotate_left(turn % len);
        out.extend(group);
        i = j;
    }
    out
}

/// A global turn counter for sharing load between equal priorities.
#[derive(Debug, Default)]
pub struct Turns(AtomicUsize);

impl Turns {
    pub fn next(&self) -> usize {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Upstream;
    use perpetuo_core::Secret;
    use std::collections::BTreeMap;
    use uuid::Uuid;

    fn entry(name: &str, priority: i32, models: &[&str]) -> Arc<Entry> {
        Arc::new(Entry {
            id: Uuid::now_v7(),
            name: name.into(),
            kind: ProviderKind::Openai,
            upstream: Upstream::parse("https://api.openai.com/v1").unwrap(),
            key: Secret::new("k".into()),
            priority,
            models: models.iter().map(|m| m.to_string()).collect(),
            model_map: BTreeMap::new(),
        })
    }

    #[test]
    fn orders_by_priority_and_rotates_equals() {
        let es = vec![
            entry("c", 2, &[]),
            entry("a1", 1, &[]),
            entry("a2", 1, &[]),
            entry("x", 0, &["other"]),
        ];
        let names = |turn| {
            order(&es, "gpt", None, Route::Chat, turn)
                .iter()
                .map(|e| e.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(0), vec!["a1", "a2", "c"]);
        assert_eq!(names(1), vec!["a2", "a1", "c"]);
        assert_eq!(names(2), vec!["a1", "a2", "c"]);
        assert_eq!(order(&es, "other", None, Route::Chat, 0)[0].name, "x");
        assert!(order(&es, "gpt", Some(ProviderKind::Anthropic), Route::Chat, 0).is_empty());
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
