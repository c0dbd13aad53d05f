//! Error shapes for framework rejections, limits, unknown routes; health; OpenAPI.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{error_code, TestApp};

#[tokio::test]
async fn rejections_use_the_error_shape() {
    let app = TestApp::spawn().await;
    let acc = app.signup("e@example.com").await;
    let url = format!("{}/workspaces", app.base);

    let resp = app
        .http
        .post(&url)
        .bearer_auth(&acc.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&resp.json().await.unwrap()), "invalid_json");

    let resp = app
        .http
        .post(&url)
        .bearer_auth(&acc.token)
        .body(r#"{"name":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        error_code(&resp.json().await.unwrap()),
        "unsupported_media_type"
    );

    let (status, body) = app
        .post("/workspaces", &acc.token, json!({"name": 42}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "invalid_body");

    let big = json!({"name": "x".repeat(2 * 1024 * 1024)});
    let (status, body) = app.post("/workspaces", &acc.token, big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&body), "payload_too_large");

    let (status, body) = app.get("/no/such/route", &acc.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
    let (status, body) = app
        .raw(Method::POST, "/no-such-thing", None, Some(json!({})))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");

    let (status, body) = app
        .raw(Method::DELETE, "/workspaces", Some(&acc.token), None)
        .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&body), "method_not_allowed");
}

#[tokio::test]
async fn healthz_and_meta() {
    let app = TestApp::spawn().await;
    let (status, body) = app.raw(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ok");
    let (_, meta) = app.raw(Method::GET, "/meta", None, None).await;
    assert_eq!(meta["gateway_url"], "http://127.0.0.1:8000");
}

#[tokio::test]
async fn openapi_lists_every_route() {
    let app = TestApp::spawn().await;
    let (status, doc) = app.raw(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let expected = [
        ("/auth/signup", "post"),
        ("/auth/login", "post"),
        ("/auth/refresh", "post"),
        ("/auth/logout", "post"),
        ("/auth/password", "post"),
        ("/auth/me", "get"),
        ("/workspaces", "get"),
        ("/workspaces", "post"),
        ("/workspaces/{id}", "get"),
        ("/workspaces/{id}", "put"),
        ("/workspaces/{id}", "patch"),
        ("/workspaces/{id}/providers", "get"),
        ("/workspaces/{id}/providers", "post"),
        ("/workspaces/{id}/providers/{pid}", "put"),
        ("/workspaces/{id}/providers/{pid}", "delete"),
        ("/workspaces/{id}/providers/{pid}/keys", "get"),
        ("/workspaces/{id}/providers/{pid}/keys", "post"),
        ("/workspaces/{id}/providers/{pid}/keys/{key_id}", "patch"),
        ("/workspaces/{id}/providers/{pid}/keys/{key_id}", "delete"),
        ("/workspaces/{id}/api-keys", "get"),
        ("/workspaces/{id}/api-keys", "post"),
        ("/workspaces/{id}/api-keys/{kid}/revoke", "post"),
        ("/workspaces/{id}/api-keys/{kid}", "delete"),
        ("/workspaces/{id}/api-keys/{kid}", "put"),
        ("/workspaces/{id}/api-keys/{kid}/limits", "get"),
        ("/workspaces/{id}/logs", "get"),
        ("/workspaces/{id}/usage", "get"),
        ("/workspaces/{id}/usage/by-provider", "get"),
        ("/healthz", "get"),
        ("/meta", "get"),
        ("/auth/verify-email", "post"),
        ("/auth/verify-email/resend", "post"),
        ("/auth/password-reset", "post"),
        ("/auth/password-reset/confirm", "post"),
        ("/invitations/accept", "post"),
        ("/workspaces/{id}", "delete"),
        ("/workspaces/{id}/cache", "delete"),
        ("/workspaces/{id}/members", "get"),
        ("/workspaces/{id}/members/{uid}", "put"),
        ("/workspaces/{id}/members/{uid}", "delete"),
        ("/workspaces/{id}/leave", "post"),
        ("/workspaces/{id}/transfer", "post"),
        ("/workspaces/{id}/invitations", "get"),
        ("/workspaces/{id}/invitations", "post"),
        ("/workspaces/{id}/invitations/{iid}", "delete"),
        ("/workspaces/{id}/audit", "get"),
        ("/auth/events", "get"),
    ];
    for (path, method) in expected {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from /openapi.json"
        );
    }
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(
        documented,
        expected.len(),
        "undocumented or unexpected operations"
    );
    assert!(doc["components"]["schemas"]["ProviderDto"].is_object());

    // Request fields the handlers insist on are required and not nullable.
    let schemas = &doc["components"]["schemas"];
    for (schema, fields) in [
        ("Credentials", vec!["email", "password"]),
        ("RefreshRequest", vec!["refresh_token"]),
        ("PasswordChange", vec!["current_password", "new_password"]),
    ] {
        let s = &schemas[schema];
        let mut required: Vec<&str> = s["required"]
            .as_array()
            .unwrap_or_else(|| panic!("{schema} has no required fields: {s}"))
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        required.sort();
        let mut expected = fields.clone();
        expected.sort();
        assert_eq!(required, expected, "{schema}");
        for f in fields {
            assert_eq!(s["properties"][f]["type"], "string", "{schema}.{f}: {s}");
        }
    }
    for schema in ["LoginResponse", "SignupResponse", "SessionTokens"] {
        assert!(
            schemas[schema]["properties"]["refresh_token"].is_object(),
            "{schema}"
        );
    }
}

#[tokio::test]
async fn serves_the_dashboard_and_json_404_beside_it() {
    let db = perpetuo_core::testing::TestDb::new().await.unwrap();
    let key = perpetuo_core::crypto::MasterKey::from_base64(
        &perpetuo_core::crypto::MasterKey::generate_base64(),
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("perpetuo-dash-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><title>Perpetuo</title>",
    )
    .unwrap();
    std::fs::write(dir.join("assets/app.js"), "console.log(1)").unwrap();
    let mut cfg = crate::helpers::config(&db, &key, "");
    cfg.dashboard_dir = dir.clone();
    let app = perpetuo_admin::startup::Application::build(cfg)
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();
    let index = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(index.status(), StatusCode::OK);
    assert!(index
        .text()
        .await
        .unwrap()
        .contains("<title>Perpetuo</title>"));
    let asset = http
        .get(format!("{base}/assets/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(asset.status(), StatusCode::OK);
    for path in ["/nope", "/assets/missing.js", "/workspaces/x/y/z"] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(error_code(&body), "not_found");
    }
    let r = http.post(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn cors_is_off_by_default_and_allows_only_configured_origins() {
    let app = TestApp::spawn().await;
    let preflight = |base: String| async move {
        reqwest::Client::new()
            .request(Method::OPTIONS, format!("{base}/auth/me"))
            .header("origin", "https://admin.example.com")
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
            .await
            .unwrap()
    };
    let r = preflight(app.base.clone()).await;
    assert!(
        r.headers().get("access-control-allow-origin").is_none(),
        "CORS is off by default"
    );

    let db = perpetuo_core::testing::TestDb::new().await.unwrap();
    let key = perpetuo_core::crypto::MasterKey::from_base64(
        &perpetuo_core::crypto::MasterKey::generate_base64(),
    )
    .unwrap();
    let mut cfg = crate::helpers::config(&db, &key, "");
    cfg.cors_allowed_origins = "https://admin.example.com".into();
    let server = perpetuo_admin::startup::Application::build(cfg)
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", server.port());
    tokio::spawn(server.run_until_stopped());
    let r = preflight(base.clone()).await;
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://admin.example.com"
    );
    let other = reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

/// Every operation that takes a body refuses a field it does not know (a typo must never
/// be taken as a setting that worked), and its schema says so for generated clients.
#[tokio::test]
async fn every_write_refuses_unknown_fields_and_its_schema_says_so() {
    let app = TestApp::spawn().await;
    let acc = app.signup("strict@example.com").await;
    let (_, doc) = app.raw(Method::GET, "/openapi.json", None, None).await;
    let other = uuid::Uuid::now_v7().to_string();
    let mut walked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let Some(schema) =
                op["requestBody"]["content"]["application/json"]["schema"].as_object()
            else {
                continue;
            };
            let schema = match schema.get("$ref").and_then(|r| r.as_str()) {
                Some(r) => &doc["components"]["schemas"][r.rsplit('/').next().unwrap()],
                None => &Value::Object(schema.clone()),
            };
            assert_eq!(
                schema["additionalProperties"], false,
                "{method} {path}: the body schema allows unknown fields"
            );
            let url = path
                .replace("{id}", &acc.workspace)
                .replace("{pid}", &other)
                .replace("{kid}", &other)
                .replace("{uid}", &other)
                .replace("{iid}", &other)
                .replace("{key_id}", &other);
            let method: Method = method.to_uppercase().parse().unwrap();
            let (status, body) = app
                .raw(
                    method.clone(),
                    &url,
                    Some(&acc.token),
                    Some(json!({"weigth": 3})),
                )
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}: {body}");
            assert_eq!(
                error_code(&body),
                "unknown_field",
                "{method} {path}: {body}"
            );
            let named = body["error"]["fields"]["weigth"]
                .as_str()
                .unwrap_or_default();
            assert!(named.contains("expected"), "{method} {path}: {body}");
            walked += 1;
        }
    }
    assert!(walked >= 15, "only {walked} operations with a body");
}
