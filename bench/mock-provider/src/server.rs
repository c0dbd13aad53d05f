//! The HTTP server: configuration, the [`MockProvider`] handle, and the accept loop.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::DefaultBodyLimit;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::behavior::Behavior;
use crate::openai;
use crate::record::{RecordedRequest, Recorder};
use crate::sse::WriteOptions;

/// The assistant reply of a normal success.
pub const DEFAULT_CONTENT: &str = "Hello from mock provider.";

/// Largest request body the mock reads.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

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
    /// The assistant reply of a normal success, streamed in
    /// [`openai::CONTENT_PIECES`] pieces. Default: [`DEFAULT_CONTENT`].
    pub content: String,
    /// A fixed `created` timestamp (Unix seconds) for byte-reproducible output.
    /// Default: `None`, the current time.
    pub created: Option<u64>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            chunk_delay: Duration::from_millis(5),
            fragment: false,
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            stall: Duration::from_secs(60),
            content: DEFAULT_CONTENT.to_owned(),
            created: None,
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
}

impl Shared {
    /// The override if one is set, otherwise the behaviour named by `model`.
    pub(crate) fn behavior_for(&self, model: &str) -> Behavior {
        let forced = *self.behavior.lock().unwrap_or_else(PoisonError::into_inner);
        forced.unwrap_or_else(|| Behavior::from_model(model))
    }

    /// `N` of the next `chatcmpl-mock-N`, counting from 1.
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

    /// Records a request; `counts_as_hit` for chat and embeddings calls.
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
        let listener = TcpListener::bind(config.bind).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            recorder: Arc::new(Recorder::default()),
            behavior: Mutex::new(None),
            next_completion: AtomicU64::new(0),
            next_request: AtomicU64::new(0),
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

    /// The configuration the server runs with.
    pub fn config(&self) -> &MockConfig {
        &self.shared.config
    }

    /// Forces `behavior` for every request; `None` goes back to choosing by model name.
    pub fn set_behavior(&self, behavior: Option<Behavior>) {
        *self
            .shared
            .behavior
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = behavior;
    }

    /// Chat-completion and embeddings requests received (valid or not).
    pub fn hits(&self) -> u64 {
        self.shared.recorder.hits()
    }

    /// Every request received, in arrival order, recorded once its body was read.
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

    /// Sets every counter back to zero and forgets the recorded requests.
    pub fn reset_counts(&self) {
        self.shared.recorder.reset();
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
        .fallback(openai::not_found)
        .method_not_allowed_fallback(openai::method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
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
