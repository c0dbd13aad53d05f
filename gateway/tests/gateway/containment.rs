//! What one tenant sends, or one provider entry answers, stays that tenant's problem:
//! bad model names and deep JSON are refused before any provider is called (and never
//! cost a neighbour's log rows), oversized stream events and endless answers end as
//! broken streams, and a breaker probe whose client leaves does not keep its entry out.

use std::time::Duration;

use mock_provider::Behavior;
use perpetuo_core::apikey;
use perpetuo_core::db;
use perpetuo_core::email::Email;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{chat_body, eventually, mock, outlast, read_sse, Env, Gateway};

/// Another workspace in the same database, with its own key; returns (workspace, key).
pub async fn neighbour_key(env: &Env) -> (Uuid, String) {
    neighbour(env).await
}

async fn neighbour(env: &Env) -> (Uuid, String) {
    let mut client = env.client().await;
    let tx = client.transaction().await.unwrap();
    let user = db::users::insert(&tx, &Email::parse("b@example.com").unwrap(), "x")
        .await
        .unwrap();
    let ws = db::workspaces::create(&tx, "b", user.id).await.unwrap();
    tx.commit().await.unwrap();
    let k = apikey::generate();
    db::api_keys::insert(&client, ws.id, "b", &k, None, None)
        .await
        .unwrap();
    (ws.id, k.plaintext.expose().clone())
}

#[tokio::test]
async fn bad_model_names_are_refused_before_any_provider_and_cost_no_neighbour_a_row() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("any", &m.base_url(), 1).await;
    let (ws_b, key_b) = neighbour(&env).await;
    let gw = Gateway::start(&env).await;
    let bad = [
        ("gpt\u{0}-4o".to_string(), "invalid_model"),
        ("gpt-4o\r\nx-injected: 1".to_string(), "invalid_model"),
        ("m".repeat(4096), "invalid_model"),
        (String::new(), "missing_model"),
    ];
    for i in 0..5 {
        let resp = gw
            .chat(&env.key, chat_body("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "request {i} of workspace A");
    }
    for (model, code) in &bad {
        let resp = gw.chat(&key_b, chat_body(model)).send().await.unwrap();
        assert_eq!(resp.status(), 400);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], *code);
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    for _ in 0..5 {
        let resp = gw
            .chat(&env.key, chat_body("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(m.hits(), 10, "no refused request reached the provider");
    let rows = env.log_rows(10).await;
    assert_eq!(rows.len(), 10, "every request of workspace A has its row");
    let client = env.client().await;
    let b_rows = eventually(
        "workspace B's refused requests have their rows",
        Duration::from_secs(10),
        || async {
            let rows = db::logs::all_for_workspace(&client, ws_b).await.unwrap();
            (rows.len() >= 4).then_some(rows)
        },
    )
    .await;
    assert_eq!(
        b_rows.len(),
        4,
        "workspace B's refused requests have their rows"
    );
    assert!(b_rows.iter().all(|r| r.status == 400));
    let counted: i64 = client
        .query_one(
            "SELECT coalesce(sum(requests), 0)::bigint FROM usage_counters WHERE workspace_id = $1",
            &[&env.workspace],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(counted, 10, "workspace A's counters moved for each request");
}

#[tokio::test]
async fn deeply_nested_json_is_refused() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("any", &m.base_url(), 1).await;
    let gw = Gateway::start(&env).await;
    let deep = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"hi"}}],"x":{}1{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let resp = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(&env.key)
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "json_too_deep");
    assert_eq!(m.hits(), 0);
}

#[tokio::test]
async fn a_stream_event_past_the_cap_ends_the_stream_as_broken() {
    let env = Env::new().await;
    // One real content chunk, then an event that never ends.
    let mut body =
        b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: ".to_vec();
    body.extend(std::iter::repeat_n(b'x', 512 * 1024));
    let hostile = crate::hostile::sse_server(body).await;
    env.add_provider("hostile", &format!("http://{hostile}/v1"), 1)
        .await;
    let gw = Gateway::start_with(&env, &env.db.url, &[("MAX_STREAM_EVENT_BYTES", "65536")]).await;
    let mut req = chat_body("gpt-4o-mini");
    req["stream"] = json!(true);
    let resp = gw.chat(&env.key, req).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let (data, _) = read_sse(resp).await;
    assert!(data[0].contains("Hi"));
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_event_too_large");
    assert!(!data.iter().any(|d| d == "[DONE]"));
    let row = env.log_row(&rid).await;
    assert_eq!(row.error_kind.as_deref(), Some("upstream_event_too_large"));

    // Before the first content, an endless event is a failed attempt instead.
    let mut req = chat_body("gpt-unframed-stream");
    req["stream"] = json!(true);
    let m = mock().await;
    let env2 = Env::new().await;
    env2.add_provider("unframed", &m.base_url(), 1).await;
    let gw2 =
        Gateway::start_with(&env2, &env2.db.url, &[("MAX_STREAM_EVENT_BYTES", "65536")]).await;
    let resp = gw2.chat(&env2.key, req).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(
        env2.log_row(&rid).await.attempts[0].error_kind.as_deref(),
        Some("early_end")
    );
}

#[tokio::test]
async fn an_answer_past_its_time_limit_ends_as_broken() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("slow", &m.base_url(), 1).await;
    let gw = Gateway::start_with(&env, &env.db.url, &[("MAX_ANSWER_DURATION_MS", "1500")]).await;
    let mut req = chat_body("gpt-stall-mid-stream");
    req["stream"] = json!(true);
    let resp = gw.chat(&env.key, req).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let (data, _) = read_sse(resp).await;
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "answer_too_long");
    let row = env.log_row(&rid).await;
    assert_eq!(row.error_kind.as_deref(), Some("answer_too_long"));
    eventually(
        "the provider sees the cancel",
        Duration::from_secs(5),
        || async { m.cancelled() + m.abandoned() >= 1 },
    )
    .await;
}

#[tokio::test]
async fn a_probe_whose_client_leaves_does_not_keep_its_entry_out() {
    let env = Env::new().await;
    let (a, b) = (mock().await, mock().await);
    env.add_provider("first", &a.base_url(), 1).await;
    env.add_provider("second", &b.base_url(), 2).await;
    let gw = Gateway::start_with(
        &env,
        &env.db.url,
        &[
            ("BREAKER_THRESHOLD", "1"),
            ("BREAKER_COOLDOWN_MS", "300"),
            ("UPSTREAM_TTFB_TIMEOUT_MS", "60000"),
        ],
    )
    .await;
    // One failure opens the first entry's breaker.
    a.set_behavior(Some(Behavior::Status(503)));
    let resp = gw
        .chat(&env.key, chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-perpetuo-provider"], "second");
    outlast(Duration::from_millis(300)).await;
    // After the cool-down one probe goes to the first entry, which stalls; its client
    // gives up and leaves.
    a.set_behavior(Some(Behavior::Stall));
    let gone = gw
        .chat(&env.key, chat_body("gpt-4o-mini"))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(gone.is_err(), "the client left");
    eventually(
        "the probe's upstream is dropped",
        Duration::from_secs(5),
        || async { a.abandoned() >= 1 },
    )
    .await;
    // The first entry is healthy again and gets the next probe.
    a.set_behavior(None);
    let resp = gw
        .chat(&env.key, chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-perpetuo-provider"], "first");
}

#[tokio::test]
async fn a_model_the_provider_refuses_does_not_open_the_breaker() {
    let env = Env::new().await;
    let (a, b) = (mock().await, mock().await);
    env.add_provider("first", &a.base_url(), 1).await;
    env.add_provider("second", &b.base_url(), 2).await;
    let gw = Gateway::start_with(&env, &env.db.url, &[("BREAKER_THRESHOLD", "1")]).await;
    // The first entry answers 403 for this client-chosen model (a model its key may not
    // use): the request falls back, but the entry stays in service for everyone.
    a.set_behavior(Some(Behavior::Status(403)));
    for _ in 0..3 {
        let resp = gw
            .chat(&env.key, chat_body("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["x-perpetuo-provider"], "second");
    }
    a.set_behavior(None);
    let resp = gw
        .chat(&env.key, chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-perpetuo-provider"], "first");
    // A 500 is about the entry: with a threshold of one it opens the breaker.
    a.set_behavior(Some(Behavior::Status(500)));
    let resp = gw
        .chat(&env.key, chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-perpetuo-provider"], "second");
    a.set_behavior(None);
    let resp = gw
        .chat(&env.key, chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-perpetuo-provider"], "second");
}
