//! Tracing: the spans each front door exports to an OTLP collector (their tree, names,
//! kinds and GenAI attributes), fallbacks as sibling attempts, a broken stream, a refused
//! request, message content only for a workspace that opts in, the client's trace
//! continued and the provider's `traceparent`, the log row's trace id — and a collector
//! that never answers costs no request anything.

use std::time::Duration;

use mock_provider::{Behavior, MockProvider};
use perpetuo_core::provider::ProviderKind;
use serde_json::{json, Value};

use crate::harness::otlp::{Collector, Exported, Silent, CLIENT, INTERNAL, SERVER};
use crate::harness::{chat_body, eventually, mock, Env, Gateway};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_PARENT: &str = "00f067aa0ba902b7";

fn client_traceparent() -> String {
    format!("00-{CLIENT_TRACE}-{CLIENT_PARENT}-01")
}

async fn gateway(env: &Env, collector: &Collector) -> Gateway {
    let settings = collector.settings();
    let extra: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Gateway::start_with(env, &env.db.url, &extra).await
}

fn request_id(resp: &reqwest::Response) -> String {
    resp.headers()["x-request-id"].to_str().unwrap().to_string()
}

/// The trace's SERVER span, its attempt spans (in start order of the list) and the rest.
fn tree(spans: &[Exported]) -> (&Exported, Vec<&Exported>) {
    let server = spans.iter().find(|s| s.kind == SERVER).unwrap();
    let attempts = spans.iter().filter(|s| s.kind == CLIENT).collect();
    (server, attempts)
}

fn child<'a>(spans: &'a [Exported], parent: &Exported, name: &str) -> &'a Exported {
    spans
        .iter()
        .find(|s| s.name == name && s.parent == parent.span_id)
        .unwrap_or_else(|| panic!("no {name} under {}: {spans:#?}", parent.name))
}

/// The `traceparent` the mock received with its last request.
fn sent_traceparent(mock: &MockProvider) -> Option<String> {
    mock.last_request()
        .and_then(|r| r.header("traceparent").map(str::to_string))
}

#[tokio::test]
async fn each_front_door_exports_its_span_tree() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider_with("oai", ProviderKind::Openai, &m.base_url(), 1, &[], &[])
        .await;
    let collector = Collector::start().await;
    let gw = gateway(&env, &collector).await;

    // Chat, streamed, in the client's trace, with request parameters.
    let mut body = chat_body("gpt-4o-mini");
    body["stream"] = json!(true);
    body["temperature"] = json!(0.5);
    body["max_tokens"] = json!(64);
    let resp = gw
        .chat(&env.key, body)
        .header("traceparent", client_traceparent())
        .header("tracestate", "vendor=abc")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    resp.bytes().await.unwrap();
    let spans = collector.trace_of(&rid, 4).await;
    let (server, attempts) = tree(&spans);
    assert_eq!(server.name, "POST /v1/chat/completions");
    assert_eq!(server.service, "perpetuo-gateway");
    assert_eq!(
        server.trace_id, CLIENT_TRACE,
        "the client's trace continues"
    );
    assert_eq!(server.parent, CLIENT_PARENT);
    assert_eq!(server.str("http.request.method"), Some("POST"));
    assert_eq!(server.str("url.path"), Some("/v1/chat/completions"));
    assert_eq!(server.int("http.response.status_code"), Some(200));
    assert_eq!(server.str("server.address"), Some("127.0.0.1"));
    assert_eq!(
        server.str("perpetuo.workspace_id"),
        Some(env.workspace.to_string().as_str())
    );
    assert_eq!(
        server.str("perpetuo.api_key_id"),
        Some(env.key_id.to_string().as_str())
    );
    assert_eq!(server.str("perpetuo.entry"), Some("oai"));
    assert_eq!(server.str("perpetuo.pool_key"), Some("default"));
    assert!(server.attr("perpetuo.cost_usd").is_some(), "{server:#?}");
    assert_eq!(child(&spans, server, "authenticate").kind, INTERNAL);
    assert_eq!(child(&spans, server, "route").kind, INTERNAL);
    assert_eq!(attempts.len(), 1);
    let attempt = attempts[0];
    assert_eq!(attempt.name, "chat gpt-4o-mini");
    assert_eq!(attempt.parent, server.span_id);
    assert_eq!(attempt.str("gen_ai.operation.name"), Some("chat"));
    assert_eq!(attempt.str("gen_ai.provider.name"), Some("openai"));
    assert_eq!(attempt.str("gen_ai.request.model"), Some("gpt-4o-mini"));
    assert_eq!(attempt.str("gen_ai.response.model"), Some("gpt-4o-mini"));
    assert_eq!(
        attempt.attr("gen_ai.request.temperature"),
        Some(&json!(0.5))
    );
    assert_eq!(attempt.int("gen_ai.request.max_tokens"), Some(64));
    assert_eq!(attempt.attr("gen_ai.request.stream"), Some(&json!(true)));
    assert!(attempt.int("gen_ai.usage.input_tokens").unwrap() > 0);
    assert!(attempt.int("gen_ai.usage.output_tokens").unwrap() > 0);
    assert!(attempt.events.iter().any(|e| e == "perpetuo.first_token"));
    assert!(!attempt.str("gen_ai.response.id").unwrap().is_empty());
    assert_eq!(
        attempt.attr("gen_ai.response.finish_reasons"),
        Some(&json!(["stop"]))
    );
    assert!(attempt.attr("error.type").is_none());
    assert!(
        attempt.attr("gen_ai.input.messages").is_none()
            && attempt.attr("gen_ai.output.messages").is_none(),
        "no content unless the workspace opts in"
    );
    // The provider continues the attempt's span, with the client's tracestate.
    let up = m.last_request().unwrap();
    assert_eq!(
        up.header("traceparent"),
        Some(format!("00-{CLIENT_TRACE}-{}-01", attempt.span_id).as_str())
    );
    assert_eq!(up.header("tracestate"), Some("vendor=abc"));
    let row = env.log_row(&rid).await;
    assert_eq!(row.trace_id.as_deref(), Some(CLIENT_TRACE));

    // Embeddings, Messages and Responses: a trace of their own each.
    let doors = [
        (
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": ["one two"]}),
            "embeddings text-embedding-3-small",
            "embeddings",
        ),
        (
            "/v1/messages",
            json!({"model": "gpt-4o-mini", "max_tokens": 32,
                   "messages": [{"role": "user", "content": "Hi"}]}),
            "chat gpt-4o-mini",
            "chat",
        ),
        (
            "/v1/responses",
            json!({"model": "gpt-4o-mini", "input": "Hi", "store": false}),
            "chat gpt-4o-mini",
            "chat",
        ),
    ];
    for (path, body, name, operation) in doors {
        let resp = gw
            .http
            .post(format!("{}{path}", gw.base))
            .bearer_auth(&env.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let rid = request_id(&resp);
        resp.bytes().await.unwrap();
        let spans = collector.trace_of(&rid, 4).await;
        let (server, attempts) = tree(&spans);
        assert_eq!(server.name, format!("POST {path}"));
        assert_eq!(server.parent, "", "a root span without a client trace");
        assert_eq!(attempts.len(), 1, "{path}");
        assert_eq!(attempts[0].name, name);
        assert_eq!(attempts[0].str("gen_ai.operation.name"), Some(operation));
        assert_eq!(attempts[0].parent, server.span_id);
        assert!(attempts[0].int("gen_ai.usage.input_tokens").unwrap() > 0);
        if operation == "chat" {
            assert!(attempts[0].str("gen_ai.response.id").is_some(), "{path}");
        }
        if path == "/v1/messages" {
            // (A Responses answer has a status, not finish reasons.)
            assert_eq!(
                attempts[0].attr("gen_ai.response.finish_reasons"),
                Some(&json!(["stop"])),
                "{path}: {:#?}",
                attempts[0]
            );
        }
        let row = env.log_row(&rid).await;
        assert_eq!(row.trace_id.as_deref(), Some(server.trace_id.as_str()));
        assert_eq!(
            sent_traceparent(&m),
            Some(format!("00-{}-{}-01", server.trace_id, attempts[0].span_id))
        );
    }
}

#[tokio::test]
async fn fallbacks_breaks_refusals_and_content() {
    let env = Env::new().await;
    let (a, b) = (mock().await, mock().await);
    env.add_provider("first", &a.base_url(), 1).await;
    env.add_provider_with(
        "second",
        ProviderKind::Anthropic,
        &b.anthropic_base_url(),
        2,
        &[],
        &[],
    )
    .await;
    let collector = Collector::start().await;
    let gw = gateway(&env, &collector).await;

    // A fallback: two sibling attempt spans, the first failed.
    a.set_behavior(Some(Behavior::Status(500)));
    let resp = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    resp.bytes().await.unwrap();
    let spans = collector.trace_of(&rid, 5).await;
    let (server, attempts) = tree(&spans);
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    assert!(attempts.iter().all(|s| s.parent == server.span_id));
    let failed = attempts
        .iter()
        .find(|s| s.str("perpetuo.entry") == Some("first"))
        .unwrap();
    assert!(failed.attr("error.type").is_some(), "{failed:#?}");
    assert_eq!(failed.int("http.response.status_code"), Some(500));
    assert_eq!(failed.status, 2);
    let served = attempts
        .iter()
        .find(|s| s.str("perpetuo.entry") == Some("second"))
        .unwrap();
    assert_eq!(served.str("gen_ai.provider.name"), Some("anthropic"));
    assert_eq!(
        served.attr("gen_ai.response.finish_reasons"),
        Some(&json!(["end_turn"]))
    );
    assert!(served.attr("error.type").is_none());
    assert!(server.attr("error.type").is_none());

    // A stream that breaks after its commit.
    a.set_behavior(Some(Behavior::DropMidStream));
    let mut body = chat_body("gpt-4o");
    body["stream"] = json!(true);
    let resp = gw.chat(&env.key, body).send().await.unwrap();
    let rid = request_id(&resp);
    let _ = resp.bytes().await;
    let spans = collector.trace_of(&rid, 4).await;
    let (server, attempts) = tree(&spans);
    assert_eq!(
        server.str("error.type"),
        Some("upstream_error_midstream"),
        "{server:#?}"
    );
    assert_eq!(
        attempts[0].str("error.type"),
        Some("upstream_error_midstream")
    );
    a.set_behavior(None);

    // A refused key still gets its SERVER span.
    let resp = gw
        .chat(&format!("{}x", env.key), chat_body("gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let rid = request_id(&resp);
    let spans = collector.trace_of(&rid, 1).await;
    let (server, attempts) = tree(&spans);
    assert!(attempts.is_empty());
    assert_eq!(server.int("http.response.status_code"), Some(401));
    assert!(server.attr("error.type").is_some(), "{server:#?}");
    assert_eq!(server.status, 2);

    // Content, once the workspace opts in (the entry cache hears of it).
    env.client()
        .await
        .execute(
            "UPDATE workspaces SET tracing_capture_content = true WHERE id = $1",
            &[&env.workspace],
        )
        .await
        .unwrap();
    let attempt = eventually("content in the spans", Duration::from_secs(10), || async {
        let resp = gw.chat(&env.key, chat_body("gpt-4o")).send().await.unwrap();
        let rid = request_id(&resp);
        resp.bytes().await.unwrap();
        let spans = collector.trace_of(&rid, 4).await;
        spans
            .into_iter()
            .find(|s| s.kind == CLIENT && s.attr("gen_ai.input.messages").is_some())
    })
    .await;
    let input: Value = serde_json::from_str(attempt.str("gen_ai.input.messages").unwrap()).unwrap();
    assert_eq!(input[0]["role"], "user");
    assert_eq!(input[0]["parts"][0]["type"], "text");
    assert_eq!(
        input[0]["parts"][0]["content"],
        "Say hello to the test suite"
    );
    let output: Value =
        serde_json::from_str(attempt.str("gen_ai.output.messages").unwrap()).unwrap();
    assert_eq!(output[0]["role"], "assistant");
    assert!(!output[0]["parts"][0]["content"]
        .as_str()
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_collector_that_never_answers_costs_requests_nothing() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    let silent = Silent::start().await;
    let gw = Gateway::start_with(
        &env,
        &env.db.url,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", silent.endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "10"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "200"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "4"),
        ],
    )
    .await;
    for _ in 0..8 {
        let resp = gw
            .chat(&env.key, chat_body("gpt-4o-mini"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    eventually(
        "spans the silent collector lost are counted",
        Duration::from_secs(10),
        || async {
            let text = gw.metrics_text().await;
            text.lines()
                .find_map(|l| l.strip_prefix("perpetuo_trace_spans_dropped_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .is_some_and(|n| n > 0.0)
        },
    )
    .await;
}

#[tokio::test]
async fn with_tracing_off_the_clients_trace_still_names_the_row_and_reaches_the_provider() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    let gw = Gateway::start(&env).await;
    let resp = gw
        .chat(&env.key, chat_body("gpt-4o-mini"))
        .header("traceparent", client_traceparent())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    resp.bytes().await.unwrap();
    assert_eq!(sent_traceparent(&m), Some(client_traceparent()));
    let row = env.log_row(&rid).await;
    assert_eq!(row.trace_id.as_deref(), Some(CLIENT_TRACE));
    // GenAI metrics, labelled by operation, provider and token type only.
    let text = gw.metrics_text().await;
    assert!(
        text.contains(
            "gen_ai_client_token_usage_count{gen_ai_operation_name=\"chat\",\
             gen_ai_provider_name=\"openai\",gen_ai_token_type=\"input\"} 1"
        ),
        "{text}"
    );
    // The duration histogram counts the answered request under the same labels (its
    // values are timings and are not looked at).
    assert!(
        text.contains(
            "gen_ai_server_request_duration_seconds_count{gen_ai_operation_name=\"chat\",\
             gen_ai_provider_name=\"openai\"} 1"
        ),
        "{text}"
    );
    // A request without one has no trace id.
    let resp = gw
        .chat(&env.key, chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    let rid = request_id(&resp);
    resp.bytes().await.unwrap();
    assert_eq!(sent_traceparent(&m), None);
    assert_eq!(env.log_row(&rid).await.trace_id, None);
}

#[tokio::test]
async fn a_trace_the_sampler_drops_still_names_the_row_and_reaches_the_provider_unsampled() {
    let env = Env::new().await;
    let m = mock().await;
    env.add_provider("main", &m.base_url(), 1).await;
    let collector = Collector::start().await;
    let mut settings = collector.settings();
    settings.push(("OTEL_TRACES_SAMPLER", "always_off".into()));
    let extra: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gw = Gateway::start_with(&env, &env.db.url, &extra).await;
    let resp = gw
        .chat(&env.key, chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rid = request_id(&resp);
    resp.bytes().await.unwrap();
    let row = env.log_row(&rid).await;
    let trace = row.trace_id.expect("the row names its trace");
    let sent = sent_traceparent(&m).unwrap();
    assert!(
        sent.starts_with(&format!("00-{trace}-")) && sent.ends_with("-00"),
        "{sent}"
    );
    assert!(collector.spans().is_empty(), "nothing sampled is exported");
}

#[tokio::test]
async fn the_admin_api_traces_its_requests_and_their_statements() {
    let env = Env::new().await;
    let collector = Collector::start().await;
    let settings = collector.settings();
    let extra: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let admin = crate::harness::AdminApi::start(&env, &extra).await;
    let signed = admin.signup("traced-admin@example.com").await;
    let token = signed["token"].as_str().unwrap();
    let workspace = signed["workspace"]["id"].as_str().unwrap();
    let http = reqwest::Client::new();
    let provider_key = "sk-admin-trace-canary-5e0b7d";
    let created = http
        .post(format!("{}/workspaces/{workspace}/providers", admin.base))
        .bearer_auth(token)
        .header("traceparent", client_traceparent())
        .json(
            &json!({"kind": "openai", "name": "traced", "api_key": provider_key,
                      "base_url": "http://127.0.0.1:9/v1", "models": ["gpt-4o-mini"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());

    // The request continues the client's trace: its SERVER span is named after the route's
    // template, and the statements it sent are its CLIENT children.
    let route = "POST /workspaces/{id}/providers";
    let spans = eventually(
        "the admin request's spans",
        Duration::from_secs(10),
        || async {
            let spans = collector.spans();
            let server = spans.iter().find(|s| s.kind == SERVER && s.name == route)?;
            let children = spans.iter().filter(|s| s.parent == server.span_id).count();
            (children >= 2).then_some(spans)
        },
    )
    .await;
    let server = spans
        .iter()
        .find(|s| s.kind == SERVER && s.name == route)
        .unwrap();
    assert_eq!(server.service, "perpetuo-admin");
    assert_eq!(server.trace_id, CLIENT_TRACE);
    assert_eq!(server.parent, CLIENT_PARENT);
    assert_eq!(server.str("http.request.method"), Some("POST"));
    assert_eq!(server.str("http.route"), Some("/workspaces/{id}/providers"));
    assert_eq!(
        server.str("url.path"),
        Some(format!("/workspaces/{workspace}/providers").as_str())
    );
    assert_eq!(server.int("http.response.status_code"), Some(201));
    let statements: Vec<&Exported> = spans
        .iter()
        .filter(|s| s.parent == server.span_id)
        .collect();
    for s in &statements {
        assert_eq!(s.kind, CLIENT, "{s:?}");
        assert_eq!(s.trace_id, CLIENT_TRACE);
        assert_eq!(s.str("db.system.name"), Some("postgresql"), "{s:?}");
        assert!(
            s.str("db.query.text").is_some_and(|q| !q.is_empty()),
            "{s:?}"
        );
        assert!(s.str("db.namespace").is_some(), "{s:?}");
    }
    // Access control's look-up of the caller's membership, and the entry's insert.
    assert!(
        statements.iter().any(|s| s.name.starts_with("SELECT ")),
        "{statements:#?}"
    );
    assert!(
        statements.iter().any(|s| s.name == "INSERT provider_keys"
            && s.str("db.operation.name") == Some("INSERT")
            && s.str("db.collection.name") == Some("provider_keys")),
        "{statements:#?}"
    );

    // A failed request is its status on the span; a 4xx is the client's, not an error.
    let missing = http
        .get(format!(
            "{}/workspaces/{}/providers",
            admin.base,
            uuid::Uuid::nil()
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(missing.status().is_client_error());
    let status = missing.status().as_u16();
    let refused = eventually(
        "the refused request's span",
        Duration::from_secs(10),
        || async {
            collector
                .spans()
                .into_iter()
                .find(|s| s.kind == SERVER && s.name == "GET /workspaces/{id}/providers")
        },
    )
    .await;
    assert_eq!(
        refused.int("http.response.status_code"),
        Some(i64::from(status))
    );
    assert_ne!(refused.status, 2);
    assert_eq!(
        refused.parent, "",
        "a request without traceparent starts a trace"
    );

    // Neither the provider key, the password nor the session's token is exported.
    let raw = collector.raw();
    for secret in [provider_key, "correct horse", token] {
        assert!(!raw.contains(secret), "a secret was exported");
    }
}
