//! A request body as the client sent it, with the few top-level fields every request needs
//! read on arrival, and the whole document parsed into a [`Value`] only when something
//! reads it as one (a translation, a rewrite, a token estimate). A request passed on
//! unchanged to an OpenAI-format provider is never built as a tree.

use std::ops::Deref;
use std::sync::OnceLock;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

/// Valid JSON bytes and, once read as a tree, their [`Value`] (through `Deref`).
pub struct LazyJson {
    raw: Bytes,
    head: Head,
    value: OnceLock<Value>,
}

/// The top-level fields read on arrival, as a tree would give them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Head {
    /// `model`, when it is a string.
    model: Option<String>,
    /// `stream` is `true`.
    stream: bool,
    /// `stream_options.include_usage` is `true`.
    include_usage: bool,
}

impl Head {
    /// From the top-level `model`, `stream` and `stream_options`, as present.
    fn from_fields(
        model: Option<&Value>,
        stream: Option<&Value>,
        stream_options: Option<&Value>,
    ) -> Self {
        Head {
            model: model.and_then(Value::as_str).map(str::to_string),
            stream: stream.and_then(Value::as_bool).unwrap_or(false),
            include_usage: stream_options
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }
    }

    fn of(v: &Value) -> Self {
        Self::from_fields(v.get("model"), v.get("stream"), v.get("stream_options"))
    }
}

/// What [`LazyJson::read`] scans for; every other field is skipped unbuilt (serde's
/// derive ignores unknown fields without building them).
#[derive(Deserialize)]
struct Scan {
    #[serde(default)]
    model: Option<Value>,
    #[serde(default)]
    stream: Option<Value>,
    #[serde(default)]
    stream_options: Option<Value>,
}

impl LazyJson {
    /// Reads the bytes: the top-level fields from a scan that checks the whole document
    /// without building it. Anything the scan does not take as it would be read as a tree
    /// (a top level that is not an object, a repeated key) is parsed whole instead, so the
    /// fields are always what the tree says. `None` when the bytes are not JSON.
    pub fn read(raw: Bytes) -> Option<Self> {
        let object = raw.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        if object {
            if let Ok(scan) = serde_json::from_slice::<Scan>(&raw) {
                let head = Head::from_fields(
                    scan.model.as_ref(),
                    scan.stream.as_ref(),
                    scan.stream_options.as_ref(),
                );
                return Some(LazyJson {
                    raw,
                    head,
                    value: OnceLock::new(),
                });
            }
        }
        let value: Value = serde_json::from_slice(&raw).ok()?;
        Some(Self::parsed(value, raw))
    }

    /// A tree already built, with its bytes.
    pub fn parsed(value: Value, raw: Bytes) -> Self {
        LazyJson {
            raw,
            head: Head::of(&value),
            value: OnceLock::from(value),
        }
    }

    /// The bytes as received (or as serialized, for [`LazyJson::parsed`]).
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The top-level `model`, when it is a string.
    pub fn model(&self) -> Option<&str> {
        self.head.model.as_deref()
    }

    /// Whether `stream` is `true`.
    pub fn stream(&self) -> bool {
        self.head.stream
    }

    /// Whether `stream_options.include_usage` is `true`.
    pub fn include_usage(&self) -> bool {
        self.head.include_usage
    }

    /// The body naming `model`: the bytes as they are when it already does, otherwise the
    /// tree with its `model` replaced, serialized.
    pub fn with_model(&self, model: &str) -> Result<Bytes, serde_json::Error> {
        if self.model() == Some(model) {
            return Ok(self.raw.clone());
        }
        let mut body = Value::clone(self);
        if let Some(obj) = body.as_object_mut() {
            obj.insert("model".into(), Value::String(model.to_string()));
        }
        serde_json::to_vec(&body).map(Bytes::from)
    }

    /// The tree, taken.
    pub fn into_value(self) -> Value {
        match self.value.into_inner() {
            Some(v) => v,
            None => parse(&self.raw),
        }
    }
}

/// Bytes [`LazyJson::read`] accepted are JSON; `Null` only if that ever failed.
fn parse(raw: &[u8]) -> Value {
    serde_json::from_slice(raw).unwrap_or(Value::Null)
}

impl std::fmt::Debug for LazyJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyJson")
            .field("bytes", &self.raw.len())
            .field("head", &self.head)
            .field("parsed", &self.value.get().is_some())
            .finish()
    }
}

impl Deref for LazyJson {
    type Target = Value;

    fn deref(&self) -> &Value {
        self.value.get_or_init(|| parse(&self.raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn read(s: &str) -> Option<LazyJson> {
        LazyJson::read(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn reads_the_fields_without_building_the_tree() {
        let j = read(r#" {"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#).unwrap();
        assert_eq!(j.model(), Some("gpt-4o"));
        assert!(j.stream() && j.include_usage());
        assert!(j.value.get().is_none());
        assert_eq!(j["messages"][0]["content"], "hi");
        assert!(j.value.get().is_some());
    }

    #[test]
    fn fields_are_what_the_tree_says() {
        // Repeated keys: the tree keeps the last.
        let j = read(r#"{"model":"a","model":"b"}"#).unwrap();
        assert_eq!(j.model(), Some("b"));
        // Not an object, not strings, not booleans.
        assert_eq!(read(r#"["gpt-4o", true]"#).unwrap().model(), None);
        let j = read(r#"{"model":5,"stream":"yes","stream_options":[true]}"#).unwrap();
        assert_eq!(
            (j.model(), j.stream(), j.include_usage()),
            (None, false, false)
        );
        assert!(read(r#"{"model":"a""#).is_none());
        assert!(read("").is_none());
        assert!(read(r#"{"model":"a"} x"#).is_none());
    }

    fn field() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z\"\\\\]{0,4}".prop_map(Value::String),
            any::<bool>().prop_map(|b| json!({ "include_usage": b })),
            Just(json!([1, {"model": "x"}])),
        ]
    }

    proptest! {
        /// Whatever the body holds, the fields read on arrival equal the tree's, and the
        /// tree is the one the bytes parse to.
        #[test]
        fn scan_agrees_with_the_tree(
            fields in proptest::collection::vec(
                (prop_oneof![Just("model"), Just("stream"), Just("stream_options"), Just("messages")], field()),
                0..6,
            ),
        ) {
            let body = format!(
                "{{{}}}",
                fields.iter().map(|(k, v)| format!("{:?}:{}", k, v)).collect::<Vec<_>>().join(",")
            );
            let tree: Value = serde_json::from_str(&body).unwrap();
            let j = read(&body).unwrap();
            prop_assert_eq!(&j.head, &Head::of(&tree));
            prop_assert_eq!(&*j, &tree);
        }
    }
}
