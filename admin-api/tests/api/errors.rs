//! Error shapes for framework rejections, limits, unknown routes; health; OpenAPI.

use reqwest::{Method, StatusCode};
use serde_json::json;

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
        ("/auth/me", "get"),
        ("/workspaces", "get"),
        ("/workspaces", "post"),
        ("/workspaces/{id}", "get"),
        ("/workspaces/{id}", "put"),
        ("/workspaces/{id}/providers", "get"),
        ("/workspaces/{id}/providers", "post"),
        ("/workspaces/{id}/providers/{pid}", "put"),
        ("/workspaces/{id}/providers/{pid}", "delete"),
        ("/workspaces/{id}/api-keys", "get"),
        ("/workspaces/{id}/api-keys", "post"),
        ("/workspaces/{id}/api-keys/{kid}/revoke", "post"),
        ("/workspaces/{id}/api-keys/{kid}", "delete"),
        ("/workspaces/{id}/logs", "get"),
        ("/workspaces/{id}/usage", "get"),
        ("/workspaces/{id}/usage/by-provider", "get"),
        ("/healthz", "get"),
        ("/meta", "get"),
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
}
