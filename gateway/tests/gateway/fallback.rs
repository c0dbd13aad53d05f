//! Fallback between provider entries, load sharing, the circuit breaker and timeouts.

use std::time::Duration;

use mock_provider::Behavior;
use serde_json::{json, Value};

use crate::harness::{
    chat_body, eventually, mock, outlast, Env, Gateway, BREAKER_COOLDOWN, MOCK_RETRY_AFTER,
};

async fn two_entries() -> (
    Env,
    mock_provider::MockProvider,
    mock_provider::MockProvider,
) {
    let env = Env::new().await;
    let (a, b) = (mock().await, mock().await);
    env.add_provider("first", &a.base_url(), 1).await;
    env.add_provider("second", &b.base_url(), 2).await;
    (env, a, b)
}

#[tokio::test]
async fn falls_back_on_each_trigger_and_counts_the_first_once() {
    let (env, a, b) = two_entries().await;
    // A high threshold and a short cool-down keep the breaker out of this test (it has
    // its own); a 429's Retry-After still applies.
    let gw = Gateway::start_with(
        &env,
        &env.db.url,
        &[("BREAKER_THRESHOLD", "1000"), ("BREAKER_COOLDOWN_MS", "1")],
    )
    .await;
    for behavior in [
        Behavior::Status(429),
        Behavior::Status(500),
        Behavior::Status(503),
        Behavior::Status(401),
        Behavior::Status(403),
        Behavior::StreamFailEarly,
    ] {
        a.reset_counts();
        b.reset_counts();
        a.set_behavior(Some(behavior));
        for stream in [false, true] {
            let mut body = chat_body("gpt-4o-mini");
            body["stream"] = json!(stream);
            let resp = gw.chat(&env.key, body).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{behavior:?} stream={stream}");
            assert_eq!(resp.headers()["x-perpetuo-provider"], "second");
            assert_eq!(resp.headers()["x-perpetuo-attempts"], "2");
            let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
            let text = resp.text().await.unwrap();
            if stream {
                assert!(text.contains("data: [DONE]"), "{text}");
            }
            let row = env.log_row(&rid).await;
            assert_eq!(row.attempts.len(), 2);
            assert_eq!(row.attempts[0].provider_name, "first");
            assert!(row.attempts[0].error_kind.is_some());
            assert_eq!(row.attempts[1].status, Some(200));
            assert_eq!(row.provider_name.as_deref(), Some("second"));
            if behavior == Behavior::Status(429) {
                // A 429's Retry-After (1 s) keeps the entry out until it has passed.
                outlast(MOCK_RETRY_AFTER).await;
            }
        }
        assert_eq!(
            a.hits(),
            2,
            "{behavior:?}: first entry tried once per request"
        );
        assert_eq!(b.hits(), 2);
    }
}

#[tokio::test]
async fn falls_back_on_connection_refused() {
    let env = Env::new().await;
    let b = mock().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.add_provider("gone", &format!("http://127.0.0.1:{closed}/v1"), 1)
        .await;
    env.add_provider("alive", &b.base_url(), 2).await;
    let gw = Gateway::start(&env).await;
    let resp = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-perpetuo-provider"], "alive");
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let row = env.log_row(&rid).await;
    assert_eq!(row.attempts[0].error_kind.as_deref(), Some("connect"));
    assert_eq!(row.attempts[0].status, None);
}

#[tokio::test]
async fn a_one_mebibyte_body_falls_back_intact() {
    let (env, a, b) = two_entries().await;
    a.set_behavior(Some(Behavior::Status(503)));
    let gw = Gateway::start(&env).await;
    let filler = "word ".repeat(1024 * 1024 / 5);
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": filler}]});
    let resp = gw.chat(&env.key, body.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let got_a = a.last_request().unwrap();
    let got_b = b.last_request().unwrap();
    assert!(got_b.body.len() > 1_000_000);
    assert_eq!(
        got_a.body, got_b.body,
        "both entries received the whole body"
    );
    assert_eq!(
        got_b.json.unwrap()["messages"][0]["content"],
        filler.as_str()
    );
}

#[tokio::test]
async fn no_fallback_on_a_client_error() {
    let (env, a, b) = two_entries().await;
    a.set_behavior(Some(Behavior::Status(400)));
    let gw = Gateway::start(&env).await;
    let resp = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["x-perpetuo-provider"], "first");
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"].is_string(),
        "the provider's error is passed on: {v}"
    );
    assert_eq!(a.hits(), 1);
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn every_entry_failing_gives_the_fitting_status() {
    let (env, a, b) = two_entries().await;
    let gw = Gateway::start(&env).await;
    a.set_behavior(Some(Behavior::Status(429)));
    b.set_behavior(Some(Behavior::Status(429)));
    let resp = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");

    // Both entries are out until the 429s' Retry-After has passed.
    outlast(MOCK_RETRY_AFTER).await;
    a.set_behavior(Some(Behavior::Status(500)));
    b.set_behavior(Some(Behavior::Status(502)));
    let resp = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-perpetuo-attempts"], "2");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_error");
}

#[tokio::test]
async fn equal_priorities_share_the_load() {
    let env = Env::new().await;
    let (a, b) = (mock().await, mock().await);
    env.add_provider("left", &a.base_url(), 5).await;
    env.add_provider("right", &b.base_url(), 5).await;
    let gw = Gateway::start(&env).await;
    for _ in 0..20 {
        let resp = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(a.hits() + b.hits(), 20);
    assert!(
        a.hits() >= 5 && b.hits() >= 5,
        "left {} right {}",
        a.hits(),
        b.hits()
    );
}

#[tokio::test]
async fn breaker_opens_after_repeated_failures_and_recovers() {
    let (env, a, b) = two_entries().await;
    a.set_behavior(Some(Behavior::Status(500)));
    let gw = Gateway::start(&env).await;
    for _ in 0..3 {
        assert_eq!(
            gw.chat(&env.key, chat_body("gpt-4o"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert_eq!(a.hits(), 3, "threshold is 3");
    for _ in 0..5 {
        let resp = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
        assert_eq!(
            resp.headers()["x-perpetuo-attempts"],
            "1",
            "open breaker skips the entry"
        );
    }
    assert_eq!(a.hits(), 3);
    assert_eq!(b.hits(), 8);

    // After the cool-down one probe goes through (until then the second entry answers
    // alone); a healthy answer closes the breaker.
    a.set_behavior(None);
    eventually(
        "a probe reaches the first entry",
        Duration::from_secs(10),
        || async {
            let resp = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
            resp.headers()["x-perpetuo-provider"] == "first"
        },
    )
    .await;
    assert_eq!(a.hits(), 4, "one probe");
    for _ in 0..2 {
        let resp = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
        assert_eq!(resp.headers()["x-perpetuo-provider"], "first");
    }
    assert_eq!(a.hits(), 6);
    let metrics = gw.metrics_text().await;
    assert!(
        metrics.contains("perpetuo_breaker_opened_total{provider_kind=\"openai_compatible\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn slow_first_byte_falls_back_after_the_timeout() {
    let (env, a, b) = two_entries().await;
    a.set_behavior(Some(Behavior::Slow(Duration::from_secs(10))));
    let gw = Gateway::start_with(&env, &env.db.url, &[("UPSTREAM_TTFB_TIMEOUT_MS", "500")]).await;
    let mut body = chat_body("gpt-4o");
    body["stream"] = json!(true);
    let resp = gw.chat(&env.key, body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-perpetuo-provider"], "second");
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let row = env.log_row(&rid).await;
    assert_eq!(row.attempts[0].error_kind.as_deref(), Some("timeout"));
    assert_eq!(b.hits(), 1);
    // The abandoned attempt was cancelled upstream.
    assert!(
        a.wait_until(Duration::from_secs(3), |m| m.abandoned() == 1)
            .await
    );

    // Every entry too slow: 504.
    b.set_behavior(Some(Behavior::Slow(Duration::from_secs(10))));
    outlast(BREAKER_COOLDOWN).await;
    let resp = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
}

#[tokio::test]
async fn the_gateway_refuses_private_addresses_the_operator_did_not_allow() {
    // An entry stored while loopback was allowed (or a name that now resolves to it) is
    // refused when the gateway connects, so no request reaches the address.
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("loopback", &m.base_url(), 1).await;
    let gw = Gateway::start_with(&env, &env.db.url, &[("ALLOWED_PRIVATE_UPSTREAMS", "")]).await;
    let resp = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(m.hits(), 0, "nothing was sent to the refused address");
    let row = env.log_row(&rid).await;
    assert_eq!(
        row.attempts[0].error_kind.as_deref(),
        Some("upstream_refused_by_policy")
    );
}

#[tokio::test]
async fn when_every_entry_fails_the_error_names_each_attempt_in_each_doors_shape() {
    let env = Env::new().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.add_provider("local", &format!("http://127.0.0.1:{closed}/v1"), 1)
        .await;
    let busy = mock().await;
    busy.set_behavior(Some(Behavior::Status(503)));
    env.add_provider("busy", &busy.base_url(), 2).await;
    let gw = Gateway::start(&env).await;
    let named = "Attempts: entry \"local\": connection refused; entry \"busy\": status 503.";
    let leaks = |body: &str| {
        assert!(!body.contains("127.0.0.1"), "{body}");
        assert!(!body.contains(&closed.to_string()), "{body}");
        assert!(
            !body.contains("overloaded"),
            "the provider's own words: {body}"
        );
    };

    let r = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    leaks(&text);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "upstream_error");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.ends_with(named), "{message}");

    let r = gw
        .http
        .post(format!("{}/v1/messages", gw.base))
        .header("x-api-key", &env.key)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "gpt-4o", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    leaks(&text);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["type"], "error", "Anthropic's error shape: {v}");
    assert!(
        v["error"]["message"].as_str().unwrap().ends_with(named),
        "{v}"
    );

    let r = gw
        .http
        .post(format!("{}/v1/responses", gw.base))
        .bearer_auth(&env.key)
        .json(&json!({"model": "gpt-4o", "input": "hi", "store": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    leaks(&text);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().ends_with(named),
        "{v}"
    );
}
