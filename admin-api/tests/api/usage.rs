//! Usage totals, series and breakdown against seeded counters.

use perpetuo_core::db::logs::insert_batch;
use reqwest::StatusCode;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::helpers::TestApp;
use crate::logs::record;

fn rfc(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
        .replace('+', "%2B")
}

#[tokio::test]
async fn totals_series_and_breakdown() {
    let app = TestApp::spawn().await;
    let acc = app.signup("u@example.com").await;
    let ws = Uuid::parse_str(&acc.workspace).unwrap();
    let (p1, p2) = (Uuid::now_v7(), Uuid::now_v7());
    let day0 = OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT) - Duration::days(3);
    let mut rows = vec![
        record(
            ws,
            day0 + Duration::hours(1) + Duration::minutes(5),
            Some(p1),
            "gpt-4o",
            200,
        ),
        record(
            ws,
            day0 + Duration::hours(1) + Duration::minutes(50),
            Some(p1),
            "gpt-4o",
            200,
        ),
        record(ws, day0 + Duration::hours(3), Some(p2), "claude", 502),
        record(
            ws,
            day0 + Duration::days(1) + Duration::hours(2),
            Some(p1),
            "gpt-4o",
            200,
        ),
    ];
    rows[2].cost_nusd = None;
    rows[3].prompt_tokens = 100;
    rows[3].total_tokens = 105;
    rows[3].cost_nusd = Some(2_000_000_000);
    let mut client = app.client().await;
    insert_batch(&mut client, &rows).await.unwrap();

    // Hourly series over one day.
    let from = day0;
    let to = day0 + Duration::days(1);
    let (status, u) = app
        .get(
            &format!(
                "/workspaces/{}/usage?from={}&to={}",
                acc.workspace,
                rfc(from),
                rfc(to)
            ),
            &acc.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{u}");
    assert_eq!(u["granularity"], "hour");
    assert_eq!(u["totals"]["requests"], 3);
    assert_eq!(u["totals"]["errors"], 1);
    assert_eq!(u["totals"]["prompt_tokens"], 30);
    assert_eq!(u["totals"]["completion_tokens"], 15);
    assert_eq!(u["totals"]["total_tokens"], 45);
    assert_eq!(u["totals"]["cost_usd"], 3e-6);
    let series = u["series"].as_array().unwrap();
    assert_eq!(series.len(), 24);
    assert_eq!(series[1]["requests"], 2);
    assert_eq!(series[3]["requests"], 1);
    assert_eq!(series[3]["errors"], 1);
    assert_eq!(series[0]["requests"], 0);

    // Daily series beyond two days.
    let (_, u) = app
        .get(
            &format!(
                "/workspaces/{}/usage?from={}&to={}",
                acc.workspace,
                rfc(day0),
                rfc(day0 + Duration::days(3))
            ),
            &acc.token,
        )
        .await;
    assert_eq!(u["granularity"], "day");
    let series = u["series"].as_array().unwrap();
    assert_eq!(series.len(), 3);
    assert_eq!(series[0]["requests"], 3);
    assert_eq!(series[1]["requests"], 1);
    assert_eq!(series[1]["prompt_tokens"], 100);
    assert_eq!(series[1]["cost_usd"], 2.0);
    assert_eq!(u["totals"]["requests"], 4);

    // Default range (30 days) covers everything.
    let (_, u) = app
        .get(&format!("/workspaces/{}/usage", acc.workspace), &acc.token)
        .await;
    assert_eq!(u["totals"]["requests"], 4);

    let (_, by) = app
        .get(
            &format!(
                "/workspaces/{}/usage/by-provider?from={}&to={}",
                acc.workspace,
                rfc(day0),
                rfc(day0 + Duration::days(3))
            ),
            &acc.token,
        )
        .await;
    let data = by["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["provider_id"], p1.to_string().as_str());
    assert_eq!(data[0]["model"], "gpt-4o");
    assert_eq!(data[0]["requests"], 3);
    assert_eq!(data[0]["prompt_tokens"], 120);
    assert_eq!(data[1]["model"], "claude");
    assert_eq!(data[1]["errors"], 1);

    let (status, body) = app
        .get(
            &format!(
                "/workspaces/{}/usage?from={}&to={}",
                acc.workspace,
                rfc(to),
                rfc(from)
            ),
            &acc.token,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["fields"]["from"].is_string());
}

/// Rows the cache answered count as requests; their tokens and savings are reported apart
/// from what providers served and charged.
#[tokio::test]
async fn cache_hits_are_reported_apart_from_provider_usage() {
    use perpetuo_core::db::logs::CacheResult;
    let app = TestApp::spawn().await;
    let acc = app.signup("hits@example.com").await;
    let ws = Uuid::parse_str(&acc.workspace).unwrap();
    let hour = OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT) - Duration::days(1);
    let miss = {
        let mut r = record(
            ws,
            hour + Duration::minutes(1),
            Some(Uuid::now_v7()),
            "gpt-4o",
            200,
        );
        r.cache = Some(CacheResult::Miss);
        r
    };
    let hit = |minute: i64, saved: i64| {
        let mut r = record(ws, hour + Duration::minutes(minute), None, "gpt-4o", 200);
        r.provider_name = None;
        r.provider_kind = None;
        r.attempts = Vec::new();
        r.cost_nusd = Some(0);
        r.cache = Some(CacheResult::Hit);
        r.cache_saved_nusd = Some(saved);
        r
    };
    let rows = vec![miss, hit(2, 1_500), hit(3, 2_500_000_000)];
    let mut client = app.client().await;
    insert_batch(&mut client, &rows).await.unwrap();

    let range = format!("from={}&to={}", rfc(hour), rfc(hour + Duration::days(1)));
    let base = format!("/workspaces/{}/usage", acc.workspace);
    let (status, u) = app.get(&format!("{base}?{range}"), &acc.token).await;
    assert_eq!(status, StatusCode::OK, "{u}");
    let t = &u["totals"];
    assert_eq!(t["requests"], 3);
    assert_eq!(t["total_tokens"], 15, "only the provider's answer");
    assert_eq!(t["cost_usd"], 1.5e-6);
    assert_eq!(t["cache_hits"], 2);
    assert_eq!(t["cache_hit_tokens"], 30);
    assert_eq!(t["cache_saved_usd"], 2.5000015);
    let pick = |v: &serde_json::Value, fields: &[&str]| -> Vec<serde_json::Value> {
        fields.iter().map(|f| v[*f].clone()).collect()
    };
    let first = &u["series"][0];
    assert_eq!(
        pick(first, &["requests", "cache_hits", "cache_hit_tokens"]),
        [3, 2, 30],
        "{first}"
    );
    assert_eq!(u["series"][1]["cache_hits"], 0);

    let (status, b) = app
        .get(&format!("{base}/by-provider?{range}"), &acc.token)
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    let cached = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["provider_id"].is_null())
        .unwrap();
    assert_eq!(
        pick(cached, &["requests", "cache_hits", "total_tokens"]),
        [2, 2, 0]
    );
}
