//! Sign-up, login, `me`, and token checks.

use base64::Engine;
use jsonwebtoken::{encode, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::helpers::{claims, error_code, TestApp, JWT_SECRET};

#[tokio::test]
async fn signup_creates_user_workspace_membership_and_key_shown_once() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .raw(
            Method::POST,
            "/auth/signup",
            None,
            Some(json!({"email": "  Ada@Example.COM ", "password": "correct horse"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert_eq!(body["workspace"]["role"], "owner");
    let key = body["api_key"]["key"].as_str().unwrap();
    assert!(key.starts_with("pp-") && key.len() == 46, "{key}");
    assert!(key.starts_with(body["api_key"]["prefix"].as_str().unwrap()));
    assert!(body.get("password_hash").is_none() && body["user"].get("password_hash").is_none());

    let db = app.client().await;
    let hashes: Vec<Vec<u8>> = db
        .query("SELECT key_hash FROM api_keys", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(hashes, vec![Sha256::digest(key.as_bytes()).to_vec()]);
    let dump: String = db
        .query_one(
            "SELECT string_agg(t::text, ' ') FROM (SELECT * FROM api_keys) t",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!dump.contains(key), "plaintext key stored");
    let members: i64 = db
        .query_one(
            "SELECT count(*) FROM workspace_members WHERE role = 'owner'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(members, 1);
    let pw: String = db
        .query_one("SELECT password_hash FROM users", &[])
        .await
        .unwrap()
        .get(0);
    assert!(pw.starts_with("$argon2id$"));

    // The key is never shown again.
    let token = body["token"].as_str().unwrap();
    let ws = body["workspace"]["id"].as_str().unwrap();
    let (_, keys) = app.get(&format!("/workspaces/{ws}/api-keys"), token).await;
    assert!(!keys.to_string().contains(key));
}

#[tokio::test]
async fn signup_validation_errors_name_the_fields() {
    let app = TestApp::spawn().await;
    let cases = [
        (json!({}), vec!["email", "password"]),
        (
            json!({"email": "not-an-email", "password": "long enough"}),
            vec!["email"],
        ),
        (
            json!({"email": "a@example.com", "password": "short"}),
            vec!["password"],
        ),
        (json!({"email": "a@example.com"}), vec!["password"]),
    ];
    for (body, fields) in cases {
        let (status, resp) = app
            .raw(Method::POST, "/auth/signup", None, Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {resp}");
        assert_eq!(error_code(&resp), "validation_error");
        for f in fields {
            assert!(
                resp["error"]["fields"][f].is_string(),
                "{f} missing in {resp}"
            );
        }
    }
    let db = app.client().await;
    let n: i64 = db
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn duplicate_email_is_a_conflict_and_concurrent_signups_give_one_account() {
    let app = TestApp::spawn().await;
    app.signup("dup@example.com").await;
    let (status, body) = app
        .raw(
            Method::POST,
            "/auth/signup",
            None,
            Some(json!({"email": "DUP@example.com", "password": "another pass"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&body), "conflict");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        !message.contains("exists") && !message.contains("dup@"),
        "the message names no account: {message}"
    );

    let req = || {
        app.raw(
            Method::POST,
            "/auth/signup",
            None,
            Some(json!({"email": "race@example.com", "password": "correct horse"})),
        )
    };
    let (a, b) = tokio::join!(req(), req());
    let mut statuses = vec![a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, vec![StatusCode::CREATED, StatusCode::CONFLICT]);
    let db = app.client().await;
    let n: i64 = db
        .query_one(
            "SELECT count(*) FROM users WHERE email = 'race@example.com'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let ws: i64 = db
        .query_one("SELECT count(*) FROM workspaces", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(ws, 2, "a failed signup must not leave a workspace");
}

#[tokio::test]
async fn signup_is_atomic_when_a_later_step_fails() {
    let app = TestApp::spawn().await;
    let db = app.client().await;
    db.batch_execute(
        "CREATE FUNCTION fail_ws() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'boom'; END $$;
         CREATE TRIGGER fail_ws BEFORE INSERT ON api_keys FOR EACH ROW EXECUTE FUNCTION fail_ws();",
    )
    .await
    .unwrap();
    let (status, body) = app
        .raw(
            Method::POST,
            "/auth/signup",
            None,
            Some(json!({"email": "half@example.com", "password": "correct horse"})),
        )
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(error_code(&body), "internal_error");
    assert!(
        !body.to_string().contains("boom"),
        "internals leaked: {body}"
    );
    for table in ["users", "workspaces", "workspace_members", "api_keys"] {
        let n: i64 = db
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table} has a half-written row");
    }
}

#[tokio::test]
async fn login_and_me() {
    let app = TestApp::spawn().await;
    let acc = app.signup("bob@example.com").await;
    let (status, body) = app
        .raw(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({"email": "BOB@example.com ", "password": "correct horse"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["token"].as_str().unwrap();
    let (status, me) = app.get("/auth/me", token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["user"]["email"], "bob@example.com");
    assert_eq!(me["workspaces"][0]["id"], acc.workspace.as_str());

    assert!(body["refresh_token"].as_str().unwrap().starts_with("ppr-"));

    let mut refusals = vec![];
    for (email, pw) in [
        ("bob@example.com", "wrong password"),
        ("nobody@example.com", "correct horse"),
    ] {
        let (status, body) = app
            .raw(
                Method::POST,
                "/auth/login",
                None,
                Some(json!({"email": email, "password": pw})),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(error_code(&body), "invalid_credentials");
        refusals.push(body);
    }
    assert_eq!(
        refusals[0], refusals[1],
        "an unknown email and a wrong password get the same answer"
    );
}

fn b64(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let acc = app.signup("eve@example.com").await;
    let sid = claims(&acc.token)["sid"].as_str().unwrap().to_string();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let sign = |claims: &serde_json::Value, secret: &[u8]| {
        encode(
            &Header::default(),
            claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    let good_claims = json!({"sub": acc.user_id, "sid": sid, "iss": "perpetuo-admin",
        "aud": "perpetuo-admin-api", "iat": now, "exp": now + 3600});
    let with = |key: &str, value: serde_json::Value| {
        let mut c = good_claims.clone();
        c[key] = value;
        c
    };
    let without = |key: &str| {
        let mut c = good_claims.clone();
        c.as_object_mut().unwrap().remove(key);
        c
    };
    let secret = JWT_SECRET.as_bytes();
    let expired = sign(&with("exp", json!(now - 3600)), secret);
    let wrong_secret = sign(&good_claims, b"another-secret-another-secret-123456");
    let wrong_iss = sign(&with("iss", json!("someone-else")), secret);
    let wrong_aud = sign(&with("aud", json!("perpetuo-gateway")), secret);
    let no_iss = sign(&without("iss"), secret);
    let no_aud = sign(&without("aud"), secret);
    let no_sid = sign(&without("sid"), secret);
    let unknown_sid = sign(&with("sid", json!(uuid::Uuid::now_v7())), secret);
    let other_users_sid = {
        let other = app.signup("mallory@example.com").await;
        sign(&with("sid", claims(&other.token)["sid"].clone()), secret)
    };
    let alg_none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&good_claims)
    );
    let valid = sign(&good_claims, secret);
    let sig = valid.rsplit('.').next().unwrap();
    let rs256 = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "RS256", "typ": "JWT"})),
        b64(&good_claims),
        sig
    );

    let (status, body) = app.raw(Method::GET, "/auth/me", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "missing_token");
    for (name, bad) in [
        ("garbage", "garbage"),
        ("expired", expired.as_str()),
        ("wrong secret", wrong_secret.as_str()),
        ("wrong iss", wrong_iss.as_str()),
        ("wrong aud", wrong_aud.as_str()),
        ("no iss", no_iss.as_str()),
        ("no aud", no_aud.as_str()),
        ("no sid", no_sid.as_str()),
        ("unknown sid", unknown_sid.as_str()),
        ("another user's sid", other_users_sid.as_str()),
        ("alg none", alg_none.as_str()),
        ("rs256", rs256.as_str()),
    ] {
        let (status, body) = app.get("/auth/me", bad).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "accepted: {name}");
        assert_eq!(error_code(&body), "invalid_token");
    }
    let (status, _) = app.get("/auth/me", &valid).await;
    assert_eq!(status, StatusCode::OK, "the control token must work");
}
