//! Provider entries that name their server (`localhost`, a compose service) rather than
//! its address: accepted by the admin API and proxied by the gateway when
//! ALLOWED_PRIVATE_UPSTREAMS lists where the name points.

use serde_json::{json, Value};

use crate::harness::{chat_body, mock, AdminApi, Env, Gateway};

#[tokio::test]
async fn an_entry_at_http_localhost_is_proxied_when_loopback_is_allowed() {
    let env = Env::new().await;
    let m = mock().await;
    let admin = AdminApi::start(&env, &[("ALLOWED_PRIVATE_UPSTREAMS", "127.0.0.1/32")]).await;
    let admin_url = admin.base.clone();
    let http = reqwest::Client::new();
    let signup = admin.signup("names@example.com").await;
    let token = signup["token"].as_str().unwrap();
    let ws = signup["workspace"]["id"].as_str().unwrap();
    let key = signup["api_key"]["key"].as_str().unwrap();
    let base_url = format!("http://localhost:{}/v1", m.addr().port());
    let r = http
        .post(format!("{admin_url}/workspaces/{ws}/providers"))
        .bearer_auth(token)
        .json(&json!({"kind": "openai_compatible", "name": "local", "api_key": "sk-local", "base_url": base_url}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    let gw = Gateway::start_with(
        &env,
        &env.db.url,
        &[("ALLOWED_PRIVATE_UPSTREAMS", "127.0.0.1/32")],
    )
    .await;
    let resp = gw.chat(key, chat_body("gpt-4o-mini")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-perpetuo-provider"], "local");
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["choices"][0]["message"]["content"].is_string(),
        "{body}"
    );
    assert_eq!(m.hits(), 1);
}
