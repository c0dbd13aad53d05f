//! Finished spans as plain values, and their OTLP encoding: an
//! `ExportTraceServiceRequest` (opentelemetry-proto's `collector/trace/v1`) written
//! straight from them, one resource and one instrumentation scope per request.
//!
//! The gateway records a request's spans as these values and hands them to the export
//! queue together when the request ends; the export thread encodes a batch with
//! [`encode_request`]. Nothing here allocates: keys are static, every message's length is
//! known before it is written, and each byte is written once.

use std::borrow::Cow;

use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};

/// OTLP's span kinds (`Span.SpanKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(Cow<'static, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Strs(Vec<String>),
}

impl From<&'static str> for Value {
    fn from(s: &'static str) -> Self {
        Value::Str(Cow::Borrowed(s))
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(Cow::Owned(s))
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::Int(n)
    }
}

impl From<f64> for Value {
    fn from(n: f64) -> Self {
        Value::Float(n)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

/// One attribute of a span.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    pub key: &'static str,
    pub value: Value,
}

impl Attribute {
    pub fn new(key: &'static str, value: impl Into<Value>) -> Self {
        Self {
            key,
            value: value.into(),
        }
    }
}

/// An event on a span: its name and when it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: &'static str,
    pub unix_nanos: u64,
}

/// A finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The parent span, and whether it is remote (another process's).
    pub parent: Option<([u8; 8], bool)>,
    /// W3C trace flags (bit 0: sampled).
    pub flags: u8,
    /// The trace's `tracestate` header, when it has one.
    pub trace_state: Option<std::sync::Arc<str>>,
    pub name: Cow<'static, str>,
    pub kind: Kind,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attributes: Vec<Attribute>,
    pub events: Vec<Event>,
    /// Set when the span failed: its status is then `ERROR` with this description.
    pub error: Option<Cow<'static, str>>,
}

/// OTLP's `SpanFlags`: the flags say whether the parent is remote.
const CONTEXT_HAS_IS_REMOTE: u32 = 0x100;
const CONTEXT_IS_REMOTE: u32 = 0x200;
/// `Status.StatusCode.STATUS_CODE_ERROR`.
const STATUS_ERROR: u64 = 2;

/// Appends one `ExportTraceServiceRequest` holding `spans` of the service `service`,
/// recorded under the instrumentation scope `scope`. Each message's length is worked out
/// before it is written, so every byte is written once, in place.
pub fn encode_request(service: &str, scope: &str, spans: &[SpanRecord], out: &mut Vec<u8>) {
    let scope_len = field_len(scope.len());
    let scope_spans_len =
        field_len(scope_len) + spans.iter().map(|s| field_len(span_len(s))).sum::<usize>();
    let resource_len = field_len(str_key_value_len("service.name", service));
    let resource_spans_len = field_len(resource_len) + field_len(scope_spans_len);
    out.reserve(field_len(resource_spans_len));
    // ExportTraceServiceRequest { resource_spans = 1 }
    header(1, resource_spans_len, out);
    // ResourceSpans { resource = 1, scope_spans = 2 }; Resource { attributes = 1 }
    header(1, resource_len, out);
    header(1, str_key_value_len("service.name", service), out);
    string(1, "service.name", out);
    header(2, field_len(service.len()), out);
    string(1, service, out);
    // ScopeSpans { scope = 1, spans = 2 }; InstrumentationScope { name = 1 }
    header(2, scope_spans_len, out);
    header(1, scope_len, out);
    string(1, scope, out);
    for span in spans {
        header(2, span_len(span), out);
        encode_span(span, out);
    }
}

/// The encoded length of one `Span`.
fn span_len(s: &SpanRecord) -> usize {
    let state = s
        .trace_state
        .as_deref()
        .filter(|t| !t.is_empty())
        .map_or(0, |t| field_len(t.len()));
    let parent = if s.parent.is_some() { field_len(8) } else { 0 };
    let attributes: usize = s
        .attributes
        .iter()
        .map(|a| field_len(key_value_len(a.key, &a.value)))
        .sum();
    let events: usize = s.events.iter().map(|e| field_len(event_len(e))).sum();
    let status = s.error.as_ref().map_or(0, |d| field_len(status_len(d)));
    // ids, name, kind (2), start and end (9 each), flags (a two-byte key and 4 bytes)
    field_len(16)
        + field_len(8)
        + state
        + parent
        + field_len(s.name.len())
        + 2
        + 18
        + attributes
        + events
        + status
        + 6
}

/// The fields of one `Span`.
fn encode_span(s: &SpanRecord, out: &mut Vec<u8>) {
    bytes(1, &s.trace_id, out);
    bytes(2, &s.span_id, out);
    if let Some(state) = s.trace_state.as_deref().filter(|t| !t.is_empty()) {
        string(3, state, out);
    }
    let mut flags = u32::from(s.flags) | CONTEXT_HAS_IS_REMOTE;
    if let Some((parent, remote)) = &s.parent {
        bytes(4, parent, out);
        if *remote {
            flags |= CONTEXT_IS_REMOTE;
        }
    }
    string(5, &s.name, out);
    varint(6, s.kind as u64, out);
    fixed64(7, s.start_unix_nanos, out);
    fixed64(8, s.end_unix_nanos, out);
    for a in &s.attributes {
        key_value(9, a.key, &a.value, out);
    }
    for e in &s.events {
        // Event { time_unix_nano = 1, name = 2 }
        header(11, event_len(e), out);
        fixed64(1, e.unix_nanos, out);
        string(2, e.name, out);
    }
    if let Some(description) = &s.error {
        // Status { message = 2, code = 3 }
        header(15, status_len(description), out);
        string(2, description, out);
        varint(3, STATUS_ERROR, out);
    }
    encode_key(16, WireType::ThirtyTwoBit, out);
    out.extend_from_slice(&flags.to_le_bytes());
}

fn event_len(e: &Event) -> usize {
    9 + field_len(e.name.len())
}

fn status_len(description: &str) -> usize {
    field_len(description.len()) + 2
}

/// A length-delimited field's key and length, its `len` bytes to follow.
fn header(tag: u32, len: usize, out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

/// The encoded length of a `KeyValue` holding a string.
fn str_key_value_len(key: &str, value: &str) -> usize {
    field_len(key.len()) + field_len(field_len(value.len()))
}

/// The encoded length of a `KeyValue`.
fn key_value_len(key: &str, value: &Value) -> usize {
    field_len(key.len()) + field_len(any_len(value))
}

/// The bytes of a length-delimited field of `n` bytes whose tag is under 16.
fn field_len(n: usize) -> usize {
    1 + encoded_len_varint(n as u64) + n
}

/// A `KeyValue { key = 1, value = 2 }` as field `tag` (under 16).
fn key_value(tag: u32, key: &str, value: &Value, out: &mut Vec<u8>) {
    header(tag, key_value_len(key, value), out);
    string(1, key, out);
    header(2, any_len(value), out);
    any_value(value, out);
}

/// The encoded length of an `AnyValue`.
fn any_len(value: &Value) -> usize {
    match value {
        Value::Str(s) => field_len(s.len()),
        Value::Bool(_) => 2,
        Value::Int(n) => 1 + encoded_len_varint(*n as u64),
        Value::Float(_) => 9,
        Value::Strs(items) => field_len(array_len(items)),
    }
}

/// The encoded length of an `ArrayValue` of strings.
fn array_len(items: &[String]) -> usize {
    items.iter().map(|s| field_len(field_len(s.len()))).sum()
}

/// An `AnyValue`'s one field: string 1, bool 2, int 3, double 4, array 5.
fn any_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Str(s) => string(1, s, out),
        Value::Bool(b) => varint(2, u64::from(*b), out),
        Value::Int(n) => varint(3, *n as u64, out),
        Value::Float(f) => {
            encode_key(4, WireType::SixtyFourBit, out);
            out.extend_from_slice(&f.to_le_bytes());
        }
        Value::Strs(items) => {
            // ArrayValue { values = 1 } of string AnyValues.
            header(5, array_len(items), out);
            for item in items {
                header(1, field_len(item.len()), out);
                string(1, item, out);
            }
        }
    }
}

fn varint(tag: u32, n: u64, out: &mut Vec<u8>) {
    encode_key(tag, WireType::Varint, out);
    encode_varint(n, out);
}

fn fixed64(tag: u32, n: u64, out: &mut Vec<u8>) {
    encode_key(tag, WireType::SixtyFourBit, out);
    out.extend_from_slice(&n.to_le_bytes());
}

fn bytes(tag: u32, b: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

fn string(tag: u32, s: &str, out: &mut Vec<u8>) {
    bytes(tag, s.as_bytes(), out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use prost::Message;

    fn span(name: &'static str, kind: Kind) -> SpanRecord {
        SpanRecord {
            trace_id: [7; 16],
            span_id: [1, 2, 3, 4, 5, 6, 7, 8],
            parent: None,
            flags: 1,
            trace_state: None,
            name: Cow::Borrowed(name),
            kind,
            start_unix_nanos: 1_700_000_000_000_000_000,
            end_unix_nanos: 1_700_000_000_000_500_000,
            attributes: Vec::new(),
            events: Vec::new(),
            error: None,
        }
    }

    #[test]
    fn what_is_encoded_decodes_as_opentelemetry_protos_request() {
        let mut server = span("POST /v1/chat/completions", Kind::Server);
        server.parent = Some(([9; 8], true));
        server.trace_state = Some("vendor=abc".into());
        server.attributes = vec![
            Attribute::new("http.request.method", "POST"),
            Attribute::new("http.response.status_code", 200i64),
            Attribute::new("perpetuo.cost_usd", 0.25f64),
            Attribute::new("gen_ai.request.stream", true),
            Attribute::new("big", -3i64),
            Attribute::new("long", "x".repeat(300)),
            Attribute::new(
                "gen_ai.response.finish_reasons",
                Value::Strs(vec!["stop".into(), "length".into()]),
            ),
        ];
        let mut attempt = span("chat gpt-4o-mini", Kind::Client);
        attempt.parent = Some(([1, 2, 3, 4, 5, 6, 7, 8], false));
        attempt.span_id = [2; 8];
        attempt.events = vec![Event {
            name: "perpetuo.first_token",
            unix_nanos: 1_700_000_000_000_100_000,
        }];
        attempt.error = Some("upstream_5xx".into());
        let mut out = Vec::new();
        encode_request(
            "perpetuo-gateway",
            "perpetuo-gateway",
            &[server, attempt],
            &mut out,
        );

        let request = ExportTraceServiceRequest::decode(out.as_slice()).unwrap();
        // Every length as prost itself would write it.
        assert_eq!(request.encoded_len(), out.len());
        assert_eq!(request.resource_spans.len(), 1);
        let rs = &request.resource_spans[0];
        let resource = rs.resource.as_ref().unwrap();
        assert_eq!(resource.attributes[0].key, "service.name");
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().unwrap().name, "perpetuo-gateway");
        let (s, a) = (&ss.spans[0], &ss.spans[1]);
        assert_eq!(s.name, "POST /v1/chat/completions");
        assert_eq!(s.kind, 2);
        assert_eq!(s.trace_id, vec![7; 16]);
        assert_eq!(s.parent_span_id, vec![9; 8]);
        assert_eq!(s.trace_state, "vendor=abc");
        assert_eq!(s.flags, 0x301);
        assert_eq!(s.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(s.end_time_unix_nano, 1_700_000_000_000_500_000);
        let value = |k: &str| {
            s.attributes
                .iter()
                .find(|kv| kv.key == k)
                .and_then(|kv| kv.value.clone())
                .and_then(|v| v.value)
        };
        assert_eq!(
            value("http.request.method"),
            Some(Any::StringValue("POST".into()))
        );
        assert_eq!(value("http.response.status_code"), Some(Any::IntValue(200)));
        assert_eq!(value("perpetuo.cost_usd"), Some(Any::DoubleValue(0.25)));
        assert_eq!(value("gen_ai.request.stream"), Some(Any::BoolValue(true)));
        assert_eq!(value("big"), Some(Any::IntValue(-3)));
        assert_eq!(value("long"), Some(Any::StringValue("x".repeat(300))));
        let Some(Any::ArrayValue(reasons)) = value("gen_ai.response.finish_reasons") else {
            panic!("not an array");
        };
        let reasons: Vec<_> = reasons.values.into_iter().filter_map(|v| v.value).collect();
        assert_eq!(
            reasons,
            vec![
                Any::StringValue("stop".into()),
                Any::StringValue("length".into())
            ]
        );
        assert!(s.status.is_none() || s.status.as_ref().unwrap().code == 0);

        assert_eq!(a.kind, 3);
        assert_eq!(a.parent_span_id, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(a.flags, 0x101);
        assert_eq!(a.trace_state, "");
        assert_eq!(a.events[0].name, "perpetuo.first_token");
        assert_eq!(a.events[0].time_unix_nano, 1_700_000_000_000_100_000);
        let status = a.status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, "upstream_5xx"));
    }

    #[test]
    fn a_large_batch_is_framed_exactly() {
        let spans: Vec<SpanRecord> = (0..300)
            .map(|i| {
                let mut s = span("chat m", Kind::Client);
                s.attributes = vec![
                    Attribute::new("i", i as i64),
                    Attribute::new("s", "y".repeat(i)),
                ];
                s
            })
            .collect();
        let mut out = vec![0xAB];
        encode_request("svc", "scope", &spans, &mut out);
        let request = ExportTraceServiceRequest::decode(&out[1..]).unwrap();
        assert_eq!(request.encoded_len(), out.len() - 1);
        assert_eq!(request.resource_spans[0].scope_spans[0].spans.len(), 300);
    }

    #[test]
    fn a_root_span_has_no_parent() {
        let mut out = Vec::new();
        encode_request("svc", "svc", &[span("x", Kind::Internal)], &mut out);
        let request = ExportTraceServiceRequest::decode(out.as_slice()).unwrap();
        let s = &request.resource_spans[0].scope_spans[0].spans[0];
        assert!(s.parent_span_id.is_empty());
        assert_eq!((s.kind, s.flags), (1, 0x101));
    }
}
