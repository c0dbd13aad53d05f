//! The HTTP server: configuration, the [`MockProvider`] handle, and the accept loop.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::{JoinHandle, JoinSet};

use crate::behavior::Behavior;
use crate::record::{RecordedRequest, Recorder};
use crate::sse::WriteOptions;
use crate::{anthropic, gemini, openai};

/// The assistant reply of a normal success.
pub const DEFAULT_CONTENT: &str = "Hello from mock provider.";

/// Largest request body the mock reads.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Connections waiting to be accepted. Tokio's default (1024) drops connections of a
/// burst of thousands of streams; the kernel caps this at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 16 * 1024;

/// How the mock serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockConfig {
    /// Wait between two consecutive SSE events. Default: 5 ms.
    pub chunk_delay: Duration,
    /// Write SSE bytes in awkward fragments: split inside events and inside multi-byte
    /// UTF-8 characters, and several events in one write (see [`crate::sse::Fragmenter`]).
    /// The bytes themselves do not change. Default: off.
    pub fragment: bool,
    /// Address to listen on. Default: `127.0.0.1:0` (any free port).
    pub bind: SocketAddr,
    /// How long [`Behavior::Stall`] and [`Behavior::StallMidStream`] wait. Default: 60 s.
    pub stall: Duration,
    /// The assistant reply of a normal success, streamed in [`MockConfig::pieces`]
    /// pieces. Default: [`DEFAULT_CONTENT`].
    pub content: String,
    /// Into how many pieces a text reply is streamed, which is also its completion
    /// (output, candidates) token count. Default: [`openai::CONTENT_PIECES`] (5).
    pub pieces: usize,
    /// A fixed `created` timestamp (Unix seconds) for byte-reproducible output.
    /// Default: `None`, the current time.
    pub created: Option<u64>,
    /// Act like a provider's prompt cache: a non-stream chat completion whose prefix (its
    /// leading system messages and first other message) this mock has seen before with
    /// the same `Authorization` reports that prefix's tokens as
    /// `usage.prompt_tokens_details.cached_tokens`. Default: off (always 0).
    pub prompt_cache: bool,
    /// Play a coding agent's whole session instead of the usual answers (see
    /// [`crate::agent`]): every chat-like request of every format is answered by this
    /// script, and no [`Behavior`] applies. Default: `None`.
    pub agent: Option<crate::agent::AgentScript>,
    /// Per-key rate limits reported on every answer and enforced with 429s (see
    /// [`crate::quota`]); changed while serving with [`MockProvider::set_rate_limit`].
    /// Default: `None` (no rate-limit headers, except on a [`Behavior::Status`] 429).
    pub rate_limit: Option<crate::quota::RateLimit>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            chunk_delay: Duration::from_millis(5),
            fragment: false,
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            stall: Duration::from_secs(60),
            content: DEFAULT_CONTENT.to_owned(),
            pieces: openai::CONTENT_PIECES,
            created: None,
            prompt_cache: false,
            agent: None,
            rate_limit: None,
        }
    }
}

/// State shared by the handle and every request handler.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    pub(crate) recorder: Arc<Recorder>,
    behavior: Mutex<Option<Behavior>>,
    next_completion: AtomicU64,
    next_request: AtomicU64,
    /// Prefixes seen, by (authorization, prefix hash), for [`MockConfig::prompt_cache`].
    prompt_prefixes: Mutex<std::collections::HashSet<(String, u64)>>,
    rate_limit: Mutex<Option<crate::quota::RateLimit>>,
    pub(crate) windows: crate::quota::Windows,
    /// What the OTLP collector route received (see [`crate::otlp`]).
    pub(crate) otlp: crate::otlp::Counts,
}

/// Most prefixes the prompt cache remembers (then it starts again empty).
const MAX_PROMPT_PREFIXES: usize = 100_000;

impl Shared {
    /// Whether `prefix` was seen before with `auth` (and remembers it now).
    pub(crate) fn prompt_cached(&self, auth: &str, prefix: u64) -> bool {
        let mut seen = self
            .prompt_prefixes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if seen.len() >= MAX_PROMPT_PREFIXES {
            seen.clear();
        }
        !seen.insert((auth.to_owned(), prefix))
    }

    /// The per-key rate limits in force.
    pub(crate) fn rate_limit(&self) -> Option<crate::quota::RateLimit> {
        self.rate_limit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The override if one is set, otherwise the behaviour named by `model`.
    pub(crate) fn behavior_for(&self, model: &str) -> Behavior {
        let forced = *self.behavior.lock().unwrap_or_else(PoisonError::into_inner);
        forced.unwrap_or_else(|| Behavior::from_model(model))
    }

    /// `N` of the next `chatcmpl-mock-N`, `msg_mock_N` or `mock-N` (one count across
    /// formats), counting from 1.
    pub(crate) fn next_completion_number(&self) -> u64 {
        self.next_completion.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// `N` of the next `x-request-id: req_mock_N`, counting from 1.
    pub(crate) fn next_request_number(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The `created` timestamp to put in responses.
    pub(crate) fn created(&self) -> u64 {
        self.config.created.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|elapsed| elapsed.as_secs())
                .unwrap_or_default()
        })
    }

    /// How SSE bodies are written.
    pub(crate) fn sse_options(&self) -> WriteOptions {
        WriteOptions {
            chunk_delay: self.config.chunk_delay,
            fragment: self.config.fragment,
        }
    }

    /// Records a request; `counts_as_hit` for chat-like and embeddings calls.
    pub(crate) fn record(&self, request: RecordedRequest, counts_as_hit: bool) {
        self.recorder.record(request, counts_as_hit);
    }
}

/// A running mock provider. Dropping it stops the server and closes its connections.
#[derive(Debug)]
pub struct MockProvider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl MockProvider {
    /// Binds `config.bind` and starts serving on the current Tokio runtime.
    pub async fn start(config: MockConfig) -> io::Result<MockProvider> {
        let socket = match config.bind {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(config.bind)?;
        let listener = socket.listen(LISTEN_BACKLOG)?;
        let addr = listener.local_addr()?;
        let rate_limit = Mutex::new(config.rate_limit.clone());
        let shared = Arc::new(Shared {
            config,
            recorder: Arc::new(Recorder::default()),
            behavior: Mutex::new(None),
            next_completion: AtomicU64::new(0),
            next_request: AtomicU64::new(0),
            prompt_prefixes: Mutex::new(std::collections::HashSet::new()),
            rate_limit,
            windows: crate::quota::Windows::default(),
            otlp: crate::otlp::Counts::default(),
        });
        let router = router(Arc::clone(&shared));
        let task = tokio::spawn(accept_loop(listener, router));
        Ok(MockProvider { addr, shared, task })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI-style base URL, `http://ADDR/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Anthropic's base URL, `http://ADDR/v1` (Messages at `http://ADDR/v1/messages`).
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Gemini's base URL, `http://ADDR/v1beta` (e.g.
    /// `http://ADDR/v1beta/models/MODEL:generateContent`).
    pub fn gemini_base_url(&self) -> String {
        format!("http://{}/v1beta", self.addr)
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &MockConfig {
        &self.shared.config
    }

    /// Sets the per-key rate limits (`None`: none); every key's window starts again.
    pub fn set_rate_limit(&self, limit: Option<crate::quota::RateLimit>) {
        *self
            .shared
            .rate_limit
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = limit;
        self.shared.windows.clear();
    }

    /// Requests refused with a 429 for their key's quota ([`MockConfig::rate_limit`]);
    /// they are not among [`MockProvider::requests`].
    pub fn rate_limited(&self) -> u64 {
        self.shared.windows.refused()
    }

    /// Forces `behavior` for every request; `None` goes back to choosing by model name.
    pub fn set_behavior(&self, behavior: Option<Behavior>) {
        *self
            .shared
            .behavior
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = behavior;
    }

    /// Chat-like requests of every format (OpenAI chat completions, Anthropic messages,
    /// Gemini `generateContent` / `streamGenerateContent`) and embeddings requests
    /// received (valid or not).
    pub fn hits(&self) -> u64 {
        self.shared.recorder.hits()
    }

    /// The requests received (the last [`crate::record::MAX_RECORDED`]), in arrival order,
    /// each recorded once its body was read.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.recorder.requests()
    }

    /// The most recent request received, if any.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.recorder.requests().pop()
    }

    /// SSE streams that were written to their end.
    pub fn completed(&self) -> u64 {
        self.shared.recorder.completed()
    }

    /// SSE streams whose client went away before their end. Streams cut on purpose
    /// (`drop-mid-stream`, `stream-fail-early`) count neither here nor in [`Self::completed`].
    pub fn cancelled(&self) -> u64 {
        self.shared.recorder.cancelled()
    }

    /// Requests whose client went away while the mock was still waiting to send the
    /// headers (`slow-<ms>`, `stall`), or while it was writing a non-SSE body.
    pub fn abandoned(&self) -> u64 {
        self.shared.recorder.abandoned()
    }

    /// What the OTLP collector route (`POST /v1/traces`, see [`crate::otlp`]) received.
    pub fn otlp_stats(&self) -> crate::otlp::OtlpStats {
        self.shared.otlp.stats()
    }

    /// Sets every counter back to zero and forgets the recorded requests.
    pub fn reset_counts(&self) {
        self.shared.recorder.reset();
        self.shared.otlp.reset();
    }

    /// Waits until `condition` holds, checking every few milliseconds, for at most
    /// `timeout`. Returns whether it held.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&MockProvider) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if condition(self) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Serves until `shutdown` resolves, then stops.
    pub async fn serve_until(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        drop(self);
    }
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every route the mock answers, across wire formats.
fn router(shared: Arc<Shared>) -> Router {
    openai::routes()
        .merge(anthropic::routes())
        .merge(gemini::routes())
        .merge(crate::otlp::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            crate::quota::layer,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

/// The wire format a path belongs to, for answering what the mock does not serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    OpenAi,
    Anthropic,
    Gemini,
}

impl Format {
    fn of(path: &str) -> Format {
        if path == "/v1beta" || path.starts_with("/v1beta/") {
            Format::Gemini
        } else if path == "/v1/messages" || path.starts_with("/v1/messages/") {
            Format::Anthropic
        } else {
            Format::OpenAi
        }
    }
}

/// Any path the mock does not serve: a 404 in the shape of the format the path
/// belongs to (OpenAI's unless under `/v1/messages` or `/v1beta`).
async fn not_found(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match Format::of(uri.path()) {
        Format::OpenAi => openai::not_found(State(shared), method, uri, headers, body).await,
        Format::Anthropic => anthropic::not_found(State(shared), method, uri, headers, body).await,
        Format::Gemini => {
            gemini::unserved(shared, method, uri, headers, body, StatusCode::NOT_FOUND).await
        }
    }
}

/// A served path with the wrong method: a 405 in the shape of the path's format.
async fn method_not_allowed(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match Format::of(uri.path()) {
        Format::OpenAi => {
            openai::method_not_allowed(State(shared), method, uri, headers, body).await
        }
        Format::Anthropic => {
            anthropic::method_not_allowed(State(shared), method, uri, headers, body).await
        }
        Format::Gemini => {
            let status = StatusCode::METHOD_NOT_ALLOWED;
            gemini::unserved(shared, method, uri, headers, body, status).await
        }
    }
}

/// Accepts connections until aborted; aborting it also aborts every open connection.
async fn accept_loop(listener: TcpListener, router: Router) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Small SSE writes must leave at once, not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    let service = TowerToHyperService::new(router.clone());
                    connections.spawn(async move {
                        let _ = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(None)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                // Typically out of file descriptors under load: back off briefly.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
