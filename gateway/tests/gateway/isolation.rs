//! One tenant cannot cost another a request, a record or its cached key: an attacker that
//! sends absurd numbers and flaps its own limits, a Redis that freezes again and again, and
//! a database outage, all at once, leave a victim at its concurrency limit untouched.

use std::time::Duration;

use mock_provider::Behavior;
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use crate::containment::neighbour_key;
use crate::fault_kit::reconcile;
use crate::harness::{chat_body, eventually, mock, relay_url, Env, Gateway, Relay, RelayMode};
use crate::redis_kit::PrivateRedis;

/// Sends `client`'s requests one after another until `stop`; returns each status and
/// request id.
async fn load(
    gw: &Gateway,
    key: &str,
    body: serde_json::Value,
    mut stop: watch::Receiver<bool>,
) -> Vec<(u16, String)> {
    let mut seen = Vec::new();
    while !*stop.borrow_and_update() {
        let r = gw.chat(key, body.clone()).send().await.unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        seen.push((r.status().as_u16(), id));
        r.bytes().await.unwrap();
    }
    seen
}

#[tokio::test]
async fn an_attacker_a_freezing_redis_and_a_database_outage_cost_a_victim_nothing() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("victim", &m.base_url(), 1).await;
    let (attacker_ws, attacker) = neighbour_key(&env).await;
    env.add_provider_in(
        attacker_ws,
        "attacker",
        perpetuo_core::provider::ProviderKind::OpenaiCompatible,
        &m.base_url(),
        1,
        &[],
        &[],
    )
    .await;
    m.set_behavior(Some(Behavior::Slow(Duration::from_millis(50))));
    let db = env.client().await;
    db.execute(
        "UPDATE api_keys SET concurrency_limit = 2 WHERE id = $1",
        &[&env.key_id],
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE workspaces SET rpm_limit = 1000 WHERE id = $1",
        &[&attacker_ws],
    )
    .await
    .unwrap();
    let redis = PrivateRedis::start().await;
    let relay = Relay::start(crate::harness::db_addr(&env.db.url)).await;
    let gw = Gateway::start_with(
        &env,
        &relay_url(&env.db.url, relay.addr),
        &[
            ("REDIS_URL", redis.url().as_str()),
            ("REDIS_DEADLINE_MS", "50"),
            ("KEY_CACHE_TTL_MS", "600000"),
            ("KEY_CACHE_STALE_MS", "0"),
        ],
    )
    .await;
    let victim_body = chat_body("gpt-4o-mini");
    let r = gw.chat(&env.key, victim_body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut expected =
        vec![Uuid::parse_str(r.headers()["x-request-id"].to_str().unwrap()).unwrap()];
    // A trap: the victim's key is revoked in the database without telling any gateway
    // (triggers off for this session). A gateway that reloads the key — a cache emptied
    // by someone else's doing — refuses the victim from then on.
    db.batch_execute(&format!(
        "SET session_replication_role = replica; \
         UPDATE api_keys SET revoked_at = now() WHERE id = '{}'; \
         SET session_replication_role = origin;",
        env.key_id
    ))
    .await
    .unwrap();

    let (stop_tx, stop) = watch::channel(false);
    // The victim: two clients, at its concurrency limit of 2.
    let victims = futures::future::join(
        load(&gw, &env.key, victim_body.clone(), stop.clone()),
        load(&gw, &env.key, victim_body.clone(), stop.clone()),
    );
    // The attacker: absurd numbers, over and over.
    let mut absurd = chat_body("gpt-4o-mini");
    absurd["max_tokens"] = json!(u64::MAX);
    let attack = load(&gw, &attacker, absurd, stop.clone());
    // ...while it flaps its own limits twenty times a second.
    let flapping = async {
        let mut stop = stop.clone();
        let mut n = 0u32;
        while !*stop.borrow_and_update() {
            n += 1;
            db.execute(
                "UPDATE workspaces SET rpm_limit = $2 WHERE id = $1",
                &[&attacker_ws, &(1000 + (n % 2) as i32)],
            )
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        n
    };
    let chaos = async {
        // Redis freezes for 200 ms, five times (these sleeps are the fault schedule under
        // test, as is the attacker's pace above).
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            redis.pause();
            tokio::time::sleep(Duration::from_millis(200)).await;
            redis.resume();
        }
        // The trap is lifted (as silently as it was set): after a database outage a
        // gateway may rightly check its keys again.
        db.batch_execute(&format!(
            "SET session_replication_role = replica; \
             UPDATE api_keys SET revoked_at = NULL WHERE id = '{}'; \
             SET session_replication_role = origin;",
            env.key_id
        ))
        .await
        .unwrap();
        // The database goes away while the freezes go on.
        relay.set_mode(RelayMode::Blackhole);
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            redis.pause();
            tokio::time::sleep(Duration::from_millis(200)).await;
            redis.resume();
        }
        relay.set_mode(RelayMode::Pass);
        // The load runs on a while after the database is back.
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop_tx.send(true).unwrap();
    };
    let ((a, b), attacked, flaps, ()) = tokio::join!(victims, attack, flapping, chaos);
    assert!(flaps >= 20, "the attacker flapped {flaps} times");
    for (status, id) in a.iter().chain(&b) {
        assert_eq!(*status, 200, "the victim was refused ({id})");
        expected.push(Uuid::parse_str(id).unwrap());
    }
    for (status, id) in &attacked {
        assert!(*status == 400 || *status == 503, "attacker got {status}");
        expected.push(Uuid::parse_str(id).unwrap());
    }
    let metrics = gw.metrics_text().await;
    assert!(
        crate::harness::metric_value(&metrics, "perpetuo_limit_redis_slow_total") > 0.0,
        "the freezes were felt"
    );
    // Once the victim is idle, nothing of it is left held in Redis.
    let scope = format!("perpetuo:limits:k:{}", env.key_id);
    eventually(
        "the victim's slots are released",
        Duration::from_secs(10),
        || async {
            redis.query(&["ZCARD", &format!("{scope}:inflight")]) == "0"
                && redis.query(&["ZCARD", &format!("{scope}:held")]) == "0"
        },
    )
    .await;
    // One log row per request, counters equal to the rows.
    reconcile(&env, &expected, Duration::from_secs(30)).await;
}
