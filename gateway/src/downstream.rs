//! Client connections, guarded before any HTTP is parsed: a cap on open connections (in
//! all and per client address — IPv6 by its /64; trusted proxies are capped per request
//! in [`crate::clients`] instead), a deadline for a request's whole header, and a limit on
//! how long a kept-alive connection may wait for its next request.
//!
//! Pingora's HTTP/1 server applies its timeouts per read, and waits for a kept-alive
//! connection's next request without any deadline, so a client can hold a connection by
//! sending nothing, or one byte a minute. [`Guarded`] wraps the proxy app and runs the
//! keep-alive loop itself: it reads each request's header (bounded in time and size),
//! then hands the bytes to Pingora as an already-read prefix, so the proxy parses them
//! without another read. The connection's slot is held by a [`Slot`] for its whole life.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::clients::Clients;
use crate::metrics;
use perpetuo_core::forwarded::client_group;

/// Longest the answer to a connection refused at a cap may take to write.
const REFUSAL_WRITE: Duration = Duration::from_millis(100);

/// Largest request header accepted (request line and fields).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most open connections in all.
    pub max_connections: usize,
    /// Most open connections from one IP address; 0 for no per-address cap.
    pub max_per_ip: usize,
    /// Time allowed for a request's whole header: from connecting for a new connection,
    /// from the first byte of the request on a kept-alive one.
    pub header_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request.
    pub keepalive_idle: Duration,
}

/// Counts of open connections, in all and per address.
#[derive(Debug)]
pub struct Slots {
    limits: Limits,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Trusted proxies, which the per-address cap leaves alone.
    clients: Arc<Clients>,
}

/// One open connection's place; freed when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    ip: Option<IpAddr>,
    admitted: bool,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Total,
    PerIp,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::Total => "total",
            Refused::PerIp => "per_ip",
        }
    }

    /// The whole answer to a refused connection: a 503 naming the cap, written without
    /// reading anything, then the connection is closed.
    pub fn answer(self) -> &'static [u8] {
        match self {
            Refused::Total => concat!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n",
                "retry-after: 1\r\nconnection: close\r\ncontent-length: 95\r\n\r\n",
                r#"{"error":{"message":"MAX_CONNECTIONS reached","type":"server_error","code":"connection_limit"}}"#,
            )
            .as_bytes(),
            Refused::PerIp => concat!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n",
                "retry-after: 1\r\nconnection: close\r\ncontent-length: 102\r\n\r\n",
                r#"{"error":{"message":"MAX_CONNECTIONS_PER_IP reached","type":"server_error","code":"connection_limit"}}"#,
            )
            .as_bytes(),
        }
    }
}

impl Slots {
    pub fn new(limits: Limits, clients: Arc<Clients>) -> Arc<Self> {
        Arc::new(Self {
            limits,
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            clients,
        })
    }

    /// Takes a place for a connection from `ip`, or says which cap it would pass. IPv6
    /// addresses count by their /64; a trusted proxy counts only towards the total.
    pub fn acquire(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Slot, Refused> {
        let ip = ip
            .filter(|ip| !self.clients.is_proxy(*ip))
            .map(client_group);
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        // From here on, `slot`'s Drop gives back what was taken.
        let mut slot = Slot {
            slots: self.clone(),
            ip: None,
            admitted: false,
        };
        if before >= self.limits.max_connections {
            return Err(Refused::Total);
        }
        if let (Some(ip), true) = (ip, self.limits.max_per_ip > 0) {
            let Ok(mut map) = self.per_ip.lock() else {
                return Ok(slot);
            };
            let n = map.entry(ip).or_insert(0);
            if *n >= self.limits.max_per_ip {
                return Err(Refused::PerIp);
            }
            *n += 1;
            slot.ip = Some(ip);
        }
        slot.admitted = true;
        metrics::OPEN_CONNECTIONS.inc();
        Ok(slot)
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.open.fetch_sub(1, Ordering::AcqRel);
        if self.admitted {
            metrics::OPEN_CONNECTIONS.dec();
        }
        if let Some(ip) = self.ip {
            if let Ok(mut map) = self.slots.per_ip.lock() {
                if let Some(n) = map.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        map.remove(&ip);
                    }
                }
            }
        }
    }
}

/// What waiting for a request's header gave.
enum Header {
    /// The header (and whatever of the body came with it).
    Read(BytesMut),
    /// The client closed, stayed silent past a deadline, or sent a header too large.
    Gone,
    TooLarge,
}

/// Length of the header (up to its blank line, CRLF or bare LF line ends), when the
/// blank line is in `buf`; the search starts near `from`, where the last one stopped.
fn header_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    let b = &buf[start..];
    let crlf = b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = b.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let end = match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    Some(start + end)
}

/// Reads one request header: the first byte within `first_byte`, the whole header within
/// `header` of the start (new connection) or of its first byte (kept-alive connection).
async fn read_header(
    stream: &mut Stream,
    first_byte: Duration,
    header: Duration,
    new_connection: bool,
    shutdown: &mut ShutdownWatch,
) -> Header {
    let start = tokio::time::Instant::now();
    let mut buf = BytesMut::with_capacity(1024);
    let first = tokio::select! {
        r = tokio::time::timeout(first_byte, stream.read_buf(&mut buf)) => r,
        _ = shutdown.changed() => return Header::Gone,
    };
    match first {
        Ok(Ok(n)) if n > 0 => {}
        _ => return Header::Gone,
    }
    let deadline = if new_connection {
        start + header
    } else {
        tokio::time::Instant::now() + header
    };
    let mut scanned = 0;
    loop {
        match header_end(&buf, scanned) {
            Some(end) if end > MAX_HEADER_BYTES => return Header::TooLarge,
            Some(_) => return Header::Read(buf),
            None if buf.len() > MAX_HEADER_BYTES => return Header::TooLarge,
            None => {}
        }
        scanned = buf.len();
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Header::Gone,
        }
    }
}

/// Reads and discards what the client is still sending (bounded in bytes and time)
/// before closing, so it receives the answer rather than a reset.
async fn linger(stream: &mut Stream) {
    let _ = stream.shutdown().await;
    // On the heap: an array here would sit in every connection's future, lingering or not.
    let mut sink = vec![0u8; 8192];
    let mut left = 4 * MAX_HEADER_BYTES;
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while left > 0 {
        match tokio::time::timeout_at(until, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => return,
        }
    }
}

/// The proxy app behind the connection guard.
pub struct Guarded<A> {
    pub app: Arc<A>,
    pub slots: Arc<Slots>,
}

#[async_trait]
impl<A> ServerApp for Guarded<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let _slot = match self.slots.acquire(ip) {
            Ok(slot) => slot,
            Err(refused) => {
                metrics::CONNECTIONS_REFUSED
                    .with_label_values(&[refused.label()])
                    .inc();
                // One bounded write and close: a refused connection holds no slot and
                // costs no read, so a flood of them stays cheap.
                let answer = refused.answer();
                let _ = tokio::time::timeout(REFUSAL_WRITE, async {
                    stream.write_all(answer).await?;
                    stream.flush().await?;
                    stream.shutdown().await
                })
                .await;
                return None;
            }
        };
        let limits = self.slots.limits;
        let mut shutdown = shutdown.clone();
        let mut new_connection = true;
        loop {
            let first_byte = if new_connection {
                limits.header_timeout
            } else {
                limits.keepalive_idle
            };
            let head = read_header(
                &mut stream,
                first_byte,
                limits.header_timeout,
                new_connection,
                &mut shutdown,
            )
            .await;
            let prefix = match head {
                Header::Read(prefix) => prefix,
                Header::Gone => break,
                Header::TooLarge => {
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 431 Request Header Fields Too Large\r\n\
                              content-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    let _ = stream.flush().await;
                    linger(&mut stream).await;
                    break;
                }
            };
            let mut session = ServerSession::new_http1(stream);
            session.set_pipelined_prefix(prefix);
            let reused = self.app.process_new_http(session, &shutdown).await?;
            let (next, _settings) = reused.consume();
            stream = next;
            if *shutdown.borrow() {
                break;
            }
            new_connection = false;
        }
        None
    }

    async fn cleanup(&self) {
        self.app.http_cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(total: usize, per_ip: usize) -> Arc<Slots> {
        Slots::new(
            Limits {
                max_connections: total,
                max_per_ip: per_ip,
                header_timeout: Duration::from_secs(1),
                keepalive_idle: Duration::from_secs(1),
            },
            Clients::new("10.0.0.1".parse().unwrap(), 0),
        )
    }

    #[test]
    fn ipv6_counts_by_its_64_and_trusted_proxies_only_in_all() {
        let s = slots(100, 2);
        let v6 = |x: &str| -> Option<IpAddr> { Some(x.parse().unwrap()) };
        let _a = s.acquire(v6("2001:db8:0:1::1")).unwrap();
        let _b = s.acquire(v6("2001:db8:0:1::2")).unwrap();
        assert_eq!(
            s.acquire(v6("2001:db8:0:1:abcd::3")).unwrap_err(),
            Refused::PerIp
        );
        assert!(s.acquire(v6("2001:db8:0:2::1")).is_ok());
        let proxy: Vec<Slot> = (0..10)
            .map(|_| s.acquire(v6("10.0.0.1")).unwrap())
            .collect();
        assert_eq!(proxy.len(), 10);
    }

    #[test]
    fn caps_in_all_and_per_address_and_gives_back() {
        let s = slots(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let a1 = s.acquire(Some(a)).unwrap();
        let a2 = s.acquire(Some(a)).unwrap();
        assert_eq!(s.acquire(Some(a)).unwrap_err(), Refused::PerIp);
        let b1 = s.acquire(Some(b)).unwrap();
        assert_eq!(s.acquire(Some(b)).unwrap_err(), Refused::Total);
        assert_eq!(s.open(), 3, "refused attempts give their place back");
        drop(a1);
        let a3 = s.acquire(Some(a)).unwrap();
        drop((a2, a3, b1));
        assert_eq!(s.open(), 0);
        assert!(s.per_ip.lock().unwrap().is_empty(), "no address is kept");
        let unlimited = slots(10, 0);
        let held: Vec<Slot> = (0..10)
            .map(|_| unlimited.acquire(Some(a)).unwrap())
            .collect();
        assert_eq!(held.len(), 10);
    }

    #[test]
    fn refusals_are_short_complete_answers() {
        for r in [Refused::Total, Refused::PerIp] {
            let a = std::str::from_utf8(r.answer()).unwrap();
            assert!(a.len() <= 230, "{} bytes", a.len());
            let (head, body) = a.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with("HTTP/1.1 503 "));
            assert!(head.contains(&format!("content-length: {}", body.len())));
            assert!(head.contains("retry-after: 1"));
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["error"]["code"], "connection_limit");
        }
        assert!(std::str::from_utf8(Refused::PerIp.answer())
            .unwrap()
            .contains("MAX_CONNECTIONS_PER_IP"));
    }

    #[test]
    fn header_ends() {
        assert_eq!(
            header_end(b"GET / HTTP/1.1\r\nhost: x\r\n\r\nbody", 0),
            Some(27)
        );
        assert_eq!(header_end(b"GET / HTTP/1.1\nhost: x\n\n", 0), Some(24));
        assert_eq!(header_end(b"GET / HTTP/1.1\r\nhost: x\r\n", 0), None);
        // A terminator split across two reads is found from the previous length.
        let full = b"GET / HTTP/1.1\r\n\r\n";
        assert_eq!(header_end(full, full.len() - 2), Some(full.len()));
    }
}
