//! The load itself: `concurrency` workers, each with its own keep-alive connection,
//! sending one streamed request after another until the run's count or duration is
//! reached, and timing each stream from its request to its header, its first content
//! and its end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderName, HeaderValue};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{timeout, Instant};

use crate::stats::{Failure, Outcome, Sample, Summary};
use crate::watch::{Dialect, Watch};

/// When the run stops starting new streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// This many streams in all.
    Count(usize),
    /// Streams keep starting until this long after the start.
    Duration(Duration),
}

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where to connect (a loopback address).
    pub addr: SocketAddr,
    /// The request's `host` header.
    pub host: String,
    /// The request's path and query.
    pub path: String,
    /// Extra request headers (e.g. `authorization`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The request body, sent as `application/json`.
    pub body: Bytes,
    /// The wire format of the answer.
    pub dialect: Dialect,
    /// Streams kept in flight.
    pub concurrency: usize,
    pub limit: Limit,
    /// Workers start evenly over this time (zero: all at once).
    pub ramp: Duration,
    /// Longest wait for any byte (header or body) before a stream counts as stalled.
    pub stall: Duration,
    /// Longest a whole stream may take.
    pub timeout: Duration,
    /// Open a new connection for every stream instead of keeping one per worker.
    pub fresh_connections: bool,
}

/// Runs the plan and summarises every stream.
pub async fn run(plan: Plan) -> Summary {
    let plan = Arc::new(plan);
    let shared = Arc::new(Shared {
        started: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
    });
    let start = Instant::now();
    let mut workers = JoinSet::new();
    for index in 0..plan.concurrency {
        workers.spawn(worker(Arc::clone(&plan), Arc::clone(&shared), index, start));
    }
    let mut samples = Vec::new();
    while let Some(done) = workers.join_next().await {
        if let Ok(mut mine) = done {
            samples.append(&mut mine);
        }
    }
    Summary::new(
        plan.concurrency,
        &samples,
        start.elapsed(),
        shared.peak.load(Ordering::Relaxed),
    )
}

struct Shared {
    started: AtomicUsize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
}

impl Shared {
    /// Whether another stream may start.
    fn take(&self, limit: Limit, start: Instant) -> bool {
        match limit {
            Limit::Count(n) => self.started.fetch_add(1, Ordering::Relaxed) < n,
            Limit::Duration(d) => start.elapsed() < d,
        }
    }
}

/// A kept-alive connection: the request handle and the task driving the socket.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

async fn worker(plan: Arc<Plan>, shared: Arc<Shared>, index: usize, start: Instant) -> Vec<Sample> {
    if !plan.ramp.is_zero() {
        let offset = plan.ramp.mul_f64(index as f64 / plan.concurrency as f64);
        tokio::time::sleep_until(start + offset).await;
    }
    let mut conn: Option<Conn> = None;
    let mut samples = Vec::new();
    while shared.take(plan.limit, start) {
        let now = shared.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        shared.peak.fetch_max(now, Ordering::Relaxed);
        let (sample, keep) = one(&plan, &mut conn).await;
        shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        samples.push(sample);
        if !keep || plan.fresh_connections {
            conn = None;
        }
    }
    samples
}

async fn connect(plan: &Plan) -> Result<Conn, Failure> {
    let stream = TcpStream::connect(plan.addr)
        .await
        .map_err(|_| Failure::Connect)?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| Failure::Connect)?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(Conn { sender, driver })
}

/// One stream; says whether its connection may carry the next one.
async fn one(plan: &Plan, conn: &mut Option<Conn>) -> (Sample, bool) {
    let start = Instant::now();
    let mut sample = Sample {
        outcome: Outcome::Failed(Failure::Connect),
        ttfb: None,
        ttft: None,
        total: Duration::ZERO,
        connected: false,
        events: 0,
    };
    let outcome = match timeout(plan.timeout, stream(plan, conn, start, &mut sample)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Failed(Failure::Timeout),
    };
    sample.outcome = outcome;
    sample.total = start.elapsed();
    (sample, outcome == Outcome::Completed)
}

async fn stream(
    plan: &Plan,
    conn: &mut Option<Conn>,
    start: Instant,
    sample: &mut Sample,
) -> Outcome {
    let reusable = match conn {
        Some(c) => c.sender.ready().await.is_ok(),
        None => false,
    };
    if !reusable {
        *conn = None;
        sample.connected = true;
        match timeout(plan.stall, connect(plan)).await {
            Ok(Ok(c)) => *conn = Some(c),
            Ok(Err(why)) => return Outcome::Failed(why),
            Err(_) => return Outcome::Stalled,
        }
    }
    let Some(c) = conn.as_mut() else {
        return Outcome::Failed(Failure::Connect);
    };
    let mut request = Request::post(plan.path.as_str())
        .header("host", plan.host.as_str())
        .header("content-type", "application/json")
        .header("accept", "text/event-stream");
    for (name, value) in &plan.headers {
        request = request.header(name, value);
    }
    let Ok(request) = request.body(Full::new(plan.body.clone())) else {
        return Outcome::Failed(Failure::Request);
    };
    let response = match timeout(plan.stall, c.sender.send_request(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(_)) => return Outcome::Failed(Failure::Request),
        Err(_) => return Outcome::Stalled,
    };
    sample.ttfb = Some(start.elapsed());
    if response.status() != 200 {
        return Outcome::Failed(Failure::Status(response.status().as_u16()));
    }
    let mut body = response.into_body();
    let mut watch = Watch::new(plan.dialect);
    loop {
        match timeout(plan.stall, body.frame()).await {
            Err(_) => return Outcome::Stalled,
            Ok(None) => break,
            Ok(Some(Err(_))) => return Outcome::Failed(Failure::Body),
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if watch.push(data) {
                        sample.ttft = Some(start.elapsed());
                    }
                }
            }
        }
    }
    let seen = watch.finish();
    sample.events = seen.events;
    if seen.error {
        Outcome::Failed(Failure::ErrorEvent)
    } else if seen.garbled {
        Outcome::Failed(Failure::Garbled)
    } else if !seen.content {
        Outcome::Failed(Failure::NoContent)
    } else if !seen.usage {
        Outcome::Failed(Failure::NoUsage)
    } else if !seen.done {
        Outcome::Failed(Failure::NoEnd)
    } else {
        Outcome::Completed
    }
}
