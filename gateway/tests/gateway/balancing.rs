//! Balancing within a priority: weights, standby entries and the latency strategy.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mock_provider::{Behavior, MockConfig, MockProvider};
use serde_json::json;
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

/// Plays `conversations` conversations of `turns` turns, one turn of each at a time;
/// returns the cached prompt tokens the providers reported, the prompt tokens, and who
/// served each conversation's turns.
async fn converse(
    gw: &Gateway,
    env: &Env,
    conversations: usize,
    turns: usize,
) -> (u64, u64, Vec<Vec<String>>) {
    let mut history: Vec<Vec<serde_json::Value>> = (0..conversations)
        .map(|c| {
            vec![
                json!({"role": "system", "content": format!("You are assistant number {c}.")}),
                json!({"role": "user", "content": format!("Question {c} about a long topic")}),
            ]
        })
        .collect();
    let (mut cached, mut prompt) = (0, 0);
    let mut served = vec![Vec::new(); conversations];
    for turn in 0..turns {
        for (c, messages) in history.iter_mut().enumerate() {
            let body = json!({"model": "gpt-4o", "messages": messages});
            let r = gw.chat(&env.key, body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let by = r.headers()["x-perpetuo-provider"]
                .to_str()
                .unwrap()
                .to_string();
            served[c].push(by);
            let v: serde_json::Value = r.json().await.unwrap();
            cached += v["usage"]["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap();
            prompt += v["usage"]["prompt_tokens"].as_u64().unwrap();
            messages.push(json!({"role": "assistant", "content": "An answer."}));
            messages.push(json!({"role": "user", "content": format!("Follow-up {turn}")}));
        }
    }
    (cached, prompt, served)
}

async fn two_caching_entries(sticky: bool) -> (Env, MockProvider, MockProvider) {
    let env = Env::new().await;
    let config = || MockConfig {
        prompt_cache: true,
        ..MockConfig::default()
    };
    let a = MockProvider::start(config()).await.unwrap();
    let b = MockProvider::start(config()).await.unwrap();
    env.add_provider("a", &a.base_url(), 1).await;
    env.add_provider("b", &b.base_url(), 1).await;
    env.client()
        .await
        .execute(
            "UPDATE workspaces SET routing_sticky = $2 WHERE id = $1",
            &[&env.workspace, &sticky],
        )
        .await
        .unwrap();
    (env, a, b)
}

#[tokio::test]
async fn sticky_conversations_keep_hitting_the_providers_prompt_cache() {
    // Nine conversations (an odd count, so taking turns does not keep each one on one
    // entry by chance), four turns each.
    let (env, _a, _b) = two_caching_entries(false).await;
    let gw = Gateway::start(&env).await;
    let (cached_off, prompt_off, _) = converse(&gw, &env, 9, 4).await;

    let (env, a, b) = two_caching_entries(true).await;
    let gw = Gateway::start(&env).await;
    let (cached_on, prompt_on, served) = converse(&gw, &env, 9, 4).await;
    assert_eq!(prompt_on, prompt_off, "the same conversations");
    for turns in &served {
        assert!(
            turns.iter().all(|t| *t == turns[0]),
            "a conversation moved: {turns:?}"
        );
    }
    // (How keys spread over entries by weight is `routing::balance::tests`'; nine
    // conversations may all fall on one entry, one run in 256.)
    // Every turn after a conversation's first finds its prefix cached.
    assert!(
        cached_on > cached_off,
        "sticky {cached_on} vs not {cached_off}"
    );
    println!(
        "cached prompt tokens: sticky {cached_on}, not sticky {cached_off} of {prompt_on} \
         (×{:.2})",
        cached_on as f64 / cached_off.max(1) as f64
    );

    // The entry a conversation sticks to fails: the conversation moves to the other.
    let home = served[0][0].clone();
    let (failing, other) = if home == "a" { (&a, "b") } else { (&b, "a") };
    failing.set_behavior(Some(Behavior::Status(503)));
    let body = json!({"model": "gpt-4o", "messages": [
        {"role": "system", "content": "You are assistant number 0."},
        {"role": "user", "content": "Question 0 about a long topic"}]});
    let r = gw.chat(&env.key, body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-perpetuo-provider"], other);
}

#[tokio::test]
async fn a_routing_change_reaches_a_running_gateway() {
    let env = Env::new().await;
    let (a, b) = (mock().await, mock().await);
    env.add_provider("a", &a.base_url(), 1).await;
    env.add_provider("b", &b.base_url(), 1).await;
    let gw = Gateway::start(&env).await;
    let conversation = json!({"model": "gpt-4o", "user": "u-1",
        "messages": [{"role": "user", "content": "Hi"}]});
    let serve = || async {
        let mut by = std::collections::HashSet::new();
        for _ in 0..6 {
            let r = gw
                .chat(&env.key, conversation.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            by.insert(
                r.headers()["x-perpetuo-provider"]
                    .to_str()
                    .unwrap()
                    .to_string(),
            );
        }
        by
    };
    assert_eq!(serve().await.len(), 2, "equal weights take turns");
    // Written in the database as an admin's PATCH writes it: the change notification
    // refreshes that workspace's entries on the running gateway.
    env.client()
        .await
        .execute(
            "UPDATE workspaces SET routing_sticky = true WHERE id = $1",
            &[&env.workspace],
        )
        .await
        .unwrap();
    crate::harness::eventually(
        "the gateway sticks to one entry",
        Duration::from_secs(10),
        || {
            let serve = serve();
            async move { serve.await.len() == 1 }
        },
    )
    .await;
}
