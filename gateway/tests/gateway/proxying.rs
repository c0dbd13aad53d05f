//! Plain proxying: success, usage and cost in logs and counters, rewriting, error shapes.

use mock_provider::expected_usage;
use perpetuo_core::db;
use perpetuo_core::pricing::{Pricing, TokenCounts};
use serde_json::{json, Value};

use crate::harness::{chat_body, free_port, mock, Env, Gateway};

#[tokio::test]
async fn non_stream_success_is_logged_and_counted_to_the_token() {
    let env = Env::new().await;
    let m = mock().await;
    let pid = env.add_provider("main", &m.base_url(), 10).await;
    let gw = Gateway::start(&env).await;

    let body = chat_body("gpt-4o-mini");
    let resp = gw
        .chat(&env.key, body.clone())
        .header("cookie", "session=abc")
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(resp.headers()["x-perpetuo-provider"], "main");
    assert_eq!(resp.headers()["x-perpetuo-attempts"], "1");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    let expected = expected_usage(&body);
    assert_eq!(v["usage"]["prompt_tokens"], expected.prompt_tokens);

    // What went upstream: the provider's key, never the client's key, cookies or encodings.
    let up = m.last_request().unwrap();
    assert_eq!(up.header("authorization"), Some("Bearer sk-upstream-main"));
    assert!(up.header("cookie").is_none());
    assert!(up.header("accept-encoding").is_none());
    assert!(!format!("{:?}", up.headers).contains(&env.key));
    assert_eq!(up.path, "/v1/chat/completions");

    let row = env.log_row(&rid).await;
    assert_eq!(row.status, 200);
    assert_eq!(row.provider_id, Some(pid));
    assert_eq!(row.api_key_id, Some(env.key_id));
    assert_eq!(row.prompt_tokens as u64, expected.prompt_tokens);
    assert_eq!(row.completion_tokens as u64, expected.completion_tokens);
    assert_eq!(row.total_tokens as u64, expected.total_tokens);
    assert_eq!(row.usage_source.as_str(), "provider");
    assert_eq!(row.model_requested.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(row.model_served.as_deref(), Some("gpt-4o-mini"));
    assert!(!row.streamed);
    assert_eq!(row.attempts.len(), 1);
    let cost = Pricing::embedded().unwrap().cost_nusd(
        "gpt-4o-mini",
        &TokenCounts {
            prompt_tokens: expected.prompt_tokens,
            completion_tokens: expected.completion_tokens,
            ..Default::default()
        },
    );
    assert!(cost.is_some());
    assert_eq!(row.cost_nusd, cost);

    let client = env.client().await;
    let now = time::OffsetDateTime::now_utc();
    let totals = db::usage::totals(
        &client,
        env.workspace,
        now - time::Duration::hours(2),
        now + time::Duration::hours(2),
    )
    .await
    .unwrap();
    assert_eq!(totals.requests, 1);
    assert_eq!(totals.prompt_tokens as u64, expected.prompt_tokens);
    assert_eq!(totals.completion_tokens as u64, expected.completion_tokens);
    assert_eq!(Some(totals.cost_nusd), cost);
}

#[tokio::test]
async fn unknown_model_price_gives_null_cost_and_model_map_is_applied() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider_with(
        "mapped",
        perpetuo_core::provider::ProviderKind::OpenaiCompatible,
        &m.base_url(),
        1,
        &["local-llama"],
        &[("alias", "local-llama")],
    )
    .await;
    let gw = Gateway::start(&env).await;
    let resp = gw.chat(&env.key, chat_body("alias")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(m.last_request().unwrap().model(), Some("local-llama"));
    let row = env.log_row(&rid).await;
    assert_eq!(row.model_requested.as_deref(), Some("alias"));
    assert_eq!(row.model_served.as_deref(), Some("local-llama"));
    assert_eq!(row.cost_nusd, None, "unknown price is null, not 0");

    let resp = gw
        .chat(&env.key, chat_body("not-served"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");

    let models: Value = gw
        .http
        .get(format!("{}/v1/models", gw.base))
        .bearer_auth(&env.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["alias", "local-llama"]);
}

#[tokio::test]
async fn error_shapes_and_statuses() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    let gw = Gateway::start(&env).await;
    let url = format!("{}/v1/chat/completions", gw.base);

    let check = |v: &Value, code: &str| {
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(v["error"]["message"].is_string());
        assert!(v["error"]["type"].is_string());
    };
    let r = gw
        .http
        .post(&url)
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    check(&r.json().await.unwrap(), "missing_api_key");
    let r = gw
        .http
        .post(&url)
        .bearer_auth("pp-not-a-real-key")
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    check(&r.json().await.unwrap(), "invalid_api_key");
    let r = gw
        .http
        .post(&url)
        .bearer_auth(format!("pp-{}", "A".repeat(43)))
        .json(&chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let r = gw
        .http
        .post(&url)
        .bearer_auth(&env.key)
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    check(&r.json().await.unwrap(), "invalid_json");
    let r = gw
        .http
        .post(&url)
        .bearer_auth(&env.key)
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    check(&r.json().await.unwrap(), "missing_model");

    let big = "x".repeat(10 * 1024 * 1024 + 10);
    let r = gw
        .http
        .post(&url)
        .bearer_auth(&env.key)
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    check(&r.json().await.unwrap(), "request_too_large");
    // Chunked, with no length announced.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..11).map(|_| Ok(vec![b'x'; 1024 * 1024])).collect();
    let r = gw
        .http
        .post(&url)
        .bearer_auth(&env.key)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    let r = gw
        .http
        .get(format!("{}/v1/nothing-here", gw.base))
        .bearer_auth(&env.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    check(&r.json().await.unwrap(), "not_found");
    assert_eq!(m.hits(), 0, "no bad request reached the provider");

    // Each rejected request has its one log row (with the workspace when the key was known).
    let rows = env.log_rows(4).await;
    let mut statuses: Vec<i16> = rows.iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(statuses, vec![400, 400, 413, 413]);
}

#[tokio::test]
async fn embeddings_are_proxied_and_counted() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("emb", &m.base_url(), 1).await;
    let gw = Gateway::start(&env).await;
    let body = json!({"model": "text-embedding-3-small", "input": ["one two three", "four"]});
    let r = gw
        .http
        .post(format!("{}/v1/embeddings", gw.base))
        .bearer_auth(&env.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rid = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "list");
    let row = env.log_row(&rid).await;
    let expected = mock_provider::expected_embedding_usage(&body);
    assert_eq!(row.route.as_str(), "embeddings");
    assert_eq!(row.prompt_tokens as u64, expected.prompt_tokens);
    assert_eq!(m.last_request().unwrap().path, "/v1/embeddings");
}

#[tokio::test]
async fn missing_provider_usage_is_counted_with_the_tokenizer_and_marked_estimated() {
    use perpetuo_wire::tokens;
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("compat", &m.base_url(), 1).await;
    m.set_behavior(Some(mock_provider::Behavior::NoUsage));
    let gw = Gateway::start(&env).await;
    for stream in [false, true] {
        let mut body = chat_body("local-model");
        body["stream"] = json!(stream);
        let resp = gw.chat(&env.key, body.clone()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
        let _ = resp.bytes().await.unwrap();
        let row = env.log_row(&rid).await;
        assert_eq!(row.usage_source.as_str(), "estimated", "stream={stream}");
        assert_eq!(row.prompt_tokens as u64, tokens::prompt(&body));
        assert_eq!(
            row.completion_tokens as u64,
            tokens::count(mock_provider::DEFAULT_CONTENT)
        );
        assert!(row.completion_tokens > 0);
    }
}

#[tokio::test]
async fn models_of_entries_that_serve_any_model_come_from_the_pricing_table() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider_with(
        "claude",
        perpetuo_core::provider::ProviderKind::Anthropic,
        &m.anthropic_base_url(),
        1,
        &[],
        &[],
    )
    .await;
    env.add_provider_with(
        "local",
        perpetuo_core::provider::ProviderKind::OpenaiCompatible,
        &m.base_url(),
        2,
        &["llama-3"],
        &[],
    )
    .await;
    let gw = Gateway::start(&env).await;
    let models: Value = gw
        .http
        .get(format!("{}/v1/models", gw.base))
        .bearer_auth(&env.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let data = models["data"].as_array().unwrap();
    let claude: Vec<&Value> = data
        .iter()
        .filter(|m| m["owned_by"] == "anthropic")
        .collect();
    assert!(!claude.is_empty(), "{models}");
    assert!(claude
        .iter()
        .all(|m| m["id"].as_str().unwrap().starts_with("claude-")
            && m["perpetuo_listed_from"] == "pricing_table"));
    let llama = data.iter().find(|m| m["id"] == "llama-3").unwrap();
    assert_eq!(llama["owned_by"], "openai_compatible");
    assert!(llama.get("perpetuo_listed_from").is_none());
    assert!(!data
        .iter()
        .any(|m| m["id"].as_str().unwrap().starts_with("gpt-")));
}

#[tokio::test]
async fn models_of_an_openai_compatible_entry_serving_any_model_come_from_its_provider() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("local", &m.base_url(), 1).await;
    let closed = free_port();
    env.add_provider("down", &format!("http://127.0.0.1:{closed}/v1"), 2)
        .await;
    env.add_provider_with(
        "named",
        perpetuo_core::provider::ProviderKind::OpenaiCompatible,
        &m.base_url(),
        3,
        &["mock-gpt-4o"],
        &[],
    )
    .await;
    let gw = Gateway::start(&env).await;
    let list = || async {
        let r = gw
            .http
            .get(format!("{}/v1/models", gw.base))
            .bearer_auth(&env.key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "a provider that is down is tolerated");
        r.json::<Value>().await.unwrap()
    };
    let models = list().await;
    let data = models["data"].as_array().unwrap();
    let find = |id: &str| data.iter().find(|m| m["id"] == id).cloned();
    for id in mock_provider::openai::MODELS
        .iter()
        .filter(|m| **m != "mock-gpt-4o")
    {
        let model = find(id).unwrap_or_else(|| panic!("{id} missing from {models}"));
        assert_eq!(model["owned_by"], "openai_compatible");
        assert_eq!(model["perpetuo_listed_from"], "provider", "{model}");
    }
    // A name an entry gives is the entry's, whoever else lists it.
    let named = find("mock-gpt-4o").unwrap();
    assert!(named.get("perpetuo_listed_from").is_none(), "{named}");

    let asked: Vec<_> = m
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == "/v1/models")
        .collect();
    assert_eq!(asked.len(), 1, "only the entry serving any model is asked");
    let auth = asked[0]
        .headers
        .iter()
        .find(|(n, _)| n == "authorization")
        .map(|(_, v)| v.clone());
    assert_eq!(auth.as_deref(), Some("Bearer sk-upstream-local"));

    // Listed again within the cache's lifetime: the provider is not asked again.
    assert_eq!(list().await, models);
    let asked_again = m
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == "/v1/models")
        .count();
    assert_eq!(asked_again, 1);
}

#[tokio::test]
async fn an_entry_without_a_key_sends_no_authorization_header() {
    let env = Env::new().await;
    let m = mock().await;
    let id = env.add_provider("ollama", &m.base_url(), 1).await;
    // What the admin API stores for an openai_compatible entry created without a key: an
    // entry with an empty pool.
    env.client()
        .await
        .execute(
            "DELETE FROM provider_entry_keys WHERE entry_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let gw = Gateway::start(&env).await;
    for stream in [false, true] {
        let mut body = chat_body("llama3");
        body["stream"] = json!(stream);
        let r = gw.chat(&env.key, body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await.unwrap();
        let seen = m.last_request().unwrap();
        assert_eq!(seen.path, "/v1/chat/completions");
        assert!(
            !seen.headers.iter().any(|(n, _)| n == "authorization"),
            "{:?}",
            seen.headers
        );
    }
    let r = gw
        .http
        .get(format!("{}/v1/models", gw.base))
        .bearer_auth(&env.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = m.last_request().unwrap();
    assert_eq!(seen.path, "/v1/models");
    assert!(!seen.headers.iter().any(|(n, _)| n == "authorization"));
}

#[tokio::test]
async fn a_known_route_asked_with_the_wrong_method_answers_405_with_allow() {
    let env = Env::new().await;
    let gw = Gateway::start(&env).await;
    for (method, path, allow) in [
        (reqwest::Method::GET, "/v1/chat/completions", "POST"),
        (reqwest::Method::PUT, "/v1/messages", "POST"),
        (reqwest::Method::POST, "/v1/models", "GET"),
        (reqwest::Method::DELETE, "/healthz", "GET"),
        (reqwest::Method::POST, "/v1/responses/resp_1", "GET, DELETE"),
    ] {
        let r = gw
            .http
            .request(method.clone(), format!("{}{path}", gw.base))
            .bearer_auth(&env.key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "method_not_allowed");
    }
    let r = gw
        .http
        .get(format!("{}/v1/nothing-here", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn the_metrics_endpoint_serves_the_text_format_and_gzip_when_asked() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("a", &m.base_url(), 1).await;
    let gw = Gateway::start(&env).await;
    let r = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let plain = gw.http.get(&gw.metrics).send().await.unwrap();
    assert_eq!(plain.status(), 200);
    assert!(plain.headers().get("content-encoding").is_none());
    assert_eq!(plain.headers()["content-type"], "text/plain; version=0.0.4");
    let text = plain.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("perpetuo_requests_total{")),
        "{text}"
    );

    let gzip = gw
        .http
        .get(&gw.metrics)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gzip.status(), 200);
    assert_eq!(gzip.headers()["content-encoding"], "gzip");
    let body = gzip.bytes().await.unwrap();
    assert_eq!(&body[..2], &[0x1f, 0x8b], "a gzip stream");
}
