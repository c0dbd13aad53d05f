//! Every route answers to the access table: each role gets exactly what the table grants.

use perpetuo_admin::access::{self, Access};
use perpetuo_core::db::workspaces::Role;
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use super::{add, login};
use crate::helpers::{error_code, Account, TestApp};

#[tokio::test]
async fn every_route_answers_to_the_access_table() {
    let app = TestApp::spawn().await;
    let (_, doc) = app.raw(Method::GET, "/openapi.json", None, None).await;
    let mut ops: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method = method.to_uppercase();
            let rule = access::find(&method.parse().unwrap(), path)
                .unwrap_or_else(|| panic!("{method} {path} has no rule in access::RULES"));
            assert_eq!(
                op["x-required-role"],
                rule.access.label(),
                "{method} {path}: the document states another role"
            );
            ops.push((method, path.clone()));
        }
    }
    for rule in access::RULES {
        assert!(
            rule.path == "/openapi.json"
                || ops.iter().any(|(m, p)| m == rule.method && p == rule.path),
            "rule for {} {} names no route",
            rule.method,
            rule.path
        );
    }

    let owner = app.signup("owner@example.com").await;
    let users: Vec<(Role, Account)> = vec![
        (Role::Viewer, app.signup("viewer@example.com").await),
        (Role::Member, app.signup("member@example.com").await),
        (Role::Admin, app.signup("admin@example.com").await),
    ];
    let outsider = app.signup("outsider@example.com").await;
    let mut checked = 0;
    for (method, path) in &ops {
        let rule = access::find(&method.parse().unwrap(), path).unwrap();
        let method: Method = method.parse().unwrap();
        let body = matches!(method, Method::POST | Method::PUT).then(|| json!({}));
        match rule.access {
            Access::Public => {
                let (status, b) = app.raw(method.clone(), path, None, body.clone()).await;
                assert!(
                    ![401, 403, 500].contains(&status.as_u16()),
                    "{method} {path} is public but answered {status}: {b}"
                );
            }
            Access::User => {
                let (status, _) = app.raw(method.clone(), path, None, body.clone()).await;
                assert_eq!(status, 401, "{method} {path} without a token");
                // A session of its own: the route may be logout.
                let (_, session) = login(&app, "outsider@example.com", "correct horse").await;
                let token = session["token"].as_str().unwrap();
                let (status, b) = app
                    .raw(method.clone(), path, Some(token), body.clone())
                    .await;
                assert!(
                    ![401, 403, 404, 500].contains(&status.as_u16()),
                    "{method} {path} refused a signed-in user: {status} {b}"
                );
            }
            Access::Role(least) => {
                // A fresh workspace per route, since some routes delete or leave it.
                let (_, ws) = app
                    .post("/workspaces", &owner.token, json!({"name": "matrix"}))
                    .await;
                let ws = ws["id"].as_str().unwrap().to_string();
                for (role, acc) in &users {
                    add(&app, &ws, &acc.user_id, *role).await;
                }
                let url = path
                    .replace("{id}", &ws)
                    .split('/')
                    .map(|seg| {
                        if seg.starts_with('{') {
                            Uuid::now_v7().to_string()
                        } else {
                            seg.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("/");
                let (status, _) = app.raw(method.clone(), &url, None, body.clone()).await;
                assert_eq!(status, 401, "{method} {path} without a token");
                let (status, b) = app
                    .raw(method.clone(), &url, Some(&outsider.token), body.clone())
                    .await;
                assert_eq!(status, 404, "{method} {path} to a non-member: {b}");
                let everyone = users
                    .iter()
                    .map(|(r, a)| (*r, a.token.as_str()))
                    .chain([(Role::Owner, owner.token.as_str())]);
                for (role, token) in everyone {
                    let (status, b) = app
                        .raw(method.clone(), &url, Some(token), body.clone())
                        .await;
                    if role < least {
                        assert_eq!(status, 403, "{method} {path} as {role}: {b}");
                        assert_eq!(error_code(&b), "insufficient_role");
                    } else {
                        assert!(
                            ![401, 403, 500].contains(&status.as_u16()),
                            "{method} {path} as {role} (needs {least}) answered {status}: {b}"
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 4 * 25, "only {checked} role checks ran");
}
