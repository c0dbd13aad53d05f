//! `/v1/embeddings`.

use base64::Engine as _;
use mock_provider::{embedding_for, expected_embedding_usage};
use serde_json::{json, Value};

use crate::support::{post, start};

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[tokio::test]
async fn string_input_gets_one_embedding() {
    let mock = start().await;
    let body = json!({"model": "text-embedding-3-small", "input": "the quick brown fox"});
    let response = post(&mock, "/embeddings", &body).await;
    assert_eq!(response.status(), 200);
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["object"], "list");
    assert_eq!(json["model"], "text-embedding-3-small");
    let data = json["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["object"], "embedding");
    assert_eq!(data[0]["index"], 0);
    assert_eq!(
        floats(&data[0]["embedding"]),
        embedding_for("the quick brown fox")
    );
    assert_eq!(
        json["usage"],
        json!({"prompt_tokens": 4, "total_tokens": 4})
    );
    assert_eq!(expected_embedding_usage(&body).prompt_tokens, 4);
    assert_eq!(mock.hits(), 1);
}

#[tokio::test]
async fn array_input_gets_one_embedding_each_in_order() {
    let mock = start().await;
    let body = json!({"model": "e", "input": ["alpha beta", "gamma", "delta"]});
    let json: Value = post(&mock, "/embeddings", &body)
        .await
        .json()
        .await
        .unwrap();
    let data = json["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    for (i, text) in ["alpha beta", "gamma", "delta"].iter().enumerate() {
        assert_eq!(data[i]["index"], i);
        assert_eq!(floats(&data[i]["embedding"]), embedding_for(text));
        assert_eq!(floats(&data[i]["embedding"]).len(), 8);
    }
    assert_eq!(json["usage"]["prompt_tokens"], 4);
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
}

#[tokio::test]
async fn base64_encoding_carries_little_endian_floats() {
    let mock = start().await;
    let body = json!({"model": "e", "input": "hello", "encoding_format": "base64"});
    let json: Value = post(&mock, "/embeddings", &body)
        .await
        .json()
        .await
        .unwrap();
    let encoded = json["data"][0]["embedding"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(decoded, embedding_for("hello"));
}

#[tokio::test]
async fn embeddings_follow_error_and_no_usage_behaviours() {
    let mock = start().await;
    let response = post(
        &mock,
        "/embeddings",
        &json!({"model": "error-429", "input": "x"}),
    )
    .await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    let json: Value = post(
        &mock,
        "/embeddings",
        &json!({"model": "no-usage", "input": "x"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(json.get("usage").is_none());
    let response = post(&mock, "/embeddings", &json!({"model": "e"})).await;
    assert_eq!(response.status(), 400);
}
