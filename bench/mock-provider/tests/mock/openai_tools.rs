//! OpenAI chat completions with `tools`: the scripted tool call, the reply to a tool
//! result, and requests without tools left as they were.

use std::time::Duration;

use mock_provider::openai::TOOL_CALL_ID;
use mock_provider::tool_call::{TOOL_CALL_ARGUMENTS, TOOL_CALL_ARGUMENT_PIECES, TOOL_RESULT_REPLY};
use mock_provider::{expected_usage, MockConfig, MockProvider, Usage, DEFAULT_CONTENT};
use serde_json::{json, Value};

use crate::support::{
    chat_body, chunks, data_payloads, frames, joined, post, start, start_with, stream_body,
    streamed_text,
};

fn tools() -> Value {
    json!([
        {"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather of a city.",
            "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                           "required": ["location"]}
        }},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    ])
}

/// The first call of a tool round trip (prompt tokens: (3 + 3) + (3 + 5) = 14).
fn tool_ask(model: &str) -> Value {
    json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What's the weather in Paris?"}
        ],
        "tools": tools(),
        "tool_choice": "auto"
    })
}

fn streamed(mut body: Value, include_usage: bool) -> Value {
    body["stream"] = json!(true);
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

/// The second call: the first call's messages, the assistant message that carried
/// `tool_calls`, then the `tool` message with the result.
fn tool_answer(model: &str, assistant: &Value) -> Value {
    let mut body = tool_ask(model);
    let messages = body["messages"].as_array_mut().unwrap();
    messages.push(assistant.clone());
    messages.push(json!({
        "role": "tool",
        "tool_call_id": TOOL_CALL_ID,
        "content": "sunny, 24 C"
    }));
    body
}

/// The message a client sends back after receiving the tool call.
fn assistant_tool_call() -> Value {
    json!({
        "role": "assistant",
        "content": null,
        "tool_calls": [{
            "id": TOOL_CALL_ID,
            "type": "function",
            "function": {"name": "get_weather", "arguments": TOOL_CALL_ARGUMENTS}
        }]
    })
}

fn fixed(fragment: bool) -> MockConfig {
    MockConfig {
        chunk_delay: Duration::from_millis(1),
        fragment,
        created: Some(1_700_000_000),
        ..MockConfig::default()
    }
}

async fn json_of(mock: &MockProvider, body: &Value) -> Value {
    let response = post(mock, "/chat/completions", body).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn stream_text(mock: &MockProvider, body: &Value) -> String {
    let (frames, error) = frames(post(mock, "/chat/completions", body).await).await;
    assert!(error.is_none());
    String::from_utf8(joined(&frames)).unwrap()
}

/// The concatenated `tool_calls[0].function.arguments` deltas of the chunks.
fn streamed_arguments(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| {
            c.pointer("/choices/0/delta/tool_calls/0/function/arguments")
                .and_then(Value::as_str)
        })
        .collect()
}

#[tokio::test]
async fn non_stream_tool_call_has_openai_shape_and_usage() {
    let mock = start().await;
    let body = tool_ask("gpt-4o");
    let json = json_of(&mock, &body).await;

    assert_eq!(json["object"], "chat.completion");
    let choices = json["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    assert_eq!(
        choices[0]["message"],
        json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [{
                "id": "call_mock_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}
            }],
            "refusal": null,
            "annotations": []
        })
    );
    assert_eq!(choices[0]["finish_reason"], "tool_calls");
    let arguments: Value = serde_json::from_str(
        choices[0]["message"]["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(arguments, json!({"location": "Paris"}));

    let usage: Usage = serde_json::from_value(json["usage"].clone()).unwrap();
    assert_eq!(usage, expected_usage(&body));
    assert_eq!(
        usage,
        Usage {
            prompt_tokens: 14,
            completion_tokens: 1 + TOOL_CALL_ARGUMENT_PIECES.len() as u64,
            total_tokens: 19
        }
    );
}

#[tokio::test]
async fn tool_choice_picks_the_function_or_turns_tools_off() {
    let mock = start().await;

    let mut named = tool_ask("gpt-4o");
    named["tool_choice"] = json!({"type": "function", "function": {"name": "get_time"}});
    let json = json_of(&mock, &named).await;
    assert_eq!(
        json["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_time"
    );

    let mut required = tool_ask("gpt-4o");
    required["tool_choice"] = json!("required");
    let json = json_of(&mock, &required).await;
    assert_eq!(
        json["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );

    let mut none = tool_ask("gpt-4o");
    none["tool_choice"] = json!("none");
    let json = json_of(&mock, &none).await;
    assert_eq!(json["choices"][0]["message"]["content"], DEFAULT_CONTENT);
    assert!(json["choices"][0]["message"].get("tool_calls").is_none());
    assert_eq!(json["choices"][0]["finish_reason"], "stop");
    assert_eq!(json["usage"]["completion_tokens"], 5);
}

#[tokio::test]
async fn streamed_tool_call_sends_argument_deltas_then_tool_calls_and_done() {
    let mock = start().await;
    let body = streamed(tool_ask("gpt-4o"), true);
    let text = stream_text(&mock, &body).await;
    assert!(text.ends_with("data: [DONE]\n\n"));
    let payloads = data_payloads(&text);
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let chunks = chunks(&payloads);
    let pieces = TOOL_CALL_ARGUMENT_PIECES.len();
    // Role, call header, argument pieces, finish, usage.
    assert_eq!(chunks.len(), 1 + 1 + pieces + 1 + 1);

    let delta = |i: usize| chunks[i]["choices"][0]["delta"].clone();
    assert_eq!(delta(0), json!({"role": "assistant", "content": null}));
    assert_eq!(
        delta(1),
        json!({"tool_calls": [{
            "index": 0,
            "id": "call_mock_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""}
        }]})
    );
    for (i, piece) in TOOL_CALL_ARGUMENT_PIECES.iter().enumerate() {
        assert_eq!(
            delta(2 + i),
            json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        );
    }
    assert_eq!(streamed_arguments(&chunks), TOOL_CALL_ARGUMENTS);
    assert_eq!(streamed_text(&chunks), "", "no text content");

    let finish = &chunks[2 + pieces];
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    for chunk in &chunks[..2 + pieces] {
        assert!(chunk["choices"][0]["finish_reason"].is_null());
    }
    for chunk in &chunks[..=2 + pieces] {
        assert!(chunk["usage"].is_null() && chunk.get("usage").is_some());
    }
    let usage_chunk = &chunks[3 + pieces];
    assert_eq!(usage_chunk["choices"], json!([]));
    let usage: Usage = serde_json::from_value(usage_chunk["usage"].clone()).unwrap();
    assert_eq!(usage, expected_usage(&body));
    assert_eq!(usage.completion_tokens, 5);

    // Without `include_usage`: no usage field at all.
    let text = stream_text(&mock, &streamed(tool_ask("gpt-4o"), false)).await;
    let chunks = crate::support::chunks(&data_payloads(&text));
    assert_eq!(chunks.len(), 1 + 1 + pieces + 1);
    assert!(chunks.iter().all(|chunk| chunk.get("usage").is_none()));
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert!(
        mock.wait_until(Duration::from_secs(2), |m| m.completed() == 2)
            .await
    );
}

#[tokio::test]
async fn tool_round_trip_ends_with_the_text_reply() {
    let mock = start().await;
    let first = json_of(&mock, &tool_ask("gpt-4o")).await;
    assert_eq!(first["choices"][0]["finish_reason"], "tool_calls");

    // The client sends back the assistant message as it received it.
    let mut assistant = first["choices"][0]["message"].clone();
    let message = assistant.as_object_mut().unwrap();
    message.remove("refusal");
    message.remove("annotations");
    assert_eq!(assistant, assistant_tool_call());

    let answer = tool_answer("gpt-4o", &assistant);
    let json = json_of(&mock, &answer).await;
    assert_eq!(json["choices"][0]["message"]["content"], TOOL_RESULT_REPLY);
    assert_eq!(
        json["choices"][0]["message"]["content"],
        "It is sunny in Paris."
    );
    assert!(json["choices"][0]["message"].get("tool_calls").is_none());
    assert_eq!(json["choices"][0]["finish_reason"], "stop");
    let usage: Usage = serde_json::from_value(json["usage"].clone()).unwrap();
    assert_eq!(usage, expected_usage(&answer));
    // (3 + 3) + (3 + 5) + 3 (null content) + (3 + 3) = 23.
    assert_eq!(
        usage,
        Usage {
            prompt_tokens: 23,
            completion_tokens: 5,
            total_tokens: 28
        }
    );

    // Streamed, the reply comes in content pieces and finishes with `stop`.
    let body = streamed(answer, true);
    let text = stream_text(&mock, &body).await;
    let chunks = chunks(&data_payloads(&text));
    assert_eq!(chunks.len(), 1 + 5 + 1 + 1);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(streamed_text(&chunks), TOOL_RESULT_REPLY);
    assert_eq!(streamed_arguments(&chunks), "");
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "stop");
    let usage: Usage = serde_json::from_value(chunks[7]["usage"].clone()).unwrap();
    assert_eq!(usage, expected_usage(&body));
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn fragmented_tool_streams_rejoin_byte_identical() {
    let plain = start_with(fixed(false)).await;
    let fragmented = start_with(fixed(true)).await;
    for body in [
        streamed(tool_ask("gpt-4o"), true),
        streamed(tool_answer("gpt-4o", &assistant_tool_call()), true),
    ] {
        let (plain_frames, error) = frames(post(&plain, "/chat/completions", &body).await).await;
        assert!(error.is_none());
        let (fragmented_frames, error) =
            frames(post(&fragmented, "/chat/completions", &body).await).await;
        assert!(error.is_none());
        let plain_bytes = joined(&plain_frames);
        assert_eq!(joined(&fragmented_frames), plain_bytes);
        assert!(fragmented_frames.len() > plain_frames.len());
        assert!(fragmented_frames
            .iter()
            .any(|f| f.windows(2).filter(|w| w == b"\n\n").count() >= 2));

        let text = String::from_utf8(plain_bytes).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"));
        let chunks = chunks(&data_payloads(&text));
        let joined_answer = streamed_arguments(&chunks) + &streamed_text(&chunks);
        assert!(
            joined_answer == TOOL_CALL_ARGUMENTS || joined_answer == TOOL_RESULT_REPLY,
            "{joined_answer}"
        );
    }
}

#[tokio::test]
async fn behaviours_break_tool_call_streams_as_before() {
    let mock = start().await;

    // Cut after the role chunk and two pieces: the call header and one argument piece.
    let (frames_before_cut, error) = frames(
        post(
            &mock,
            "/chat/completions",
            &streamed(tool_ask("drop-mid-stream"), true),
        )
        .await,
    )
    .await;
    assert!(error.is_some());
    let text = String::from_utf8(joined(&frames_before_cut)).unwrap();
    assert!(!text.contains("[DONE]"));
    let cut = chunks(&data_payloads(&text));
    assert_eq!(cut.len(), 3);
    assert_eq!(streamed_arguments(&cut), TOOL_CALL_ARGUMENT_PIECES[0]);

    let text = stream_text(&mock, &streamed(tool_ask("stream-error-event"), true)).await;
    assert!(!text.contains("[DONE]"));
    let events = chunks(&data_payloads(&text));
    assert_eq!(events.len(), 4);
    assert_eq!(events[3]["error"]["type"], "server_error");

    let text = stream_text(&mock, &streamed(tool_ask("x-no-usage"), true)).await;
    assert!(!text.contains("\"usage\""), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));

    let response = post(&mock, "/chat/completions", &tool_ask("mock-error-429")).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");

    let json = json_of(&mock, &tool_ask("x-no-usage")).await;
    assert_eq!(json["choices"][0]["finish_reason"], "tool_calls");
    assert!(json.get("usage").is_none());
}

const USAGE_15: &str = r#"{"prompt_tokens":15,"completion_tokens":5,"total_tokens":20,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}"#;

/// The bytes sent for [`chat_body`] before tool calls existed.
fn plain_completion() -> String {
    format!(
        concat!(
            r#"{{"id":"chatcmpl-mock-1","object":"chat.completion","created":1700000000,"#,
            r#""model":"gpt-4o","choices":[{{"index":0,"message":{{"role":"assistant","#,
            r#""content":"Hello from mock provider.","refusal":null,"annotations":[]}},"#,
            r#""logprobs":null,"finish_reason":"stop"}}],"usage":{},"#,
            r#""service_tier":"default","system_fingerprint":"fp_mock"}}"#
        ),
        USAGE_15
    )
}

/// The bytes streamed for [`stream_body`] with `include_usage` before tool calls
/// existed.
fn plain_stream() -> String {
    let chunk = |choices: &str, usage: &str| {
        format!(
            concat!(
                r#"data: {{"id":"chatcmpl-mock-1","object":"chat.completion.chunk","#,
                r#""created":1700000000,"model":"gpt-4o","service_tier":"default","#,
                r#""system_fingerprint":"fp_mock","choices":{},"usage":{}}}"#,
                "\n\n"
            ),
            choices, usage
        )
    };
    let delta = |delta: &str, finish: &str| {
        chunk(
            &format!(r#"[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]"#),
            "null",
        )
    };
    let mut text = delta(
        r#"{"role":"assistant","content":"","refusal":null}"#,
        "null",
    );
    for piece in ["Hello", " from", " mock", " prov", "ider."] {
        text += &delta(&format!(r#"{{"content":"{piece}"}}"#), "null");
    }
    text += &delta("{}", r#""stop""#);
    text += &chunk("[]", USAGE_15);
    text + "data: [DONE]\n\n"
}

#[tokio::test]
async fn requests_without_tools_are_unchanged() {
    let mut with_empty_tools = chat_body("gpt-4o");
    with_empty_tools["tools"] = json!([]);
    let mut with_tools_off = chat_body("gpt-4o");
    with_tools_off["tools"] = tools();
    with_tools_off["tool_choice"] = json!("none");

    for body in [chat_body("gpt-4o"), with_empty_tools, with_tools_off] {
        let mock = start_with(fixed(false)).await;
        let response = post(&mock, "/chat/completions", &body).await;
        assert_eq!(response.status(), 200);
        let bytes = response.bytes().await.unwrap();
        assert_eq!(std::str::from_utf8(&bytes).unwrap(), plain_completion());
        assert_eq!(expected_usage(&body).completion_tokens, 5);

        let mock = start_with(fixed(false)).await;
        let mut stream = stream_body("gpt-4o", true);
        for key in ["tools", "tool_choice"] {
            if let Some(value) = body.get(key) {
                stream[key] = value.clone();
            }
        }
        assert_eq!(stream_text(&mock, &stream).await, plain_stream());
    }
}
