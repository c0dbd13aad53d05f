//! Limits, allowed models, expiry and metadata on keys and workspaces; a key's limits with
//! its current consumption.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{error_code, TestApp};

#[tokio::test]
async fn key_limits_are_set_at_creation_and_replaced_by_put() {
    let app = TestApp::spawn().await;
    let acc = app.signup("lim@example.com").await;
    let base = format!("/workspaces/{}/api-keys", acc.workspace);
    let (status, created) = app
        .post(
            &base,
            &acc.token,
            json!({
                "name": "bot",
                "limits": {"rpm": 2, "tpm": 1000, "max_concurrency": 1, "budget_usd": 1.5, "budget_period": "day"},
                "allowed_models": ["gpt-4o-mini", "claude-*"],
                "label": "nightly batch",
                "owner_email": " Ops@Example.com ",
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["limits"]["rpm"], 2);
    assert_eq!(created["limits"]["tpm"], 1000);
    assert_eq!(created["limits"]["max_concurrency"], 1);
    assert_eq!(created["limits"]["budget_usd"], 1.5);
    assert_eq!(created["limits"]["budget_period"], "day");
    assert_eq!(
        created["allowed_models"],
        json!(["gpt-4o-mini", "claude-*"])
    );
    assert_eq!(created["label"], "nightly batch");
    assert_eq!(created["owner_email"], "ops@example.com");
    let id = created["id"].as_str().unwrap();

    let (status, updated) = app
        .put(
            &format!("{base}/{id}"),
            &acc.token,
            json!({"limits": {"rpm": 5}, "expires_at": "2999-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["limits"]["rpm"], 5);
    assert!(
        updated["limits"]["tpm"].is_null(),
        "PUT replaces: {updated}"
    );
    assert!(updated["limits"]["budget_usd"].is_null());
    assert_eq!(updated["allowed_models"], json!([]));
    assert_eq!(updated["expires_at"], "2999-01-01T00:00:00Z");
    assert!(updated["label"].is_null());

    let (_, list) = app.get(&base, &acc.token).await;
    let row = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .unwrap();
    assert_eq!(row["limits"]["rpm"], 5);

    let (status, _) = app
        .put(
            &format!("{base}/{}", uuid::Uuid::now_v7()),
            &acc.token,
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn invalid_limits_are_refused_field_by_field() {
    let app = TestApp::spawn().await;
    let acc = app.signup("bad@example.com").await;
    let base = format!("/workspaces/{}/api-keys", acc.workspace);
    for (body, field) in [
        (json!({"name": "k", "limits": {"rpm": 0}}), "limits.rpm"),
        (
            json!({"name": "k", "limits": {"budget_usd": -1}}),
            "limits.budget_usd",
        ),
        // Past what Redis' Lua holds exactly in nano-USD.
        (
            json!({"name": "k", "limits": {"budget_usd": 1000000.01}}),
            "limits.budget_usd",
        ),
        (
            json!({"name": "k", "limits": {"budget_period": "year"}}),
            "limits.budget_period",
        ),
        (
            json!({"name": "k", "allowed_models": ["gpt-*-mini"]}),
            "allowed_models",
        ),
        (
            json!({"name": "k", "allowed_models": [""]}),
            "allowed_models",
        ),
        (
            json!({"name": "k", "owner_email": "not-an-email"}),
            "owner_email",
        ),
        (
            json!({"name": "k", "expires_at": "2001-01-01T00:00:00Z"}),
            "expires_at",
        ),
    ] {
        let (status, err) = app.post(&base, &acc.token, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert_eq!(error_code(&err), "validation_error", "{err}");
        assert!(err.to_string().contains(field), "{body}: {err}");
    }
    let (status, err) = app
        .post(
            &base,
            &acc.token,
            json!({"name": "k", "limits": {"rmp": 3}}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "unknown limit field: {err}"
    );
}

#[tokio::test]
async fn workspace_limits_are_set_with_put_and_shown_with_get() {
    let app = TestApp::spawn().await;
    let acc = app.signup("ws@example.com").await;
    let path = format!("/workspaces/{}", acc.workspace);
    let (status, ws) = app
        .put(
            &path,
            &acc.token,
            json!({"name": "Team", "limits": {"rpm": 100, "budget_usd": 20, "budget_period": "week"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ws}");
    assert_eq!(ws["limits"]["rpm"], 100);
    assert_eq!(ws["limits"]["budget_usd"], 20.0);
    let (_, ws) = app.get(&path, &acc.token).await;
    assert_eq!(ws["limits"]["budget_period"], "week");
    // A rename alone leaves the limits as they are.
    let (_, ws) = app.put(&path, &acc.token, json!({"name": "Team 2"})).await;
    assert_eq!(ws["limits"]["rpm"], 100);
    assert_eq!(ws["name"], "Team 2");
}

#[tokio::test]
async fn limits_endpoint_reports_consumption() {
    let app = TestApp::spawn().await;
    let acc = app.signup("watch@example.com").await;
    let base = format!("/workspaces/{}/api-keys", acc.workspace);
    let (_, created) = app
        .post(
            &base,
            &acc.token,
            json!({"name": "w", "limits": {"rpm": 10, "budget_usd": 1, "budget_period": "month"}}),
        )
        .await;
    let id = uuid::Uuid::parse_str(created["id"].as_str().unwrap()).unwrap();
    let ws = uuid::Uuid::parse_str(&acc.workspace).unwrap();
    // Real rows, as the gateway's writer leaves them.
    let db = app.client().await;
    db.execute(
        "INSERT INTO usage_counters (workspace_id, bucket, api_key_id, model, requests, cost_nusd)
         VALUES ($1, date_trunc('hour', now()), $2, 'm', 3, 250000000)",
        &[&ws, &id],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO request_logs (id, created_at, workspace_id, api_key_id, route, status, total_tokens, streamed, usage_source, latency_ms, attempts)
         VALUES ($3, now(), $1, $2, 'chat', 200, 42, false, 'provider', 1, '[]')",
        &[&ws, &id, &uuid::Uuid::now_v7()],
    )
    .await
    .unwrap();
    let (status, l) = app.get(&format!("{base}/{id}/limits"), &acc.token).await;
    assert_eq!(status, StatusCode::OK, "{l}");
    assert_eq!(l["limits"]["rpm"], 10);
    assert_eq!(l["usage"]["spend_usd"], 0.25);
    assert_eq!(l["usage"]["requests_last_minute"], 1);
    assert_eq!(l["usage"]["tokens_last_minute"], 42);
    assert!(l["usage"]["period_start"]
        .as_str()
        .unwrap()
        .ends_with("-01T00:00:00Z"));

    let other = app.signup("other@example.com").await;
    let (status, _) = app.get(&format!("{base}/{id}/limits"), &other.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
