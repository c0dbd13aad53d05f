//! The patches carried on Pingora (`third_party/patches`), each through pingora-core's own
//! API: the client's against a plain TCP server, so what goes on the wire is what is
//! checked, and the listening service's on a runtime of the test's own.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pingora::apps::ServerApp;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::services::listening::Service;
use pingora::services::Service as _;
use pingora::upstreams::peer::HttpPeer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a server waits to be sure nothing was sent: the patched client sends nothing
/// at all in that case, so this bounds the wait, it does not time anything.
const QUIET: Duration = Duration::from_millis(300);
/// A bound on waits for bytes that are on their way.
const BOUND: Duration = Duration::from_secs(10);

async fn listener() -> (TcpListener, HttpPeer) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = HttpPeer::new(l.local_addr().unwrap(), false, String::new());
    (l, peer)
}

fn post(length: usize, extra: &[(&str, &str)]) -> Box<RequestHeader> {
    let mut h = RequestHeader::build("POST", b"/v1/chat/completions", None).unwrap();
    h.insert_header("host", "upstream").unwrap();
    h.insert_header("content-length", length.to_string())
        .unwrap();
    for (name, value) in extra {
        h.insert_header(name.to_string(), *value).unwrap();
    }
    Box::new(h)
}

/// Reads until `buf` holds `want` bytes' worth of a request (header and body), within
/// `BOUND`.
async fn read_until(sock: &mut TcpStream, buf: &mut Vec<u8>, done: impl Fn(&[u8]) -> bool) {
    tokio::time::timeout(BOUND, async {
        while !done(buf) {
            let mut chunk = [0u8; 4096];
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the client closed: {}", String::from_utf8_lossy(buf));
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not received: {}", String::from_utf8_lossy(buf)));
}

/// Nothing arrives on `sock` within `QUIET`.
async fn silent(sock: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 64];
    tokio::time::timeout(QUIET, sock.read(&mut chunk))
        .await
        .is_err()
}

fn header_ended(b: &[u8]) -> bool {
    b.windows(4).any(|w| w == b"\r\n\r\n")
}

#[tokio::test]
async fn a_request_header_with_a_known_length_body_goes_out_with_its_body() {
    let (l, peer) = listener().await;
    let connector = Connector::new(None);
    let (mut session, reused) = connector.get_http_session(&peer).await.unwrap();
    assert!(!reused);
    let (mut sock, _) = l.accept().await.unwrap();

    session.write_request_header(post(5, &[])).await.unwrap();
    // An empty write of the body sends nothing either: the header waits for its bytes.
    let HttpSession::H1(h1) = &mut session else {
        panic!("an HTTP/1 session");
    };
    assert_eq!(h1.write_body(b"").await.unwrap(), Some(0));
    assert!(
        silent(&mut sock).await,
        "the header went out before its body"
    );
    session
        .write_request_body(Bytes::from_static(b"hello"), true)
        .await
        .unwrap();
    session.finish_request_body().await.unwrap();
    let mut got = Vec::new();
    read_until(&mut sock, &mut got, |b| b.ends_with(b"hello")).await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("POST /v1/chat/completions HTTP/1.1\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\n\r\nhello"), "{text}");
}

/// On a new connection, writes `header` alone (no body after it) and returns what the
/// server received: the whole header, or the test fails within `BOUND`.
async fn header_alone(l: &TcpListener, peer: &HttpPeer, header: Box<RequestHeader>) -> String {
    let connector = Connector::new(None);
    let (mut session, _) = connector.get_http_session(peer).await.unwrap();
    let (mut sock, _) = l.accept().await.unwrap();
    session.write_request_header(header).await.unwrap();
    let mut got = Vec::new();
    read_until(&mut sock, &mut got, header_ended).await;
    String::from_utf8(got).unwrap()
}

#[tokio::test]
async fn a_request_header_that_expects_100_continue_or_has_no_body_goes_out_at_once() {
    let (l, peer) = listener().await;
    // Expect: 100-continue: the server must see the header before any body.
    let got = header_alone(&l, &peer, post(5, &[("expect", "100-continue")])).await;
    assert!(
        got.starts_with("POST ") && got.ends_with("\r\n\r\n"),
        "{got}"
    );
    // No body at all.
    let mut get = RequestHeader::build("GET", b"/v1/models", None).unwrap();
    get.insert_header("host", "upstream").unwrap();
    let got = header_alone(&l, &peer, Box::new(get)).await;
    assert!(got.starts_with("GET /v1/models HTTP/1.1\r\n"), "{got}");
    // A zero-length body: nothing to wait for.
    let got = header_alone(&l, &peer, post(0, &[])).await;
    assert!(got.contains("content-length: 0\r\n"), "{got}");
}

#[tokio::test]
async fn a_held_request_header_goes_out_when_the_answer_is_read() {
    let (l, peer) = listener().await;
    let connector = Connector::new(None);
    let (mut session, _) = connector.get_http_session(&peer).await.unwrap();
    let (mut sock, _) = l.accept().await.unwrap();
    session.write_request_header(post(5, &[])).await.unwrap();
    // No body is written: reading the answer sends the header first.
    let server = tokio::spawn(async move {
        let mut got = Vec::new();
        read_until(&mut sock, &mut got, header_ended).await;
        sock.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        got
    });
    session.read_response_header().await.unwrap();
    assert_eq!(session.response_header().unwrap().status.as_u16(), 400);
    let got = server.await.unwrap();
    assert!(String::from_utf8_lossy(&got).starts_with("POST /v1/chat/completions HTTP/1.1\r\n"));
}

#[tokio::test]
async fn an_answer_is_read_in_pieces_no_larger_than_the_body_buffer_set() {
    let (l, peer) = listener().await;
    let connector = Connector::new(None);
    let (mut session, _) = connector.get_http_session(&peer).await.unwrap();
    let HttpSession::H1(h1) = &mut session else {
        panic!("an HTTP/1 session");
    };
    h1.set_body_buffer_size(1024);
    let (mut sock, _) = l.accept().await.unwrap();
    let body: Vec<u8> = (0..10_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let (header_read, mut header_read_rx) = tokio::sync::mpsc::channel::<()>(1);
    let sent = body.clone();
    let server = tokio::spawn(async move {
        let mut got = Vec::new();
        read_until(&mut sock, &mut got, header_ended).await;
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", sent.len());
        sock.write_all(head.as_bytes()).await.unwrap();
        // The body once the client has read the header: none of it rides with the header.
        header_read_rx.recv().await.unwrap();
        sock.write_all(&sent).await.unwrap();
        sock
    });
    let mut get = RequestHeader::build("GET", b"/", None).unwrap();
    get.insert_header("host", "upstream").unwrap();
    session.write_request_header(Box::new(get)).await.unwrap();
    session.finish_request_body().await.unwrap();
    session.read_response_header().await.unwrap();
    header_read.send(()).await.unwrap();
    let mut got = Vec::new();
    let mut reads = 0;
    while let Some(b) = session.read_response_body().await.unwrap() {
        assert!(b.len() <= 1024, "a read of {} bytes", b.len());
        got.extend_from_slice(&b);
        reads += 1;
    }
    assert_eq!(got, body);
    assert!(reads >= 10, "{reads} reads");
    drop(server.await.unwrap());
}

/// A keep-alive server answering every request on every connection with `name`; counts
/// the connections it accepted.
fn serve(l: TcpListener, name: &'static str) -> tokio::sync::watch::Receiver<usize> {
    let (tx, rx) = tokio::sync::watch::channel(0usize);
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = l.accept().await.unwrap();
            tx.send_modify(|n| *n += 1);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}",
                            name.len()
                        );
                        if sock.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    rx
}

/// One GET through `connector` to `peer`: whether the connection was reused, and the body.
async fn get(connector: &Connector, peer: &HttpPeer) -> (bool, String) {
    let (mut session, reused) = connector.get_http_session(peer).await.unwrap();
    let mut h = RequestHeader::build("GET", b"/", None).unwrap();
    h.insert_header("host", "upstream").unwrap();
    session.write_request_header(Box::new(h)).await.unwrap();
    session.finish_request_body().await.unwrap();
    session.read_response_header().await.unwrap();
    let mut body = Vec::new();
    while let Some(b) = session.read_response_body().await.unwrap() {
        body.extend_from_slice(&b);
    }
    assert!(matches!(session, HttpSession::H1(_)));
    connector.release_http_session(session, peer, None).await;
    (reused, String::from_utf8(body).unwrap())
}

#[tokio::test]
async fn a_pooled_connection_is_reused_for_its_peer_and_never_for_another() {
    let (la, a) = listener().await;
    let (lb, b) = listener().await;
    let accepted_a = serve(la, "a");
    let accepted_b = serve(lb, "b");
    let connector = Connector::new(None);

    // The first reuse checks the connection's peer; the ones after it rely on that check.
    assert_eq!(get(&connector, &a).await, (false, "a".into()));
    for _ in 0..3 {
        assert_eq!(get(&connector, &a).await, (true, "a".into()));
    }
    assert_eq!(*accepted_a.borrow(), 1);

    // Another peer gets its own connection, and its answers are its own.
    assert_eq!(get(&connector, &b).await, (false, "b".into()));
    assert_eq!(get(&connector, &b).await, (true, "b".into()));
    assert_eq!(get(&connector, &a).await, (true, "a".into()));
    assert_eq!(*accepted_a.borrow(), 1);
    assert_eq!(*accepted_b.borrow(), 1);
}

/// An application that closes every connection it is given.
struct NeverServed;

#[async_trait::async_trait]
impl ServerApp for NeverServed {
    async fn process_new(
        self: &Arc<Self>,
        _session: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        None
    }
}

/// Set in the environment of the process [`a_fast_shutdown_of_the_proxy_runtime_returns`]
/// starts.
const FAST_SHUTDOWN_CHILD: &str = "PERPETUO_TEST_FAST_SHUTDOWN_CHILD";

/// Patch 0004. Pingora's proxy runtime is a pool of single-threaded runtimes: a listener
/// registers with the runtime that starts its service, and its accept loop is spawned on
/// any runtime of the pool. On a fast shutdown (SIGINT) the runtimes stop at once, each on
/// its own thread; once the listener's runtime has stopped, every accept fails at once
/// ("being shutdown") without spending the task's budget, and an accept loop that never
/// yields then holds its own thread for good: the shutdown never returns (a gateway
/// stopped with Ctrl-C spun and logged forever). The scene runs in a process of its own
/// (the pool's threads register in a process-wide table that outlives them).
#[test]
fn a_fast_shutdown_of_the_proxy_runtime_returns() {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "pingora_patches::fast_shutdown_scene",
            "--ignored",
            "--test-threads=1",
        ])
        .env(FAST_SHUTDOWN_CHILD, "1")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + BOUND;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the runtime's fast shutdown never returned (an accept loop held a thread)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the scene failed: {status}");
}

/// The scene of [`a_fast_shutdown_of_the_proxy_runtime_returns`], in the process it starts.
#[test]
#[ignore = "run by a_fast_shutdown_of_the_proxy_runtime_returns in a process of its own"]
fn fast_shutdown_scene() {
    if std::env::var_os(FAST_SHUTDOWN_CHILD).is_none() {
        return;
    }
    use pingora_runtime::{BlockingPoolOpts, NoStealRuntime, RuntimeOpts};
    use std::io::Read;
    let rt = NoStealRuntime::new(
        2,
        "accept-loop",
        BlockingPoolOpts::default(),
        RuntimeOpts::default(),
    );
    // Sixteen listeners, all registered with runtime 0; their accept loops land on either
    // runtime (about half on runtime 1).
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    for _ in 0..16 {
        let addr = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().to_string()
        };
        let mut service = Service::new("accept-loop".into(), NeverServed);
        service.add_tcp(&addr);
        let shutdown = shutdown.clone();
        rt.get_runtime_at(0)
            .spawn(async move { service.start_service(None, shutdown, 1).await });
        // Its accept loop runs: a connection is taken and closed (nothing serves it).
        let until = std::time::Instant::now() + BOUND;
        loop {
            if let Ok(mut c) = std::net::TcpStream::connect(&addr) {
                c.set_read_timeout(Some(BOUND)).unwrap();
                if c.read(&mut [0u8; 1]).is_ok_and(|n| n == 0) {
                    break;
                }
            }
            assert!(std::time::Instant::now() < until, "Pingora never accepted");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // Runtime 1 is kept busy while runtime 0 stops: when it next runs its tasks, the
    // accept loops there are woken by runtime 0's stopped driver.
    let (busy, started) = std::sync::mpsc::channel();
    rt.get_runtime_at(1).spawn(async move {
        let _ = busy.send(());
        std::thread::sleep(Duration::from_millis(500));
    });
    started.recv_timeout(BOUND).unwrap();
    rt.shutdown_timeout(Duration::ZERO);
}
