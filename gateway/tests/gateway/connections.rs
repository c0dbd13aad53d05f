//! Client connections cannot be hoarded: a silent or trickling client loses its
//! connection at the header deadline, a trickled body at the body deadline, a kept-alive
//! connection at its idle limit, one address cannot hold more than its share (and a
//! refused connection is told why), and thousands of idle connections do not stop other
//! clients from being served.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::harness::{eventually, metric_value, Env, Gateway};

fn addr(gw: &Gateway) -> SocketAddr {
    gw.base.trim_start_matches("http://").parse().unwrap()
}

async fn connect_from(source: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    socket.connect(to).await
}

/// Whether the gateway closes `conn` within `within` (reading whatever it sends first).
async fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Everything the gateway sends on `conn` until it closes it, or `None` if it is still
/// open after `within`.
async fn answer_then_close(conn: &mut TcpStream, within: Duration) -> Option<String> {
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&text).into_owned()),
            Ok(Ok(n)) => text.extend_from_slice(&buf[..n]),
        }
    }
}

/// A chat completion's header declaring a body of `length` bytes.
fn post_head(key: &str, length: usize) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {length}\r\nauthorization: Bearer {key}\r\n\r\n"
    )
}

/// Sends one byte of body every `every` until the gateway answers and closes; returns
/// what it answered, or `None` if it kept the connection past `within`.
async fn trickle_body(mut conn: TcpStream, every: Duration, within: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + within;
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut writing = true;
    loop {
        tokio::select! {
            r = conn.read(&mut buf) => match r {
                Ok(0) | Err(_) => return Some(String::from_utf8_lossy(&text).into_owned()),
                Ok(n) => text.extend_from_slice(&buf[..n]),
            },
            _ = tick.tick(), if writing => {
                writing = conn.write_all(b" ").await.is_ok();
            }
            _ = tokio::time::sleep_until(deadline) => return None,
        }
    }
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: gw\r\n\r\n";

#[tokio::test]
async fn trickled_bodies_are_cut_at_the_body_deadline_and_a_refused_connection_is_told_why() {
    let env = Env::new().await;
    let gw = Gateway::start_with(
        &env,
        &env.db.url,
        &[
            ("MAX_CONNECTIONS_PER_IP", "20"),
            ("HEADER_READ_TIMEOUT_MS", "2000"),
            ("KEEPALIVE_IDLE_TIMEOUT_MS", "5000"),
            ("BODY_READ_TIMEOUT_MS", "3000"),
        ],
    )
    .await;
    let to = addr(&gw);
    // An ordinary key, twenty connections from one address (not the harness's), each
    // declaring a body of a million bytes (under the body cap) and sending one byte of it
    // every 200 ms.
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut c = connect_from("127.0.0.3", to).await.unwrap();
        c.write_all(post_head(&env.key, 1_000_000).as_bytes())
            .await
            .unwrap();
        held.push(c);
    }
    // Once the twenty are in, a 21st from the same address is refused with an answer
    // naming the cap. (Asked before, it could take a place the last of the twenty waits
    // for in the accept queue, and that one would be refused instead.) They are the
    // gateway's only client connections.
    eventually(
        "the twenty are counted",
        Duration::from_secs(20),
        || async { metric_value(&gw.metrics_text().await, "perpetuo_open_connections") >= 20.0 },
    )
    .await;
    let mut c = connect_from("127.0.0.3", to).await.unwrap();
    let answer = answer_then_close(&mut c, Duration::from_secs(5))
        .await
        .unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("MAX_CONNECTIONS_PER_IP"), "{answer}");
    assert!(answer.len() <= 230, "{} bytes", answer.len());

    let trickles = held
        .into_iter()
        .map(|c| trickle_body(c, Duration::from_millis(200), Duration::from_secs(30)));
    for answer in futures::future::join_all(trickles).await {
        let answer = answer.expect("the body deadline closed the connection");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("request_timeout"), "{answer}");
    }
    // Their slots are free again: the same address is served.
    let client = reqwest::Client::builder()
        .local_address("127.0.0.3".parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    let resp = client
        .get(format!("{}/healthz", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn early_refusals_close_the_connection_without_waiting_for_the_body() {
    let env = Env::new().await;
    let gw = Gateway::start_with(
        &env,
        &env.db.url,
        &[
            ("MAX_BODY_BYTES", "1000"),
            ("BODY_READ_TIMEOUT_MS", "60000"),
        ],
    )
    .await;
    let to = addr(&gw);
    // A bad key: answered before the body, which is never read, and closed.
    let mut c = TcpStream::connect(to).await.unwrap();
    c.write_all(post_head("pk-live-not-a-key", 1_000_000).as_bytes())
        .await
        .unwrap();
    let answer = trickle_body(c, Duration::from_millis(200), Duration::from_secs(10))
        .await
        .expect("closed after the 401");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // Too large by its declared length: the rest is drained for a bounded time only.
    let mut c = TcpStream::connect(to).await.unwrap();
    c.write_all(post_head(&env.key, 1_500).as_bytes())
        .await
        .unwrap();
    let answer = trickle_body(c, Duration::from_millis(200), Duration::from_secs(10))
        .await
        .expect("closed after the 413");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Too large as it arrives, with no declared length.
    let mut c = TcpStream::connect(to).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\nauthorization: Bearer {}\r\n\r\n",
        env.key
    );
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(format!("7d0\r\n{}\r\n", "x".repeat(2000)).as_bytes())
        .await
        .unwrap();
    let answer = answer_then_close(&mut c, Duration::from_secs(10))
        .await
        .expect("closed after the 413");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
}

#[tokio::test]
async fn silent_trickling_and_idle_connections_are_closed() {
    let env = Env::new().await;
    let gw = Gateway::start_with(
        &env,
        &env.db.url,
        &[
            ("HEADER_READ_TIMEOUT_MS", "600"),
            ("KEEPALIVE_IDLE_TIMEOUT_MS", "600"),
        ],
    )
    .await;
    let to = addr(&gw);

    // A connection that never sends a byte.
    let mut silent = TcpStream::connect(to).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(10)).await);

    // A header sent one byte at a time, slower than the deadline allows in all.
    let mut trickle = TcpStream::connect(to).await.unwrap();
    let mut closed = false;
    // One byte every 50 ms: the slow client under test.
    for b in HEALTHZ.iter().cycle().take(200) {
        if trickle.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed || closed_within(&mut trickle, Duration::from_secs(5)).await);

    // A kept-alive connection: served, reused, then closed once idle.
    let mut kept = TcpStream::connect(to).await.unwrap();
    for _ in 0..2 {
        kept.write_all(HEALTHZ).await.unwrap();
        // The answer may come in several reads.
        let mut text = String::new();
        while !text.contains("{\"status\":\"ok\"}") {
            let mut buf = vec![0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(5), kept.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed early: {text}");
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    }
    assert!(closed_within(&mut kept, Duration::from_secs(10)).await);

    // A request whose header and body arrive in pieces is still read whole: with a valid
    // key the body is needed (a cut body would be 400 invalid_json), and the workspace has
    // no provider for the model, so the whole request gets 404.
    let mut split = TcpStream::connect(to).await.unwrap();
    let body = br#"{"model":"gpt-4o-mini","messages":[]}"#;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {}\r\nauthorization: Bearer {}\r\n\r\n",
        body.len(),
        env.key
    );
    let (h1, h2) = head.as_bytes().split_at(20);
    split.write_all(h1).await.unwrap();
    // The pauses make the pieces arrive apart: the behaviour under test.
    tokio::time::sleep(Duration::from_millis(100)).await;
    split.write_all(h2).await.unwrap();
    split.write_all(&body[..5]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    split.write_all(&body[5..]).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let n = split.read(&mut buf).await.unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
}

#[tokio::test]
async fn an_oversized_header_is_refused() {
    let env = Env::new().await;
    let gw = Gateway::start(&env).await;
    let mut conn = TcpStream::connect(addr(&gw)).await.unwrap();
    let big = format!(
        "GET /healthz HTTP/1.1\r\nhost: gw\r\nx-big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let written = conn.write_all(big.as_bytes()).await;
    let mut buf = vec![0u8; 1024];
    let read = conn.read(&mut buf).await;
    let n = *read.as_ref().unwrap_or(&0);
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.starts_with("HTTP/1.1 431"),
        "{written:?} {read:?} {text}"
    );
}

#[tokio::test]
async fn ten_thousand_idle_connections_do_not_stop_other_clients() {
    let env = Env::new().await;
    let gw = Gateway::start_with(
        &env,
        &env.db.url,
        &[
            ("MAX_CONNECTIONS_PER_IP", "500"),
            ("HEADER_READ_TIMEOUT_MS", "30000"),
        ],
    )
    .await;
    let to = addr(&gw);
    // 10,000 connections from one address that never send anything: the gateway keeps
    // 500 of them (until their header deadline) and closes the rest at once.
    let mut idle = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        match connect_from("127.0.0.1", to).await {
            Ok(c) => idle.push(c),
            Err(e) => panic!("connect failed after {}: {e}", idle.len()),
        }
    }
    // The refused ones were told why (a 503) and closed.
    let mut open = 0;
    for c in idle.iter_mut() {
        let mut buf = [0u8; 16];
        match tokio::time::timeout(Duration::from_millis(1), c.read(&mut buf)).await {
            Err(_) => open += 1,
            Ok(Ok(n)) if n > 0 => assert!(buf[..n].starts_with(b"HTTP/1.1 503")),
            Ok(_) => {}
        }
    }
    assert!(open <= 500, "{open} idle connections kept from one address");
    // Another client is served at once, over a new connection.
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let client = reqwest::Client::builder()
        .local_address(other)
        .build()
        .unwrap();
    for _ in 0..5 {
        let resp = client
            .get(format!("{}/healthz", gw.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let metrics = gw.metrics_text().await;
    assert!(metrics.contains("perpetuo_connections_refused_total{cap=\"per_ip\"}"));
    drop(idle);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_is_capped_per_request_not_per_connection() {
    let env = Env::new().await;
    let m = crate::harness::mock().await;
    env.add_provider("mock", &m.base_url(), 1).await;
    let gw = Gateway::start_with(
        &env,
        &env.db.url,
        &[
            ("TRUSTED_PROXIES", "127.0.0.4/32"),
            ("MAX_REQUESTS_PER_CLIENT", "2"),
            ("MAX_CONNECTIONS_PER_IP", "2"),
        ],
    )
    .await;
    // The proxy: every request from 127.0.0.4, naming its client.
    let proxy = reqwest::Client::builder()
        .local_address("127.0.0.4".parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    let send = |client: &'static str| {
        proxy
            .post(format!("{}/v1/chat/completions", gw.base))
            .bearer_auth(&env.key)
            .header("x-forwarded-for", format!("{client}, 127.0.0.4"))
            .json(&crate::harness::chat_body("gpt-4o-mini"))
            .send()
    };
    m.set_behavior(Some(mock_provider::Behavior::Stall));
    let held: Vec<_> = ["203.0.113.7", "203.0.113.7", "203.0.113.8"]
        .into_iter()
        .map(|c| tokio::spawn(send(c)))
        .collect();
    eventually(
        "three requests reached the provider",
        Duration::from_secs(10),
        || async { m.hits() == 3 },
    )
    .await;
    // A third request of the first client is refused; the proxy's four connections are
    // past MAX_CONNECTIONS_PER_IP and none was refused.
    let r = send("203.0.113.7").await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "client_concurrency_limit");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("MAX_REQUESTS_PER_CLIENT"));
    // The held requests end (their clients leave); the client is served again.
    for h in held {
        h.abort();
    }
    m.set_behavior(None);
    eventually(
        "the client's places are free",
        Duration::from_secs(10),
        || async { send("203.0.113.7").await.unwrap().status() == 200 },
    )
    .await;
}
