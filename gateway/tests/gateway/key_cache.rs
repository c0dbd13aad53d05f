//! The key cache under pressure: unknown keys kept apart from valid ones, a failed-lookup
//! budget per address, connections of its own, a revocation that overtakes a fill,
//! workspace changes that refresh that workspace only, and stale copies that only a
//! revocation removes.
//!
//! The database is made slow for one query at a time by holding a table lock on a
//! connection of the test's own, and the tests wait on what PostgreSQL reports
//! (`pg_stat_activity`) rather than on time.

use std::time::Duration;

use futures::StreamExt;
use perpetuo_core::provider::ProviderKind;
use reqwest::StatusCode;
use serde_json::Value;
use tokio_postgres::NoTls;
use uuid::Uuid;

use crate::harness::{chat_body, eventually, metric_value, mock, Env, Gateway};

const MISSES: &str = "perpetuo_key_cache_total{result=\"miss\"}";
const STALE: &str = "perpetuo_key_cache_total{result=\"stale\"}";

async fn status(gw: &Gateway, key: &str) -> StatusCode {
    gw.chat(key, chat_body("gpt-4o"))
        .send()
        .await
        .unwrap()
        .status()
}

/// Status and error code of a chat completion sent with `key`.
async fn status_and_code(gw: &Gateway, key: &str) -> (u16, String) {
    let r = gw.chat(key, chat_body("gpt-4o")).send().await.unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    let code = v["error"]["code"].as_str().unwrap_or_default().to_string();
    (status, code)
}

async fn metric(gw: &Gateway, name: &str) -> f64 {
    metric_value(&gw.metrics_text().await, name)
}

/// A connection of the test's own (outside any pool), closed on drop — which also
/// releases every lock it holds.
async fn connection(env: &Env) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&env.db.url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// `DB_READ_TIMEOUT_MS` where a test waits for a key read to give up behind a lock: 503
/// (or the stale copy) this much sooner than by the default (5 s).
const READ_TIMEOUT_MS: &str = "1500";

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
    eventually(
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

/// Polls `key` while the database cannot answer for it (the caller holds a lock the
/// key's load waits for): as long as its fresh entry lasts the answer is a hit; once the
/// entry is gone, the load times out and only a stale copy can answer. Returns the first
/// answer that did not come from the fresh cache.
async fn first_answer_without_a_fresh_entry(gw: &Gateway, key: &str) -> (u16, String) {
    eventually(
        "the key's fresh entry is dropped",
        Duration::from_secs(20),
        || async {
            let stale_before = metric(gw, STALE).await;
            let (status, code) = status_and_code(gw, key).await;
            (status != 200 || metric(gw, STALE).await > stale_before).then_some((status, code))
        },
    )
    .await
}

/// A second workspace with a provider entry (the mock at `base_url`) and a key.
async fn other_workspace(env: &Env, base_url: &str) -> (Uuid, String) {
    let ws = env.new_workspace("other").await;
    env.add_provider_in(
        ws,
        "other",
        ProviderKind::OpenaiCompatible,
        base_url,
        1,
        &[],
        &[],
    )
    .await;
    let (key, _) = env.new_key_in(ws).await;
    (ws, key)
}

#[tokio::test]
async fn unchanged_workspace_saves_refresh_no_key_and_a_real_change_reaches_that_workspace() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    let (_, other_key) = other_workspace(&env, &m.base_url()).await;
    let gw = Gateway::start(&env).await;
    gw.listening().await;
    assert_eq!(status(&gw, &env.key).await, 200);
    assert_eq!(status(&gw, &other_key).await, 200);

    let client = env.client().await;
    for _ in 0..20 {
        client
            .execute(
                "UPDATE workspaces SET rpm_limit = rpm_limit, tpm_limit = tpm_limit,
                     concurrency_limit = concurrency_limit, budget_nusd = budget_nusd,
                     budget_period = budget_period, updated_at = now()
                 WHERE id = $1",
                &[&env.workspace],
            )
            .await
            .unwrap();
    }
    // A real change reaches the workspace's key at once. Notifications arrive in commit
    // order, so once it is seen, any sent for the unchanged saves were handled.
    client
        .execute(
            "UPDATE workspaces SET rpm_limit = 1 WHERE id = $1",
            &[&env.workspace],
        )
        .await
        .unwrap();
    eventually(
        "the workspace's new limit did not reach its key",
        Duration::from_secs(2),
        || async { status(&gw, &env.key).await == 429 },
    )
    .await;

    let misses = metric(&gw, MISSES).await;
    assert_eq!(status(&gw, &other_key).await, 200);
    assert_eq!(
        metric(&gw, MISSES).await,
        misses,
        "another workspace's key was dropped from the cache"
    );
}

#[tokio::test]
async fn a_change_to_a_key_that_is_not_a_revocation_keeps_its_stale_copy() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    let gw = Gateway::start_with(
        &env,
        &env.db.url,
        &[("DB_READ_TIMEOUT_MS", READ_TIMEOUT_MS)],
    )
    .await;
    gw.listening().await;
    assert_eq!(status(&gw, &env.key).await, 200);

    env.client()
        .await
        .execute(
            "UPDATE api_keys SET label = 'renamed', rpm_limit = 1000 WHERE id = $1",
            &[&env.key_id],
        )
        .await
        .unwrap();
    // The key is read again once the change is heard; that read waits behind the lock
    // until it times out, and the stale copy answers.
    let _lock = hold_lock(&env, "api_keys").await;
    assert_eq!(
        first_answer_without_a_fresh_entry(&gw, &env.key).await,
        (200, String::new()),
        "the stale copy did not answer"
    );
}

#[tokio::test]
async fn a_reconnected_listener_keeps_the_stale_copies_of_usable_keys_only() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    let (revoked, revoked_id) = env.new_key().await;
    let gw = Gateway::start_with(
        &env,
        &env.db.url,
        &[("DB_READ_TIMEOUT_MS", READ_TIMEOUT_MS)],
    )
    .await;
    gw.listening().await;
    for key in [&env.key, &revoked] {
        assert_eq!(status(&gw, key).await, 200);
    }
    // A revocation the listener never hears, as if made while it was away.
    let silent = connection(&env).await;
    silent
        .batch_execute("SET session_replication_role = replica")
        .await
        .unwrap();
    silent
        .execute(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1",
            &[&revoked_id],
        )
        .await
        .unwrap();
    drop(silent);

    let killed: i64 = connection(&env)
        .await
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    eventually(
        "the reconnected listener did not check the stale copies",
        Duration::from_secs(10),
        || async { metric(&gw, "perpetuo_key_cache_stale_dropped_total").await >= 1.0 },
    )
    .await;

    // Both keys' fresh entries are gone; with the database unable to answer, the usable
    // key's stale copy answers and the revoked one has none.
    let _lock = hold_lock(&env, "api_keys").await;
    let (usable, gone) = tokio::join!(
        status_and_code(&gw, &env.key),
        status_and_code(&gw, &revoked)
    );
    assert_eq!(usable, (200, String::new()));
    assert_eq!(gone, (503, "auth_unavailable".to_string()));
}

#[tokio::test]
async fn a_revocation_that_overtakes_a_cache_fill_wins() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    let (racing, racing_id) = env.new_key().await;
    let gw = Gateway::start(&env).await;
    gw.listening().await;
    // A cached key whose revocation, sent after the racing key's, shows when both were
    // heard.
    assert_eq!(status(&gw, &env.key).await, 200);

    // The racing key's fill reads the key (still valid), then waits for its workspace's
    // limits behind the lock.
    let lock = hold_lock(&env, "workspaces").await;
    let in_flight = {
        let (http, url, racing) = (
            gw.http.clone(),
            format!("{}/v1/chat/completions", gw.base),
            racing.clone(),
        );
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(racing)
                .json(&chat_body("gpt-4o"))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    wait_for_lock_waiter(&env, "relation", "FROM workspaces WHERE id").await;

    let mut client = env.client().await;
    let tx = client.transaction().await.unwrap();
    for id in [racing_id, env.key_id] {
        tx.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    eventually(
        "the witness key's revocation was not heard",
        Duration::from_secs(5),
        || async { status(&gw, &env.key).await == 401 },
    )
    .await;

    // The fill ends after its key's revocation was heard: it is not kept.
    drop(lock);
    assert_eq!(in_flight.await.unwrap(), 401, "the overtaken fill answered");
    assert_eq!(
        status(&gw, &racing).await,
        401,
        "the overtaken fill was kept"
    );
}

#[tokio::test]
async fn unknown_keys_never_evict_a_valid_one() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    let gw = Gateway::start_with(
        &env,
        &env.db.url,
        &[
            ("KEY_CACHE_CAPACITY", "64"),
            ("KEY_CACHE_UNKNOWN_CAPACITY", "64"),
            ("FAILED_KEY_LOOKUPS_PER_MINUTE", "0"),
        ],
    )
    .await;
    // A late first LISTEN would clear the cache: misses this test does not count.
    gw.listening().await;
    assert_eq!(status(&gw, &env.key).await, 200);

    // Distinct well-formed keys, each sent a few times (as a client retries).
    let unknown: Vec<String> = (0..1000)
        .map(|_| perpetuo_core::apikey::generate().plaintext.expose().clone())
        .collect();
    let url = format!("{}/v1/models", gw.base);
    let sent = futures::stream::iter(unknown.iter().flat_map(|k| [k, k, k]))
        .map(|key| {
            let (http, url) = (gw.http.clone(), url.clone());
            async move {
                http.get(url)
                    .bearer_auth(key)
                    .send()
                    .await
                    .unwrap()
                    .status()
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    assert!(sent.iter().all(|s| *s == 401));

    let misses = metric(&gw, MISSES).await;
    assert_eq!(status(&gw, &env.key).await, 200);
    assert_eq!(
        metric(&gw, MISSES).await,
        misses,
        "the valid key was evicted by unknown ones"
    );
}

#[tokio::test]
async fn failed_lookups_past_an_address_budget_are_refused_without_a_query() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    let (uncached, _) = env.new_key().await;
    let gw =
        Gateway::start_with(&env, &env.db.url, &[("FAILED_KEY_LOOKUPS_PER_MINUTE", "5")]).await;
    gw.listening().await;
    assert_eq!(status(&gw, &env.key).await, 200);
    let misses = metric(&gw, MISSES).await;

    let unknown: Vec<String> = (0..5)
        .map(|_| perpetuo_core::apikey::generate().plaintext.expose().clone())
        .collect();
    for key in &unknown {
        assert_eq!(status(&gw, key).await, 401);
    }
    let sixth = perpetuo_core::apikey::generate().plaintext.expose().clone();
    let r = gw.chat(&sixth, chat_body("gpt-4o")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(v["error"]["code"], "too_many_invalid_keys");
    // In the Anthropic door's own shape.
    let r = gw
        .http
        .post(format!("{}/v1/messages", gw.base))
        .header("x-api-key", &sixth)
        .header("anthropic-version", "2023-06-01")
        .json(&serde_json::json!({"model": "gpt-4o", "max_tokens": 8,
            "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["type"].as_str(), v["error"]["type"].as_str()),
        (Some("error"), Some("rate_limit_error"))
    );

    // What the cache answers is still answered: a cached valid key, a cached unknown one.
    assert_eq!(status(&gw, &env.key).await, 200);
    assert_eq!(status(&gw, &unknown[0]).await, 401);
    // A key that would need the database waits for the window, valid or not.
    assert_eq!(status(&gw, &uncached).await, 429);
    assert_eq!(
        metric(&gw, MISSES).await - misses,
        5.0,
        "the database was asked past the budget"
    );
    assert!(metric(&gw, "perpetuo_key_lookups_refused_total").await >= 3.0);
}

#[tokio::test]
async fn a_burst_of_first_requests_with_a_valid_key_shares_one_lookup_and_no_budget() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    let gw = Gateway::start_with(
        &env,
        &env.db.url,
        &[
            ("FAILED_KEY_LOOKUPS_PER_MINUTE", "2"),
            ("DB_STATEMENT_TIMEOUT_MS", "20000"),
        ],
    )
    .await;
    gw.listening().await;
    // The key's lookup waits on the table's lock while twenty first requests arrive on
    // twenty connections, from one address whose budget is two: they wait for that one
    // lookup (before, each held a unit of the budget while it waited, and all but two
    // were refused).
    let lock = hold_lock(&env, "api_keys").await;
    let burst: Vec<_> = (0..20)
        .map(|_| tokio::spawn(gw.chat(&env.key, chat_body("gpt-4o")).send()))
        .collect();
    wait_for_lock_waiter(&env, "relation", "FROM api_keys WHERE key_hash").await;
    eventually(
        "the twenty connections were not all open",
        Duration::from_secs(15),
        || async { metric(&gw, "perpetuo_open_connections").await >= 20.0 },
    )
    .await;
    drop(lock);
    for r in burst {
        assert_eq!(r.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(metric(&gw, "perpetuo_key_lookups_refused_total").await, 0.0);
    assert_eq!(metric(&gw, MISSES).await, 20.0);
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
    let gw = Gateway::start_with(
        &env,
        &env.db.url,
        &[
            ("AUTH_POOL_SIZE", "1"),
            ("DB_READ_TIMEOUT_MS", READ_TIMEOUT_MS),
        ],
    )
    .await;
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

#[tokio::test]
async fn behind_a_trusted_balancer_each_client_has_a_failed_lookup_budget_of_its_own() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    let gw = Gateway::start_with(
        &env,
        &env.db.url,
        &[
            ("TRUSTED_PROXIES", "127.0.0.1"),
            ("FAILED_KEY_LOOKUPS_PER_MINUTE", "2"),
        ],
    )
    .await;
    let from = |client: &'static str| {
        let key = perpetuo_core::apikey::generate().plaintext.expose().clone();
        let request = gw
            .chat(&key, chat_body("gpt-4o"))
            .header("x-forwarded-for", client);
        async move { request.send().await.unwrap().status() }
    };
    for _ in 0..2 {
        assert_eq!(from("198.51.100.1").await, 401);
    }
    assert_eq!(from("198.51.100.1").await, 429);
    // The balancer's other clients keep their own budgets.
    assert_eq!(from("198.51.100.2").await, 401);
    assert_eq!(from("2001:db8:7:7::1").await, 401);
}
