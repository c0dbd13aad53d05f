//! Error behaviours, chosen by model name or forced with `set_behavior`.

use mock_provider::{Behavior, DEFAULT_CONTENT};
use serde_json::Value;

use crate::support::{chat_body, post, start, stream_body};

async fn error_of(
    mock: &mock_provider::MockProvider,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = post(mock, "/chat/completions", body).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/json");
    (status, headers, response.json().await.unwrap())
}

fn assert_error_shape(json: &Value, kind: &str) {
    let error = json["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{json}"));
    assert!(!error["message"].as_str().unwrap().is_empty());
    assert_eq!(error["type"], kind, "{json}");
    assert!(error.contains_key("param"));
    assert!(error.contains_key("code"));
}

#[tokio::test]
async fn error_models_answer_with_their_status_and_openai_error() {
    let mock = start().await;
    let cases = [
        ("error-400", 400, "invalid_request_error", None),
        (
            "error-401",
            401,
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        (
            "error-429",
            429,
            "rate_limit_exceeded",
            Some("rate_limit_exceeded"),
        ),
        ("error-500", 500, "server_error", None),
        ("error-503", 503, "server_error", None),
    ];
    for (model, status, kind, code) in cases {
        let (got, headers, json) = error_of(&mock, &chat_body(&format!("gpt-4o-{model}"))).await;
        assert_eq!(got, status, "{model}");
        assert_error_shape(&json, kind);
        match code {
            Some(code) => assert_eq!(json["error"]["code"], code),
            None => assert!(json["error"]["code"].is_null()),
        }
        assert_eq!(
            headers.get("retry-after").is_some(),
            status == 429,
            "{model}"
        );
    }
    assert_eq!(mock.hits(), 5);
}

#[tokio::test]
async fn rate_limit_carries_retry_after() {
    let mock = start().await;
    let (status, headers, _) = error_of(&mock, &stream_body("error-429", true)).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
}

#[tokio::test]
async fn override_applies_to_every_model_until_cleared() {
    let mock = start().await;
    mock.set_behavior(Some(Behavior::Status(503)));
    let (status, _, json) = error_of(&mock, &chat_body("gpt-4o")).await;
    assert_eq!(status, 503);
    assert_error_shape(&json, "server_error");

    mock.set_behavior(Some(Behavior::Normal));
    let response = post(&mock, "/chat/completions", &chat_body("error-500")).await;
    assert_eq!(response.status(), 200);

    mock.set_behavior(None);
    let response = post(&mock, "/chat/completions", &chat_body("error-500")).await;
    assert_eq!(response.status(), 500);
    let response = post(&mock, "/chat/completions", &chat_body("gpt-4o")).await;
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["choices"][0]["message"]["content"], DEFAULT_CONTENT);
}

#[tokio::test]
async fn any_status_can_be_forced() {
    let mock = start().await;
    mock.set_behavior(Some(Behavior::Status(404)));
    let (status, _, json) = error_of(&mock, &chat_body("gpt-x")).await;
    assert_eq!(status, 404);
    assert_eq!(json["error"]["code"], "model_not_found");
    let (status, _, json) = error_of(&mock, &chat_body("error-502")).await;
    assert_eq!(status, 404, "the override wins over the model name");
    assert_error_shape(&json, "invalid_request_error");
    mock.set_behavior(None);
    let (status, _, json) = error_of(&mock, &chat_body("error-502")).await;
    assert_eq!(status, 502);
    assert_error_shape(&json, "server_error");
}
