//! Logs: cursor and offset pages, ordering and every filter against seeded rows; counting
//! only when asked; idempotent writes.

use perpetuo_core::db::logs::{insert_batch, Attempt, LogRecord, UsageSource};
use reqwest::StatusCode;
use serde_json::{json, Value};
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
        provider_kind: provider.map(|_| perpetuo_core::provider::ProviderKind::Openai),
        route: perpetuo_core::db::logs::Route::Chat,
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
        cache: None,
        cache_saved_nusd: None,
        provider_key_id: None,
        provider_key_label: None,
        skipped: Vec::new(),
        trace_id: None,
    }
}

/// Ids of the two API keys the seeded rows are spread over (one row in four is the second
/// key's), the same in every workspace: the filter must still keep to its workspace.
const KEY_A: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_000a);
const KEY_B: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_000b);

async fn seed(app: &TestApp, acc: &Account) -> (Vec<LogRecord>, Uuid, Uuid) {
    let ws = Uuid::parse_str(&acc.workspace).unwrap();
    let (p1, p2) = (Uuid::now_v7(), Uuid::now_v7());
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let mut rows = Vec::new();
    for i in 0..30i64 {
        let provider = if i % 3 == 0 { p2 } else { p1 };
        let model = if i % 2 == 0 { "gpt-4o" } else { "claude" };
        let status = if i % 5 == 0 { 502 } else { 200 };
        let mut row = record(
            ws,
            now - Duration::minutes(i * 10),
            Some(provider),
            model,
            status,
        );
        row.api_key_id = Some(if i % 4 == 1 { KEY_B } else { KEY_A });
        rows.push(row);
    }
    let mut client = app.client().await;
    assert_eq!(insert_batch(&mut client, &rows).await.unwrap(), 30);
    (rows, p1, p2)
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
        .replace('+', "%2B")
}

/// The rows a query should list, newest first (ties on the time by id, also descending).
fn expected(rows: &[LogRecord], keep: impl Fn(&LogRecord) -> bool) -> Vec<String> {
    let mut kept: Vec<&LogRecord> = rows.iter().filter(|r| keep(r)).collect();
    kept.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
    kept.iter().map(|r| r.id.to_string()).collect()
}

/// Follows `next_cursor` from the newest page to the last; returns every page.
async fn walk(app: &TestApp, token: &str, base: &str, query: &str) -> Vec<Value> {
    let mut pages: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let url = match &cursor {
            Some(c) => format!("{base}?{query}&cursor={c}"),
            None => format!("{base}?{query}"),
        };
        let (status, page) = app.get(&url, token).await;
        assert_eq!(status, StatusCode::OK, "{url}: {page}");
        assert!(
            page["total"].is_null(),
            "counted without being asked: {page}"
        );
        cursor = page["next_cursor"].as_str().map(str::to_string);
        pages.push(page);
        if cursor.is_none() {
            return pages;
        }
    }
    panic!("more than 100 pages");
}

#[tokio::test]
async fn first_page_ordering_and_offset_pages() {
    let app = TestApp::spawn().await;
    let acc = app.signup("l@example.com").await;
    let other = app.signup("l2@example.com").await;
    let (rows, _p1, _p2) = seed(&app, &acc).await;
    seed(&app, &other).await;
    let base = format!("/workspaces/{}/logs", acc.workspace);
    let expected = expected(&rows, |_| true);

    let (status, page) = app.get(&base, &acc.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["limit"], 50);
    assert!(page["total"].is_null() && page["page"].is_null(), "{page}");
    assert!(
        page["next_cursor"].is_null() && page["prev_cursor"].is_null(),
        "{page}"
    );
    assert_eq!(ids(&page), expected, "newest first, only this workspace");
    let first = &page["data"][0];
    assert_eq!(first["cost_usd"], 1.5e-6);
    assert_eq!(first["attempts"][0]["provider_name"], "entry");
    assert_eq!(first["usage_source"], "provider");

    // The deprecated offset pages answer as before, with a total on every page.
    let (_, p2page) = app.get(&format!("{base}?limit=7&page=2"), &acc.token).await;
    assert_eq!(ids(&p2page), expected[7..14]);
    assert_eq!((&p2page["total"], &p2page["page"]), (&json!(30), &json!(2)));
    let (_, last) = app.get(&format!("{base}?limit=7&page=5"), &acc.token).await;
    assert_eq!(ids(&last), expected[28..]);
    assert!(last["next_cursor"].is_null());
    // ... and cursors to go on from there.
    let next = p2page["next_cursor"].as_str().unwrap();
    let (_, third) = app
        .get(&format!("{base}?limit=7&cursor={next}"), &acc.token)
        .await;
    assert_eq!(ids(&third), expected[14..21]);
    let (_, uncounted) = app
        .get(&format!("{base}?limit=7&page=2&count=false"), &acc.token)
        .await;
    assert!(uncounted["total"].is_null(), "{uncounted}");
}

#[tokio::test]
async fn cursor_pages_walk_every_row_once_newest_first_with_every_filter() {
    let app = TestApp::spawn().await;
    let acc = app.signup("walk@example.com").await;
    let (mut rows, _p1, p2) = seed(&app, &acc).await;
    // Rows of one instant, ordered among themselves by id.
    let ws = Uuid::parse_str(&acc.workspace).unwrap();
    let tied: Vec<LogRecord> = (0..6)
        .map(|i| {
            let status = if i % 2 == 0 { 502 } else { 200 };
            record(ws, rows[12].created_at, Some(p2), "gpt-4o", status)
        })
        .collect();
    let mut client = app.client().await;
    assert_eq!(insert_batch(&mut client, &tied).await.unwrap(), 6);
    rows.extend(tied);
    seed(&app, &app.signup("walk2@example.com").await).await;
    let base = format!("/workspaces/{}/logs", acc.workspace);
    let (from, to) = (rows[20].created_at, rows[5].created_at);
    type Keep = Box<dyn Fn(&LogRecord) -> bool>;
    let cases: Vec<(String, Keep)> = vec![
        (String::new(), Box::new(|_| true)),
        (
            format!("provider={p2}"),
            Box::new(move |r| r.provider_id == Some(p2)),
        ),
        (
            "model=claude".into(),
            Box::new(|r| r.model_requested.as_deref() == Some("claude")),
        ),
        ("status=502".into(), Box::new(|r| r.status == 502)),
        (
            format!("api_key_id={KEY_B}"),
            Box::new(|r| r.api_key_id == Some(KEY_B)),
        ),
        (
            format!("from={}&to={}", rfc3339(from), rfc3339(to)),
            Box::new(move |r| r.created_at >= from && r.created_at < to),
        ),
        (
            format!("provider={p2}&model=gpt-4o&status=502"),
            Box::new(move |r| {
                r.provider_id == Some(p2)
                    && r.model_requested.as_deref() == Some("gpt-4o")
                    && r.status == 502
            }),
        ),
        (
            format!("api_key_id={KEY_A}&status=200&from={}", rfc3339(from)),
            Box::new(move |r| {
                r.api_key_id == Some(KEY_A) && r.status == 200 && r.created_at >= from
            }),
        ),
    ];
    for (filter, keep) in &cases {
        let want = expected(&rows, keep);
        assert!(!want.is_empty(), "{filter}");
        for limit in [1, 4, 7, 200] {
            let query = format!("limit={limit}&{filter}");
            let pages = walk(&app, &acc.token, &base, &query).await;
            let seen: Vec<String> = pages.iter().flat_map(ids).collect();
            assert_eq!(seen, want, "{query}");
            assert_eq!(pages.len(), want.len().div_ceil(limit), "{query}");
            assert!(
                pages[0]["prev_cursor"].is_null(),
                "the first page is the newest"
            );
            assert!(pages[1..].iter().all(|p| p["prev_cursor"].is_string()));
        }
    }
}

#[tokio::test]
async fn newer_returns_the_previous_page() {
    let app = TestApp::spawn().await;
    let acc = app.signup("newer@example.com").await;
    let (mut rows, p1, _p2) = seed(&app, &acc).await;
    // Rows of one instant, which a page boundary falls between.
    let ws = Uuid::parse_str(&acc.workspace).unwrap();
    let tied: Vec<LogRecord> = (0..5)
        .map(|_| record(ws, rows[10].created_at, Some(p1), "gpt-4o", 200))
        .collect();
    let mut client = app.client().await;
    assert_eq!(insert_batch(&mut client, &tied).await.unwrap(), 5);
    rows.extend(tied);
    let base = format!("/workspaces/{}/logs", acc.workspace);
    let query = format!("limit=4&provider={p1}");
    let want = expected(&rows, |r| r.provider_id == Some(p1));
    let pages = walk(&app, &acc.token, &base, &query).await;
    assert!(pages.len() >= 4);
    // From the last page back to the first by prev_cursor, each page as it was.
    let mut at = pages.len() - 1;
    let mut page = pages[at].clone();
    while at > 0 {
        let prev = page["prev_cursor"].as_str().expect("a page before");
        let (status, newer) = app
            .get(&format!("{base}?{query}&cursor={prev}"), &acc.token)
            .await;
        assert_eq!(status, StatusCode::OK);
        at -= 1;
        assert_eq!(ids(&newer), ids(&pages[at]), "page {at}");
        // Its next_cursor leads back to the page it came from.
        let next = newer["next_cursor"].as_str().unwrap();
        let (_, again) = app
            .get(&format!("{base}?{query}&cursor={next}"), &acc.token)
            .await;
        assert_eq!(ids(&again), ids(&pages[at + 1]));
        page = newer;
    }
    assert!(
        page["prev_cursor"].is_null(),
        "back at the newest page: {page}"
    );
    assert_eq!(ids(&page), want[..4]);

    // A row that arrives meanwhile is on the newer side of the first page.
    let newest = record(ws, OffsetDateTime::now_utc(), Some(p1), "gpt-4o", 200);
    insert_batch(&mut client, std::slice::from_ref(&newest))
        .await
        .unwrap();
    let second = pages[1]["prev_cursor"].as_str().unwrap();
    let (_, first) = app
        .get(&format!("{base}?{query}&cursor={second}"), &acc.token)
        .await;
    assert_eq!(ids(&first), want[..4]);
    let newer = first["prev_cursor"].as_str().expect("the new row is newer");
    let (_, top) = app
        .get(&format!("{base}?{query}&cursor={newer}"), &acc.token)
        .await;
    assert_eq!(ids(&top), [newest.id.to_string()]);
    assert!(top["prev_cursor"].is_null());
}

#[tokio::test]
async fn total_is_counted_only_when_asked() {
    let app = TestApp::spawn().await;
    let acc = app.signup("count@example.com").await;
    let (rows, _p1, p2) = seed(&app, &acc).await;
    let base = format!("/workspaces/{}/logs", acc.workspace);
    let (_, page) = app.get(&format!("{base}?limit=5"), &acc.token).await;
    assert!(page["total"].is_null(), "{page}");
    let (_, counted) = app
        .get(
            &format!("{base}?limit=5&count=true&provider={p2}"),
            &acc.token,
        )
        .await;
    let matching = rows.iter().filter(|r| r.provider_id == Some(p2)).count();
    assert_eq!(counted["total"], matching);
    assert_eq!(ids(&counted).len(), 5);
    // On a later page too: the same total, whatever the page.
    let next = counted["next_cursor"].as_str().unwrap();
    let (_, later) = app
        .get(
            &format!("{base}?limit=5&count=true&provider={p2}&cursor={next}"),
            &acc.token,
        )
        .await;
    assert_eq!(later["total"], matching);
    let (_, not) = app
        .get(&format!("{base}?limit=5&count=false"), &acc.token)
        .await;
    assert!(not["total"].is_null());
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
        ("api_key_id=nope", "api_key_id"),
        ("api_key_id=pk_live_123", "api_key_id"),
        ("status=abc", "status"),
        ("from=yesterday", "from"),
        ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
        ("cursor=abc", "cursor"),
        ("cursor=%2B%2B%2B", "cursor"),
        // Well-formed base64url of the wrong length, with an unknown direction, padded.
        ("cursor=bwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "cursor"),
        ("cursor=eAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "cursor"),
        ("cursor=bwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%3D%3D", "cursor"),
        // A time past what a timestamp holds.
        ("cursor=b3__________AAAAAAAAAAAAAAAAAAAAAA", "cursor"),
        ("page=2&cursor=bwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "cursor"),
        ("count=yes", "count"),
    ] {
        let (status, body) = app.get(&format!("{base}?{q}"), &acc.token).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}");
        assert!(body["error"]["fields"][field].is_string(), "{q}: {body}");
    }
    let (status, _) = app
        .get(&format!("{base}?limit=200&page=3"), &acc.token)
        .await;
    assert_eq!(status, StatusCode::OK);
    // A well-formed cursor from nowhere is a position like any other.
    let (status, page) = app
        .get(
            &format!("{base}?cursor=bwAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            &acc.token,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page["data"].as_array().unwrap().is_empty());
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
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    let (_, usage) = app
        .get(&format!("/workspaces/{}/usage", acc.workspace), &acc.token)
        .await;
    assert_eq!(usage["totals"]["requests"], 1);
    assert_eq!(usage["totals"]["total_tokens"], 15);
}

#[tokio::test]
async fn rows_say_what_the_cache_did_and_filter_by_it() {
    use perpetuo_core::db::logs::CacheResult;
    let app = TestApp::spawn().await;
    let acc = app.signup("cached@example.com").await;
    let ws = Uuid::parse_str(&acc.workspace).unwrap();
    let now = OffsetDateTime::now_utc();
    let mut rows = Vec::new();
    for (i, cache) in [
        None,
        Some(CacheResult::Miss),
        Some(CacheResult::Hit),
        Some(CacheResult::Bypass),
        Some(CacheResult::Hit),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = record(ws, now - Duration::seconds(i as i64), None, "gpt-4o", 200);
        r.cache = cache;
        if cache == Some(CacheResult::Hit) {
            r.cost_nusd = Some(0);
            r.cache_saved_nusd = Some(1_500);
        }
        rows.push(r);
    }
    let mut client = app.client().await;
    insert_batch(&mut client, &rows).await.unwrap();
    let base = format!("/workspaces/{}/logs", acc.workspace);

    let (status, page) = app.get(&base, &acc.token).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let shown: Vec<(Value, Value)> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["cache"].clone(), r["cache_saved_usd"].clone()))
        .collect();
    assert_eq!(
        shown,
        vec![
            (Value::Null, Value::Null),
            (json!("miss"), Value::Null),
            (json!("hit"), json!(1.5e-6)),
            (json!("bypass"), Value::Null),
            (json!("hit"), json!(1.5e-6)),
        ]
    );
    let (status, hits) = app
        .get(&format!("{base}?cache=hit&count=true"), &acc.token)
        .await;
    assert_eq!(status, StatusCode::OK, "{hits}");
    assert_eq!(
        ids(&hits),
        expected(&rows, |r| r.cache == Some(CacheResult::Hit))
    );
    assert_eq!(hits["total"], 2);
    let (status, body) = app.get(&format!("{base}?cache=stale"), &acc.token).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["fields"]["cache"].is_string(), "{body}");
}
