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

/// Pages of keys: newest first, every key once whatever the page size (keys of one
/// instant ordered by id), the same order as the whole list; the whole list unchanged
/// without `limit` or `cursor`.
#[tokio::test]
async fn keys_page_by_cursor_newest_first() {
    let app = TestApp::spawn().await;
    let acc = app.signup("kp@example.com").await;
    let other = app.signup("kp2@example.com").await;
    let base = format!("/workspaces/{}/api-keys", acc.workspace);
    for i in 0..6 {
        let (status, _) = app
            .post(&base, &acc.token, json!({"name": format!("k{i}")}))
            .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    // Three keys of one instant: a page boundary falls between them.
    let db = app.client().await;
    db.execute(
        "UPDATE api_keys SET created_at = '2026-01-01T00:00:00Z'
         WHERE name IN ('k1', 'k2', 'k3') AND workspace_id = $1",
        &[&uuid::Uuid::parse_str(&acc.workspace).unwrap()],
    )
    .await
    .unwrap();
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (status, all) = app.get(&base, &acc.token).await;
    assert_eq!(status, StatusCode::OK);
    assert!(all["next_cursor"].is_null());
    let all = ids(&all);
    assert_eq!(
        all.len(),
        7,
        "six and the signup's key, none of the other workspace's"
    );
    for limit in [1, 2, 3, 7, 500] {
        let mut seen = Vec::new();
        let mut url = format!("{base}?limit={limit}");
        for _ in 0..10 {
            let (status, page) = app.get(&url, &acc.token).await;
            assert_eq!(status, StatusCode::OK, "{url}: {page}");
            assert!(ids(&page).len() <= limit);
            seen.extend(ids(&page));
            match page["next_cursor"].as_str() {
                Some(c) => url = format!("{base}?limit={limit}&cursor={c}"),
                None => break,
            }
        }
        assert_eq!(seen, all, "limit {limit}");
    }
    // A cursor alone pages by 50.
    let (_, first) = app.get(&format!("{base}?limit=2"), &acc.token).await;
    let c = first["next_cursor"].as_str().unwrap();
    let (_, rest) = app.get(&format!("{base}?cursor={c}"), &acc.token).await;
    assert_eq!(ids(&rest), all[2..]);
    assert!(rest["next_cursor"].is_null());
    // The other workspace's list is its own.
    let (_, theirs) = app
        .get(
            &format!("/workspaces/{}/api-keys?limit=50", other.workspace),
            &other.token,
        )
        .await;
    assert_eq!(ids(&theirs).len(), 1);

    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("cursor=abc", "cursor"),
        // A logs cursor is not a key cursor.
        ("cursor=bwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "cursor"),
    ] {
        let (status, body) = app.get(&format!("{base}?{q}"), &acc.token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}");
        assert!(body["error"]["fields"][field].is_string(), "{q}: {body}");
    }
}

/// A key's cache mode: set on create, changed by `PUT`, read by gateways with the key.
#[tokio::test]
async fn a_key_carries_its_own_cache_mode() {
    use perpetuo_core::db::api_keys::KeyCacheMode;
    let app = TestApp::spawn().await;
    let acc = app.signup("ck@example.com").await;
    let base = format!("/workspaces/{}/api-keys", acc.workspace);
    let (status, plain) = app.post(&base, &acc.token, json!({"name": "plain"})).await;
    assert_eq!(status, StatusCode::CREATED, "{plain}");
    assert_eq!(plain["cache_mode"], "inherit");
    let (status, created) = app
        .post(
            &base,
            &acc.token,
            json!({"name": "cached", "cache_mode": "opt_in"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["cache_mode"], "opt_in");
    let url = format!("{base}/{}", created["id"].as_str().unwrap());
    let (status, updated) = app
        .put(&url, &acc.token, json!({"cache_mode": "off"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["cache_mode"], "off");
    let found = perpetuo_core::db::api_keys::find_by_hash(
        &app.client().await,
        &perpetuo_core::apikey::KeyHash::of(created["key"].as_str().unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(found.cache_mode, KeyCacheMode::Off);

    for bad in [
        json!({"name": "x", "cache_mode": "sometimes"}),
        json!({"name": "x", "cache_mode": 1}),
    ] {
        let (status, body) = app.post(&base, &acc.token, bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} → {body}");
    }
    let (_, body) = app
        .post(
            &base,
            &acc.token,
            json!({"name": "x", "cache_mode": "sometimes"}),
        )
        .await;
    assert!(body["error"]["fields"]["cache_mode"].is_string(), "{body}");
}
