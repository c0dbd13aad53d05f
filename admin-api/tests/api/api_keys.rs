//! API keys: shown once, stored as a hash, revoked, deleted.

use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::helpers::TestApp;

#[tokio::test]
async fn create_list_revoke_delete() {
    let app = TestApp::spawn().await;
    let acc = app.signup("k@example.com").await;
    let base = format!("/workspaces/{}/api-keys", acc.workspace);
    let (status, created) = app
        .post(
            &base,
            &acc.token,
            json!({"name": "ci", "expires_at": "2999-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with(created["prefix"].as_str().unwrap()));
    assert_eq!(created["expires_at"], "2999-01-01T00:00:00Z");
    let id = created["id"].as_str().unwrap().to_string();

    let (_, list) = app.get(&base, &acc.token).await;
    let rows = list["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["name"], "ci", "newest first");
    assert!(rows.iter().all(|r| r.get("key").is_none()));
    assert!(!list.to_string().contains(&key));

    let db = app.client().await;
    let stored: Vec<u8> = db
        .query_one(
            "SELECT key_hash FROM api_keys WHERE id = $1",
            &[&uuid::Uuid::parse_str(&id).unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, Sha256::digest(key.as_bytes()).to_vec());

    let (status, revoked) = app
        .post(&format!("{base}/{id}/revoke"), &acc.token, json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let at = revoked["revoked_at"].as_str().unwrap().to_string();
    let (_, again) = app
        .post(&format!("{base}/{id}/revoke"), &acc.token, json!({}))
        .await;
    assert_eq!(again["revoked_at"], at.as_str(), "revocation time is kept");

    let (status, _) = app.delete(&format!("{base}/{id}"), &acc.token).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.delete(&format!("{base}/{id}"), &acc.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = app.get(&base, &acc.token).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn key_validation() {
    let app = TestApp::spawn().await;
    let acc = app.signup("kv@example.com").await;
    let base = format!("/workspaces/{}/api-keys", acc.workspace);
    for (body, field) in [
        (json!({}), "name"),
        (json!({"name": ""}), "name"),
        (
            json!({"name": "x", "expires_at": "yesterday"}),
            "expires_at",
        ),
        (
            json!({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
    ] {
        let (status, resp) = app.post(&base, &acc.token, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(resp["error"]["fields"][field].is_string(), "{resp}");
    }
}
