//! Invitations under the rules of who may send them: verified accounts only, throttled
//! per inviter and per workspace, revoked with a member who goes, and accepted only while
//! the inviter may still grant the role.

use perpetuo_core::db::workspaces::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{error_code, Account, TestApp};

async fn add(app: &TestApp, workspace: &str, acc: &Account, role: Role) {
    perpetuo_core::db::workspaces::add_member(
        &app.client().await,
        workspace.parse().unwrap(),
        acc.user_id.parse().unwrap(),
        role,
    )
    .await
    .unwrap();
}

async fn invite(app: &TestApp, ws: &str, by: &Account, email: &str) -> (StatusCode, Value) {
    app.post(
        &format!("/workspaces/{ws}/invitations"),
        &by.token,
        json!({"email": email, "role": "member"}),
    )
    .await
}

/// An invitation stored as the API stores one, whose token the test knows.
async fn invitation(app: &TestApp, ws: &str, by: &Account, email: &str, role: Role) -> String {
    let t = perpetuo_core::token::generate("ppi-");
    perpetuo_core::db::invitations::create(
        &app.client().await,
        ws.parse().unwrap(),
        email,
        role,
        &t.hash,
        by.user_id.parse().unwrap(),
    )
    .await
    .unwrap();
    t.plaintext.expose().clone()
}

async fn accept(app: &TestApp, by: &Account, token: &str) -> (StatusCode, Value) {
    app.post("/invitations/accept", &by.token, json!({ "token": token }))
        .await
}

async fn set_role(app: &TestApp, ws: &str, acc: &Account, role: Role) {
    perpetuo_core::db::workspaces::set_role(
        &app.client().await,
        ws.parse().unwrap(),
        acc.user_id.parse().unwrap(),
        role,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn only_verified_accounts_invite() {
    let app = TestApp::spawn_configured(|c| {
        c.teams.email_verification = perpetuo_admin::teams::Verification::Required;
    })
    .await;
    let owner = app.signup("owner@example.com").await;
    let (status, b) = invite(&app, &owner.workspace, &owner, "guest@example.com").await;
    assert_eq!(
        (status, error_code(&b)),
        (StatusCode::FORBIDDEN, "email_unverified")
    );
    perpetuo_core::db::users::mark_verified(&app.client().await, owner.user_id.parse().unwrap())
        .await
        .unwrap();
    let (status, b) = invite(&app, &owner.workspace, &owner, "guest@example.com").await;
    assert_eq!(status, StatusCode::CREATED, "{b}");

    // With verification off, every account counts as verified.
    let app = TestApp::spawn_configured(|c| {
        c.teams.email_verification = perpetuo_admin::teams::Verification::Off;
    })
    .await;
    let owner = app.signup("owner@example.com").await;
    app.client()
        .await
        .execute("UPDATE users SET email_verified_at = NULL", &[])
        .await
        .unwrap();
    let (status, b) = invite(&app, &owner.workspace, &owner, "guest@example.com").await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
}

async fn assert_throttled((status, body): (StatusCode, Value)) {
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        "{body}"
    );
}

#[tokio::test]
async fn invitations_are_throttled_per_inviter_and_per_workspace() {
    let app = TestApp::spawn_configured(|c| {
        c.teams.invitation_rate_per_inviter = 2;
        c.teams.invitation_rate_per_workspace = 3;
    })
    .await;
    let owner = app.signup("owner@example.com").await;
    let admin = app.signup("admin@example.com").await;
    let ws = owner.workspace.clone();
    add(&app, &ws, &admin, Role::Admin).await;

    for to in ["a@example.com", "b@example.com"] {
        let (status, b) = invite(&app, &ws, &owner, to).await;
        assert_eq!(status, StatusCode::CREATED, "{b}");
    }
    // The third from one inviter waits, with Retry-After; so it does in another workspace.
    let resp = app
        .http
        .post(format!("{}/workspaces/{ws}/invitations", app.base))
        .bearer_auth(&owner.token)
        .json(&json!({"email": "c@example.com", "role": "member"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&wait), "Retry-After {wait}");
    let (_, elsewhere) = app
        .post("/workspaces", &owner.token, json!({"name": "elsewhere"}))
        .await;
    let elsewhere = elsewhere["id"].as_str().unwrap();
    assert_throttled(invite(&app, elsewhere, &owner, "c@example.com").await).await;

    // Another inviter sends the workspace's third, then the workspace is full.
    let (status, b) = invite(&app, &ws, &admin, "d@example.com").await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    assert_throttled(invite(&app, &ws, &admin, "e@example.com").await).await;
    // The admin's own allowance was not used up by that refusal.
    let (status, b) = invite(&app, &admin.workspace, &admin, "e@example.com").await;
    assert_eq!(status, StatusCode::CREATED, "{b}");

    let (_, pending) = app
        .get(&format!("/workspaces/{ws}/invitations"), &owner.token)
        .await;
    assert_eq!(pending["data"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_removed_member_takes_their_invitations_along() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner@example.com").await;
    let admin = app.signup("admin@example.com").await;
    let ws = owner.workspace.clone();
    add(&app, &ws, &admin, Role::Admin).await;
    let (status, sent) = invite(&app, &ws, &admin, "x@example.com").await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    let token = invitation(&app, &ws, &admin, "y@example.com", Role::Viewer).await;
    let (status, kept) = invite(&app, &ws, &owner, "z@example.com").await;
    assert_eq!(status, StatusCode::CREATED, "{kept}");

    let (status, removed) = app
        .delete(
            &format!("/workspaces/{ws}/members/{}", admin.user_id),
            &owner.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    let revoked = removed["revoked_invitations"].as_array().unwrap();
    assert_eq!(revoked.len(), 2, "{removed}");
    assert!(revoked.contains(&sent["id"]));

    let (_, pending) = app
        .get(&format!("/workspaces/{ws}/invitations"), &owner.token)
        .await;
    let ids: Vec<&Value> = pending["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["id"])
        .collect();
    assert_eq!(ids, vec![&kept["id"]]);
    let guest = app.signup("y@example.com").await;
    let (status, b) = accept(&app, &guest, &token).await;
    assert_eq!(
        (status, error_code(&b)),
        (StatusCode::BAD_REQUEST, "invitation_invalid")
    );

    let (_, audit) = app
        .get(
            &format!("/workspaces/{ws}/audit?action=member.removed"),
            &owner.token,
        )
        .await;
    assert_eq!(
        audit["data"][0]["after"]["revoked_invitations"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn accepting_checks_that_the_inviter_may_still_grant_the_role() {
    let app = TestApp::spawn().await;
    let owner = app.signup("owner@example.com").await;
    let second = app.signup("second@example.com").await;
    let ws = owner.workspace.clone();
    add(&app, &ws, &second, Role::Owner).await;

    // An admin's invitation, the admin then made a member.
    let token = invitation(&app, &ws, &second, "guest@example.com", Role::Member).await;
    set_role(&app, &ws, &second, Role::Member).await;
    let guest = app.signup("guest@example.com").await;
    let (status, b) = accept(&app, &guest, &token).await;
    assert_eq!(
        (status, error_code(&b)),
        (StatusCode::FORBIDDEN, "inviter_cannot_grant")
    );
    let (status, _) = app.get(&format!("/workspaces/{ws}"), &guest.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not joined");
    // Admin again, the invitation works.
    set_role(&app, &ws, &second, Role::Admin).await;
    let (status, b) = accept(&app, &guest, &token).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["role"], "member");

    // An owner's invitation to become owner, the inviter then only an admin.
    let token = invitation(&app, &ws, &owner, "heir@example.com", Role::Owner).await;
    set_role(&app, &ws, &owner, Role::Admin).await;
    let heir = app.signup("heir@example.com").await;
    let (status, b) = accept(&app, &heir, &token).await;
    assert_eq!(
        (status, error_code(&b)),
        (StatusCode::FORBIDDEN, "inviter_cannot_grant")
    );
    set_role(&app, &ws, &owner, Role::Owner).await;
    let (status, b) = accept(&app, &heir, &token).await;
    assert_eq!(status, StatusCode::OK, "{b}");
    assert_eq!(b["role"], "owner");
}
