//! Secrets never leak: with a known Perpetuo key and known provider keys, a run through
//! every path (success, streams, provider errors, fallbacks, refusals, a client that
//! leaves, debug logging on) finds none of them — every key of an entry's pool among
//! them — in the gateway's logs, response bodies or headers, metrics, the spans it
//! exports (message content captured), or the database outside the sealed column.

use std::time::Duration;

use mock_provider::Behavior;
use perpetuo_core::provider::ProviderKind;
use serde_json::json;

use crate::harness::otlp::Collector;
use crate::harness::{eventually, mock, Env, Gateway};
use crate::kinds::chat;

#[tokio::test]
async fn known_keys_appear_nowhere() {
    const OTLP_CREDENTIAL: &str = "otlp-canary-credential-3b8e1f";
    let env = Env::new().await;
    let (a, b) = (mock().await, mock().await);
    // The harness seals `sk-upstream-<name>` for each entry; two entries hold a pool of
    // several keys (one of them switched off).
    let pool_a = env
        .add_provider_with("canary-a", ProviderKind::Openai, &a.base_url(), 1, &[], &[])
        .await;
    let pool_b = env
        .add_provider_with(
            "canary-b",
            ProviderKind::Anthropic,
            &b.anthropic_base_url(),
            2,
            &[],
            &[],
        )
        .await;
    let pooled = [
        (pool_a, "second", "sk-pool-canary-a-second-7f3e9c"),
        (pool_a, "third", "sk-pool-canary-a-third-51d0b8"),
        (pool_b, "spare", "sk-pool-canary-b-spare-a92c44"),
    ];
    for (entry, label, key) in pooled {
        env.add_key(entry, label, key).await;
    }
    env.client()
        .await
        .execute(
            "UPDATE provider_entry_keys SET enabled = false WHERE label = 'third'",
            &[],
        )
        .await
        .unwrap();
    env.add_provider_with(
        "canary-g",
        ProviderKind::Gemini,
        &b.gemini_base_url(),
        3,
        &["gemini-2.5-flash"],
        &[],
    )
    .await;
    let secrets = [
        env.key.clone(),
        "sk-upstream-canary-a".to_string(),
        "sk-upstream-canary-b".to_string(),
        "sk-upstream-canary-g".to_string(),
        pooled[0].2.to_string(),
        pooled[1].2.to_string(),
        pooled[2].2.to_string(),
        OTLP_CREDENTIAL.to_string(),
    ];
    let log_path = std::env::temp_dir().join(format!("perpetuo-canary-{}.log", env.workspace));
    let log = std::fs::File::create(&log_path).unwrap();
    // Spans exported, with the workspace's message content in them.
    env.client()
        .await
        .execute(
            "UPDATE workspaces SET tracing_capture_content = true WHERE id = $1",
            &[&env.workspace],
        )
        .await
        .unwrap();
    let collector = Collector::start().await;
    let mut settings = vec![("RUST_LOG", "debug".to_string())];
    settings.extend(collector.settings());
    // The collector's credential, sent with every export.
    settings.push((
        "OTEL_EXPORTER_OTLP_HEADERS",
        format!("authorization=Bearer%20{OTLP_CREDENTIAL}"),
    ));
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut gw = Gateway::start_with_output(&env, &env.db.url, &settings, Some(&log)).await;

    let mut seen = String::new();
    let mut record = |resp_headers: &reqwest::header::HeaderMap, body: &str| {
        for (name, value) in resp_headers {
            seen.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("")));
        }
        seen.push_str(body);
        seen.push('\n');
    };
    let mut bodies = vec![
        chat("gpt-4o-mini"),
        chat("claude-x-error-400"),
        chat("gemini/gemini-2.5-flash"),
    ];
    for behavior in [
        None,
        Some(Behavior::Status(401)),
        Some(Behavior::Status(500)),
        Some(Behavior::DropAfterPreamble),
    ] {
        a.set_behavior(behavior);
        for stream in [false, true] {
            for mut body in bodies.clone() {
                body["stream"] = json!(stream);
                let resp = gw.chat(&env.key, body).send().await.unwrap();
                let headers = resp.headers().clone();
                let text = resp.text().await.unwrap_or_default();
                record(&headers, &text);
            }
        }
    }
    a.set_behavior(None);
    // Refusals: bad key (the real one with a typo), a key in the wrong header, bad JSON,
    // a bad model, an unknown route, a body too large.
    let near_miss = format!("{}x", env.key);
    let requests = [
        gw.chat(&near_miss, chat("gpt-4o-mini")),
        gw.http
            .post(format!("{}/v1/chat/completions", gw.base))
            .header("x-api-key", &env.key)
            .json(&chat("gpt-4o-mini")),
        gw.http
            .post(format!("{}/v1/chat/completions", gw.base))
            .bearer_auth(&env.key)
            .body(format!("{{\"model\": \"{}\"", env.key)),
        gw.chat(&env.key, chat(&format!("{}\u{1}", env.key))),
        gw.http
            .get(format!("{}/v1/nothing", gw.base))
            .bearer_auth(&env.key),
        gw.http
            .get(format!("{}/v1/models", gw.base))
            .bearer_auth(&env.key),
    ];
    for req in requests {
        let resp = req.send().await.unwrap();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        record(&headers, &text);
    }
    // A client that leaves mid-stream.
    bodies.truncate(1);
    let mut body = bodies.remove(0);
    body["stream"] = json!(true);
    body["model"] = json!("gpt-stall-mid-stream");
    let _ = gw
        .chat(&env.key, body)
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .map(|r| r.bytes());
    let metrics = gw.metrics_text().await;
    env.log_rows(20).await;
    eventually("spans with content", Duration::from_secs(10), || async {
        collector
            .spans()
            .iter()
            .any(|s| s.attr("gen_ai.output.messages").is_some())
    })
    .await;
    // A graceful stop writes whatever is still on its way to the database.
    gw.signal("TERM");
    gw.wait_exit(Duration::from_secs(15)).await;
    drop(gw);

    // The database, every table, as JSON; the sealed key column left out.
    let client = env.client().await;
    let tables: Vec<String> = client
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut database = String::new();
    for table in tables {
        let rows = client
            .query(
                &format!("SELECT (to_jsonb(t) - 'sealed_key')::text FROM {table} t"),
                &[],
            )
            .await
            .unwrap();
        for r in rows {
            database.push_str(&r.get::<_, String>(0));
        }
    }
    // The credential went to the collector, and only there.
    assert!(collector.saw_header(&format!("authorization: Bearer {OTLP_CREDENTIAL}")));
    let spans = collector.raw();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(logs.len() > 1000, "debug logs were captured");
    for secret in &secrets {
        // The whole secret, and its secret part without a prefix.
        let tail = &secret[secret.len() - 12..];
        for (place, text) in [
            ("responses", &seen),
            ("metrics", &metrics),
            ("logs", &logs),
            ("database", &database),
            ("spans", &spans),
        ] {
            assert!(!text.contains(secret.as_str()), "a secret in the {place}");
            assert!(!text.contains(tail), "a secret's tail in the {place}");
        }
    }
}
