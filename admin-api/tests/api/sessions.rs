//! Admin sessions: refresh-token rotation and reuse detection, logout, password change,
//! and expired access tokens.

use jsonwebtoken::{encode, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{claims, error_code, TestApp, JWT_SECRET};

async fn refresh(app: &TestApp, refresh_token: &str) -> (StatusCode, Value) {
    app.raw(
        Method::POST,
        "/auth/refresh",
        None,
        Some(json!({"refresh_token": refresh_token})),
    )
    .await
}

async fn me_status(app: &TestApp, token: &str) -> StatusCode {
    app.get("/auth/me", token).await.0
}

#[tokio::test]
async fn refresh_rotates_and_only_the_hash_is_stored() {
    let app = TestApp::spawn().await;
    let acc = app.signup("rot@example.com").await;
    let (status, body) = refresh(&app, &acc.refresh_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["token"].as_str().unwrap();
    let next = body["refresh_token"].as_str().unwrap();
    assert_ne!(next, acc.refresh_token);
    assert_eq!(me_status(&app, token).await, StatusCode::OK);
    assert_eq!(
        claims(token)["sid"],
        claims(&acc.token)["sid"],
        "a refresh stays in its session"
    );
    let (status, again) = refresh(&app, next).await;
    assert_eq!(status, StatusCode::OK, "{again}");

    let db = app.client().await;
    let dump: String = db
        .query_one(
            "SELECT string_agg(t::text, ' ') FROM (SELECT * FROM admin_refresh_tokens) t",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for plaintext in [acc.refresh_token.as_str(), next] {
        assert!(!dump.contains(plaintext), "plaintext refresh token stored");
        assert!(!dump.contains(plaintext.trim_start_matches("ppr-")));
    }
}

#[tokio::test]
async fn a_reused_refresh_token_revokes_its_session() {
    let app = TestApp::spawn().await;
    let acc = app.signup("reuse@example.com").await;
    let (_, first) = refresh(&app, &acc.refresh_token).await;
    let stolen_later = first["refresh_token"].as_str().unwrap();
    let live_token = first["token"].as_str().unwrap();
    assert_eq!(me_status(&app, live_token).await, StatusCode::OK);

    // The old token comes back: someone holds a copy.
    let (status, body) = refresh(&app, &acc.refresh_token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "invalid_refresh_token");
    // The whole session is over: its newest refresh token and its access tokens too.
    let (status, _) = refresh(&app, stolen_later).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(me_status(&app, live_token).await, StatusCode::UNAUTHORIZED);
    assert_eq!(me_status(&app, &acc.token).await, StatusCode::UNAUTHORIZED);

    // Other sessions of the same user are not touched.
    let (status, login) = app
        .raw(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": "reuse@example.com", "password": "correct horse"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        me_status(&app, login["token"].as_str().unwrap()).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn concurrent_uses_of_one_refresh_token_give_at_most_one_new_token() {
    let app = TestApp::spawn().await;
    let acc = app.signup("race@example.com").await;
    let (a, b) = tokio::join!(
        refresh(&app, &acc.refresh_token),
        refresh(&app, &acc.refresh_token)
    );
    let mut statuses = vec![a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, vec![StatusCode::OK, StatusCode::UNAUTHORIZED]);
}

#[tokio::test]
async fn unknown_or_missing_refresh_tokens_are_refused() {
    let app = TestApp::spawn().await;
    app.signup("unk@example.com").await;
    let (status, body) = refresh(&app, "ppr-not-a-real-token").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "invalid_refresh_token");
    let (status, body) = app
        .raw(Method::POST, "/auth/refresh", None, Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["fields"]["refresh_token"].is_string(),
        "{body}"
    );
}

#[tokio::test]
async fn logout_ends_the_session_and_only_that_session() {
    let app = TestApp::spawn().await;
    let acc = app.signup("bye@example.com").await;
    let (_, other) = app
        .raw(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": "bye@example.com", "password": "correct horse"})),
        )
        .await;
    let other_token = other["token"].as_str().unwrap();

    let (status, body) = app
        .raw(Method::POST, "/auth/logout", Some(&acc.token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = app.get("/auth/me", &acc.token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "invalid_token");
    let (status, _) = app
        .get(
            &format!("/workspaces/{}/api-keys", acc.workspace),
            &acc.token,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = refresh(&app, &acc.refresh_token).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the refresh token ends too"
    );

    assert_eq!(me_status(&app, other_token).await, StatusCode::OK);
    let (status, _) = app.raw(Method::POST, "/auth/logout", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn changing_the_password_ends_every_earlier_session() {
    let app = TestApp::spawn().await;
    let acc = app.signup("pw@example.com").await;
    let (_, second) = app
        .raw(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": "pw@example.com", "password": "correct horse"})),
        )
        .await;
    let second_token = second["token"].as_str().unwrap();
    let second_refresh = second["refresh_token"].as_str().unwrap();

    let (status, body) = app
        .post(
            "/auth/password",
            &acc.token,
            json!({"current_password": "wrong horse", "new_password": "battery staple"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["fields"]["current_password"].is_string(),
        "{body}"
    );
    let (status, body) = app
        .post(
            "/auth/password",
            &acc.token,
            json!({"current_password": "correct horse", "new_password": "short"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["fields"]["new_password"].is_string(),
        "{body}"
    );
    assert_eq!(
        me_status(&app, &acc.token).await,
        StatusCode::OK,
        "refused changes end nothing"
    );

    let (status, body) = app
        .post(
            "/auth/password",
            &acc.token,
            json!({"current_password": "correct horse", "new_password": "battery staple"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new_token = body["token"].as_str().unwrap();
    let new_refresh = body["refresh_token"].as_str().unwrap();

    for old in [acc.token.as_str(), second_token] {
        assert_eq!(me_status(&app, old).await, StatusCode::UNAUTHORIZED);
    }
    for old in [acc.refresh_token.as_str(), second_refresh] {
        assert_eq!(refresh(&app, old).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(me_status(&app, new_token).await, StatusCode::OK);
    let (status, _) = refresh(&app, new_refresh).await;
    assert_eq!(status, StatusCode::OK);

    let login = |pw: &'static str| {
        app.raw(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": "pw@example.com", "password": pw})),
        )
    };
    assert_eq!(login("correct horse").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(login("battery staple").await.0, StatusCode::OK);
}

#[tokio::test]
async fn an_expired_access_token_is_refused_but_its_refresh_token_works() {
    let app = TestApp::spawn().await;
    let acc = app.signup("late@example.com").await;
    let mut c = claims(&acc.token);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    c["iat"] = json!(now - 7200);
    c["exp"] = json!(now - 3600);
    let expired = encode(
        &Header::default(),
        &c,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let (status, body) = app.get("/auth/me", &expired).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "invalid_token");

    let (status, body) = refresh(&app, &acc.refresh_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        me_status(&app, body["token"].as_str().unwrap()).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn access_tokens_are_short_lived_and_name_issuer_audience_and_session() {
    let app = TestApp::spawn_configured(|c| c.jwt_ttl_seconds = 900).await;
    let acc = app.signup("claims@example.com").await;
    let c = claims(&acc.token);
    assert_eq!(c["iss"], "perpetuo-admin");
    assert_eq!(c["aud"], "perpetuo-admin-api");
    assert!(c["sid"].is_string());
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 900);
}
