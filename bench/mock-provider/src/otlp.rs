//! A minimal OTLP/HTTP trace collector, for the tracing benchmark: `POST /v1/traces`
//! answers `200` with an empty `ExportTraceServiceResponse` (an empty protobuf body) and
//! counts the export requests, their bytes and the spans in them; `GET /otlp/stats` reads
//! the counts as JSON. Nothing is stored.
//!
//! The spans are counted by walking the protobuf body's framing only
//! (`ExportTraceServiceRequest.resource_spans` (1) → `ResourceSpans.scope_spans` (2) →
//! `ScopeSpans.spans` (2)), without decoding a span. A compressed body
//! (`content-encoding` other than `identity`) or one that is not valid protobuf is counted
//! as an export and in `undecoded`, not in `spans`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;

use crate::server::Shared;

/// What the collector has received.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    exports: AtomicU64,
    bytes: AtomicU64,
    spans: AtomicU64,
    undecoded: AtomicU64,
}

/// The collector's counts at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OtlpStats {
    /// `POST /v1/traces` requests answered.
    pub exports: u64,
    /// Their body bytes, as received.
    pub bytes: u64,
    /// Spans in the bodies that could be read.
    pub spans: u64,
    /// Export requests whose spans were not counted (compressed, or not protobuf).
    pub undecoded: u64,
}

impl Counts {
    pub(crate) fn stats(&self) -> OtlpStats {
        OtlpStats {
            exports: self.exports.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            spans: self.spans.load(Ordering::Relaxed),
            undecoded: self.undecoded.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn reset(&self) {
        for counter in [&self.exports, &self.bytes, &self.spans, &self.undecoded] {
            counter.store(0, Ordering::Relaxed);
        }
    }
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/otlp/stats", get(stats))
}

async fn traces(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let counts = &shared.otlp;
    counts.exports.fetch_add(1, Ordering::Relaxed);
    counts.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    let encoded = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    match (!encoded).then(|| count_spans(&body)).flatten() {
        Some(n) => counts.spans.fetch_add(n, Ordering::Relaxed),
        None => counts.undecoded.fetch_add(1, Ordering::Relaxed),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        Bytes::new(),
    )
        .into_response()
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.otlp.stats()).into_response()
}

/// The spans in an `ExportTraceServiceRequest`, or `None` when the body is not one.
pub fn count_spans(body: &[u8]) -> Option<u64> {
    let mut spans = 0;
    for resource in fields(body, 1) {
        for scope in fields(resource.ok()?, 2) {
            for span in fields(scope.ok()?, 2) {
                span.ok()?;
                spans += 1;
            }
        }
    }
    Some(spans)
}

/// The length-delimited fields numbered `wanted` of one protobuf message; an `Err` item
/// (then nothing more) when the message's framing is broken.
fn fields(message: &[u8], wanted: u64) -> impl Iterator<Item = Result<&[u8], ()>> {
    let mut rest = message;
    let mut broken = false;
    std::iter::from_fn(move || loop {
        if broken || rest.is_empty() {
            return None;
        }
        let Some((number, value)) = next_field(&mut rest) else {
            broken = true;
            return Some(Err(()));
        };
        if let (true, Some(value)) = (number == wanted, value) {
            return Some(Ok(value));
        }
    })
}

/// Reads one field off `rest`: its number, and its bytes when it is length-delimited.
fn next_field<'a>(rest: &mut &'a [u8]) -> Option<(u64, Option<&'a [u8]>)> {
    let tag = varint(rest)?;
    let skip = |rest: &mut &'a [u8], n: usize| -> Option<&'a [u8]> {
        let (value, tail) = (rest.get(..n)?, rest.get(n..)?);
        *rest = tail;
        Some(value)
    };
    let value = match tag & 7 {
        0 => {
            varint(rest)?;
            None
        }
        1 => {
            skip(rest, 8)?;
            None
        }
        2 => {
            let n = usize::try_from(varint(rest)?).ok()?;
            Some(skip(rest, n)?)
        }
        5 => {
            skip(rest, 4)?;
            None
        }
        _ => return None,
    };
    Some((tag >> 3, value))
}

/// A base-128 varint off the front of `rest`.
fn varint(rest: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, byte) in rest.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *rest = &rest[i + 1..];
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A length-delimited field (its length a varint of one byte or more).
    fn len_field(number: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![number << 3 | 2];
        let mut n = bytes.len();
        while n >= 0x80 {
            out.push((n & 0x7f) as u8 | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn counts_spans_across_resources_and_scopes() {
        let span = len_field(1, &[0xab; 16]); // a span's trace_id, as bytes
        let scope = |n: usize| {
            let mut s = len_field(1, b"scope"); // InstrumentationScope
            for _ in 0..n {
                s.extend(len_field(2, &span));
            }
            s.extend([3 << 3 | 2, 0]); // schema_url, empty
            s
        };
        let mut resource = len_field(1, &len_field(1, b"attrs")); // Resource
        resource.extend(len_field(2, &scope(3)));
        resource.extend(len_field(2, &scope(2)));
        let mut other = vec![2 << 3, 0x96, 0x01]; // an unknown varint field
        other.extend(len_field(2, &scope(1)));
        let mut body = len_field(1, &resource);
        body.extend(len_field(1, &other));
        assert_eq!(count_spans(&body), Some(6));
        assert_eq!(count_spans(&[]), Some(0));
    }

    #[test]
    fn broken_framing_is_not_a_count() {
        assert_eq!(count_spans(&[1 << 3 | 2, 5, 0]), None);
        assert_eq!(count_spans(&[0xff]), None);
        assert_eq!(count_spans(&[1 << 3 | 7]), None);
    }

    #[tokio::test]
    async fn answers_an_export_and_counts_it() {
        let mock = crate::MockProvider::start(crate::MockConfig::default())
            .await
            .unwrap();
        let scope = len_field(2, &len_field(2, &len_field(1, &[1; 16])));
        let body = len_field(1, &scope);
        let url = format!("http://{}/v1/traces", mock.addr());
        let client = reqwest::Client::new();
        let answer = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.headers()["content-type"], "application/x-protobuf");
        assert!(answer.bytes().await.unwrap().is_empty());
        client
            .post(&url)
            .header("content-encoding", "gzip")
            .body(vec![0x1f, 0x8b])
            .send()
            .await
            .unwrap();
        let expected = OtlpStats {
            exports: 2,
            bytes: body.len() as u64 + 2,
            spans: 1,
            undecoded: 1,
        };
        assert_eq!(mock.otlp_stats(), expected);
        let read: serde_json::Value = client
            .get(format!("http://{}/otlp/stats", mock.addr()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(read, serde_json::to_value(expected).unwrap());
        assert_eq!(mock.hits(), 0);
    }
}
