//! The key cache under pressure: key and entry loads on connections of their own, and
//! never behind a load that timed out.
//!
//! The database is made slow for one query at a time by holding a table lock on a
//! connection of the test's own, and the tests wait on what PostgreSQL reports
//! (`pg_stat_activity`) rather than on time.

use std::time::Duration;

use serde_json::Value;
use tokio_postgres::NoTls;

use crate::harness::{chat_body, mock, wait_for, Env, Gateway};

/// Status and error code of a chat completion sent with `key`.
async fn status_and_code(gw: &Gateway, key: &str) -> (u16, String) {
    let r = gw.chat(key, chat_body("gpt-4o")).send().await.unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    let code = v["error"]["code"].as_str().unwrap_or_default().to_string();
    (status, code)
}

/// A connection of the test's own (outside any pool), closed on drop — which also
/// releases every lock it holds.
async fn connection(env: &Env) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&env.db.url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// Holds `LOCK TABLE <table> IN ACCESS EXCLUSIVE MODE` until the returned connection is
/// dropped: every query that reads the table waits.
async fn hold_lock(env: &Env, table: &str) -> tokio_postgres::Client {
    let client = connection(env).await;
    client
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
        ))
        .await
        .unwrap();
    client
}

/// Waits until a backend of the test's database waits for a lock of kind `wait_event`
/// while running a statement that contains `query`.
async fn wait_for_lock_waiter(env: &Env, wait_event: &str, query: &str) {
    let client = connection(env).await;
    let sql = "SELECT count(*) FROM pg_stat_activity
               WHERE datname = current_database() AND wait_event_type = 'Lock'
                 AND wait_event = $1 AND query LIKE '%' || $2 || '%'";
    wait_for(
        "no gateway query waited for the lock",
        Duration::from_secs(20),
        || async {
            client
                .query_one(sql, &[&wait_event, &query])
                .await
                .unwrap()
                .get::<_, i64>(0)
                > 0
        },
    )
    .await;
}

#[tokio::test]
async fn key_and_entry_loads_do_not_wait_behind_the_background_connections() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    // Another gateway's log partition upkeep holds its lock: this gateway's upkeep waits
    // for it on the only connection of the background pool.
    let upkeep = connection(&env).await;
    upkeep
        .batch_execute("SELECT pg_advisory_lock(7311001)")
        .await
        .unwrap();
    let gw = Gateway::start_with(&env, &env.db.url, &[("GATEWAY_DB_POOL_SIZE", "1")]).await;
    wait_for_lock_waiter(&env, "advisory", "perpetuo_ensure_log_partitions").await;

    // Neither the key nor the workspace's entries are cached: both are loaded now.
    assert_eq!(status_and_code(&gw, &env.key).await, (200, String::new()));
    drop(upkeep);
    env.log_rows(1).await;
}

#[tokio::test]
async fn a_load_that_timed_out_does_not_hold_up_the_next_one() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    let (stuck, _) = env.new_key().await;
    let gw = Gateway::start_with(&env, &env.db.url, &[("AUTH_POOL_SIZE", "1")]).await;
    // The key is cached, its workspace's entries not yet: token counting only
    // authenticates.
    let r = gw
        .http
        .post(format!("{}/v1/messages/count_tokens", gw.base))
        .header("x-api-key", &env.key)
        .header("anthropic-version", "2023-06-01")
        .json(&serde_json::json!({"model": "gpt-4o",
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A key load that times out; its statement still waits for the lock on the server.
    let _lock = hold_lock(&env, "api_keys").await;
    assert_eq!(
        status_and_code(&gw, &stuck).await,
        (503, "auth_unavailable".to_string())
    );
    // The next load (the entries) gets a connection that is not stuck behind it.
    assert_eq!(status_and_code(&gw, &env.key).await, (200, String::new()));
}
