//! Balancing within a priority: weights, standby entries and the latency strategy.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mock_provider::Behavior;
use uuid::Uuid;

use crate::harness::{chat_body, mock, Env, Gateway};

async fn set_weight(env: &Env, entry: Uuid, weight: i32) {
    env.client()
        .await
        .execute(
            "UPDATE provider_keys SET weight = $2 WHERE id = $1",
            &[&entry, &weight],
        )
        .await
        .unwrap();
}

/// Who served each of `n` requests.
async fn served(gw: &Gateway, env: &Env, n: usize) -> HashMap<String, usize> {
    let mut by = HashMap::new();
    for _ in 0..n {
        let r = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let name = r.headers()["x-perpetuo-provider"]
            .to_str()
            .unwrap()
            .to_string();
        *by.entry(name).or_default() += 1;
    }
    by
}

#[tokio::test]
async fn weights_three_to_one_give_three_quarters_of_the_traffic() {
    let env = Env::new().await;
    let (a, b) = (mock().await, mock().await);
    let heavy = env.add_provider("heavy", &a.base_url(), 1).await;
    env.add_provider("light", &b.base_url(), 1).await;
    set_weight(&env, heavy, 3).await;
    let gw = Gateway::start(&env).await;
    let by = served(&gw, &env, 2000).await;
    let share = by["heavy"] as f64 / 2000.0;
    assert!((0.72..=0.78).contains(&share), "{by:?}");
    assert_eq!(by["heavy"] + by["light"], 2000);
}

#[tokio::test]
async fn a_standby_entry_serves_only_when_the_others_fail() {
    let env = Env::new().await;
    let (a, s) = (mock().await, mock().await);
    env.add_provider("main", &a.base_url(), 1).await;
    let standby = env.add_provider("standby", &s.base_url(), 1).await;
    set_weight(&env, standby, 0).await;
    let gw = Gateway::start(&env).await;
    let by = served(&gw, &env, 30).await;
    assert_eq!(by.get("main"), Some(&30), "{by:?}");
    assert_eq!(s.hits(), 0);
    a.set_behavior(Some(Behavior::Status(503)));
    let by = served(&gw, &env, 5).await;
    assert_eq!(by.get("standby"), Some(&5), "{by:?}");
}

#[tokio::test]
async fn the_latency_strategy_moves_traffic_off_a_slow_entry_and_back_when_it_recovers() {
    let env = Env::new().await;
    let (f, s) = (mock().await, mock().await);
    env.add_provider("fast", &f.base_url(), 1).await;
    env.add_provider("slow", &s.base_url(), 1).await;
    env.client()
        .await
        .execute(
            "UPDATE workspaces SET routing_strategy = 'latency' WHERE id = $1",
            &[&env.workspace],
        )
        .await
        .unwrap();
    let gw = Gateway::start(&env).await;
    // Both known first, then one made 200 ms slower.
    served(&gw, &env, 4).await;
    s.set_behavior(Some(Behavior::Slow(Duration::from_millis(200))));
    served(&gw, &env, 10).await;
    let by = served(&gw, &env, 60).await;
    let slow = by.get("slow").copied().unwrap_or(0);
    // Within the next 60 requests the slow entry is asked again only as its estimate
    // decays (a probe every few seconds).
    assert!(slow <= 6, "{by:?}");

    s.set_behavior(None);
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let by = served(&gw, &env, 20).await;
        if by.get("slow").copied().unwrap_or(0) >= 4 {
            break;
        }
        assert!(Instant::now() < until, "traffic never came back: {by:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
