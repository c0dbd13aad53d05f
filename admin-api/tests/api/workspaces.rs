//! Workspaces and isolation between users.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{error_code, TestApp};

#[tokio::test]
async fn create_list_get_rename() {
    let app = TestApp::spawn().await;
    let acc = app.signup("w@example.com").await;
    let (status, ws) = app
        .post("/workspaces", &acc.token, json!({"name": "  Research "}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ws}");
    assert_eq!(ws["name"], "Research");
    assert_eq!(ws["role"], "owner");
    let id = ws["id"].as_str().unwrap();
    let (_, list) = app.get("/workspaces", &acc.token).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    let (status, got) = app.get(&format!("/workspaces/{id}"), &acc.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["name"], "Research");
    let (status, renamed) = app
        .put(
            &format!("/workspaces/{id}"),
            &acc.token,
            json!({"name": "Prod"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(renamed["name"], "Prod");

    for bad in [
        json!({}),
        json!({"name": "   "}),
        json!({"name": "x".repeat(101)}),
    ] {
        let (status, body) = app.post("/workspaces", &acc.token, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"]["fields"]["name"].is_string());
    }
    let (status, _) = app.get("/workspaces/not-a-uuid", &acc.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn another_users_workspace_is_not_found_on_every_route() {
    let app = TestApp::spawn_with("127.0.0.0/8").await;
    let a = app.signup("a@example.com").await;
    let b = app.signup("b@example.com").await;
    let ws = &a.workspace;
    let (status, provider) = app
        .post(
            &format!("/workspaces/{ws}/providers"),
            &a.token,
            json!({"kind": "openai", "name": "main", "api_key": "sk-a-secret-1234"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{provider}");
    let pid = provider["id"].as_str().unwrap();
    let kid = &a.key_id;

    let calls: Vec<(Method, String, Option<serde_json::Value>)> = vec![
        (Method::GET, format!("/workspaces/{ws}"), None),
        (
            Method::PUT,
            format!("/workspaces/{ws}"),
            Some(json!({"name": "mine now"})),
        ),
        (Method::GET, format!("/workspaces/{ws}/providers"), None),
        (
            Method::POST,
            format!("/workspaces/{ws}/providers"),
            Some(json!({"kind": "openai", "name": "x", "api_key": "k"})),
        ),
        (
            Method::PUT,
            format!("/workspaces/{ws}/providers/{pid}"),
            Some(json!({"enabled": false})),
        ),
        (
            Method::DELETE,
            format!("/workspaces/{ws}/providers/{pid}"),
            None,
        ),
        (Method::GET, format!("/workspaces/{ws}/api-keys"), None),
        (
            Method::POST,
            format!("/workspaces/{ws}/api-keys"),
            Some(json!({"name": "x"})),
        ),
        (
            Method::POST,
            format!("/workspaces/{ws}/api-keys/{kid}/revoke"),
            None,
        ),
        (
            Method::DELETE,
            format!("/workspaces/{ws}/api-keys/{kid}"),
            None,
        ),
        (Method::GET, format!("/workspaces/{ws}/logs"), None),
        (Method::GET, format!("/workspaces/{ws}/usage"), None),
        (
            Method::GET,
            format!("/workspaces/{ws}/usage/by-provider"),
            None,
        ),
        // B's own workspace id with A's entries: still not found.
        (
            Method::PUT,
            format!("/workspaces/{}/providers/{pid}", b.workspace),
            Some(json!({"enabled": false})),
        ),
        (
            Method::DELETE,
            format!("/workspaces/{}/providers/{pid}", b.workspace),
            None,
        ),
        (
            Method::POST,
            format!("/workspaces/{}/api-keys/{kid}/revoke", b.workspace),
            None,
        ),
        (
            Method::DELETE,
            format!("/workspaces/{}/api-keys/{kid}", b.workspace),
            None,
        ),
    ];
    for (method, path, body) in calls {
        let (status, resp) = app.raw(method.clone(), &path, Some(&b.token), body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path} → {resp}");
        assert_eq!(error_code(&resp), "not_found");
        assert!(!resp.to_string().contains("main"), "leaked: {resp}");
    }
    // A's things are untouched.
    let (_, list) = app
        .get(&format!("/workspaces/{ws}/providers"), &a.token)
        .await;
    assert_eq!(list["data"][0]["enabled"], true);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (_, keys) = app
        .get(&format!("/workspaces/{ws}/api-keys"), &a.token)
        .await;
    assert!(keys["data"][0]["revoked_at"].is_null());
    let (_, got) = app.get(&format!("/workspaces/{ws}"), &a.token).await;
    assert_eq!(got["name"], "Default");
}

#[tokio::test]
async fn patch_changes_only_what_it_carries_and_routing_is_a_setting_of_the_workspace() {
    let app = TestApp::spawn().await;
    let acc = app.signup("route@example.com").await;
    let url = format!("/workspaces/{}", acc.workspace);
    let (_, ws) = app.get(&url, &acc.token).await;
    assert_eq!(ws["routing"]["strategy"], "weighted", "{ws}");
    assert_eq!(ws["routing"]["sticky"], false, "{ws}");

    let (status, _) = app
        .put(
            &url,
            &acc.token,
            json!({"name": "Prod", "limits": {"rpm": 50}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, ws) = app
        .patch(
            &url,
            &acc.token,
            json!({"routing": {"strategy": "latency"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ws}");
    assert_eq!(ws["routing"]["strategy"], "latency");
    assert_eq!(ws["name"], "Prod", "a field not sent is not changed");
    assert_eq!(ws["limits"]["rpm"], 50);
    let (_, got) = app.get(&url, &acc.token).await;
    assert_eq!(got["routing"]["strategy"], "latency");
    // One routing field sent: the other keeps its value.
    let (status, ws) = app
        .patch(&url, &acc.token, json!({"routing": {"sticky": true}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{ws}");
    assert_eq!(
        ws["routing"],
        json!({"strategy": "latency", "sticky": true})
    );

    for (bad, field) in [
        (
            json!({"routing": {"strategy": "fastest"}}),
            "routing.strategy",
        ),
        (json!({"name": " "}), "name"),
    ] {
        let (status, body) = app.patch(&url, &acc.token, bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} → {body}");
        assert!(body["error"]["fields"][field].is_string(), "{bad} → {body}");
    }
    let (_, got) = app.get(&url, &acc.token).await;
    assert_eq!(
        (got["name"].clone(), got["routing"]["strategy"].clone()),
        (json!("Prod"), json!("latency")),
        "a refused change changes nothing"
    );
    let (_, audit) = app.get(&format!("{url}/audit"), &acc.token).await;
    assert!(audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "workspace.updated"
            && e["after"]["routing"]["strategy"] == "latency"));
}

#[tokio::test]
async fn the_cache_is_a_setting_of_the_workspace_changed_like_routing() {
    let app = TestApp::spawn().await;
    let acc = app.signup("cache@example.com").await;
    let url = format!("/workspaces/{}", acc.workspace);
    let (_, ws) = app.get(&url, &acc.token).await;
    assert_eq!(
        ws["cache"],
        json!({"mode": "off", "ttl_seconds": 3600}),
        "{ws}"
    );

    let (status, ws) = app
        .put(
            &url,
            &acc.token,
            json!({"name": "Prod", "cache": {"mode": "on", "ttl_seconds": 600}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ws}");
    assert_eq!(ws["cache"], json!({"mode": "on", "ttl_seconds": 600}));
    // One cache field sent: the other keeps its value, and so do the other settings.
    let (status, ws) = app
        .patch(&url, &acc.token, json!({"cache": {"mode": "opt_in"}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{ws}");
    assert_eq!(ws["cache"], json!({"mode": "opt_in", "ttl_seconds": 600}));
    assert_eq!(ws["name"], "Prod");
    let (status, ws) = app
        .patch(
            &url,
            &acc.token,
            json!({"cache": {"ttl_seconds": 2_592_000}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ws}");
    let (_, got) = app.get(&url, &acc.token).await;
    assert_eq!(
        got["cache"],
        json!({"mode": "opt_in", "ttl_seconds": 2_592_000})
    );
    let stored =
        perpetuo_core::db::workspaces::cache(&app.client().await, acc.workspace.parse().unwrap())
            .await
            .unwrap();
    assert_eq!(
        (stored.mode.as_str(), stored.ttl_seconds),
        ("opt_in", 2_592_000)
    );

    for (bad, field) in [
        (json!({"cache": {"ttl_seconds": 0}}), "cache.ttl_seconds"),
        (
            json!({"cache": {"ttl_seconds": 2_592_001}}),
            "cache.ttl_seconds",
        ),
        (
            json!({"cache": {"ttl_seconds": 1u64 << 40}}),
            "cache.ttl_seconds",
        ),
        (json!({"cache": {"mode": "inherit"}}), "cache.mode"),
    ] {
        let (status, body) = app.patch(&url, &acc.token, bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad} → {body}");
        assert!(body["error"]["fields"][field].is_string(), "{bad} → {body}");
    }
    let (status, body) = app
        .patch(
            &url,
            &acc.token,
            json!({"cache": {"mode": "on", "size": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "unknown_field");
    let (_, got) = app.get(&url, &acc.token).await;
    assert_eq!(
        got["cache"],
        json!({"mode": "opt_in", "ttl_seconds": 2_592_000}),
        "a refused change changes nothing"
    );
    let (_, audit) = app.get(&format!("{url}/audit"), &acc.token).await;
    assert!(audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "workspace.updated"
            && e["before"]["cache"]["mode"] == "on"
            && e["after"]["cache"]["mode"] == "opt_in"));
}

#[tokio::test]
async fn admins_purge_the_cache_by_moving_its_generation_on() {
    use perpetuo_core::db::workspaces::{self, Role};
    let app = TestApp::spawn().await;
    let owner = app.signup("owner@example.com").await;
    let id: uuid::Uuid = owner.workspace.parse().unwrap();
    let mut by_role = Vec::new();
    for (email, role) in [
        ("admin@example.com", Role::Admin),
        ("member@example.com", Role::Member),
        ("viewer@example.com", Role::Viewer),
    ] {
        let acc = app.signup(email).await;
        workspaces::add_member(&app.client().await, id, acc.user_id.parse().unwrap(), role)
            .await
            .unwrap();
        by_role.push((role, acc));
    }
    let url = format!("/workspaces/{id}/cache");
    let generation = || async {
        workspaces::cache(&app.client().await, id)
            .await
            .unwrap()
            .generation
    };
    assert_eq!(generation().await, 0);

    for (role, acc) in &by_role {
        let (status, body) = app.delete(&url, &acc.token).await;
        if *role >= Role::Admin {
            assert_eq!(status, StatusCode::NO_CONTENT, "{role}: {body}");
        } else {
            assert_eq!(status, StatusCode::FORBIDDEN, "{role}: {body}");
            assert_eq!(error_code(&body), "insufficient_role");
        }
    }
    assert_eq!(generation().await, 1, "only the admin's purge counted");
    let (status, _) = app.delete(&url, &owner.token).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(generation().await, 2);
    // Someone else's workspace is not there at all.
    let stranger = app.signup("stranger@example.com").await;
    let (status, _) = app.delete(&url, &stranger.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(generation().await, 2);

    let (_, audit) = app
        .get(
            &format!("/workspaces/{id}/audit?action=workspace.cache_purged"),
            &owner.token,
        )
        .await;
    let generations: Vec<&serde_json::Value> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["after"]["cache_generation"])
        .collect();
    assert_eq!(generations, vec![&json!(2), &json!(1)], "{audit}");
}

#[tokio::test]
async fn tracing_content_capture_is_off_until_the_workspace_opts_in() {
    let app = TestApp::spawn().await;
    let acc = app.signup("traces@example.com").await;
    let url = format!("/workspaces/{}", acc.workspace);
    let (_, ws) = app.get(&url, &acc.token).await;
    assert_eq!(ws["tracing"], json!({"capture_content": false}), "{ws}");
    let (status, ws) = app
        .patch(
            &url,
            &acc.token,
            json!({"tracing": {"capture_content": true}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ws}");
    assert_eq!(ws["tracing"]["capture_content"], true);
    assert_eq!(
        ws["routing"]["strategy"], "weighted",
        "nothing else changed"
    );
    let (_, got) = app.get(&url, &acc.token).await;
    assert_eq!(got["tracing"]["capture_content"], true);
    // An empty tracing object keeps the value; an unknown field is refused.
    let (status, ws) = app.patch(&url, &acc.token, json!({"tracing": {}})).await;
    assert_eq!(
        (status, ws["tracing"]["capture_content"].clone()),
        (StatusCode::OK, json!(true))
    );
    let (status, err) = app
        .patch(&url, &acc.token, json!({"tracing": {"capture": true}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    // The gateways hear of the change as they hear of routing changes.
    let notified: bool = app
        .client()
        .await
        .query_one(
            "SELECT count(*) = 1 FROM pg_trigger WHERE tgname = 'workspaces_tracing_notify'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(notified);
}

#[tokio::test]
async fn meta_gives_the_dashboard_the_trace_link_template() {
    let app = TestApp::spawn().await;
    let (_, meta) = app.raw(Method::GET, "/meta", None, None).await;
    assert_eq!(meta["trace_url_template"], serde_json::Value::Null);
    let template = "https://tempo.example/explore?traceId={trace_id}";
    let app = TestApp::spawn_configured(|c| c.trace_url_template = Some(template.into())).await;
    let (_, meta) = app.raw(Method::GET, "/meta", None, None).await;
    assert_eq!(meta["trace_url_template"], template);
}
