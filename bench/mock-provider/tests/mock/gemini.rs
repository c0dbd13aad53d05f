//! Gemini's generateContent API: JSON, SSE and array streams, function calls, safety
//! blocks, errors, and broken streams.

use std::time::Duration;

use mock_provider::{
    expected_gemini_usage, Behavior, GeminiUsage, MockConfig, MockProvider, DEFAULT_CONTENT,
};
use serde_json::{json, Value};

use crate::support::{client, frames, joined, start, start_with};

const API_KEY: &str = "AIza-test-key";

/// A request: a system instruction (2 words) and one user content (3 + 4 words).
fn body() -> Value {
    json!({
        "systemInstruction": {"parts": [{"text": "Be terse."}]},
        "contents": [{"role": "user", "parts": [{"text": "Say hello  to everyone"}]}],
        "generationConfig": {"temperature": 0.2, "topP": 0.9, "maxOutputTokens": 256,
            "stopSequences": ["END"], "candidateCount": 1}
    })
}

fn declarations() -> Value {
    json!([{"functionDeclarations": [
        {"name": "get_weather", "description": "Current weather of a city.",
         "parameters": {"type": "OBJECT", "properties": {"location": {"type": "STRING"}}}},
        {"name": "get_time", "parameters": {"type": "OBJECT"}}
    ]}])
}

fn tool_ask() -> Value {
    json!({
        "contents": [{"role": "user", "parts": [{"text": "What is the weather in Paris?"}]}],
        "tools": declarations(),
        "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}}
    })
}

fn tool_answer(call: &Value) -> Value {
    json!({
        "contents": [
            {"role": "user", "parts": [{"text": "What is the weather in Paris?"}]},
            {"role": "model", "parts": [call]},
            {"role": "user", "parts": [{"functionResponse": {
                "name": "get_weather", "response": {"weather": "sunny, 24 C"}}}]}
        ],
        "tools": declarations()
    })
}

/// `POST {gemini_base_url}/models/{model}:{method}` with the API key header.
async fn send(mock: &MockProvider, model: &str, method: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!(
            "{}/models/{model}:{method}",
            mock.gemini_base_url()
        ))
        .header("x-goog-api-key", API_KEY)
        .json(body)
        .send()
        .await
        .expect("request is sent")
}

async fn generate(
    mock: &MockProvider,
    model: &str,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = send(mock, model, "generateContent", body).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/json");
    (status, headers, response.json().await.unwrap())
}

/// The chunks of a complete CRLF-framed SSE text.
fn sse_chunks(text: &str) -> Vec<Value> {
    assert!(text.is_empty() || text.ends_with("\r\n\r\n"), "{text:?}");
    text.split("\r\n\r\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            assert!(!event.contains('\n'), "one line per event: {event:?}");
            let data = event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("event without data: {event:?}"));
            serde_json::from_str(data).unwrap()
        })
        .collect()
}

async fn stream(mock: &MockProvider, model: &str, body: &Value) -> Vec<Value> {
    let response = send(mock, model, "streamGenerateContent?alt=sse", body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (frames, error) = frames(response).await;
    assert!(error.is_none());
    sse_chunks(&String::from_utf8(joined(&frames)).unwrap())
}

fn chunk_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c.pointer("/candidates/0/content/parts/0/text")?.as_str())
        .collect()
}

#[tokio::test]
async fn generate_content_has_gemini_shape_and_predicted_usage() {
    let mock = start().await;
    let request = body();
    let (status, _, json) = generate(&mock, "gemini-2.0-flash", &request).await;
    assert_eq!(status, 200);
    assert_eq!(
        json,
        json!({
            "candidates": [{
                "content": {"role": "model", "parts": [{"text": DEFAULT_CONTENT}]},
                "finishReason": "STOP",
                "index": 0
            }],
            "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 5, "totalTokenCount": 14},
            "modelVersion": "gemini-2.0-flash",
            "responseId": "mock-1"
        })
    );
    let usage: GeminiUsage = serde_json::from_value(json["usageMetadata"].clone()).unwrap();
    assert_eq!(usage, expected_gemini_usage(&request, "gemini-2.0-flash"));
    assert_eq!(usage.total_token_count(), 14);

    let (_, _, json) = generate(&mock, "gemini-cache-test", &request).await;
    assert_eq!(json["responseId"], "mock-2");
    assert_eq!(
        json["usageMetadata"],
        json!({"promptTokenCount": 9, "candidatesTokenCount": 5, "totalTokenCount": 14,
               "cachedContentTokenCount": 4})
    );
    let usage: GeminiUsage = serde_json::from_value(json["usageMetadata"].clone()).unwrap();
    assert_eq!(usage, expected_gemini_usage(&request, "gemini-cache-test"));
    assert_eq!(usage.cached_content_token_count, 4);
    assert_eq!(mock.hits(), 2);
}

#[tokio::test]
async fn usage_counts_every_content_and_only_text_parts() {
    let mock = start().await;
    let request = json!({
        "contents": [
            {"role": "user", "parts": [
                {"text": "Describe these"},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                {"fileData": {"mimeType": "video/mp4", "fileUri": "gs://bucket/v.mp4"}}
            ]},
            {"role": "model", "parts": [{"text": "Two red squares."}]},
            {"role": "user", "parts": [{"text": "Thanks"}]}
        ]
    });
    let (_, _, json) = generate(&mock, "gemini", &request).await;
    let usage: GeminiUsage = serde_json::from_value(json["usageMetadata"].clone()).unwrap();
    assert_eq!(usage.prompt_token_count, (3 + 2) + (3 + 3) + (3 + 1));
    assert_eq!(usage, expected_gemini_usage(&request, "gemini"));
}

#[tokio::test]
async fn requests_are_recorded_with_the_api_key_and_model_path() {
    let mock = start().await;
    let request = body();
    let _ = stream(&mock, "gemini-1.5-pro", &request).await;
    let recorded = mock.last_request().unwrap();
    assert_eq!(recorded.method, "POST");
    assert_eq!(
        recorded.path,
        "/v1beta/models/gemini-1.5-pro:streamGenerateContent"
    );
    assert_eq!(recorded.query.as_deref(), Some("alt=sse"));
    assert_eq!(recorded.header("x-goog-api-key"), Some(API_KEY));
    assert_eq!(recorded.json.as_ref(), Some(&request));
    assert_eq!(recorded.model(), Some("gemini-1.5-pro"));
    assert_eq!(
        mock.gemini_base_url(),
        format!("http://{}/v1beta", mock.addr())
    );
    assert_eq!(mock.hits(), 1);
}

#[tokio::test]
async fn sse_stream_sends_crlf_chunks_with_finish_reason_on_the_last() {
    let mock = start().await;
    let request = body();
    let response = send(&mock, "gemini", "streamGenerateContent?alt=sse", &request).await;
    let (frames, error) = frames(response).await;
    assert!(error.is_none());
    let text = String::from_utf8(joined(&frames)).unwrap();
    assert!(text.starts_with("data: {"));
    assert!(!text.contains("[DONE]"));
    assert_eq!(text.matches("\r\n\r\n").count(), 5);
    assert_eq!(text.matches('\n').count(), 10, "every newline is CRLF");

    let chunks = sse_chunks(&text);
    assert_eq!(chunks.len(), 5);
    assert_eq!(chunk_text(&chunks), DEFAULT_CONTENT);
    let usage = expected_gemini_usage(&request, "gemini");
    for (i, chunk) in chunks.iter().enumerate() {
        let candidate = &chunk["candidates"][0];
        assert_eq!(candidate["content"]["role"], "model");
        assert_eq!(candidate["content"]["parts"].as_array().unwrap().len(), 1);
        assert_eq!(chunk["modelVersion"], "gemini");
        assert_eq!(chunk["responseId"], "mock-1");
        let metadata = &chunk["usageMetadata"];
        assert_eq!(metadata["promptTokenCount"], usage.prompt_token_count);
        assert_eq!(metadata["candidatesTokenCount"], i as u64 + 1);
        assert_eq!(
            metadata["totalTokenCount"],
            usage.prompt_token_count + i as u64 + 1
        );
        if i == 4 {
            assert_eq!(candidate["finishReason"], "STOP");
        } else {
            assert!(candidate.get("finishReason").is_none(), "{chunk}");
        }
    }
    let last: GeminiUsage = serde_json::from_value(chunks[4]["usageMetadata"].clone()).unwrap();
    assert_eq!(last, usage);
    assert!(
        mock.wait_until(Duration::from_secs(2), |m| m.completed() == 1)
            .await
    );
}

#[tokio::test]
async fn stream_without_alt_sse_is_a_json_array() {
    let mock = start().await;
    let response = send(&mock, "gemini", "streamGenerateContent", &body()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let (frames, error) = frames(response).await;
    assert!(error.is_none());
    let array: Vec<Value> = serde_json::from_slice(&joined(&frames)).unwrap();
    assert_eq!(array.len(), 5);
    assert_eq!(chunk_text(&array), DEFAULT_CONTENT);
    assert_eq!(array[4]["candidates"][0]["finishReason"], "STOP");
}

#[tokio::test]
async fn function_call_round_trip() {
    let mock = start().await;
    let ask = tool_ask();
    let (status, _, first) = generate(&mock, "gemini", &ask).await;
    assert_eq!(status, 200);
    let candidate = &first["candidates"][0];
    assert_eq!(candidate["finishReason"], "STOP");
    assert_eq!(
        candidate["content"],
        json!({"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}}
        ]})
    );
    let usage: GeminiUsage = serde_json::from_value(first["usageMetadata"].clone()).unwrap();
    assert_eq!(usage, expected_gemini_usage(&ask, "gemini"));
    assert_eq!(usage.candidates_token_count, 1);

    let answer = tool_answer(&candidate["content"]["parts"][0]);
    let (status, _, second) = generate(&mock, "gemini", &answer).await;
    assert_eq!(status, 200);
    assert_eq!(
        second["candidates"][0]["content"]["parts"],
        json!([{"text": "It is sunny in Paris."}])
    );
    assert_eq!(second["candidates"][0]["finishReason"], "STOP");
    let usage: GeminiUsage = serde_json::from_value(second["usageMetadata"].clone()).unwrap();
    assert_eq!(usage, expected_gemini_usage(&answer, "gemini"));

    // Streamed: the call is one chunk, the answer five.
    let chunks = stream(&mock, "gemini", &ask).await;
    assert_eq!(chunks.len(), 1);
    assert_eq!(
        chunks[0]["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
        "get_weather"
    );
    assert_eq!(chunks[0]["candidates"][0]["finishReason"], "STOP");
    let chunks = stream(&mock, "gemini", &answer).await;
    assert_eq!(chunk_text(&chunks), "It is sunny in Paris.");

    // Allowed function names pick the function; mode NONE answers with text.
    let mut allowed = tool_ask();
    allowed["toolConfig"] =
        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}});
    let (_, _, json) = generate(&mock, "gemini", &allowed).await;
    assert_eq!(
        json["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
        "get_time"
    );
    let mut none = tool_ask();
    none["toolConfig"] = json!({"functionCallingConfig": {"mode": "NONE"}});
    let (_, _, json) = generate(&mock, "gemini", &none).await;
    assert_eq!(
        json["candidates"][0]["content"]["parts"][0]["text"],
        DEFAULT_CONTENT
    );
}

#[tokio::test]
async fn safety_models_answer_with_a_blocked_candidate() {
    let mock = start().await;
    let request = body();
    let (status, _, json) = generate(&mock, "gemini-safety", &request).await;
    assert_eq!(status, 200);
    let expected_candidate = json!({
        "finishReason": "SAFETY",
        "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true}],
        "index": 0
    });
    assert_eq!(json["candidates"], json!([expected_candidate.clone()]));
    assert_eq!(
        json["usageMetadata"],
        json!({"promptTokenCount": 9, "totalTokenCount": 9})
    );
    let usage: GeminiUsage = serde_json::from_value(json["usageMetadata"].clone()).unwrap();
    assert_eq!(usage, expected_gemini_usage(&request, "gemini-safety"));

    let chunks = stream(&mock, "gemini-safety", &request).await;
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0]["candidates"], json!([expected_candidate]));
}

#[tokio::test]
async fn error_statuses_answer_in_google_shape() {
    let mock = start().await;
    let cases = [
        (400, "INVALID_ARGUMENT"),
        (401, "UNAUTHENTICATED"),
        (403, "PERMISSION_DENIED"),
        (404, "NOT_FOUND"),
        (429, "RESOURCE_EXHAUSTED"),
        (500, "INTERNAL"),
        (503, "UNAVAILABLE"),
    ];
    for (status, name) in cases {
        let model = format!("gemini-error-{status}");
        for method in ["generateContent", "streamGenerateContent?alt=sse"] {
            let response = send(&mock, &model, method, &body()).await;
            assert_eq!(response.status().as_u16(), status, "{model}");
            assert_eq!(response.headers()["content-type"], "application/json");
            assert_eq!(
                response
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned()),
                (status == 429).then(|| "1".to_owned()),
                "{model}"
            );
            let json: Value = response.json().await.unwrap();
            let error = &json["error"];
            assert_eq!(error["code"], status, "{json}");
            assert_eq!(error["status"], name, "{json}");
            assert!(!error["message"].as_str().unwrap().is_empty());
            if status == 429 {
                assert_eq!(
                    error["details"][0]["@type"],
                    "type.googleapis.com/google.rpc.RetryInfo"
                );
            } else {
                assert_eq!(error.as_object().unwrap().len(), 3, "{json}");
            }
        }
    }
    mock.set_behavior(Some(Behavior::Status(503)));
    let (status, _, json) = generate(&mock, "gemini", &body()).await;
    assert_eq!(status, 503);
    assert_eq!(json["error"]["status"], "UNAVAILABLE");
}

#[tokio::test]
async fn invalid_requests_and_unknown_methods() {
    let mock = start().await;
    let (status, _, json) = generate(&mock, "gemini", &json!({"contents": []})).await;
    assert_eq!(status, 400);
    assert_eq!(json["error"]["status"], "INVALID_ARGUMENT");
    let response = client()
        .post(format!(
            "{}/models/gemini:generateContent",
            mock.gemini_base_url()
        ))
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(mock.hits(), 2);

    let response = send(&mock, "gemini", "countTokens", &body()).await;
    assert_eq!(response.status(), 404);
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["error"]["code"], 404);
    assert_eq!(json["error"]["status"], "NOT_FOUND");
    let response = client()
        .get(format!("{}/models", mock.gemini_base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["error"]["status"], "NOT_FOUND");
    assert_eq!(mock.hits(), 2, "unserved methods are no hits");
    assert_eq!(mock.requests().len(), 4);
}

#[tokio::test]
async fn stream_error_event_ends_the_stream_after_two_chunks() {
    let mock = start().await;
    let chunks = stream(&mock, "gemini-stream-error-event", &body()).await;
    assert_eq!(chunks.len(), 3);
    assert_eq!(chunk_text(&chunks[..2]), "Hello from");
    assert_eq!(
        chunks[2],
        json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.",
                         "status": "UNAVAILABLE"}})
    );
    assert!(
        mock.wait_until(Duration::from_secs(2), |m| m.completed() == 1)
            .await
    );
}

#[tokio::test]
async fn drop_mid_stream_cuts_the_connection_after_two_chunks() {
    let mock = start().await;
    let response = send(
        &mock,
        "gemini-drop-mid-stream",
        "streamGenerateContent?alt=sse",
        &body(),
    )
    .await;
    assert_eq!(response.status(), 200);
    let (cut_frames, error) = frames(response).await;
    assert!(error.is_some(), "the client sees a body error");
    let chunks = sse_chunks(&String::from_utf8(joined(&cut_frames)).unwrap());
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunk_text(&chunks), "Hello from");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!((mock.completed(), mock.cancelled()), (0, 0));

    let (frames, error) =
        frames(send(&mock, "gemini-drop-mid-stream", "generateContent", &body()).await).await;
    assert!(error.is_some());
    assert!(serde_json::from_slice::<Value>(&joined(&frames)).is_err());
}

#[tokio::test]
async fn no_usage_leaves_out_usage_metadata() {
    let mock = start().await;
    let (_, _, json) = generate(&mock, "gemini-no-usage", &body()).await;
    assert!(json.get("usageMetadata").is_none(), "{json}");
    let chunks = stream(&mock, "gemini-no-usage", &body()).await;
    assert_eq!(chunks.len(), 5);
    assert!(chunks.iter().all(|c| c.get("usageMetadata").is_none()));
}

#[tokio::test]
async fn fragmented_stream_rejoins_to_the_unfragmented_bytes() {
    let content = "Grüße aus dem Mock — 你好, ✓ done";
    let config = |fragment| MockConfig {
        chunk_delay: Duration::from_millis(1),
        fragment,
        content: content.to_owned(),
        ..MockConfig::default()
    };
    let plain = start_with(config(false)).await;
    let fragmented = start_with(config(true)).await;
    for method in ["streamGenerateContent?alt=sse", "streamGenerateContent"] {
        let (plain_frames, error) = frames(send(&plain, "gemini", method, &body()).await).await;
        assert!(error.is_none());
        let (fragmented_frames, error) =
            frames(send(&fragmented, "gemini", method, &body()).await).await;
        assert!(error.is_none());
        assert_eq!(
            joined(&fragmented_frames),
            joined(&plain_frames),
            "{method}"
        );
        assert!(fragmented_frames.len() > plain_frames.len());
        assert!(fragmented_frames
            .iter()
            .any(|f| std::str::from_utf8(f).is_err()));
    }
    let (frames, _) = frames(
        send(
            &fragmented,
            "gemini",
            "streamGenerateContent?alt=sse",
            &body(),
        )
        .await,
    )
    .await;
    let text = String::from_utf8(joined(&frames)).unwrap();
    assert_eq!(chunk_text(&sse_chunks(&text)), content);
    assert!(
        frames.iter().any(|f| f.ends_with(b"\r\n\r")),
        "cut inside the CRLF framing"
    );
}
