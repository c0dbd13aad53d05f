//! Logs: pagination, ordering and every filter against seeded rows; idempotent writes.

use perpetuo_core::db::logs::{insert_batch, Attempt, LogRecord, UsageSource};
use reqwest::StatusCode;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::helpers::{Account, TestApp};

pub fn record(
    ws: Uuid,
    at: OffsetDateTime,
    provider: Option<Uuid>,
    model: &str,
    status: i16,
) -> LogRecord {
    LogRecord {
        id: Uuid::now_v7(),
        created_at: at,
        workspace_id: Some(ws),
        api_key_id: None,
        provider_id: provider,
        provider_name: provider.map(|_| "entry".to_string()),
        provider_kind: provider.map(|_| "openai".to_string()),
        route: "chat".into(),
        model_requested: Some(model.into()),
        model_served: Some(model.into()),
        status,
        error_kind: (status >= 400).then(|| "upstream_error".to_string()),
        streamed: false,
        prompt_tokens: 10,
        completion_tokens: 5,
        total_tokens: 15,
        cost_nusd: Some(1_500),
        usage_source: UsageSource::Provider,
        latency_ms: 120,
        ttfb_ms: Some(40),
        attempts: provider
            .map(|p| {
                vec![Attempt {
                    provider_id: p,
                    provider_name: "entry".into(),
                    status: Some(status as u16),
                    latency_ms: 100,
                    error_kind: None,
                }]
            })
            .unwrap_or_default(),
        note: None,
    }
}

async fn seed(app: &TestApp, acc: &Account) -> (Vec<LogRecord>, Uuid, Uuid) {
    let ws = Uuid::parse_str(&acc.workspace).unwrap();
    let (p1, p2) = (Uuid::now_v7(), Uuid::now_v7());
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let mut rows = Vec::new();
    for i in 0..30i64 {
        let provider = if i % 3 == 0 { p2 } else { p1 };
        let model = if i % 2 == 0 { "gpt-4o" } else { "claude" };
        let status = if i % 5 == 0 { 502 } else { 200 };
        rows.push(record(
            ws,
            now - Duration::minutes(i * 10),
            Some(provider),
            model,
            status,
        ));
    }
    let mut client = app.client().await;
    assert_eq!(insert_batch(&mut client, &rows).await.unwrap(), 30);
    (rows, p1, p2)
}

#[tokio::test]
async fn pagination_ordering_and_filters() {
    let app = TestApp::spawn().await;
    let acc = app.signup("l@example.com").await;
    let other = app.signup("l2@example.com").await;
    let (rows, _p1, p2) = seed(&app, &acc).await;
    seed(&app, &other).await;
    let base = format!("/workspaces/{}/logs", acc.workspace);

    let (status, page) = app.get(&base, &acc.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total"], 30);
    assert_eq!(page["limit"], 50);
    assert_eq!(page["page"], 1);
    let ids: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = rows.iter().map(|r| r.id.to_string()).collect();
    assert_eq!(
        ids,
        expected.iter().map(String::as_str).collect::<Vec<_>>(),
        "newest first, only this workspace"
    );
    let first = &page["data"][0];
    assert_eq!(first["cost_usd"], 1.5e-6);
    assert_eq!(first["attempts"][0]["provider_name"], "entry");
    assert_eq!(first["usage_source"], "provider");

    let (_, p2page) = app.get(&format!("{base}?limit=7&page=2"), &acc.token).await;
    let ids: Vec<&str> = p2page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        expected[7..14]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    assert_eq!(p2page["total"], 30);
    let (_, last) = app.get(&format!("{base}?limit=7&page=5"), &acc.token).await;
    assert_eq!(last["data"].as_array().unwrap().len(), 2);

    let count = |f: &dyn Fn(&LogRecord) -> bool| rows.iter().filter(|r| f(r)).count() as i64;
    let (_, by_provider) = app
        .get(&format!("{base}?provider={p2}&limit=200"), &acc.token)
        .await;
    assert_eq!(by_provider["total"], count(&|r| r.provider_id == Some(p2)));
    assert!(by_provider["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["provider_id"] == p2.to_string().as_str()));
    let (_, by_model) = app.get(&format!("{base}?model=claude"), &acc.token).await;
    assert_eq!(
        by_model["total"],
        count(&|r| r.model_requested.as_deref() == Some("claude"))
    );
    let (_, by_status) = app.get(&format!("{base}?status=502"), &acc.token).await;
    assert_eq!(by_status["total"], count(&|r| r.status == 502));
    let from = rows[20].created_at;
    let to = rows[5].created_at;
    let fmt = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
            .replace('+', "%2B")
    };
    let (_, ranged) = app
        .get(
            &format!("{base}?from={}&to={}", fmt(from), fmt(to)),
            &acc.token,
        )
        .await;
    assert_eq!(
        ranged["total"],
        count(&|r| r.created_at >= from && r.created_at < to)
    );
    assert_eq!(ranged["total"], 15);
    let (_, combined) = app
        .get(
            &format!("{base}?provider={p2}&model=gpt-4o&status=502"),
            &acc.token,
        )
        .await;
    assert_eq!(
        combined["total"],
        count(&|r| r.provider_id == Some(p2)
            && r.model_requested.as_deref() == Some("gpt-4o")
            && r.status == 502)
    );
}

#[tokio::test]
async fn bad_query_parameters() {
    let app = TestApp::spawn().await;
    let acc = app.signup("lq@example.com").await;
    let base = format!("/workspaces/{}/logs", acc.workspace);
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=abc", "limit"),
        ("page=0", "page"),
        ("provider=nope", "provider"),
        ("status=abc", "status"),
        ("from=yesterday", "from"),
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
    ] {
        let (status, body) = app.get(&format!("{base}?{q}"), &acc.token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}");
        assert!(body["error"]["fields"][field].is_string(), "{q}: {body}");
    }
    let (status, _) = app
        .get(&format!("{base}?limit=200&page=3"), &acc.token)
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_record_written_twice_is_one_row_and_counted_once() {
    let app = TestApp::spawn().await;
    let acc = app.signup("dup-log@example.com").await;
    let ws = Uuid::parse_str(&acc.workspace).unwrap();
    let r = record(
        ws,
        OffsetDateTime::now_utc(),
        Some(Uuid::now_v7()),
        "gpt-4o",
        200,
    );
    let mut client = app.client().await;
    assert_eq!(
        insert_batch(&mut client, std::slice::from_ref(&r))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        insert_batch(&mut client, &[r.clone(), r.clone()])
            .await
            .unwrap(),
        0
    );
    let (_, page) = app
        .get(&format!("/workspaces/{}/logs", acc.workspace), &acc.token)
        .await;
    assert_eq!(page["total"], 1);
    let (_, usage) = app
        .get(&format!("/workspaces/{}/usage", acc.workspace), &acc.token)
        .await;
    assert_eq!(usage["totals"]["requests"], 1);
    assert_eq!(usage["totals"]["total_tokens"], 15);
}
