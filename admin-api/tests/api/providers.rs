//! Provider entries: write-only keys, validation, SSRF policy, ordering, notifications.

use perpetuo_core::crypto::{KeyBinding, MasterKey, SealError, Sealed, AAD_BOUND, AAD_ENTRY_ID};
use perpetuo_core::db;
use perpetuo_core::provider::ProviderKind;
use perpetuo_core::testing::TestDb;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{config, error_code, TestApp};

#[tokio::test]
async fn create_update_delete_with_write_only_key() {
    let app = TestApp::spawn().await;
    let acc = app.signup("p@example.com").await;
    let base = format!("/workspaces/{}/providers", acc.workspace);
    let (status, p) = app
        .post(
            &base,
            &acc.token,
            json!({"kind": "anthropic", "name": "claude", "api_key": "sk-ant-very-secret-9876", "priority": 5,
                   "models": ["claude-sonnet-4-5", " claude-sonnet-4-5 "], "model_map": {"gpt-4o-mini": "claude-3-5-haiku-latest"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    assert_eq!(p["key_last4"], "9876");
    assert_eq!(p["kind"], "anthropic");
    assert_eq!(p["models"], json!(["claude-sonnet-4-5"]));
    assert_eq!(p["model_map"]["gpt-4o-mini"], "claude-3-5-haiku-latest");
    assert!(p["base_url"].is_null());
    assert!(!p.to_string().contains("very-secret"));
    let pid = p["id"].as_str().unwrap().to_string();

    assert_eq!(p["has_key"], true);
    assert_eq!(p["keys"].as_array().unwrap().len(), 1);
    assert_eq!(p["keys"][0]["label"], "default", "api_key is a pool of one");
    assert_eq!(p["keys"][0]["key_last4"], "9876");
    assert_eq!(p["quota"], json!({"rpm": null, "tpm": null}));

    // The database holds only sealed bytes, which open with the master key.
    let db = app.client().await;
    let row = db
        .query_one(
            "SELECT sealed_key, key_nonce, key_version, aad_version, t::text
             FROM provider_entry_keys t",
            &[],
        )
        .await
        .unwrap();
    let whole_row: String = row.get(4);
    assert!(!whole_row.contains("very-secret"));
    let entry_row: String = db
        .query_one("SELECT t::text FROM provider_keys t", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!entry_row.contains("very-secret"));
    let sealed = Sealed {
        ciphertext: row.get(0),
        nonce: row.get(1),
        version: row.get(2),
        aad_version: row.get(3),
    };
    assert_eq!(sealed.aad_version, AAD_BOUND);
    let id = uuid::Uuid::parse_str(&pid).unwrap();
    let binding = KeyBinding {
        entry_id: id,
        workspace_id: Uuid::parse_str(&acc.workspace).unwrap(),
        kind: ProviderKind::Anthropic,
        base_url: None,
    };
    assert_eq!(
        app.master_key.open(&sealed, &binding).unwrap().expose(),
        "sk-ant-very-secret-9876"
    );

    let (status, second) = app
        .post(
            &base,
            &acc.token,
            json!({"kind": "openai", "name": "oai", "api_key": "sk-o-1111", "priority": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, list) = app.get(&base, &acc.token).await;
    let names: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["oai", "claude"], "ordered by priority");
    assert!(!list.to_string().contains("sk-o-1111"));

    // Partial update keeps other fields; a new key replaces the old one.
    let (status, upd) = app
        .put(
            &format!("{base}/{pid}"),
            &acc.token,
            json!({"enabled": false, "api_key": "sk-ant-new-key-5555"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{upd}");
    assert_eq!(upd["enabled"], false);
    assert_eq!(upd["key_last4"], "5555");
    assert_eq!(upd["priority"], 5);
    assert_eq!(upd["name"], "claude");
    let (status, upd) = app
        .put(&format!("{base}/{pid}"), &acc.token, json!({"priority": 0}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(upd["key_last4"], "5555");

    // Names are unique per workspace.
    let (status, body) = app
        .put(
            &format!("{base}/{}", second["id"].as_str().unwrap()),
            &acc.token,
            json!({"name": "claude"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let (status, _) = app.delete(&format!("{base}/{pid}"), &acc.token).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.delete(&format!("{base}/{pid}"), &acc.token).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = app.get(&base, &acc.token).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn validation_and_upstream_policy() {
    let app = TestApp::spawn().await;
    let acc = app.signup("v@example.com").await;
    let base = format!("/workspaces/{}/providers", acc.workspace);
    let cases = [
        (json!({"name": "x", "api_key": "k"}), "kind"),
        (
            json!({"kind": "bedrock", "name": "x", "api_key": "k"}),
            "kind",
        ),
        (json!({"kind": "openai", "api_key": "k"}), "name"),
        (json!({"kind": "openai", "name": "x"}), "api_key"),
        (
            json!({"kind": "openai_compatible", "name": "x", "api_key": "k"}),
            "base_url",
        ),
        (
            json!({"kind": "openai_compatible", "name": "x", "api_key": "k", "base_url": "http://api.example.com/v1"}),
            "base_url",
        ),
        (
            json!({"kind": "openai_compatible", "name": "x", "api_key": "k", "base_url": "https://127.0.0.1/v1"}),
            "base_url",
        ),
        (
            json!({"kind": "openai_compatible", "name": "x", "api_key": "k", "base_url": "https://169.254.169.254/latest"}),
            "base_url",
        ),
        (
            json!({"kind": "openai_compatible", "name": "x", "api_key": "k", "base_url": "https://10.0.0.7/v1"}),
            "base_url",
        ),
        (
            json!({"kind": "openai_compatible", "name": "x", "api_key": "k", "base_url": "https://localhost./v1"}),
            "base_url",
        ),
        (
            json!({"kind": "openai_compatible", "name": "x", "api_key": "k", "base_url": "https://2130706433/v1"}),
            "base_url",
        ),
        (
            json!({"kind": "openai_compatible", "name": "x", "api_key": "k", "base_url": "https://[::ffff:10.0.0.1]/v1"}),
            "base_url",
        ),
        (
            json!({"kind": "openai", "name": "x", "api_key": "k", "priority": 5_000_000}),
            "priority",
        ),
        (
            json!({"kind": "openai", "name": "x", "api_key": "k", "models": [""]}),
            "models",
        ),
    ];
    for (body, field) in cases {
        let (status, resp) = app.post(&base, &acc.token, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {resp}");
        assert_eq!(error_code(&resp), "validation_error");
        assert!(
            resp["error"]["fields"][field].is_string(),
            "{field} not named for {body}: {resp}"
        );
    }
    // A refused private address names the setting that allows it.
    let (_, resp) = app
        .post(&base, &acc.token, json!({"kind": "openai_compatible", "name": "x", "api_key": "k", "base_url": "https://127.0.0.1/v1"}))
        .await;
    assert!(
        resp["error"]["fields"]["base_url"]
            .as_str()
            .unwrap()
            .contains("ALLOWED_PRIVATE_UPSTREAMS"),
        "{resp}"
    );
    let (status, body) = app
        .post(&base, &acc.token, json!({"kind": "openai_compatible", "name": "groq", "api_key": "k", "base_url": "https://api.groq.example/openai/v1/"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["base_url"], "https://api.groq.example/openai/v1");
    let (_, list) = app.get(&base, &acc.token).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "refused entries must not be stored"
    );
}

#[tokio::test]
async fn operator_allowed_private_ranges() {
    let app = TestApp::spawn_with("127.0.0.0/8,169.254.0.0/16").await;
    let acc = app.signup("o@example.com").await;
    let base = format!("/workspaces/{}/providers", acc.workspace);
    let (status, body) = app
        .post(&base, &acc.token, json!({"kind": "openai_compatible", "name": "vllm", "api_key": "k", "base_url": "http://127.0.0.1:8001/v1"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = app
        .post(&base, &acc.token, json!({"kind": "openai_compatible", "name": "meta", "api_key": "k", "base_url": "http://169.254.169.254/"}))
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "metadata range is never allowed"
    );
    let (status, _) = app
        .post(&base, &acc.token, json!({"kind": "openai_compatible", "name": "lan", "api_key": "k", "base_url": "http://192.168.1.9/v1"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "only the listed ranges");
}

/// Host names are judged by the addresses they resolve to: `localhost` and a dotless name
/// (as a compose service is called) are accepted, over plain HTTP too, where
/// ALLOWED_PRIVATE_UPSTREAMS lists their addresses, and refused elsewhere; a name that is
/// acceptable only for its addresses and does not resolve is a 400 naming the field.
#[tokio::test]
async fn local_host_names_are_accepted_where_their_addresses_are_allowed() {
    let hosts = "127.0.0.1 ollama\n10.9.9.9 vllm-box\n";
    let app = TestApp::spawn_resolving("127.0.0.1/32", hosts).await;
    let acc = app.signup("names@example.com").await;
    let base = format!("/workspaces/{}/providers", acc.workspace);
    for (name, url) in [
        ("local", "http://localhost:9000/v1"),
        ("ollama", "http://ollama:11434/v1"),
        ("tls", "https://ollama:8443/v1"),
    ] {
        let (status, body) = app
            .post(
                &base,
                &acc.token,
                json!({"kind": "openai_compatible", "name": name, "api_key": "k", "base_url": url}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{url}: {body}");
        assert_eq!(body["base_url"], url);
    }
    let refused = |resp: &serde_json::Value| {
        resp["error"]["fields"]["base_url"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    // A name resolving outside the allowed ranges.
    let (status, resp) = app
        .post(&base, &acc.token, json!({"kind": "openai_compatible", "name": "lan", "api_key": "k", "base_url": "http://vllm-box:8000/v1"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
    assert!(
        refused(&resp).contains("ALLOWED_PRIVATE_UPSTREAMS"),
        "{resp}"
    );
    // A name that must resolve and does not.
    let (status, resp) = app
        .post(&base, &acc.token, json!({"kind": "openai_compatible", "name": "gone", "api_key": "k", "base_url": "http://no-such-service.invalid:8000/v1"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
    assert_eq!(error_code(&resp), "validation_error");
    assert!(refused(&resp).contains("does not resolve"), "{resp}");

    // Without the range, the same names are refused and told what to set.
    let closed = TestApp::spawn_resolving("", hosts).await;
    let acc = closed.signup("closed@example.com").await;
    let base = format!("/workspaces/{}/providers", acc.workspace);
    for url in ["http://localhost:9000/v1", "http://ollama:11434/v1"] {
        let (status, resp) = closed
            .post(
                &base,
                &acc.token,
                json!({"kind": "openai_compatible", "name": "x", "api_key": "k", "base_url": url}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {resp}");
        assert!(
            refused(&resp).contains("ALLOWED_PRIVATE_UPSTREAMS"),
            "{resp}"
        );
    }
}

#[tokio::test]
async fn writes_notify_gateways() {
    let app = TestApp::spawn().await;
    let acc = app.signup("n@example.com").await;
    let (client, mut conn) = tokio_postgres::connect(&app.db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        use futures::StreamExt;
        while let Some(Ok(msg)) = stream.next().await {
            if let tokio_postgres::AsyncMessage::Notification(n) = msg {
                let _ = tx.send(n.payload().to_string());
            }
        }
    });
    client
        .batch_execute("LISTEN perpetuo_invalidate")
        .await
        .unwrap();

    let (_, p) = app
        .post(
            &format!("/workspaces/{}/providers", acc.workspace),
            &acc.token,
            json!({"kind": "openai", "name": "n", "api_key": "k"}),
        )
        .await;
    let msg: serde_json::Value = serde_json::from_str(&recv(&mut rx).await).unwrap();
    assert_eq!(msg["table"], "provider_keys");
    assert_eq!(msg["workspace_id"], acc.workspace.as_str());
    app.put(
        &format!(
            "/workspaces/{}/providers/{}",
            acc.workspace,
            p["id"].as_str().unwrap()
        ),
        &acc.token,
        json!({"priority": 3}),
    )
    .await;
    let msg: serde_json::Value = serde_json::from_str(&recv(&mut rx).await).unwrap();
    assert_eq!(msg["table"], "provider_keys");
    // A change of one pool key reaches the gateways as a change of its entry.
    let (status, _) = app
        .post(
            &format!(
                "/workspaces/{}/providers/{}/keys",
                acc.workspace,
                p["id"].as_str().unwrap()
            ),
            &acc.token,
            json!({"key": "k2", "label": "second"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let msg: serde_json::Value = serde_json::from_str(&recv(&mut rx).await).unwrap();
    assert_eq!(msg["table"], "provider_keys");
    assert_eq!(msg["workspace_id"], acc.workspace.as_str());

    app.post(
        &format!(
            "/workspaces/{}/api-keys/{}/revoke",
            acc.workspace, acc.key_id
        ),
        &acc.token,
        json!({}),
    )
    .await;
    let msg: serde_json::Value = serde_json::from_str(&recv(&mut rx).await).unwrap();
    assert_eq!(msg["table"], "api_keys");
    let expected = perpetuo_core::apikey::KeyHash::of(&acc.key).to_hex();
    assert_eq!(msg["key_hash"], expected.as_str());
}

async fn recv(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
        .await
        .expect("notification within 5 s")
        .expect("listener alive")
}

/// The entry's first key as the gateway reads it, and whether it opens there ("" for an
/// entry without keys).
async fn opens(app_key: &MasterKey, db: &TestDb, ws: Uuid, id: Uuid) -> Result<String, SealError> {
    let client = db.pool.get().await.unwrap();
    let row = db::providers::get(&client, ws, id).await.unwrap().unwrap();
    let keys = db::entry_keys::list_for_entry(&client, ws, id)
        .await
        .unwrap();
    match keys.first() {
        Some(k) => app_key
            .open(&k.sealed, &row.binding())
            .map(|k| k.expose().clone()),
        None => Ok(String::new()),
    }
}

#[tokio::test]
async fn moving_a_key_to_another_server_requires_the_key() {
    let app = TestApp::spawn().await;
    let acc = app.signup("move@example.com").await;
    let ws = Uuid::parse_str(&acc.workspace).unwrap();
    let base = format!("/workspaces/{}/providers", acc.workspace);
    let (status, p) = app
        .post(
            &base,
            &acc.token,
            json!({"kind": "openai_compatible", "name": "groq", "api_key": "sk-groq-1234",
                                         "base_url": "https://api.groq.example/openai/v1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    let url = format!("{base}/{}", p["id"].as_str().unwrap());
    let id = Uuid::parse_str(p["id"].as_str().unwrap()).unwrap();

    for body in [
        json!({"base_url": "https://collector.attacker.example/v1"}),
        json!({"base_url": null, "kind": "openai"}),
        json!({"kind": "openai"}),
    ] {
        let (status, resp) = app.put(&url, &acc.token, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {resp}");
        assert_eq!(error_code(&resp), "api_key_required", "{resp}");
        assert!(resp["error"]["fields"]["api_key"].is_string(), "{resp}");
    }
    let (_, list) = app.get(&base, &acc.token).await;
    assert_eq!(
        list["data"][0]["base_url"], "https://api.groq.example/openai/v1",
        "a refused change changes nothing"
    );

    // Other fields, and the same base URL spelled again, need no key.
    let (status, resp) = app
        .put(
            &url,
            &acc.token,
            json!({"priority": 7, "name": "groq-2",
                                       "base_url": "https://api.groq.example/openai/v1/"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(
        opens(&app.master_key, &app.db, ws, id).await.unwrap(),
        "sk-groq-1234"
    );

    // With the key, the entry moves and its key is sealed for the new place.
    let (status, resp) = app
        .put(
            &url,
            &acc.token,
            json!({"base_url": "https://api.other.example/v1", "api_key": "sk-other-9999"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["base_url"], "https://api.other.example/v1");
    assert_eq!(resp["key_last4"], "9999");
    assert_eq!(
        opens(&app.master_key, &app.db, ws, id).await.unwrap(),
        "sk-other-9999"
    );
}

#[tokio::test]
async fn an_openai_compatible_server_that_needs_no_key_gets_an_entry_without_one() {
    let app = TestApp::spawn().await;
    let acc = app.signup("keyless@example.com").await;
    let ws = Uuid::parse_str(&acc.workspace).unwrap();
    let base = format!("/workspaces/{}/providers", acc.workspace);
    let (status, p) = app
        .post(
            &base,
            &acc.token,
            json!({"kind": "openai_compatible", "name": "ollama",
                   "base_url": "https://ollama.example/v1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    assert_eq!(p["has_key"], false);
    assert_eq!(p["key_last4"], "");
    assert_eq!(p["keys"], json!([]));
    let id = Uuid::parse_str(p["id"].as_str().unwrap()).unwrap();
    let url = format!("{base}/{id}");
    assert_eq!(opens(&app.master_key, &app.db, ws, id).await.unwrap(), "");

    // Other kinds need a key, and an empty one is not "no key".
    for (body, why) in [
        (
            json!({"kind": "anthropic", "name": "c"}),
            "only openai_compatible",
        ),
        (
            json!({"kind": "openai", "name": "o", "api_key": null}),
            "only openai_compatible",
        ),
        (
            json!({"kind": "openai_compatible", "name": "e", "api_key": " ",
                   "base_url": "https://e.example/v1"}),
            "leave it out",
        ),
    ] {
        let (status, resp) = app.post(&base, &acc.token, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {resp}");
        let msg = resp["error"]["fields"]["api_key"]
            .as_str()
            .unwrap_or_default();
        assert!(msg.contains(why), "{body} → {resp}");
    }
    let (status, resp) = app.put(&url, &acc.token, json!({"kind": "openai"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
    assert!(resp["error"]["fields"]["api_key"].is_string(), "{resp}");

    // Without a key there is nothing to protect: the entry moves without one.
    let (status, resp) = app
        .put(
            &url,
            &acc.token,
            json!({"base_url": "https://other.example/v1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["has_key"], false);
    assert_eq!(opens(&app.master_key, &app.db, ws, id).await.unwrap(), "");

    // A key is added, then removed again with null.
    let (status, resp) = app
        .put(&url, &acc.token, json!({"api_key": "sk-local-4321"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(
        (resp["has_key"].clone(), resp["key_last4"].clone()),
        (json!(true), json!("4321"))
    );
    let (status, resp) = app.put(&url, &acc.token, json!({"api_key": null})).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_eq!(resp["has_key"], false);
    assert_eq!(opens(&app.master_key, &app.db, ws, id).await.unwrap(), "");
}

#[tokio::test]
async fn weights_share_a_priority_and_zero_is_standby() {
    let app = TestApp::spawn().await;
    let acc = app.signup("weights@example.com").await;
    let base = format!("/workspaces/{}/providers", acc.workspace);
    let (status, p) = app
        .post(
            &base,
            &acc.token,
            json!({"kind": "openai", "name": "a", "api_key": "sk-a"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    assert_eq!(p["weight"], 1, "the default weight");
    let url = format!("{base}/{}", p["id"].as_str().unwrap());
    let (status, p) = app.put(&url, &acc.token, json!({"weight": 0})).await;
    assert_eq!((status, p["weight"].clone()), (StatusCode::OK, json!(0)));
    let (status, p) = app.put(&url, &acc.token, json!({"name": "a2"})).await;
    assert_eq!(
        (status, p["weight"].clone()),
        (StatusCode::OK, json!(0)),
        "kept"
    );
    for bad in [json!(-1), json!(1001)] {
        let (status, body) = app.put(&url, &acc.token, json!({"weight": bad})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"]["fields"]["weight"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn a_sealed_key_moved_in_the_database_does_not_open() {
    let app = TestApp::spawn().await;
    let acc = app.signup("tamper@example.com").await;
    let other = app.signup("tamper2@example.com").await;
    let ws = Uuid::parse_str(&acc.workspace).unwrap();
    let ws2 = Uuid::parse_str(&other.workspace).unwrap();
    let create = |token: String, ws: String, name: &'static str| {
        let app = &app;
        async move {
            let (status, p) = app
                .post(&format!("/workspaces/{ws}/providers"), &token,
                      json!({"kind": "openai_compatible", "name": name, "api_key": format!("sk-{name}"),
                             "base_url": "https://api.groq.example/v1"}))
                .await;
            assert_eq!(status, StatusCode::CREATED, "{p}");
            Uuid::parse_str(p["id"].as_str().unwrap()).unwrap()
        }
    };
    let a = create(acc.token.clone(), acc.workspace.clone(), "a").await;
    let b = create(acc.token.clone(), acc.workspace.clone(), "b").await;
    let c = create(other.token.clone(), other.workspace.clone(), "c").await;
    let db = app.client().await;

    // Another base URL, another kind: the binding no longer matches.
    db.execute(
        "UPDATE provider_keys SET base_url = 'https://collector.attacker.example/v1' WHERE id = $1",
        &[&a],
    )
    .await
    .unwrap();
    assert_eq!(
        opens(&app.master_key, &app.db, ws, a).await,
        Err(SealError::Open)
    );
    db.execute(
        "UPDATE provider_keys SET kind = 'openai', base_url = NULL WHERE id = $1",
        &[&b],
    )
    .await
    .unwrap();
    assert_eq!(
        opens(&app.master_key, &app.db, ws, b).await,
        Err(SealError::Open)
    );
    // Another workspace's key, same kind and base URL, given a's sealed key.
    db.execute(
        "UPDATE provider_entry_keys SET (sealed_key, key_nonce, aad_version) =
             (SELECT sealed_key, key_nonce, aad_version FROM provider_entry_keys
              WHERE entry_id = $1)
         WHERE entry_id = $2",
        &[&a, &c],
    )
    .await
    .unwrap();
    assert_eq!(
        opens(&app.master_key, &app.db, ws2, c).await,
        Err(SealError::Open)
    );
}

/// Inserts an entry sealed the old way (associated data = entry id only).
async fn old_format_entry(db: &TestDb, key: &MasterKey, ws: Uuid, name: &str) -> Uuid {
    let id = db::providers::new_id();
    let base_url = Some("https://api.groq.example/v1".to_string());
    let binding = KeyBinding {
        entry_id: id,
        workspace_id: ws,
        kind: ProviderKind::OpenaiCompatible,
        base_url: base_url.as_deref(),
    };
    let sealed = key
        .seal_as(&format!("sk-{name}"), &binding, AAD_ENTRY_ID)
        .unwrap();
    let row = db::providers::NewProvider {
        id,
        workspace_id: ws,
        kind: ProviderKind::OpenaiCompatible,
        name: name.into(),
        base_url,
        priority: 1,
        weight: 1,
        enabled: true,
        models: vec![],
        model_map: Default::default(),
        quota_rpm: None,
        quota_tpm: None,
    };
    let client = db.pool.get().await.unwrap();
    db::providers::insert(&client, &row).await.unwrap();
    let key = db::entry_keys::NewEntryKey {
        id: db::entry_keys::new_id(),
        label: "default".into(),
        weight: 1,
        enabled: true,
        sealed,
        key_last4: "xxxx".into(),
    };
    db::entry_keys::insert(&client, ws, id, &key).await.unwrap();
    id
}

async fn aad_versions(db: &TestDb) -> Vec<i16> {
    let client = db.pool.get().await.unwrap();
    client
        .query(
            "SELECT aad_version FROM provider_entry_keys ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn workspace(db: &TestDb, email: &str) -> Uuid {
    let mut client = db.pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let user = db::users::insert(
        &tx,
        &perpetuo_core::email::Email::parse(email).unwrap(),
        "x",
    )
    .await
    .unwrap();
    let ws = db::workspaces::create(&tx, "w", user.id).await.unwrap();
    tx.commit().await.unwrap();
    ws.id
}

#[tokio::test]
async fn old_format_rows_are_resealed_at_start_and_by_migrate() {
    let db = TestDb::new().await.unwrap();
    let key = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
    let ws = workspace(&db, "old@example.com").await;
    let a = old_format_entry(&db, &key, ws, "a").await;
    let b = old_format_entry(&db, &key, ws, "b").await;
    // Before any re-seal, the old rows open (the gateway reads them the same way).
    assert_eq!(opens(&key, &db, ws, a).await.unwrap(), "sk-a");
    assert_eq!(aad_versions(&db).await, vec![AAD_ENTRY_ID, AAD_ENTRY_ID]);

    // `perpetuo-admin migrate` re-seals them; a second run has nothing to do.
    let cfg = config(&db, &key, "");
    perpetuo_admin::startup::migrate_only(&cfg).await.unwrap();
    assert_eq!(aad_versions(&db).await, vec![AAD_BOUND, AAD_BOUND]);
    assert_eq!(opens(&key, &db, ws, a).await.unwrap(), "sk-a");
    assert_eq!(opens(&key, &db, ws, b).await.unwrap(), "sk-b");
    let mut client = db.pool.get().await.unwrap();
    assert_eq!(
        db::entry_keys::reseal_old_formats(&mut client, &key)
            .await
            .unwrap(),
        0
    );
    drop(client);

    // The admin API does the same when it starts.
    let c = old_format_entry(&db, &key, ws, "c").await;
    let app = perpetuo_admin::startup::Application::build(config(&db, &key, ""))
        .await
        .unwrap();
    drop(app);
    assert_eq!(aad_versions(&db).await, vec![AAD_BOUND; 3]);
    assert_eq!(opens(&key, &db, ws, c).await.unwrap(), "sk-c");
}

#[tokio::test]
async fn reseal_is_all_or_nothing() {
    let db = TestDb::new().await.unwrap();
    let key = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
    let ws = workspace(&db, "atomic@example.com").await;
    old_format_entry(&db, &key, ws, "a").await;
    let b = old_format_entry(&db, &key, ws, "b").await;
    let client = db.pool.get().await.unwrap();
    client
        .execute(
            "UPDATE provider_entry_keys SET sealed_key = '\\x00' || sealed_key WHERE entry_id = $1",
            &[&b],
        )
        .await
        .unwrap();
    drop(client);
    let err = perpetuo_admin::startup::migrate_only(&config(&db, &key, ""))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&b.to_string()), "{err}");
    assert_eq!(aad_versions(&db).await, vec![AAD_ENTRY_ID, AAD_ENTRY_ID]);
    // With another master key nothing opens and nothing changes either.
    let other = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
    assert!(
        perpetuo_admin::startup::migrate_only(&config(&db, &other, ""))
            .await
            .is_err()
    );
    assert_eq!(aad_versions(&db).await, vec![AAD_ENTRY_ID, AAD_ENTRY_ID]);
}

#[tokio::test]
async fn names_and_models_must_be_printable() {
    let app = TestApp::spawn().await;
    let acc = app.signup("print@example.com").await;
    let base = format!("/workspaces/{}/providers", acc.workspace);
    let long_model = "m".repeat(257);
    let cases = [
        (
            json!({"kind": "openai", "name": "a\r\nx-injected: 1", "api_key": "k"}),
            "name",
        ),
        (
            json!({"kind": "openai", "name": "nul\u{0}", "api_key": "k"}),
            "name",
        ),
        (
            json!({"kind": "openai", "name": "tab\tname", "api_key": "k"}),
            "name",
        ),
        (
            json!({"kind": "openai", "name": "del\u{7f}", "api_key": "k"}),
            "name",
        ),
        (
            json!({"kind": "openai", "name": "bidi\u{202e}", "api_key": "k"}),
            "name",
        ),
        (
            json!({"kind": "openai", "name": "zero\u{200b}width", "api_key": "k"}),
            "name",
        ),
        (
            json!({"kind": "openai", "name": "line\u{2028}sep", "api_key": "k"}),
            "name",
        ),
        (
            json!({"kind": "openai", "name": "n".repeat(101), "api_key": "k"}),
            "name",
        ),
        (
            json!({"kind": "openai", "name": "x", "api_key": "sk-a\r\nb"}),
            "api_key",
        ),
        (
            json!({"kind": "openai", "name": "x", "api_key": "sk a"}),
            "api_key",
        ),
        (
            json!({"kind": "openai", "name": "x", "api_key": "k", "models": ["gpt\n4"]}),
            "models",
        ),
        (
            json!({"kind": "openai", "name": "x", "api_key": "k", "models": [long_model]}),
            "models",
        ),
        (
            json!({"kind": "openai", "name": "x", "api_key": "k", "model_map": {"a\u{0}": "b"}}),
            "model_map",
        ),
        (
            json!({"kind": "openai", "name": "x", "api_key": "k", "model_map": {"a": "b\rc"}}),
            "model_map",
        ),
        (
            json!({"kind": "openai", "name": "x", "api_key": "k", "model_map": {"a": "m".repeat(257)}}),
            "model_map",
        ),
    ];
    for (body, field) in cases {
        let (status, resp) = app.post(&base, &acc.token, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {resp}");
        assert_eq!(error_code(&resp), "validation_error");
        assert!(
            resp["error"]["fields"][field].is_string(),
            "{field} not named for {body}: {resp}"
        );
    }
    // Unicode letters, punctuation and inner spaces are fine; limits are inclusive.
    let (status, p) = app
        .post(&base, &acc.token, json!({"kind": "openai", "name": "Mistral – prod ü", "api_key": "k",
                                         "models": ["m".repeat(256)], "model_map": {"gpt-4o": "m".repeat(256)}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    // Updates are checked the same way.
    let (status, resp) = app
        .put(
            &format!("{base}/{}", p["id"].as_str().unwrap()),
            &acc.token,
            json!({"name": "x\ny"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{resp}");
    assert!(resp["error"]["fields"]["name"].is_string());
}
