//! Test harness: a running admin API over its own database, and small request helpers.

use std::path::PathBuf;

use perpetuo_admin::config::{AuthSettings, Config};
use perpetuo_admin::startup::Application;
use perpetuo_core::crypto::MasterKey;
use perpetuo_core::testing::TestDb;
use perpetuo_core::Secret;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub db: TestDb,
    pub master_key: MasterKey,
}

pub fn config(db: &TestDb, master_key: &MasterKey, allowed: &str) -> Config {
    Config {
        database_url: Secret::new(db.url.clone()),
        jwt_secret: Secret::new(JWT_SECRET.into()),
        master_key: master_key.clone(),
        master_key_previous: None,
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        gateway_addr: "127.0.0.1:8000".parse().unwrap(),
        gateway_public_url: None,
        allowed_private_upstreams: allowed.parse().unwrap(),
        cors_allowed_origins: String::new(),
        dashboard_dir: PathBuf::from("/nonexistent-dashboard"),
        jwt_ttl_seconds: 3600,
        db_pool_size: 8,
        // Tests sign up and log in many times from one address; the throttling tests
        // set their own limits.
        auth: AuthSettings {
            rate_per_ip: 0,
            rate_per_account: 0,
            ..AuthSettings::default()
        },
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with("").await
    }

    pub async fn spawn_with(allowed_private: &str) -> Self {
        Self::spawn_configured(|c| {
            c.allowed_private_upstreams = allowed_private.parse().unwrap();
        })
        .await
    }

    /// An app whose configuration `adjust` changes first.
    pub async fn spawn_configured(adjust: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::new().await.expect("test database");
        let master_key = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        let mut cfg = config(&db, &master_key, "");
        adjust(&mut cfg);
        let app = Application::build(cfg).await.expect("app builds");
        let base = format!("http://127.0.0.1:{}", app.port());
        tokio::spawn(app.run_until_stopped());
        Self {
            base,
            http: reqwest::Client::new(),
            db,
            master_key,
        }
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.raw(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.raw(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.raw(Method::PUT, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.raw(Method::DELETE, path, Some(token), None).await
    }

    /// Signs up a user and returns the whole signup response.
    pub async fn signup(&self, email: &str) -> Account {
        let (status, body) = self
            .raw(
                Method::POST,
                "/auth/signup",
                None,
                Some(json!({"email": email, "password": "correct horse"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        Account {
            token: body["token"].as_str().unwrap().to_string(),
            refresh_token: body["refresh_token"].as_str().unwrap().to_string(),
            workspace: body["workspace"]["id"].as_str().unwrap().to_string(),
            key: body["api_key"]["key"].as_str().unwrap().to_string(),
            key_id: body["api_key"]["id"].as_str().unwrap().to_string(),
            user_id: body["user"]["id"].as_str().unwrap().to_string(),
        }
    }

    pub async fn client(&self) -> deadpool_postgres::Client {
        self.db.pool.get().await.unwrap()
    }
}

pub struct Account {
    pub token: String,
    pub refresh_token: String,
    pub workspace: String,
    pub key: String,
    pub key_id: String,
    pub user_id: String,
}

/// Asserts the error shape and returns the code.
pub fn error_code(body: &Value) -> &str {
    let e = &body["error"];
    assert!(e["message"].is_string(), "no error message in {body}");
    e["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

/// The claims of a JWT, read without checking its signature.
pub fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
