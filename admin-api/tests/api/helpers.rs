//! Test harness: a running admin API over its own database, and small request helpers.

use std::path::PathBuf;

use perpetuo_admin::config::{AuthSettings, Config};
use perpetuo_admin::startup::Application;
use perpetuo_admin::teams::TeamSettings;
use perpetuo_core::crypto::MasterKey;
use perpetuo_core::dns::Resolver;
use perpetuo_core::testing::{eventually, TestDb};
use perpetuo_core::Secret;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub db: TestDb,
    pub master_key: MasterKey,
    /// The server's password hasher, to count its work.
    pub hasher: perpetuo_core::password::Hasher,
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
        trace_url_template: None,
        allowed_private_upstreams: allowed.parse().unwrap(),
        cors_allowed_origins: String::new(),
        trusted_proxies: Default::default(),
        dashboard_dir: PathBuf::from("/nonexistent-dashboard"),
        jwt_ttl_seconds: 3600,
        db_pool_size: 8,
        db_statement_timeout: perpetuo_core::db::StatementTimeout::DEFAULT,
        // Tests sign up and log in many times from one address; the throttling tests
        // set their own limits.
        auth: AuthSettings {
            rate_per_ip: 0,
            rate_per_account: 0,
            ..AuthSettings::default()
        },
        teams: TeamSettings::default(),
        tracing: Default::default(),
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
        Self::spawn_with_resolver(adjust, Resolver::from_system()).await
    }

    /// An app allowing `allowed_private` whose resolver also knows the names of `hosts`
    /// (`/etc/hosts` lines).
    pub async fn spawn_resolving(allowed_private: &str, hosts: &str) -> Self {
        Self::spawn_with_resolver(
            |c| c.allowed_private_upstreams = allowed_private.parse().unwrap(),
            Resolver::from_system_with_hosts(hosts),
        )
        .await
    }

    async fn spawn_with_resolver(adjust: impl FnOnce(&mut Config), resolver: Resolver) -> Self {
        let db = TestDb::new().await.expect("test database");
        let master_key = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        let mut cfg = config(&db, &master_key, "");
        adjust(&mut cfg);
        let app = Application::build_with_resolver(cfg, resolver)
            .await
            .expect("app builds");
        let base = format!("http://127.0.0.1:{}", app.port());
        let hasher = app.hasher();
        tokio::spawn(app.run_until_stopped());
        Self {
            base,
            http: reqwest::Client::new(),
            db,
            master_key,
            hasher,
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

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.raw(Method::PATCH, path, Some(token), Some(body)).await
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
            // No key is made before the email is verified, when verification is on.
            key: body["api_key"]["key"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            key_id: body["api_key"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
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

/// A real SMTP server (`aiosmtpd`, run by `$PERPETUO_PYTHON`) on 127.0.0.1, keeping
/// every message it receives. Stopped on drop.
pub struct SmtpSink {
    pub port: u16,
    child: std::process::Child,
    messages: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl SmtpSink {
    pub fn start() -> Self {
        use std::io::BufRead;
        let python = std::env::var("PERPETUO_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/smtp_sink.py");
        let mut child = std::process::Command::new(&python)
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_else(|| {
            panic!(
                "the SMTP sink did not start: install aiosmtpd into the Python \
                 that PERPETUO_PYTHON names ({python})"
            )
        });
        let port = first
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from the SMTP sink: {first}"));
        let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        Self {
            port,
            child,
            messages,
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far to `to`, decoded.
    pub fn messages_to(&self, to: &str) -> Vec<Mail> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m["to"].as_array().unwrap().iter().any(|t| t == to))
            .map(|m| Mail::parse(m["data"].as_str().unwrap()))
            .collect()
    }

    /// Waits for the `n`th message (from 1) to `to`.
    pub async fn wait_for(&self, to: &str, n: usize) -> Mail {
        eventually(
            &format!("message #{n} to {to} reaches the SMTP server"),
            std::time::Duration::from_secs(10),
            || {
                let mut got = self.messages_to(to);
                let nth = (got.len() >= n).then(|| got.swap_remove(n - 1));
                async move { nth }
            },
        )
        .await
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A received message: its headers and its body with quoted-printable undone.
pub struct Mail {
    pub raw: String,
    pub body: String,
}

impl Mail {
    fn parse(raw: &str) -> Self {
        Self {
            raw: raw.to_string(),
            body: decode_quoted_printable(raw),
        }
    }

    pub fn subject(&self) -> String {
        self.raw
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap_or_default()
            .to_string()
    }

    /// The token of the first link whose path contains `route` (e.g. `#/invite`).
    pub fn token(&self, route: &str) -> String {
        let at = self
            .body
            .find(&format!("{route}?token="))
            .unwrap_or_else(|| panic!("no {route} link in {}", self.body));
        let rest = &self.body[at + route.len() + "?token=".len()..];
        rest.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect()
    }
}

fn decode_quoted_printable(s: &str) -> String {
    let s = s.replace("=\r\n", "").replace("=\n", "");
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
