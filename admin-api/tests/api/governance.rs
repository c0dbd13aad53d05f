//! Governance of API keys across roles: what an admin set on a member's key binds the
//! member, reading a key's limits takes the rights the key's other routes take, and a
//! member demoted to viewer loses their keys.

use perpetuo_core::db::workspaces::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{error_code, Account, TestApp};

/// A workspace with an owner, an admin and two members.
struct Team {
    owner: Account,
    admin: Account,
    member: Account,
    other: Account,
}

impl Team {
    async fn new(app: &TestApp) -> Self {
        let owner = app.signup("owner@example.com").await;
        let admin = app.signup("admin@example.com").await;
        let member = app.signup("member@example.com").await;
        let other = app.signup("other@example.com").await;
        let client = app.client().await;
        for (acc, role) in [
            (&admin, Role::Admin),
            (&member, Role::Member),
            (&other, Role::Member),
        ] {
            perpetuo_core::db::workspaces::add_member(
                &client,
                owner.workspace.parse().unwrap(),
                acc.user_id.parse().unwrap(),
                role,
            )
            .await
            .unwrap();
        }
        Self {
            owner,
            admin,
            member,
            other,
        }
    }

    fn keys(&self) -> String {
        format!("/workspaces/{}/api-keys", self.owner.workspace)
    }
}

/// A key's settings as `PUT` takes them, from the key as the API shows it.
fn settings_of(key: &Value) -> Value {
    json!({
        "limits": key["limits"],
        "allowed_models": key["allowed_models"],
        "expires_at": key["expires_at"],
        "label": key["label"],
        "owner_email": key["owner_email"],
        "cache_mode": key["cache_mode"],
    })
}

async fn key(app: &TestApp, t: &Team, id: &str) -> Value {
    let (_, list) = app.get(&t.keys(), &t.owner.token).await;
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .cloned()
        .unwrap()
}

#[tokio::test]
async fn limits_an_admin_set_on_a_members_key_bind_the_member() {
    let app = TestApp::spawn().await;
    let t = Team::new(&app).await;
    let (status, created) = app
        .post(
            &t.keys(),
            &t.member.token,
            json!({"name": "mine", "limits": {"rpm": 100}, "allowed_models": ["gpt-4o*"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["set_by"],
        json!({"limits": "member", "allowed_models": "member", "expires_at": "member", "cache_mode": "member"})
    );
    let id = created["id"].as_str().unwrap().to_string();
    let url = format!("{}/{id}", t.keys());

    // The member's own settings are the member's to change.
    let mut mine = settings_of(&created);
    mine["limits"]["rpm"] = json!(200);
    let (status, b) = app.put(&url, &t.member.token, mine.clone()).await;
    assert_eq!(status, StatusCode::OK, "{b}");

    // An admin tightens the limits and leaves the rest as it is.
    let mut tight = settings_of(&b);
    tight["limits"]["rpm"] = json!(10);
    let (status, b) = app.put(&url, &t.admin.token, tight).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(
        b["set_by"],
        json!({"limits": "admin", "allowed_models": "member", "expires_at": "member", "cache_mode": "member"})
    );
    let governed = key(&app, &t, &id).await;

    // The member cannot loosen them, lift them, or change them any other way; nothing
    // of the request is applied.
    for limits in [
        json!({"rpm": 1000}),
        json!({}),
        json!({"rpm": 10, "budget_usd": 5}),
    ] {
        let mut loose = settings_of(&governed);
        loose["limits"] = limits;
        loose["label"] = json!("sneaky");
        let (status, b) = app.put(&url, &t.member.token, loose).await;
        assert_eq!(
            (status, error_code(&b)),
            (StatusCode::FORBIDDEN, "governed_by_admin"),
            "{b}"
        );
        assert!(b["error"]["message"].as_str().unwrap().contains("limits"));
        assert_eq!(key(&app, &t, &id).await, governed, "nothing changed");
    }

    // What a member set stays theirs: new models and a label, the admin's limits resent.
    let mut own = settings_of(&governed);
    own["allowed_models"] = json!(["gpt-4o*", "claude-*"]);
    own["label"] = json!("batch jobs");
    let (status, b) = app.put(&url, &t.member.token, own).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["limits"]["rpm"], 10);
    assert_eq!(b["allowed_models"], json!(["gpt-4o*", "claude-*"]));
    assert_eq!(b["set_by"]["allowed_models"], "member");

    // An expiry an owner sets binds the member too; an admin may change anything.
    let mut expiring = settings_of(&b);
    expiring["expires_at"] = json!("2099-01-01T00:00:00Z");
    let (status, b) = app.put(&url, &t.owner.token, expiring).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["set_by"]["expires_at"], "owner");
    let mut never = settings_of(&b);
    never["expires_at"] = Value::Null;
    let (status, e) = app.put(&url, &t.member.token, never.clone()).await;
    assert_eq!(
        (status, error_code(&e)),
        (StatusCode::FORBIDDEN, "governed_by_admin")
    );
    never["limits"] = json!({});
    let (status, b) = app.put(&url, &t.admin.token, never).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(
        b["set_by"],
        json!({"limits": "admin", "allowed_models": "member", "expires_at": "admin", "cache_mode": "member"})
    );
}

/// A key's cache mode is governed like its limits: a member turns the cache on or off for
/// their own key, unless an admin or owner set the key's mode.
#[tokio::test]
async fn a_cache_mode_an_admin_set_binds_the_member() {
    let app = TestApp::spawn().await;
    let t = Team::new(&app).await;
    let (status, created) = app
        .post(&t.keys(), &t.member.token, json!({"name": "mine"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["cache_mode"], "inherit");
    let url = format!("{}/{}", t.keys(), created["id"].as_str().unwrap());

    let mut on = settings_of(&created);
    on["cache_mode"] = json!("on");
    let (status, b) = app.put(&url, &t.member.token, on).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["cache_mode"], "on");

    let mut off = settings_of(&b);
    off["cache_mode"] = json!("off");
    let (status, b) = app.put(&url, &t.admin.token, off).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["set_by"]["cache_mode"], "admin");
    let governed = key(&app, &t, created["id"].as_str().unwrap()).await;
    for mode in ["on", "opt_in", "inherit"] {
        let mut s = settings_of(&governed);
        s["cache_mode"] = json!(mode);
        let (status, e) = app.put(&url, &t.member.token, s).await;
        assert_eq!(
            (status, error_code(&e)),
            (StatusCode::FORBIDDEN, "governed_by_admin"),
            "{e}"
        );
        assert!(e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cache_mode"));
    }
    // Left out of a member's PUT, it would go back to `inherit`: refused as well.
    let mut s = settings_of(&governed);
    s.as_object_mut().unwrap().remove("cache_mode");
    let (status, _) = app.put(&url, &t.member.token, s).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        key(&app, &t, created["id"].as_str().unwrap()).await,
        governed
    );
}

#[tokio::test]
async fn a_keys_limits_are_read_with_the_rights_of_the_key() {
    let app = TestApp::spawn().await;
    let t = Team::new(&app).await;
    let (_, theirs) = app
        .post(&t.keys(), &t.other.token, json!({"name": "theirs"}))
        .await;
    let url = format!("{}/{}", t.keys(), theirs["id"].as_str().unwrap());

    let (status, b) = app.get(&format!("{url}/limits"), &t.member.token).await;
    let (key_status, key_b) = app
        .post(&format!("{url}/revoke"), &t.member.token, json!({}))
        .await;
    assert_eq!(
        (status, error_code(&b)),
        (key_status, error_code(&key_b)),
        "{b} / {key_b}"
    );
    assert_eq!(status, StatusCode::FORBIDDEN);

    for owner_or_admin in [&t.other, &t.admin, &t.owner] {
        let (status, b) = app
            .get(&format!("{url}/limits"), &owner_or_admin.token)
            .await;
        assert_eq!(status, StatusCode::OK, "{b}");
    }
    let unknown = format!("{}/{}/limits", t.keys(), uuid::Uuid::now_v7());
    let (status, _) = app.get(&unknown, &t.member.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn keys_from_before_the_upgrade_keep_what_an_admin_set() {
    let app = TestApp::spawn().await;
    let t = Team::new(&app).await;
    let (_, governed) = app
        .post(&t.keys(), &t.member.token, json!({"name": "governed"}))
        .await;
    let (_, free) = app
        .post(&t.keys(), &t.member.token, json!({"name": "free"}))
        .await;
    let governed_url = format!("{}/{}", t.keys(), governed["id"].as_str().unwrap());
    let free_url = format!("{}/{}", t.keys(), free["id"].as_str().unwrap());
    let mut s = settings_of(&governed);
    s["limits"] = json!({"rpm": 10});
    let (status, b) = app.put(&governed_url, &t.admin.token, s).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    let mut s = settings_of(&b);
    s["allowed_models"] = json!(["gpt-4o"]);
    let (status, _) = app.put(&governed_url, &t.member.token, s).await;
    assert_eq!(status, StatusCode::OK);
    let mut s = settings_of(&free);
    s["limits"] = json!({"rpm": 10});
    let (status, _) = app.put(&free_url, &t.member.token, s).await;
    assert_eq!(status, StatusCode::OK);

    // A viewer who still holds a key from before the rule.
    let (_, viewers) = app
        .post(&t.keys(), &t.other.token, json!({"name": "viewer's"}))
        .await;
    perpetuo_core::db::workspaces::set_role(
        &app.client().await,
        t.owner.workspace.parse().unwrap(),
        t.other.user_id.parse().unwrap(),
        Role::Viewer,
    )
    .await
    .unwrap();
    assert!(accepted(&app, viewers["key"].as_str().unwrap()).await);

    // Back to the schema before governance was recorded, then upgraded again: the setters
    // come from the audit log, and viewers lose their keys.
    app.client()
        .await
        .batch_execute(
            "ALTER TABLE api_keys DROP COLUMN limits_set_by, DROP COLUMN allowed_models_set_by,
                 DROP COLUMN expires_at_set_by;
             DELETE FROM refinery_schema_history WHERE version >= 11;",
        )
        .await
        .unwrap();
    // V11 alone runs again (the later migrations' changes stay as they are).
    perpetuo_core::db::migrate::run_to(&app.db.pool, 11)
        .await
        .unwrap();
    let governed = key(&app, &t, governed["id"].as_str().unwrap()).await;
    assert_eq!(
        governed["set_by"],
        json!({"limits": "admin", "allowed_models": null, "expires_at": null, "cache_mode": "member"})
    );
    let free = key(&app, &t, free["id"].as_str().unwrap()).await;
    assert_eq!(
        free["set_by"],
        json!({"limits": null, "allowed_models": null, "expires_at": null, "cache_mode": "member"})
    );
    let mut loose = settings_of(&governed);
    loose["limits"] = json!({});
    let (status, b) = app.put(&governed_url, &t.member.token, loose).await;
    assert_eq!(
        (status, error_code(&b)),
        (StatusCode::FORBIDDEN, "governed_by_admin")
    );
    let mut loose = settings_of(&free);
    loose["limits"] = json!({});
    let (status, _) = app.put(&free_url, &t.member.token, loose).await;
    assert_eq!(status, StatusCode::OK);

    assert!(!accepted(&app, viewers["key"].as_str().unwrap()).await);
    assert!(accepted(&app, &t.owner.key).await);
    let (_, audit) = app
        .get(
            &format!(
                "/workspaces/{}/audit?action=api_key.revoked",
                t.owner.workspace
            ),
            &t.owner.token,
        )
        .await;
    let entries = audit["data"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["target_id"], viewers["id"]);
    assert_eq!(entries[0]["after"]["reason"], "its creator is a viewer");
}

/// Whether a gateway would accept `key` now: the key found by its hash, as gateways
/// look it up, and active.
async fn accepted(app: &TestApp, key: &str) -> bool {
    let hash = perpetuo_core::apikey::KeyHash::of(key);
    perpetuo_core::db::api_keys::find_by_hash(&app.client().await, &hash)
        .await
        .unwrap()
        .is_some_and(|k| k.is_active(time::OffsetDateTime::now_utc()))
}

#[tokio::test]
async fn a_member_made_viewer_loses_their_keys_in_the_same_change() {
    let app = TestApp::spawn().await;
    let t = Team::new(&app).await;
    let ws = &t.owner.workspace;
    let (_, live) = app
        .post(&t.keys(), &t.member.token, json!({"name": "live"}))
        .await;
    let (_, old) = app
        .post(&t.keys(), &t.member.token, json!({"name": "old"}))
        .await;
    let old_url = format!("{}/{}/revoke", t.keys(), old["id"].as_str().unwrap());
    let (status, _) = app.post(&old_url, &t.member.token, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, others) = app
        .post(&t.keys(), &t.other.token, json!({"name": "other's"}))
        .await;
    let live_key = live["key"].as_str().unwrap();
    assert!(accepted(&app, live_key).await);

    let (status, b) = app
        .put(
            &format!("/workspaces/{ws}/members/{}", t.member.user_id),
            &t.admin.token,
            json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["role"], "viewer");
    assert_eq!(b["email"], "member@example.com");
    let revoked = b["revoked_api_keys"].as_array().unwrap();
    assert_eq!(revoked.len(), 1, "only the live key: {b}");
    assert_eq!(revoked[0]["id"], live["id"]);
    assert_eq!(revoked[0]["name"], "live");
    assert!(!accepted(&app, live_key).await, "gateways refuse it");
    assert!(accepted(&app, others["key"].as_str().unwrap()).await);

    let (_, audit) = app
        .get(
            &format!("/workspaces/{ws}/audit?action=member.role_changed"),
            &t.owner.token,
        )
        .await;
    let entry = &audit["data"][0];
    assert_eq!(entry["target_id"], t.member.user_id.as_str());
    assert_eq!(entry["before"]["role"], "member");
    assert_eq!(entry["after"]["role"], "viewer");
    assert_eq!(entry["after"]["revoked_api_keys"], json!([live["id"]]));

    // Made a member again, the keys stay revoked; other role changes revoke nothing.
    let (status, b) = app
        .put(
            &format!("/workspaces/{ws}/members/{}", t.member.user_id),
            &t.admin.token,
            json!({"role": "member"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["revoked_api_keys"], json!([]));
    assert!(!accepted(&app, live_key).await);
    let (status, b) = app
        .put(
            &format!("/workspaces/{ws}/members/{}", t.other.user_id),
            &t.admin.token,
            json!({"role": "admin"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert!(accepted(&app, others["key"].as_str().unwrap()).await);

    // A demotion that is refused revokes nothing: it is one change.
    let (status, b) = app
        .put(
            &format!("/workspaces/{ws}/members/{}", t.owner.user_id),
            &t.owner.token,
            json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&b)),
        (StatusCode::CONFLICT, "last_owner")
    );
    assert!(accepted(&app, &t.owner.key).await);
}
