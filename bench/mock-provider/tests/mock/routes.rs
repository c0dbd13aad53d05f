//! Model listing and routes the mock does not serve.

use serde_json::Value;

use crate::support::{client, start};

#[tokio::test]
async fn models_are_listed_in_openai_shape() {
    let mock = start().await;
    let response = client()
        .get(format!("{}/models", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["object"], "list");
    let data = json["data"].as_array().unwrap();
    assert!(data.len() >= 2);
    for model in data {
        assert_eq!(model["object"], "model");
        assert!(model["id"].is_string());
        assert!(model["created"].is_u64());
        assert!(model["owned_by"].is_string());
    }
    let one: Value = client()
        .get(format!("{}/models/mock-gpt-4o", mock.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["id"], "mock-gpt-4o");
    assert_eq!(mock.hits(), 0);
}

#[tokio::test]
async fn unknown_routes_get_a_json_404() {
    let mock = start().await;
    let response = client()
        .post(format!("http://{}/v1/completions/nope", mock.addr()))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], "application/json");
    let json: Value = response.json().await.unwrap();
    assert_eq!(
        json["error"]["message"],
        "Invalid URL (POST /v1/completions/nope)"
    );
    assert_eq!(json["error"]["type"], "invalid_request_error");

    let response = client()
        .get(format!("http://{}/v1/chat/completions", mock.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["error"]["type"], "invalid_request_error");
    assert_eq!(mock.requests().len(), 2, "every request is recorded");
    assert_eq!(mock.hits(), 0);
}
