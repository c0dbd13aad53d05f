//! The answer is held until its first real content, not its first byte: a stream that
//! dies or stalls after its preamble (a role-only chunk, `message_start`, an empty chunk)
//! falls back like one that failed before its first byte, and the client sees one clean
//! stream from the entry that served it.

use mock_provider::Behavior;
use serde_json::{json, Value};

use crate::harness::{mock, read_sse, Env, Gateway};
use crate::kinds::{chat, Kind, ANTHROPIC, GEMINI, OPENAI};

/// Two entries of kind `k`; the first behaves as `behavior`. Checks that a streamed
/// request is served whole by the second, each entry hit once.
async fn falls_back_after_preamble(k: &Kind, behavior: Behavior, failure: &str) {
    let env = Env::new().await;
    let (a, b) = (mock().await, mock().await);
    env.add_provider_with("first", k.kind, &(k.base_url)(&a), 1, &[], &[])
        .await;
    env.add_provider_with("second", k.kind, &(k.base_url)(&b), 2, &[], &[])
        .await;
    a.set_behavior(Some(behavior));
    let gw = Gateway::start(&env).await;
    let mut body = chat(k.model);
    body["stream"] = json!(true);
    let resp = gw.chat(&env.key, body).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{behavior:?}");
    assert_eq!(resp.headers()["x-perpetuo-provider"], "second");
    assert_eq!(resp.headers()["x-perpetuo-attempts"], "2");
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let (data, clean) = read_sse(resp).await;
    assert!(clean);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data
        .iter()
        .filter(|d| d.as_str() != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let roles = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"].get("role").is_some())
        .count();
    assert_eq!(
        roles, 1,
        "only the serving entry's preamble reaches the client"
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, mock_provider::DEFAULT_CONTENT);
    let row = env.log_row(&rid).await;
    assert_eq!(row.status, 200);
    assert_eq!(row.attempts.len(), 2);
    assert_eq!(row.attempts[0].error_kind.as_deref(), Some(failure));
    assert_eq!(row.provider_name.as_deref(), Some("second"));
    assert_eq!((a.hits(), b.hits()), (1, 1));
}

#[tokio::test]
async fn openai_stream_dying_after_its_role_chunk_falls_back() {
    falls_back_after_preamble(&OPENAI, Behavior::DropAfterPreamble, "early_end").await;
}

#[tokio::test]
async fn anthropic_stream_dying_after_message_start_falls_back() {
    falls_back_after_preamble(&ANTHROPIC, Behavior::DropAfterPreamble, "early_end").await;
}

#[tokio::test]
async fn gemini_stream_dying_after_an_empty_chunk_falls_back() {
    falls_back_after_preamble(&GEMINI, Behavior::DropAfterPreamble, "early_end").await;
}

#[tokio::test]
async fn a_stream_stalling_after_its_preamble_falls_back_at_the_ttfb_timeout() {
    falls_back_after_preamble(&OPENAI, Behavior::StallAfterPreamble, "timeout").await;
}

#[tokio::test]
async fn an_error_event_before_any_content_falls_back() {
    // The mock's error event comes after two content pieces; a provider that errors
    // first is built here from the Anthropic preamble behaviour's opposite: an OpenAI
    // error chunk as the only event.
    let env = Env::new().await;
    let b = mock().await;
    let erroring = crate::hostile::sse_server(
        "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n",
    )
    .await;
    env.add_provider("first", &format!("http://{erroring}/v1"), 1)
        .await;
    env.add_provider("second", &b.base_url(), 2).await;
    let gw = Gateway::start(&env).await;
    let mut body = chat("gpt-4o-mini");
    body["stream"] = json!(true);
    let resp = gw.chat(&env.key, body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-perpetuo-provider"], "second");
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let (data, _) = read_sse(resp).await;
    assert!(!data.iter().any(|d| d.contains("overloaded")));
    let row = env.log_row(&rid).await;
    assert_eq!(row.attempts[0].error_kind.as_deref(), Some("stream_error"));
}

#[tokio::test]
async fn a_client_that_leaves_during_the_hold_is_charged_the_estimate() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("mock", &m.base_url(), 1).await;
    m.set_behavior(Some(Behavior::StallAfterPreamble));
    let gw = Gateway::start(&env).await;
    let mut body = crate::harness::chat_body("gpt-4o-mini");
    body["stream"] = json!(true);
    let pending = gw.chat(&env.key, body).send();
    // The gateway holds the answer (nothing has reached the client) while the provider
    // sits after its preamble; the client gives up then.
    let gone = async {
        crate::harness::eventually(
            "the provider was asked",
            std::time::Duration::from_secs(10),
            || async { m.hits() == 1 },
        )
        .await;
    };
    tokio::select! {
        r = pending => panic!("answered during the hold: {:?}", r.map(|r| r.status())),
        () = gone => {}
    }
    let rows = env.log_rows(1).await;
    let row = &rows[0];
    assert_eq!(row.status, 499);
    assert_eq!(row.provider_name.as_deref(), Some("mock"));
    assert_eq!(row.usage_source.as_str(), "estimated");
    assert!(row.prompt_tokens > 0);
    assert!(row.cost_nusd.is_some_and(|c| c > 0), "{:?}", row.cost_nusd);
}
