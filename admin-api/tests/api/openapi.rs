//! The OpenAPI document's request bodies: every field a handler requires is required and
//! not nullable, operation by operation; and the log listing's paging as it is served.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::TestApp;

/// Required fields of each operation's request body; every operation with a body is here.
const REQUIRED: &[(&str, &str, &[&str])] = &[
    ("post", "/auth/signup", &["email", "password"]),
    ("post", "/auth/login", &["email", "password"]),
    ("post", "/auth/refresh", &["refresh_token"]),
    (
        "post",
        "/auth/password",
        &["current_password", "new_password"],
    ),
    ("post", "/auth/password-reset", &["email"]),
    (
        "post",
        "/auth/password-reset/confirm",
        &["token", "new_password"],
    ),
    ("post", "/auth/verify-email", &["token"]),
    ("post", "/invitations/accept", &["token"]),
    ("post", "/workspaces", &["name"]),
    ("put", "/workspaces/{id}", &["name"]),
    ("patch", "/workspaces/{id}", &[]),
    ("post", "/workspaces/{id}/providers", &["kind", "name"]),
    ("put", "/workspaces/{id}/providers/{pid}", &[]),
    (
        "post",
        "/workspaces/{id}/providers/{pid}/keys",
        &["key", "label"],
    ),
    (
        "patch",
        "/workspaces/{id}/providers/{pid}/keys/{key_id}",
        &[],
    ),
    ("post", "/workspaces/{id}/api-keys", &["name"]),
    ("put", "/workspaces/{id}/api-keys/{kid}", &[]),
    ("post", "/workspaces/{id}/invitations", &["email", "role"]),
    ("put", "/workspaces/{id}/members/{uid}", &["role"]),
    ("post", "/workspaces/{id}/transfer", &["user_id"]),
];

/// The schema `r` points at, following `$ref`.
fn resolve<'a>(doc: &'a Value, r: &'a Value) -> &'a Value {
    match r["$ref"].as_str() {
        Some(path) => {
            let name = path.trim_start_matches("#/components/schemas/");
            &doc["components"]["schemas"][name]
        }
        None => r,
    }
}

/// Required field names and properties of an object schema, through `allOf`.
fn fields(
    doc: &Value,
    schema: &Value,
    required: &mut Vec<String>,
    props: &mut Vec<(String, Value)>,
) {
    let schema = resolve(doc, schema);
    if let Some(parts) = schema["allOf"].as_array() {
        for part in parts {
            fields(doc, part, required, props);
        }
    }
    for r in schema["required"].as_array().into_iter().flatten() {
        required.push(r.as_str().unwrap().to_string());
    }
    for (name, p) in schema["properties"].as_object().into_iter().flatten() {
        props.push((name.clone(), p.clone()));
    }
}

fn nullable(prop: &Value) -> bool {
    let null = Value::String("null".into());
    prop["type"] == null
        || prop["type"].as_array().is_some_and(|t| t.contains(&null))
        || prop["nullable"] == true
        || prop["oneOf"]
            .as_array()
            .is_some_and(|alts| alts.iter().any(|a| a["type"] == null))
}

#[tokio::test]
async fn required_request_fields_are_required_and_not_nullable() {
    let app = TestApp::spawn().await;
    let (_, doc) = app.raw(Method::GET, "/openapi.json", None, None).await;
    let mut seen = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(body) = op.get("requestBody") else {
                continue;
            };
            seen.push((method.clone(), path.clone()));
            let &(_, _, expected) = REQUIRED
                .iter()
                .find(|(m, p, _)| m == method && p == path)
                .unwrap_or_else(|| {
                    panic!("{method} {path} has a request body this test does not know")
                });
            assert_eq!(body["required"], true, "{method} {path}: the body itself");
            let schema = &body["content"]["application/json"]["schema"];
            let (mut required, mut props) = (Vec::new(), Vec::new());
            fields(&doc, schema, &mut required, &mut props);
            required.sort();
            let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
            want.sort();
            assert_eq!(required, want, "{method} {path}");
            for field in expected {
                let (_, prop) = props
                    .iter()
                    .find(|(n, _)| n == field)
                    .unwrap_or_else(|| panic!("{method} {path}: no property {field}"));
                assert!(
                    !nullable(prop),
                    "{method} {path}: {field} is nullable: {prop}"
                );
                assert!(prop["type"].is_string(), "{method} {path}: {field}: {prop}");
            }
        }
    }
    assert_eq!(
        seen.len(),
        REQUIRED.len(),
        "operations with a body: {seen:?}"
    );

    // Signup documents its closed state.
    let signup = &doc["paths"]["/auth/signup"]["post"]["responses"]["403"];
    assert!(
        signup["description"]
            .as_str()
            .unwrap()
            .contains("signup_disabled"),
        "{signup}"
    );
    let meta = &doc["components"]["schemas"]["Meta"];
    assert_eq!(
        meta["properties"]["signup_enabled"]["type"], "boolean",
        "{meta}"
    );
    assert!(meta["required"]
        .as_array()
        .unwrap()
        .contains(&"signup_enabled".into()));
}

/// The log listing documents its paging as the handler does it: the cursor and count
/// parameters, `page` deprecated, the bounds enforced, and answer fields that are always
/// present and null when not given.
#[tokio::test]
async fn the_log_listing_documents_cursor_paging() {
    let app = TestApp::spawn().await;
    let (_, doc) = app.raw(Method::GET, "/openapi.json", None, None).await;
    let op = &doc["paths"]["/workspaces/{id}/logs"]["get"];
    let param = |name: &str| {
        op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name && p["in"] == "query")
            .unwrap_or_else(|| panic!("no query parameter {name}"))
            .clone()
    };
    assert_eq!(param("cursor")["schema"]["type"], "string");
    assert_eq!(param("cursor")["schema"]["maxLength"], 64);
    assert_eq!(param("count")["schema"]["type"], "boolean");
    assert_eq!(param("limit")["schema"]["minimum"], 1);
    assert_eq!(param("limit")["schema"]["maximum"], 200);
    assert_eq!(param("page")["deprecated"], true);
    assert!(param("cursor").get("deprecated").is_none());

    let answer = resolve(
        &doc,
        &op["responses"]["200"]["content"]["application/json"]["schema"],
    );
    let (mut required, mut props) = (Vec::new(), Vec::new());
    fields(&doc, answer, &mut required, &mut props);
    for name in [
        "data",
        "limit",
        "next_cursor",
        "prev_cursor",
        "total",
        "page",
    ] {
        assert!(required.iter().any(|r| r == name), "{name} not required");
    }
    for (name, prop) in &props {
        let may_be_null = ["next_cursor", "prev_cursor", "total", "page"].contains(&name.as_str());
        assert_eq!(nullable(prop), may_be_null, "{name}: {prop}");
    }
    let page = &props.iter().find(|(n, _)| n == "page").unwrap().1;
    assert_eq!(page["deprecated"], true);
}

/// The pool of keys as documented: at most 32 in a body, strict key and quota bodies, and
/// answers that carry the keys, the quota and each key's status.
#[tokio::test]
async fn key_pools_and_quotas_are_documented() {
    let app = TestApp::spawn().await;
    let (_, doc) = app.raw(Method::GET, "/openapi.json", None, None).await;
    let schemas = &doc["components"]["schemas"];
    for body in ["ProviderInput", "ProviderCreate"] {
        let keys = &schemas[body]["properties"]["keys"];
        assert_eq!(keys["maxItems"], 32, "{body}: {keys}");
        assert!(
            schemas[body]["properties"]["quota"].is_object(),
            "{body} has no quota"
        );
    }
    assert!(schemas["ProviderCreate"]["description"]
        .as_str()
        .unwrap()
        .contains("`keys`"));
    for strict in ["KeyInput", "NewKeyInput", "KeyPatch", "QuotaInput"] {
        assert_eq!(
            schemas[strict]["additionalProperties"], false,
            "{strict}: {}",
            schemas[strict]
        );
    }
    let (mut required, mut props) = (Vec::new(), Vec::new());
    fields(&doc, &schemas["ProviderDto"], &mut required, &mut props);
    for name in ["keys", "quota", "key_last4", "has_key"] {
        assert!(required.iter().any(|r| r == name), "ProviderDto.{name}");
    }
    let (mut required, mut props) = (Vec::new(), Vec::new());
    fields(&doc, &schemas["KeyStatusDto"], &mut required, &mut props);
    required.sort();
    assert_eq!(
        required,
        [
            "breaker",
            "gateways",
            "remaining_requests",
            "remaining_tokens",
            "requests_24h",
            "reset_at",
            "share"
        ]
    );
    let list = &doc["paths"]["/workspaces/{id}/providers/{pid}/keys"]["get"];
    assert_eq!(list["x-required-role"], "member");
    for (method, path) in [
        ("post", "/workspaces/{id}/providers/{pid}/keys"),
        ("patch", "/workspaces/{id}/providers/{pid}/keys/{key_id}"),
        ("delete", "/workspaces/{id}/providers/{pid}/keys/{key_id}"),
    ] {
        assert_eq!(
            doc["paths"][path][method]["x-required-role"], "admin",
            "{method} {path}"
        );
    }
    let (mut required, mut props) = (Vec::new(), Vec::new());
    fields(&doc, &schemas["LogDto"], &mut required, &mut props);
    for name in ["provider_key_id", "provider_key_label", "skipped"] {
        assert!(required.iter().any(|r| r == name), "LogDto.{name}");
        let prop = &props.iter().find(|(n, _)| n == name).unwrap().1;
        assert!(nullable(prop), "LogDto.{name}: {prop}");
    }
}
