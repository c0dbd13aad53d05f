//! Cached authentication: revocation through the admin API (directly, with a removed
//! member, with a deleted workspace), a killed listener, a database that goes away.

use std::time::Duration;

use perpetuo_core::db;
use serde_json::{json, Value};

use crate::harness::{
    behind_relay, chat_body, eventually, mock, AdminApi, BehindRelay, Env, Gateway,
};

/// The status of a chat completion sent with `key`.
async fn chat_status(gw: &Gateway, key: &str) -> reqwest::StatusCode {
    gw.chat(key, chat_body("gpt-4o"))
        .send()
        .await
        .unwrap()
        .status()
}

/// Waits until the gateway refuses `key` with 401 (it serves the key until then); fails
/// the test with `what` after `within`.
async fn refused_within(gw: &Gateway, key: &str, within: Duration, what: &str) {
    eventually(what, within, || async {
        let status = chat_status(gw, key).await;
        if status != 401 {
            assert_eq!(status, 200);
        }
        status == 401
    })
    .await;
}

#[tokio::test]
async fn revocation_through_the_admin_api_reaches_a_running_gateway_within_a_second() {
    let env = Env::new().await;
    let m = mock().await;
    let admin = AdminApi::start(&env, &[]).await;
    let admin_url = admin.base.clone();
    let http = reqwest::Client::new();
    let signup = admin.signup("rev@example.com").await;
    let token = signup["token"].as_str().unwrap();
    let ws = signup["workspace"]["id"].as_str().unwrap();
    let key = signup["api_key"]["key"].as_str().unwrap();
    let kid = signup["api_key"]["id"].as_str().unwrap();
    let r = http
        .post(format!("{admin_url}/workspaces/{ws}/providers"))
        .bearer_auth(token)
        .json(&json!({"kind": "openai_compatible", "name": "mock", "api_key": "sk-m", "base_url": m.base_url()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let gw = Gateway::start(&env).await;
    assert_eq!(chat_status(&gw, key).await, 200, "key cached");
    let r = http
        .post(format!("{admin_url}/workspaces/{ws}/api-keys/{kid}/revoke"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    refused_within(
        &gw,
        key,
        Duration::from_secs(1),
        "the revoked key is refused",
    )
    .await;
    let body: Value = gw
        .chat(key, chat_body("gpt-4o"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");

    // Disabling the only provider entry reaches the gateway too.
    let (key2, _) = {
        let k = perpetuo_core::apikey::generate();
        let client = env.client().await;
        let row = db::api_keys::insert(
            &client,
            uuid::Uuid::parse_str(ws).unwrap(),
            "k2",
            &k,
            None,
            None,
        )
        .await
        .unwrap();
        (k.plaintext.expose().clone(), row.id)
    };
    assert_eq!(chat_status(&gw, &key2).await, 200);
    let providers: Value = http
        .get(format!("{admin_url}/workspaces/{ws}/providers"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pid = providers["data"][0]["id"].as_str().unwrap();
    http.put(format!("{admin_url}/workspaces/{ws}/providers/{pid}"))
        .bearer_auth(token)
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    eventually(
        "provider change not seen within 1 s",
        Duration::from_secs(1),
        || async { chat_status(&gw, &key2).await == 404 },
    )
    .await;
}

/// Calls the admin API at `base` with `token`; returns the status and the JSON body.
async fn admin_call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http.request(method, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_removed_member_and_a_deleted_workspace_lose_their_keys_on_a_running_gateway() {
    let env = Env::new().await;
    let m = mock().await;
    let admin = AdminApi::start(&env, &[]).await;
    let admin_url = admin.base.clone();
    let http = reqwest::Client::new();
    let owner = admin.signup("owner@example.com").await;
    let member = admin.signup("member@example.com").await;
    let token = owner["token"].as_str().unwrap();
    let ws = owner["workspace"]["id"].as_str().unwrap();
    let owner_key = owner["api_key"]["key"].as_str().unwrap();
    let (status, _) = admin_call(
        &http,
        reqwest::Method::POST,
        format!("{admin_url}/workspaces/{ws}/providers"),
        token,
        Some(json!({"kind": "openai_compatible", "name": "mock", "api_key": "sk-m", "base_url": m.base_url()})),
    )
    .await;
    assert_eq!(status, 201);
    let member_id = uuid::Uuid::parse_str(member["user"]["id"].as_str().unwrap()).unwrap();
    db::workspaces::add_member(
        &env.client().await,
        uuid::Uuid::parse_str(ws).unwrap(),
        member_id,
        db::workspaces::Role::Member,
    )
    .await
    .unwrap();
    let (status, created) = admin_call(
        &http,
        reqwest::Method::POST,
        format!("{admin_url}/workspaces/{ws}/api-keys"),
        member["token"].as_str().unwrap(),
        Some(json!({"name": "member key"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let member_key = created["key"].as_str().unwrap();

    let gw = Gateway::start(&env).await;
    for key in [owner_key, member_key] {
        let status = chat_status(&gw, key).await;
        assert_eq!(status, 200, "key cached");
    }
    let (status, removed) = admin_call(
        &http,
        reqwest::Method::DELETE,
        format!("{admin_url}/workspaces/{ws}/members/{member_id}"),
        token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{removed}");
    assert_eq!(removed["revoked_api_keys"][0]["id"], created["id"]);
    refused_within(
        &gw,
        member_key,
        Duration::from_secs(10),
        "the removed member's key is refused",
    )
    .await;
    let status = chat_status(&gw, owner_key).await;
    assert_eq!(status, 200, "the owner's key is untouched");

    let (status, deleted) = admin_call(
        &http,
        reqwest::Method::DELETE,
        format!("{admin_url}/workspaces/{ws}"),
        token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{deleted}");
    // The workspace's entries and its keys go in one transaction, but reach the gateway
    // as separate notifications: between them the still-cached key finds no entry (404).
    eventually(
        "a deleted workspace's key is refused",
        Duration::from_secs(10),
        || async {
            let status = chat_status(&gw, owner_key).await;
            assert!([200, 401, 404].contains(&status.as_u16()), "{status}");
            status == 401
        },
    )
    .await;
}

#[tokio::test]
async fn a_killed_listener_reconnects_and_revocations_are_still_honoured() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    let gw = Gateway::start(&env).await;
    let client = env.client().await;
    let listeners = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'";
    eventually("gateway never listened", Duration::from_secs(5), || async {
        client
            .query_one(listeners, &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
            > 0
    })
    .await;
    let killed: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    // Wait until it listens again, then cache the key afresh.
    eventually(
        "listener did not come back",
        Duration::from_secs(10),
        || async {
            client
                .query_one(listeners, &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
                > 0
        },
    )
    .await;
    assert_eq!(chat_status(&gw, &env.key).await, 200);
    db::api_keys::revoke(&client, env.workspace, env.key_id)
        .await
        .unwrap()
        .unwrap();
    refused_within(
        &gw,
        &env.key,
        Duration::from_secs(1),
        "the revoked key is refused",
    )
    .await;
    let metrics = gw.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("perpetuo_listener_reconnects_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test]
async fn with_the_database_gone_cached_keys_work_and_unknown_keys_get_503() {
    let BehindRelay {
        env,
        mock: _mock,
        relay,
        gw,
    } = behind_relay(&[]).await;
    // Listening before the key is cached: a late first LISTEN would clear it.
    gw.listening().await;
    assert_eq!(chat_status(&gw, &env.key).await, 200);
    let (unknown, _) = env.new_key().await;

    relay.stop().await;
    // The listener's connection went with the database: the gateway says it no longer
    // hears changes.
    gw.listener_up(
        false,
        "perpetuo_listener_up stayed 1 with the database gone",
    )
    .await;
    let r = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
    assert_eq!(r.status(), 200, "a cached key keeps working");
    let r = gw.chat(&unknown, chat_body("gpt-4o")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "auth_unavailable");
}

#[tokio::test]
async fn last_used_is_recorded_in_the_background() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    let gw = Gateway::start(&env).await;
    let client = env.client().await;
    let last_used = "SELECT last_used_at IS NOT NULL FROM api_keys WHERE id = $1";
    assert!(!client
        .query_one(last_used, &[&env.key_id])
        .await
        .unwrap()
        .get::<_, bool>(0));
    for _ in 0..3 {
        let status = chat_status(&gw, &env.key).await;
        assert_eq!(status, 200);
    }
    eventually(
        "last_used_at was not written",
        Duration::from_secs(5),
        || async {
            client
                .query_one(last_used, &[&env.key_id])
                .await
                .unwrap()
                .get::<_, bool>(0)
        },
    )
    .await;
}
