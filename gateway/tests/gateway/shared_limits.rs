//! Limits shared through Redis keep their promises when Redis misbehaves: a paused Redis
//! costs no settlement and leaks no slot or reservation, and a flushed one is re-seeded
//! from PostgreSQL without emptying any key cache.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use crate::harness::{chat_body, eventually, metric_value, mock, Env, Gateway};
use crate::redis_kit::PrivateRedis;

async fn set_key(env: &Env, set: &str) {
    env.client()
        .await
        .execute(
            &format!("UPDATE api_keys SET {set} WHERE id = $1"),
            &[&env.key_id],
        )
        .await
        .unwrap();
}

fn misses(metrics: &str) -> f64 {
    metric_value(metrics, "perpetuo_key_cache_total{result=\"miss\"}")
}

/// nano-USD at gpt-4o-mini's price (0.15 / 0.60 USD per million tokens).
fn cost(prompt: u64, completion: u64) -> i64 {
    (prompt * 150 + completion * 600) as i64
}

#[tokio::test]
async fn a_paused_redis_loses_no_settlement_and_leaks_no_slot_or_reservation() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("mock", &m.base_url(), 1).await;
    m.set_behavior(Some(mock_provider::Behavior::Slow(Duration::from_millis(
        150,
    ))));
    set_key(
        &env,
        "concurrency_limit = 4, rpm_limit = 100000, budget_nusd = 10000000000",
    )
    .await;
    let redis = PrivateRedis::start().await;
    let gw = Gateway::start_with(
        &env,
        &env.db.url,
        &[
            ("REDIS_URL", redis.url().as_str()),
            ("REDIS_DEADLINE_MS", "50"),
        ],
    )
    .await;
    // Listening before the first request: a late first LISTEN would clear the key cache,
    // the miss this test says a slow Redis never causes.
    gw.listening().await;
    let scope = format!("perpetuo:limits:k:{}", env.key_id);
    eventually(
        "admitted through Redis",
        Duration::from_secs(10),
        || async {
            gw.chat(&env.key, chat_body("gpt-4o-mini"))
                .send()
                .await
                .unwrap()
                .status()
                == 200
                && redis.query(&["EXISTS", &scope]) == "1"
        },
    )
    .await;

    // Four clients at the key's concurrency limit while Redis freezes three times.
    let clients = (0..4).map(|_| async {
        let mut statuses = Vec::new();
        for _ in 0..12 {
            let r = gw
                .chat(&env.key, chat_body("gpt-4o-mini"))
                .send()
                .await
                .unwrap();
            statuses.push(r.status().as_u16());
            r.bytes().await.unwrap();
        }
        statuses
    });
    // The freezes' schedule is the fault under test.
    let pauses = async {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            redis.pause();
            tokio::time::sleep(Duration::from_millis(300)).await;
            redis.resume();
        }
    };
    let (statuses, ()) = tokio::join!(futures::future::join_all(clients), pauses);
    for s in statuses.iter().flatten() {
        assert_eq!(
            *s, 200,
            "a client within its limits was refused: {statuses:?}"
        );
    }
    let metrics = gw.metrics_text().await;
    assert!(
        metric_value(&metrics, "perpetuo_limit_redis_slow_total") > 0.0,
        "the pauses were felt"
    );
    // Once idle, every slot and reservation taken in Redis is given back.
    eventually(
        "slots and reservations released",
        Duration::from_secs(10),
        || async {
            redis.query(&["ZCARD", &format!("{scope}:inflight")]) == "0"
                && redis.query(&["ZCARD", &format!("{scope}:held")]) == "0"
                && redis.query(&["HGET", &scope, "v"]) == "0"
        },
    )
    .await;
    let metrics = gw.metrics_text().await;
    assert_eq!(
        metric_value(&metrics, "perpetuo_limit_settlements_pending"),
        0.0
    );
    assert_eq!(
        metric_value(&metrics, "perpetuo_limit_settlements_dropped_total"),
        0.0
    );
    // A slow Redis is not a lost one: the key was loaded once and never again.
    assert_eq!(misses(&metrics), 1.0, "the key cache was emptied");
}

#[tokio::test]
async fn a_flushed_redis_is_reseeded_from_postgres_without_emptying_a_key_cache() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("mock", &m.base_url(), 1).await;
    let mut body = chat_body("gpt-4o-mini");
    body["max_tokens"] = json!(10);
    let u = mock_provider::expected_usage(&body);
    let actual = cost(u.prompt_tokens, u.completion_tokens);
    let len = serde_json::to_vec(&body).unwrap().len() as u64;
    let estimate = cost(len / 4, 10);
    // Room for three requests, not for a fourth.
    set_key(
        &env,
        &format!("budget_nusd = {}", 2 * actual + estimate + 1),
    )
    .await;
    let redis = PrivateRedis::start().await;
    let prefix = format!("test-{}:", Uuid::now_v7());
    let vars = [
        ("REDIS_URL", redis.url()),
        ("REDIS_KEY_PREFIX", prefix.clone()),
        ("REDIS_DEADLINE_MS", "2000".into()),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Gateway::start_with(&env, &env.db.url, &vars).await;
    let b = Gateway::start_with(&env, &env.db.url, &vars).await;
    // Both listen before any request: a late first LISTEN clears the caches it finds
    // filled, which would count as the miss this test says never happens.
    a.listening().await;
    b.listening().await;
    // B loads the key (its spend then: nothing) and serves one request; A serves two.
    for gw in [&b, &a, &a] {
        let r = gw.chat(&env.key, body.clone()).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
        r.bytes().await.unwrap();
        env.log_row(&rid).await;
    }
    let misses_before = misses(&b.metrics_text().await);

    // Redis loses everything. B's key still carries the spend it loaded (none), and B
    // itself settled one request: only PostgreSQL knows all three.
    redis.cli(&["FLUSHALL"]);
    let r = b.chat(&env.key, body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 429, "the budget held after the flush");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "insufficient_quota");
    let metrics = b.metrics_text().await;
    assert_eq!(
        metric_value(&metrics, "perpetuo_limit_reseeds_total{result=\"read\"}"),
        2.0,
        "read once at the scope's creation, once after the flush"
    );
    assert_eq!(misses(&metrics), misses_before, "no key cache was emptied");
}
