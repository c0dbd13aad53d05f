//! Limits large enough to split are admitted from blocks each gateway leases from Redis:
//! across two gateways they never admit more than the limit and refuse only once its room
//! is gone; small limits stay exact request by request; slots, reservations and unused
//! blocks go back when a scope idles or its gateway dies; real usage and spend reach Redis
//! exactly once, also when Redis froze while the blocks were in use.

use std::time::Duration;

use reqwest::Response;
use serde_json::{json, Value};

use crate::harness::{chat_body, eventually, metric_value, mock, Env, Gateway};
use crate::redis_kit::{connected, PrivateRedis};

/// How long Redis keeps a lease's slots and reservation without a renewal (the gateway's
/// `LEASE_TTL`).
const LEASE_TTL: Duration = Duration::from_secs(5);

async fn set_key(env: &Env, set: &str) {
    env.client()
        .await
        .execute(
            &format!("UPDATE api_keys SET {set} WHERE id = $1"),
            &[&env.key_id],
        )
        .await
        .unwrap();
}

async fn setup() -> (Env, mock_provider::MockProvider) {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("mock", &m.base_url(), 1).await;
    (env, m)
}

/// `n` gateways on `redis`, told that `replicas` gateways share the limits, connected
/// before counting starts.
async fn gateways(env: &Env, redis: &PrivateRedis, n: usize, replicas: &str) -> Vec<Gateway> {
    let url = redis.url();
    let vars = [
        ("REDIS_URL", url.as_str()),
        ("GATEWAY_REPLICAS", replicas),
        // A loaded test machine must not turn a slow answer into a fallback.
        ("REDIS_DEADLINE_MS", "2000"),
    ];
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(Gateway::start_with(env, &env.db.url, &vars).await);
    }
    connected(redis, n).await;
    out
}

/// The key's hash in Redis.
fn scope(env: &Env) -> String {
    format!("perpetuo:limits:k:{}", env.key_id)
}

/// A number field of the key's hash (absent: 0).
fn field(redis: &PrivateRedis, env: &Env, name: &str) -> i64 {
    redis
        .query(&["HGET", &scope(env), name])
        .parse()
        .unwrap_or(0)
}

/// Whether the key's hash still holds anything of a lease.
fn lease_fields(redis: &PrivateRedis, env: &Env) -> Vec<String> {
    redis
        .query(&["HKEYS", &scope(env)])
        .lines()
        .filter(|f| f.starts_with('l') && f.contains(':'))
        .map(str::to_string)
        .collect()
}

fn metric(text: &str, name: &str) -> f64 {
    metric_value(text, name)
}

async fn fallbacks(gw: &Gateway) -> f64 {
    metric(&gw.metrics_text().await, "perpetuo_limit_fallbacks_total")
}

async fn lease_calls(gw: &Gateway, reason: &str) -> f64 {
    metric(
        &gw.metrics_text().await,
        &format!("perpetuo_limit_lease_calls_total{{reason=\"{reason}\"}}"),
    )
}

/// Waits until no gateway holds a lease on the key any more: each gave back what it held
/// once idle and forgot its lease (in Redis and in its own map).
async fn all_returned(redis: &PrivateRedis, env: &Env, gws: &[&Gateway]) {
    eventually("every lease returned", Duration::from_secs(15), || async {
        if !lease_fields(redis, env).is_empty() {
            return false;
        }
        for gw in gws {
            if metric(&gw.metrics_text().await, "perpetuo_limit_leases") != 0.0 {
                return false;
            }
        }
        true
    })
    .await;
}

async fn error_code(r: Response) -> String {
    let v: Value = r.json().await.unwrap();
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn rpm_blocks_across_two_gateways_never_admit_more_than_the_limit() {
    let (env, _m) = setup().await;
    // 960 a minute across two gateways: blocks of 960 / (8 · 2) = 60.
    set_key(&env, "rpm_limit = 960").await;
    let redis = PrivateRedis::start().await;
    let gws = gateways(&env, &redis, 2, "2").await;
    env.clock.fresh_minute();
    let mut statuses = Vec::new();
    for i in 0..1000 {
        let gw = &gws[i % 2];
        let r = gw
            .chat(&env.key, chat_body("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        if status == 429 {
            assert!(r.headers().get("retry-after").is_some());
            assert_eq!(error_code(r).await, "rate_limit_exceeded");
        } else {
            assert_eq!(status, 200, "request {i}");
            r.bytes().await.unwrap();
        }
        statuses.push(status);
    }
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let first_refusal = statuses.iter().position(|s| *s == 429).unwrap();
    assert!(admitted <= 960, "admitted {admitted} of 960");
    assert!(
        first_refusal >= 960 - 60,
        "refused after {first_refusal}: more than one block held unused"
    );
    // Once idle, each gateway gives back its unused block: Redis counts what was admitted.
    all_returned(&redis, &env, &[&gws[0], &gws[1]]).await;
    assert_eq!(field(&redis, &env, "r"), admitted as i64);
    for gw in &gws {
        assert_eq!(fallbacks(gw).await, 0.0);
        assert!(lease_calls(gw, "wait").await >= 1.0);
    }
}

#[tokio::test]
async fn three_rpm_across_two_gateways_are_admitted_request_by_request_exactly() {
    let (env, _m) = setup().await;
    set_key(&env, "rpm_limit = 3").await;
    let redis = PrivateRedis::start().await;
    let gws = gateways(&env, &redis, 2, "2").await;
    env.clock.fresh_minute();
    for (n, i) in [0, 1, 0, 1, 0].into_iter().enumerate() {
        let r = gws[i]
            .chat(&env.key, chat_body("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        if n < 3 {
            assert_eq!(r.status(), 200, "request {n}");
            assert_eq!(
                r.headers()["x-ratelimit-remaining-requests"],
                (2 - n).to_string().as_str()
            );
        } else {
            assert_eq!(r.status(), 429, "request {n}");
            assert_eq!(error_code(r).await, "rate_limit_exceeded");
        }
    }
    for gw in &gws {
        assert_eq!(lease_calls(gw, "wait").await, 0.0, "nothing was leased");
        assert_eq!(fallbacks(gw).await, 0.0);
    }
    assert_eq!(field(&redis, &env, "r"), 3);
}

/// Opens a stream that stalls midway and holds it; `None` when refused (after checking the
/// refusal is the concurrency limit's).
async fn open_stream(gw: &Gateway, env: &Env, model: &str) -> Option<Response> {
    let mut body = chat_body(model);
    body["stream"] = json!(true);
    let mut r = gw.chat(&env.key, body).send().await.unwrap();
    if r.status() == 429 {
        assert_eq!(r.headers()["retry-after"], "1");
        assert_eq!(error_code(r).await, "rate_limit_exceeded");
        return None;
    }
    assert_eq!(r.status(), 200);
    assert!(r.chunk().await.unwrap().is_some(), "the stream runs");
    Some(r)
}

#[tokio::test]
async fn leased_slots_never_exceed_the_limit_and_all_go_back_once_streams_end() {
    let (env, _m) = setup().await;
    // 32 across two gateways: blocks of 2 slots.
    set_key(&env, "concurrency_limit = 32").await;
    let redis = PrivateRedis::start().await;
    let gws = gateways(&env, &redis, 2, "2").await;
    let mut held = Vec::new();
    let mut first_refusal = None;
    for i in 0..40 {
        match open_stream(&gws[i % 2], &env, "gpt-stall-mid-stream").await {
            Some(r) => held.push(r),
            None => {
                first_refusal.get_or_insert(i);
            }
        }
    }
    assert!(held.len() <= 32, "{} streams ran at once", held.len());
    let first_refusal = first_refusal.unwrap();
    assert!(
        first_refusal >= 32 - 2,
        "refused after {first_refusal} streams"
    );
    // Every running stream holds a slot granted by Redis, and Redis granted no more than 32.
    let leased = field(&redis, &env, "L");
    assert!(
        (held.len() as i64..=32).contains(&leased),
        "{leased} slots leased for {} streams",
        held.len()
    );
    drop(held);
    let inflight = format!("{}:inflight", scope(&env));
    eventually(
        "every slot is back in Redis",
        Duration::from_secs(15),
        || async { field(&redis, &env, "L") == 0 && redis.query(&["ZCARD", &inflight]) == "0" },
    )
    .await;
    all_returned(&redis, &env, &[&gws[0], &gws[1]]).await;
}

#[tokio::test]
async fn real_usage_and_spend_reach_redis_through_leases_and_the_budget_stops_the_key() {
    let (env, _m) = setup().await;
    // A pricey model, so that a budget large enough to lease (0.01 USD: blocks of
    // 0.00125 USD) runs out in a few requests.
    let mut body = chat_body("gpt-4");
    body["max_tokens"] = json!(10);
    let u = mock_provider::expected_usage(&body);
    set_key(&env, "tpm_limit = 100000, budget_nusd = 10000000").await;
    let redis = PrivateRedis::start().await;
    let gws = gateways(&env, &redis, 1, "1").await;
    let gw = &gws[0];
    env.clock.fresh_minute();
    let mut ids = Vec::new();
    let mut refused = false;
    for _ in 0..100 {
        let r = gw.chat(&env.key, body.clone()).send().await.unwrap();
        if r.status() == 429 {
            assert_eq!(error_code(r).await, "insufficient_quota");
            refused = true;
            break;
        }
        assert_eq!(r.status(), 200);
        ids.push(r.headers()["x-request-id"].to_str().unwrap().to_string());
        r.bytes().await.unwrap();
    }
    assert!(refused, "the budget stopped the key");
    let mut spent = 0;
    for id in &ids {
        spent += env.log_row(id).await.cost_nusd.unwrap();
    }
    assert!(spent <= 10_000_000, "spent {spent}");
    let tokens = ids.len() as i64 * (u.prompt_tokens + u.completion_tokens) as i64;
    all_returned(&redis, &env, &[gw]).await;
    // Redis counts the real usage: what the blocks granted and no request used went back.
    assert_eq!(field(&redis, &env, "s"), spent);
    assert_eq!(field(&redis, &env, "t"), tokens);
    assert_eq!(field(&redis, &env, "r"), ids.len() as i64);
    assert_eq!(field(&redis, &env, "v"), 0, "no reservation left");
    let held = format!("{}:held", scope(&env));
    assert_eq!(redis.query(&["ZCARD", &held]), "0", "nothing per request");
    assert_eq!(fallbacks(gw).await, 0.0);
}

#[tokio::test]
async fn a_killed_gateways_blocks_expire_and_the_other_gateway_gets_the_room() {
    let (env, m) = setup().await;
    // Priced (the budget needs it) and stalling midway.
    m.set_behavior(Some(mock_provider::Behavior::StallMidStream));
    // 16 across two gateways: blocks of one slot; a budget of 1 USD.
    set_key(&env, "concurrency_limit = 16, budget_nusd = 1000000000").await;
    let redis = PrivateRedis::start().await;
    let mut gws = gateways(&env, &redis, 2, "2").await;
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(open_stream(&gws[0], &env, "gpt-4o-mini").await.unwrap());
    }
    assert!(
        open_stream(&gws[1], &env, "gpt-4o-mini").await.is_none(),
        "the first gateway holds every slot"
    );
    assert!(field(&redis, &env, "v") > 0, "the streams' reservation");
    gws[0].kill9();
    drop(held);
    // Nobody renews the dead gateway's lease: its slots and reservation go back.
    let stream = eventually("the other gateway gets the room", LEASE_TTL * 4, || async {
        open_stream(&gws[1], &env, "gpt-4o-mini").await
    })
    .await;
    drop(stream);
    eventually(
        "nothing is held any more",
        Duration::from_secs(15),
        || async { field(&redis, &env, "L") == 0 && field(&redis, &env, "v") == 0 },
    )
    .await;
}

#[tokio::test]
async fn a_paused_redis_leaves_blocks_admitting_and_every_report_lands_once() {
    let (env, _m) = setup().await;
    set_key(
        &env,
        "rpm_limit = 100000, tpm_limit = 1000000, budget_nusd = 10000000000",
    )
    .await;
    let mut body = chat_body("gpt-4o-mini");
    body["max_tokens"] = json!(10);
    let u = mock_provider::expected_usage(&body);
    let redis = PrivateRedis::start().await;
    let gws = gateways(&env, &redis, 1, "1").await;
    let gw = &gws[0];
    gw.listening().await;
    env.clock.fresh_minute();
    let mut ids = Vec::new();
    let admitted = |ids: &mut Vec<String>, r: Response| {
        assert_eq!(r.status(), 200);
        ids.push(r.headers()["x-request-id"].to_str().unwrap().to_string());
    };
    // The first request takes the blocks.
    let r = gw.chat(&env.key, body.clone()).send().await.unwrap();
    admitted(&mut ids, r);

    redis.pause();
    for _ in 0..20 {
        let r = gw.chat(&env.key, body.clone()).send().await.unwrap();
        admitted(&mut ids, r);
    }
    // PostgreSQL has these requests' spend before Redis does; a key loaded now carries it
    // in its budget's seed, which must not count it a second time.
    let mut logged = 0;
    for id in &ids {
        logged += env.log_row(id).await.cost_nusd.unwrap();
    }
    let misses = || async {
        metric_value(
            &gw.metrics_text().await,
            "perpetuo_key_cache_total{result=\"miss\"}",
        )
    };
    let before = misses().await;
    set_key(&env, "label = 'reloaded'").await;
    let reloading = std::sync::Mutex::new(Vec::new());
    eventually(
        "the key is loaded again",
        Duration::from_secs(10),
        || async {
            let r = gw.chat(&env.key, body.clone()).send().await.unwrap();
            admitted(&mut reloading.lock().unwrap(), r);
            misses().await > before
        },
    )
    .await;
    ids.extend(reloading.into_inner().unwrap());
    let seed: i64 = env
        .client()
        .await
        .query_one(
            "SELECT COALESCE(SUM(cost_nusd), 0)::bigint FROM usage_counters WHERE api_key_id = $1",
            &[&env.key_id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        seed >= logged,
        "the reloaded key's seed has the frozen requests' spend"
    );
    // The freeze outlasts the lease's TTL: Redis takes it back when it wakes, and the
    // gateway's reports must still land once. (This wait is the fault under test.)
    tokio::time::sleep(LEASE_TTL + Duration::from_secs(1)).await;
    for _ in 0..5 {
        let r = gw.chat(&env.key, body.clone()).send().await.unwrap();
        admitted(&mut ids, r);
    }
    let during = gw.metrics_text().await;
    redis.resume();
    assert!(
        metric(&during, "perpetuo_limit_redis_slow_total") > 0.0,
        "the freeze was felt"
    );
    assert_eq!(
        metric(&during, "perpetuo_limit_fallbacks_total"),
        0.0,
        "every request was admitted from the blocks held"
    );
    let mut spent = 0;
    for id in &ids {
        spent += env.log_row(id).await.cost_nusd.unwrap();
    }
    // Once the lease is returned and forgotten, nothing more can be reported: the counts
    // are final.
    all_returned(&redis, &env, &[gw]).await;
    assert_eq!(field(&redis, &env, "s"), spent);
    assert_eq!(
        field(&redis, &env, "t"),
        ids.len() as i64 * (u.prompt_tokens + u.completion_tokens) as i64
    );
    assert_eq!(field(&redis, &env, "r"), ids.len() as i64);
    assert_eq!(field(&redis, &env, "v"), 0);
}
