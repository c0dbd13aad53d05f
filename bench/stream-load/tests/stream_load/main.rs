//! The load client against the real mock provider, in process: every dialect's streams
//! complete and are timed, and broken streams are counted as failed or stalled by reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use mock_provider::{MockConfig, MockProvider};
use stream_load::load::{self, Limit, Plan};
use stream_load::stats::Summary;
use stream_load::watch::Dialect;

async fn mock(pieces: usize, stall: Duration) -> MockProvider {
    MockProvider::start(MockConfig {
        chunk_delay: Duration::from_millis(2),
        pieces,
        stall,
        content: "one two three four five six seven eight nine ten eleven twelve".to_owned(),
        ..MockConfig::default()
    })
    .await
    .expect("mock starts")
}

fn openai_body(model: &str) -> Bytes {
    Bytes::from(format!(
        r#"{{"model":"{model}","stream":true,"stream_options":{{"include_usage":true}},"messages":[{{"role":"user","content":"hi"}}]}}"#
    ))
}

fn plan(mock: &MockProvider, path: &str, dialect: Dialect, body: Bytes) -> Plan {
    Plan {
        addr: mock.addr(),
        host: mock.addr().to_string(),
        path: path.to_owned(),
        headers: Vec::new(),
        body,
        dialect,
        concurrency: 20,
        limit: Limit::Count(60),
        ramp: Duration::ZERO,
        stall: Duration::from_secs(10),
        timeout: Duration::from_secs(30),
        fresh_connections: false,
    }
}

fn all_completed(summary: &Summary, streams: usize) {
    assert_eq!(summary.streams, streams, "{}", summary.report());
    assert_eq!(summary.completed, streams, "{}", summary.report());
    assert_eq!((summary.failed, summary.stalled), (0, 0));
    assert_eq!(summary.ttfb_ms.count, streams);
    assert_eq!(summary.ttft_ms.count, streams);
    // The first content comes after the header and at least one pacing gap (the role
    // chunk or preamble is sent first).
    assert!(summary.ttft_ms.p50 >= summary.ttfb_ms.p50);
    assert!(summary.total_ms.max >= summary.ttft_ms.max);
}

#[tokio::test]
async fn openai_streams_complete_over_kept_alive_connections() {
    let m = mock(20, Duration::from_secs(60)).await;
    let summary = load::run(plan(
        &m,
        "/v1/chat/completions",
        Dialect::Openai,
        openai_body("gpt-4o-mini"),
    ))
    .await;
    all_completed(&summary, 60);
    assert_eq!(summary.concurrency, 20);
    assert!(summary.peak_in_flight <= 20 && summary.peak_in_flight > 1);
    // One connection per worker, reused for its next streams.
    assert_eq!(summary.connections, 20, "{}", summary.report());
    assert_eq!(m.completed(), 60);
    // 20 content pieces at 2 ms: the body outlasts 20 pacing gaps.
    assert!(summary.total_ms.p50 >= 40.0, "{}", summary.report());
}

#[tokio::test]
async fn fresh_connections_and_a_duration() {
    let m = mock(5, Duration::from_secs(60)).await;
    let mut p = plan(
        &m,
        "/v1/chat/completions",
        Dialect::Openai,
        openai_body("gpt-4o-mini"),
    );
    p.fresh_connections = true;
    p.concurrency = 4;
    p.limit = Limit::Duration(Duration::from_millis(300));
    let summary = load::run(p).await;
    assert!(summary.streams >= 4, "{}", summary.report());
    all_completed(&summary, summary.streams);
    assert_eq!(summary.connections, summary.streams);
}

#[tokio::test]
async fn anthropic_and_gemini_dialects() {
    let m = mock(20, Duration::from_secs(60)).await;
    let body = Bytes::from_static(
        br#"{"model":"claude-3-5-haiku-latest","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    let summary = load::run(plan(&m, "/v1/messages", Dialect::Anthropic, body)).await;
    all_completed(&summary, 60);
    let body = Bytes::from_static(br#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#);
    let path = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse";
    let summary = load::run(plan(&m, path, Dialect::Gemini, body)).await;
    all_completed(&summary, 60);
}

#[tokio::test]
async fn broken_streams_are_counted_by_reason() {
    let m = mock(5, Duration::from_secs(3)).await;
    let run = |model: &str| {
        let mut p = plan(
            &m,
            "/v1/chat/completions",
            Dialect::Openai,
            openai_body(model),
        );
        p.concurrency = 3;
        p.limit = Limit::Count(3);
        p.stall = Duration::from_millis(500);
        load::run(p)
    };
    let reason = |s: &Summary, why: &str| s.failures.get(why).copied().unwrap_or(0);

    let s = run("drop-mid-stream").await;
    assert_eq!((s.completed, reason(&s, "body")), (0, 3), "{}", s.report());
    let s = run("no-usage").await;
    assert_eq!(
        (s.completed, reason(&s, "no_usage")),
        (0, 3),
        "{}",
        s.report()
    );
    let s = run("stream-error-event").await;
    assert_eq!(
        (s.completed, reason(&s, "error_event")),
        (0, 3),
        "{}",
        s.report()
    );
    let s = run("error-503").await;
    assert_eq!(
        (s.completed, reason(&s, "status_503")),
        (0, 3),
        "{}",
        s.report()
    );
    // The preamble comes, then nothing for 3 s: past the 0.5 s stall limit.
    let s = run("stall-after-preamble").await;
    assert_eq!(
        (s.completed, s.stalled, s.failed),
        (0, 3, 0),
        "{}",
        s.report()
    );
    // Failed and stalled streams are left out of the percentiles.
    assert_eq!(s.ttft_ms.count, 0);
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_failure() {
    let m = mock(5, Duration::from_secs(60)).await;
    let mut p = plan(
        &m,
        "/v1/chat/completions",
        Dialect::Openai,
        openai_body("gpt-4o-mini"),
    );
    drop(m);
    tokio::time::sleep(Duration::from_millis(50)).await;
    p.concurrency = 2;
    p.limit = Limit::Count(2);
    let s = load::run(p).await;
    assert_eq!(s.failures.get("connect"), Some(&2), "{}", s.report());
}
