//! Key pools: an entry's provider keys made whole (`api_key` or `keys`) or one at a time,
//! sealed at rest and bound to their entry, each key's traffic and health, entry quotas,
//! log rows naming the key, and a database of the last release upgraded to pools.

use perpetuo_core::crypto::{KeyBinding, MasterKey, AAD_BOUND, AAD_ENTRY_ID};
use perpetuo_core::db;
use perpetuo_core::db::workspaces::Role;
use perpetuo_core::provider::ProviderKind;
use perpetuo_core::testing::TestDb;
use reqwest::StatusCode;
use serde_json::{json, Value};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::helpers::{error_code, Account, TestApp};

fn providers(acc: &Account) -> String {
    format!("/workspaces/{}/providers", acc.workspace)
}

fn id(v: &Value) -> Uuid {
    Uuid::parse_str(v["id"].as_str().unwrap()).unwrap()
}

/// Labels, weights and switches of an answer's keys, in order.
fn pool(p: &Value) -> Vec<(String, i64, bool)> {
    p["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no keys in {p}"))
        .iter()
        .map(|k| {
            (
                k["label"].as_str().unwrap().to_string(),
                k["weight"].as_i64().unwrap(),
                k["enabled"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn pool_of(items: &[(&str, i64, bool)]) -> Vec<(String, i64, bool)> {
    items
        .iter()
        .map(|(l, w, e)| (l.to_string(), *w, *e))
        .collect()
}

/// Every key of an entry's pool as the gateway would open it, by label.
async fn opened(app: &TestApp, ws: &str, entry: Uuid) -> Vec<(String, String)> {
    let client = app.client().await;
    let ws = Uuid::parse_str(ws).unwrap();
    let row = db::providers::get(&client, ws, entry)
        .await
        .unwrap()
        .unwrap();
    db::entry_keys::list_for_entry(&client, ws, entry)
        .await
        .unwrap()
        .into_iter()
        .map(|k| {
            let key = app.master_key.open(&k.sealed, &row.binding()).unwrap();
            (k.label, key.expose().clone())
        })
        .collect()
}

/// The field errors of a 400 answer.
fn fields(status: StatusCode, body: &Value) -> Vec<String> {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let mut out: Vec<String> = body["error"]["fields"]
        .as_object()
        .unwrap_or_else(|| panic!("no fields in {body}"))
        .keys()
        .cloned()
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_pool_is_made_with_api_key_or_keys_and_replaced_whole() {
    let app = TestApp::spawn().await;
    let acc = app.signup("pools@example.com").await;
    let base = providers(&acc);

    // `keys`: labels given or `key-<position>`, weights, switches.
    let (status, p) = app
        .post(
            &base,
            &acc.token,
            json!({"kind": "anthropic", "name": "claude", "keys": [
                {"key": "sk-pool-first-1111", "label": "primary", "weight": 3},
                {"key": " sk-pool-second-2222 "},
                {"key": "sk-pool-third-3333", "weight": 0, "enabled": false},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    assert_eq!(
        pool(&p),
        pool_of(&[
            ("primary", 3, true),
            ("key-2", 1, true),
            ("key-3", 0, false)
        ])
    );
    assert_eq!(
        (p["has_key"].clone(), p["key_last4"].clone()),
        (json!(true), json!("1111"))
    );
    let last4: Vec<&str> = p["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key_last4"].as_str().unwrap())
        .collect();
    assert_eq!(last4, ["1111", "2222", "3333"]);
    assert!(!p.to_string().contains("sk-pool"), "{p}");
    let claude = id(&p);
    assert_eq!(
        opened(&app, &acc.workspace, claude).await,
        [
            ("primary", "sk-pool-first-1111"),
            ("key-2", "sk-pool-second-2222"),
            ("key-3", "sk-pool-third-3333"),
        ]
        .map(|(l, k)| (l.to_string(), k.to_string()))
    );
    // A default label steps over the labels given.
    let (status, p) = app
        .post(
            &base,
            &acc.token,
            json!({"kind": "openai", "name": "oai", "keys": [
                {"key": "sk-a"}, {"key": "sk-b", "label": "key-2"}, {"key": "sk-c"},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    assert_eq!(
        pool(&p),
        pool_of(&[("key-1", 1, true), ("key-2", 1, true), ("key-3", 1, true)])
    );

    // `api_key` is a pool of one, labelled `default`.
    let (status, p) = app
        .post(
            &base,
            &acc.token,
            json!({"kind": "openai", "name": "single", "api_key": "sk-single-4444"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    assert_eq!(pool(&p), pool_of(&[("default", 1, true)]));
    let single = id(&p);

    // The listing shows every pool.
    let (_, list) = app.get(&base, &acc.token).await;
    let pools: Vec<usize> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["keys"].as_array().unwrap().len())
        .collect();
    assert_eq!(pools, [3, 3, 1]);

    // `keys` on update replaces the whole pool; `api_key` makes it one key again.
    let url = format!("{base}/{claude}");
    let (status, p) = app
        .put(
            &url,
            &acc.token,
            json!({"keys": [{"key": "sk-pool-new-5555", "label": "fresh"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(pool(&p), pool_of(&[("fresh", 1, true)]));
    assert_eq!(
        opened(&app, &acc.workspace, claude).await,
        [("fresh".to_string(), "sk-pool-new-5555".to_string())]
    );
    let (status, p) = app
        .put(
            &format!("{base}/{single}"),
            &acc.token,
            json!({"api_key": "sk-single-6666"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(
        (pool(&p), p["key_last4"].clone()),
        (pool_of(&[("default", 1, true)]), json!("6666"))
    );
    // Other fields leave the pool as it is.
    let before = opened(&app, &acc.workspace, claude).await;
    let (status, p) = app
        .put(&url, &acc.token, json!({"priority": 4, "name": "claude-2"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(pool(&p), pool_of(&[("fresh", 1, true)]));
    assert_eq!(opened(&app, &acc.workspace, claude).await, before);

    // Moving the entry takes the pool again, then seals it for the new place.
    let (status, resp) = app
        .put(
            &url,
            &acc.token,
            json!({"base_url": "https://claude.example/v1"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
    assert_eq!(error_code(&resp), "api_key_required");
    let (status, p) = app
        .put(
            &url,
            &acc.token,
            json!({"base_url": "https://claude.example/v1",
                   "keys": [{"key": "sk-moved-1"}, {"key": "sk-moved-2", "weight": 5}]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(pool(&p), pool_of(&[("key-1", 1, true), ("key-2", 5, true)]));
    assert_eq!(
        opened(&app, &acc.workspace, claude).await,
        [("key-1", "sk-moved-1"), ("key-2", "sk-moved-2")]
            .map(|(l, k)| (l.to_string(), k.to_string()))
    );

    // Only openai_compatible may have no keys, however the pool is emptied.
    for body in [json!({"keys": []}), json!({"api_key": null})] {
        let (status, resp) = app.put(&url, &acc.token, body.clone()).await;
        assert!(
            fields(status, &resp).contains(&"api_key".to_string()),
            "{body} → {resp}"
        );
    }
    let (status, p) = app
        .post(
            &base,
            &acc.token,
            json!({"kind": "openai_compatible", "name": "local", "keys": [],
                   "base_url": "https://local.example/v1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    assert_eq!(
        (p["has_key"].clone(), p["keys"].clone()),
        (json!(false), json!([]))
    );
}

#[tokio::test]
async fn pool_bodies_are_checked_field_by_field() {
    let app = TestApp::spawn().await;
    let acc = app.signup("pool-checks@example.com").await;
    let base = providers(&acc);
    let entry = |extra: Value| {
        let mut body = json!({"kind": "openai", "name": "x"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let many: Vec<Value> = (0..33).map(|i| json!({"key": format!("sk-{i}")})).collect();
    let cases = [
        (
            json!({"api_key": "sk-1", "keys": [{"key": "sk-2"}]}),
            vec!["api_key", "keys"],
        ),
        (json!({"keys": [{"label": "no key"}]}), vec!["keys.0.key"]),
        (json!({"keys": [{"key": " "}]}), vec!["keys.0.key"]),
        (json!({"keys": [{"key": "sk a"}]}), vec!["keys.0.key"]),
        (
            json!({"keys": [{"key": "sk-1"}, {"key": "sk-2\r\nx: y"}]}),
            vec!["keys.1.key"],
        ),
        (
            json!({"keys": [{"key": "k".repeat(4097)}]}),
            vec!["keys.0.key"],
        ),
        (
            json!({"keys": [{"key": "sk-1", "label": " "}]}),
            vec!["keys.0.label"],
        ),
        (
            json!({"keys": [{"key": "sk-1", "label": "bad\u{202e}"}]}),
            vec!["keys.0.label"],
        ),
        (
            json!({"keys": [{"key": "sk-1", "label": "l".repeat(101)}]}),
            vec!["keys.0.label"],
        ),
        (
            json!({"keys": [{"key": "sk-1", "label": "twin"}, {"key": "sk-2", "label": " twin"}]}),
            vec!["keys.1.label"],
        ),
        (
            json!({"keys": [{"key": "sk-1", "weight": 1001}]}),
            vec!["keys.0.weight"],
        ),
        (
            json!({"keys": [{"key": "sk-1", "weight": -1}]}),
            vec!["keys.0.weight"],
        ),
        (json!({"keys": many}), vec!["keys"]),
        (json!({"keys": []}), vec!["api_key"]),
    ];
    for (extra, named) in cases {
        let body = entry(extra);
        let (status, resp) = app.post(&base, &acc.token, body.clone()).await;
        assert_eq!(fields(status, &resp), named, "{body} → {resp}");
        assert_eq!(error_code(&resp), "validation_error");
    }
    // A pool of exactly 32 keys, labels of 100 characters.
    let mut keys: Vec<Value> = (0..31).map(|i| json!({"key": format!("sk-{i}")})).collect();
    keys.push(json!({"key": "sk-last", "label": "l".repeat(100)}));
    let (status, p) = app
        .post(&base, &acc.token, entry(json!({"keys": keys})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    assert_eq!(p["keys"].as_array().unwrap().len(), 32);
    // A field no key has is refused by name.
    let (status, resp) = app
        .post(
            &base,
            &acc.token,
            json!({"kind": "openai", "name": "y", "keys": [{"key": "sk-1", "wieght": 2}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
    assert_eq!(error_code(&resp), "unknown_field", "{resp}");
    let (_, list) = app.get(&base, &acc.token).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "refused bodies store nothing"
    );
}

/// Adds a member of `role` to `acc`'s workspace.
async fn with_role(app: &TestApp, acc: &Account, email: &str, role: Role) -> Account {
    let other = app.signup(email).await;
    let client = app.client().await;
    db::workspaces::add_member(
        &client,
        acc.workspace.parse().unwrap(),
        other.user_id.parse().unwrap(),
        role,
    )
    .await
    .unwrap();
    other
}

#[tokio::test]
async fn keys_are_added_changed_and_removed_one_at_a_time() {
    let app = TestApp::spawn().await;
    let acc = app.signup("one-key@example.com").await;
    let base = providers(&acc);
    let (_, p) = app
        .post(
            &base,
            &acc.token,
            json!({"kind": "anthropic", "name": "claude", "api_key": "sk-ant-first-1111"}),
        )
        .await;
    let entry = id(&p);
    let first = p["keys"][0]["id"].as_str().unwrap().to_string();
    let keys = format!("{base}/{entry}/keys");
    let sealed_before = app
        .client()
        .await
        .query_one(
            "SELECT sealed_key FROM provider_entry_keys WHERE id = $1",
            &[&Uuid::parse_str(&first).unwrap()],
        )
        .await
        .unwrap()
        .get::<_, Vec<u8>>(0);

    // Add: the other keys are not sent again, nor touched.
    let (status, k) = app
        .post(
            &keys,
            &acc.token,
            json!({"key": "sk-ant-backup-2222", "label": "backup", "weight": 2}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{k}");
    assert_eq!(
        (
            k["label"].clone(),
            k["weight"].clone(),
            k["enabled"].clone(),
            k["key_last4"].clone()
        ),
        (json!("backup"), json!(2), json!(true), json!("2222"))
    );
    assert!(k.get("status").is_none(), "{k}");
    assert!(!k.to_string().contains("sk-ant"), "{k}");
    let backup = k["id"].as_str().unwrap().to_string();
    assert_eq!(
        opened(&app, &acc.workspace, entry).await,
        [
            ("default", "sk-ant-first-1111"),
            ("backup", "sk-ant-backup-2222")
        ]
        .map(|(l, k)| (l.to_string(), k.to_string()))
    );
    let sealed_after = app
        .client()
        .await
        .query_one(
            "SELECT sealed_key FROM provider_entry_keys WHERE id = $1",
            &[&Uuid::parse_str(&first).unwrap()],
        )
        .await
        .unwrap()
        .get::<_, Vec<u8>>(0);
    assert_eq!(sealed_before, sealed_after);

    // Labels are unique in the entry; bodies are checked.
    for label in ["backup", "default", " backup "] {
        let (status, resp) = app
            .post(&keys, &acc.token, json!({"key": "sk-x", "label": label}))
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{label}: {resp}");
        assert_eq!(error_code(&resp), "label_taken");
    }
    for (body, named) in [
        (json!({"key": "sk-x"}), vec!["label"]),
        (json!({"label": "x"}), vec!["key"]),
        (json!({"key": "sk x", "label": "x"}), vec!["key"]),
        (
            json!({"key": "sk-x", "label": "x", "weight": 1001}),
            vec!["weight"],
        ),
        (json!({"key": "sk-x", "label": "x\ny"}), vec!["label"]),
    ] {
        let (status, resp) = app.post(&keys, &acc.token, body.clone()).await;
        assert_eq!(fields(status, &resp), named, "{body} → {resp}");
    }

    // Disable, re-weight, rename: one key changes, the other stays.
    let url = format!("{keys}/{backup}");
    let (status, k) = app.patch(&url, &acc.token, json!({"enabled": false})).await;
    assert_eq!(
        (status, k["enabled"].clone()),
        (StatusCode::OK, json!(false)),
        "{k}"
    );
    let (status, k) = app.patch(&url, &acc.token, json!({"weight": 0})).await;
    assert_eq!(
        (status, k["weight"].clone(), k["enabled"].clone()),
        (StatusCode::OK, json!(0), json!(false)),
        "{k}"
    );
    let (status, k) = app
        .patch(&url, &acc.token, json!({"label": "standby"}))
        .await;
    assert_eq!(
        (status, k["label"].clone()),
        (StatusCode::OK, json!("standby")),
        "{k}"
    );
    let (status, resp) = app
        .patch(&url, &acc.token, json!({"label": "default"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{resp}");
    assert_eq!(error_code(&resp), "label_taken");
    let (status, resp) = app.patch(&url, &acc.token, json!({"weight": 1001})).await;
    assert_eq!(fields(status, &resp), ["weight"]);
    let (_, list) = app.get(&base, &acc.token).await;
    assert_eq!(
        pool(&list["data"][0]),
        pool_of(&[("default", 1, true), ("standby", 0, false)])
    );

    // Another entry's key, or no key at all, is not found through this entry.
    let (_, other) = app
        .post(
            &base,
            &acc.token,
            json!({"kind": "openai", "name": "oai", "api_key": "sk-o-3333"}),
        )
        .await;
    let foreign = other["keys"][0]["id"].as_str().unwrap();
    for target in [
        foreign.to_string(),
        Uuid::now_v7().to_string(),
        "nope".into(),
    ] {
        let (status, _) = app
            .patch(
                &format!("{keys}/{target}"),
                &acc.token,
                json!({"weight": 2}),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{target}");
        let (status, _) = app.delete(&format!("{keys}/{target}"), &acc.token).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{target}");
    }
    let (status, _) = app
        .post(
            &format!("{base}/{}/keys", Uuid::now_v7()),
            &acc.token,
            json!({"key": "sk-x", "label": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // At most 32 keys.
    for i in 3..=32 {
        let (status, resp) = app
            .post(
                &keys,
                &acc.token,
                json!({"key": format!("sk-fill-{i}"), "label": format!("fill-{i}")}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "key {i}: {resp}");
    }
    let (status, resp) = app
        .post(
            &keys,
            &acc.token,
            json!({"key": "sk-33", "label": "one-too-many"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
    assert_eq!(error_code(&resp), "too_many_keys");
    assert!(
        resp["error"]["fields"]["key"]
            .as_str()
            .unwrap()
            .contains("32"),
        "{resp}"
    );

    // Remove: the others stay; the last key of an anthropic entry stays too.
    let (status, _) = app.delete(&url, &acc.token).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.delete(&url, &acc.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, listed) = app.get(&keys, &acc.token).await;
    let ids: Vec<String> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 31);
    assert_eq!(ids[0], first);
    for key in &ids[1..] {
        let (status, _) = app.delete(&format!("{keys}/{key}"), &acc.token).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }
    let (status, resp) = app.delete(&format!("{keys}/{first}"), &acc.token).await;
    assert_eq!(status, StatusCode::CONFLICT, "{resp}");
    assert_eq!(error_code(&resp), "last_key");
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("anthropic"),
        "{resp}"
    );
    assert_eq!(
        opened(&app, &acc.workspace, entry).await,
        [("default".to_string(), "sk-ant-first-1111".to_string())]
    );

    // An openai_compatible entry may lose its last key.
    let (_, local) = app
        .post(
            &base,
            &acc.token,
            json!({"kind": "openai_compatible", "name": "local", "api_key": "sk-local",
                   "base_url": "https://local.example/v1"}),
        )
        .await;
    let (status, _) = app
        .delete(
            &format!(
                "{base}/{}/keys/{}",
                local["id"].as_str().unwrap(),
                local["keys"][0]["id"].as_str().unwrap()
            ),
            &acc.token,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, list) = app.get(&base, &acc.token).await;
    let local = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "local")
        .unwrap();
    assert_eq!(
        (local["has_key"].clone(), local["key_last4"].clone()),
        (json!(false), json!(""))
    );

    // Audited, without the key.
    let (_, audit) = app
        .get(
            &format!(
                "/workspaces/{}/audit?action=provider_key.&limit=200",
                acc.workspace
            ),
            &acc.token,
        )
        .await;
    let rows = audit["data"].as_array().unwrap();
    let count = |action: &str| rows.iter().filter(|r| r["action"] == action).count();
    assert_eq!(
        (
            count("provider_key.created"),
            count("provider_key.updated"),
            count("provider_key.deleted")
        ),
        (31, 3, 32)
    );
    let created = rows
        .iter()
        .find(|r| r["action"] == "provider_key.created" && r["after"]["label"] == "backup")
        .unwrap();
    assert_eq!(created["target_type"], "provider_key");
    assert_eq!(created["after"]["entry_id"], entry.to_string());
    assert!(!audit.to_string().contains("sk-ant"), "{audit}");
}

#[tokio::test]
async fn admins_write_keys_members_read_them() {
    let app = TestApp::spawn().await;
    let acc = app.signup("key-roles@example.com").await;
    let member = with_role(&app, &acc, "key-member@example.com", Role::Member).await;
    let viewer = with_role(&app, &acc, "key-viewer@example.com", Role::Viewer).await;
    let admin = with_role(&app, &acc, "key-admin@example.com", Role::Admin).await;
    let (_, p) = app
        .post(
            &providers(&acc),
            &acc.token,
            json!({"kind": "openai", "name": "oai", "api_key": "sk-roles"}),
        )
        .await;
    let keys = format!("{}/{}/keys", providers(&acc), id(&p));
    let key = format!("{keys}/{}", p["keys"][0]["id"].as_str().unwrap());

    let (status, body) = app.get(&keys, &member.token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    let (status, _) = app.get(&keys, &viewer.token).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for token in [&member.token, &viewer.token] {
        let (status, body) = app
            .post(&keys, token, json!({"key": "sk-y", "label": "y"}))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(error_code(&body), "insufficient_role");
        let (status, _) = app.patch(&key, token, json!({"weight": 2})).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = app.delete(&key, token).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (status, body) = app
        .post(&keys, &admin.token, json!({"key": "sk-y", "label": "y"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = app.patch(&key, &admin.token, json!({"weight": 2})).await;
    assert_eq!(status, StatusCode::OK);
}

/// Adding a key needs a verified email, as adding an entry does.
#[tokio::test]
async fn adding_a_key_needs_a_verified_email() {
    let app = TestApp::spawn_configured(|c| {
        c.teams.email_verification = perpetuo_admin::teams::Verification::Required;
    })
    .await;
    let acc = app.signup("unverified-keys@example.com").await;
    // The entry is made directly: the account may not make one through the API yet.
    let ws = Uuid::parse_str(&acc.workspace).unwrap();
    let entry = db::providers::new_id();
    let client = app.client().await;
    db::providers::insert(
        &client,
        &db::providers::NewProvider {
            id: entry,
            workspace_id: ws,
            kind: ProviderKind::Openai,
            name: "oai".into(),
            base_url: None,
            priority: 1,
            weight: 1,
            enabled: true,
            models: vec![],
            model_map: Default::default(),
            quota_rpm: None,
            quota_tpm: None,
        },
    )
    .await
    .unwrap();
    let (status, body) = app
        .post(
            &format!("{}/{entry}/keys", providers(&acc)),
            &acc.token,
            json!({"key": "sk-z", "label": "z"}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(error_code(&body), "email_unverified");
}

#[tokio::test]
async fn pool_keys_are_sealed_at_rest_and_bound_to_their_entry() {
    let app = TestApp::spawn().await;
    let acc = app.signup("rest@example.com").await;
    let base = providers(&acc);
    let secrets = [
        "sk-rest-alpha-8c1f2e",
        "sk-rest-beta-77d0aa",
        "sk-rest-gamma-31b9c4",
    ];
    let same = |name: &str, keys: Value| {
        json!({"kind": "openai_compatible", "name": name, "base_url": "https://same.example/v1",
               "keys": keys})
    };
    let (_, a) = app
        .post(
            &base,
            &acc.token,
            same(
                "a",
                json!([{"key": secrets[0]}, {"key": secrets[1], "label": "b"}]),
            ),
        )
        .await;
    let (_, b) = app
        .post(&base, &acc.token, same("b", json!([{"key": secrets[2]}])))
        .await;
    let (a, b) = (id(&a), id(&b));
    app.post(
        &format!("{base}/{a}/keys"),
        &acc.token,
        json!({"key": "sk-rest-delta-5e6f70", "label": "added"}),
    )
    .await;

    // No column of any table holds a key in clear; the sealed bytes hold none either.
    let client = app.client().await;
    let tables: Vec<String> = client
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut everything = String::new();
    for table in tables {
        for row in client
            .query(&format!("SELECT to_jsonb(t)::text FROM {table} t"), &[])
            .await
            .unwrap()
        {
            everything.push_str(&row.get::<_, String>(0));
        }
    }
    let sealed = db::entry_keys::raw_sealed_columns(&client).await.unwrap();
    assert_eq!(sealed.len(), 4);
    for secret in secrets.iter().chain(&["sk-rest-delta-5e6f70"]) {
        assert!(!everything.contains(secret), "{secret} in clear");
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(!everything.contains(&hex), "{secret} in hex");
        let tail = &secret.as_bytes()[secret.len() - 8..];
        for bytes in &sealed {
            assert!(
                !bytes.windows(tail.len()).any(|w| w == tail),
                "{secret} in a seal"
            );
        }
    }
    let aad: Vec<i16> = client
        .query("SELECT aad_version FROM provider_entry_keys", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(aad, [AAD_BOUND; 4]);

    // A key moved to another entry (same workspace, kind and base URL) does not open
    // there; a copy of its sealed bytes in another key of that entry neither.
    client
        .execute(
            "UPDATE provider_entry_keys SET entry_id = $2 WHERE entry_id = $1 AND label = 'b'",
            &[&a, &b],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE provider_entry_keys SET (sealed_key, key_nonce) =
                 (SELECT sealed_key, key_nonce FROM provider_entry_keys
                  WHERE entry_id = $1 AND label = 'added')
             WHERE entry_id = $2 AND label = 'key-1'",
            &[&a, &b],
        )
        .await
        .unwrap();
    let ws = Uuid::parse_str(&acc.workspace).unwrap();
    let row = db::providers::get(&client, ws, b).await.unwrap().unwrap();
    for k in db::entry_keys::list_for_entry(&client, ws, b)
        .await
        .unwrap()
    {
        assert!(
            app.master_key.open(&k.sealed, &row.binding()).is_err(),
            "{} opens in another entry",
            k.label
        );
    }
    // Where it was sealed, it still opens.
    let home = KeyBinding {
        entry_id: a,
        ..row.binding()
    };
    let moved = db::entry_keys::list_for_entry(&client, ws, b)
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.label == "b")
        .unwrap();
    assert_eq!(
        app.master_key.open(&moved.sealed, &home).unwrap().expose(),
        secrets[1]
    );
}

#[tokio::test]
async fn an_entry_quota_is_checked_set_and_cleared() {
    let app = TestApp::spawn().await;
    let acc = app.signup("quota@example.com").await;
    let base = providers(&acc);
    let (status, p) = app
        .post(
            &base,
            &acc.token,
            json!({"kind": "openai", "name": "azure", "api_key": "sk-q",
                   "quota": {"rpm": 600, "tpm": 1_000_000_000_000_i64}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    assert_eq!(
        p["quota"],
        json!({"rpm": 600, "tpm": 1_000_000_000_000_i64})
    );
    let url = format!("{base}/{}", id(&p));
    let (_, p) = app
        .put(&url, &acc.token, json!({"quota": {"rpm": null}}))
        .await;
    assert_eq!(
        p["quota"],
        json!({"rpm": null, "tpm": 1_000_000_000_000_i64}),
        "tpm kept"
    );
    let (_, p) = app.put(&url, &acc.token, json!({"name": "azure-2"})).await;
    assert_eq!(
        p["quota"]["tpm"], 1_000_000_000_000_i64,
        "kept when left out"
    );
    let (_, p) = app
        .put(&url, &acc.token, json!({"quota": {"rpm": 1_000_000_000}}))
        .await;
    assert_eq!(
        p["quota"],
        json!({"rpm": 1_000_000_000, "tpm": 1_000_000_000_000_i64})
    );
    let (_, p) = app.put(&url, &acc.token, json!({"quota": null})).await;
    assert_eq!(p["quota"], json!({"rpm": null, "tpm": null}));
    let (_, list) = app.get(&base, &acc.token).await;
    assert_eq!(list["data"][0]["quota"], json!({"rpm": null, "tpm": null}));

    for (quota, field) in [
        (json!({"rpm": 0}), "quota.rpm"),
        (json!({"rpm": -5}), "quota.rpm"),
        (json!({"rpm": 1_000_000_001}), "quota.rpm"),
        (json!({"rpm": 5_000_000_000_i64}), "quota.rpm"),
        (json!({"tpm": 0}), "quota.tpm"),
        (json!({"tpm": 1_000_000_000_001_i64}), "quota.tpm"),
    ] {
        let (status, resp) = app.put(&url, &acc.token, json!({"quota": quota})).await;
        assert_eq!(fields(status, &resp), [field], "{quota} → {resp}");
    }
    for quota in [json!({"rpm": 1.5}), json!({"rpm": "60"}), json!(60)] {
        let (status, resp) = app.put(&url, &acc.token, json!({"quota": quota})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{quota} → {resp}");
        assert_eq!(error_code(&resp), "invalid_body", "{resp}");
    }
    let (status, resp) = app
        .put(&url, &acc.token, json!({"quota": {"rpd": 5}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
    assert_eq!(error_code(&resp), "unknown_field");
    let (_, list) = app.get(&base, &acc.token).await;
    assert_eq!(list["data"][0]["quota"], json!({"rpm": null, "tpm": null}));
}

/// A log row of `entry` served by `key` (or by no key) `ago` in the past.
async fn served(app: &TestApp, ws: Uuid, entry: Uuid, key: Option<Uuid>, ago: Duration) {
    let mut row = crate::logs::record(
        ws,
        OffsetDateTime::now_utc() - ago,
        Some(entry),
        "gpt-4o",
        200,
    );
    row.provider_id = Some(entry);
    let mut client = app.client().await;
    db::logs::insert_batch(&mut client, &[row.clone()])
        .await
        .unwrap();
    client
        .execute(
            "UPDATE request_logs SET provider_key_id = $2, provider_key_label = 'k' WHERE id = $1",
            &[&row.id, &key],
        )
        .await
        .unwrap();
}

/// A gateway's report of `key` of `entry`, `age` old.
#[allow(clippy::too_many_arguments)]
async fn reported(
    app: &TestApp,
    ws: Uuid,
    entry: Uuid,
    key: Uuid,
    breaker: &str,
    remaining: (Option<i64>, Option<i64>),
    reset_at: Option<OffsetDateTime>,
    age: Duration,
) {
    app.client()
        .await
        .execute(
            "INSERT INTO gateway_key_status (gateway_id, key_id, entry_id, workspace_id, breaker,
                 remaining_requests, remaining_tokens, reset_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() - make_interval(secs => $9))",
            &[
                &Uuid::now_v7(),
                &key,
                &entry,
                &ws,
                &breaker,
                &remaining.0,
                &remaining.1,
                &reset_at,
                &age.as_seconds_f64(),
            ],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_keys_status_reads_logs_and_fresh_gateway_reports() {
    let app = TestApp::spawn().await;
    let acc = app.signup("status@example.com").await;
    let member = with_role(&app, &acc, "status-member@example.com", Role::Member).await;
    let ws = Uuid::parse_str(&acc.workspace).unwrap();
    let (_, p) = app
        .post(
            &providers(&acc),
            &acc.token,
            json!({"kind": "openai", "name": "oai", "keys": [
                {"key": "sk-s-a", "label": "a"}, {"key": "sk-s-b", "label": "b"},
                {"key": "sk-s-c", "label": "c"},
            ]}),
        )
        .await;
    let entry = id(&p);
    let key = |i: usize| Uuid::parse_str(p["keys"][i]["id"].as_str().unwrap()).unwrap();
    let (a, b, c) = (key(0), key(1), key(2));
    let (_, other) = app
        .post(
            &providers(&acc),
            &acc.token,
            json!({"kind": "openai", "name": "other", "api_key": "sk-other"}),
        )
        .await;
    let url = format!("{}/{entry}/keys", providers(&acc));

    // Nothing served, nothing reported: zeros and nulls.
    let (status, body) = app.get(&url, &member.token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for k in body["data"].as_array().unwrap() {
        assert_eq!(
            k["status"],
            json!({"requests_24h": 0, "share": 0.0, "breaker": null, "remaining_requests": null,
                   "remaining_tokens": null, "reset_at": null, "gateways": 0}),
            "{k}"
        );
    }

    // Three requests of a and one of b in the last day; older ones, other entries' and
    // unkeyed ones do not count.
    for _ in 0..3 {
        served(&app, ws, entry, Some(a), Duration::minutes(5)).await;
    }
    served(&app, ws, entry, Some(b), Duration::hours(23)).await;
    served(&app, ws, entry, Some(a), Duration::hours(25)).await;
    served(&app, ws, entry, None, Duration::minutes(1)).await;
    served(&app, ws, id(&other), Some(a), Duration::minutes(1)).await;

    // a: two fresh gateways (the worst breaker, the smallest headroom, the latest reset)
    // and a stale one; c: one gateway with its breaker open; b: none.
    let soon = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() + Duration::seconds(20);
    let later = soon + Duration::seconds(40);
    reported(
        &app,
        ws,
        entry,
        a,
        "closed",
        (Some(100), Some(5000)),
        Some(soon),
        Duration::seconds(2),
    )
    .await;
    reported(
        &app,
        ws,
        entry,
        a,
        "half_open",
        (Some(40), None),
        Some(later),
        Duration::seconds(10),
    )
    .await;
    reported(
        &app,
        ws,
        entry,
        a,
        "open",
        (Some(1), Some(1)),
        Some(later + Duration::hours(1)),
        Duration::seconds(60),
    )
    .await;
    reported(
        &app,
        ws,
        entry,
        c,
        "open",
        (None, None),
        None,
        Duration::seconds(1),
    )
    .await;

    let (status, body) = app.get(&url, &acc.token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rows = body["data"].as_array().unwrap();
    let labels: Vec<&str> = rows.iter().map(|k| k["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["a", "b", "c"]);
    let rfc = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    assert_eq!(
        rows[0]["status"],
        json!({"requests_24h": 3, "share": 0.75, "breaker": "half_open", "remaining_requests": 40,
               "remaining_tokens": 5000, "reset_at": rfc(later), "gateways": 2})
    );
    assert_eq!(
        rows[1]["status"],
        json!({"requests_24h": 1, "share": 0.25, "breaker": null, "remaining_requests": null,
               "remaining_tokens": null, "reset_at": null, "gateways": 0})
    );
    assert_eq!(
        rows[2]["status"],
        json!({"requests_24h": 0, "share": 0.0, "breaker": "open", "remaining_requests": null,
               "remaining_tokens": null, "reset_at": null, "gateways": 1})
    );
    assert!(!body.to_string().contains("sk-s-"), "{body}");
    let _ = c;

    // An entry without keys has an empty list; an unknown entry is not found.
    let (_, local) = app
        .post(
            &providers(&acc),
            &acc.token,
            json!({"kind": "openai_compatible", "name": "local", "base_url": "https://l.example/v1"}),
        )
        .await;
    let (status, body) = app
        .get(
            &format!("{}/{}/keys", providers(&acc), id(&local)),
            &acc.token,
        )
        .await;
    assert_eq!((status, body["data"].clone()), (StatusCode::OK, json!([])));
    let (status, _) = app
        .get(
            &format!("{}/{}/keys", providers(&acc), Uuid::now_v7()),
            &acc.token,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn log_rows_name_the_key_that_served_and_what_was_skipped() {
    let app = TestApp::spawn().await;
    let acc = app.signup("log-keys@example.com").await;
    let ws = Uuid::parse_str(&acc.workspace).unwrap();
    let entry = Uuid::now_v7();
    let now = OffsetDateTime::now_utc();
    let keyed = crate::logs::record(ws, now - Duration::seconds(2), Some(entry), "gpt-4o", 200);
    let plain = crate::logs::record(ws, now - Duration::seconds(1), Some(entry), "gpt-4o", 200);
    let mut client = app.client().await;
    db::logs::insert_batch(&mut client, &[keyed.clone(), plain.clone()])
        .await
        .unwrap();
    let key = Uuid::now_v7();
    client
        .execute(
            "UPDATE request_logs SET provider_key_id = $2, provider_key_label = 'backup',
                 skipped = $3 WHERE id = $1",
            &[
                &keyed.id,
                &key,
                &json!([{"entry": "primary", "reason": "quota"},
                        {"entry": "entry", "key": "default", "reason": "breaker"}]),
            ],
        )
        .await
        .unwrap();
    let (status, page) = app
        .get(&format!("/workspaces/{}/logs", acc.workspace), &acc.token)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let rows = page["data"].as_array().unwrap();
    assert_eq!(rows[0]["id"], plain.id.to_string());
    assert_eq!(
        (
            rows[0]["provider_key_id"].clone(),
            rows[0]["provider_key_label"].clone(),
            rows[0]["skipped"].clone()
        ),
        (Value::Null, Value::Null, Value::Null)
    );
    assert_eq!(rows[1]["provider_key_id"], key.to_string());
    assert_eq!(rows[1]["provider_key_label"], "backup");
    assert_eq!(
        rows[1]["skipped"],
        json!([{"entry": "primary", "key": null, "reason": "quota"},
               {"entry": "entry", "key": "default", "reason": "breaker"}])
    );
}

/// Writes an entry as the schema of V17 held it: its key (empty for none) sealed in the
/// entry's own row, with associated-data format `aad`.
#[allow(clippy::too_many_arguments)]
async fn v17_entry(
    client: &deadpool_postgres::Client,
    master: &MasterKey,
    ws: Uuid,
    name: &str,
    kind: ProviderKind,
    base_url: Option<&str>,
    key: &str,
    aad: i16,
) -> Uuid {
    let id = Uuid::now_v7();
    let sealed = master
        .seal_as(
            key,
            &KeyBinding {
                entry_id: id,
                workspace_id: ws,
                kind,
                base_url,
            },
            aad,
        )
        .unwrap();
    client
        .execute(
            "INSERT INTO provider_keys (id, workspace_id, kind, name, base_url, sealed_key,
                 key_nonce, key_version, key_last4, aad_version, priority)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1)",
            &[
                &id,
                &ws,
                &kind.as_str(),
                &name,
                &base_url,
                &sealed.ciphertext,
                &sealed.nonce,
                &sealed.version,
                &perpetuo_core::crypto::last4(key),
                &sealed.aad_version,
            ],
        )
        .await
        .unwrap();
    id
}

#[tokio::test]
async fn a_v17_database_keeps_its_keys_as_pools_of_one() {
    let db = TestDb::at_version(17).await.unwrap();
    let master = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
    let client = db.pool.get().await.unwrap();
    let user = db::users::insert(
        &client,
        &perpetuo_core::email::Email::parse("old@example.com").unwrap(),
        "x",
    )
    .await
    .unwrap();
    let ws = db::workspaces::create(&client, "old", user.id)
        .await
        .unwrap()
        .id;
    let keyed = v17_entry(
        &client,
        &master,
        ws,
        "keyed",
        ProviderKind::Anthropic,
        None,
        "sk-ant-old-9876",
        AAD_BOUND,
    )
    .await;
    let keyless = v17_entry(
        &client,
        &master,
        ws,
        "keyless",
        ProviderKind::OpenaiCompatible,
        Some("https://ollama.example/v1"),
        "",
        AAD_BOUND,
    )
    .await;
    // Never re-sealed since the first format.
    let legacy = v17_entry(
        &client,
        &master,
        ws,
        "legacy",
        ProviderKind::Openai,
        None,
        "sk-legacy-1234",
        AAD_ENTRY_ID,
    )
    .await;
    drop(client);

    db::migrate::run(&db.pool).await.unwrap();
    let client = db.pool.get().await.unwrap();
    let entry = db::providers::get(&client, ws, keyed)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((entry.quota_rpm, entry.quota_tpm), (None, None));
    let keys = db::entry_keys::list_for_entry(&client, ws, keyed)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1);
    let key = &keys[0];
    assert_eq!(
        (
            key.label.as_str(),
            key.weight,
            key.enabled,
            key.key_last4.as_str(),
            key.id
        ),
        ("default", 1, true, "9876", keyed),
        "the entry's key, under the entry's id"
    );
    assert_eq!(
        master.open(&key.sealed, &entry.binding()).unwrap().expose(),
        "sk-ant-old-9876"
    );
    assert!(db::entry_keys::list_for_entry(&client, ws, keyless)
        .await
        .unwrap()
        .is_empty());
    let gone: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.columns
             WHERE table_name = 'provider_keys'
               AND column_name IN ('sealed_key', 'key_nonce', 'key_version', 'aad_version', 'key_last4')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(gone, 0, "the keys left the entry's row");

    // The first format moves as it was, and `migrate` re-seals it in its new place.
    let old = &db::entry_keys::list_for_entry(&client, ws, legacy)
        .await
        .unwrap()[0];
    assert_eq!(old.sealed.aad_version, AAD_ENTRY_ID);
    drop(client);
    perpetuo_admin::startup::migrate_only(&crate::helpers::config(&db, &master, ""))
        .await
        .unwrap();
    let client = db.pool.get().await.unwrap();
    let entry = db::providers::get(&client, ws, legacy)
        .await
        .unwrap()
        .unwrap();
    let key = &db::entry_keys::list_for_entry(&client, ws, legacy)
        .await
        .unwrap()[0];
    assert_eq!(key.sealed.aad_version, AAD_BOUND);
    assert_eq!(
        master.open(&key.sealed, &entry.binding()).unwrap().expose(),
        "sk-legacy-1234"
    );
}
