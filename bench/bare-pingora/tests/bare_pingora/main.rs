//! The baseline proxy really proxies: a chat completion and a streamed one reach the mock
//! provider through the `bare-pingora` binary and come back whole; in answer mode it
//! answers every request with its file, whole, on one kept-alive connection.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mock_provider::{MockConfig, MockProvider};
use serde_json::Value;

/// The proxy process, stopped when the test ends however it ends.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn start(args: &[&str]) -> (Proxy, SocketAddr) {
    let listen = free_addr();
    let child = Command::new(env!("CARGO_BIN_EXE_bare-pingora"))
        .args(["--listen", &listen.to_string()])
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let proxy = Proxy(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(listen).await.is_err() {
        assert!(Instant::now() < deadline, "bare-pingora did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (proxy, listen)
}

#[tokio::test]
async fn proxies_whole_and_streamed_answers() {
    let mock = MockProvider::start(MockConfig::default()).await.unwrap();
    let (_proxy, addr) = start(&["--upstream", &mock.addr().to_string()]).await;
    let url = format!("http://{addr}/v1/chat/completions");
    let http = reqwest::Client::new();
    let ask = |stream: bool| {
        http.post(&url)
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"model":"gpt-4o-mini","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
            ))
            .send()
    };

    let whole = ask(false).await.unwrap();
    assert_eq!(whole.status(), 200);
    let body: Value = whole.json().await.unwrap();
    assert!(
        body["choices"][0]["message"]["content"].is_string(),
        "{body}"
    );

    let streamed = ask(true).await.unwrap();
    assert_eq!(streamed.status(), 200);
    let text = streamed.text().await.unwrap();
    assert!(text.contains("\"delta\""), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
}

#[tokio::test]
async fn answer_mode_answers_every_request_with_its_file() {
    let dir = std::env::temp_dir().join(format!("bare-answer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("answer.json");
    let answer = r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[]}"#;
    std::fs::write(&file, answer).unwrap();
    let (_proxy, addr) =
        start(&["--mode", "answer", "--answer-file", file.to_str().unwrap()]).await;
    let url = format!("http://{addr}/v1/chat/completions");
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let res = http
            .post(&url)
            .header("content-type", "application/json")
            .body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "application/json");
        assert_eq!(res.text().await.unwrap(), answer);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
