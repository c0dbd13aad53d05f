//! What the mock remembers: recorded requests, counters, and the guards that notice clients leaving.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::http::{HeaderMap, Method, Uri};
use bytes::Bytes;
use serde_json::Value;

/// One request as the mock received it, recorded once its body has been read.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `"POST"`.
    pub method: String,
    /// Request path without the query, e.g. `"/v1/chat/completions"`.
    pub path: String,
    /// Query string without the `?`, if any.
    pub query: Option<String>,
    /// Headers in the order received; names are lowercase, values lossily decoded.
    pub headers: Vec<(String, String)>,
    /// The raw request body.
    pub body: Bytes,
    /// The body parsed as JSON, when it is JSON.
    pub json: Option<Value>,
}

impl RecordedRequest {
    pub(crate) fn new(method: &Method, uri: &Uri, headers: &HeaderMap, body: Bytes) -> Self {
        let json = serde_json::from_slice(&body).ok();
        RecordedRequest {
            method: method.as_str().to_owned(),
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            headers: headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_ascii_lowercase(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body,
            json,
        }
    }

    /// The first value of header `name` (matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body's `model` field, when the body is a JSON object that has one; for a
    /// Gemini call (`/v1beta/models/{model}:{method}`), the model in the path.
    pub fn model(&self) -> Option<&str> {
        if let Some((model, _)) = crate::gemini::model_and_method(&self.path) {
            return Some(model);
        }
        self.json.as_ref()?.get("model")?.as_str()
    }
}

/// Counters and recordings shared by the server and its handle.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    hits: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    abandoned: AtomicU64,
    requests: Mutex<VecDeque<RecordedRequest>>,
}

/// Requests kept for inspection; older ones are forgotten so that long load runs of the
/// binary do not grow without bound.
pub const MAX_RECORDED: usize = 1000;

impl Recorder {
    /// Records a request; `counts_as_hit` for chat and embeddings calls.
    pub(crate) fn record(&self, request: RecordedRequest, counts_as_hit: bool) {
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        if requests.len() == MAX_RECORDED {
            requests.pop_front();
        }
        requests.push_back(request);
        drop(requests);
        if counts_as_hit {
            self.hits.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    pub(crate) fn completed(&self) -> u64 {
        self.completed.load(Ordering::SeqCst)
    }

    pub(crate) fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::SeqCst)
    }

    pub(crate) fn abandoned(&self) -> u64 {
        self.abandoned.load(Ordering::SeqCst)
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    pub(crate) fn reset(&self) {
        self.hits.store(0, Ordering::SeqCst);
        self.completed.store(0, Ordering::SeqCst);
        self.cancelled.store(0, Ordering::SeqCst);
        self.abandoned.store(0, Ordering::SeqCst);
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// Which counters a [`BodyGuard`] feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// An SSE stream: `completed` when it ends, `cancelled` when the client leaves first.
    Stream,
    /// A plain body written progressively: `abandoned` when the client leaves first.
    Plain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    Running,
    Finished,
    Cut,
}

/// Lives inside a response body; dropping it before the body ended means the client left.
#[derive(Debug)]
pub(crate) struct BodyGuard {
    recorder: Arc<Recorder>,
    kind: BodyKind,
    state: BodyState,
}

impl BodyGuard {
    pub(crate) fn new(recorder: Arc<Recorder>, kind: BodyKind) -> Self {
        BodyGuard {
            recorder,
            kind,
            state: BodyState::Running,
        }
    }

    /// The body is about to hand over its last bytes.
    pub(crate) fn finish(&mut self) {
        if self.state == BodyState::Running {
            self.state = BodyState::Finished;
            if self.kind == BodyKind::Stream {
                self.recorder.completed.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// The body is cutting the connection on purpose: neither finished nor cancelled.
    pub(crate) fn cut(&mut self) {
        if self.state == BodyState::Running {
            self.state = BodyState::Cut;
        }
    }
}

impl Drop for BodyGuard {
    fn drop(&mut self) {
        if self.state == BodyState::Running {
            let counter = match self.kind {
                BodyKind::Stream => &self.recorder.cancelled,
                BodyKind::Plain => &self.recorder.abandoned,
            };
            counter.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Lives in a handler until it has produced its response; dropping it earlier means
/// the client left while the mock was still waiting (e.g. `slow-<ms>` or `stall`).
#[derive(Debug)]
pub(crate) struct PendingGuard {
    recorder: Arc<Recorder>,
    armed: bool,
}

impl PendingGuard {
    pub(crate) fn new(recorder: Arc<Recorder>) -> Self {
        PendingGuard {
            recorder,
            armed: true,
        }
    }

    /// The response is ready: leaving from now on is no longer counted here.
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if self.armed {
            self.recorder.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}
