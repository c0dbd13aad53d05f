//! Shutdown and metrics.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use crate::harness::{chat_body, eventually, Env, Gateway};

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_and_loses_no_log_row() {
    let env = Env::new().await;
    let m = mock_provider::MockProvider::start(mock_provider::MockConfig {
        chunk_delay: Duration::from_millis(250),
        ..Default::default()
    })
    .await
    .unwrap();
    env.add_provider("slow", &m.base_url(), 1).await;
    let mut gw = Gateway::start(&env).await;
    let mut body = chat_body("gpt-4o");
    body["stream"] = json!(true);
    let mut streams = Vec::new();
    for _ in 0..4 {
        let resp = gw.chat(&env.key, body.clone()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut s = resp.bytes_stream();
        let first = s.next().await.unwrap().unwrap();
        streams.push((first, s));
    }
    gw.signal("TERM");
    // A bare connection attempt, so that no extra request is served while the listener
    // is still open.
    let addr = gw.base.trim_start_matches("http://").to_string();
    eventually("the listener closes", Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(&addr).await.is_err()
    })
    .await;
    assert!(
        gw.chat(&env.key, chat_body("gpt-4o")).send().await.is_err(),
        "new connections are refused after SIGTERM"
    );
    for (first, mut s) in streams {
        let mut text = String::from_utf8(first.to_vec()).unwrap();
        while let Some(chunk) = s.next().await {
            text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        }
        assert!(text.ends_with("data: [DONE]\n\n"), "stream cut: {text}");
    }
    assert!(gw.wait_exit(Duration::from_secs(15)).await, "clean exit");
    let client = env.client().await;
    let rows = perpetuo_core::db::logs::all_for_workspace(&client, env.workspace)
        .await
        .unwrap();
    assert_eq!(rows.len(), 4, "every finished request has its row");
    assert!(rows
        .iter()
        .all(|r| r.status == 200 && r.completion_tokens > 0));
}

#[tokio::test]
async fn metrics_expose_every_family() {
    let env = Env::new().await;
    let m = crate::harness::mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    let gw = Gateway::start(&env).await;
    assert_eq!(
        gw.chat(&env.key, chat_body("gpt-4o"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    env.log_rows(1).await;
    // The writer counts a row once its batch is committed, just after it is visible.
    let text = eventually(
        "the written row is counted",
        Duration::from_secs(5),
        || async {
            let text = gw.metrics_text().await;
            text.contains("perpetuo_log_rows_written_total 1")
                .then_some(text)
        },
    )
    .await;
    for family in [
        "perpetuo_requests_total",
        "perpetuo_request_duration_seconds",
        "perpetuo_upstream_duration_seconds",
        "perpetuo_ttfb_seconds",
        "perpetuo_fallbacks_total",
        "perpetuo_breaker_opened_total",
        "perpetuo_tokens_total",
        "perpetuo_cost_usd_total",
        "perpetuo_key_cache_total",
        "perpetuo_key_lookups_refused_total",
        "perpetuo_key_cache_stale_dropped_total",
        "perpetuo_log_queue_depth",
        "perpetuo_log_rows_written_total",
        "perpetuo_log_rows_dropped_total",
        "perpetuo_listener_reconnects_total",
        "perpetuo_listener_up",
    ] {
        assert!(text.contains(family), "{family} missing from /metrics");
    }
    assert!(text.contains(r#"perpetuo_requests_total{provider_kind="openai_compatible",route="chat",status_class="2xx"} 1"#), "{text}");
    assert!(text.contains("perpetuo_log_rows_written_total 1"));
    assert!(
        !text.contains(&env.key) && !text.contains(&env.workspace.to_string()),
        "no secrets or ids in labels"
    );
}

#[tokio::test]
async fn a_request_cut_off_by_the_end_of_the_grace_period_still_gets_its_row() {
    let env = Env::new().await;
    let m = mock_provider::MockProvider::start(mock_provider::MockConfig {
        chunk_delay: Duration::from_millis(700),
        ..Default::default()
    })
    .await
    .unwrap();
    env.add_provider("slow", &m.base_url(), 1).await;
    let mut gw = Gateway::start_with(&env, &env.db.url, &[("SHUTDOWN_GRACE_SECONDS", "1")]).await;
    let mut body = chat_body("gpt-4o");
    body["stream"] = json!(true);
    let resp = gw.chat(&env.key, body).send().await.unwrap();
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    let mut s = resp.bytes_stream();
    s.next().await.unwrap().unwrap();
    gw.signal("TERM");
    let mut text = String::new();
    while let Some(Ok(chunk)) = s.next().await {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(
        !text.contains("[DONE]"),
        "the stream was cut at the end of the grace period"
    );
    assert!(gw.wait_exit(Duration::from_secs(15)).await);
    let row = env.log_row(&rid).await;
    assert_eq!(row.error_kind.as_deref(), Some("cancelled_at_shutdown"));
    assert_eq!(row.status, 503);
    assert!(row.streamed);
}

#[tokio::test]
async fn json_logs_carry_the_request_and_trace_ids_on_every_line_of_a_request() {
    let env = Env::new().await;
    let m = mock_provider::MockProvider::start(Default::default())
        .await
        .unwrap();
    env.add_provider("loopback", &m.base_url(), 1).await;
    let path = std::env::temp_dir().join(format!("perpetuo-json-log-{}.log", env.workspace));
    let file = std::fs::File::create(&path).unwrap();
    let gw = Gateway::start_with_output(
        &env,
        &env.db.url,
        &[("LOG_FORMAT", "json"), ("ALLOWED_PRIVATE_UPSTREAMS", "")],
        Some(&file),
    )
    .await;
    // The entry's address is refused by the policy: the gateway logs a warning. The
    // client's trace names the request's lines too.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let resp = gw
        .chat(&env.key, chat_body("gpt-4o"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    drop(gw);
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let warning = lines
        .iter()
        .find(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("ALLOWED_PRIVATE_UPSTREAMS"))
        })
        .unwrap_or_else(|| panic!("no policy warning in {text}"));
    assert_eq!(warning["span"]["request_id"], rid.as_str());
    assert_eq!(warning["span"]["trace_id"], trace);
}
