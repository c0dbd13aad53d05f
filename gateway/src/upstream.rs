//! One upstream attempt with pingora-core's pooled `Connector`: resolve (async, cached,
//! checked against the upstream policy), connect, send the whole body, read the response
//! header, and hold the answer until its first body chunk — all bounded by the
//! time-to-first-byte timeout. Nothing here touches the client's session, so an attempt
//! that fails can fall back to the next entry for any body size.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use perpetuo_core::dns::{ResolveError, Resolver};
use perpetuo_core::upstream::UpstreamPolicy;
use pingora::connectors::http::Connector;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;

use crate::providers::UpstreamRequest;
use crate::routing::{should_fall_back, Entry, Failure};

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub ttfb: Duration,
    pub idle: Duration,
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
    },
}

pub struct Upstreams {
    pub connector: Connector,
    pub resolver: Resolver,
    pub policy: UpstreamPolicy,
    pub timeouts: Timeouts,
}

fn failed(failure: Failure) -> Outcome {
    Outcome::Failed {
        failure,
        status: None,
        retry_after: None,
    }
}

fn retry_after(h: &ResponseHeader) -> Option<Duration> {
    let v = h.headers.get("retry-after")?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl Upstreams {
    async fn peer(&self, entry: &Entry) -> Result<HttpPeer, ResolveError> {
        let up = &entry.upstream;
        let addrs = self
            .resolver
            .resolve_checked(&up.host, &self.policy)
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
        req: &UpstreamRequest,
        deadline: Instant,
    ) -> Outcome {
        let budget = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(budget, self.attempt_inner(entry, req)).await {
            Ok(outcome) => outcome,
            Err(_) => failed(Failure::Timeout),
        }
    }

    async fn attempt_inner(&self, entry: &Entry, req: &UpstreamRequest) -> Outcome {
        let peer = match self.peer(entry).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(entry = %entry.id, error = %e, "provider address refused or unresolvable");
                return failed(Failure::Connect);
            }
        };
        let Ok((mut session, _reused)) = self.connector.get_http_session(&peer).await else {
            return failed(Failure::Connect);
        };
        let Ok(header) = request_header(entry, req) else {
            return failed(Failure::Connect);
        };
        let sent = async {
            session.write_request_header(Box::new(header)).await?;
            session.write_request_body(req.body.clone(), true).await?;
            session.finish_request_body().await?;
            session.read_response_header().await
        }
        .await;
        if sent.is_err() {
            return failed(Failure::Connect);
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
            };
        }
        // Hold the answer until its first body bytes: a stream that dies before them
        // falls back like any other failure.
        loop {
            match session.read_response_body().await {
                Ok(Some(chunk)) if chunk.is_empty() => continue,
                Ok(Some(chunk)) => {
                    let done = session.response_done();
                    session.set_read_timeout(Some(self.timeouts.idle));
                    return Outcome::Ready(Box::new(Ready {
                        session,
                        peer,
                        header,
                        first: Some(chunk),
                        done,
                    }));
                }
                Ok(None) if status >= 300 || header.headers.get("content-length").is_some() => {
                    return Outcome::Ready(Box::new(Ready {
                        session,
                        peer,
                        header,
                        first: None,
                        done: true,
                    }));
                }
                Ok(None) | Err(_) => {
                    return Outcome::Failed {
                        failure: Failure::EarlyEnd,
                        status: Some(status),
                        retry_after: None,
                    }
                }
            }
        }
    }

    pub async fn release(&self, ready: Ready) {
        let idle = ready.peer.options.idle_timeout;
        self.connector
            .release_http_session(ready.session, &ready.peer, idle)
            .await;
    }
}

fn request_header(entry: &Entry, req: &UpstreamRequest) -> pingora::Result<RequestHeader> {
    let mut h = RequestHeader::build("POST", req.path.as_bytes(), Some(req.headers.len() + 4))?;
    h.insert_header("host", entry.upstream.authority())?;
    h.insert_header("content-length", req.body.len().to_string())?;
    h.insert_header("user-agent", "perpetuo-gateway")?;
    for (name, value) in &req.headers {
        h.insert_header(*name, value.as_str())?;
    }
    Ok(h)
}
