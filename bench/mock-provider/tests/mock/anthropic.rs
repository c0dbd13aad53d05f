//! Anthropic's Messages API: JSON and SSE answers, tool use, errors, and broken streams.

use std::time::Duration;

use mock_provider::{
    expected_anthropic_usage, AnthropicUsage, Behavior, MockConfig, MockProvider, DEFAULT_CONTENT,
};
use serde_json::{json, Value};

use crate::support::{client, frames, joined, start, start_with};

const API_KEY: &str = "sk-ant-test-key";
const VERSION: &str = "2023-06-01";

/// A Messages request: a system prompt (2 words) and one user message (3 + 4 words).
fn body(model: &str) -> Value {
    json!({
        "model": model,
        "max_tokens": 1024,
        "system": "Be terse.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Say hello  to everyone"}]}
        ],
        "temperature": 0.2,
        "stop_sequences": ["END"]
    })
}

fn stream_body(model: &str) -> Value {
    let mut body = body(model);
    body["stream"] = json!(true);
    body
}

fn tools() -> Value {
    json!([
        {
            "name": "get_weather",
            "description": "Current weather of a city.",
            "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}
        },
        {"name": "get_time", "input_schema": {"type": "object"}}
    ])
}

/// The first call of a tool round trip.
fn tool_ask(model: &str) -> Value {
    json!({
        "model": model,
        "max_tokens": 256,
        "tools": tools(),
        "tool_choice": {"type": "auto"},
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}]
    })
}

/// The second call: the first answer, then the tool result.
fn tool_answer(model: &str, first_content: &Value) -> Value {
    json!({
        "model": model,
        "max_tokens": 256,
        "tools": tools(),
        "messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": first_content},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_mock_1", "content": "sunny, 24 C"}
            ]}
        ]
    })
}

async fn send(mock: &MockProvider, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/messages", mock.anthropic_base_url()))
        .header("x-api-key", API_KEY)
        .header("anthropic-version", VERSION)
        .json(body)
        .send()
        .await
        .expect("request is sent")
}

async fn json_of(mock: &MockProvider, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = send(mock, body).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/json");
    (status, headers, response.json().await.unwrap())
}

/// The `(event name, data)` pairs of a complete Anthropic SSE text.
fn events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            let (name, data) = event
                .strip_prefix("event: ")
                .and_then(|rest| rest.split_once("\ndata: "))
                .unwrap_or_else(|| panic!("malformed event {event:?}"));
            (name.to_owned(), serde_json::from_str(data).unwrap())
        })
        .collect()
}

async fn stream_events(mock: &MockProvider, body: &Value) -> Vec<(String, Value)> {
    let response = send(mock, body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let (frames, error) = frames(response).await;
    assert!(error.is_none());
    events(&String::from_utf8(joined(&frames)).unwrap())
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(name, _)| name.as_str()).collect()
}

/// The concatenated `text_delta`s of block `index`.
fn streamed_text(events: &[(String, Value)], index: u64) -> String {
    events
        .iter()
        .filter(|(_, data)| data["index"] == index && data["delta"]["type"] == "text_delta")
        .map(|(_, data)| data["delta"]["text"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn message_has_anthropic_shape_and_predicted_usage() {
    let mock = start().await;
    let request = body("claude-sonnet-4");
    let (status, headers, json) = json_of(&mock, &request).await;
    assert_eq!(status, 200);
    assert_eq!(headers["request-id"], headers["x-request-id"]);
    assert_eq!(
        json,
        json!({
            "id": "msg_mock_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4",
            "content": [{"type": "text", "text": DEFAULT_CONTENT}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {
                "input_tokens": 9,
                "output_tokens": 5,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0
            }
        })
    );
    let usage: AnthropicUsage = serde_json::from_value(json["usage"].clone()).unwrap();
    assert_eq!(usage, expected_anthropic_usage(&request));
    assert_eq!(usage.input_tokens, 2 + 3 + 4);

    // Cache models report cache writes and reads on top of the input tokens.
    let request = body("claude-cache-test");
    let (_, _, json) = json_of(&mock, &request).await;
    assert_eq!(json["id"], "msg_mock_2");
    let usage: AnthropicUsage = serde_json::from_value(json["usage"].clone()).unwrap();
    assert_eq!(usage, expected_anthropic_usage(&request));
    assert_eq!(
        usage,
        AnthropicUsage {
            input_tokens: 9,
            output_tokens: 5,
            cache_creation_input_tokens: 6,
            cache_read_input_tokens: 4,
        }
    );
    assert_eq!(mock.hits(), 2);
}

#[tokio::test]
async fn usage_counts_system_blocks_and_every_message() {
    let mock = start().await;
    let request = json!({
        "model": "claude",
        "max_tokens": 10,
        "system": [{"type": "text", "text": "You are a  careful assistant."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Describe this"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
            ]},
            {"role": "assistant", "content": "A red square."},
            {"role": "user", "content": "Thanks"}
        ]
    });
    let (_, _, json) = json_of(&mock, &request).await;
    let usage: AnthropicUsage = serde_json::from_value(json["usage"].clone()).unwrap();
    assert_eq!(usage.input_tokens, 5 + (3 + 2) + (3 + 3) + (3 + 1));
    assert_eq!(usage, expected_anthropic_usage(&request));
}

#[tokio::test]
async fn requests_are_recorded_with_anthropic_headers() {
    let mock = start().await;
    let request = body("claude");
    let _ = json_of(&mock, &request).await;
    let recorded = mock.last_request().unwrap();
    assert_eq!(recorded.method, "POST");
    assert_eq!(recorded.path, "/v1/messages");
    assert_eq!(recorded.query, None);
    assert_eq!(recorded.header("x-api-key"), Some(API_KEY));
    assert_eq!(recorded.header("anthropic-version"), Some(VERSION));
    assert_eq!(recorded.json.as_ref(), Some(&request));
    assert_eq!(
        serde_json::from_slice::<Value>(&recorded.body).unwrap(),
        request
    );
    assert_eq!(recorded.model(), Some("claude"));
    assert_eq!(
        mock.anthropic_base_url(),
        format!("http://{}/v1", mock.addr())
    );
}

#[tokio::test]
async fn invalid_requests_get_a_400_in_anthropic_shape() {
    let mock = start().await;
    let mut missing_max_tokens = body("claude");
    missing_max_tokens
        .as_object_mut()
        .unwrap()
        .remove("max_tokens");
    let mut missing_messages = body("claude");
    missing_messages.as_object_mut().unwrap().remove("messages");
    let cases = [
        (missing_max_tokens, "max_tokens: Field required"),
        (missing_messages, "messages: Field required"),
        (
            json!({"max_tokens": 5, "messages": []}),
            "model: Field required",
        ),
    ];
    for (request, message) in cases {
        let (status, _, json) = json_of(&mock, &request).await;
        assert_eq!(status, 400);
        assert_eq!(
            json,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}})
        );
    }
    let response = client()
        .post(format!("{}/messages", mock.anthropic_base_url()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["error"]["type"], "invalid_request_error");
    assert_eq!(mock.hits(), 4, "invalid requests are hits too");
}

#[tokio::test]
async fn stream_sends_anthropic_event_sequence() {
    let mock = start().await;
    let request = stream_body("claude-sonnet-4");
    let events = stream_events(&mock, &request).await;
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(["content_block_delta"; 5]);
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names(&events), expected);
    for (name, data) in &events {
        assert_eq!(
            data["type"],
            name.as_str(),
            "payload type is the event name"
        );
    }

    let usage = expected_anthropic_usage(&request);
    let start = &events[0].1["message"];
    assert_eq!(start["id"], "msg_mock_1");
    assert_eq!(start["type"], "message");
    assert_eq!(start["role"], "assistant");
    assert_eq!(start["model"], "claude-sonnet-4");
    assert_eq!(start["content"], json!([]));
    assert!(start["stop_reason"].is_null() && start["stop_sequence"].is_null());
    assert_eq!(start["usage"]["input_tokens"], usage.input_tokens);
    assert_eq!(start["usage"]["output_tokens"], 1);

    assert_eq!(
        events[1].1,
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    );
    assert_eq!(events[2].1, json!({"type": "ping"}));
    assert_eq!(streamed_text(&events, 0), DEFAULT_CONTENT);
    assert_eq!(events[3].1["delta"]["text"], "Hello");
    assert_eq!(
        events[8].1,
        json!({"type": "content_block_stop", "index": 0})
    );
    assert_eq!(
        events[9].1,
        json!({
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": usage.output_tokens}
        })
    );
    assert_eq!(usage.output_tokens, 5);
    assert_eq!(events[10].1, json!({"type": "message_stop"}));
    assert!(
        mock.wait_until(Duration::from_secs(2), |m| m.completed() == 1)
            .await
    );
}

#[tokio::test]
async fn tool_use_round_trip() {
    let mock = start().await;
    let ask = tool_ask("claude");
    let (status, _, first) = json_of(&mock, &ask).await;
    assert_eq!(status, 200);
    assert_eq!(first["stop_reason"], "tool_use");
    assert_eq!(
        first["content"],
        json!([
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_mock_1", "name": "get_weather", "input": {"location": "Paris"}}
        ])
    );
    let usage: AnthropicUsage = serde_json::from_value(first["usage"].clone()).unwrap();
    assert_eq!(usage, expected_anthropic_usage(&ask));
    assert_eq!(usage.output_tokens, 6);

    let answer = tool_answer("claude", &first["content"]);
    let (status, _, second) = json_of(&mock, &answer).await;
    assert_eq!(status, 200);
    assert_eq!(second["stop_reason"], "end_turn");
    assert_eq!(
        second["content"],
        json!([{"type": "text", "text": "It is sunny in Paris."}])
    );
    let usage: AnthropicUsage = serde_json::from_value(second["usage"].clone()).unwrap();
    assert_eq!(usage, expected_anthropic_usage(&answer));
    assert_eq!(usage.output_tokens, 5);

    // A named tool choice picks that tool; `none` answers with text.
    let mut named = tool_ask("claude");
    named["tool_choice"] = json!({"type": "tool", "name": "get_time"});
    let (_, _, json) = json_of(&mock, &named).await;
    assert_eq!(json["content"][1]["name"], "get_time");
    let mut none = tool_ask("claude");
    none["tool_choice"] = json!({"type": "none"});
    let (_, _, json) = json_of(&mock, &none).await;
    assert_eq!(json["stop_reason"], "end_turn");
    assert_eq!(json["content"][0]["text"], DEFAULT_CONTENT);
}

#[tokio::test]
async fn streamed_tool_use_sends_a_second_block_of_input_json_deltas() {
    let mock = start().await;
    let mut ask = tool_ask("claude");
    ask["stream"] = json!(true);
    let events = stream_events(&mock, &ask).await;
    let mut expected = vec![
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
    ];
    expected.extend(["content_block_delta"; 4]);
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names(&events), expected);
    assert_eq!(streamed_text(&events, 0), "Let me check.");
    assert_eq!(
        events[5].1,
        json!({
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_mock_1", "name": "get_weather", "input": {}}
        })
    );
    let partial: String = events[6..10]
        .iter()
        .map(|(_, data)| {
            assert_eq!(data["index"], 1);
            assert_eq!(data["delta"]["type"], "input_json_delta");
            data["delta"]["partial_json"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&partial).unwrap(),
        json!({"location": "Paris"})
    );
    assert_eq!(events[11].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(
        events[11].1["usage"]["output_tokens"],
        expected_anthropic_usage(&ask).output_tokens
    );

    let first_content = json!([
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_mock_1", "name": "get_weather", "input": {"location": "Paris"}}
    ]);
    let mut answer = tool_answer("claude", &first_content);
    answer["stream"] = json!(true);
    let events = stream_events(&mock, &answer).await;
    assert_eq!(streamed_text(&events, 0), "It is sunny in Paris.");
    assert_eq!(events.len(), 3 + 5 + 3);
    assert_eq!(events[9].1["delta"]["stop_reason"], "end_turn");
}

#[tokio::test]
async fn error_statuses_answer_in_anthropic_shape() {
    let mock = start().await;
    let cases = [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "api_error"),
        (529, "overloaded_error"),
    ];
    for (status, kind) in cases {
        let model = format!("claude-error-{status}");
        for request in [body(&model), stream_body(&model)] {
            let (got, headers, json) = json_of(&mock, &request).await;
            assert_eq!(got, status, "{model}");
            let object = json.as_object().unwrap();
            assert_eq!(object.len(), 2, "{json}");
            assert_eq!(json["type"], "error");
            assert_eq!(json["error"]["type"], kind, "{model}");
            assert!(!json["error"]["message"].as_str().unwrap().is_empty());
            assert_eq!(
                headers.get("retry-after").map(|v| v.to_str().unwrap()),
                (status == 429).then_some("1"),
                "{model}"
            );
        }
    }
    let (_, _, json) = json_of(&mock, &body("error-529")).await;
    assert_eq!(json["error"]["message"], "Overloaded");

    mock.set_behavior(Some(Behavior::Status(529)));
    let (status, _, json) = json_of(&mock, &body("claude")).await;
    assert_eq!(status, 529);
    assert_eq!(json["error"]["type"], "overloaded_error");
}

#[tokio::test]
async fn stream_error_event_ends_the_stream_after_two_deltas() {
    let mock = start().await;
    let events = stream_events(&mock, &stream_body("claude-stream-error-event")).await;
    assert_eq!(
        names(&events),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "error"
        ]
    );
    assert_eq!(streamed_text(&events, 0), "Hello from");
    assert_eq!(
        events[5].1,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
    assert!(
        mock.wait_until(Duration::from_secs(2), |m| m.completed() == 1)
            .await,
        "the stream ends cleanly"
    );

    // Without streaming, the behaviour answers normally.
    let (status, _, json) = json_of(&mock, &body("claude-stream-error-event")).await;
    assert_eq!(status, 200);
    assert_eq!(json["content"][0]["text"], DEFAULT_CONTENT);
}

#[tokio::test]
async fn drop_mid_stream_cuts_the_connection_after_two_deltas() {
    let mock = start().await;
    let response = send(&mock, &stream_body("claude-drop-mid-stream")).await;
    assert_eq!(response.status(), 200);
    let (cut_frames, error) = frames(response).await;
    assert!(error.is_some(), "the client sees a body error");
    let events = events(&String::from_utf8(joined(&cut_frames)).unwrap());
    assert_eq!(
        names(&events),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta"
        ]
    );
    assert_eq!(streamed_text(&events, 0), "Hello from");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!((mock.completed(), mock.cancelled()), (0, 0));

    // A JSON answer is cut in its middle.
    let (frames, error) = frames(send(&mock, &body("claude-drop-mid-stream")).await).await;
    assert!(error.is_some());
    assert!(serde_json::from_slice::<Value>(&joined(&frames)).is_err());
}

#[tokio::test]
async fn stream_fail_early_and_no_usage() {
    let mock = start().await;
    let response = send(&mock, &stream_body("claude-stream-fail-early")).await;
    assert_eq!(response.status(), 200);
    let (frames, error) = frames(response).await;
    assert!(error.is_some());
    assert!(joined(&frames).is_empty());

    let (_, _, json) = json_of(&mock, &body("claude-no-usage")).await;
    assert!(json.get("usage").is_none(), "{json}");
    let events = stream_events(&mock, &stream_body("claude-no-usage")).await;
    assert!(events[0].1["message"].get("usage").is_none());
    assert!(events[events.len() - 2].1.get("usage").is_none());
    assert_eq!(events.len(), 11);
}

#[tokio::test]
async fn fragmented_stream_rejoins_to_the_unfragmented_bytes() {
    let config = |fragment| MockConfig {
        chunk_delay: Duration::from_millis(1),
        fragment,
        content: "Grüße aus dem Mock — 你好, ✓ done".to_owned(),
        ..MockConfig::default()
    };
    let plain = start_with(config(false)).await;
    let fragmented = start_with(config(true)).await;
    for request in [stream_body("claude"), {
        let mut ask = tool_ask("claude");
        ask["stream"] = json!(true);
        ask
    }] {
        let (plain_frames, error) = frames(send(&plain, &request).await).await;
        assert!(error.is_none());
        let (fragmented_frames, error) = frames(send(&fragmented, &request).await).await;
        assert!(error.is_none());
        assert_eq!(joined(&fragmented_frames), joined(&plain_frames));
        assert!(fragmented_frames.len() > plain_frames.len());
        assert!(plain_frames.iter().all(|f| f.ends_with(b"\n\n")));
        assert!(fragmented_frames.iter().any(|f| !f.ends_with(b"\n\n")));
    }
    let (frames, _) = frames(send(&fragmented, &stream_body("claude")).await).await;
    assert!(frames.iter().any(|f| std::str::from_utf8(f).is_err()));
    let events = events(&String::from_utf8(joined(&frames)).unwrap());
    assert_eq!(
        streamed_text(&events, 0),
        "Grüße aus dem Mock — 你好, ✓ done"
    );
}

#[tokio::test]
async fn unknown_message_routes_answer_in_anthropic_shape() {
    let mock = start().await;
    let response = client()
        .post(format!("{}/messages/batches", mock.anthropic_base_url()))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["type"], "error");
    assert_eq!(json["error"]["type"], "not_found_error");

    let response = client()
        .get(format!("{}/messages", mock.anthropic_base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["type"], "error");
    assert_eq!(mock.hits(), 0);
    assert_eq!(mock.requests().len(), 2);
}
