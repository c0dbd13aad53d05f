//! Limits per key and workspace: each refuses at the right count with its status, code,
//! headers and log row; windows reset; concurrency holds while streams run; budgets stop
//! after real usage settles (also for a cancelled stream) and survive a restart; the
//! model allow-list takes patterns; expiry and limit changes reach the gateway.

use std::time::Duration;

use reqwest::Response;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::harness::{chat_body, eventually, metric_value, mock, Env, Gateway};
use crate::redis_kit::{shared_redis, PrivateRedis};

/// `UPDATE api_keys SET <set> WHERE id = key`.
async fn set_key(env: &Env, key: Uuid, set: &str) {
    env.client()
        .await
        .execute(&format!("UPDATE api_keys SET {set} WHERE id = $1"), &[&key])
        .await
        .unwrap();
}

async fn set_workspace(env: &Env, set: &str) {
    env.client()
        .await
        .execute(
            &format!("UPDATE workspaces SET {set} WHERE id = $1"),
            &[&env.workspace],
        )
        .await
        .unwrap();
}

fn header<'a>(r: &'a Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

fn request_id(r: &Response) -> String {
    header(r, "x-request-id").to_string()
}

async fn setup() -> (Env, mock_provider::MockProvider) {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("mock", &m.base_url(), 1).await;
    (env, m)
}

async fn refusal(r: Response, env: &Env, status: u16, code: &str, kind: &str) -> Value {
    assert_eq!(r.status(), status);
    let rid = request_id(&r);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    let row = env.log_row(&rid).await;
    assert_eq!(i32::from(row.status), i32::from(status as i16));
    assert_eq!(row.error_kind.as_deref(), Some(kind));
    assert!(row.attempts.is_empty(), "no provider was called");
    body
}

#[tokio::test]
async fn rpm_refuses_the_request_after_the_limit_with_headers_and_a_log_row() {
    let (env, m) = setup().await;
    set_key(&env, env.key_id, "rpm_limit = 2").await;
    let gw = Gateway::start(&env).await;
    env.clock.fresh_minute();
    for remaining in ["1", "0"] {
        let r = gw
            .chat(&env.key, chat_body("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-ratelimit-limit-requests"), "2");
        assert_eq!(header(&r, "x-ratelimit-remaining-requests"), remaining);
        assert!(header(&r, "x-ratelimit-reset-requests").ends_with('s'));
        assert!(r.headers().get("retry-after").is_none());
    }
    let r = gw
        .chat(&env.key, chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "0");
    let retry: u64 = header(&r, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry));
    let body = refusal(r, &env, 429, "rate_limit_exceeded", "rate_limit_rpm").await;
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("requests per minute") && msg.contains("limit 2"),
        "{msg}"
    );
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(
        m.hits(),
        2,
        "the refused request never reached the provider"
    );
    let metrics = gw.metrics_text().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"perpetuo_limit_refusals_total{limit="rpm",scope="key"}"#
        ),
        1.0
    );

    // Another key of the workspace is not limited by this key's limit.
    let (other, _) = env.new_key().await;
    let r = gw
        .chat(&other, chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-ratelimit-limit-requests").is_none());
}

#[tokio::test]
async fn rpm_and_tpm_windows_reset_with_the_minute() {
    let (env, _m) = setup().await;
    set_key(&env, env.key_id, "rpm_limit = 1, tpm_limit = 100000").await;
    let gw = Gateway::start(&env).await;
    env.clock.fresh_minute();
    let mut body = chat_body("gpt-4o-mini");
    body["max_tokens"] = json!(50);
    let r = gw.chat(&env.key, body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-ratelimit-limit-tokens"), "100000");
    let remaining: u64 = header(&r, "x-ratelimit-remaining-tokens").parse().unwrap();
    assert!(
        remaining < 100_000 - 50,
        "the estimate is counted: {remaining}"
    );
    let r = gw.chat(&env.key, body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = header(&r, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry), "until the next minute: {retry}");
    env.clock.next_minute();
    let r = gw.chat(&env.key, body).send().await.unwrap();
    let status = r.status();
    let remaining = r.headers().get("x-ratelimit-remaining-requests").cloned();
    assert_eq!(
        status,
        200,
        "a new minute, a new window: {}",
        r.text().await.unwrap()
    );
    assert_eq!(remaining.unwrap(), "0");
}

#[tokio::test]
async fn tpm_counts_real_usage_and_refuses_past_the_limit() {
    let (env, _m) = setup().await;
    let mut body = chat_body("gpt-4o-mini");
    body["max_tokens"] = json!(10);
    let usage = mock_provider::expected_usage(&body);
    // Room for one request's real usage plus the next one's estimate (prompt from the body
    // size, completion from max_tokens): two pass; the third does not fit after the first
    // two settle at their real usage.
    let est = serde_json::to_vec(&body).unwrap().len() as u64 / 4 + 10;
    let tpm = usage.total_tokens + est;
    set_key(&env, env.key_id, &format!("tpm_limit = {tpm}")).await;
    let gw = Gateway::start(&env).await;
    env.clock.fresh_minute();
    for _ in 0..2 {
        let r = gw.chat(&env.key, body.clone()).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let rid = request_id(&r);
        r.bytes().await.unwrap();
        env.log_row(&rid).await;
    }
    let r = gw.chat(&env.key, body).send().await.unwrap();
    assert_eq!(header(&r, "x-ratelimit-limit-tokens"), tpm.to_string());
    let body = refusal(r, &env, 429, "rate_limit_exceeded", "rate_limit_tpm").await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("tokens per minute"));
}

#[tokio::test]
async fn concurrency_is_held_by_running_streams_and_released_when_they_end() {
    let (env, _m) = setup().await;
    set_key(&env, env.key_id, "concurrency_limit = 1").await;
    let gw = Gateway::start(&env).await;
    let mut held = chat_body("gpt-stall-mid-stream");
    held["stream"] = json!(true);
    let mut first = gw.chat(&env.key, held).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let first_id = request_id(&first);
    assert!(
        first.chunk().await.unwrap().is_some(),
        "the stream is running"
    );

    let r = gw
        .chat(&env.key, chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "retry-after"), "1");
    let body = refusal(r, &env, 429, "rate_limit_exceeded", "concurrency_limit").await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("concurrent requests"));

    drop(first); // the client leaves: the slot is freed when the request ends
    assert_eq!(env.log_row(&first_id).await.status, 499);
    let r = gw
        .chat(&env.key, chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// nano-USD at gpt-4o-mini's price in conf/pricing.toml (0.15 / 0.60 USD per million).
fn cost(prompt: u64, completion: u64) -> i64 {
    (prompt * 150 + completion * 600) as i64
}

/// The gateway's estimate for `body`: prompt from its size, completion from `max_tokens`.
fn estimate(body: &Value) -> i64 {
    let len = serde_json::to_vec(body).unwrap().len() as u64;
    cost(len / 4, body["max_tokens"].as_u64().unwrap())
}

#[tokio::test]
async fn budget_stops_the_key_once_real_usage_is_settled_and_survives_a_restart() {
    let (env, _m) = setup().await;
    let mut body = chat_body("gpt-4o-mini");
    body["max_tokens"] = json!(10);
    let u = mock_provider::expected_usage(&body);
    let actual = cost(u.prompt_tokens, u.completion_tokens);
    let est = estimate(&body);
    // Room for the first request's real cost plus the second's estimate: two pass, and the
    // third is refused because the first two really cost `2 * actual`.
    let budget = actual + est;
    set_key(
        &env,
        env.key_id,
        &format!("budget_nusd = {budget}, budget_period = 'day'"),
    )
    .await;
    let mut gw = Gateway::start(&env).await;
    for _ in 0..2 {
        let r = gw.chat(&env.key, body.clone()).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let rid = request_id(&r);
        r.bytes().await.unwrap();
        assert_eq!(env.log_row(&rid).await.cost_nusd, Some(actual));
    }
    let r = gw.chat(&env.key, body.clone()).send().await.unwrap();
    let retry: i64 = header(&r, "retry-after").parse().unwrap();
    assert!(
        (1..=86_400).contains(&retry),
        "until the next UTC day: {retry}"
    );
    let err = refusal(r, &env, 429, "insufficient_quota", "budget_exceeded").await;
    assert_eq!(err["error"]["type"], "insufficient_quota");

    // A restarted gateway starts with no counters: the spend comes from PostgreSQL.
    gw.restart().await;
    let r = gw.chat(&env.key, body).send().await.unwrap();
    refusal(r, &env, 429, "insufficient_quota", "budget_exceeded").await;
}

#[tokio::test]
async fn a_cancelled_stream_is_settled_from_what_it_used() {
    let (env, m) = setup().await;
    // A priced model (a budget refuses unpriced ones) whose stream stalls midway.
    m.set_behavior(Some(mock_provider::Behavior::StallMidStream));
    let mut held = chat_body("gpt-4o-mini");
    held["stream"] = json!(true);
    held["max_tokens"] = json!(1000);
    let est = estimate(&held);
    set_key(&env, env.key_id, &format!("budget_nusd = {est}")).await;
    let gw = Gateway::start(&env).await;
    let mut first = gw.chat(&env.key, held).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let first_id = request_id(&first);
    assert!(first.chunk().await.unwrap().is_some());
    // While it runs, its estimate is reserved.
    let r = gw
        .chat(&env.key, chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    refusal(r, &env, 429, "insufficient_quota", "budget_exceeded").await;
    drop(first);
    let row = env.log_row(&first_id).await;
    assert_eq!(row.status, 499);
    let spent = row.cost_nusd.unwrap();
    assert!(
        spent > 0 && spent < est,
        "settled from the tokens used: {spent}"
    );
    // Its reservation is gone; what it used stays spent.
    let mut small = chat_body("gpt-4o-mini");
    small["max_tokens"] = json!(1);
    assert!(estimate(&small) + spent <= est, "the test needs room");
    let r = gw.chat(&env.key, small).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn allowed_models_take_exact_names_and_prefix_patterns() {
    let (env, _m) = setup().await;
    set_key(
        &env,
        env.key_id,
        "allowed_models = ARRAY['gpt-4o-mini', 'claude-*']",
    )
    .await;
    let gw = Gateway::start(&env).await;
    for model in ["gpt-4o-mini", "claude-3-haiku"] {
        let r = gw.chat(&env.key, chat_body(model)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{model}");
    }
    for model in ["gpt-4o", "gpt-4o-mini-2", "my-claude-3"] {
        let r = gw.chat(&env.key, chat_body(model)).send().await.unwrap();
        let body = refusal(r, &env, 403, "model_not_allowed", "model_not_allowed").await;
        assert!(body["error"]["message"].as_str().unwrap().contains(model));
    }
}

#[tokio::test]
async fn expiry_and_limit_changes_reach_a_running_gateway() {
    let (env, _m) = setup().await;
    let gw = Gateway::start(&env).await;
    let ok = gw
        .chat(&env.key, chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200, "the key is cached");
    assert!(ok.headers().get("x-ratelimit-limit-requests").is_none());

    set_key(&env, env.key_id, "rpm_limit = 1000").await;
    eventually("the new limit applies", Duration::from_secs(5), || async {
        let r = gw
            .chat(&env.key, chat_body("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        r.headers().get("x-ratelimit-limit-requests").is_some()
    })
    .await;

    set_workspace(&env, "concurrency_limit = 5, rpm_limit = 500").await;
    eventually(
        "the workspace limit applies",
        Duration::from_secs(5),
        || async {
            let r = gw
                .chat(&env.key, chat_body("gpt-4o-mini"))
                .send()
                .await
                .unwrap();
            r.headers()
                .get("x-ratelimit-limit-requests")
                .is_some_and(|v| v == "500")
        },
    )
    .await;

    set_key(&env, env.key_id, "expires_at = now() - interval '1 second'").await;
    eventually(
        "the expired key is refused",
        Duration::from_secs(5),
        || async {
            let r = gw
                .chat(&env.key, chat_body("gpt-4o-mini"))
                .send()
                .await
                .unwrap();
            r.status() == 401
        },
    )
    .await;
}

#[tokio::test]
async fn workspace_limits_count_every_key_of_the_workspace() {
    let (env, _m) = setup().await;
    set_workspace(&env, "rpm_limit = 2").await;
    let (second, _) = env.new_key().await;
    let gw = Gateway::start(&env).await;
    env.clock.fresh_minute();
    for key in [&env.key, &second] {
        let r = gw.chat(key, chat_body("gpt-4o-mini")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = gw
        .chat(&env.key, chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    let body = refusal(r, &env, 429, "rate_limit_exceeded", "rate_limit_rpm").await;
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("on this workspace"));
}

#[tokio::test]
async fn refusals_use_the_front_doors_own_shape() {
    let (env, _m) = setup().await;
    set_key(&env, env.key_id, "rpm_limit = 1").await;
    let gw = Gateway::start(&env).await;
    env.clock.fresh_minute();
    let messages = |gw: &Gateway| {
        gw.http
            .post(format!("{}/v1/messages", gw.base))
            .header("x-api-key", &env.key)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": "claude-3-haiku", "max_tokens": 5,
                          "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    assert_eq!(messages(&gw).await.unwrap().status(), 200);
    let r = messages(&gw).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
}

fn fallbacks(metrics: &str) -> f64 {
    metric_value(metrics, "perpetuo_limit_fallbacks_total")
}

#[tokio::test]
async fn two_gateways_share_one_redis_exactly() {
    let (env, _m) = setup().await;
    set_key(&env, env.key_id, "rpm_limit = 3").await;
    let (url, _private) = shared_redis().await;
    let prefix = format!("test-{}:", Uuid::now_v7());
    let vars = [
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        // A loaded test machine must not turn a slow answer into a fallback.
        ("REDIS_DEADLINE_MS", "2000"),
    ];
    let a = Gateway::start_with(&env, &env.db.url, &vars).await;
    let b = Gateway::start_with(&env, &env.db.url, &vars).await;
    // Both are connected to Redis before counting starts.
    for gw in [&a, &b] {
        let (other, _) = env.new_key().await;
        eventually("connected to Redis", Duration::from_secs(5), || async {
            let r = gw
                .chat(&other, chat_body("gpt-4o-mini"))
                .send()
                .await
                .unwrap();
            r.status() == 200
        })
        .await;
    }
    env.clock.fresh_minute();
    let mut remaining = Vec::new();
    for gw in [&a, &b, &a] {
        let r = gw
            .chat(&env.key, chat_body("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        remaining.push(header(&r, "x-ratelimit-remaining-requests").to_string());
    }
    assert_eq!(remaining, ["2", "1", "0"], "one count across both gateways");
    for gw in [&b, &a] {
        let r = gw
            .chat(&env.key, chat_body("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        refusal(r, &env, 429, "rate_limit_exceeded", "rate_limit_rpm").await;
    }
    for gw in [&a, &b] {
        assert_eq!(fallbacks(&gw.metrics_text().await), 0.0);
    }
}

#[tokio::test]
async fn redis_stopped_falls_back_to_local_shares_and_comes_back() {
    let (env, _m) = setup().await;
    set_key(&env, env.key_id, "rpm_limit = 4").await;
    let mut redis = PrivateRedis::start().await;
    let url = redis.url();
    let gw = Gateway::start_with(
        &env,
        &env.db.url,
        &[
            ("REDIS_URL", url.as_str()),
            ("GATEWAY_REPLICAS", "2"),
            ("REDIS_DEADLINE_MS", "2000"),
        ],
    )
    .await;
    env.clock.fresh_minute();
    eventually("served through Redis", Duration::from_secs(5), || async {
        let r = gw
            .chat(&env.key, chat_body("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        r.status() == 200 && fallbacks(&gw.metrics_text().await) == 0.0
    })
    .await;

    redis.stop();
    // Requests keep flowing on this gateway's share: 4 / 2 replicas = 2 a minute.
    for _ in 0..2 {
        let r = gw
            .chat(&env.key, chat_body("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-ratelimit-limit-requests"), "2");
    }
    let r = gw
        .chat(&env.key, chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    refusal(r, &env, 429, "rate_limit_exceeded", "rate_limit_rpm").await;
    let during = fallbacks(&gw.metrics_text().await);
    assert!(
        during >= 3.0,
        "every check while Redis is down counts: {during}"
    );

    redis.restart().await;
    eventually("shared again", Duration::from_secs(10), || async {
        let before = fallbacks(&gw.metrics_text().await);
        let r = gw
            .chat(&env.key, chat_body("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        let limit = r
            .headers()
            .get("x-ratelimit-limit-requests")
            .map(|v| v.to_str().unwrap().to_string());
        fallbacks(&gw.metrics_text().await) == before && limit.as_deref() == Some("4")
    })
    .await;
}

#[tokio::test]
async fn budget_survives_a_redis_flush() {
    let (env, _m) = setup().await;
    let mut body = chat_body("gpt-4o-mini");
    body["max_tokens"] = json!(10);
    let u = mock_provider::expected_usage(&body);
    let actual = cost(u.prompt_tokens, u.completion_tokens);
    let budget = actual + estimate(&body);
    set_key(&env, env.key_id, &format!("budget_nusd = {budget}")).await;
    let redis = PrivateRedis::start().await;
    let url = redis.url();
    let gw = Gateway::start_with(
        &env,
        &env.db.url,
        &[("REDIS_URL", url.as_str()), ("REDIS_DEADLINE_MS", "2000")],
    )
    .await;
    let (other, _) = env.new_key().await;
    eventually("connected to Redis", Duration::from_secs(5), || async {
        gw.chat(&other, chat_body("gpt-4o-mini"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    for _ in 0..2 {
        let r = gw.chat(&env.key, body.clone()).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let rid = request_id(&r);
        r.bytes().await.unwrap();
        env.log_row(&rid).await;
    }
    let r = gw.chat(&env.key, body.clone()).send().await.unwrap();
    refusal(r, &env, 429, "insufficient_quota", "budget_exceeded").await;

    redis.cli(&["FLUSHALL"]);
    for _ in 0..3 {
        let r = gw.chat(&env.key, body.clone()).send().await.unwrap();
        refusal(r, &env, 429, "insufficient_quota", "budget_exceeded").await;
    }
    assert_eq!(fallbacks(&gw.metrics_text().await), 0.0);
}

#[tokio::test]
async fn concurrency_through_redis_is_released_when_the_stream_ends() {
    let (env, _m) = setup().await;
    set_key(&env, env.key_id, "concurrency_limit = 1").await;
    let (url, _private) = shared_redis().await;
    let prefix = format!("test-{}:", Uuid::now_v7());
    let vars = [
        ("REDIS_URL", url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("REDIS_DEADLINE_MS", "2000"),
    ];
    let a = Gateway::start_with(&env, &env.db.url, &vars).await;
    let b = Gateway::start_with(&env, &env.db.url, &vars).await;
    let mut held = chat_body("gpt-stall-mid-stream");
    held["stream"] = json!(true);
    let mut first = wait_for_redis_admission(&a, &env, held).await;
    let first_id = request_id(&first);
    assert!(first.chunk().await.unwrap().is_some());
    // The slot is taken for every gateway.
    let r = b
        .chat(&env.key, chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    refusal(r, &env, 429, "rate_limit_exceeded", "concurrency_limit").await;
    drop(first);
    env.log_row(&first_id).await;
    eventually(
        "the slot is released in Redis",
        Duration::from_secs(5),
        || async {
            b.chat(&env.key, chat_body("gpt-4o-mini"))
                .send()
                .await
                .unwrap()
                .status()
                == 200
        },
    )
    .await;
    for gw in [&a, &b] {
        assert_eq!(fallbacks(&gw.metrics_text().await), 0.0);
    }
}

/// Sends `body` once the gateway's link to Redis is up (no fallback counted).
async fn wait_for_redis_admission(gw: &Gateway, env: &Env, body: Value) -> Response {
    let (probe, _) = env.new_key().await;
    eventually("connected to Redis", Duration::from_secs(5), || async {
        gw.chat(&probe, chat_body("gpt-4o-mini"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    let r = gw.chat(&env.key, body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r
}

#[tokio::test]
async fn absurd_numbers_and_repeated_fields_are_refused_before_anything_counts_them() {
    let (env, m) = setup().await;
    set_key(&env, env.key_id, "rpm_limit = 100, tpm_limit = 1000000").await;
    let gw = Gateway::start(&env).await;
    let cases = [
        ("max_tokens", json!(u64::MAX)),
        ("max_completion_tokens", json!(10_000_001)),
        ("max_tokens", json!(-1)),
        ("max_tokens", json!(1.5)),
        ("max_tokens", json!("100")),
        ("n", json!(0)),
        ("n", json!(129)),
    ];
    for (field, value) in cases {
        let mut body = chat_body("gpt-4o-mini");
        body[field] = value.clone();
        let r = gw.chat(&env.key, body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{field}: {value}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_number", "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(field));
    }
    // The other front doors' caps, each in the door's own error shape.
    let r = gw
        .http
        .post(format!("{}/v1/responses", gw.base))
        .bearer_auth(&env.key)
        .json(&json!({"model": "gpt-4o-mini", "input": "hi", "max_output_tokens": 1e19}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_output_tokens"));
    let r = gw
        .http
        .post(format!("{}/v1/messages", gw.base))
        .header("x-api-key", &env.key)
        .header("anthropic-version", "2023-06-01")
        .json(
            &json!({"model": "claude-sonnet-4-5", "max_tokens": 18446744073709551615u64,
            "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    // A body naming `model` (or `stream`) twice: one value would be routed and priced and
    // the provider might read the other.
    for raw in [
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"model":"claude-x"}"#,
        r#"{"model":"gpt-4o-mini","stream":false,"messages":[],"str\u0065am":true}"#,
    ] {
        let r = gw
            .http
            .post(format!("{}/v1/chat/completions", gw.base))
            .bearer_auth(&env.key)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{raw}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "duplicate_field", "{v}");
    }
    assert_eq!(m.hits(), 0, "nothing reached the provider");
    // Nothing was counted against the key: a request within the limits still passes.
    let r = gw
        .chat(&env.key, chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "99");
}

#[tokio::test]
async fn the_estimate_counts_every_choice() {
    let (env, _m) = setup().await;
    set_key(&env, env.key_id, "tpm_limit = 1000000").await;
    let gw = Gateway::start(&env).await;
    env.clock.fresh_minute();
    let mut body = chat_body("gpt-4o-mini");
    body["max_tokens"] = json!(1000);
    body["n"] = json!(4);
    let prompt = serde_json::to_vec(&body).unwrap().len() as u64 / 4;
    let r = gw.chat(&env.key, body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let remaining: u64 = header(&r, "x-ratelimit-remaining-tokens").parse().unwrap();
    assert_eq!(remaining, 1_000_000 - prompt - 4 * 1000);
}

#[tokio::test]
async fn a_budget_refuses_models_without_a_price_unless_the_operator_prices_them() {
    let (env, m) = setup().await;
    set_key(&env, env.key_id, "budget_nusd = 1000000000").await;
    let gw = Gateway::start(&env).await;
    // Neither unpriced names nor a priced model's unpriced variant are served on a budget.
    for model in ["my-private-model", "gpt-5-ultra"] {
        let r = gw.chat(&env.key, chat_body(model)).send().await.unwrap();
        assert_eq!(r.status(), 403, "{model}");
        let rid = request_id(&r);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "model_not_priced");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("UNPRICED_MODEL_USD_PER_MTOK"), "{msg}");
        assert_eq!(
            env.log_row(&rid).await.error_kind.as_deref(),
            Some("model_not_priced")
        );
    }
    assert_eq!(m.hits(), 0);
    // A key without a budget still reaches an unpriced model (at no cost).
    let (free, _) = env.new_key().await;
    let r = gw
        .chat(&free, chat_body("my-private-model"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(env.log_row(&request_id(&r)).await.cost_nusd, None);
    drop(gw);

    // With a price for every unpriced model, it is served and charged at that price.
    let gw = Gateway::start_with(&env, &env.db.url, &[("UNPRICED_MODEL_USD_PER_MTOK", "2")]).await;
    let body = chat_body("my-private-model");
    let u = mock_provider::expected_usage(&body);
    let r = gw.chat(&env.key, body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let row = env.log_row(&request_id(&r)).await;
    let tokens = (u.prompt_tokens + u.completion_tokens) as i64;
    assert_eq!(row.cost_nusd, Some(tokens * 2_000));
}
