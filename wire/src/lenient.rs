//! Typed views of JSON read as leniently as `serde_json::Value` accessors read it: a field
//! of the wrong type reads as missing instead of failing the whole document, so a typed
//! struct reads exactly what `v.get("x").and_then(Value::as_str)` would, without building
//! the tree. Strings are borrowed from the input where they have no escapes.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

/// One JSON value seen through `Value`'s lenient accessors: a string, a whole number, a
/// boolean, another number, or anything else (null, an array, an object).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Leaf<'a> {
    Str(Cow<'a, str>),
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Null,
    /// An array or an object (its content skipped).
    Nested,
    /// The field was not there.
    #[default]
    Absent,
}

impl<'a> Leaf<'a> {
    /// As `Value::as_str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Leaf::Str(s) => Some(s),
            _ => None,
        }
    }

    /// As `Value::as_u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Leaf::U64(n) => Some(n),
            _ => None,
        }
    }

    /// As `Value::as_bool`.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Leaf::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// As `Value::is_number`.
    pub fn is_number(&self) -> bool {
        matches!(self, Leaf::U64(_) | Leaf::I64(_) | Leaf::F64(_))
    }

    /// Whether the field was there at all (`Value::get(..).is_some()`).
    pub fn is_present(&self) -> bool {
        !matches!(self, Leaf::Absent)
    }

    /// The string, owned past the input.
    pub fn into_string(self) -> Option<String> {
        match self {
            Leaf::Str(s) => Some(s.into_owned()),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Leaf<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Leaf<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Leaf::Str(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Leaf::Str(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Leaf::Str(Cow::Owned(s)))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
                Ok(Leaf::U64(n))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
                // As `Value` stores it: a non-negative integer is a u64.
                Ok(u64::try_from(n).map_or(Leaf::I64(n), Leaf::U64))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Self::Value, E> {
                Ok(Leaf::F64(n))
            }
            fn visit_bool<E>(self, b: bool) -> Result<Self::Value, E> {
                Ok(Leaf::Bool(b))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Leaf::Null)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Leaf::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Leaf::Nested)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Leaf::Nested)
            }
        }
        d.deserialize_any(V)
    }
}

/// A field read as `T` when it has `T`'s shape, and as missing otherwise (as a chain of
/// `Value::get` reads it); whether it was there at all is kept.
#[derive(Debug, Clone)]
pub struct Lenient<T> {
    pub present: bool,
    pub value: Option<T>,
}

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Self {
            present: false,
            value: None,
        }
    }
}

impl<T> Lenient<T> {
    /// A missing field.
    pub const fn absent() -> Self {
        Self {
            present: false,
            value: None,
        }
    }

    pub fn get(&self) -> Option<&T> {
        self.value.as_ref()
    }

    pub fn into_inner(self) -> Option<T> {
        self.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The field's own text, read again as `T` when it is an object (serde would also
        // read a struct from an array, which `Value::get` never does): a mismatch stays
        // inside this field.
        let raw = <&'de RawValue>::deserialize(d)?;
        let text = raw.get();
        Ok(Self {
            present: true,
            value: text
                .starts_with('{')
                .then(|| serde_json::from_str(text).ok())
                .flatten(),
        })
    }
}

/// A list read leniently: an array's elements, each read as `T` when it is an object
/// with `T`'s shape (and as missing otherwise), or nothing when the field is not an
/// array.
#[derive(Debug, Clone)]
pub struct List<T> {
    pub present: bool,
    items: Option<Vec<Lenient<T>>>,
}

impl<T> Default for List<T> {
    fn default() -> Self {
        Self {
            present: false,
            items: None,
        }
    }
}

impl<T> List<T> {
    /// A missing list.
    pub const fn absent() -> Self {
        Self {
            present: false,
            items: None,
        }
    }

    /// The elements, when the field is an array.
    pub fn get(&self) -> Option<&Vec<Lenient<T>>> {
        self.items.as_ref()
    }

    pub fn into_items(self) -> Option<Vec<Lenient<T>>> {
        self.items
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(d)?;
        let text = raw.get();
        Ok(Self {
            present: true,
            items: text
                .starts_with('[')
                .then(|| serde_json::from_str(text).ok())
                .flatten(),
        })
    }
}

/// A field passed on whatever its shape (`null` included), as `Value::get` finds it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw<'a>(pub Option<&'a RawValue>);

impl<'a> Raw<'a> {
    /// The field as a `Value` (`Value::Null` when missing), for an output.
    pub fn value(&self) -> Value {
        self.to_value().unwrap_or(Value::Null)
    }

    /// The field as a `Value`, when it is there.
    pub fn to_value(&self) -> Option<Value> {
        self.0.and_then(|r| serde_json::from_str(r.get()).ok())
    }

    pub fn is_present(&self) -> bool {
        self.0.is_some()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Raw<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'de RawValue>::deserialize(d).map(|r| Raw(Some(r)))
    }
}

/// The elements of a [`List`]: those with `T`'s shape, and the others as `None`.
pub fn items<T>(list: &List<T>) -> impl Iterator<Item = Option<&T>> {
    list.get().into_iter().flatten().map(Lenient::get)
}

/// Parses `text` as `T`, or nothing.
pub fn parse<'a, T: Deserialize<'a>>(text: &'a str) -> Option<T> {
    serde_json::from_str(text).ok()
}

/// Parses `bytes` as `T`, or nothing.
pub fn parse_slice<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    serde_json::from_slice(bytes).ok()
}

/// A JSON document read as `T` when it has `T`'s shape, and as `T::default()` when it is
/// JSON of another shape (as `Value::get` reads a non-object); `None` when it is not JSON.
pub fn document<'a, T: Deserialize<'a> + Default>(bytes: &'a [u8]) -> Option<T> {
    let doc: Lenient<T> = serde_json::from_slice(bytes).ok()?;
    Some(doc.value.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Doc<'a> {
        #[serde(default, borrow)]
        name: Leaf<'a>,
        #[serde(default)]
        n: Leaf<'a>,
        #[serde(default)]
        inner: Lenient<Inner<'a>>,
        #[serde(default)]
        list: List<Inner<'a>>,
    }

    #[derive(serde::Deserialize)]
    struct Inner<'a> {
        #[serde(default, borrow)]
        text: Leaf<'a>,
    }

    #[test]
    fn a_wrong_type_reads_as_missing_as_value_reads_it() {
        let text =
            r#"{"name": 5, "n": -1, "inner": "x", "list": [{"text": "a"}, 3, {"text": {}}]}"#;
        let d: Doc = parse(text).unwrap();
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(d.name.as_str(), v["name"].as_str());
        assert_eq!(d.n.as_u64(), v["n"].as_u64());
        assert!(d.inner.present && d.inner.get().is_none());
        let texts: Vec<Option<&str>> = items(&d.list)
            .map(|i| i.and_then(|i| i.text.as_str()))
            .collect();
        assert_eq!(texts, [Some("a"), None, None]);
        let d: Doc = parse(r#"{"name": "caf\u00e9", "n": 1.0}"#).unwrap();
        assert_eq!(d.name.as_str(), Some("café"));
        assert_eq!(d.n.as_u64(), None);
        assert!(!d.inner.present);
    }
}
