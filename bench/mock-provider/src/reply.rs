//! Response plumbing shared by the wire formats: recording, headers, waits, and the
//! places where a behaviour breaks a body or a stream.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

use crate::behavior::Behavior;
use crate::record::{BodyGuard, BodyKind, PendingGuard, RecordedRequest};
use crate::server::Shared;
use crate::sse::{self, Step, WriteOptions};

/// Content type of every JSON body.
pub(crate) const JSON: &str = "application/json";

/// Serializes a wire structure.
pub(crate) fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // These structures always serialize; an empty object is a harmless fallback.
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

/// `response` with header `name` set to `value` (left as is when `value` is not a
/// valid header value).
pub(crate) fn with_header(mut response: Response, name: HeaderName, value: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
    response
}

/// A whole JSON body with `status`.
pub(crate) fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    with_header(
        (status, Body::from(body)).into_response(),
        CONTENT_TYPE,
        JSON,
    )
}

/// A successful JSON body, written whole or progressively as `behavior` asks: cut
/// before any byte, cut after the first half, or paused after the first half.
pub(crate) fn plain_body(shared: &Arc<Shared>, behavior: Behavior, body: Vec<u8>) -> Response {
    let body = Bytes::from(body);
    let half = body.len() / 2;
    let steps = match behavior {
        Behavior::StreamFailEarly => vec![Step::Cut],
        Behavior::DropMidStream => vec![Step::Event(body.slice(..half)), Step::Cut],
        Behavior::StallMidStream => vec![
            Step::Event(body.slice(..half)),
            Step::Pause(shared.config.stall),
            Step::Event(body.slice(half..)),
        ],
        _ => return json_response(StatusCode::OK, body.to_vec()),
    };
    let guard = BodyGuard::new(Arc::clone(&shared.recorder), BodyKind::Plain);
    let body = sse::body(steps, WriteOptions::default(), guard);
    with_header((StatusCode::OK, body).into_response(), CONTENT_TYPE, JSON)
}

/// A `200` whose body is the progressive stream `steps`, with `content_type`.
pub(crate) fn stream_response(
    shared: &Arc<Shared>,
    steps: Vec<Step>,
    content_type: &str,
) -> Response {
    let guard = BodyGuard::new(Arc::clone(&shared.recorder), BodyKind::Stream);
    let body = sse::body(steps, shared.sse_options(), guard);
    with_header(
        (StatusCode::OK, body).into_response(),
        CONTENT_TYPE,
        content_type,
    )
}

/// The steps of a stream whose events are `head` then `tail` (the first `preamble` of
/// them carrying nothing a user would see), broken as `behavior` asks:
///
/// * [`Behavior::StreamFailEarly`]: cut before any event;
/// * [`Behavior::DropMidStream`]: `head`, then cut;
/// * [`Behavior::StallMidStream`]: `head`, a pause of `stall`, then `tail`;
/// * [`Behavior::StreamErrorEvent`]: `head`, then `error_event`, and the stream ends;
/// * [`Behavior::DropAfterPreamble`]: the preamble, then cut;
/// * [`Behavior::StallAfterPreamble`]: the preamble, a pause of `stall`, then the rest;
/// * [`Behavior::Unframed`]: `data: ` and 8 MiB that never end an event, then cut;
/// * anything else: `head` then `tail`.
pub(crate) fn broken_stream(
    head: Vec<Bytes>,
    tail: Vec<Bytes>,
    preamble: usize,
    behavior: Behavior,
    stall: Duration,
    error_event: Bytes,
) -> Vec<Step> {
    match behavior {
        Behavior::StreamFailEarly => return vec![Step::Cut],
        Behavior::Unframed => {
            let filler = Bytes::from(vec![b'x'; 64 * 1024]);
            let mut steps = vec![Step::Event(Bytes::from_static(b"data: "))];
            steps.extend((0..128).map(|_| Step::Event(filler.clone())));
            steps.push(Step::Cut);
            return steps;
        }
        Behavior::DropAfterPreamble | Behavior::StallAfterPreamble => {
            let mut events = head;
            events.extend(tail);
            let rest = events.split_off(preamble.min(events.len()));
            let mut steps: Vec<Step> = events.into_iter().map(Step::Event).collect();
            if behavior == Behavior::DropAfterPreamble {
                steps.push(Step::Cut);
            } else {
                steps.push(Step::Pause(stall));
                steps.extend(rest.into_iter().map(Step::Event));
            }
            return steps;
        }
        _ => {}
    }
    let mut steps: Vec<Step> = head.into_iter().map(Step::Event).collect();
    match behavior {
        Behavior::DropMidStream => steps.push(Step::Cut),
        Behavior::StreamErrorEvent => steps.push(Step::Event(error_event)),
        Behavior::StallMidStream => {
            steps.push(Step::Pause(stall));
            steps.extend(tail.into_iter().map(Step::Event));
        }
        _ => steps.extend(tail.into_iter().map(Step::Event)),
    }
    steps
}

/// Waits as a pre-header behaviour asks.
pub(crate) async fn wait_before_headers(shared: &Shared, behavior: Behavior) {
    let wait = match behavior {
        Behavior::Slow(duration) => duration,
        Behavior::Stall => shared.config.stall,
        _ => Duration::ZERO,
    };
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}

/// Records the request, then answers it with `respond`, counting a client that leaves
/// before the response is ready as abandoned. Every response carries
/// `x-request-id: req_mock_N`.
pub(crate) async fn recorded<F, Fut>(
    shared: Arc<Shared>,
    request: RecordedRequest,
    counts_as_hit: bool,
    respond: F,
) -> Response
where
    F: FnOnce(Arc<Shared>, Option<Value>) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let json = request.json.clone();
    let request_number = shared.next_request_number();
    shared.record(request, counts_as_hit);
    let pending = PendingGuard::new(Arc::clone(&shared.recorder));
    let response = respond(shared, json).await;
    pending.disarm();
    with_header(
        response,
        HeaderName::from_static("x-request-id"),
        &format!("req_mock_{request_number}"),
    )
}

/// The number of whitespace-separated words of `text`.
pub(crate) fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}
