//! Processes a test starts and kills: the gateway binary on free ports (started, killed,
//! restarted on its data directory, signalled) and what it answers (metrics, SSE); the
//! admin API binary beside it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use super::{eventually, Env, TestClock};

/// A port that is free now and that this process has never handed out before. The port
/// is released before a gateway binds it, so two tests running side by side could be
/// given the same one; the second gateway would then fail to bind, and its test would
/// talk to the first test's gateway (seen as a silent connection left open past its
/// header deadline, and a 200 without `x-perpetuo-provider`).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if GIVEN.lock().unwrap().insert(port) {
            return port;
        }
    }
}

pub struct Gateway {
    child: Process,
    pub base: String,
    pub metrics: String,
    pub http: reqwest::Client,
    spec: Spec,
}

/// How a gateway was started, so it can be started again after a kill.
struct Spec {
    clock: Arc<TestClock>,
    database_url: String,
    master_b64: String,
    extra: Vec<(String, String)>,
    /// The gateway's `DATA_DIR` (its log spool), kept across restarts.
    data_dir: Arc<tempfile::TempDir>,
    /// Where the gateway's stdout and stderr go (the test's stderr when unset).
    output: Option<Arc<std::fs::File>>,
}

pub const DEFAULT_ENV: &[(&str, &str)] = &[
    ("UPSTREAM_TTFB_TIMEOUT_MS", "2000"),
    ("UPSTREAM_CONNECT_TIMEOUT_MS", "1000"),
    ("BREAKER_THRESHOLD", "3"),
    ("BREAKER_COOLDOWN_MS", "800"), // BREAKER_COOLDOWN
    ("SHUTDOWN_GRACE_SECONDS", "3"),
    // Most tests never tokenize: the vocabulary loads on first use, not at every start.
    (perpetuo_core::test_build::LAZY_TOKENIZER, "1"),
];

impl Gateway {
    pub async fn start(env: &Env) -> Self {
        Self::start_with(env, &env.db.url, &[]).await
    }

    pub async fn start_with(env: &Env, database_url: &str, extra: &[(&str, &str)]) -> Self {
        Self::start_with_output(env, database_url, extra, None).await
    }

    /// Like [`Gateway::start_with`], writing the gateway's stdout and stderr to `output`.
    pub async fn start_with_output(
        env: &Env,
        database_url: &str,
        extra: &[(&str, &str)],
        output: Option<&std::fs::File>,
    ) -> Self {
        Self::start_spec(Spec {
            clock: env.clock.clone(),
            database_url: database_url.to_string(),
            master_b64: env.master_b64.clone(),
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            data_dir: Arc::new(tempfile::tempdir().expect("gateway data directory")),
            output: output.map(|f| Arc::new(f.try_clone().expect("log file"))),
        })
        .await
    }

    /// A gateway on `env`'s database whose `DATA_DIR` is `data_dir` (which may already
    /// hold a spool left there by the test).
    pub async fn start_in(env: &Env, data_dir: Arc<tempfile::TempDir>) -> Self {
        Self::start_spec(Spec {
            clock: env.clock.clone(),
            database_url: env.db.url.clone(),
            master_b64: env.master_b64.clone(),
            extra: Vec::new(),
            data_dir,
            output: None,
        })
        .await
    }

    async fn start_spec(spec: Spec) -> Self {
        let (child, base, metrics) = spawn(&spec);
        let gw = Self {
            child,
            base,
            metrics,
            http: reqwest::Client::new(),
            spec,
        };
        gw.wait_healthy().await;
        gw
    }

    /// Waits for `/healthz`, through a client of its own that closes its connection after
    /// each ask: a gateway just started holds no connection of the harness (a test that
    /// counts connections sees only its own).
    async fn wait_healthy(&self) {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        eventually(
            "the gateway is healthy",
            Duration::from_secs(20),
            || async {
                let sent = http.get(format!("{}/healthz", self.base)).send();
                sent.await.is_ok_and(|r| r.status() == 200)
            },
        )
        .await;
    }

    /// The gateway's `DATA_DIR`.
    pub fn data_dir(&self) -> &std::path::Path {
        self.spec.data_dir.path()
    }

    /// Runs a second gateway process with this one's settings and `DATA_DIR` (on ports of
    /// its own) until it exits; returns its exit status and what it printed. Fails the
    /// test if it still runs after `within`.
    pub async fn run_beside(&self, within: Duration) -> (std::process::ExitStatus, String) {
        let out = tempfile::NamedTempFile::new().expect("output file");
        let spec = Spec {
            clock: self.spec.clock.clone(),
            database_url: self.spec.database_url.clone(),
            master_b64: self.spec.master_b64.clone(),
            extra: self.spec.extra.clone(),
            data_dir: self.spec.data_dir.clone(),
            output: Some(Arc::new(out.reopen().expect("output file"))),
        };
        let (mut second, _, _) = spawn(&spec);
        let status = second.exited("the second gateway exits", within).await;
        (status, std::fs::read_to_string(out.path()).unwrap())
    }

    /// `kill -9`: no shutdown, no drain.
    pub fn kill9(&mut self) {
        self.child.kill9();
    }

    /// Starts the binary again (after [`Gateway::kill9`] or an exit) on the same database
    /// and `DATA_DIR`, on new ports (`base` and `metrics` change).
    pub async fn restart(&mut self) {
        self.kill9();
        let (child, base, metrics) = spawn(&self.spec);
        self.child = child;
        self.base = base;
        self.metrics = metrics;
        self.wait_healthy().await;
    }

    pub fn chat(&self, key: &str, body: Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/v1/chat/completions", self.base))
            .bearer_auth(key)
            .json(&body)
    }

    /// Waits until the gateway's change listener listens (`perpetuo_listener_up` 1): from
    /// then on it hears every change, and what it caches is not cleared by a first LISTEN
    /// that comes late.
    pub async fn listening(&self) {
        self.listener_up(true, "the gateway never listened for changes")
            .await;
    }

    /// Waits until `perpetuo_listener_up` reads 1 (`up`) or 0; fails the test with `what`.
    pub async fn listener_up(&self, up: bool, what: &str) {
        let line = format!("perpetuo_listener_up {}", u8::from(up));
        eventually(what, Duration::from_secs(10), || async {
            self.metrics_text().await.lines().any(|l| l == line)
        })
        .await;
    }

    /// The Prometheus text of the gateway's metrics endpoint.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(&self.metrics)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    pub fn signal(&self, sig: &str) {
        kill(self.pid(), sig);
    }

    /// Waits for the process to exit; returns whether it exited cleanly.
    pub async fn wait_exit(&mut self, within: Duration) -> bool {
        self.child
            .exited("the gateway exits", within)
            .await
            .success()
    }
}

/// Sends `sig` to the process `pid` (one we started).
pub fn kill(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(ok.success());
}

/// A child process of the test, killed (`SIGKILL`) when dropped.
pub struct Process(pub Child);

impl Process {
    /// `kill -9` and reap: no shutdown, no drain.
    pub fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Waits for the process to exit by itself; fails the test naming `what` after
    /// `within`.
    pub async fn exited(&mut self, what: &str, within: Duration) -> std::process::ExitStatus {
        let child = &mut self.0;
        eventually(what, within, || {
            let status = child.try_wait().unwrap();
            async move { status }
        })
        .await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn spawn(spec: &Spec) -> (Process, String, String) {
    let (port, mport) = (free_port(), free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_perpetuo-gateway"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &spec.database_url)
        .env("PERPETUO_MASTER_KEY", &spec.master_b64)
        .env("GATEWAY_ADDR", format!("127.0.0.1:{port}"))
        .env("METRICS_ADDR", format!("127.0.0.1:{mport}"))
        .env("ALLOWED_PRIVATE_UPSTREAMS", "127.0.0.0/8")
        .env("DATA_DIR", spec.data_dir.path())
        .env("PERPETUO_TEST_CLOCK_FILE", spec.clock.path())
        .env(
            "RUST_LOG",
            std::env::var("GW_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(file) = &spec.output {
        cmd.stdout(file.try_clone().expect("log file"))
            .stderr(file.try_clone().expect("log file"));
    }
    for (k, v) in DEFAULT_ENV {
        cmd.env(k, v);
    }
    for (k, v) in &spec.extra {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("gateway starts");
    (
        Process(child),
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{mport}/metrics"),
    )
}

/// The value of an unlabelled counter or gauge in Prometheus text (0 when absent).
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Reads an SSE response to its end; returns the `data:` payloads and whether it ended cleanly.
pub async fn read_sse(resp: reqwest::Response) -> (Vec<String>, bool) {
    let text = resp.text().await;
    let (text, clean) = match text {
        Ok(t) => (t, true),
        Err(_) => (String::new(), false),
    };
    let data = text
        .split("\n\n")
        .filter_map(|ev| {
            ev.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(str::to_string)
        })
        .collect();
    (data, clean)
}

/// The admin API (the `perpetuo-admin` binary) on a free port and the environment's
/// database, for tests that go through it beside a gateway; killed on drop. The two
/// binaries meet only in PostgreSQL, so the gateway's tests do not link the admin crate.
pub struct AdminApi {
    pub base: String,
    _process: Process,
}

impl AdminApi {
    /// Starts the admin API with test settings and `extra` on top; waits for `/healthz`.
    pub async fn start(env: &Env, extra: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut cmd = Command::new(admin_binary());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &env.db.url)
            .env("JWT_SECRET", "gateway-test-secret-gateway-test-secret")
            .env("PERPETUO_MASTER_KEY", &env.master_b64)
            .env("ADMIN_ADDR", format!("127.0.0.1:{port}"))
            .env("ALLOWED_PRIVATE_UPSTREAMS", "127.0.0.0/8")
            .env("DASHBOARD_DIR", "/nonexistent")
            .env("JWT_TTL_SECONDS", "600")
            .env("ADMIN_DB_POOL_SIZE", "4")
            .env(
                "RUST_LOG",
                std::env::var("GW_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            // Away from the repository's `.env`, which the binary would read.
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let mut process = Process(cmd.spawn().expect("the admin API starts"));
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        eventually("the admin API is healthy", Duration::from_secs(20), || {
            let exited = process.0.try_wait().unwrap();
            assert!(exited.is_none(), "the admin API exited: {exited:?}");
            let health = http.get(format!("{base}/healthz")).send();
            async move { health.await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
        Self {
            base,
            _process: process,
        }
    }

    /// Signs `email` up; the whole answer (token, workspace, first API key, user).
    pub async fn signup(&self, email: &str) -> Value {
        reqwest::Client::new()
            .post(format!("{}/auth/signup", self.base))
            .json(&serde_json::json!({"email": email, "password": "correct horse"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// The `perpetuo-admin` binary of this build. A crate sees `CARGO_BIN_EXE_*` of its own
/// binaries only; cargo puts every binary of the workspace in `target/<profile>/`, next to
/// `deps/` where this test runs from, and `cargo test --workspace` builds it before any test
/// runs. A missing binary, or one older than its sources (`cargo test -p
/// perpetuo-gateway` alone does not rebuild it), fails the test and says what to run.
fn admin_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable sits in target/<profile>/deps");
    let binary = dir.join("perpetuo-admin");
    let build = "run `cargo build -p perpetuo-admin` (or `cargo test --workspace`)";
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is missing: {build}", binary.display()));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sources = ["admin-api/src", "core/src", "migrations"].map(|d| root.join(d));
    if let Some(newer) = sources.iter().find_map(|d| newer_file(d, built)) {
        panic!(
            "{} is older than {}: {build}",
            binary.display(),
            newer.display()
        );
    }
    binary
}

/// A file under `dir` modified after `than`, if any.
fn newer_file(dir: &Path, than: SystemTime) -> Option<PathBuf> {
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let path = e.path();
        if path.is_dir() {
            return newer_file(&path, than);
        }
        let modified = e.metadata().and_then(|m| m.modified()).ok()?;
        (modified > than).then_some(path)
    })
}
