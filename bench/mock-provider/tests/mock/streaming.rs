//! Streaming chat completions, including the behaviours that break streams.

use std::time::Duration;

use mock_provider::{expected_usage, Behavior, MockConfig, Usage, DEFAULT_CONTENT};
use serde_json::Value;

use crate::support::{
    chunks, data_payloads, frames, joined, post, start, start_with, stream_body, streamed_text,
};

#[tokio::test]
async fn stream_sends_role_content_stop_then_done() {
    let mock = start().await;
    let response = post(&mock, "/chat/completions", &stream_body("gpt-4o", false)).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    assert!(response.content_length().is_none(), "SSE is chunked");

    let (frames, error) = frames(response).await;
    assert!(error.is_none());
    let text = String::from_utf8(joined(&frames)).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"));
    let payloads = data_payloads(&text);
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let chunks = chunks(&payloads);
    assert_eq!(chunks.len(), 1 + 5 + 1);

    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], "chatcmpl-mock-1");
        assert_eq!(chunk["model"], "gpt-4o");
        assert!(chunk.get("usage").is_none(), "no usage field unless asked");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "");
    assert!(chunks[0]["choices"][0]["finish_reason"].is_null());
    for chunk in &chunks[1..6] {
        assert!(chunk["choices"][0]["delta"].get("role").is_none());
        assert!(chunk["choices"][0]["finish_reason"].is_null());
    }
    assert_eq!(streamed_text(&chunks), DEFAULT_CONTENT);
    let last = &chunks[6];
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["choices"][0]["delta"], serde_json::json!({}));

    assert!(
        mock.wait_until(Duration::from_secs(2), |m| m.completed() == 1)
            .await
    );
    assert_eq!(mock.cancelled(), 0);
}

#[tokio::test]
async fn include_usage_adds_a_final_usage_chunk_and_null_usage_elsewhere() {
    let mock = start().await;
    let body = stream_body("gpt-4o", true);
    let (frames, error) = frames(post(&mock, "/chat/completions", &body).await).await;
    assert!(error.is_none());
    let text = String::from_utf8(joined(&frames)).unwrap();
    let payloads = data_payloads(&text);
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let chunks = chunks(&payloads);
    assert_eq!(chunks.len(), 1 + 5 + 1 + 1);
    for chunk in &chunks[..7] {
        assert!(chunk["usage"].is_null() && chunk.get("usage").is_some());
        assert_eq!(chunk["choices"].as_array().unwrap().len(), 1);
    }
    let usage_chunk = &chunks[7];
    assert_eq!(usage_chunk["choices"], serde_json::json!([]));
    let usage: Usage = serde_json::from_value(usage_chunk["usage"].clone()).unwrap();
    assert_eq!(usage, expected_usage(&body));
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn no_usage_stream_has_no_usage_even_when_asked() {
    let mock = start().await;
    let (frames, _) =
        frames(post(&mock, "/chat/completions", &stream_body("x-no-usage", true)).await).await;
    let text = String::from_utf8(joined(&frames)).unwrap();
    assert!(!text.contains("\"usage\""), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(chunks(&data_payloads(&text)).len(), 7);
}

#[tokio::test]
async fn drop_mid_stream_cuts_the_connection_without_done() {
    let mock = start().await;
    let response = post(
        &mock,
        "/chat/completions",
        &stream_body("drop-mid-stream", true),
    )
    .await;
    assert_eq!(response.status(), 200);
    let (frames, error) = frames(response).await;
    assert!(error.is_some(), "the client sees a body error");
    let text = String::from_utf8(joined(&frames)).unwrap();
    assert!(!text.contains("[DONE]"));
    let chunks = chunks(&data_payloads(&text));
    assert_eq!(chunks.len(), 3, "role chunk + 2 content chunks");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(streamed_text(&chunks), "Hello from");
    // A deliberate cut is neither completed nor cancelled.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!((mock.completed(), mock.cancelled()), (0, 0));
}

#[tokio::test]
async fn stream_fail_early_sends_headers_then_cuts() {
    let mock = start().await;
    let response = post(
        &mock,
        "/chat/completions",
        &stream_body("stream-fail-early", false),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let (frames, error) = frames(response).await;
    assert!(error.is_some());
    assert!(joined(&frames).is_empty());
}

#[tokio::test]
async fn stall_mid_stream_pauses_after_two_content_chunks() {
    use futures::StreamExt;
    let stall = Duration::from_millis(400);
    let mock = start_with(MockConfig {
        chunk_delay: Duration::from_millis(1),
        stall,
        ..MockConfig::default()
    })
    .await;
    let response = post(
        &mock,
        "/chat/completions",
        &stream_body("stall-mid-stream", false),
    )
    .await;
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    while text.matches("\n\n").count() < 3 {
        text.push_str(std::str::from_utf8(&stream.next().await.unwrap().unwrap()).unwrap());
    }
    assert_eq!(streamed_text(&chunks(&data_payloads(&text))), "Hello from");
    // Nothing more arrives during the first part of the pause…
    let during = tokio::time::timeout(stall / 4, stream.next()).await;
    assert!(during.is_err(), "the stream did not pause");
    // …and the stream then completes.
    while let Some(frame) = stream.next().await {
        text.push_str(std::str::from_utf8(&frame.unwrap()).unwrap());
    }
    assert_eq!(
        streamed_text(&chunks(&data_payloads(&text))),
        DEFAULT_CONTENT
    );
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn slow_model_delays_the_headers() {
    let mock = start().await;
    let body = stream_body("mock-slow-300", false);
    let mut request = Box::pin(post(&mock, "/chat/completions", &body));
    // Still waiting for the headers a third of the way into the delay.
    let early = tokio::time::timeout(Duration::from_millis(100), &mut request).await;
    assert!(early.is_err(), "headers were not held back");
    let response = request.await;
    assert_eq!(response.status(), 200);
    let (frames, _) = frames(response).await;
    assert!(String::from_utf8(joined(&frames))
        .unwrap()
        .ends_with("[DONE]\n\n"));
}

#[tokio::test]
async fn stall_waits_before_the_headers() {
    let mock = start_with(MockConfig {
        stall: Duration::from_millis(300),
        ..MockConfig::default()
    })
    .await;
    mock.set_behavior(Some(Behavior::Stall));
    let body = crate::support::chat_body("m");
    let mut request = Box::pin(post(&mock, "/chat/completions", &body));
    let early = tokio::time::timeout(Duration::from_millis(100), &mut request).await;
    assert!(early.is_err(), "headers were not held back");
    let json: Value = request.await.json().await.unwrap();
    assert_eq!(json["choices"][0]["message"]["content"], DEFAULT_CONTENT);
}

#[tokio::test]
async fn non_stream_drop_mid_stream_cuts_the_json_body() {
    let mock = start().await;
    let response = post(
        &mock,
        "/chat/completions",
        &crate::support::chat_body("drop-mid-stream"),
    )
    .await;
    assert_eq!(response.status(), 200);
    let (frames, error) = frames(response).await;
    assert!(error.is_some());
    let partial = joined(&frames);
    assert!(!partial.is_empty());
    assert!(serde_json::from_slice::<Value>(&partial).is_err());
}

#[tokio::test]
async fn stream_error_event_sends_an_error_object_and_ends_without_done() {
    let mock = start().await;
    let response = post(
        &mock,
        "/chat/completions",
        &stream_body("gpt-4o-stream-error-event", true),
    )
    .await;
    assert_eq!(response.status(), 200);
    let (frames, error) = frames(response).await;
    assert!(error.is_none(), "the stream ends cleanly");
    let text = String::from_utf8(joined(&frames)).unwrap();
    assert!(!text.contains("[DONE]"));
    let chunks = chunks(&data_payloads(&text));
    assert_eq!(chunks.len(), 4, "role chunk + 2 content chunks + error");
    assert_eq!(streamed_text(&chunks[..3]), "Hello from");
    let error = &chunks[3]["error"];
    assert_eq!(error["type"], "server_error");
    assert!(!error["message"].as_str().unwrap().is_empty());
    assert!(error.get("param").is_some() && error.get("code").is_some());
    assert!(
        mock.wait_until(Duration::from_secs(2), |m| m.completed() == 1)
            .await
    );

    // Without streaming, the behaviour answers normally.
    mock.set_behavior(Some(Behavior::StreamErrorEvent));
    let response = post(&mock, "/chat/completions", &crate::support::chat_body("m")).await;
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["choices"][0]["message"]["content"], DEFAULT_CONTENT);
}

#[tokio::test]
async fn pieces_sets_the_number_of_content_chunks_and_the_completion_tokens() {
    let mock = start_with(MockConfig {
        chunk_delay: Duration::from_millis(1),
        pieces: 20,
        ..MockConfig::default()
    })
    .await;
    let request = stream_body("gpt-4o", true);
    let response = post(&mock, "/chat/completions", &request).await;
    let (frames, error) = frames(response).await;
    assert!(error.is_none());
    let text = String::from_utf8(joined(&frames)).unwrap();
    let chunks = chunks(&data_payloads(&text));
    // Role, 20 content pieces, stop, usage.
    assert_eq!(chunks.len(), 1 + 20 + 1 + 1);
    assert!(chunks[1..21]
        .iter()
        .all(|c| c["choices"][0]["delta"]["content"]
            .as_str()
            .is_some_and(|t| !t.is_empty())));
    assert_eq!(streamed_text(&chunks), DEFAULT_CONTENT);
    let usage: Usage = serde_json::from_value(chunks[22]["usage"].clone()).unwrap();
    assert_eq!(usage.completion_tokens, 20);
    assert_eq!(usage.prompt_tokens, expected_usage(&request).prompt_tokens);

    // The same count whole, and in the other formats.
    let whole: Value = post(
        &mock,
        "/chat/completions",
        &crate::support::chat_body("gpt-4o"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(whole["usage"]["completion_tokens"], 20);
    let claude = serde_json::json!({"model": "claude", "max_tokens": 16, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let text = post(&mock, "/messages", &claude)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(text.matches("event: content_block_delta").count(), 20);
    assert!(text.contains(r#""output_tokens":20"#), "{text}");
    let gemini = serde_json::json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    let url = format!(
        "{}/models/gemini-x:streamGenerateContent?alt=sse",
        mock.gemini_base_url()
    );
    let text = crate::support::client()
        .post(url)
        .json(&gemini)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text.matches("data: ").count(), 20);
    assert!(
        text.contains(r#""candidatesTokenCount":20,"totalTokenCount""#),
        "{text}"
    );
}
