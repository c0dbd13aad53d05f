//! The database stopped, hung or cut while the gateway serves: answers keep coming from
//! the caches, records wait in the spool, and every row lands once the database is back.

use std::time::Duration;

use perpetuo_core::db;
use serde_json::Value;
use uuid::Uuid;

use crate::fault_kit::{reconcile, spool_files, steady_load, PgCluster};
use crate::harness::{
    behind_relay, chat_body, eventually, metric_value, mock, BehindRelay, Env, Gateway, RelayMode,
};

/// Warms the caches (two requests) before an outage; returns their request ids.
async fn warm(env: &Env, gw: &Gateway) -> Vec<Uuid> {
    let warm = steady_load(gw, &env.key, 2, Duration::ZERO).await;
    assert_eq!(warm.statuses, [200, 200]);
    warm.answered
}

/// Light load during an outage: every request answered from the caches, records spooled.
async fn during(env: &Env, gw: &Gateway, ids: &mut Vec<Uuid>) {
    let load = steady_load(gw, &env.key, 40, Duration::from_millis(75)).await;
    assert_eq!(load.answered.len(), 40);
    assert!(
        load.statuses.iter().all(|s| *s == 200),
        "answered from the caches: {:?}",
        load.statuses
    );
    eventually("nothing was spooled", Duration::from_secs(15), || async {
        !spool_files(gw.data_dir()).is_empty()
    })
    .await;
    ids.extend(load.answered);
}

/// Once the outage is over: every row lands once, the spool is replayed and removed.
async fn after(env: &Env, gw: &Gateway, ids: &[Uuid]) {
    let rows = reconcile(env, ids, Duration::from_secs(45)).await;
    assert_eq!(rows, ids.len());
    eventually(
        "replayed spool files were not removed",
        Duration::from_secs(10),
        || async { spool_files(gw.data_dir()).is_empty() },
    )
    .await;
    let metrics = gw.metrics_text().await;
    assert!(metric_value(&metrics, "perpetuo_log_rows_replayed_total") > 0.0);
}

#[tokio::test]
async fn a_stopped_database_loses_no_log_row() {
    let cluster = PgCluster::start();
    let env = Env::on_server(&cluster.url()).await;
    let m = mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    let gw = Gateway::start(&env).await;
    let mut ids = warm(&env, &gw).await;
    cluster.stop();
    during(&env, &gw, &mut ids).await;
    cluster.restart();
    after(&env, &gw, &ids).await;
}

#[tokio::test]
async fn a_hung_database_loses_no_log_row() {
    let cluster = PgCluster::start();
    let env = Env::on_server(&cluster.url()).await;
    let m = mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    let gw = Gateway::start(&env).await;
    let mut ids = warm(&env, &gw).await;
    let paused = cluster.pause();
    during(&env, &gw, &mut ids).await;
    drop(paused);
    after(&env, &gw, &ids).await;
}

/// `DB_READ_TIMEOUT_MS` where the database hangs: each read that meets it is answered
/// 503 this much sooner than by the default (5 s).
const READ_TIMEOUT_MS: &str = "1500";

async fn status_and_code(gw: &Gateway, key: &str) -> (u16, String, Option<Uuid>) {
    let r = gw.chat(key, chat_body("gpt-4o")).send().await.unwrap();
    let status = r.status().as_u16();
    let id = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v).ok());
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let code = body["error"]["code"].as_str().unwrap_or("").to_string();
    (status, code, id)
}

/// With the database hanging, a key still served from the stale store meets what was never
/// cached: the workspace's provider entries (503 `routing_unavailable`) and its stored
/// responses (503 `store_unavailable`) — each named for what could not be read.
#[tokio::test]
async fn what_was_never_cached_answers_503_naming_what_could_not_be_read() {
    let BehindRelay {
        env,
        mock: _mock,
        relay,
        gw,
    } = behind_relay(&[
        ("KEY_CACHE_TTL_MS", "300"),
        ("KEY_CACHE_STALE_MS", "600000"),
        ("DB_READ_TIMEOUT_MS", READ_TIMEOUT_MS),
    ])
    .await;
    // The key is confirmed by a route that reads no provider entries.
    let stored = |id: &str| {
        gw.http
            .get(format!("{}/v1/responses/{id}", gw.base))
            .bearer_auth(&env.key)
            .send()
    };
    let r = stored("resp_none").await.unwrap();
    assert_eq!(r.status(), 404);
    relay.set_mode(RelayMode::Blackhole);
    // Past the key's TTL: the expiry is the behaviour under test.
    tokio::time::sleep(Duration::from_millis(400)).await;

    let r = stored("resp_none").await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    let (status, code, _) = status_and_code(&gw, &env.key).await;
    assert_eq!((status, code.as_str()), (503, "routing_unavailable"));
    relay.set_mode(RelayMode::Pass);
}

#[tokio::test]
async fn cached_keys_outlive_their_ttl_while_the_database_hangs_but_not_a_revocation() {
    let BehindRelay {
        env,
        mock: _mock,
        relay,
        gw,
    } = behind_relay(&[
        ("KEY_CACHE_TTL_MS", "300"),
        ("KEY_CACHE_NEGATIVE_TTL_MS", "200"),
        ("KEY_CACHE_STALE_MS", "600000"),
        ("DB_READ_TIMEOUT_MS", READ_TIMEOUT_MS),
        // The workspace's provider entries expire too: they are served stale as well.
        ("ENTRY_CACHE_TTL_MS", "300"),
    ])
    .await;
    let (revoked, revoked_id) = env.new_key().await;
    let (unknown, _) = env.new_key().await;
    let mut ids = Vec::new();
    for key in [&env.key, &revoked] {
        let (status, _, id) = status_and_code(&gw, key).await;
        assert_eq!(status, 200);
        ids.extend(id);
    }
    // The revocation reaches the gateway as a notification; no request for that key
    // follows before the database hangs, so only the notification can remove it.
    let client = env.client().await;
    db::api_keys::revoke(&client, env.workspace, revoked_id)
        .await
        .unwrap()
        .unwrap();
    drop(client);
    // Time for the notification to arrive. Nothing shows that it has without a request
    // for the key, and such a request would be what removes it: the one wait on an
    // unobservable event.
    tokio::time::sleep(Duration::from_secs(1)).await;
    relay.set_mode(RelayMode::Blackhole);
    // Past every cache TTL (the expiry is the behaviour under test).
    tokio::time::sleep(Duration::from_millis(400)).await;

    let (valid, gone, never) = tokio::join!(
        status_and_code(&gw, &env.key),
        status_and_code(&gw, &revoked),
        status_and_code(&gw, &unknown),
    );
    assert_eq!(valid.0, 200, "a key confirmed within the window is served");
    assert_eq!(
        (gone.0, gone.1.as_str()),
        (503, "auth_unavailable"),
        "a revoked key is not served from the stale store"
    );
    assert_eq!((never.0, never.1.as_str()), (503, "auth_unavailable"));
    for (_, _, id) in [valid, gone, never] {
        ids.extend(id);
    }
    let metrics = gw.metrics_text().await;
    assert!(
        metrics.lines().any(
            |l| l.starts_with("perpetuo_key_cache_total{result=\"stale\"}") && !l.ends_with(" 0")
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("perpetuo_entry_cache_stale_total") && !l.ends_with(" 0")),
        "{metrics}"
    );

    relay.set_mode(RelayMode::Pass);
    reconcile(&env, &ids, Duration::from_secs(30)).await;
}

/// `DB_STATEMENT_TIMEOUT_MS` reaches the gateway's connections: a key lookup stuck behind
/// a lock is answered 503 `auth_unavailable` and cancelled in the database too, rather
/// than left waiting there after the gateway has given up on it.
#[tokio::test]
async fn a_lookup_stuck_behind_a_lock_is_cancelled_in_the_database() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    let gw = Gateway::start_with(&env, &env.db.url, &[("DB_STATEMENT_TIMEOUT_MS", "200")]).await;
    let mut locker = env.client().await;
    let tx = locker.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let resp = gw
        .chat(&env.key, chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    let waiting: i64 = tx
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
             AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    tx.rollback().await.unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("auth_unavailable"))
    );
    assert_eq!(waiting, 0, "a gateway statement still waits for the lock");
}
