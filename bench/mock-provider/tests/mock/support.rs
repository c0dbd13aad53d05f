//! Shared helpers: starting a mock, building requests, reading SSE bodies.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use mock_provider::{MockConfig, MockProvider};
use serde_json::{json, Value};

/// A mock with a short chunk delay, on a free port.
pub async fn start() -> MockProvider {
    start_with(MockConfig {
        chunk_delay: Duration::from_millis(1),
        ..MockConfig::default()
    })
    .await
}

pub async fn start_with(config: MockConfig) -> MockProvider {
    MockProvider::start(config).await.expect("mock starts")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client builds")
}

/// A chat request with two messages (prompt tokens: (3 + 3) + (3 + 6) = 15).
pub fn chat_body(model: &str) -> Value {
    json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello to the  test suite"}
        ]
    })
}

pub fn stream_body(model: &str, include_usage: bool) -> Value {
    let mut body = chat_body(model);
    body["stream"] = json!(true);
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

pub async fn post(mock: &MockProvider, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", mock.base_url()))
        .bearer_auth("sk-test-provider-key")
        .json(body)
        .send()
        .await
        .expect("request is sent")
}

/// Every frame of a body, and the error that ended it early, if any.
pub async fn frames(response: reqwest::Response) -> (Vec<Bytes>, Option<reqwest::Error>) {
    let mut frames = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(frame) = stream.next().await {
        match frame {
            Ok(frame) => frames.push(frame),
            Err(err) => return (frames, Some(err)),
        }
    }
    (frames, None)
}

pub fn joined(frames: &[Bytes]) -> Vec<u8> {
    frames.iter().flat_map(|f| f.iter().copied()).collect()
}

/// The `data:` payloads of a complete SSE text.
pub fn data_payloads(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("event without data: {event:?}"))
                .to_owned()
        })
        .collect()
}

/// The JSON chunks of a stream (everything but `[DONE]`).
pub fn chunks(payloads: &[String]) -> Vec<Value> {
    payloads
        .iter()
        .filter(|p| p.as_str() != "[DONE]")
        .map(|p| serde_json::from_str(p).expect("chunk is JSON"))
        .collect()
}

/// The concatenated `delta.content` of the chunks.
pub fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
        })
        .collect()
}
