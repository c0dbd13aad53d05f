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
