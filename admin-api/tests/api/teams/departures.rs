//! A removed member loses their keys and a deleted workspace its keys (its logs kept
//! until the purge); gateways hear of each revocation.

use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Digest;
use uuid::Uuid;

use super::Team;
use crate::helpers::{error_code, TestApp};

/// The notifications gateways act on, as a listener receives them.
struct Listener {
    rx: tokio::sync::mpsc::UnboundedReceiver<Value>,
    _client: tokio_postgres::Client,
}

/// Listens for the notifications gateways act on; once LISTEN has returned, the server
/// delivers every later one.
async fn start_listening(app: &TestApp) -> Listener {
    let (client, mut conn) = tokio_postgres::connect(&app.db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        use futures::StreamExt;
        while let Some(Ok(msg)) = stream.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = msg {
                let _ = tx.send(serde_json::from_str(n.payload()).unwrap());
            }
        }
    });
    client
        .batch_execute("LISTEN perpetuo_invalidate")
        .await
        .unwrap();
    Listener {
        rx,
        _client: client,
    }
}

fn key_hash_hex(key: &str) -> String {
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Waits for a notification naming `key`'s hash.
async fn notified(listener: &mut Listener, key: &str) {
    let want = key_hash_hex(key);
    let wait = async {
        while let Some(msg) = listener.rx.recv().await {
            if msg["table"] == "api_keys" && msg["key_hash"] == want.as_str() {
                return;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), wait)
        .await
        .expect("no notification for the revoked key");
}

#[tokio::test]
async fn a_removed_member_loses_their_keys_and_gateways_hear_of_it() {
    let app = TestApp::spawn().await;
    let t = Team::new(&app).await;
    let ws = t.ws();
    let keys = format!("/workspaces/{ws}/api-keys");
    let (status, mine) = app
        .post(&keys, &t.member.token, json!({"name": "member key"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{mine}");
    assert_eq!(mine["created_by"], t.member.user_id.as_str());
    assert_eq!(mine["created_by_email"], "member@example.com");
    let (_, theirs) = app
        .post(&keys, &t.admin.token, json!({"name": "admin key"}))
        .await;
    // Viewers create no keys; members manage only their own; admins manage all.
    let (status, _) = app.post(&keys, &t.viewer.token, json!({"name": "v"})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let theirs_url = format!("{keys}/{}", theirs["id"].as_str().unwrap());
    let (status, b) = app
        .post(&format!("{theirs_url}/revoke"), &t.member.token, json!({}))
        .await;
    assert_eq!(
        (status, error_code(&b)),
        (StatusCode::FORBIDDEN, "insufficient_role")
    );
    let (status, _) = app.delete(&theirs_url, &t.member.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, list) = app.get(&keys, &t.member.token).await;
    let creators: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["created_by_email"].as_str().unwrap())
        .collect();
    assert_eq!(
        creators,
        vec![
            "admin@example.com",
            "member@example.com",
            "owner@example.com"
        ]
    );

    let mut rx = start_listening(&app).await;
    let (status, removed) = app
        .delete(
            &format!("/workspaces/{ws}/members/{}", t.member.user_id),
            &t.admin.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    let revoked = removed["revoked_api_keys"].as_array().unwrap();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["id"], mine["id"]);
    assert_eq!(revoked[0]["name"], "member key");
    notified(&mut rx, mine["key"].as_str().unwrap()).await;
    let (_, list) = app.get(&keys, &t.admin.token).await;
    for k in list["data"].as_array().unwrap() {
        assert_eq!(k["revoked_at"].is_string(), k["id"] == mine["id"], "{k}");
    }
    // The former member no longer sees the workspace.
    let (status, _) = app.get(&format!("/workspaces/{ws}"), &t.member.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Leaving works the same way.
    let (_, vkey) = app
        .post(&keys, &t.admin.token, json!({"name": "second admin key"}))
        .await;
    let (status, left) = app
        .post(
            &format!("/workspaces/{ws}/leave"),
            &t.admin.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{left}");
    assert_eq!(left["revoked_api_keys"].as_array().unwrap().len(), 2);
    notified(&mut rx, vkey["key"].as_str().unwrap()).await;
}

#[tokio::test]
async fn deleting_a_workspace_revokes_its_keys_and_keeps_its_logs_until_the_purge() {
    let app = TestApp::spawn().await;
    let t = Team::new(&app).await;
    let other = app.signup("other@example.com").await;
    let ws = t.ws().to_string();
    let wsid: Uuid = ws.parse().unwrap();
    let client = app.client().await;
    for w in [wsid, other.workspace.parse().unwrap()] {
        client
            .execute(
                "INSERT INTO request_logs (id, created_at, workspace_id, route, status, latency_ms)
                 VALUES ($1, now(), $2, 'chat', 200, 5)",
                &[&Uuid::now_v7(), &w],
            )
            .await
            .unwrap();
        client
            .execute(
                "INSERT INTO usage_counters (workspace_id, bucket, requests)
                 VALUES ($1, date_trunc('hour', now()), 1)",
                &[&w],
            )
            .await
            .unwrap();
    }
    let mut rx = start_listening(&app).await;
    let (status, _) = app
        .delete(&format!("/workspaces/{ws}"), &t.admin.token)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, deleted) = app
        .delete(&format!("/workspaces/{ws}"), &t.owner.token)
        .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["revoked_api_keys"], 1);
    assert!(deleted["data_purged_after"].is_string());
    notified(&mut rx, &t.owner.key).await;
    for acc in [&t.owner, &t.viewer] {
        let (status, _) = app.get(&format!("/workspaces/{ws}"), &acc.token).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let count = |table: &'static str| {
        let client = &client;
        async move {
            let n: i64 = client
                .query_one(
                    &format!("SELECT count(*) FROM {table} WHERE workspace_id = $1"),
                    &[&wsid],
                )
                .await
                .unwrap()
                .get(0);
            n
        }
    };
    assert_eq!(count("request_logs").await, 1, "logs are kept");
    assert_eq!(count("usage_counters").await, 1, "counters are kept");
    assert_eq!(count("audit_log").await, 1, "the deletion is recorded");

    // Within the retention nothing goes; past it, only the deleted workspace's data.
    let purged = perpetuo_admin::teams::purge_once(&app.db.pool, 30)
        .await
        .unwrap();
    assert_eq!(purged.workspaces, 0);
    let purged = perpetuo_admin::teams::purge_once(&app.db.pool, 0)
        .await
        .unwrap();
    assert_eq!(purged.workspaces, 1);
    assert_eq!((purged.log_rows, purged.counter_rows), (1, 1));
    assert_eq!(count("request_logs").await, 0);
    assert_eq!(count("usage_counters").await, 0);
    assert_eq!(count("audit_log").await, 0);
    let (_, logs) = app
        .get(
            &format!("/workspaces/{}/logs", other.workspace),
            &other.token,
        )
        .await;
    assert_eq!(
        logs["data"].as_array().unwrap().len(),
        1,
        "another workspace's logs stay"
    );
}
