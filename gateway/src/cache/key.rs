//! The cache key: the workspace, its cache generation, the front door and a canonical form
//! of the request. Canonical means parsed JSON written back with object keys sorted and
//! no insignificant whitespace, so requests that differ only in key order or spacing
//! share an entry; the top-level fields that do not change the answer are left out.

use std::borrow::Cow;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::frontdoor::Door;

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

/// The canonical form of a request body: `None` when it is not a JSON object. The same
/// bytes as the body parsed into a `serde_json::Value` and written back (keys sorted at
/// every depth, the last of repeated keys kept, strings and numbers written as
/// `serde_json` writes them), without building that tree: strings stay borrowed from the
/// body where they hold no escape.
pub fn canonical(body: &[u8], door: Door) -> Option<Vec<u8>> {
    let Node::Object(fields) = serde_json::from_slice::<Node<'_>>(body).ok()? else {
        return None;
    };
    let mut out = Vec::with_capacity(body.len());
    out.push(b'{');
    let ignored =
        |name: &str| IGNORED.contains(&name) || (door == Door::Responses && name == "include");
    let kept = fields.iter().filter(|(name, _)| !ignored(name));
    for (i, (name, value)) in kept.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_field(&mut out, name, value)?;
    }
    out.push(b'}');
    Some(out)
}

/// A JSON value as the key reads it; an object's fields sorted by name, each name once.
enum Node<'a> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

fn write(out: &mut Vec<u8>, node: &Node<'_>) -> Option<()> {
    match node {
        Node::Null => out.extend_from_slice(b"null"),
        Node::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Node::U64(n) => serde_json::to_writer(&mut *out, n).ok()?,
        Node::I64(n) => serde_json::to_writer(&mut *out, n).ok()?,
        Node::F64(n) => serde_json::to_writer(&mut *out, n).ok()?,
        Node::Str(s) => serde_json::to_writer(&mut *out, s.as_ref()).ok()?,
        Node::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(out, item)?;
            }
            out.push(b']');
        }
        Node::Object(fields) => {
            out.push(b'{');
            for (i, (name, value)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_field(out, name, value)?;
            }
            out.push(b'}');
        }
    }
    Some(())
}

fn write_field(out: &mut Vec<u8>, name: &str, value: &Node<'_>) -> Option<()> {
    serde_json::to_writer(&mut *out, name).ok()?;
    out.push(b':');
    write(out, value)
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(b))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Node<'de>, E> {
        Ok(Node::U64(n))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Node<'de>, E> {
        // As `serde_json::Value` keeps it: a non-negative integer is the same number
        // whichever way it was read.
        Ok(u64::try_from(n).map_or(Node::I64(n), Node::U64))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Node<'de>, E> {
        Ok(Node::F64(n))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(s.to_string())))
    }

    fn visit_string<E>(self, s: String) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(s)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut fields: Vec<(Cow<'de, str>, Node<'de>)> = Vec::new();
        while let Some(name) = map.next_key::<Node<'de>>()? {
            let Node::Str(name) = name else {
                return Err(serde::de::Error::custom("an object's key is not a string"));
            };
            fields.push((name, map.next_value()?));
        }
        // Sorted by name; of a name given twice, the last value (as a map keeps it).
        fields.reverse();
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        fields.dedup_by(|later, first| later.0 == first.0);
        Ok(Node::Object(fields))
    }
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

    /// The canonical form as a `serde_json::Value` written back gives it.
    fn through_a_value(body: &str, door: Door) -> Option<Vec<u8>> {
        let serde_json::Value::Object(mut fields) = serde_json::from_str(body).ok()? else {
            return None;
        };
        for f in IGNORED {
            fields.remove(f);
        }
        if door == Door::Responses {
            fields.remove("include");
        }
        serde_json::to_vec(&serde_json::Value::Object(fields)).ok()
    }

    #[test]
    fn the_canonical_form_is_what_a_json_value_written_back_gives() {
        let bodies = [
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}"#,
            r#"{ "b" : [1, -2, 3.5, 1e3, -0.0, 18446744073709551615, -9223372036854775808, 1.0, 2.50],
                 "a" : {"z": null, "y": true, "x": false, "w": {}, "v": []} }"#,
            r#"{"s":"esc\"aped \\ \n \t \u00e9 \ud83d\ude00 \u0041 é","k\u0065y":1,"key":2}"#,
            r#"{"dup":1,"other":0,"dup":{"b":1,"a":2,"b":3}}"#,
            r#"{"stream":true,"user":"u","include":["x"],"messages":[{"stream":true,"user":"kept"}]}"#,
            r#"{"ééé":1,"Z":2,"a":3,"_":4,"":5}"#,
            r#"{}"#,
        ];
        for door in [Door::Chat, Door::Responses] {
            for body in bodies {
                assert_eq!(
                    canonical(body.as_bytes(), door).map(String::from_utf8),
                    through_a_value(body, door).map(String::from_utf8),
                    "{body}"
                );
            }
        }
        for not_an_object in [r#"[1]"#, r#""s""#, "1", "{", r#"{"a":1} x"#, ""] {
            assert!(canonical(not_an_object.as_bytes(), Door::Chat).is_none());
        }
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
