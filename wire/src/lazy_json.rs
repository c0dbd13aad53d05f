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
    /// The numbers that reach limits and arithmetic, as sent.
    numbers: [Option<Value>; NUMBERS.len()],
    /// A scanned field that appears more than once at the top level.
    repeated: Option<&'static str>,
}

/// The top-level numbers a request may carry that the gateway reads: the completion caps
/// of the three front doors and the number of choices.
const NUMBERS: [&str; 4] = [
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "n",
];

/// Largest completion cap accepted (`max_tokens` and its kin): far above any model's
/// output limit, far below what could overflow an estimate.
pub const MAX_COMPLETION_CAP: u64 = 10_000_000;

/// Most choices (`n`) a request may ask for, as OpenAI allows.
pub const MAX_CHOICES: u64 = 128;

/// The request's numbers, checked.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Numbers {
    /// The first completion cap present (`max_tokens`, `max_completion_tokens`,
    /// `max_output_tokens`).
    pub completion_cap: Option<u64>,
    /// Choices asked for (1 when absent).
    pub choices: u64,
}

/// A number the gateway refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadNumber {
    pub field: &'static str,
    pub message: String,
}

impl Head {
    /// From the top-level fields, as present.
    fn from_fields(
        model: Option<&Value>,
        stream: Option<&Value>,
        stream_options: Option<&Value>,
        numbers: [Option<&Value>; NUMBERS.len()],
    ) -> Self {
        Head {
            model: model.and_then(Value::as_str).map(str::to_string),
            stream: stream.and_then(Value::as_bool).unwrap_or(false),
            include_usage: stream_options
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            numbers: numbers.map(|v| v.cloned()),
            repeated: None,
        }
    }

    fn of(v: &Value) -> Self {
        Self::from_fields(
            v.get("model"),
            v.get("stream"),
            v.get("stream_options"),
            NUMBERS.map(|k| v.get(k)),
        )
    }

    fn numbers(&self) -> Result<Numbers, BadNumber> {
        let mut out = Numbers {
            completion_cap: None,
            choices: 1,
        };
        for (field, value) in NUMBERS.iter().zip(&self.numbers) {
            let (min, max) = if *field == "n" {
                (1, MAX_CHOICES)
            } else {
                (0, MAX_COMPLETION_CAP)
            };
            let n = match value {
                None | Some(Value::Null) => continue,
                Some(Value::Number(n)) => n.as_u64().filter(|n| (min..=max).contains(n)),
                Some(_) => None,
            };
            let Some(n) = n else {
                return Err(BadNumber {
                    field,
                    message: format!("`{field}` must be a whole number from {min} to {max}."),
                });
            };
            if *field == "n" {
                out.choices = n;
            } else if out.completion_cap.is_none() {
                out.completion_cap = Some(n);
            }
        }
        Ok(out)
    }
}

/// The top-level fields [`LazyJson::read`] takes; every other value is skipped unbuilt.
#[derive(Default)]
struct Scan {
    model: Option<Value>,
    stream: Option<Value>,
    stream_options: Option<Value>,
    numbers: [Option<Value>; NUMBERS.len()],
    repeated: Option<&'static str>,
}

/// Which scanned field a key names.
enum Field {
    Model,
    Stream,
    StreamOptions,
    Number(usize),
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Field;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a key")
            }
            // Escaped keys arrive decoded, so `"mod\u0065l"` is `model` here too.
            fn visit_str<E: serde::de::Error>(self, k: &str) -> Result<Field, E> {
                Ok(match k {
                    "model" => Field::Model,
                    "stream" => Field::Stream,
                    "stream_options" => Field::StreamOptions,
                    _ => NUMBERS
                        .iter()
                        .position(|n| *n == k)
                        .map_or(Field::Other, Field::Number),
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

impl<'de> Deserialize<'de> for Scan {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Scan;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Scan, A::Error> {
                let mut scan = Scan::default();
                while let Some(field) = map.next_key::<Field>()? {
                    // A repeated key keeps its last value, as the tree does, and is noted.
                    let (slot, name) = match field {
                        Field::Model => (&mut scan.model, "model"),
                        Field::Stream => (&mut scan.stream, "stream"),
                        Field::StreamOptions => (&mut scan.stream_options, "stream_options"),
                        Field::Number(i) => (&mut scan.numbers[i], NUMBERS[i]),
                        Field::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    let value = map.next_value::<Value>()?;
                    if slot.replace(value).is_some() && scan.repeated.is_none() {
                        scan.repeated = Some(name);
                    }
                }
                Ok(scan)
            }
        }
        d.deserialize_map(V)
    }
}

impl LazyJson {
    /// Reads the bytes: the top-level fields from a scan that checks the whole document
    /// without building it (a repeated key keeps its last value, as in the tree, and is
    /// noted). A top level that is not an object is parsed whole instead, so the fields
    /// are always what the tree says. `None` when the bytes are not JSON.
    pub fn read(raw: Bytes) -> Option<Self> {
        let object = raw.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        if object {
            if let Ok(scan) = serde_json::from_slice::<Scan>(&raw) {
                let mut head = Head::from_fields(
                    scan.model.as_ref(),
                    scan.stream.as_ref(),
                    scan.stream_options.as_ref(),
                    scan.numbers.each_ref().map(Option::as_ref),
                );
                head.repeated = scan.repeated;
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

    /// A field the gateway reads (`model`, `stream`, …) that the body names more than once
    /// at the top level: the gateway would read one value and a provider might read
    /// another, so such a body is refused.
    pub fn repeated_field(&self) -> Option<&'static str> {
        self.head.repeated
    }

    /// The completion caps and choice count, checked against their bounds.
    pub fn numbers(&self) -> Result<Numbers, BadNumber> {
        self.head.numbers()
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
        // Repeated keys: the tree keeps the last, and the repeat is noted, escaped or not.
        let j = read(r#"{"model":"a","model":"b"}"#).unwrap();
        assert_eq!(j.model(), Some("b"));
        assert_eq!(j.repeated_field(), Some("model"));
        let j = read(r#"{"stream":false,"x":1,"str\u0065am":true}"#).unwrap();
        assert!(j.stream());
        assert_eq!(j.repeated_field(), Some("stream"));
        assert_eq!(read(r#"{"a":1,"a":2}"#).unwrap().repeated_field(), None);
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

    #[test]
    fn numbers_are_bounded_and_named() {
        let j = read(r#"{"max_tokens":100,"n":3}"#).unwrap();
        assert_eq!(
            j.numbers(),
            Ok(Numbers {
                completion_cap: Some(100),
                choices: 3
            })
        );
        assert_eq!(
            read(r#"{"max_output_tokens":null}"#).unwrap().numbers(),
            Ok(Numbers {
                completion_cap: None,
                choices: 1
            })
        );
        for (body, field) in [
            (r#"{"max_tokens":18446744073709551615}"#, "max_tokens"),
            (
                r#"{"max_completion_tokens":10000001}"#,
                "max_completion_tokens",
            ),
            (r#"{"max_output_tokens":-1}"#, "max_output_tokens"),
            (r#"{"max_tokens":1.5}"#, "max_tokens"),
            (r#"{"max_tokens":"100"}"#, "max_tokens"),
            (r#"{"max_tokens":1e300}"#, "max_tokens"),
            (r#"{"n":0}"#, "n"),
            (r#"{"n":129}"#, "n"),
        ] {
            let bad = read(body).unwrap().numbers().unwrap_err();
            assert_eq!(bad.field, field, "{body}");
            assert!(bad.message.contains(field));
        }
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
                (prop_oneof![Just("model"), Just("stream"), Just("stream_options"), Just("max_tokens"), Just("n"), Just("messages")], field()),
                0..6,
            ),
        ) {
            let body = format!(
                "{{{}}}",
                fields.iter().map(|(k, v)| format!("{:?}:{}", k, v)).collect::<Vec<_>>().join(",")
            );
            let tree: Value = serde_json::from_str(&body).unwrap();
            let j = read(&body).unwrap();
            let mut head = j.head.clone();
            let repeated = head.repeated.take();
            prop_assert_eq!(&head, &Head::of(&tree));
            prop_assert_eq!(&*j, &tree);
            let mut seen = std::collections::HashSet::new();
            let repeats = fields
                .iter()
                .any(|(k, _)| *k != "messages" && !seen.insert(*k));
            prop_assert_eq!(repeated.is_some(), repeats);
        }
    }
}
