//! Hits, recorded requests, and the completed / cancelled / abandoned counters.

use std::time::Duration;

use futures::StreamExt;
use mock_provider::{Behavior, MockConfig};
use serde_json::Value;

use crate::support::{chat_body, client, frames, post, start, start_with, stream_body};

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn cancelled_counts_streams_dropped_by_the_client() {
    let mock = start_with(MockConfig {
        chunk_delay: Duration::from_millis(50),
        ..MockConfig::default()
    })
    .await;
    let response = post(&mock, "/chat/completions", &stream_body("gpt-4o", true)).await;
    let mut stream = response.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: "));
    drop(stream);
    assert!(
        mock.wait_until(WAIT, |m| m.cancelled() == 1).await,
        "cancelled stays {}",
        mock.cancelled()
    );
    assert_eq!(mock.completed(), 0);

    // A stream read to its end is completed, not cancelled.
    let (_, error) =
        frames(post(&mock, "/chat/completions", &stream_body("gpt-4o", true)).await).await;
    assert!(error.is_none());
    assert!(mock.wait_until(WAIT, |m| m.completed() == 1).await);
    assert_eq!(mock.cancelled(), 1);
}

#[tokio::test]
async fn cancelled_counts_a_client_leaving_during_a_mid_stream_stall() {
    let mock = start().await;
    let response = post(
        &mock,
        "/chat/completions",
        &stream_body("stall-mid-stream", false),
    )
    .await;
    let mut stream = response.bytes_stream();
    let mut text = Vec::new();
    while text.windows(2).filter(|w| w == b"\n\n").count() < 3 {
        text.extend_from_slice(&stream.next().await.unwrap().unwrap());
    }
    drop(stream);
    assert!(mock.wait_until(WAIT, |m| m.cancelled() == 1).await);
}

#[tokio::test]
async fn abandoned_counts_a_client_leaving_before_the_headers() {
    let mock = start().await;
    mock.set_behavior(Some(Behavior::Stall));
    let result = client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .json(&chat_body("m"))
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(result.unwrap_err().is_timeout());
    assert!(mock.wait_until(WAIT, |m| m.abandoned() == 1).await);
    assert_eq!((mock.cancelled(), mock.completed(), mock.hits()), (0, 0, 1));
}

#[tokio::test]
async fn requests_are_recorded_with_headers_and_body() {
    let mock = start().await;
    let body = stream_body("gpt-4o", true);
    let response = client()
        .post(format!(
            "{}/chat/completions?api-version=1",
            mock.base_url()
        ))
        .bearer_auth("sk-upstream-key")
        .header("X-Custom-Header", "Value")
        .json(&body)
        .send()
        .await
        .unwrap();
    let _ = frames(response).await;
    let _ = client()
        .get(format!("{}/models", mock.base_url()))
        .send()
        .await
        .unwrap();

    assert_eq!(mock.hits(), 1, "model listing is no hit");
    let requests = mock.requests();
    assert_eq!(requests.len(), 2);
    let chat = &requests[0];
    assert_eq!(chat.method, "POST");
    assert_eq!(chat.path, "/v1/chat/completions");
    assert_eq!(chat.query.as_deref(), Some("api-version=1"));
    assert_eq!(chat.header("authorization"), Some("Bearer sk-upstream-key"));
    assert_eq!(chat.header("AUTHORIZATION"), Some("Bearer sk-upstream-key"));
    assert!(chat
        .headers
        .iter()
        .any(|(n, v)| n == "x-custom-header" && v == "Value"));
    assert!(chat
        .headers
        .iter()
        .all(|(n, _)| *n == n.to_ascii_lowercase()));
    assert_eq!(chat.json.as_ref(), Some(&body));
    assert_eq!(serde_json::from_slice::<Value>(&chat.body).unwrap(), body);
    assert_eq!(chat.model(), Some("gpt-4o"));
    assert_eq!(
        chat.json.as_ref().unwrap()["stream_options"]["include_usage"],
        true
    );
    assert_eq!(requests[1].method, "GET");
    assert_eq!(requests[1].path, "/v1/models");
    assert_eq!(mock.last_request().unwrap().path, "/v1/models");

    mock.reset_counts();
    assert_eq!((mock.hits(), mock.completed(), mock.cancelled()), (0, 0, 0));
    assert!(mock.requests().is_empty());
    let _ = post(&mock, "/chat/completions", &chat_body("m")).await;
    assert_eq!(mock.hits(), 1);
}

#[tokio::test]
async fn handle_reports_its_address() {
    let mock = start().await;
    assert!(mock.addr().ip().is_loopback());
    assert_ne!(mock.addr().port(), 0);
    assert_eq!(
        mock.base_url(),
        format!("http://127.0.0.1:{}/v1", mock.addr().port())
    );
}

#[tokio::test]
async fn dropping_the_handle_stops_the_server() {
    let mock = start().await;
    let url = format!("{}/models", mock.base_url());
    assert!(client().get(&url).send().await.is_ok());
    drop(mock);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let fresh = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(fresh.get(&url).send().await.is_err());
}
