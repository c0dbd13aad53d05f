//! The cache key: the workspace, its cache generation, the front door and a canonical form
//! of the request. Canonical means parsed JSON written back with object keys sorted and
//! no insignificant whitespace, so requests that differ only in key order or spacing
//! share an entry; the top-level fields that do not change the answer are left out.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::frontdoor::Door;
use serde_json::Value;

/// Top-level fields that do not change the answer, on every door.
const IGNORED: [&str; 9] = [
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "prompt_cache_key",
    "client_metadata",
    "safety_identifier",
    "service_tier",
];

/// A cache key: a SHA-256 of everything that decides the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub [u8; 32]);

impl Key {
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// What, besides the body, is part of a request's key.
pub struct Scope<'a> {
    pub workspace: Uuid,
    pub generation: i64,
    pub door: Door,
    /// Request headers that change the answer on this door (Anthropic's version and
    /// betas on the Messages door).
    pub headers: &'a [(&'static str, Option<&'a str>)],
    /// What the request continues, when that is resolved from state the gateway keeps (a
    /// Responses `previous_response_id`: the stored conversation, as the chat request
    /// it became).
    pub resolved: Option<&'a [u8]>,
}

/// The canonical form of a request body: `None` when it is not a JSON object.
pub fn canonical(body: &[u8], door: Door) -> Option<Vec<u8>> {
    let Value::Object(mut fields) = serde_json::from_slice::<Value>(body).ok()? else {
        return None;
    };
    for f in IGNORED {
        fields.remove(f);
    }
    if door == Door::Responses {
        fields.remove("include");
    }
    // `serde_json`'s map keeps keys sorted, at every depth, and writes compactly.
    serde_json::to_vec(&Value::Object(fields)).ok()
}

/// The key of a request, from its canonical body.
pub fn key(scope: &Scope<'_>, canonical: &[u8]) -> Key {
    let mut h = Sha256::new();
    let mut part = |bytes: &[u8]| {
        // Each part with its length, so no two different sequences of parts hash alike.
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    part(b"perpetuo-cache-v1");
    part(scope.workspace.as_bytes());
    part(&scope.generation.to_be_bytes());
    part(scope.door.label().as_bytes());
    for (name, value) in scope.headers {
        part(name.as_bytes());
        part(value.unwrap_or("\u{0}").as_bytes());
    }
    part(scope.resolved.unwrap_or(b"\x00"));
    part(canonical);
    Key(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(workspace: Uuid, generation: i64, door: Door) -> Scope<'static> {
        Scope {
            workspace,
            generation,
            door,
            headers: &[],
            resolved: None,
        }
    }

    fn key_of(body: &str, s: &Scope<'_>) -> Key {
        key(s, &canonical(body.as_bytes(), s.door).unwrap())
    }

    #[test]
    fn key_order_and_spacing_do_not_change_the_key() {
        let s = scope(Uuid::nil(), 0, Door::Chat);
        let a = key_of(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}"#,
            &s,
        );
        let b = key_of(
            "{ \"temperature\" : 0,\n \"messages\": [ {\"content\":\"hi\", \"role\":\"user\"} ],\"model\":\"m\"}",
            &s,
        );
        assert_eq!(a, b);
        let c = key_of(
            r#"{"model":"m","messages":[{"role":"user","content":"hi!"}],"temperature":0}"#,
            &s,
        );
        assert_ne!(a, c);
    }

    #[test]
    fn fields_that_do_not_change_the_answer_are_left_out() {
        let s = scope(Uuid::nil(), 0, Door::Chat);
        let plain = key_of(r#"{"model":"m","messages":[]}"#, &s);
        let noisy = key_of(
            r#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true},"user":"u","metadata":{"a":"b"},"store":true,"prompt_cache_key":"k","client_metadata":{},"safety_identifier":"s","service_tier":"auto"}"#,
            &s,
        );
        assert_eq!(plain, noisy);
        // A field not named above is in the key, whatever it is.
        assert_ne!(plain, key_of(r#"{"model":"m","messages":[],"seed":1}"#, &s));
        // `include` only on the Responses door.
        let r = scope(Uuid::nil(), 0, Door::Responses);
        assert_eq!(
            key_of(r#"{"model":"m","input":"hi"}"#, &r),
            key_of(
                r#"{"model":"m","input":"hi","include":["reasoning.encrypted_content"]}"#,
                &r
            )
        );
        assert_ne!(
            key_of(r#"{"model":"m","messages":[]}"#, &s),
            key_of(r#"{"model":"m","messages":[],"include":[]}"#, &s)
        );
    }

    #[test]
    fn workspace_generation_door_and_headers_are_in_the_key() {
        let body = r#"{"model":"m","messages":[]}"#;
        let base = key_of(body, &scope(Uuid::nil(), 0, Door::Chat));
        assert_ne!(base, key_of(body, &scope(Uuid::max(), 0, Door::Chat)));
        assert_ne!(base, key_of(body, &scope(Uuid::nil(), 1, Door::Chat)));
        assert_ne!(base, key_of(body, &scope(Uuid::nil(), 0, Door::Messages)));
        let beta = [("anthropic-beta", Some("x"))];
        let with_beta = Scope {
            headers: &beta,
            ..scope(Uuid::nil(), 0, Door::Chat)
        };
        assert_ne!(base, key_of(body, &with_beta));
    }
}
