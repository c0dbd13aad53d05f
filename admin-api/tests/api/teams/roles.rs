//! Members and roles: roles change, the last owner stays, ownership transfers.

use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use super::Team;
use crate::helpers::{error_code, TestApp};

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
