//! Provider entries: write-only keys, validation, SSRF policy, ordering, notifications.

use perpetuo_core::crypto::Sealed;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{error_code, TestApp};

#[tokio::test]
async fn create_update_delete_with_write_only_key() {
    let app = TestApp::spawn().await;
    let acc = app.signup("p@example.com").await;
    let base = format!("/workspaces/{}/providers", acc.workspace);
    let (status, p) = app
        .post(
            &base,
            &acc.token,
            json!({"kind": "anthropic", "name": "claude", "api_key": "sk-ant-very-secret-9876", "priority": 5,
                   "models": ["claude-sonnet-4-5", " claude-sonnet-4-5 "], "model_map": {"gpt-4o-mini": "claude-3-5-haiku-latest"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    assert_eq!(p["key_last4"], "9876");
    assert_eq!(p["kind"], "anthropic");
    assert_eq!(p["models"], json!(["claude-sonnet-4-5"]));
    assert_eq!(p["model_map"]["gpt-4o-mini"], "claude-3-5-haiku-latest");
    assert!(p["base_url"].is_null());
    assert!(!p.to_string().contains("very-secret"));
    let pid = p["id"].as_str().unwrap().to_string();

    // The database holds only sealed bytes, which open with the master key.
    let db = app.client().await;
    let row = db
        .query_one(
            "SELECT sealed_key, key_nonce, key_version, t::text FROM provider_keys t",
            &[],
        )
        .await
        .unwrap();
    let whole_row: String = row.get(3);
    assert!(!whole_row.contains("very-secret"));
    let sealed = Sealed {
        ciphertext: row.get(0),
        nonce: row.get(1),
        version: row.get(2),
    };
    let id = uuid::Uuid::parse_str(&pid).unwrap();
    assert_eq!(
        app.master_key
            .open(&sealed, id.as_bytes())
            .unwrap()
            .expose(),
        "sk-ant-very-secret-9876"
    );

    let (status, second) = app
        .post(
            &base,
            &acc.token,
            json!({"kind": "openai", "name": "oai", "api_key": "sk-o-1111", "priority": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, list) = app.get(&base, &acc.token).await;
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["oai", "claude"], "ordered by priority");
    assert!(!list.to_string().contains("sk-o-1111"));

    // Partial update keeps other fields; a new key replaces the old one.
    let (status, upd) = app
        .put(
            &format!("{base}/{pid}"),
            &acc.token,
            json!({"enabled": false, "api_key": "sk-ant-new-key-5555"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{upd}");
    assert_eq!(upd["enabled"], false);
    assert_eq!(upd["key_last4"], "5555");
    assert_eq!(upd["priority"], 5);
    assert_eq!(upd["name"], "claude");
    let (status, upd) = app
        .put(&format!("{base}/{pid}"), &acc.token, json!({"priority": 0}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(upd["key_last4"], "5555");

    // Names are unique per workspace.
    let (status, body) = app
        .put(
            &format!("{base}/{}", second["id"].as_str().unwrap()),
            &acc.token,
            json!({"name": "claude"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let (status, _) = app.delete(&format!("{base}/{pid}"), &acc.token).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.delete(&format!("{base}/{pid}"), &acc.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = app.get(&base, &acc.token).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn validation_and_upstream_policy() {
    let app = TestApp::spawn().await;
    let acc = app.signup("v@example.com").await;
    let base = format!("/workspaces/{}/providers", acc.workspace);
    let cases = [
        (json!({"name": "x", "api_key": "k"}), "kind"),
        (
            json!({"kind": "bedrock", "name": "x", "api_key": "k"}),
            "kind",
        ),
        (json!({"kind": "openai", "api_key": "k"}), "name"),
        (json!({"kind": "openai", "name": "x"}), "api_key"),
        (
            json!({"kind": "openai_compatible", "name": "x", "api_key": "k"}),
            "base_url",
        ),
        (
            json!({"kind": "openai_compatible", "name": "x", "api_key": "k", "base_url": "http://api.example.com/v1"}),
            "base_url",
        ),
        (
            json!({"kind": "openai_compatible", "name": "x", "api_key": "k", "base_url": "https://127.0.0.1/v1"}),
            "base_url",
        ),
        (
            json!({"kind": "openai_compatible", "name": "x", "api_key": "k", "base_url": "https://169.254.169.254/latest"}),
            "base_url",
        ),
        (
            json!({"kind": "openai_compatible", "name": "x", "api_key": "k", "base_url": "https://10.0.0.7/v1"}),
            "base_url",
        ),
        (
            json!({"kind": "openai_compatible", "name": "x", "api_key": "k", "base_url": "https://localhost./v1"}),
            "base_url",
        ),
        (
            json!({"kind": "openai_compatible", "name": "x", "api_key": "k", "base_url": "https://2130706433/v1"}),
            "base_url",
        ),
        (
            json!({"kind": "openai_compatible", "name": "x", "api_key": "k", "base_url": "https://[::ffff:10.0.0.1]/v1"}),
            "base_url",
        ),
        (
            json!({"kind": "openai", "name": "x", "api_key": "k", "priority": 5_000_000}),
            "priority",
        ),
        (
            json!({"kind": "openai", "name": "x", "api_key": "k", "models": [""]}),
            "models",
        ),
    ];
    for (body, field) in cases {
        let (status, resp) = app.post(&base, &acc.token, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {resp}");
        assert_eq!(error_code(&resp), "validation_error");
        assert!(
            resp["error"]["fields"][field].is_string(),
            "{field} not named for {body}: {resp}"
        );
    }
    let (status, body) = app
        .post(&base, &acc.token, json!({"kind": "openai_compatible", "name": "groq", "api_key": "k", "base_url": "https://api.groq.example/openai/v1/"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["base_url"], "https://api.groq.example/openai/v1");
    let (_, list) = app.get(&base, &acc.token).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "refused entries must not be stored"
    );
}

#[tokio::test]
async fn operator_allowed_private_ranges() {
    let app = TestApp::spawn_with("127.0.0.0/8,169.254.0.0/16").await;
    let acc = app.signup("o@example.com").await;
    let base = format!("/workspaces/{}/providers", acc.workspace);
    let (status, body) = app
        .post(&base, &acc.token, json!({"kind": "openai_compatible", "name": "vllm", "api_key": "k", "base_url": "http://127.0.0.1:8001/v1"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = app
        .post(&base, &acc.token, json!({"kind": "openai_compatible", "name": "meta", "api_key": "k", "base_url": "http://169.254.169.254/"}))
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "metadata range is never allowed"
    );
    let (status, _) = app
        .post(&base, &acc.token, json!({"kind": "openai_compatible", "name": "lan", "api_key": "k", "base_url": "http://192.168.1.9/v1"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "only the listed ranges");
}

#[tokio::test]
async fn writes_notify_gateways() {
    let app = TestApp::spawn().await;
    let acc = app.signup("n@example.com").await;
    let (client, mut conn) = tokio_postgres::connect(&app.db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        use futures::StreamExt;
        while let Some(Ok(msg)) = stream.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = msg {
                let _ = tx.send(n.payload().to_string());
            }
        }
    });
    client
        .batch_execute("LISTEN perpetuo_invalidate")
        .await
        .unwrap();

    let (_, p) = app
        .post(
            &format!("/workspaces/{}/providers", acc.workspace),
            &acc.token,
            json!({"kind": "openai", "name": "n", "api_key": "k"}),
        )
        .await;
    let msg: serde_json::Value = serde_json::from_str(&recv(&mut rx).await).unwrap();
    assert_eq!(msg["table"], "provider_keys");
    assert_eq!(msg["workspace_id"], acc.workspace.as_str());
    app.put(
        &format!(
            "/workspaces/{}/providers/{}",
            acc.workspace,
            p["id"].as_str().unwrap()
        ),
        &acc.token,
        json!({"priority": 3}),
    )
    .await;
    let msg: serde_json::Value = serde_json::from_str(&recv(&mut rx).await).unwrap();
    assert_eq!(msg["table"], "provider_keys");

    app.post(
        &format!(
            "/workspaces/{}/api-keys/{}/revoke",
            acc.workspace, acc.key_id
        ),
        &acc.token,
        json!({}),
    )
    .await;
    let msg: serde_json::Value = serde_json::from_str(&recv(&mut rx).await).unwrap();
    assert_eq!(msg["table"], "api_keys");
    let expected = perpetuo_core::apikey::KeyHash::of(&acc.key).to_hex();
    assert_eq!(msg["key_hash"], expected.as_str());
}

async fn recv(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
        .await
        .expect("notification within 5 s")
        .expect("listener alive")
}
