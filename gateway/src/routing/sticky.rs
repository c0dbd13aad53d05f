//! Which requests belong together for sticky routing: those that name one client-chosen
//! key (`prompt_cache_key`, `user`, Anthropic's `metadata.user_id`, `safety_identifier`),
//! or else one conversation — its system prompt or instructions and its first message,
//! which every later turn repeats. Providers cache prompts by prefix, so a conversation
//! kept on one entry keeps hitting its provider's prompt cache.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use serde_json::Value;

/// The request's sticky key, if it has anything to stick by.
pub fn key(body: &Value) -> Option<u64> {
    let named = [
        &body["prompt_cache_key"],
        &body["user"],
        &body["metadata"]["user_id"],
        &body["safety_identifier"],
    ];
    if let Some(name) = named
        .iter()
        .find_map(|v| v.as_str().filter(|s| !s.is_empty()))
    {
        return Some(hash(&["named", name]));
    }
    let mut prefix: Vec<String> = Vec::new();
    for field in ["system", "instructions"] {
        if !body[field].is_null() {
            prefix.push(body[field].to_string());
        }
    }
    if let Some(messages) = body["messages"].as_array() {
        // Leading system (or developer) messages, then the first other one.
        for m in messages {
            prefix.push(m.to_string());
            if !matches!(m["role"].as_str(), Some("system" | "developer")) {
                break;
            }
        }
    }
    match &body["input"] {
        Value::String(s) => prefix.push(s.clone()),
        Value::Array(items) => prefix.extend(items.first().map(Value::to_string)),
        _ => {}
    }
    if prefix.is_empty() {
        return None;
    }
    let parts: Vec<&str> = std::iter::once("prefix")
        .chain(prefix.iter().map(String::as_str))
        .collect();
    Some(hash(&parts))
}

fn hash(parts: &[&str]) -> u64 {
    let mut h = DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_conversation_keeps_its_key_as_it_grows() {
        let first = json!({"model": "m", "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"}]});
        let later = json!({"model": "m", "temperature": 0.2, "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "More"}]});
        assert_eq!(key(&first), key(&later));
        let other = json!({"messages": [{"role": "system", "content": "You are terse."},
                                        {"role": "user", "content": "Bye"}]});
        assert_ne!(key(&first), key(&other));
        // Anthropic's system prompt and the Responses API's instructions count too.
        let a = json!({"system": "S", "messages": [{"role": "user", "content": "Hi"}]});
        let b = json!({"system": "T", "messages": [{"role": "user", "content": "Hi"}]});
        assert_ne!(key(&a), key(&b));
        assert!(key(&json!({"instructions": "S", "input": "Hi"})).is_some());
        assert!(key(&json!({"model": "m"})).is_none());
    }

    #[test]
    fn a_named_client_sticks_whatever_it_says() {
        let a = json!({"user": "u1", "messages": [{"role": "user", "content": "x"}]});
        let b = json!({"user": "u1", "messages": [{"role": "user", "content": "y"}]});
        assert_eq!(key(&a), key(&b));
        let m = json!({"metadata": {"user_id": "u1"}, "messages": []});
        assert_eq!(key(&m), key(&a), "one name, whichever field carries it");
    }
}
