//! Security headers on everything the admin API serves: API answers, errors, 404s and
//! the dashboard's files.

use reqwest::header::HeaderMap;
use reqwest::StatusCode;

use crate::helpers::TestApp;

fn assert_security_headers(what: &str, h: &HeaderMap) {
    let csp = h
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP"))
        .to_str()
        .unwrap();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ] {
        assert!(
            csp.contains(directive),
            "{what}: CSP lacks {directive}: {csp}"
        );
    }
    assert!(
        !csp.contains("unsafe-"),
        "{what}: nothing inline or eval: {csp}"
    );
    assert_eq!(h["x-frame-options"], "DENY", "{what}");
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(h["referrer-policy"], "no-referrer", "{what}");
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let dir = std::env::temp_dir().join(format!("perpetuo-dash-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><title>Perpetuo</title>",
    )
    .unwrap();
    std::fs::write(dir.join("assets/app.js"), "console.log(1)").unwrap();
    let served = dir.clone();
    let app = TestApp::spawn_configured(move |c| c.dashboard_dir = served).await;
    let acc = app.signup("headers@example.com").await;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{}{path}", app.base));

    let cases = [
        (
            "api",
            get("/auth/me").bearer_auth(&acc.token),
            StatusCode::OK,
        ),
        ("401", get("/auth/me"), StatusCode::UNAUTHORIZED),
        ("404", get("/no/such/route"), StatusCode::NOT_FOUND),
        ("dashboard index", get("/"), StatusCode::OK),
        ("dashboard asset", get("/assets/app.js"), StatusCode::OK),
        ("openapi", get("/openapi.json"), StatusCode::OK),
    ];
    for (what, req, status) in cases {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), status, "{what}");
        assert_security_headers(what, r.headers());
    }
    std::fs::remove_dir_all(dir).unwrap();
}
