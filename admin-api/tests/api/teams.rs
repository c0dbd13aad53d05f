//! Teams: the access table on every route, members and roles, invitations and email
//! through a real SMTP server, verification, password reset, workspace deletion and the
//! audit log.

use perpetuo_admin::access::{self, Access};
use perpetuo_core::db::workspaces::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Digest;
use uuid::Uuid;

use crate::helpers::{error_code, Account, SmtpSink, TestApp};

/// Adds `user` to `workspace` with `role`, straight in the database.
async fn add(app: &TestApp, workspace: &str, user: &str, role: Role) {
    let client = app.client().await;
    perpetuo_core::db::workspaces::add_member(
        &client,
        workspace.parse().unwrap(),
        user.parse().unwrap(),
        role,
    )
    .await
    .unwrap();
}

async fn login(app: &TestApp, email: &str, password: &str) -> (StatusCode, Value) {
    app.raw(
        Method::POST,
        "/auth/login",
        None,
        Some(json!({"email": email, "password": password})),
    )
    .await
}

/// A team: an owner and one user of each other role in the owner's default workspace.
struct Team {
    owner: Account,
    admin: Account,
    member: Account,
    viewer: Account,
}

impl Team {
    async fn new(app: &TestApp) -> Self {
        let owner = app.signup("owner@example.com").await;
        let admin = app.signup("admin@example.com").await;
        let member = app.signup("member@example.com").await;
        let viewer = app.signup("viewer@example.com").await;
        add(app, &owner.workspace, &admin.user_id, Role::Admin).await;
        add(app, &owner.workspace, &member.user_id, Role::Member).await;
        add(app, &owner.workspace, &viewer.user_id, Role::Viewer).await;
        Self {
            owner,
            admin,
            member,
            viewer,
        }
    }

    fn ws(&self) -> &str {
        &self.owner.workspace
    }
}

#[tokio::test]
async fn every_route_answers_to_the_access_table() {
    let app = TestApp::spawn().await;
    let (_, doc) = app.raw(Method::GET, "/openapi.json", None, None).await;
    let mut ops: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method = method.to_uppercase();
            let rule = access::find(&method.parse().unwrap(), path)
                .unwrap_or_else(|| panic!("{method} {path} has no rule in access::RULES"));
            assert_eq!(
                op["x-required-role"],
                rule.access.label(),
                "{method} {path}: the document states another role"
            );
            ops.push((method, path.clone()));
        }
    }
    for rule in access::RULES {
        assert!(
            rule.path == "/openapi.json"
                || ops.iter().any(|(m, p)| m == rule.method && p == rule.path),
            "rule for {} {} names no route",
            rule.method,
            rule.path
        );
    }

    let owner = app.signup("owner@example.com").await;
    let users: Vec<(Role, Account)> = vec![
        (Role::Viewer, app.signup("viewer@example.com").await),
        (Role::Member, app.signup("member@example.com").await),
        (Role::Admin, app.signup("admin@example.com").await),
    ];
    let outsider = app.signup("outsider@example.com").await;
    let mut checked = 0;
    for (method, path) in &ops {
        let rule = access::find(&method.parse().unwrap(), path).unwrap();
        let method: Method = method.parse().unwrap();
        let body = matches!(method, Method::POST | Method::PUT).then(|| json!({}));
        match rule.access {
            Access::Public => {
                let (status, b) = app.raw(method.clone(), path, None, body.clone()).await;
                assert!(
                    ![401, 403, 500].contains(&status.as_u16()),
                    "{method} {path} is public but answered {status}: {b}"
                );
            }
            Access::User => {
                let (status, _) = app.raw(method.clone(), path, None, body.clone()).await;
                assert_eq!(status, 401, "{method} {path} without a token");
                // A session of its own: the route may be logout.
                let (_, session) = login(&app, "outsider@example.com", "correct horse").await;
                let token = session["token"].as_str().unwrap();
                let (status, b) = app
                    .raw(method.clone(), path, Some(token), body.clone())
                    .await;
                assert!(
                    ![401, 403, 404, 500].contains(&status.as_u16()),
                    "{method} {path} refused a signed-in user: {status} {b}"
                );
            }
            Access::Role(least) => {
                // A fresh workspace per route, since some routes delete or leave it.
                let (_, ws) = app
                    .post("/workspaces", &owner.token, json!({"name": "matrix"}))
                    .await;
                let ws = ws["id"].as_str().unwrap().to_string();
                for (role, acc) in &users {
                    add(&app, &ws, &acc.user_id, *role).await;
                }
                let url = path
                    .replace("{id}", &ws)
                    .split('/')
                    .map(|seg| {
                        if seg.starts_with('{') {
                            Uuid::now_v7().to_string()
                        } else {
                            seg.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("/");
                let (status, _) = app.raw(method.clone(), &url, None, body.clone()).await;
                assert_eq!(status, 401, "{method} {path} without a token");
                let (status, b) = app
                    .raw(method.clone(), &url, Some(&outsider.token), body.clone())
                    .await;
                assert_eq!(status, 404, "{method} {path} to a non-member: {b}");
                let everyone = users
                    .iter()
                    .map(|(r, a)| (*r, a.token.as_str()))
                    .chain([(Role::Owner, owner.token.as_str())]);
                for (role, token) in everyone {
                    let (status, b) = app
                        .raw(method.clone(), &url, Some(token), body.clone())
                        .await;
                    if role < least {
                        assert_eq!(status, 403, "{method} {path} as {role}: {b}");
                        assert_eq!(error_code(&b), "insufficient_role");
                    } else {
                        assert!(
                            ![401, 403, 500].contains(&status.as_u16()),
                            "{method} {path} as {role} (needs {least}) answered {status}: {b}"
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 4 * 25, "only {checked} role checks ran");
}

#[tokio::test]
async fn roles_change_and_the_last_owner_stays() {
    let app = TestApp::spawn().await;
    let t = Team::new(&app).await;
    let ws = t.ws();
    let (status, list) = app
        .get(&format!("/workspaces/{ws}/members"), &t.viewer.token)
        .await;
    assert_eq!(status, StatusCode::OK);
    let roles: Vec<(&str, &str)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["email"].as_str().unwrap(), m["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        roles,
        vec![
            ("owner@example.com", "owner"),
            ("admin@example.com", "admin"),
            ("member@example.com", "member"),
            ("viewer@example.com", "viewer")
        ]
    );
    let (_, me) = app.get(&format!("/workspaces/{ws}"), &t.viewer.token).await;
    assert_eq!(me["role"], "viewer");

    // An admin manages roles below owner, not owners.
    let member_url = format!("/workspaces/{ws}/members/{}", t.member.user_id);
    let (status, m) = app
        .put(&member_url, &t.admin.token, json!({"role": "viewer"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(m["role"], "viewer");
    let (status, b) = app
        .put(&member_url, &t.admin.token, json!({"role": "owner"}))
        .await;
    assert_eq!(
        (status, error_code(&b)),
        (StatusCode::FORBIDDEN, "insufficient_role")
    );
    let owner_url = format!("/workspaces/{ws}/members/{}", t.owner.user_id);
    let (status, _) = app
        .put(&owner_url, &t.admin.token, json!({"role": "member"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, b) = app
        .put(&member_url, &t.admin.token, json!({"role": "boss"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{b}");

    // The last owner can neither be demoted nor leave, nor be removed.
    let (status, b) = app
        .put(&owner_url, &t.owner.token, json!({"role": "admin"}))
        .await;
    assert_eq!(
        (status, error_code(&b)),
        (StatusCode::CONFLICT, "last_owner")
    );
    let (status, b) = app
        .post(
            &format!("/workspaces/{ws}/leave"),
            &t.owner.token,
            json!({}),
        )
        .await;
    assert_eq!(
        (status, error_code(&b)),
        (StatusCode::CONFLICT, "last_owner")
    );
    let (status, b) = app.delete(&owner_url, &t.owner.token).await;
    assert_eq!(
        (status, error_code(&b)),
        (StatusCode::CONFLICT, "last_owner")
    );

    // With a second owner, the first may step down.
    let admin_url = format!("/workspaces/{ws}/members/{}", t.admin.user_id);
    let (status, _) = app
        .put(&admin_url, &t.owner.token, json!({"role": "owner"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, m) = app
        .put(&owner_url, &t.owner.token, json!({"role": "admin"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{m}");
    let (_, me) = app.get(&format!("/workspaces/{ws}"), &t.owner.token).await;
    assert_eq!(me["role"], "admin");
}

#[tokio::test]
async fn ownership_transfers_to_a_member() {
    let app = TestApp::spawn().await;
    let t = Team::new(&app).await;
    let ws = t.ws();
    let url = format!("/workspaces/{ws}/transfer");
    let (status, b) = app
        .post(&url, &t.owner.token, json!({"user_id": Uuid::now_v7()}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{b}");
    let (status, b) = app
        .post(&url, &t.owner.token, json!({"user_id": t.member.user_id}))
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    let role_of = |email: &str| {
        b["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["email"] == email)
            .unwrap()["role"]
            .clone()
    };
    assert_eq!(role_of("member@example.com"), "owner");
    assert_eq!(role_of("owner@example.com"), "admin");
    // The former owner can no longer delete the workspace; the new one can.
    let (status, _) = app
        .delete(&format!("/workspaces/{ws}"), &t.owner.token)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

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

/// An app that sends email through `smtp`.
async fn app_with_mail(smtp: &SmtpSink) -> TestApp {
    let url = smtp.url();
    TestApp::spawn_configured(|c| {
        c.teams.smtp_url = Some(perpetuo_core::Secret::new(url));
        c.teams.mail_from = "Perpetuo <noreply@perpetuo.test>".into();
        c.teams.admin_public_url = Some("http://dashboard.test".into());
        c.teams.verification_resend_cooldown_seconds = 3600;
    })
    .await
}

async fn verify(app: &TestApp, smtp: &SmtpSink, email: &str, n: usize) {
    let mail = smtp.wait_for(email, n).await;
    let token = mail.token("#/verify-email");
    let (status, b) = app
        .raw(
            Method::POST,
            "/auth/verify-email",
            None,
            Some(json!({"token": token})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn an_invitation_goes_by_email_and_is_accepted_once() {
    let smtp = SmtpSink::start();
    let app = app_with_mail(&smtp).await;
    let owner = app.signup("boss@example.com").await;
    verify(&app, &smtp, "boss@example.com", 1).await;
    let ws = &owner.workspace;
    let url = format!("/workspaces/{ws}/invitations");
    let (status, b) = app
        .post(
            &url,
            &owner.token,
            json!({"email": "nope", "role": "viewer"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{b}");
    let (status, b) = app
        .post(
            &url,
            &owner.token,
            json!({"email": "boss@example.com", "role": "admin"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&b)),
        (StatusCode::CONFLICT, "already_member")
    );
    let (status, inv) = app
        .post(
            &url,
            &owner.token,
            json!({"email": "Guest@Example.com", "role": "viewer"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{inv}");
    assert_eq!(inv["delivery"], "sent");
    assert_eq!(inv["email"], "guest@example.com");
    assert!(
        inv.get("token").is_none(),
        "the token only travels by email"
    );
    let (_, pending) = app.get(&url, &owner.token).await;
    assert_eq!(pending["data"].as_array().unwrap().len(), 1);
    assert_eq!(pending["data"][0]["invited_by_email"], "boss@example.com");

    let mail = smtp.wait_for("guest@example.com", 1).await;
    assert!(mail.subject().contains("Default"), "{}", mail.raw);
    assert!(mail.raw.contains("text/plain") && mail.raw.contains("text/html"));
    assert!(mail.body.contains("http://dashboard.test/#/invite?token="));
    let token = mail.token("#/invite");
    let stored: Vec<Vec<u8>> = app
        .client()
        .await
        .query("SELECT token_hash FROM invitations", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(stored.iter().all(|h| h.as_slice() != token.as_bytes()));

    // Someone else cannot use it; the invitee signs up and accepts it once.
    let intruder = app.signup("intruder@example.com").await;
    let accept = |token: String| json!({ "token": token });
    let (status, b) = app
        .post(
            "/invitations/accept",
            &intruder.token,
            accept(token.clone()),
        )
        .await;
    assert_eq!(
        (status, error_code(&b)),
        (StatusCode::FORBIDDEN, "invitation_email_mismatch")
    );
    let guest = app.signup("guest@example.com").await;
    let (status, joined) = app
        .post("/invitations/accept", &guest.token, accept(token.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{joined}");
    assert_eq!(joined["id"], ws.as_str());
    assert_eq!(joined["role"], "viewer");
    let (status, b) = app
        .post("/invitations/accept", &guest.token, accept(token))
        .await;
    assert_eq!(
        (status, error_code(&b)),
        (StatusCode::BAD_REQUEST, "invitation_invalid")
    );
    let (_, pending) = app.get(&url, &owner.token).await;
    assert!(pending["data"].as_array().unwrap().is_empty());
    // Accepting proved the address: the guest is verified.
    let (_, me) = app.get("/auth/me", &guest.token).await;
    assert_eq!(me["user"]["email_verified"], true);
    // A viewer reads logs but cannot see providers or create keys.
    let (status, _) = app
        .get(&format!("/workspaces/{ws}/logs"), &guest.token)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .get(&format!("/workspaces/{ws}/providers"), &guest.token)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A revoked invitation's link stops working.
    let (_, inv) = app
        .post(
            &url,
            &owner.token,
            json!({"email": "late@example.com", "role": "member"}),
        )
        .await;
    let late = smtp.wait_for("late@example.com", 1).await.token("#/invite");
    let (status, _) = app
        .delete(
            &format!("{url}/{}", inv["id"].as_str().unwrap()),
            &owner.token,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let late_acc = app.signup("late@example.com").await;
    let (status, _) = app
        .post("/invitations/accept", &late_acc.token, accept(late))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_unverified_account_cannot_create_keys_or_providers_until_it_verifies() {
    let smtp = SmtpSink::start();
    let app = app_with_mail(&smtp).await;
    let (status, signup) = app
        .raw(
            Method::POST,
            "/auth/signup",
            None,
            Some(json!({"email": "new@example.com", "password": "correct horse"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{signup}");
    assert!(signup["api_key"].is_null(), "no key before verification");
    assert_eq!(signup["user"]["email_verified"], false);
    let token = signup["token"].as_str().unwrap();
    let ws = signup["workspace"]["id"].as_str().unwrap();
    let (status, b) = app
        .post(
            &format!("/workspaces/{ws}/api-keys"),
            token,
            json!({"name": "k"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&b)),
        (StatusCode::FORBIDDEN, "email_unverified")
    );
    let (status, b) = app
        .post(
            &format!("/workspaces/{ws}/providers"),
            token,
            json!({"kind": "openai", "name": "o", "api_key": "sk-1234"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&b)),
        (StatusCode::FORBIDDEN, "email_unverified")
    );
    // It can log in and read.
    let (status, _) = app.get(&format!("/workspaces/{ws}/logs"), token).await;
    assert_eq!(status, StatusCode::OK);

    // Resend waits for its cool-down; the first link is still the one that counts.
    let first = smtp.wait_for("new@example.com", 1).await;
    let (status, b) = app
        .post("/auth/verify-email/resend", token, json!({}))
        .await;
    assert_eq!(
        (status, error_code(&b)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    app.client()
        .await
        .execute(
            "UPDATE users SET verification_sent_at = now() - interval '2 hours'",
            &[],
        )
        .await
        .unwrap();
    let (status, _) = app
        .post("/auth/verify-email/resend", token, json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let second = smtp.wait_for("new@example.com", 2).await;
    let (status, _) = app
        .raw(
            Method::POST,
            "/auth/verify-email",
            None,
            Some(json!({"token": first.token("#/verify-email")})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a replaced link no longer works"
    );
    let (status, user) = app
        .raw(
            Method::POST,
            "/auth/verify-email",
            None,
            Some(json!({"token": second.token("#/verify-email")})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["email_verified"], true);
    let (status, key) = app
        .post(
            &format!("/workspaces/{ws}/api-keys"),
            token,
            json!({"name": "k"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let (status, b) = app
        .post("/auth/verify-email/resend", token, json!({}))
        .await;
    assert_eq!(
        (status, error_code(&b)),
        (StatusCode::CONFLICT, "already_verified")
    );
}

#[tokio::test]
async fn verification_is_off_without_smtp_unless_required() {
    let app = TestApp::spawn().await;
    let acc = app.signup("dev@example.com").await;
    let (_, me) = app.get("/auth/me", &acc.token).await;
    assert_eq!(me["user"]["email_verified"], true);

    let app = TestApp::spawn_configured(|c| {
        c.teams.email_verification = perpetuo_admin::teams::Verification::Required;
    })
    .await;
    let (status, signup) = app
        .raw(
            Method::POST,
            "/auth/signup",
            None,
            Some(json!({"email": "strict@example.com", "password": "correct horse"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let ws = signup["workspace"]["id"].as_str().unwrap();
    let (status, b) = app
        .post(
            &format!("/workspaces/{ws}/api-keys"),
            signup["token"].as_str().unwrap(),
            json!({"name": "k"}),
        )
        .await;
    assert_eq!(
        (status, error_code(&b)),
        (StatusCode::FORBIDDEN, "email_unverified")
    );
}

#[tokio::test]
async fn password_reset_answers_alike_and_ends_every_session() {
    let smtp = SmtpSink::start();
    let app = app_with_mail(&smtp).await;
    let acc = app.signup("forgetful@example.com").await;
    let (_, second) = login(&app, "forgetful@example.com", "correct horse").await;
    let ask = |email: &str| {
        app.raw(
            Method::POST,
            "/auth/password-reset",
            None,
            Some(json!({ "email": email })),
        )
    };
    let (s1, known) = ask("forgetful@example.com").await;
    let (s2, unknown) = ask("nobody@example.com").await;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
    assert_eq!(
        known, unknown,
        "the answer does not tell whether the account exists"
    );

    let mail = smtp.wait_for("forgetful@example.com", 2).await;
    assert!(mail.subject().contains("Reset"), "{}", mail.subject());
    let token = mail.token("#/reset-password");
    let confirm = |token: &str, pw: &str| {
        app.raw(
            Method::POST,
            "/auth/password-reset/confirm",
            None,
            Some(json!({"token": token, "new_password": pw})),
        )
    };
    let (status, b) = confirm(&token, "short").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{b}");
    let (status, b) = confirm(&token, "a brand new password").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{b}");
    let (status, _) = confirm(&token, "yet another password").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "the link works once");

    for t in [&acc.token, second["token"].as_str().unwrap()] {
        let (status, _) = app.get("/auth/me", t).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "earlier sessions end");
    }
    let (status, _) = login(&app, "forgetful@example.com", "correct horse").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = login(&app, "forgetful@example.com", "a brand new password").await;
    assert_eq!(status, StatusCode::OK);
    assert!(smtp.messages_to("nobody@example.com").is_empty());
}

#[tokio::test]
async fn the_audit_log_records_who_changed_what() {
    let smtp = SmtpSink::start();
    let app = TestApp::spawn_configured(|c| {
        c.teams.smtp_url = Some(perpetuo_core::Secret::new(smtp.url()));
        c.teams.email_verification = perpetuo_admin::teams::Verification::Off;
        c.allowed_private_upstreams = "127.0.0.0/8".parse().unwrap();
    })
    .await;
    let t = Team::new(&app).await;
    let ws = t.ws();
    let (_, p) = app
        .post(
            &format!("/workspaces/{ws}/providers"),
            &t.admin.token,
            json!({"kind": "openai", "name": "main", "api_key": "sk-very-secret-9876"}),
        )
        .await;
    let pid = p["id"].as_str().unwrap();
    app.put(
        &format!("/workspaces/{ws}/providers/{pid}"),
        &t.admin.token,
        json!({"priority": 7}),
    )
    .await;
    let (_, key) = app
        .post(
            &format!("/workspaces/{ws}/api-keys"),
            &t.member.token,
            json!({"name": "ci"}),
        )
        .await;
    app.post(
        &format!(
            "/workspaces/{ws}/api-keys/{}/revoke",
            key["id"].as_str().unwrap()
        ),
        &t.member.token,
        json!({}),
    )
    .await;
    app.put(
        &format!("/workspaces/{ws}"),
        &t.owner.token,
        json!({"name": "Renamed", "limits": {"rpm": 60}}),
    )
    .await;
    let (status, _) = app
        .post(
            &format!("/workspaces/{ws}/invitations"),
            &t.admin.token,
            json!({"email": "new@example.com", "role": "member"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    app.put(
        &format!("/workspaces/{ws}/members/{}", t.viewer.user_id),
        &t.admin.token,
        json!({"role": "member"}),
    )
    .await;
    app.delete(&format!("/workspaces/{ws}/providers/{pid}"), &t.admin.token)
        .await;
    let (status, _) = login(&app, "member@example.com", "wrong password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let audit = format!("/workspaces/{ws}/audit");
    for acc in [&t.member, &t.viewer] {
        let (status, _) = app.get(&audit, &acc.token).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (status, page) = app.get(&audit, &t.admin.token).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let actions: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec![
            "provider.deleted",
            "member.role_changed",
            "member.invited",
            "workspace.updated",
            "api_key.revoked",
            "api_key.created",
            "provider.updated",
            "provider.created",
        ]
    );
    assert_eq!(page["total"], 8);
    let text = page.to_string();
    assert!(
        !text.contains("sk-very-secret"),
        "no secret in the audit log"
    );
    let entries = page["data"].as_array().unwrap();
    let updated = &entries[6];
    assert_eq!(updated["actor_email"], "admin@example.com");
    assert_eq!(updated["ip"], "127.0.0.1");
    assert_eq!(updated["before"]["priority"], 100);
    assert_eq!(updated["after"]["priority"], 7);
    assert_eq!(updated["target_id"], pid);
    let renamed = &entries[3];
    assert_eq!(renamed["before"]["name"], "Default");
    assert_eq!(renamed["after"]["name"], "Renamed");
    assert_eq!(renamed["after"]["limits"]["rpm"], 60);
    assert_eq!(entries[1]["before"]["role"], "viewer");
    assert_eq!(entries[1]["after"]["role"], "member");

    let (_, by_member) = app
        .get(
            &format!("{audit}?actor={}", t.member.user_id),
            &t.owner.token,
        )
        .await;
    assert_eq!(by_member["total"], 2);
    let (_, keys_only) = app
        .get(&format!("{audit}?action=api_key."), &t.owner.token)
        .await;
    assert_eq!(keys_only["total"], 2);
    let (_, one) = app
        .get(
            &format!("{audit}?action=member.invited&limit=1&page=1"),
            &t.owner.token,
        )
        .await;
    assert_eq!(one["data"][0]["after"]["email"], "new@example.com");
    let (_, second_page) = app
        .get(&format!("{audit}?limit=3&page=3"), &t.owner.token)
        .await;
    assert_eq!(second_page["data"].as_array().unwrap().len(), 2);
    let (status, _) = app.get(&format!("{audit}?limit=0"), &t.owner.token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = app.get(&format!("{audit}?actor=me"), &t.owner.token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The failed login is kept against the account, outside any workspace, and the
    // account sees it.
    let (status, events) = app.get("/auth/events", &t.member.token).await;
    assert_eq!(status, StatusCode::OK, "{events}");
    assert_eq!(events["data"][0]["action"], "auth.login_failed");
    assert_eq!(events["data"][0]["ip"], "127.0.0.1");
    let (_, others) = app.get("/auth/events", &t.admin.token).await;
    assert!(others["data"].as_array().unwrap().is_empty(), "{others}");
    let failures: i64 = app
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action = 'auth.login_failed'
             AND actor_id = $1 AND workspace_id IS NULL AND ip = '127.0.0.1'",
            &[&t.member.user_id.parse::<Uuid>().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failures, 1);
}

#[tokio::test]
async fn an_invitation_that_cannot_be_mailed_is_not_kept() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("smtp://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let app = TestApp::spawn_configured(|c| {
        c.teams.smtp_url = Some(perpetuo_core::Secret::new(url));
        c.teams.email_verification = perpetuo_admin::teams::Verification::Off;
    })
    .await;
    let owner = app.signup("owner@example.com").await;
    let url = format!("/workspaces/{}/invitations", owner.workspace);
    let (status, b) = app
        .post(
            &url,
            &owner.token,
            json!({"email": "b@example.com", "role": "member"}),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    let (_, pending) = app.get(&url, &owner.token).await;
    assert!(pending["data"].as_array().unwrap().is_empty(), "{pending}");
    let (_, audit) = app
        .get(
            &format!("/workspaces/{}/audit", owner.workspace),
            &owner.token,
        )
        .await;
    assert_eq!(audit["total"], 0, "{audit}");
}
