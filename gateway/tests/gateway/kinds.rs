//! One suite, generated for every provider kind: plain, streamed, tool-call round trip,
//! usage and cost in the log row to the token, provider errors in OpenAI's shape.

use mock_provider::{Behavior, MockConfig, MockProvider};
use perpetuo_core::pricing::{Pricing, TokenCounts};
use perpetuo_core::provider::ProviderKind;
use serde_json::{json, Value};

use crate::harness::{mock, outlast, read_sse, Env, Gateway, MOCK_RETRY_AFTER};

/// What differs between kinds.
pub struct Kind {
    pub kind: ProviderKind,
    /// Model requested by the client (served under the same name).
    pub model: &'static str,
    pub base_url: fn(&MockProvider) -> String,
}

pub const OPENAI: Kind = Kind {
    kind: ProviderKind::Openai,
    model: "gpt-4o-mini",
    base_url: |m| m.base_url(),
};

pub const ANTHROPIC: Kind = Kind {
    kind: ProviderKind::Anthropic,
    model: "claude-sonnet-4-5-cache",
    base_url: |m| m.anthropic_base_url(),
};

pub const GEMINI: Kind = Kind {
    kind: ProviderKind::Gemini,
    model: "gemini-2.5-flash-cache",
    base_url: |m| m.gemini_base_url(),
};

pub fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello to the test suite"}
    ]})
}

pub fn tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}])
}

/// A provider entry of this kind on a mock that writes its streams in awkward fragments
/// (split inside events and UTF-8 characters, several events per write).
pub async fn setup(k: &Kind) -> (Env, MockProvider, Gateway) {
    let env = Env::new().await;
    let m = MockProvider::start(MockConfig {
        fragment: true,
        ..Default::default()
    })
    .await
    .unwrap();
    env.add_provider_with("entry", k.kind, &(k.base_url)(&m), 1, &[], &[])
        .await;
    let pricing = pricing_file();
    let gw = Gateway::start_with(&env, &env.db.url, &[("PRICING_FILE", pricing)]).await;
    (env, m, gw)
}

/// The embedded pricing table, plus the mock's cache-reporting model names at the prices of
/// the models they stand for (a name's suffix is never priced as its base model).
fn pricing_table() -> String {
    format!(
        "{}\n{}",
        include_str!("../../../conf/pricing.toml"),
        r#"
[models."claude-sonnet-4-5-cache"]
input = 3.00
cached_input = 0.30
cache_write = 3.75
output = 15.00
[models."gemini-2.5-flash-cache"]
input = 0.30
cached_input = 0.075
output = 2.50
"#
    )
}

/// [`pricing_table`] written once per test run, for `PRICING_FILE`.
fn pricing_file() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("kinds-pricing-{}.toml", std::process::id()));
        std::fs::write(&path, pricing_table()).unwrap();
        path.to_string_lossy().into_owned()
    })
}

pub async fn non_stream(k: &Kind) {
    let (env, m, gw) = setup(k).await;
    let resp = gw.chat(&env.key, chat(k.model)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        mock_provider::DEFAULT_CONTENT
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let upstream = m.last_request().unwrap();
    let row = env.log_row(&rid).await;
    let expected = usage_of(k, &upstream);
    assert_eq!(v["usage"]["prompt_tokens"], expected.prompt_tokens);
    assert_eq!(v["usage"]["completion_tokens"], expected.completion_tokens);
    check_row(k, &row, &expected);
}

/// The mock's usage for the request it received, in OpenAI's terms.
fn usage_of(k: &Kind, upstream: &mock_provider::RecordedRequest) -> TokenCounts {
    let json = upstream.json.clone().unwrap_or(Value::Null);
    match k.kind {
        ProviderKind::Anthropic => {
            let u = mock_provider::expected_anthropic_usage(&json);
            TokenCounts {
                prompt_tokens: u.input_tokens
                    + u.cache_creation_input_tokens
                    + u.cache_read_input_tokens,
                completion_tokens: u.output_tokens,
                cached_tokens: u.cache_read_input_tokens,
                cache_write_tokens: u.cache_creation_input_tokens,
            }
        }
        ProviderKind::Gemini => {
            let u = mock_provider::expected_gemini_usage(&json, k.model);
            TokenCounts {
                prompt_tokens: u.prompt_token_count,
                completion_tokens: u.candidates_token_count,
                cached_tokens: u.cached_content_token_count,
                cache_write_tokens: 0,
            }
        }
        _ => {
            let u = mock_provider::expected_usage(&json);
            TokenCounts {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                ..Default::default()
            }
        }
    }
}

fn check_row(k: &Kind, row: &perpetuo_core::db::logs::LogRecord, expected: &TokenCounts) {
    assert_eq!(row.status, 200);
    assert_eq!(row.provider_kind, Some(k.kind));
    assert_eq!(row.usage_source.as_str(), "provider");
    assert_eq!(row.prompt_tokens as u64, expected.prompt_tokens);
    assert_eq!(row.completion_tokens as u64, expected.completion_tokens);
    assert_eq!(
        row.total_tokens as u64,
        expected.prompt_tokens + expected.completion_tokens
    );
    let cost = Pricing::parse(&pricing_table())
        .unwrap()
        .cost_nusd(k.model, expected);
    assert!(cost.is_some(), "{} is priced", k.model);
    assert_eq!(row.cost_nusd, cost, "cost to the token, every token class");
}

pub async fn stream(k: &Kind) {
    let (env, m, gw) = setup(k).await;
    for wants_usage in [false, true] {
        let mut body = chat(k.model);
        body["stream"] = json!(true);
        if wants_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let resp = gw.chat(&env.key, body).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        let (events, clean) = read_sse(resp).await;
        assert!(clean);
        assert_eq!(
            events.last().map(String::as_str),
            Some("[DONE]"),
            "{events:?}"
        );
        let chunks: Vec<Value> = events
            .iter()
            .filter(|e| *e != "[DONE]")
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        assert!(chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk"));
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, mock_provider::DEFAULT_CONTENT);
        let finish: Vec<&str> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
            .collect();
        assert_eq!(finish, vec!["stop"]);
        let usage_chunks: Vec<&Value> = chunks
            .iter()
            .filter(|c| c["choices"].as_array().is_some_and(|a| a.is_empty()))
            .collect();
        assert_eq!(usage_chunks.len(), usize::from(wants_usage));
        let expected = usage_of(k, &m.last_request().unwrap());
        if wants_usage {
            assert_eq!(
                usage_chunks[0]["usage"]["prompt_tokens"],
                expected.prompt_tokens
            );
        }
        let row = env.log_row(&rid).await;
        assert!(row.streamed);
        check_row(k, &row, &expected);
    }
}

pub async fn tool_round_trip(k: &Kind) {
    let (env, _m, gw) = setup(k).await;
    let mut body = json!({"model": k.model, "messages": [{"role": "user", "content": "What is the weather in Paris?"}], "tools": tools()});
    let v: Value = gw
        .chat(&env.key, body.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    let call = v["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"location": "Paris"}));

    // Streamed, the call arrives as deltas that join to the same arguments.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (events, _) = read_sse(gw.chat(&env.key, streamed).send().await.unwrap()).await;
    let chunks: Vec<Value> = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert!(!deltas.is_empty(), "{events:?}");
    assert_eq!(deltas[0][0]["function"]["name"], "get_weather");
    let joined: String = deltas
        .iter()
        .filter_map(|d| d[0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&joined).unwrap(),
        json!({"location": "Paris"})
    );
    let finish: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, vec!["tool_calls"]);

    // The result goes back and the model answers with text.
    body["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "assistant", "content": null, "tool_calls": [call.clone()]}));
    body["messages"].as_array_mut().unwrap().push(
        json!({"role": "tool", "tool_call_id": call["id"], "content": "{\"forecast\":\"sunny\"}"}),
    );
    let v: Value = gw
        .chat(&env.key, body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["choices"][0]["message"]["content"], "It is sunny in Paris.",
        "{v}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

pub async fn provider_error(k: &Kind) {
    let (env, m, gw) = setup(k).await;
    m.set_behavior(Some(Behavior::Status(400)));
    let resp = gw.chat(&env.key, chat(k.model)).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["code"].is_string() || v["error"]["code"].is_null());
    assert_eq!(m.hits(), 1);
}

macro_rules! provider_suite {
    ($name:ident, $kind:expr) => {
        mod $name {
            #[tokio::test]
            async fn non_stream() {
                super::non_stream(&$kind).await
            }
            #[tokio::test]
            async fn stream() {
                super::stream(&$kind).await
            }
            #[tokio::test]
            async fn tool_call_round_trip() {
                super::tool_round_trip(&$kind).await
            }
            #[tokio::test]
            async fn provider_error_in_openai_shape() {
                super::provider_error(&$kind).await
            }
        }
    };
}

provider_suite!(openai, super::OPENAI);
provider_suite!(anthropic, super::ANTHROPIC);
provider_suite!(gemini, super::GEMINI);

#[tokio::test]
async fn falls_back_from_an_openai_429_to_anthropic_through_the_model_map() {
    let env = Env::new().await;
    let (oai, ant) = (mock().await, mock().await);
    oai.set_behavior(Some(Behavior::Status(429)));
    env.add_provider_with(
        "oai",
        ProviderKind::Openai,
        &oai.base_url(),
        1,
        &["gpt-4o-mini"],
        &[],
    )
    .await;
    env.add_provider_with(
        "claude",
        ProviderKind::Anthropic,
        &ant.anthropic_base_url(),
        2,
        &[],
        &[("gpt-4o-mini", "claude-3-5-haiku-latest")],
    )
    .await;
    let gw = Gateway::start(&env).await;
    for stream in [false, true] {
        let mut body = chat("gpt-4o-mini");
        body["stream"] = json!(stream);
        let resp = gw.chat(&env.key, body).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-perpetuo-provider"], "claude");
        let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        let text = resp.text().await.unwrap();
        assert!(text.contains("Hello") || text.contains("Hel"), "{text}");
        let row = env.log_row(&rid).await;
        assert_eq!(row.model_requested.as_deref(), Some("gpt-4o-mini"));
        assert_eq!(row.model_served.as_deref(), Some("claude-3-5-haiku-latest"));
        assert_eq!(row.attempts.len(), 2);
        assert_eq!(row.attempts[0].status, Some(429));
        let up = ant.last_request().unwrap();
        assert_eq!(up.path, "/v1/messages");
        assert_eq!(up.header("x-api-key"), Some("sk-upstream-claude"));
        assert_eq!(up.header("anthropic-version"), Some("2023-06-01"));
        assert!(up.header("authorization").is_none());
        assert_eq!(up.json.unwrap()["model"], "claude-3-5-haiku-latest");
        if !stream {
            // The next request must try the first entry again.
            outlast(MOCK_RETRY_AFTER).await;
        }
    }
}

#[tokio::test]
async fn pinned_kind_and_unsupported_input() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider_with("oai", ProviderKind::Openai, &m.base_url(), 1, &[], &[])
        .await;
    env.add_provider_with(
        "gem",
        ProviderKind::Gemini,
        &m.gemini_base_url(),
        2,
        &[],
        &[],
    )
    .await;
    let gw = Gateway::start(&env).await;
    let resp = gw
        .chat(&env.key, chat("gemini/gemini-2.5-flash"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-perpetuo-provider"], "gem");
    assert_eq!(
        m.last_request().unwrap().path,
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(
        m.last_request().unwrap().header("x-goog-api-key"),
        Some("sk-upstream-gem")
    );

    let audio = json!({"model": "gemini/gemini-2.5-flash", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]});
    let resp = gw.chat(&env.key, audio).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unsupported_request");
    assert_eq!(
        v["error"]["message"],
        "audio input is not supported for gemini providers"
    );

    let embeddings = gw
        .http
        .post(format!("{}/v1/embeddings", gw.base))
        .bearer_auth(&env.key)
        .json(&json!({"model": "anthropic/claude-sonnet-4-5", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        embeddings.status(),
        404,
        "no anthropic entry, and anthropic has no embeddings"
    );
}
