//! The OpenAI Responses front door: translated for every kind (whole and streamed, every
//! event numbered, function calls round-tripped), stored answers with
//! `GET`/`DELETE`/`input_items`, `previous_response_id` replaying the conversation on any
//! kind, `store: false`, and stored answers invisible to other workspaces.

use perpetuo_core::provider::ProviderKind;
use serde_json::{json, Value};

use crate::harness::{mock, Env, Gateway};
use crate::kinds::{Kind, ANTHROPIC, GEMINI, OPENAI};

fn post(gw: &Gateway, key: &str, body: &Value) -> reqwest::RequestBuilder {
    gw.http
        .post(format!("{}/v1/responses", gw.base))
        .bearer_auth(key)
        .json(body)
}

async fn get(gw: &Gateway, key: &str, path: &str) -> (u16, Value) {
    let resp = gw
        .http
        .get(format!("{}/v1/responses/{path}", gw.base))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

fn output_text(response: &Value) -> String {
    response["output"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["type"] == "message")
        .flat_map(|i| i["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["text"].as_str().map(str::to_string))
        .collect()
}

/// The events of a Responses stream (their data objects).
async fn events(resp: reqwest::Response) -> Vec<Value> {
    let text = resp.text().await.unwrap_or_default();
    text.split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

async fn each_kind(k: &Kind) {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider_with("entry", k.kind, &(k.base_url)(&m), 1, &[], &[])
        .await;
    let gw = Gateway::start(&env).await;
    let body = json!({"model": k.model, "instructions": "You are terse.", "input": "Say hello to the test suite"});
    let resp = post(&gw, &env.key, &body).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{:?}", k.kind);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(output_text(&v), mock_provider::DEFAULT_CONTENT);
    let row = env.log_row(&rid).await;
    assert_eq!(row.route.as_str(), "responses");
    assert_eq!(
        i64::from(row.completion_tokens),
        v["usage"]["output_tokens"].as_i64().unwrap()
    );
    assert_eq!(
        i64::from(row.prompt_tokens),
        v["usage"]["input_tokens"].as_i64().unwrap()
    );

    // Streamed: numbered events from response.created to response.completed.
    let mut body = body.clone();
    body["stream"] = json!(true);
    let resp = post(&gw, &env.key, &body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ev = events(resp).await;
    let kinds: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds[..4],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added"
        ]
    );
    assert_eq!(kinds.last(), Some(&"response.completed"));
    for (i, e) in ev.iter().enumerate() {
        assert_eq!(e["sequence_number"], i as u64);
    }
    let deltas: String = ev
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(deltas, mock_provider::DEFAULT_CONTENT);
    let done = &ev.last().unwrap()["response"];
    assert_eq!(output_text(done), mock_provider::DEFAULT_CONTENT);
    assert!(done["usage"]["output_tokens"].as_u64().unwrap() > 0);

    // Function calling: the call comes back as a function_call item, its streamed
    // arguments re-join, and its output goes back as function_call_output.
    let tools = json!([{"type": "function", "name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}]);
    let ask = json!({"model": k.model, "input": "What is the weather in Paris?", "tools": tools});
    let v: Value = post(&gw, &env.key, &ask)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let call = v["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "function_call")
        .unwrap()
        .clone();
    assert_eq!(call["name"], "get_weather");
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let ev = events(post(&gw, &env.key, &streamed).send().await.unwrap()).await;
    let args: String = ev
        .iter()
        .filter(|e| e["type"] == "response.function_call_arguments.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    let args: Value = serde_json::from_str(&args).unwrap();
    assert_eq!(
        args,
        serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).unwrap()
    );
    let answer = json!({"model": k.model, "tools": tools, "input": [
        {"role": "user", "content": "What is the weather in Paris?"},
        call,
        {"type": "function_call_output", "call_id": call["call_id"], "output": "{\"forecast\": \"sunny\"}"}
    ]});
    let v: Value = post(&gw, &env.key, &answer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(output_text(&v), "It is sunny in Paris.");
}

/// `openai_compatible` entries get the Responses API translated to chat completions
/// (`openai` entries get it passed through: see below).
const OPENAI_COMPATIBLE: Kind = Kind {
    kind: ProviderKind::OpenaiCompatible,
    ..OPENAI
};

#[tokio::test]
async fn openai_compatible_kind() {
    each_kind(&OPENAI_COMPATIBLE).await;
}

#[tokio::test]
async fn openai_entries_get_the_request_unchanged() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider_with("oai", ProviderKind::Openai, &m.base_url(), 1, &[], &[])
        .await;
    let gw = Gateway::start(&env).await;
    let body = json!({"model": "gpt-4o-mini", "input": "Say hello to the test suite",
        "tools": [{"type": "web_search_preview"}], "include": ["reasoning.encrypted_content"]});
    let resp = post(&gw, &env.key, &body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let v: Value = resp.json().await.unwrap();
    let up = m.last_request().unwrap();
    assert_eq!(up.path, "/v1/responses");
    assert_eq!(
        up.json.clone().unwrap(),
        body,
        "the body went through unchanged"
    );
    assert_eq!(up.header("authorization"), Some("Bearer sk-upstream-oai"));
    assert_eq!(output_text(&v), mock_provider::DEFAULT_CONTENT);
    assert!(
        v["id"].as_str().unwrap().starts_with("resp_mock_"),
        "OpenAI's own response"
    );
    let row = env.log_row(&rid).await;
    assert_eq!(row.route.as_str(), "responses");
    assert_eq!(
        i64::from(row.prompt_tokens),
        v["usage"]["input_tokens"].as_i64().unwrap()
    );
    assert_eq!(
        i64::from(row.completion_tokens),
        v["usage"]["output_tokens"].as_i64().unwrap()
    );
    // Stored here too, so it can be read back and continued on any kind.
    let (status, stored) = get(&gw, &env.key, v["id"].as_str().unwrap()).await;
    assert_eq!((status, &stored), (200, &v));

    // Streamed: OpenAI's own events, unchanged, and the usage of response.completed.
    let mut body = body.clone();
    body["stream"] = json!(true);
    let resp = post(&gw, &env.key, &body).send().await.unwrap();
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let ev = events(resp).await;
    let done = ev.last().unwrap();
    assert_eq!(done["type"], "response.completed");
    assert!(done["response"]["id"]
        .as_str()
        .unwrap()
        .starts_with("resp_mock_"));
    let row = env.log_row(&rid).await;
    assert!(row.streamed);
    assert_eq!(
        i64::from(row.completion_tokens),
        done["response"]["usage"]["output_tokens"].as_i64().unwrap()
    );
    let (status, _) = get(&gw, &env.key, done["response"]["id"].as_str().unwrap()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn anthropic_kind() {
    each_kind(&ANTHROPIC).await;
}

#[tokio::test]
async fn gemini_kind() {
    each_kind(&GEMINI).await;
}

#[tokio::test]
async fn stored_responses_continue_conversations_on_any_kind() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider_with(
        "claude",
        ProviderKind::Anthropic,
        &m.anthropic_base_url(),
        1,
        &[],
        &[],
    )
    .await;
    let gw = Gateway::start(&env).await;
    let first: Value = post(
        &gw,
        &env.key,
        &json!({"model": "claude-sonnet-4-5", "input": "My name is Ada."}),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let id = first["id"].as_str().unwrap().to_string();
    // Stored: the same response, and its input items.
    let (status, stored) = get(&gw, &env.key, &id).await;
    assert_eq!(status, 200);
    assert_eq!(stored, first);
    let (status, items) = get(&gw, &env.key, &format!("{id}/input_items")).await;
    assert_eq!(status, 200);
    assert_eq!(items["object"], "list");
    assert_eq!(items["data"][0]["content"][0]["text"], "My name is Ada.");

    // The second turn replays the first (question and answer) to the provider.
    let second = post(&gw, &env.key, &json!({"model": "claude-sonnet-4-5", "input": "What is my name?", "previous_response_id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 200);
    let sent = m.last_request().unwrap().json.unwrap();
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{sent}");
    assert_eq!(messages[0]["content"][0]["text"], "My name is Ada.");
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[2]["content"][0]["text"], "What is my name?");

    // Another workspace cannot see it, continue it or delete it.
    let other = Env::new().await;
    let (status, _) = get(&gw, &other.key, &id).await;
    assert_eq!(status, 401, "a key of another database is unknown here");
    let (_, other_key) = crate::containment::neighbour_key(&env).await;
    let (status, body) = get(&gw, &other_key, &id).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let resp = post(
        &gw,
        &other_key,
        &json!({"model": "claude-sonnet-4-5", "input": "x", "previous_response_id": id}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 404);

    // store: false keeps nothing.
    let unstored: Value = post(
        &gw,
        &env.key,
        &json!({"model": "claude-sonnet-4-5", "input": "x", "store": false}),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(unstored["store"], false);
    let (status, _) = get(&gw, &env.key, unstored["id"].as_str().unwrap()).await;
    assert_eq!(status, 404);

    // Deleted: gone.
    let resp = gw
        .http
        .delete(format!("{}/v1/responses/{id}", gw.base))
        .bearer_auth(&env.key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"id": id, "object": "response", "deleted": true})
    );
    assert_eq!(get(&gw, &env.key, &id).await.0, 404);
}

#[tokio::test]
async fn built_in_tools_an_agent_needs_are_refused_by_name() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider_with(
        "gem",
        ProviderKind::Gemini,
        &m.gemini_base_url(),
        1,
        &[],
        &[],
    )
    .await;
    let gw = Gateway::start(&env).await;
    let resp = post(&gw, &env.key, &json!({"model": "gemini-2.5-flash", "input": "x", "tools": [{"type": "computer_use_preview"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("computer_use_preview"),
        "{v}"
    );
    assert_eq!(m.hits(), 0);
}

/// A Codex turn as the current CLI sends it: tools grouped in a namespace, its freeform
/// `apply_patch`, a built-in it can do without, `include`, `prompt_cache_key`,
/// `client_metadata`, `store: false`.
fn codex_turn(model: &str, input: Value, tool_choice: Value) -> Value {
    json!({
        "model": model, "instructions": "You are a coding agent.", "input": input,
        "tools": [
            {"type": "custom", "name": "apply_patch", "description": "Edit files with a patch.",
             "format": {"type": "grammar", "syntax": "lark", "definition": "start: \"*** Begin Patch\""}},
            {"type": "namespace", "name": "mcp__docs", "description": "Docs.",
             "tools": [{"type": "function", "name": "search", "description": "Search the docs.",
                        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}]},
            {"type": "web_search"}
        ],
        "tool_choice": tool_choice, "parallel_tool_calls": false, "store": false, "stream": true,
        "include": ["reasoning.encrypted_content"], "prompt_cache_key": "conversation-1",
        "client_metadata": {"x-codex-turn-metadata": "{}"}
    })
}

async fn codex_on(k: &Kind) {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider_with("entry", k.kind, &(k.base_url)(&m), 1, &[], &[])
        .await;
    let gw = Gateway::start(&env).await;
    let ask = json!([{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Fix the bug."}]}]);

    // Turn 1, streamed: the model calls the freeform tool, which comes back as a
    // custom_tool_call with its input events.
    let body = codex_turn(
        k.model,
        ask.clone(),
        json!({"type": "custom", "name": "apply_patch"}),
    );
    let resp = post(&gw, &env.key, &body).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{:?}", k.kind);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let ev = events(resp).await;
    let kinds: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(
        kinds.contains(&"response.custom_tool_call_input.delta"),
        "{kinds:?}"
    );
    let done = ev
        .iter()
        .find(|e| e["type"] == "response.custom_tool_call_input.done")
        .unwrap();
    let completed = &ev.last().unwrap()["response"];
    assert_eq!(ev.last().unwrap()["type"], "response.completed");
    let call = completed["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "custom_tool_call")
        .unwrap()
        .clone();
    assert_eq!(call["name"], "apply_patch");
    assert_eq!(call["input"], done["input"]);
    assert!(!call["input"].as_str().unwrap().is_empty());
    let up = m.last_request().unwrap().json.unwrap();
    let row = env.log_row(&rid).await;
    let note = row.note.unwrap_or_default();
    for dropped in ["web_search tool", "include", "client_metadata"] {
        assert!(note.contains(dropped), "{note}");
    }
    match k.kind {
        ProviderKind::Anthropic => {
            assert!(!note.contains("prompt_cache_key"), "{note}");
            assert_eq!(
                up["system"][0]["cache_control"]["type"], "ephemeral",
                "{up}"
            );
        }
        _ => assert!(note.contains("prompt_cache_key"), "{note}"),
    }
    if k.kind == ProviderKind::OpenaiCompatible {
        assert!(up.get("prompt_cache_key").is_none(), "{up}");
    }
    assert!(row.prompt_tokens > 0 && row.completion_tokens > 0);

    // Turn 2: the call and its output go back; the model answers.
    let mut input = ask.as_array().unwrap().clone();
    input.push(call.clone());
    input.push(
        json!({"type": "custom_tool_call_output", "call_id": call["call_id"], "output": "Done!"}),
    );
    let body = codex_turn(k.model, Value::Array(input), json!("auto"));
    let ev = events(post(&gw, &env.key, &body).send().await.unwrap()).await;
    assert_eq!(ev.last().unwrap()["type"], "response.completed");
    assert_eq!(
        output_text(&ev.last().unwrap()["response"]),
        "It is sunny in Paris."
    );

    // A namespace's function, whole: the call names its namespace again.
    let mut body = codex_turn(
        k.model,
        ask,
        json!({"type": "function", "namespace": "mcp__docs", "name": "search"}),
    );
    body["stream"] = json!(false);
    let v: Value = post(&gw, &env.key, &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let call = v["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "function_call")
        .unwrap();
    assert_eq!(call["namespace"], "mcp__docs", "{v}");
    assert_eq!(call["name"], "search");
}

#[tokio::test]
async fn codex_turns_work_on_anthropic() {
    codex_on(&ANTHROPIC).await;
}

#[tokio::test]
async fn codex_turns_work_on_gemini() {
    codex_on(&GEMINI).await;
}

#[tokio::test]
async fn codex_turns_work_on_openai_compatible() {
    codex_on(&OPENAI_COMPATIBLE).await;
}

/// Codex tries a WebSocket for `/v1/responses` when its provider allows it; `426 Upgrade
/// Required` makes it use HTTP for the session at once.
#[tokio::test]
async fn a_websocket_upgrade_is_answered_426_at_once() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider_with("oai", ProviderKind::Openai, &m.base_url(), 1, &[], &[])
        .await;
    let gw = Gateway::start(&env).await;
    let resp = gw
        .http
        .get(format!("{}/v1/responses", gw.base))
        .bearer_auth(&env.key)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 426);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "websocket_not_supported");
    assert_eq!(m.hits(), 0);
    // A plain GET is still a wrong method, and POST still works.
    let resp = gw
        .http
        .get(format!("{}/v1/responses", gw.base))
        .bearer_auth(&env.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
}

#[tokio::test]
async fn falls_back_across_kinds_and_carries_images() {
    let env = Env::new().await;
    let (oai, ant) = (mock().await, mock().await);
    env.add_provider_with(
        "compat",
        ProviderKind::OpenaiCompatible,
        &oai.base_url(),
        1,
        &[],
        &[],
    )
    .await;
    env.add_provider_with(
        "claude",
        ProviderKind::Anthropic,
        &ant.anthropic_base_url(),
        2,
        &[],
        &[("gpt-4o-mini", "claude-sonnet-4-5")],
    )
    .await;
    let gw = Gateway::start_with(&env, &env.db.url, &[("BREAKER_THRESHOLD", "1000")]).await;
    oai.set_behavior(Some(mock_provider::Behavior::Status(429)));
    let image = "data:image/png;base64,iVBORw0KGgo=";
    let body = json!({"model": "gpt-4o-mini", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": image}]}]});
    let resp = post(&gw, &env.key, &body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-perpetuo-provider"], "claude");
    assert_eq!(resp.headers()["x-perpetuo-attempts"], "2");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(output_text(&v), mock_provider::DEFAULT_CONTENT);
    let sent = ant.last_request().unwrap().json.unwrap();
    assert_eq!(sent["model"], "claude-sonnet-4-5");
    let source = &sent["messages"][0]["content"][1]["source"];
    assert_eq!(
        (source["type"].as_str(), source["media_type"].as_str()),
        (Some("base64"), Some("image/png"))
    );
    assert_eq!(source["data"], "iVBORw0KGgo=");
}

#[tokio::test]
async fn a_conversation_past_its_cap_is_answered_and_stored_but_not_continued() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider_with(
        "claude",
        ProviderKind::Anthropic,
        &m.anthropic_base_url(),
        1,
        &[],
        &[],
    )
    .await;
    // The cap is its own setting, apart from the body limit.
    let gw = Gateway::start_with(
        &env,
        &env.db.url,
        &[("RESPONSES_MAX_CONVERSATION_BYTES", "3000")],
    )
    .await;
    let turn = |previous: Option<&str>| {
        let mut body = json!({"model": "claude-sonnet-4-5", "input": "x".repeat(1600)});
        if let Some(p) = previous {
            body["previous_response_id"] = json!(p);
        }
        body
    };
    let first: Value = post(&gw, &env.key, &turn(None))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second = post(&gw, &env.key, &turn(first["id"].as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 200, "the first conversation fits");
    let second: Value = second.json().await.unwrap();
    // Two turns of 1,600 bytes pass the 3,000-byte cap: the answer is given and stored,
    // its conversation is not, and continuing it is refused before any provider call.
    assert_eq!(
        get(&gw, &env.key, second["id"].as_str().unwrap()).await.0,
        200
    );
    let hits = m.hits();
    let third = post(&gw, &env.key, &turn(second["id"].as_str()))
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 400);
    let v: Value = third.json().await.unwrap();
    assert_eq!(v["error"]["code"], "conversation_too_long");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(m.hits(), hits);
}
