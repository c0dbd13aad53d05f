//! The audit log records who changed what.

use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use super::{login, Team};
use crate::helpers::{SmtpSink, TestApp};

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
