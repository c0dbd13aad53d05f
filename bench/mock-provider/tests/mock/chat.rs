//! Non-streaming chat completions.

use mock_provider::{expected_usage, Usage, DEFAULT_CONTENT};
use serde_json::{json, Value};

use crate::support::{chat_body, client, post, start};

#[tokio::test]
async fn non_stream_completion_has_openai_shape_and_expected_usage() {
    let mock = start().await;
    let body = chat_body("gpt-4o-mini");
    let response = post(&mock, "/chat/completions", &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(response.headers().contains_key("x-request-id"));
    let json: Value = response.json().await.unwrap();

    assert_eq!(json["id"], "chatcmpl-mock-1");
    assert_eq!(json["object"], "chat.completion");
    assert!(json["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(json["model"], "gpt-4o-mini");
    let choices = json["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[0]["message"]["role"], "assistant");
    assert_eq!(choices[0]["message"]["content"], DEFAULT_CONTENT);
    assert_eq!(choices[0]["finish_reason"], "stop");

    let usage: Usage = serde_json::from_value(json["usage"].clone()).unwrap();
    assert_eq!(usage, expected_usage(&body));
    assert_eq!(
        usage,
        Usage {
            prompt_tokens: 15,
            completion_tokens: 5,
            total_tokens: 20
        }
    );

    // Ids keep counting.
    let json: Value = post(&mock, "/chat/completions", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(json["id"], "chatcmpl-mock-2");
}

#[tokio::test]
async fn usage_follows_the_request() {
    let mock = start().await;
    let body = json!({
        "model": "m",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a b c d"}, {"type": "image_url", "image_url": {"url": "x"}}]},
            {"role": "assistant", "content": "e"},
            {"role": "user", "content": "f g"}
        ]
    });
    let json: Value = post(&mock, "/chat/completions", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(json["usage"]["prompt_tokens"], 3 * 3 + 4 + 1 + 2);
    assert_eq!(json["usage"]["total_tokens"], 16 + 5);
}

#[tokio::test]
async fn no_usage_model_omits_usage() {
    let mock = start().await;
    let json: Value = post(&mock, "/chat/completions", &chat_body("mock-no-usage"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(json["choices"][0]["message"]["content"], DEFAULT_CONTENT);
    assert!(json.get("usage").is_none(), "{json}");
}

#[tokio::test]
async fn configured_content_is_returned() {
    let mock = crate::support::start_with(mock_provider::MockConfig {
        content: "Grüße, 世界 ✓".to_owned(),
        created: Some(1_700_000_123),
        ..Default::default()
    })
    .await;
    let json: Value = post(&mock, "/chat/completions", &chat_body("m"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(json["choices"][0]["message"]["content"], "Grüße, 世界 ✓");
    assert_eq!(json["created"], 1_700_000_123);
    assert_eq!(json["usage"]["completion_tokens"], 5);
}

#[tokio::test]
async fn invalid_requests_get_openai_400s() {
    let mock = start().await;
    let response = client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["error"]["type"], "invalid_request_error");

    let response = post(&mock, "/chat/completions", &json!({"model": "m"})).await;
    assert_eq!(response.status(), 400);
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["error"]["param"], "messages");
    assert_eq!(json["error"]["code"], "missing_required_parameter");

    let response = post(&mock, "/chat/completions", &json!({"messages": []})).await;
    assert_eq!(response.status(), 400);
    // Invalid requests still count and are recorded.
    assert_eq!(mock.hits(), 3);
    assert_eq!(mock.requests().len(), 3);
}
