//! Streaming: chunk-by-chunk pass-through, the usage chunk, mid-stream breaks, clients
//! that leave.

use std::time::Duration;

use futures::StreamExt;
use mock_provider::{expected_usage, Behavior};
use serde_json::{json, Value};

use crate::harness::{chat_body, mock, read_sse, Env, Gateway};

fn stream_body(model: &str, include_usage: Option<bool>) -> Value {
    let mut b = chat_body(model);
    b["stream"] = json!(true);
    if let Some(u) = include_usage {
        b["stream_options"] = json!({"include_usage": u});
    }
    b
}

#[tokio::test]
async fn stream_passes_through_with_usage_hidden_unless_asked() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    let gw = Gateway::start(&env).await;

    let body = stream_body("gpt-4o-mini", None);
    let resp = gw.chat(&env.key, body.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let (events, clean) = read_sse(resp).await;
    assert!(clean);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| !c["choices"].as_array().unwrap().is_empty()),
        "usage chunk hidden"
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, mock_provider::DEFAULT_CONTENT);
    // The gateway asked the provider for usage anyway.
    assert_eq!(
        m.last_request().unwrap().json.unwrap()["stream_options"]["include_usage"],
        true
    );
    let row = env.log_row(&rid).await;
    let expected = expected_usage(&body);
    assert!(row.streamed);
    assert_eq!(row.prompt_tokens as u64, expected.prompt_tokens);
    assert_eq!(row.completion_tokens as u64, expected.completion_tokens);
    assert_eq!(row.usage_source.as_str(), "provider");
    assert!(row.ttfb_ms.is_some());

    let resp = gw
        .chat(&env.key, stream_body("gpt-4o-mini", Some(true)))
        .send()
        .await
        .unwrap();
    let (events, _) = read_sse(resp).await;
    let usage_chunks: Vec<Value> = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter(|c| c["choices"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(usage_chunks.len(), 1, "the client asked for it");
    assert_eq!(
        usage_chunks[0]["usage"]["completion_tokens"],
        expected.completion_tokens
    );
}

/// A stream's answer is read a few KiB at a time (its buffer is held for the stream's
/// life): an event many reads long still reaches the client whole, and the stream ends
/// with its usage.
#[tokio::test]
async fn an_event_longer_than_a_read_arrives_whole() {
    let env = Env::new().await;
    let text: String = (0..20_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let usage = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1,
        "model": "gpt-4o-mini", "choices": [],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}});
    let events = [
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": text}), Value::Null),
        chunk(json!({}), json!("stop")),
        usage,
    ];
    let mut sse = String::new();
    for e in &events {
        sse.push_str(&format!("data: {e}\n\n"));
    }
    sse.push_str("data: [DONE]\n\n");
    let long = crate::hostile::sse_server(sse).await;
    env.add_provider("long", &format!("http://{long}/v1"), 1)
        .await;
    let gw = Gateway::start(&env).await;
    let resp = gw
        .chat(&env.key, stream_body("gpt-4o-mini", Some(true)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let (data, done) = read_sse(resp).await;
    assert!(done, "the stream ended with [DONE]");
    let content: String = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(content, text);
    let row = env.log_row(&rid).await;
    assert_eq!(row.status, 200);
    assert_eq!((row.prompt_tokens, row.completion_tokens), (5, 7));
}

#[tokio::test]
async fn chunks_arrive_one_by_one() {
    let env = Env::new().await;
    let m = mock_provider::MockProvider::start(mock_provider::MockConfig {
        chunk_delay: Duration::from_millis(150),
        ..Default::default()
    })
    .await
    .unwrap();
    env.add_provider("main", &m.base_url(), 1).await;
    let gw = Gateway::start(&env).await;
    let resp = gw
        .chat(&env.key, stream_body("gpt-4o", None))
        .send()
        .await
        .unwrap();
    let mut stream = resp.bytes_stream();
    let mut reads = 0;
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
        reads += 1;
    }
    // 8 events 150 ms apart: a buffering proxy would deliver them in one or two reads.
    assert!(reads >= 6, "only {reads} reads");
}

#[tokio::test]
async fn a_stream_that_breaks_mid_way_ends_with_an_error_event() {
    let env = Env::new().await;
    let (a, b) = (mock().await, mock().await);
    env.add_provider("first", &a.base_url(), 1).await;
    env.add_provider("second", &b.base_url(), 2).await;
    a.set_behavior(Some(Behavior::DropMidStream));
    let gw = Gateway::start(&env).await;
    let resp = gw
        .chat(&env.key, stream_body("gpt-4o", None))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let (events, _) = read_sse(resp).await;
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_error_midstream");
    assert!(
        events.len() >= 3,
        "content before the break reached the client"
    );
    assert_eq!(b.hits(), 0, "no fallback once bytes reached the client");
    let row = env.log_row(&rid).await;
    assert_eq!(row.error_kind.as_deref(), Some("upstream_error_midstream"));
    assert!(row.completion_tokens > 0, "usage seen so far is recorded");
}

#[tokio::test]
async fn a_client_that_leaves_cancels_the_upstream_and_is_logged_499() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    m.set_behavior(Some(Behavior::StallMidStream));
    let gw = Gateway::start(&env).await;
    let resp = gw
        .chat(&env.key, stream_body("gpt-4o", None))
        .send()
        .await
        .unwrap();
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let mut stream = resp.bytes_stream();
    let mut seen = String::new();
    while !seen.contains(" from") {
        let chunk = stream.next().await.unwrap().unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    drop(stream);
    assert!(
        m.wait_until(Duration::from_secs(3), |m| m.cancelled() == 1)
            .await,
        "upstream stream not cancelled"
    );
    let row = env.log_row(&rid).await;
    assert_eq!(row.status, 499);
    assert_eq!(row.usage_source.as_str(), "estimated");
    assert!(row.completion_tokens > 0);
}
