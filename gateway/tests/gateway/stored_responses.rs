//! Stored Responses as a chain of turns: each turn stored once however often it is
//! continued, a deleted turn kept (hidden) while others continue it, the per-workspace
//! quota refusing before the provider while other workspaces still store, limits checked
//! before a stored conversation is read, the purge deleting expired turns in batches, and
//! responses stored before the upgrade still read and continued.

use std::time::Duration;

use perpetuo_core::db;
use perpetuo_core::email::Email;
use perpetuo_core::provider::ProviderKind;
use perpetuo_core::testing::TestDb;
use serde_json::{json, Value};

use crate::harness::{chat_body, eventually, mock, Env, Gateway};

const MODEL: &str = "gpt-4o-mini";

fn post(gw: &Gateway, key: &str, body: &Value) -> reqwest::RequestBuilder {
    gw.http
        .post(format!("{}/v1/responses", gw.base))
        .bearer_auth(key)
        .json(body)
}

async fn create(gw: &Gateway, key: &str, body: &Value) -> Value {
    let resp = post(gw, key, body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
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

async fn delete(gw: &Gateway, key: &str, id: &str) -> u16 {
    gw.http
        .delete(format!("{}/v1/responses/{id}", gw.base))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn id(response: &Value) -> &str {
    response["id"].as_str().unwrap()
}

/// The text of each message the provider was last sent, in order.
fn sent_texts(m: &mock_provider::MockProvider) -> Vec<String> {
    let sent = m.last_request().unwrap().json.unwrap();
    sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap_or("").to_string())
        .collect()
}

/// One number from the database.
async fn number(env: &Env, sql: &str) -> i64 {
    env.client()
        .await
        .query_one(sql, &[])
        .await
        .unwrap()
        .get::<_, Option<i64>>(0)
        .unwrap_or(0)
}

/// The workspace's stored-bytes counter equals the sum over its rows.
async fn assert_counter_matches_rows(env: &Env, workspace: uuid::Uuid) {
    let client = env.client().await;
    let counted = db::responses::stored_bytes(&client, workspace)
        .await
        .unwrap();
    let summed: i64 = client
        .query_one(
            "SELECT coalesce(sum(stored_bytes), 0)::bigint FROM stored_responses WHERE workspace_id = $1",
            &[&workspace],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(counted, summed, "the quota counter is the sum of the rows");
}

async fn setup(extra: &[(&str, &str)]) -> (Env, mock_provider::MockProvider, Gateway) {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("compat", &m.base_url(), 1).await;
    let gw = Gateway::start_with(&env, &env.db.url, extra).await;
    (env, m, gw)
}

#[tokio::test]
async fn continuing_a_large_response_stores_each_turn_once() {
    let (env, m, gw) = setup(&[]).await;
    let large = "0123456789abcdef".repeat(16 * 1024); // 256 KiB
    let first = create(&gw, &env.key, &json!({"model": MODEL, "input": large})).await;
    let turns = 5;
    let mut last = first.clone();
    for n in 0..turns {
        // Each from the large one; the last three also chain on each other.
        let previous = if n < 2 { id(&first) } else { id(&last) };
        let body =
            json!({"model": MODEL, "input": format!("turn {n}"), "previous_response_id": previous});
        let answer = create(&gw, &env.key, &body).await;
        assert_eq!(
            sent_texts(&m)[0].len(),
            large.len(),
            "the provider got the large turn"
        );
        last = answer;
    }
    // The last answer continues a chain of five turns: replayed first turn first.
    let texts = sent_texts(&m);
    let asked: Vec<&str> = texts.iter().step_by(2).map(String::as_str).collect();
    assert_eq!(asked[1..], ["turn 1", "turn 2", "turn 3", "turn 4"]);
    assert_eq!(texts.len(), 9, "five questions and four answers");

    // Stored: the large input once (as input items and as its turn), not once per answer.
    let rows = number(&env, "SELECT count(*) FROM stored_responses").await;
    assert_eq!(rows, 1 + turns);
    let total = number(
        &env,
        "SELECT sum(octet_length(s::text))::bigint FROM stored_responses s",
    )
    .await;
    let large_len = large.len() as i64;
    assert!(
        total < 3 * large_len,
        "{total} bytes stored for {} answers to a {large_len}-byte turn",
        turns + 1
    );
    let largest_later = number(
        &env,
        &format!(
            "SELECT max(octet_length(s::text))::bigint FROM stored_responses s WHERE id <> '{}'",
            id(&first)
        ),
    )
    .await;
    assert!(
        largest_later < 16 * 1024,
        "a small turn holds {largest_later} bytes"
    );
    assert_counter_matches_rows(&env, env.workspace).await;

    // Reading one back reads that turn only, as it was answered.
    let (status, stored) = get(&gw, &env.key, id(&last)).await;
    assert_eq!((status, &stored), (200, &last));
}

#[tokio::test]
async fn a_deleted_response_that_others_continue_is_hidden_and_its_turn_kept_for_them() {
    let (env, m, gw) = setup(&[]).await;
    let first = create(
        &gw,
        &env.key,
        &json!({"model": MODEL, "input": "My name is Ada."}),
    )
    .await;
    let second = create(
        &gw,
        &env.key,
        &json!({"model": MODEL, "input": "Noted?", "previous_response_id": id(&first)}),
    )
    .await;
    let counter = || async {
        let client = env.client().await;
        db::responses::stored_bytes(&client, env.workspace)
            .await
            .unwrap()
    };
    let before = counter().await;

    assert_eq!(delete(&gw, &env.key, id(&first)).await, 200);
    // Its Response and input items go at once: the quota counts only the turn kept.
    assert!(counter().await < before);
    assert_counter_matches_rows(&env, env.workspace).await;
    assert_eq!(get(&gw, &env.key, id(&first)).await.0, 404);
    let items = format!("{}/input_items", id(&first));
    assert_eq!(get(&gw, &env.key, &items).await.0, 404);
    assert_eq!(delete(&gw, &env.key, id(&first)).await, 404);
    let resp = post(
        &gw,
        &env.key,
        &json!({"model": MODEL, "input": "x", "previous_response_id": id(&first)}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 404, "a deleted response cannot be continued");

    // The answer that continued it still carries its turn.
    create(
        &gw,
        &env.key,
        &json!({"model": MODEL, "input": "What is my name?", "previous_response_id": id(&second)}),
    )
    .await;
    let texts = sent_texts(&m);
    assert_eq!(texts[0], "My name is Ada.");
    assert_eq!(texts[2], "Noted?");
    assert_eq!(texts[4], "What is my name?");
    let client = env.client().await;
    let after_delete: i64 = client
        .query_one(
            "SELECT stored_bytes FROM stored_responses WHERE id = $1",
            &[&id(&first)],
        )
        .await
        .unwrap()
        .get(0);
    let turn_only: i64 = client
        .query_one(
            "SELECT octet_length(turn::text)::bigint FROM stored_responses WHERE id = $1",
            &[&id(&first)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(after_delete, turn_only);

    // A response nothing continues goes at once.
    let third = create(&gw, &env.key, &json!({"model": MODEL, "input": "alone"})).await;
    assert_eq!(delete(&gw, &env.key, id(&third)).await, 200);
    let left = number(
        &env,
        &format!(
            "SELECT count(*) FROM stored_responses WHERE id = '{}'",
            id(&third)
        ),
    )
    .await;
    assert_eq!(left, 0);
    assert_counter_matches_rows(&env, env.workspace).await;
}

#[tokio::test]
async fn a_workspace_past_its_quota_is_refused_before_the_provider_while_another_still_stores() {
    let (env, m, gw) = setup(&[("RESPONSES_WORKSPACE_QUOTA_BYTES", "8000")]).await;
    let (other_ws, other_key) = crate::containment::neighbour_key(&env).await;
    env.add_provider_in(
        other_ws,
        "other",
        ProviderKind::OpenaiCompatible,
        &m.base_url(),
        1,
        &[],
        &[],
    )
    .await;
    let body = json!({"model": MODEL, "input": "x".repeat(1000)});
    let mut stored = Vec::new();
    let refused = loop {
        assert!(stored.len() < 10, "the quota never refused");
        let resp = post(&gw, &env.key, &body).send().await.unwrap();
        if resp.status() != 200 {
            break resp;
        }
        stored.push(resp.json::<Value>().await.unwrap());
    };
    assert!(
        stored.len() >= 2,
        "{} stored before the quota",
        stored.len()
    );
    let hits = m.hits();
    assert_eq!(refused.status(), 413);
    let rid = refused.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    let v: Value = refused.json().await.unwrap();
    assert_eq!(v["error"]["code"], "responses_quota_exceeded", "{v}");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("store"));
    let row = env.log_row(&rid).await;
    assert_eq!(row.status, 413);
    assert_eq!(row.error_kind.as_deref(), Some("responses_quota_exceeded"));
    assert_eq!(m.hits(), hits, "the provider was not called");
    let used = {
        let client = env.client().await;
        db::responses::stored_bytes(&client, env.workspace)
            .await
            .unwrap()
    };
    assert!(used <= 8000 + 4000, "{used} bytes stored");
    assert_counter_matches_rows(&env, env.workspace).await;

    // Not stored, not refused.
    let mut unstored = body.clone();
    unstored["store"] = json!(false);
    assert_eq!(
        post(&gw, &env.key, &unstored)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Another workspace still stores.
    let theirs = create(&gw, &other_key, &body).await;
    assert_eq!(get(&gw, &other_key, id(&theirs)).await.0, 200);

    // Deleting frees room.
    for r in &stored {
        assert_eq!(delete(&gw, &env.key, id(r)).await, 200);
    }
    assert_counter_matches_rows(&env, env.workspace).await;
    create(&gw, &env.key, &body).await;
}

#[tokio::test]
async fn a_key_over_its_limits_is_refused_before_its_stored_conversation_is_read() {
    let (env, _m, gw) = setup(&[]).await;
    let stored = create(&gw, &env.key, &json!({"model": MODEL, "input": "hello"})).await;
    env.client()
        .await
        .execute(
            "UPDATE api_keys SET concurrency_limit = 1 WHERE id = $1",
            &[&env.key_id],
        )
        .await
        .unwrap();
    let gw = Gateway::start(&env).await; // the limit as the key is loaded
    let mut held = chat_body("gpt-stall-mid-stream");
    held["stream"] = json!(true);
    let mut running = gw.chat(&env.key, held).send().await.unwrap();
    assert_eq!(running.status(), 200);
    assert!(running.chunk().await.unwrap().is_some(), "the slot is held");

    // Were the conversation read first, an unknown one would answer 404.
    for previous in ["resp_unknown", id(&stored)] {
        let resp = post(
            &gw,
            &env.key,
            &json!({"model": MODEL, "input": "again", "previous_response_id": previous}),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(resp.status(), 429, "{previous}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "rate_limit_exceeded", "{v}");
    }
    drop(running);
}

#[tokio::test]
async fn the_purge_deletes_expired_turns_in_batches_but_keeps_those_still_continued() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("compat", &m.base_url(), 1).await;
    let expired = 12_500; // more than the ten thousand one statement used to delete
    let client = env.client().await;
    client
        .execute(
            "INSERT INTO stored_responses (id, workspace_id, expires_at, response, input_items, \
             turn, depth, conversation_bytes, stored_bytes) \
             SELECT 'resp_old_' || n, $1, now() - interval '1 hour', '{}', '[]', '[]', 1, 2, 6 \
             FROM generate_series(1, $2::int) n",
            &[&env.workspace, &expired],
        )
        .await
        .unwrap();
    // An expired first turn that a live answer continues.
    client
        .execute(
            "INSERT INTO stored_responses (id, workspace_id, expires_at, response, input_items, \
             turn, depth, conversation_bytes, stored_bytes) VALUES \
             ('resp_root', $1, now() - interval '1 hour', '{}', '[]', \
              '[{\"role\":\"user\",\"content\":\"Remember 42.\"},{\"role\":\"assistant\",\"content\":\"OK.\"}]', 1, 80, 80)",
            &[&env.workspace],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO stored_responses (id, workspace_id, expires_at, response, input_items, \
             previous_response_id, turn, depth, conversation_bytes, stored_bytes) VALUES \
             ('resp_child', $1, now() + interval '1 day', '{\"id\":\"resp_child\"}', '[]', 'resp_root', \
              '[{\"role\":\"user\",\"content\":\"And?\"},{\"role\":\"assistant\",\"content\":\"Fine.\"}]', 2, 160, 100)",
            &[&env.workspace],
        )
        .await
        .unwrap();

    let gw = Gateway::start(&env).await; // the purge runs at start
    eventually(
        "every expired turn nothing continues is purged",
        Duration::from_secs(60),
        || async { number(&env, "SELECT count(*) FROM stored_responses").await == 2 },
    )
    .await;
    let kept = number(
        &env,
        "SELECT count(*) FROM stored_responses WHERE id IN ('resp_root', 'resp_child')",
    )
    .await;
    assert_eq!(kept, 2);
    assert_counter_matches_rows(&env, env.workspace).await;
    assert_eq!(
        get(&gw, &env.key, "resp_root").await.0,
        404,
        "expired: hidden"
    );
    create(
        &gw,
        &env.key,
        &json!({"model": MODEL, "input": "Which number?", "previous_response_id": "resp_child"}),
    )
    .await;
    assert_eq!(
        sent_texts(&m),
        ["Remember 42.", "OK.", "And?", "Fine.", "Which number?"]
    );
}

#[tokio::test]
async fn responses_stored_before_the_upgrade_still_read_and_continue() {
    // The schema before stored turns (V6's rows: the whole conversation in each).
    let db = TestDb::at_version(11).await.unwrap();
    let workspace = {
        let client = db.pool.get().await.unwrap();
        let user = db::users::insert(&client, &Email::parse("old@example.com").unwrap(), "x")
            .await
            .unwrap();
        db::workspaces::create(&client, "old", user.id)
            .await
            .unwrap()
            .id
    };
    let m = mock().await;
    let response = json!({"id": "resp_before", "object": "response", "status": "completed",
        "model": MODEL, "output": [{"type": "message", "id": "msg_1", "role": "assistant",
        "content": [{"type": "output_text", "text": "Hello Ada.", "annotations": []}]}],
        "store": true, "previous_response_id": null});
    let items = json!([{"id": "msg_0", "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "I am Ada."}]}]);
    let conversation = json!([
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Earlier."},
        {"role": "assistant", "content": "Yes."},
        {"role": "user", "content": "I am Ada."},
        {"role": "assistant", "content": "Hello Ada."}
    ]);
    let client = db.pool.get().await.unwrap();
    for (id, conversation) in [("resp_before", &conversation), ("resp_long", &Value::Null)] {
        let mut response = response.clone();
        response["id"] = json!(id);
        client
            .execute(
                "INSERT INTO stored_responses (id, workspace_id, expires_at, response, input_items, conversation) \
                 VALUES ($1, $2, now() + interval '1 day', $3, $4, $5)",
                &[&id, &workspace, &response, &items, conversation],
            )
            .await
            .unwrap();
    }
    drop(client);
    db::migrate::run(&db.pool).await.unwrap();
    // The key is made by today's code, so after the upgrade.
    let env = Env::of_workspace(db, workspace).await;
    // The entry is written by today's code, so after the upgrade.
    env.add_provider("compat", &m.base_url(), 1).await;
    let gw = Gateway::start(&env).await;

    let (status, stored) = get(&gw, &env.key, "resp_before").await;
    assert_eq!((status, stored), (200, response));
    let (status, listed) = get(&gw, &env.key, "resp_before/input_items").await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"], items);
    create(
        &gw,
        &env.key,
        &json!({"model": MODEL, "input": "Who am I?", "previous_response_id": "resp_before"}),
    )
    .await;
    assert_eq!(
        sent_texts(&m),
        ["Earlier.", "Yes.", "I am Ada.", "Hello Ada.", "Who am I?"]
    );
    let resp = post(
        &gw,
        &env.key,
        &json!({"model": MODEL, "input": "x", "previous_response_id": "resp_long"}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "conversation_too_long");
    assert_counter_matches_rows(&env, env.workspace).await;
}
