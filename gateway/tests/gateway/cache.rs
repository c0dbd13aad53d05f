//! The response cache: hits without a provider call, per workspace; both shapes from one
//! entry and a stream's events replayed in their pieces, on every door; errors and broken
//! streams never stored; the request's cache headers; opt-in; purge; coalescing of
//! identical requests in flight; Redis shared by two gateways and Redis down; log rows,
//! counters and limits of hits.

use std::time::Duration;

use futures::future::join_all;
use mock_provider::{Behavior, MockConfig, MockProvider};
use perpetuo_core::db;
use perpetuo_core::db::logs::CacheResult;
use perpetuo_core::provider::ProviderKind;
use serde_json::{json, Value};

use crate::harness::{chat_body, eventually, metric_value, mock, read_sse, Env, Gateway};
use crate::redis_kit::PrivateRedis;

async fn set_cache(env: &Env, workspace: uuid::Uuid, mode: &str, ttl: i32) {
    env.client()
        .await
        .execute(
            "UPDATE workspaces SET cache_mode = $2, cache_ttl_seconds = $3 WHERE id = $1",
            &[&workspace, &mode, &ttl],
        )
        .await
        .unwrap();
}

/// A workspace with the cache on and one OpenAI-compatible entry on a mock.
async fn setup_with(config: MockConfig) -> (Env, MockProvider) {
    let env = Env::new().await;
    let m = MockProvider::start(config).await.unwrap();
    env.add_provider("main", &m.base_url(), 1).await;
    set_cache(&env, env.workspace, "on", 3600).await;
    (env, m)
}

async fn setup() -> (Env, MockProvider) {
    setup_with(MockConfig::default()).await
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// The answer's cache header, request id and body.
async fn ask(gw: &Gateway, key: &str, body: &Value) -> (Option<String>, String, Value) {
    let r = gw.chat(key, body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cache = header(&r, "x-perpetuo-cache");
    let id = header(&r, "x-request-id").unwrap();
    (cache, id, r.json().await.unwrap())
}

fn content(v: &Value) -> &str {
    v["choices"][0]["message"]["content"].as_str().unwrap()
}

/// The streamed text of chat chunks, and how many chunks carried some.
fn streamed_text(data: &[String]) -> (String, usize) {
    let mut text = String::new();
    let mut pieces = 0;
    for d in data.iter().filter(|d| d.as_str() != "[DONE]") {
        let v: Value = serde_json::from_str(d).unwrap();
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            if !t.is_empty() {
                pieces += 1;
                text.push_str(t);
            }
        }
    }
    (text, pieces)
}

#[tokio::test]
async fn a_repeated_request_is_answered_from_the_cache_and_never_across_workspaces() {
    let (env, m) = setup().await;
    let gw = Gateway::start(&env).await;
    let body = json!({"model": "gpt-4o", "temperature": 0,
                      "messages": [{"role": "user", "content": "Say hello"}]});
    let (first, miss_id, a) = ask(&gw, &env.key, &body).await;
    assert_eq!(first.as_deref(), Some("miss"));
    // The same request with its keys in another order and other spacing, and a field
    // that does not change the answer.
    let reordered: Value = serde_json::from_str(
        r#"{ "messages" : [ { "content": "Say hello", "role": "user" } ],
             "user": "someone", "temperature": 0, "model": "gpt-4o" }"#,
    )
    .unwrap();
    let r = gw.chat(&env.key, reordered).send().await.unwrap();
    assert_eq!(header(&r, "x-perpetuo-cache").as_deref(), Some("hit"));
    assert!(header(&r, "age").is_some());
    assert!(header(&r, "x-perpetuo-provider").is_none());
    let hit_id = header(&r, "x-request-id").unwrap();
    let b: Value = r.json().await.unwrap();
    assert_eq!(m.hits(), 1, "the hit never reached the provider");
    assert_eq!(content(&a), content(&b));
    assert_eq!(a["usage"], b["usage"], "the SDK sees the same usage");
    assert_ne!(a["id"], b["id"], "a hit is a new answer");

    // Another workspace sending the very same bytes misses, and its own provider answers.
    let other_ws = env.new_workspace("other").await;
    let (other_key, _) = env.new_key_in(other_ws).await;
    let m2 = mock().await;
    env.add_provider_in(
        other_ws,
        "theirs",
        ProviderKind::OpenaiCompatible,
        &m2.base_url(),
        1,
        &[],
        &[],
    )
    .await;
    set_cache(&env, other_ws, "on", 3600).await;
    let (theirs, _, _) = ask(&gw, &other_key, &body).await;
    assert_eq!(theirs.as_deref(), Some("miss"));
    assert_eq!((m.hits(), m2.hits()), (1, 1));

    // The hit's log row: no provider, no cost, the answer's tokens, what it saved.
    let miss = env.log_row(&miss_id).await;
    let hit = env.log_row(&hit_id).await;
    assert_eq!(miss.cache, Some(CacheResult::Miss));
    assert_eq!(hit.cache, Some(CacheResult::Hit));
    assert_eq!(hit.provider_id, None);
    assert_eq!(hit.cost_nusd, Some(0));
    assert_eq!(hit.total_tokens, miss.total_tokens);
    assert!(miss.cost_nusd.unwrap() > 0);
    assert_eq!(hit.cache_saved_nusd, miss.cost_nusd);
    let row = env
        .client()
        .await
        .query_one(
            "SELECT sum(requests)::int8, sum(cache_hits)::int8, sum(cache_hit_tokens)::int8,
                    sum(total_tokens)::int8, sum(cache_saved_nusd)::int8
             FROM usage_counters WHERE workspace_id = $1",
            &[&env.workspace],
        )
        .await
        .unwrap();
    let (requests, hits, hit_tokens, tokens, saved): (i64, i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    assert_eq!((requests, hits), (2, 1));
    assert_eq!(hit_tokens, i64::from(hit.total_tokens));
    assert_eq!(
        tokens,
        i64::from(miss.total_tokens),
        "a hit's tokens are kept apart"
    );
    assert_eq!(Some(saved), miss.cost_nusd);
    let metrics = gw.metrics_text().await;
    assert_eq!(
        metric_value(&metrics, r#"perpetuo_cache_requests_total{result="hit"}"#),
        1.0
    );
    assert_eq!(
        metric_value(&metrics, r#"perpetuo_cache_requests_total{result="miss"}"#),
        2.0
    );
}

#[tokio::test]
async fn a_stream_replays_its_events_in_pieces_and_one_entry_serves_both_shapes() {
    let (env, m) = setup().await;
    let gw = Gateway::start(&env).await;
    let mut body = chat_body("gpt-4o");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = gw.chat(&env.key, body.clone()).send().await.unwrap();
    assert_eq!(header(&r, "x-perpetuo-cache").as_deref(), Some("miss"));
    let (live, clean) = read_sse(r).await;
    assert!(clean);
    let r = gw.chat(&env.key, body.clone()).send().await.unwrap();
    assert_eq!(header(&r, "x-perpetuo-cache").as_deref(), Some("hit"));
    let (hit, clean) = read_sse(r).await;
    assert!(clean);
    assert_eq!(m.hits(), 1);
    let (live_text, live_pieces) = streamed_text(&live);
    let (hit_text, hit_pieces) = streamed_text(&hit);
    assert_eq!(hit_text, live_text);
    assert!(live_pieces >= 3, "the mock streams several pieces");
    assert_eq!(
        hit_pieces, live_pieces,
        "replayed in the provider's pieces, not one chunk"
    );
    assert_eq!(hit.len(), live.len());
    assert_eq!(hit.last().map(String::as_str), Some("[DONE]"));
    let usage = |d: &[String]| -> Value {
        let v: Value = serde_json::from_str(&d[d.len() - 2]).unwrap();
        v["usage"].clone()
    };
    assert_eq!(usage(&hit), usage(&live));

    // The same entry, asked without streaming: the answer the stream adds up to.
    body["stream"] = json!(false);
    let (cache, _, whole) = ask(&gw, &env.key, &body).await;
    assert_eq!(cache.as_deref(), Some("hit"));
    assert_eq!(content(&whole), live_text);
    assert_eq!(whole["object"], "chat.completion");
    assert!(whole["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    // A stored body, asked as a stream: one content event, then the end.
    let mut other = chat_body("gpt-4o");
    other["messages"][0]["content"] = json!("Another question");
    let (_, _, stored) = ask(&gw, &env.key, &other).await;
    other["stream"] = json!(true);
    let r = gw.chat(&env.key, other).send().await.unwrap();
    assert_eq!(header(&r, "x-perpetuo-cache").as_deref(), Some("hit"));
    let (events, clean) = read_sse(r).await;
    assert!(clean);
    assert_eq!(streamed_text(&events), (content(&stored).to_string(), 1));
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(m.hits(), 2);
}

#[tokio::test]
async fn messages_and_responses_hits_replay_their_doors_answers_with_new_ids() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider_with(
        "claude",
        ProviderKind::Anthropic,
        &m.anthropic_base_url(),
        1,
        &["claude-sonnet-4-5"],
        &[],
    )
    .await;
    env.add_provider_with(
        "compat",
        ProviderKind::OpenaiCompatible,
        &m.base_url(),
        1,
        &["gpt-4o"],
        &[],
    )
    .await;
    set_cache(&env, env.workspace, "on", 3600).await;
    let gw = Gateway::start(&env).await;
    let messages = |stream: bool| {
        gw.http
            .post(format!("{}/v1/messages", gw.base))
            .header("x-api-key", &env.key)
            .header("anthropic-version", "2023-06-01")
            .json(
                &json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": stream,
                          "messages": [{"role": "user", "content": "Hi"}]}),
            )
    };
    let live = messages(true).send().await.unwrap().text().await.unwrap();
    let r = messages(true).send().await.unwrap();
    assert_eq!(header(&r, "x-perpetuo-cache").as_deref(), Some("hit"));
    let hit = r.text().await.unwrap();
    let names = |t: &str| -> Vec<String> {
        t.lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        names(&hit),
        names(&live),
        "Anthropic's events, in their pieces"
    );
    assert_eq!(names(&hit).last().map(String::as_str), Some("message_stop"));
    let message_id = |t: &str| -> String {
        let start = t
            .lines()
            .find_map(|l| {
                l.strip_prefix("data: ")
                    .filter(|d| d.contains("message_start"))
            })
            .unwrap();
        serde_json::from_str::<Value>(start).unwrap()["message"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_ne!(message_id(&hit), message_id(&live));
    assert!(message_id(&hit).starts_with("msg_"));
    // Whole, from the streamed entry.
    let r = messages(false).send().await.unwrap();
    assert_eq!(header(&r, "x-perpetuo-cache").as_deref(), Some("hit"));
    let whole: Value = r.json().await.unwrap();
    assert_eq!(whole["type"], "message");
    assert!(whole["content"][0]["text"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    assert_eq!(m.hits(), 1);

    // Responses, translated: a hit is a new response, stored as usual.
    let responses = || {
        gw.http
            .post(format!("{}/v1/responses", gw.base))
            .bearer_auth(&env.key)
            .json(&json!({"model": "gpt-4o", "input": "Hello there", "store": true}))
    };
    let first: Value = responses().send().await.unwrap().json().await.unwrap();
    let r = responses().send().await.unwrap();
    assert_eq!(header(&r, "x-perpetuo-cache").as_deref(), Some("hit"));
    let second: Value = r.json().await.unwrap();
    assert_eq!(m.hits(), 2);
    assert_ne!(first["id"], second["id"]);
    assert_eq!(first["output_text"], second["output_text"]);
    let stored = gw
        .http
        .get(format!(
            "{}/v1/responses/{}",
            gw.base,
            second["id"].as_str().unwrap()
        ))
        .bearer_auth(&env.key)
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 200, "the hit was stored under its new id");

    // Streamed: the Responses events again, in their pieces, under a new response id.
    let streamed = || {
        gw.http
            .post(format!("{}/v1/responses", gw.base))
            .bearer_auth(&env.key)
            .json(&json!({"model": "gpt-4o", "input": "Stream to me", "stream": true}))
    };
    let types = |t: &str| -> (Vec<String>, String) {
        let events: Vec<Value> = t
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let id = events[0]["response"]["id"].as_str().unwrap().to_string();
        (
            events
                .iter()
                .map(|e| e["type"].as_str().unwrap().to_string())
                .collect(),
            id,
        )
    };
    let live = types(&streamed().send().await.unwrap().text().await.unwrap());
    let r = streamed().send().await.unwrap();
    assert_eq!(header(&r, "x-perpetuo-cache").as_deref(), Some("hit"));
    let hit = types(&r.text().await.unwrap());
    assert_eq!(hit.0, live.0);
    assert_eq!(hit.0.last().map(String::as_str), Some("response.completed"));
    assert_ne!(hit.1, live.1);
    assert_eq!(m.hits(), 3);
}

#[tokio::test]
async fn errors_and_broken_streams_are_never_stored() {
    let (env, m) = setup().await;
    let gw = Gateway::start(&env).await;
    let body = chat_body("gpt-4o");
    m.set_behavior(Some(Behavior::Status(400)));
    let r = gw.chat(&env.key, body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 400);
    m.set_behavior(None);
    let (cache, _, _) = ask(&gw, &env.key, &body).await;
    assert_eq!(cache.as_deref(), Some("miss"), "the error was not stored");

    let mut stream = chat_body("gpt-4o");
    stream["messages"][0]["content"] = json!("A stream that breaks");
    stream["stream"] = json!(true);
    m.set_behavior(Some(Behavior::DropMidStream));
    let (data, _) = read_sse(gw.chat(&env.key, stream.clone()).send().await.unwrap()).await;
    assert!(!data.iter().any(|d| d == "[DONE]"));
    m.set_behavior(None);
    let r = gw.chat(&env.key, stream.clone()).send().await.unwrap();
    assert_eq!(
        header(&r, "x-perpetuo-cache").as_deref(),
        Some("miss"),
        "the broken stream was not stored"
    );
    let (data, _) = read_sse(r).await;
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(m.hits(), 4);
}

#[tokio::test]
async fn the_request_steers_the_cache_with_its_headers() {
    let (env, m) = setup().await;
    let gw = Gateway::start(&env).await;
    let body = chat_body("gpt-4o");
    let with = |h: &str, v: &str| gw.chat(&env.key, body.clone()).header(h, v);
    // no-store: neither read nor written.
    let r = with("cache-control", "no-store").send().await.unwrap();
    assert_eq!(header(&r, "x-perpetuo-cache").as_deref(), Some("bypass"));
    // no-cache: not read, but the fresh answer is written...
    let r = with("cache-control", "no-cache").send().await.unwrap();
    assert_eq!(header(&r, "x-perpetuo-cache").as_deref(), Some("miss"));
    assert_eq!(m.hits(), 2);
    // ...and served to the next request.
    let r = gw.chat(&env.key, body.clone()).send().await.unwrap();
    assert_eq!(header(&r, "x-perpetuo-cache").as_deref(), Some("hit"));
    // max-age: an entry older than asked is not served.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = with("cache-control", "max-age=0").send().await.unwrap();
    assert_eq!(header(&r, "x-perpetuo-cache").as_deref(), Some("miss"));
    assert_eq!(m.hits(), 3);
    let r = with("cache-control", "max-age=3600").send().await.unwrap();
    assert_eq!(header(&r, "x-perpetuo-cache").as_deref(), Some("hit"));
    // A TTL of its own: the entry is gone once it has passed.
    let mut short = chat_body("gpt-4o");
    short["messages"][0]["content"] = json!("Short lived");
    let r = gw
        .chat(&env.key, short.clone())
        .header("x-perpetuo-cache-ttl", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-perpetuo-cache").as_deref(), Some("miss"));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = gw.chat(&env.key, short).send().await.unwrap();
    assert_eq!(header(&r, "x-perpetuo-cache").as_deref(), Some("miss"));
    // A header that cannot be read is the client's error.
    for (h, v) in [
        ("x-perpetuo-cache-ttl", "soon"),
        ("cache-control", "max-age=-1"),
    ] {
        let r = with(h, v).send().await.unwrap();
        assert_eq!(r.status(), 400, "{h}: {v}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "invalid_cache_header");
    }
}

#[tokio::test]
async fn opt_in_caches_only_what_asks_and_a_purge_empties_the_workspaces_cache() {
    let (env, m) = setup().await;
    set_cache(&env, env.workspace, "opt_in", 3600).await;
    let gw = Gateway::start(&env).await;
    let body = chat_body("gpt-4o");
    for _ in 0..2 {
        let r = gw.chat(&env.key, body.clone()).send().await.unwrap();
        assert_eq!(header(&r, "x-perpetuo-cache").as_deref(), Some("bypass"));
    }
    let asking = || {
        gw.chat(&env.key, body.clone())
            .header("cache-control", "max-age=600")
    };
    let r = asking().send().await.unwrap();
    assert_eq!(header(&r, "x-perpetuo-cache").as_deref(), Some("miss"));
    let r = asking().send().await.unwrap();
    assert_eq!(header(&r, "x-perpetuo-cache").as_deref(), Some("hit"));
    assert_eq!(m.hits(), 3);

    // A key of its own mode: off, whatever the workspace says.
    let (quiet, quiet_id) = env.new_key().await;
    env.client()
        .await
        .execute(
            "UPDATE api_keys SET cache_mode = 'off' WHERE id = $1",
            &[&quiet_id],
        )
        .await
        .unwrap();
    let r = gw
        .chat(&quiet, body.clone())
        .header("cache-control", "max-age=600")
        .send()
        .await
        .unwrap();
    assert!(header(&r, "x-perpetuo-cache").is_none());

    // The purge is a new generation, which reaches the gateway as a change notification.
    db::workspaces::purge_cache(&env.client().await, env.workspace)
        .await
        .unwrap();
    eventually(
        "the purge reaches the gateway",
        Duration::from_secs(10),
        || async {
            let r = asking().send().await.unwrap();
            header(&r, "x-perpetuo-cache").as_deref() == Some("miss")
        },
    )
    .await;
    let r = asking().send().await.unwrap();
    assert_eq!(header(&r, "x-perpetuo-cache").as_deref(), Some("hit"));
}

#[tokio::test]
async fn identical_requests_in_flight_share_one_provider_call() {
    let (env, m) = setup().await;
    let gw = Gateway::start(&env).await;
    m.set_behavior(Some(Behavior::Slow(Duration::from_millis(600))));
    let mut body = chat_body("gpt-4o");
    body["stream"] = json!(true);
    let answers = join_all((0..20).map(|_| async {
        let r = gw.chat(&env.key, body.clone()).send().await.unwrap();
        let cache = header(&r, "x-perpetuo-cache");
        let (data, clean) = read_sse(r).await;
        (cache, streamed_text(&data).0, clean, data.last().cloned())
    }))
    .await;
    assert_eq!(
        m.hits(),
        1,
        "one provider call for twenty identical requests"
    );
    let hits = answers
        .iter()
        .filter(|a| a.0.as_deref() == Some("hit"))
        .count();
    assert_eq!(hits, 19);
    let text = &answers[0].1;
    assert!(!text.is_empty());
    for (_, t, clean, last) in &answers {
        assert_eq!(t, text);
        assert!(clean);
        assert_eq!(last.as_deref(), Some("[DONE]"));
    }
    let metrics = gw.metrics_text().await;
    assert_eq!(
        metric_value(&metrics, "perpetuo_cache_coalesced_total"),
        19.0
    );
}

#[tokio::test]
async fn a_leaders_broken_stream_breaks_its_followers_and_nothing_is_stored() {
    let (env, m) = setup_with(MockConfig {
        chunk_delay: Duration::from_millis(150),
        ..MockConfig::default()
    })
    .await;
    let gw = Gateway::start(&env).await;
    m.set_behavior(Some(Behavior::DropMidStream));
    let mut body = chat_body("gpt-4o");
    body["stream"] = json!(true);
    let answers = join_all((0..5).map(|_| async {
        let r = gw.chat(&env.key, body.clone()).send().await.unwrap();
        read_sse(r).await.0
    }))
    .await;
    assert_eq!(m.hits(), 1);
    for data in &answers {
        assert!(!data.iter().any(|d| d == "[DONE]"), "{data:?}");
        let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
        assert_eq!(last["error"]["code"], "upstream_error_midstream");
    }
    m.set_behavior(None);
    let r = gw.chat(&env.key, body).send().await.unwrap();
    assert_eq!(header(&r, "x-perpetuo-cache").as_deref(), Some("miss"));
}

#[tokio::test]
async fn gateways_share_the_cache_through_redis_and_a_redis_away_is_a_miss() {
    let (env, m) = setup().await;
    let redis = PrivateRedis::start().await;
    let extra = [("CACHE_REDIS_URL", redis.url())];
    let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Gateway::start_with(&env, &env.db.url, &extra).await;
    let b = Gateway::start_with(&env, &env.db.url, &extra).await;
    // A gateway connects to Redis in the background (a request never waits for it):
    // until then it misses. Each is ready once its own answer comes back from Redis.
    let warm = |gw: &'static str| {
        let mut body = chat_body("gpt-4o");
        body["messages"][0]["content"] = json!(format!("warm {gw}"));
        body
    };
    for (gw, name) in [(&a, "a"), (&b, "b")] {
        let body = warm(name);
        eventually(
            "the gateway's Redis writes land",
            Duration::from_secs(10),
            || async { ask(gw, &env.key, &body).await.0.as_deref() == Some("hit") },
        )
        .await;
    }
    let body = chat_body("gpt-4o");
    let (first, _, x) = ask(&a, &env.key, &body).await;
    assert_eq!(first.as_deref(), Some("miss"));
    // The write is in the background: once it landed, `a` answers from it...
    eventually(
        "the entry reaches Redis",
        Duration::from_secs(10),
        || async { ask(&a, &env.key, &body).await.0.as_deref() == Some("hit") },
    )
    .await;
    let calls = m.hits();
    // ...and so does `b`, which never asked a provider for it.
    let (cache, _, y) = ask(&b, &env.key, &body).await;
    assert_eq!(cache.as_deref(), Some("hit"));
    assert_eq!(content(&x), content(&y));
    assert_eq!(m.hits(), calls);
    let calls = m.hits();

    // Redis away: every request still answers, as a miss.
    let mut redis = redis;
    redis.stop();
    for _ in 0..3 {
        let (cache, _, _) = ask(&b, &env.key, &body).await;
        assert_eq!(cache.as_deref(), Some("miss"));
    }
    assert_eq!(m.hits(), calls + 3);
    let metrics = b.metrics_text().await;
    assert!(metric_value(&metrics, r#"perpetuo_cache_errors_total{op="read"}"#) >= 1.0);
}

#[tokio::test]
async fn a_hit_needs_neither_tokens_per_minute_nor_budget_but_a_spent_budget_still_refuses() {
    let (env, m) = setup().await;
    env.client()
        .await
        .execute(
            "UPDATE api_keys SET tpm_limit = 200 WHERE id = $1",
            &[&env.key_id],
        )
        .await
        .unwrap();
    let gw = Gateway::start(&env).await;
    env.clock.fresh_minute();
    let body = chat_body("gpt-4o");
    let (first, _, _) = ask(&gw, &env.key, &body).await;
    assert_eq!(first.as_deref(), Some("miss"));
    // A miss now would hold its estimate (its default completion alone is 256 tokens,
    // over the 200 left): refused. The same request as a hit holds nothing.
    let (again, _, _) = ask(&gw, &env.key, &body).await;
    assert_eq!(again.as_deref(), Some("hit"));
    let mut other = chat_body("gpt-4o");
    other["messages"][0]["content"] = json!("Something new");
    let r = gw.chat(&env.key, other).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "rate_limit_exceeded");
    assert_eq!(m.hits(), 1);

    // A budget already spent refuses before the lookup: a hit is no way around it.
    env.client()
        .await
        .execute(
            "UPDATE api_keys SET tpm_limit = NULL, budget_nusd = 1 WHERE id = $1",
            &[&env.key_id],
        )
        .await
        .unwrap();
    eventually(
        "the spent budget refuses",
        Duration::from_secs(10),
        || async {
            let r = gw.chat(&env.key, body.clone()).send().await.unwrap();
            r.status() == 429
        },
    )
    .await;
    assert_eq!(m.hits(), 1);
}

/// Text that compresses little, so that each stored answer weighs what it says.
fn noise(len: usize) -> String {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 7 == 6 {
                ' '
            } else {
                char::from(b'a' + (x % 26) as u8)
            }
        })
        .collect()
}

#[tokio::test]
async fn cache_entries_filling_a_redis_shared_with_the_limits_never_push_the_limits_out() {
    let (env, _m) = setup_with(MockConfig {
        content: noise(48 * 1024),
        chunk_delay: Duration::ZERO,
        ..MockConfig::default()
    })
    .await;
    // One server for both, as the README says to run it: a memory cap and an eviction
    // policy that takes the keys closest to their expiry first — cache entries, whose TTL
    // is the workspace's (an hour here), before the limits' state (kept for weeks).
    let redis = PrivateRedis::start().await;
    redis.cli(&["CONFIG", "SET", "maxmemory", "3mb"]);
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "volatile-ttl"]);
    let rpm = 60;
    env.client()
        .await
        .execute(
            "UPDATE api_keys SET rpm_limit = $2 WHERE id = $1",
            &[&env.key_id, &rpm],
        )
        .await
        .unwrap();
    let url = redis.url();
    let gw = Gateway::start_with(
        &env,
        &env.db.url,
        &[
            ("REDIS_URL", url.as_str()),
            ("CACHE_REDIS_URL", url.as_str()),
        ],
    )
    .await;
    env.clock.fresh_minute();
    for n in 0..rpm {
        let mut body = chat_body("gpt-4o");
        body["messages"][0]["content"] = json!(format!("question {n}"));
        let r = gw.chat(&env.key, body).send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(status, 200, "request {n}: {}", &text[..text.len().min(400)]);
    }
    let evicted: u64 = redis
        .query(&["INFO", "stats"])
        .lines()
        .find_map(|l| l.strip_prefix("evicted_keys:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(evicted > 0, "the cache filled the server past its cap");
    // The limits kept their count through the evictions: the minute's allowance is spent.
    let r = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "rate_limit_exceeded");
}

#[tokio::test]
async fn an_answer_larger_than_the_entry_cap_is_served_and_not_stored() {
    let (env, m) = setup_with(MockConfig {
        content: noise(8 * 1024),
        chunk_delay: Duration::ZERO,
        ..MockConfig::default()
    })
    .await;
    let gw = Gateway::start_with(&env, &env.db.url, &[("CACHE_MAX_ENTRY_BYTES", "2048")]).await;
    for stream in [false, true] {
        let mut body = chat_body("gpt-4o");
        body["stream"] = json!(stream);
        for _ in 0..2 {
            let r = gw.chat(&env.key, body.clone()).send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(header(&r, "x-perpetuo-cache").as_deref(), Some("miss"));
            assert!(r.text().await.unwrap().len() > 8 * 1024);
        }
    }
    assert_eq!(m.hits(), 4, "nothing was stored");
}
