//! Email through a real SMTP server: an invitation is mailed and accepted once, an
//! unverified account waits for its verification, a password reset answers alike and ends
//! every session, an invitation that cannot be mailed is not kept.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{app_with_mail, login, verify};
use crate::helpers::{error_code, SmtpSink, TestApp};

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
