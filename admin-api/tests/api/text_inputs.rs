//! Texts the API stores or filters by: NUL and other control characters are a 400 with
//! the field named, never a failed query (500). Found by fuzzing from /openapi.json.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{error_code, TestApp};

#[tokio::test]
async fn control_characters_are_refused_not_failed() {
    let app = TestApp::spawn().await;
    let acc = app.signup("text@example.com").await;
    let ws = format!("/workspaces/{}", acc.workspace);
    for (status, body) in [
        app.post("/workspaces", &acc.token, json!({"name": "a\u{0}b"}))
            .await,
        app.post("/workspaces", &acc.token, json!({"name": "a\r\nb"}))
            .await,
        app.put(&ws, &acc.token, json!({"name": "a\u{0}"})).await,
        app.post(
            &format!("{ws}/api-keys"),
            &acc.token,
            json!({"name": "k\u{0}"}),
        )
        .await,
        app.post(
            &format!("{ws}/api-keys"),
            &acc.token,
            json!({"name": "k\u{202e}"}),
        )
        .await,
    ] {
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(&body), "validation_error");
        assert!(body["error"]["fields"]["name"].is_string(), "{body}");
    }
    let (status, body) = app
        .get(&format!("{ws}/logs?model=gpt%00"), &acc.token)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["fields"]["model"].is_string(), "{body}");

    // Printable names, Unicode included, are kept as given.
    let (status, body) = app
        .put(&ws, &acc.token, json!({"name": "Équipe – prod"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "Équipe – prod");
}
