//! The Anthropic Messages front door: passed through unchanged to anthropic entries,
//! translated for every other kind (whole and streamed, tool use included), errors in
//! Anthropic's shape, fallback across kinds, usage in the log row, `count_tokens`.

use std::time::Duration;

use mock_provider::{Behavior, MockProvider};
use perpetuo_core::provider::ProviderKind;
use serde_json::{json, Value};

use crate::harness::{eventually, mock, Env, Gateway};
use crate::kinds::{Kind, ANTHROPIC, GEMINI, OPENAI};

fn messages_body(model: &str) -> Value {
    json!({"model": model, "max_tokens": 256, "system": "You are terse.",
           "messages": [{"role": "user", "content": "Say hello to the test suite"}]})
}

fn post(gw: &Gateway, key: &str, body: &Value) -> reqwest::RequestBuilder {
    gw.http
        .post(format!("{}/v1/messages", gw.base))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
}

/// Anthropic's events of a stream: (event name, data).
async fn events(resp: reqwest::Response) -> Vec<(String, Value)> {
    let text = resp.text().await.unwrap_or_default();
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("")
                .to_string();
            let data = e
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .and_then(|d| serde_json::from_str(d).ok())
                .unwrap_or(Value::Null);
            (name, data)
        })
        .collect()
}

fn text_of(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter_map(|(_, v)| v["delta"]["text"].as_str())
        .collect()
}

async fn one_entry(k: &Kind) -> (Env, MockProvider, Gateway) {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider_with("entry", k.kind, &(k.base_url)(&m), 1, &[], &[])
        .await;
    let gw = Gateway::start(&env).await;
    (env, m, gw)
}

#[tokio::test]
async fn anthropic_entries_get_the_request_unchanged() {
    let (env, m, gw) = one_entry(&ANTHROPIC).await;
    let mut body = messages_body(ANTHROPIC.model);
    body["system"] =
        json!([{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]);
    body["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
    let resp = post(&gw, &env.key, &body)
        .header("anthropic-beta", "prompt-caching-2024-07-31")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["text"], mock_provider::DEFAULT_CONTENT);
    let up = m.last_request().unwrap();
    assert_eq!(up.path, "/v1/messages");
    assert_eq!(
        up.json.clone().unwrap(),
        body,
        "the body went through unchanged"
    );
    assert_eq!(up.header("x-api-key"), Some("sk-upstream-entry"));
    assert_eq!(
        up.header("anthropic-beta"),
        Some("prompt-caching-2024-07-31")
    );
    let row = env.log_row(&rid).await;
    assert_eq!(row.route.as_str(), "messages");
    let usage = &v["usage"];
    let prompt = usage["input_tokens"].as_i64().unwrap()
        + usage["cache_read_input_tokens"].as_i64().unwrap_or(0)
        + usage["cache_creation_input_tokens"].as_i64().unwrap_or(0);
    assert_eq!(i64::from(row.prompt_tokens), prompt);
    assert_eq!(
        i64::from(row.completion_tokens),
        usage["output_tokens"].as_i64().unwrap()
    );

    // Streamed: Anthropic's own events, unchanged, ending with message_stop.
    body["stream"] = json!(true);
    let resp = post(&gw, &env.key, &body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let ev = events(resp).await;
    assert_eq!(ev.first().unwrap().0, "message_start");
    assert_eq!(ev.last().unwrap().0, "message_stop");
    assert_eq!(text_of(&ev), mock_provider::DEFAULT_CONTENT);
    let row = env.log_row(&rid).await;
    assert!(row.streamed && row.completion_tokens > 0);
}

async fn translated(k: &Kind) {
    let (env, _m, gw) = one_entry(k).await;
    let resp = post(&gw, &env.key, &messages_body(k.model))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", k.kind);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["content"][0]["text"], mock_provider::DEFAULT_CONTENT);
    assert_eq!(v["stop_reason"], "end_turn");
    let row = env.log_row(&rid).await;
    assert_eq!(row.route.as_str(), "messages");
    assert_eq!(
        i64::from(row.completion_tokens),
        v["usage"]["output_tokens"].as_i64().unwrap()
    );

    // Streamed: message_start, ping, one text block, message_delta with usage, message_stop.
    let mut body = messages_body(k.model);
    body["stream"] = json!(true);
    let resp = post(&gw, &env.key, &body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let ev = events(resp).await;
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[..3], ["message_start", "ping", "content_block_start"]);
    assert_eq!(
        names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert_eq!(text_of(&ev), mock_provider::DEFAULT_CONTENT);
    let delta = &ev[ev.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    let row = env.log_row(&rid).await;
    assert_eq!(
        i64::from(row.completion_tokens),
        delta["usage"]["output_tokens"].as_i64().unwrap()
    );
    assert!(row.completion_tokens > 0);

    // Thinking blocks cannot be translated: they are dropped, and the log row says so.
    let mut body = messages_body(k.model);
    body["messages"] = json!([
        {"role": "user", "content": "Say hello"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "x"}, {"type": "text", "text": "Hello"}]},
        {"role": "user", "content": "Again"}
    ]);
    let resp = post(&gw, &env.key, &body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let row = env.log_row(&rid).await;
    assert_eq!(
        row.note.as_deref(),
        Some("thinking blocks dropped in translation")
    );

    // Tool use: the call comes back as a tool_use block, streamed arguments re-join.
    let tools = json!([{"name": "get_weather", "description": "Weather of a city",
        "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}]);
    let mut body = messages_body(k.model);
    body["tools"] = tools;
    let resp = post(&gw, &env.key, &body).send().await.unwrap();
    let v: Value = resp.json().await.unwrap();
    let call = v["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_use")
        .unwrap()
        .clone();
    assert_eq!(call["name"], "get_weather");
    assert!(call["input"].is_object());
    assert_eq!(v["stop_reason"], "tool_use");
    body["stream"] = json!(true);
    let ev = events(post(&gw, &env.key, &body).send().await.unwrap()).await;
    let args: String = ev
        .iter()
        .filter_map(|(_, v)| v["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), call["input"]);
    // The tool result goes back as a tool_result block.
    let mut body = messages_body(k.model);
    body["tools"] = v["content"]
        .clone()
        .as_array()
        .map(|_| json!([{"name": "get_weather", "input_schema": {"type": "object"}}]))
        .unwrap();
    body["messages"] = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "Sunny, 21 C"}]}
    ]);
    let resp = post(&gw, &env.key, &body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["content"][0]["type"], "text");
}

#[tokio::test]
async fn openai_entries_are_translated() {
    translated(&OPENAI).await;
}

#[tokio::test]
async fn gemini_entries_are_translated() {
    translated(&GEMINI).await;
}

#[tokio::test]
async fn errors_in_anthropic_shape() {
    let (env, m, gw) = one_entry(&OPENAI).await;
    let bad = post(
        &gw,
        &format!("pp-{}", "B".repeat(43)),
        &messages_body("gpt-4o-mini"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(bad.status(), 401);
    let v: Value = bad.json().await.unwrap();
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "authentication_error", "message": v["error"]["message"]}})
    );
    // The Perpetuo key also works as a bearer token.
    let resp = gw
        .http
        .post(format!("{}/v1/messages", gw.base))
        .bearer_auth(&env.key)
        .json(&messages_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for (model, status, kind) in [
        ("gpt-error-400", 400, "invalid_request_error"),
        ("gpt-error-429", 429, "rate_limit_error"),
        ("gpt-error-500", 502, "api_error"),
    ] {
        let resp = post(&gw, &env.key, &messages_body(model))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{model}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], kind, "{model}");
        if status == 429 {
            // The entry is out until the 429's Retry-After has passed; asking meanwhile
            // never reaches it, and the first answer after lets it back in.
            eventually(
                "the entry is back after the 429",
                Duration::from_secs(10),
                || async {
                    let body = messages_body("gpt-4o-mini");
                    post(&gw, &env.key, &body).send().await.unwrap().status() == 200
                },
            )
            .await;
        }
    }
    let resp = post(
        &gw,
        &env.key,
        &json!({"model": "gpt-4o-mini", "messages": "nope"}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_request_error"
    );
    // A stream that breaks after its first content ends with an error event.
    m.reset_counts();
    let mut body = messages_body("gpt-drop-mid-stream");
    body["stream"] = json!(true);
    let ev = events(post(&gw, &env.key, &body).send().await.unwrap()).await;
    assert_eq!(ev.last().unwrap().0, "error");
    assert!(!ev.iter().any(|(n, _)| n == "message_stop"));
}

#[tokio::test]
async fn falls_back_across_kinds_with_a_model_map() {
    let env = Env::new().await;
    let (ant, gem) = (mock().await, mock().await);
    env.add_provider_with(
        "claude",
        ProviderKind::Anthropic,
        &ant.anthropic_base_url(),
        1,
        &[],
        &[],
    )
    .await;
    env.add_provider_with(
        "gem",
        ProviderKind::Gemini,
        &gem.gemini_base_url(),
        2,
        &[],
        &[("claude-sonnet-4-5", "gemini-2.5-flash")],
    )
    .await;
    let gw = Gateway::start_with(&env, &env.db.url, &[("BREAKER_THRESHOLD", "1000")]).await;
    // The anthropic entry is overloaded (529): the Gemini entry that maps the model serves,
    // and the client still gets a Messages answer.
    ant.set_behavior(Some(Behavior::Status(529)));
    for stream in [false, true] {
        let mut body = messages_body("claude-sonnet-4-5");
        body["stream"] = json!(stream);
        let resp = post(&gw, &env.key, &body).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-perpetuo-provider"], "gem");
        assert_eq!(resp.headers()["x-perpetuo-attempts"], "2");
        let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        if stream {
            let ev = events(resp).await;
            assert_eq!(text_of(&ev), mock_provider::DEFAULT_CONTENT);
            assert_eq!(ev.last().unwrap().0, "message_stop");
        } else {
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["type"], "message");
            assert_eq!(v["content"][0]["text"], mock_provider::DEFAULT_CONTENT);
        }
        let row = env.log_row(&rid).await;
        assert_eq!(row.model_served.as_deref(), Some("gemini-2.5-flash"));
        assert_eq!(row.attempts[0].status, Some(529));
    }
    assert_eq!(
        gem.last_request().unwrap().path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    );
}

#[tokio::test]
async fn count_tokens_is_answered_here() {
    let (env, m, gw) = one_entry(&OPENAI).await;
    let resp = gw
        .http
        .post(format!("{}/v1/messages/count_tokens", gw.base))
        .header("x-api-key", &env.key)
        .json(&messages_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    // "You are terse." (4) + "Say hello to the test suite" (6) + 3 per message + 3.
    assert_eq!(v["input_tokens"], 4 + 6 + 3 * 2 + 3);
    assert_eq!(m.hits(), 0);
}

#[tokio::test]
async fn images_reach_other_kinds() {
    let (env, m, gw) = one_entry(&GEMINI).await;
    let mut body = messages_body(GEMINI.model);
    body["messages"] = json!([{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}]);
    let resp = post(&gw, &env.key, &body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let sent = m.last_request().unwrap().json.unwrap();
    let parts = &sent["contents"][0]["parts"];
    assert_eq!(
        parts[1]["inlineData"],
        json!({"mimeType": "image/png", "data": "iVBORw0KGgo="})
    );
}

/// One turn of a Claude Code session as the CLI sends it: system prompt blocks and tools
/// marked for caching, `context_management`, thinking on, a beta header, and a history
/// of thinking (with its signature), tool use and tool results, and an image.
fn claude_code_turn(model: &str) -> Value {
    json!({
        "model": model, "max_tokens": 32000, "stream": true,
        "system": [
            {"type": "text", "text": "You are Claude Code."},
            {"type": "text", "text": "Work in /repo.", "cache_control": {"type": "ephemeral"}}
        ],
        "tools": [
            {"name": "Read", "description": "Reads a file.",
             "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]}},
            {"name": "Edit", "description": "Edits a file.",
             "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}},
             "cache_control": {"type": "ephemeral"}}
        ],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": "user_1"},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this screenshot? Then fix main.rs."},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Read it first.", "signature": "sig-secret-1"},
                {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "main.rs"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "fn main() {}"}]}]},
            {"role": "assistant", "content": [
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Editing."},
                {"type": "tool_use", "id": "toolu_2", "name": "Edit", "input": {"file_path": "main.rs"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "ok", "cache_control": {"type": "ephemeral"}}]}
        ]
    })
}

async fn claude_code_session(k: &Kind) {
    let (env, m, gw) = one_entry(k).await;
    let resp = post(&gw, &env.key, &claude_code_turn(k.model))
        .header(
            "anthropic-beta",
            "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", k.kind);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let ev = events(resp).await;
    assert_eq!(ev.last().unwrap().0, "message_stop", "{ev:?}");
    assert_eq!(
        text_of(&ev),
        "It is sunny in Paris.",
        "the tool results reached the model"
    );
    let delta = &ev[ev.len() - 2].1;
    let up = m.last_request().unwrap();
    let sent = up.json.clone().unwrap().to_string();
    assert!(
        !sent.contains("sig-secret-1") && !sent.contains("opaque"),
        "{sent}"
    );
    assert!(!sent.contains("cache_control") && !sent.contains("context_management"));
    assert!(sent.contains("iVBORw0KGgo="), "the image went along");
    assert!(up.header("anthropic-beta").is_none());
    let row = env.log_row(&rid).await;
    assert_eq!(
        row.note.as_deref(),
        Some("thinking blocks dropped in translation")
    );
    let usage = &delta["usage"];
    let input = usage["input_tokens"].as_i64().unwrap()
        + usage["cache_read_input_tokens"].as_i64().unwrap()
        + usage["cache_creation_input_tokens"].as_i64().unwrap();
    assert_eq!(i64::from(row.prompt_tokens), input);
    assert_eq!(
        i64::from(row.completion_tokens),
        usage["output_tokens"].as_i64().unwrap()
    );

    // The next turn asks for a tool: it streams as a tool_use block of input_json_delta.
    let mut next = claude_code_turn(k.model);
    next["messages"] = json!([{"role": "user", "content": "Read main.rs"}]);
    let ev = events(post(&gw, &env.key, &next).send().await.unwrap()).await;
    let start = ev
        .iter()
        .find(|(n, v)| n == "content_block_start" && v["content_block"]["type"] == "tool_use")
        .unwrap();
    assert_eq!(start.1["content_block"]["name"], "Read");
    let args: String = ev
        .iter()
        .filter(|(_, v)| v["delta"]["type"] == "input_json_delta")
        .filter_map(|(_, v)| v["delta"]["partial_json"].as_str())
        .collect();
    assert!(serde_json::from_str::<Value>(&args).unwrap().is_object());
    assert_eq!(ev[ev.len() - 2].1["delta"]["stop_reason"], "tool_use");
}

#[tokio::test]
async fn a_claude_code_session_on_openai() {
    claude_code_session(&OPENAI).await;
}

#[tokio::test]
async fn a_claude_code_session_on_openai_compatible() {
    claude_code_session(&Kind {
        kind: ProviderKind::OpenaiCompatible,
        ..OPENAI
    })
    .await;
}

#[tokio::test]
async fn a_claude_code_session_on_gemini() {
    claude_code_session(&GEMINI).await;
}

/// Cache tokens the provider reports reach the answer (as Anthropic's cache fields) and
/// the log row (in its prompt tokens).
#[tokio::test]
async fn cache_tokens_are_reported_in_anthropics_terms() {
    let env = Env::new().await;
    let m = MockProvider::start(mock_provider::MockConfig {
        prompt_cache: true,
        ..mock_provider::MockConfig::default()
    })
    .await
    .unwrap();
    env.add_provider_with("oai", ProviderKind::Openai, &m.base_url(), 1, &[], &[])
        .await;
    let gw = Gateway::start(&env).await;
    let mut body = claude_code_turn("gpt-4o-mini");
    body["stream"] = json!(false);
    let mut last = Value::Null;
    let mut rid = String::new();
    for _ in 0..2 {
        let resp = post(&gw, &env.key, &body).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        last = resp.json().await.unwrap();
    }
    let usage = &last["usage"];
    let cached = usage["cache_read_input_tokens"].as_i64().unwrap();
    assert!(
        cached > 0,
        "the second turn finds its prefix cached: {usage}"
    );
    let row = env.log_row(&rid).await;
    assert_eq!(
        i64::from(row.prompt_tokens),
        usage["input_tokens"].as_i64().unwrap() + cached
    );
}
