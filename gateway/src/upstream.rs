//! One upstream attempt with pingora-core's pooled `Connector`: resolve (async, cached,
//! checked against the upstream policy, `http://` included), connect, send the whole body, read the response
//! header, and hold the answer until its first real content — all bounded by the
//! time-to-first-byte timeout. A stream is held past its preamble (a role-only chunk,
//! `message_start`, pings) until the first event a user would see; the preamble is kept
//! and replayed. Nothing here touches the client's session, so an attempt that fails —
//! including a stream that dies after its preamble — can fall back to the next entry for
//! any body size.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use perpetuo_core::dns::{ResolveError, Resolver};
use perpetuo_core::upstream::UpstreamPolicy;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;

use crate::routing::headroom::{self, Report};
use crate::routing::{should_fall_back, Connect, Entry, Failure};
use perpetuo_wire::sse::Framer;
use perpetuo_wire::{Signal, UpstreamRequest};

pub use perpetuo_wire::translation::Classify;

/// Most preamble bytes held before the first content; past it the answer is committed
/// (a provider whose preamble is this long is not one to hold back).
const MAX_HELD_PREAMBLE: usize = 256 * 1024;

/// Bytes each read of a provider's answer asks for, held by the connection for the
/// answer's life (Pingora's default is 64 KiB). A stream's events are a few hundred bytes
/// each and it is held open for as long as the answer runs, so it reads 4 KiB at a time; a
/// whole body is read 16 KiB at a time and returned at once (bench/README.md, memory per
/// stream).
const STREAM_READ_BUFFER: usize = 4 * 1024;
const BODY_READ_BUFFER: usize = 16 * 1024;

/// Sizes the reads of an HTTP/1 session's answer (third_party/patches/0003).
fn size_answer_reads(session: &mut HttpSession, stream: bool) {
    if let HttpSession::H1(h1) = session {
        h1.set_body_buffer_size(if stream {
            STREAM_READ_BUFFER
        } else {
            BODY_READ_BUFFER
        });
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub ttfb: Duration,
    pub idle: Duration,
    /// Longest a whole answer may take, from the request's arrival to its last byte.
    pub answer: Duration,
}

/// A response the client will get: its header and first chunk have arrived.
pub struct Ready {
    pub session: HttpSession,
    pub peer: HttpPeer,
    pub header: ResponseHeader,
    pub first: Option<Bytes>,
    pub done: bool,
}

pub enum Outcome {
    Ready(Box<Ready>),
    Failed {
        failure: Failure,
        status: Option<u16>,
        retry_after: Option<Duration>,
        /// What the answer's rate-limit headers said of the key (empty without one).
        report: Report,
    },
}

pub struct Upstreams {
    pub connector: Connector,
    pub resolver: Resolver,
    pub policy: UpstreamPolicy,
    pub timeouts: Timeouts,
    /// Longest stream event accepted from a provider.
    pub max_event_bytes: usize,
}

fn failed(failure: Failure) -> Outcome {
    Outcome::Failed {
        failure,
        status: None,
        retry_after: None,
        report: Report::default(),
    }
}

fn connect_cause(etype: &pingora::ErrorType) -> Connect {
    use pingora::ErrorType as E;
    match etype {
        E::ConnectRefused => Connect::Refused,
        E::ConnectTimedout => Connect::TimedOut,
        E::TLSHandshakeFailure | E::TLSHandshakeTimedout | E::InvalidCert => Connect::Tls,
        _ => Connect::Failed,
    }
}

fn retry_after(h: &ResponseHeader) -> Option<Duration> {
    let v = h.headers.get("retry-after")?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl Upstreams {
    async fn peer(&self, entry: &Entry) -> Result<HttpPeer, ResolveError> {
        let up = &entry.upstream;
        // Only addresses the policy lets this connection reach: the private-range rule,
        // and plain HTTP to allowed private ranges only, whatever the name resolves to now.
        let addrs = self
            .resolver
            .resolve_checked(&up.host, &self.policy, !up.tls)
            .await?;
        let ip = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| ResolveError::Lookup("no address".into()))?;
        let sni = if up.tls {
            up.host.clone()
        } else {
            String::new()
        };
        let mut peer = HttpPeer::new(SocketAddr::new(ip, up.port), up.tls, sni);
        peer.options.connection_timeout = Some(self.timeouts.connect);
        peer.options.total_connection_timeout = Some(self.timeouts.connect);
        peer.options.read_timeout = Some(self.timeouts.ttfb);
        peer.options.write_timeout = Some(self.timeouts.ttfb);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        if up.tls {
            peer.options.set_http_version(2, 1);
            peer.options.max_h2_streams = 100;
        }
        Ok(peer)
    }

    /// Runs one attempt up to the first body chunk.
    pub async fn attempt(
        &self,
        entry: &Entry,
        signal: Classify,
        req: &UpstreamRequest,
        deadline: Instant,
    ) -> Outcome {
        let budget = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(budget, self.attempt_inner(entry, signal, req)).await {
            Ok(outcome) => outcome,
            Err(_) => failed(Failure::Timeout),
        }
    }

    async fn attempt_inner(
        &self,
        entry: &Entry,
        signal: Classify,
        req: &UpstreamRequest,
    ) -> Outcome {
        let peer = match self.peer(entry).await {
            Ok(p) => p,
            Err(ResolveError::Policy(e)) => {
                tracing::warn!(entry = %entry.id, error = %e, "provider address refused by the upstream policy (ALLOWED_PRIVATE_UPSTREAMS)");
                return failed(Failure::RefusedByPolicy);
            }
            Err(e) => {
                tracing::warn!(entry = %entry.id, error = %e, "provider address unresolvable");
                return failed(Failure::Connect(Connect::Unresolvable));
            }
        };
        // Boxed: Pingora's connect future (TLS handshake included) is several KiB, and
        // every request's future would otherwise carry it to its end.
        let (mut session, _reused) = match Box::pin(self.connector.get_http_session(&peer)).await {
            Ok(connected) => connected,
            Err(e) => return failed(Failure::Connect(connect_cause(e.etype()))),
        };
        size_answer_reads(&mut session, req.stream);
        let Ok(header) = request_header(entry, req) else {
            return failed(Failure::Connect(Connect::Failed));
        };
        let sent = async {
            session.write_request_header(Box::new(header)).await?;
            session.write_request_body(req.body.clone(), true).await?;
            session.finish_request_body().await?;
            session.read_response_header().await
        }
        .await;
        if sent.is_err() {
            return failed(Failure::Connect(Connect::Failed));
        }
        let Some(header) = session.response_header().cloned() else {
            return failed(Failure::EarlyEnd);
        };
        let status = header.status.as_u16();
        if should_fall_back(status) {
            return Outcome::Failed {
                failure: Failure::Status(status),
                status: Some(status),
                retry_after: retry_after(&header),
                report: Report::from_headers(&header, status == 429, headroom::now_ms()),
            };
        }
        let stream = status < 300
            && header
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
        let first = if stream {
            self.hold_until_content(&mut session, signal).await
        } else {
            hold_until_body(&mut session, status, &header).await
        };
        match first {
            Ok((first, done)) => {
                session.set_read_timeout(Some(self.timeouts.idle));
                Outcome::Ready(Box::new(Ready {
                    session,
                    peer,
                    header,
                    first,
                    done,
                }))
            }
            Err(failure) => Outcome::Failed {
                failure,
                status: Some(status),
                retry_after: None,
                report: Report::from_headers(&header, false, headroom::now_ms()),
            },
        }
    }

    /// Reads a stream until its first event with content, keeping everything read before
    /// it. A stream that ends, breaks or reports an error before that is a failure.
    async fn hold_until_content(
        &self,
        session: &mut HttpSession,
        signal: Classify,
    ) -> Result<(Option<Bytes>, bool), Failure> {
        let mut framer = Framer::with_limit(self.max_event_bytes);
        let mut held = bytes::BytesMut::new();
        loop {
            let chunk = match session.read_response_body().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => {
                    let last = framer.finish();
                    let verdict = last.map_or(Signal::Preamble, |e| signal(&e));
                    return match verdict {
                        Signal::Content => Ok((Some(held.freeze()), true)),
                        Signal::Preamble => Err(Failure::EarlyEnd),
                        Signal::Error => Err(Failure::StreamError),
                    };
                }
                Err(_) => return Err(Failure::EarlyEnd),
            };
            let events = framer.push(&chunk).map_err(|_| Failure::EarlyEnd)?;
            held.extend_from_slice(&chunk);
            let verdict = events
                .iter()
                .map(signal)
                .find(|s| *s != Signal::Preamble)
                .unwrap_or(Signal::Preamble);
            match verdict {
                Signal::Content => return Ok((Some(held.freeze()), session.response_done())),
                Signal::Error => return Err(Failure::StreamError),
                Signal::Preamble if held.len() > MAX_HELD_PREAMBLE => {
                    return Ok((Some(held.freeze()), session.response_done()))
                }
                Signal::Preamble => {}
            }
        }
    }

    /// A small `GET` of the entry's provider (e.g. its model list), under the same address
    /// policy as an attempt: the whole body of a `200` no larger than `max_bytes` that
    /// arrived within `within`, else `None` (the caller tolerates a provider that does not
    /// answer).
    pub async fn get(
        &self,
        entry: &Entry,
        path: &str,
        auth: &[(&'static str, String)],
        max_bytes: usize,
        within: Duration,
    ) -> Option<Bytes> {
        let ask = async {
            let peer = self.peer(entry).await.ok()?;
            let (mut session, _) = Box::pin(self.connector.get_http_session(&peer))
                .await
                .ok()?;
            let mut h = RequestHeader::build("GET", path.as_bytes(), Some(auth.len() + 3)).ok()?;
            h.insert_header("host", entry.upstream.authority()).ok()?;
            h.insert_header("user-agent", "perpetuo-gateway").ok()?;
            h.insert_header("accept", "application/json").ok()?;
            for (name, value) in auth {
                h.insert_header(*name, value.as_str()).ok()?;
            }
            session.write_request_header(Box::new(h)).await.ok()?;
            session.finish_request_body().await.ok()?;
            session.read_response_header().await.ok()?;
            if session.response_header()?.status.as_u16() != 200 {
                return None;
            }
            let mut body = bytes::BytesMut::new();
            while let Some(chunk) = session.read_response_body().await.ok()? {
                if body.len() + chunk.len() > max_bytes {
                    return None;
                }
                body.extend_from_slice(&chunk);
            }
            Some(body.freeze())
        };
        tokio::time::timeout(within, ask).await.ok().flatten()
    }

    /// Gives the provider connection back to the pool. Boxed: Pingora's release future is
    /// several KiB, and a request's future would otherwise carry it from its start.
    pub fn release(&self, ready: Box<Ready>) -> impl std::future::Future<Output = ()> + '_ {
        Box::pin(async move {
            let Ready { session, peer, .. } = *ready;
            let idle = peer.options.idle_timeout;
            self.connector
                .release_http_session(session, &peer, idle)
                .await;
        })
    }
}

/// Reads a whole-body answer up to its first body bytes. An empty body counts as an
/// answer only when it is declared (`Content-Length`) or is an error status: a `200`
/// that closes without a byte is a broken answer and falls back.
async fn hold_until_body(
    session: &mut HttpSession,
    status: u16,
    header: &ResponseHeader,
) -> Result<(Option<Bytes>, bool), Failure> {
    loop {
        match session.read_response_body().await {
            Ok(Some(chunk)) if chunk.is_empty() => continue,
            Ok(Some(chunk)) => return Ok((Some(chunk), session.response_done())),
            Ok(None) if status >= 300 || header.headers.get("content-length").is_some() => {
                return Ok((None, true))
            }
            Ok(None) | Err(_) => return Err(Failure::EarlyEnd),
        }
    }
}

fn request_header(entry: &Entry, req: &UpstreamRequest) -> pingora::Result<RequestHeader> {
    // Names are given in lower case and written as given: no map of their case.
    let mut h =
        RequestHeader::build_no_case("POST", req.path.as_bytes(), Some(req.headers.len() + 4))?;
    h.insert_header("host", entry.upstream.authority())?;
    h.insert_header("content-length", req.body.len().to_string())?;
    h.insert_header("user-agent", "perpetuo-gateway")?;
    for (name, value) in &req.headers {
        h.insert_header(*name, value.as_str())?;
    }
    Ok(h)
}
