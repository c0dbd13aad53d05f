//! Credential routes under pressure: per-IP and per-account throttles (429 with
//! Retry-After), and a saturated password hasher (503 busy, never 500).

use std::net::IpAddr;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{error_code, TestApp};

/// A client whose connections come from `ip` (any 127.0.0.0/8 address works locally).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn post(http: &reqwest::Client, app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    http.post(format!("{}{path}", app.base))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn assert_rate_limited(resp: reqwest::Response) {
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(error_code(&body), "rate_limited");
}

fn login(email: &str, password: &str) -> Value {
    json!({"email": email, "password": password})
}

#[tokio::test]
async fn credential_attempts_are_limited_per_client_ip() {
    let app = TestApp::spawn_configured(|c| c.auth.rate_per_ip = 3).await;
    let local = client_from("127.0.0.1");
    for i in 0..3 {
        let r = post(
            &local,
            &app,
            "/auth/login",
            login(&format!("u{i}@example.com"), "x"),
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    assert_rate_limited(post(&local, &app, "/auth/login", login("u9@example.com", "x")).await)
        .await;
    // Signup shares the allowance, and a forwarded-for header does not change the client.
    let r = local
        .post(format!("{}/auth/signup", app.base))
        .header("x-forwarded-for", "203.0.113.7")
        .json(&login("new@example.com", "correct horse"))
        .send()
        .await
        .unwrap();
    assert_rate_limited(r).await;
    // Another address has its own allowance.
    let other = client_from("127.0.0.2");
    let r = post(
        &other,
        &app,
        "/auth/signup",
        login("new@example.com", "correct horse"),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn failed_logins_lock_the_account_and_only_that_account() {
    let app = TestApp::spawn_configured(|c| c.auth.rate_per_account = 3).await;
    app.signup("target@example.com").await;
    app.signup("bystander@example.com").await;
    let http = client_from("127.0.0.1");
    for _ in 0..3 {
        let r = post(
            &http,
            &app,
            "/auth/login",
            login("target@example.com", "guess"),
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // Refused before the password is checked: even the right one gets no answer now,
    // from any address.
    assert_rate_limited(
        post(
            &http,
            &app,
            "/auth/login",
            login("TARGET@example.com", "correct horse"),
        )
        .await,
    )
    .await;
    let elsewhere = client_from("127.0.0.3");
    assert_rate_limited(
        post(
            &elsewhere,
            &app,
            "/auth/login",
            login("target@example.com", "correct horse"),
        )
        .await,
    )
    .await;

    // Successful logins use up nothing.
    for _ in 0..5 {
        let r = post(
            &http,
            &app,
            "/auth/login",
            login("bystander@example.com", "correct horse"),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn signups_of_one_email_are_limited_too() {
    let app = TestApp::spawn_configured(|c| c.auth.rate_per_account = 2).await;
    app.signup("taken@example.com").await;
    let http = client_from("127.0.0.1");
    for _ in 0..2 {
        let r = post(
            &http,
            &app,
            "/auth/signup",
            login("taken@example.com", "correct horse"),
        )
        .await;
        assert_eq!(r.status(), StatusCode::CONFLICT);
    }
    assert_rate_limited(
        post(
            &http,
            &app,
            "/auth/signup",
            login("taken@example.com", "correct horse"),
        )
        .await,
    )
    .await;
}

#[tokio::test]
async fn a_saturated_hasher_answers_busy_and_never_fails() {
    let app = TestApp::spawn_configured(|c| {
        c.auth.hash_concurrency = 1;
        c.auth.hash_wait_ms = 0;
    })
    .await;
    app.signup("busy@example.com").await;
    let http = reqwest::Client::new();
    let mut busy = None;
    // Eight logins at once against one hashing slot; a few rounds at most.
    for _ in 0..10 {
        let rounds = futures::future::join_all((0..8).map(|_| {
            http.post(format!("{}/auth/login", app.base))
                .json(&login("busy@example.com", "correct horse"))
                .send()
        }))
        .await;
        for r in rounds {
            let r = r.unwrap();
            match r.status() {
                StatusCode::OK => {}
                StatusCode::SERVICE_UNAVAILABLE => busy = Some(r),
                other => panic!("unexpected {other}: {}", r.text().await.unwrap()),
            }
        }
        if busy.is_some() {
            break;
        }
    }
    let r = busy.expect("one slot and eight concurrent logins: at least one 503");
    assert!(
        r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(error_code(&body), "busy");
}

/// A login attempt through `http` whose `X-Forwarded-For` says `forwarded_for`.
async fn login_forwarded(
    http: &reqwest::Client,
    app: &TestApp,
    forwarded_for: &str,
    email: &str,
) -> reqwest::Response {
    http.post(format!("{}/auth/login", app.base))
        .header("x-forwarded-for", forwarded_for)
        .json(&login(email, "wrong password"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_allowance() {
    let app = TestApp::spawn_configured(|c| {
        c.auth.rate_per_ip = 2;
        c.trusted_proxies = "127.0.0.1/32".parse().unwrap();
    })
    .await;
    let account = app.signup("fwd@example.com").await;
    let proxy = client_from("127.0.0.1");
    for _ in 0..2 {
        let r = login_forwarded(&proxy, &app, "198.51.100.1", "fwd@example.com").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    assert_rate_limited(login_forwarded(&proxy, &app, "198.51.100.1", "fwd@example.com").await)
        .await;
    // A client's own entries stay left of the one the proxy appends: still that client.
    assert_rate_limited(
        login_forwarded(
            &proxy,
            &app,
            "203.0.113.50, 198.51.100.1",
            "fwd@example.com",
        )
        .await,
    )
    .await;
    // Another forwarded client is not throttled by the first, nor is the proxy itself.
    let r = login_forwarded(&proxy, &app, "198.51.100.2", "fwd@example.com").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = login_forwarded(&proxy, &app, "2001:db8::1", "fwd@example.com").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // A peer that is not a trusted proxy is its own client, whatever it forwards.
    let untrusted = client_from("127.0.0.2");
    let r = login_forwarded(&untrusted, &app, "198.51.100.1", "fwd@example.com").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The failed logins are recorded with the forwarded address.
    let (_, events) = app.get("/auth/events", &account.token).await;
    let ips: Vec<&str> = events["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["ip"].as_str())
        .collect();
    for ip in ["198.51.100.1", "198.51.100.2", "2001:db8::1", "127.0.0.2"] {
        assert!(ips.contains(&ip), "{ip} not in {ips:?}");
    }
    assert!(!ips.contains(&"127.0.0.1"), "{ips:?}");
}

#[tokio::test]
async fn without_trusted_proxies_a_forwarded_for_header_cannot_dodge_the_throttle() {
    let app = TestApp::spawn_configured(|c| c.auth.rate_per_ip = 2).await;
    let http = client_from("127.0.0.1");
    for spoofed in ["198.51.100.1", "198.51.100.2"] {
        let r = login_forwarded(&http, &app, spoofed, "who@example.com").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    assert_rate_limited(login_forwarded(&http, &app, "198.51.100.3", "who@example.com").await)
        .await;
}

fn reset_confirm(token: &str) -> Value {
    json!({"token": token, "new_password": "a brand new password"})
}

/// Stores a live password-reset token for `user` and returns it.
async fn reset_token(app: &TestApp, user: &str) -> String {
    let t = perpetuo_core::token::generate("ppr-reset-");
    perpetuo_core::db::account_tokens::create(
        &app.client().await,
        user.parse().unwrap(),
        perpetuo_core::db::account_tokens::Purpose::ResetPassword,
        &t.hash,
        3600,
    )
    .await
    .unwrap();
    t.plaintext.expose().clone()
}

#[tokio::test]
async fn a_junk_reset_token_is_refused_before_any_password_is_hashed() {
    let app = TestApp::spawn().await;
    let acc = app.signup("reset@example.com").await;
    let http = client_from("127.0.0.1");
    let before = app.hasher.runs();
    for junk in [
        "ppr-reset-junk",
        "x",
        "ppr-reset-0000000000000000000000000000000000",
    ] {
        let r = post(
            &http,
            &app,
            "/auth/password-reset/confirm",
            reset_confirm(junk),
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body: Value = r.json().await.unwrap();
        assert_eq!(error_code(&body), "token_invalid");
    }
    assert_eq!(
        app.hasher.runs(),
        before,
        "no argon2id work for a junk token"
    );

    // A live token is hashed once and works.
    let token = reset_token(&app, &acc.user_id).await;
    let r = post(
        &http,
        &app,
        "/auth/password-reset/confirm",
        reset_confirm(&token),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.hasher.runs(), before + 1);
}

#[tokio::test]
async fn reset_confirms_are_throttled_per_client_like_logins() {
    let app = TestApp::spawn_configured(|c| c.auth.rate_per_ip = 3).await;
    let acc = app.signup("reset@example.com").await;
    let token = reset_token(&app, &acc.user_id).await;
    let http = client_from("127.0.0.4");
    for _ in 0..3 {
        let r = post(
            &http,
            &app,
            "/auth/password-reset/confirm",
            reset_confirm("ppr-reset-junk"),
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
    // Past the allowance even a live token waits; the allowance is the one logins use.
    assert_rate_limited(
        post(
            &http,
            &app,
            "/auth/password-reset/confirm",
            reset_confirm(&token),
        )
        .await,
    )
    .await;
    assert_rate_limited(post(&http, &app, "/auth/login", login("reset@example.com", "x")).await)
        .await;
    let other = client_from("127.0.0.5");
    let r = post(
        &other,
        &app,
        "/auth/password-reset/confirm",
        reset_confirm(&token),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}
