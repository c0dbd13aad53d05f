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
        .raw(
            Method::PATCH,
            &url,
            Some(&acc.token),
            Some(json!({"routing": {"strategy": "latency"}})),
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
        .raw(
            Method::PATCH,
            &url,
            Some(&acc.token),
            Some(json!({"routing": {"sticky": true}})),
        )
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
        let (status, body) = app
            .raw(Method::PATCH, &url, Some(&acc.token), Some(bad.clone()))
            .await;
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
