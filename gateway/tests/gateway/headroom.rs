//! Provider quotas known before the 429: the providers' rate-limit headers read into each
//! key's headroom, keys passed by until their reset, one 429 without a provider call when
//! every key is out, the skips in log rows and metrics, and headroom shared through Redis.

use std::time::Duration;

use mock_provider::{MockConfig, MockProvider, RateLimit};
use serde_json::json;

use crate::harness::{chat_body, eventually, metric_value, Env, Gateway};
use crate::redis_kit::{connected, PrivateRedis};

/// A mock whose keys may each make `requests` per `window`, `sk-upstream-<name>` of the
/// entries named in `per_key` excepted.
async fn limited(requests: u64, window: Duration, per_key: &[(&str, u64)]) -> MockProvider {
    MockProvider::start(MockConfig {
        rate_limit: Some(RateLimit {
            requests,
            tokens: 1_000_000,
            window,
            per_key: per_key
                .iter()
                .map(|(name, n)| (format!("sk-upstream-{name}"), *n))
                .collect(),
        }),
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_key_out_of_requests_gets_nothing_until_its_reset_and_no_client_sees_a_429() {
    let env = Env::new().await;
    // "first" may take 2 requests per 3 s; "second" has room for hundreds.
    let first = limited(1000, Duration::from_secs(3), &[("first", 2)]).await;
    let second = limited(1000, Duration::from_secs(3), &[]).await;
    env.add_provider("first", &first.base_url(), 1).await;
    env.add_provider("second", &second.base_url(), 2).await;
    let gw = Gateway::start(&env).await;
    let mut ids = Vec::new();
    for _ in 0..12 {
        let r = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
        assert_eq!(r.status(), 200, "no client sees the provider's 429");
        ids.push(r.headers()["x-request-id"].to_str().unwrap().to_string());
    }
    assert_eq!(first.hits(), 2, "its headers said 0 left after the second");
    assert_eq!(
        first.rate_limited(),
        0,
        "and it was never asked past its quota"
    );
    assert_eq!(second.hits(), 10);
    let last = env.log_row(ids.last().unwrap()).await;
    assert_eq!(last.provider_name.as_deref(), Some("second"));
    let skipped = serde_json::to_value(&last.skipped).unwrap();
    assert_eq!(
        skipped,
        json!([{"entry": "first", "key": "default", "reason": "quota"}])
    );
    assert_eq!(last.attempts.len(), 1, "the skipped entry was never asked");
    let text = gw.metrics_text().await;
    assert!(metric_value(&text, "perpetuo_route_decisions_total{reason=\"quota\"}") >= 10.0);
    // After the reset the first entry serves again.
    tokio::time::sleep(Duration::from_millis(3_100)).await;
    let r = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-perpetuo-provider"], "first");
    assert_eq!(first.hits(), 3);
}

#[tokio::test]
async fn every_key_out_gives_one_429_with_the_earliest_reset_and_calls_no_provider() {
    let env = Env::new().await;
    let a = limited(1, Duration::from_secs(4), &[]).await;
    let b = limited(1, Duration::from_secs(9), &[]).await;
    env.add_provider("a", &a.base_url(), 1).await;
    env.add_provider("b", &b.base_url(), 2).await;
    let gw = Gateway::start(&env).await;
    for _ in 0..2 {
        let r = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!((a.hits(), b.hits()), (1, 1));
    let r = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=4).contains(&retry),
        "the earliest reset (a's, 4 s): {retry}"
    );
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!((a.hits(), b.hits()), (1, 1), "no provider was called");
    assert_eq!(a.rate_limited() + b.rate_limited(), 0);
    let row = env.log_row(&id).await;
    assert_eq!(row.status, 429);
    assert!(row.attempts.is_empty());
    assert_eq!(row.skipped.len(), 2);
    // The Messages door answers in Anthropic's shape.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/messages", gw.base))
        .header("x-api-key", &env.key)
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "gpt-4o", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    let text = gw.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            "perpetuo_route_decisions_total{reason=\"exhausted\"}"
        ),
        2.0
    );
}

#[tokio::test]
async fn two_gateways_sharing_redis_see_the_same_provider_headroom() {
    let env = Env::new().await;
    let first = limited(1000, Duration::from_secs(5), &[("first", 1)]).await;
    let second = limited(1000, Duration::from_secs(5), &[]).await;
    env.add_provider("first", &first.base_url(), 1).await;
    env.add_provider("second", &second.base_url(), 2).await;
    let redis = PrivateRedis::start().await;
    let url = redis.url();
    let extra = [("REDIS_URL", url.as_str())];
    let one = Gateway::start_with(&env, &env.db.url, &extra).await;
    let two = Gateway::start_with(&env, &env.db.url, &extra).await;
    // Each gateway subscribes as it starts: a report published before that is lost.
    connected(&redis, 2).await;
    let r = one
        .chat(&env.key, chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-perpetuo-provider"], "first");
    // The second gateway never asked "first", yet passes it by.
    eventually(
        "the report reaching the second gateway",
        Duration::from_secs(5),
        || async {
            let r = two
                .chat(&env.key, chat_body("gpt-4o"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            (r.headers()["x-perpetuo-provider"] == "second").then_some(())
        },
    )
    .await;
    assert_eq!(first.hits(), 1);
    assert_eq!(first.rate_limited(), 0, "the second gateway never asked it");
}

#[tokio::test]
async fn gateways_publish_each_keys_breaker_and_headroom_for_the_admin() {
    let env = Env::new().await;
    let m = limited(5, Duration::from_secs(60), &[]).await;
    let entry = env.add_provider("main", &m.base_url(), 1).await;
    let gw = Gateway::start(&env).await;
    let r = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (breaker, remaining, workspace): (String, Option<i64>, uuid::Uuid) =
        eventually("the key's status row", Duration::from_secs(15), || async {
            let row = env
                .client()
                .await
                .query_opt(
                    "SELECT breaker, remaining_requests, workspace_id FROM gateway_key_status
                     WHERE entry_id = $1",
                    &[&entry],
                )
                .await
                .unwrap()?;
            Some((row.get(0), row.get(1), row.get(2)))
        })
        .await;
    assert_eq!(
        (breaker.as_str(), remaining, workspace),
        ("closed", Some(4), env.workspace)
    );
}

/// How many requests the mock got with each upstream key.
fn by_key(m: &MockProvider) -> std::collections::HashMap<String, usize> {
    let mut out = std::collections::HashMap::new();
    for r in m.requests() {
        let key = r
            .headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map_or(String::new(), |(_, v)| {
                v.trim_start_matches("Bearer ").to_string()
            });
        *out.entry(key).or_default() += 1;
    }
    out
}

#[tokio::test]
async fn a_pool_key_out_of_headroom_is_passed_by_and_its_pool_mates_serve() {
    let env = Env::new().await;
    let m = limited(1000, Duration::from_secs(3), &[("pool", 1)]).await;
    let entry = env.add_provider("pool", &m.base_url(), 1).await;
    env.add_key(entry, "second", "sk-second").await;
    let gw = Gateway::start(&env).await;
    let mut ids = Vec::new();
    for _ in 0..8 {
        let r = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        ids.push(r.headers()["x-request-id"].to_str().unwrap().to_string());
    }
    let keys = by_key(&m);
    assert_eq!(keys.get("sk-upstream-pool"), Some(&1), "{keys:?}");
    assert_eq!(keys.get("sk-second"), Some(&7), "{keys:?}");
    let last = env.log_row(ids.last().unwrap()).await;
    assert_eq!(last.provider_key_label.as_deref(), Some("second"));
    assert!(last.provider_key_id.is_some());
    // The smooth round robin puts the default key first every other request: those
    // requests name it as passed by.
    let rows = env.log_rows(8).await;
    let skipped_default = rows
        .iter()
        .filter(|r| {
            serde_json::to_value(&r.skipped).unwrap()
                == json!([{"entry": "pool", "key": "default", "reason": "quota"}])
        })
        .count();
    assert!(skipped_default >= 3, "{rows:?}");
}

#[tokio::test]
async fn a_key_the_provider_refuses_falls_to_the_next_key_of_its_entry() {
    let env = Env::new().await;
    // The default key has no request at all: the provider's first answer is a 429.
    let m = limited(1000, Duration::from_secs(5), &[("pool", 0)]).await;
    let entry = env.add_provider("pool", &m.base_url(), 1).await;
    env.add_key(entry, "second", "sk-second").await;
    let gw = Gateway::start(&env).await;
    let mut attempts = Vec::new();
    for _ in 0..4 {
        let r = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
        assert_eq!(r.status(), 200, "no client sees the 429");
        attempts.push(
            r.headers()["x-perpetuo-attempts"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    // The mock refuses before it records: only the served requests are in its record.
    let keys = by_key(&m);
    assert_eq!(keys.get("sk-second"), Some(&4), "{keys:?}");
    assert_eq!(keys.len(), 1);
    // The default key is asked once (its 429 sends the request on to the second key),
    // then passed by until its window resets.
    assert_eq!(attempts, ["2", "1", "1", "1"]);
    assert_eq!(m.rate_limited(), 1);
}

/// A workspace with an entry `capped` (priority 1) of `rpm` requests a minute and an
/// entry `spare` (priority 2), at the start of a fresh minute.
async fn capped_and_spare(rpm: i32) -> (Env, MockProvider, MockProvider) {
    let env = Env::new().await;
    let (capped, spare) = (crate::harness::mock().await, crate::harness::mock().await);
    let entry = env.add_provider("capped", &capped.base_url(), 1).await;
    env.add_provider("spare", &spare.base_url(), 2).await;
    env.client()
        .await
        .execute(
            "UPDATE provider_keys SET quota_rpm = $2 WHERE id = $1",
            &[&entry, &rpm],
        )
        .await
        .unwrap();
    env.clock.fresh_minute();
    (env, capped, spare)
}

#[tokio::test]
async fn an_entry_quota_passes_the_entry_by_once_its_minute_is_used() {
    let (env, capped, spare) = capped_and_spare(2).await;
    let gw = Gateway::start(&env).await;
    let mut last = String::new();
    for _ in 0..5 {
        let r = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        last = r.headers()["x-request-id"].to_str().unwrap().to_string();
    }
    assert_eq!((capped.hits(), spare.hits()), (2, 3));
    let row = env.log_row(&last).await;
    assert_eq!(
        serde_json::to_value(&row.skipped).unwrap(),
        json!([{"entry": "capped", "reason": "quota"}])
    );
}

#[tokio::test]
async fn an_entry_quota_is_shared_by_gateways_on_one_redis() {
    let (env, capped, spare) = capped_and_spare(3).await;
    let redis = PrivateRedis::start().await;
    let url = redis.url();
    // A loaded test machine must not turn a slow answer into a local fallback.
    let extra = [("REDIS_URL", url.as_str()), ("REDIS_DEADLINE_MS", "2000")];
    let one = Gateway::start_with(&env, &env.db.url, &extra).await;
    let two = Gateway::start_with(&env, &env.db.url, &extra).await;
    connected(&redis, 2).await;
    for i in 0..8 {
        let gw = if i % 2 == 0 { &one } else { &two };
        let r = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        (capped.hits(), spare.hits()),
        (3, 5),
        "three a minute across both gateways"
    );
}
